"""Activation checkpointing (``train.activation_checkpointing``): the same numbers, less kept.

Recomputing a block in the backward pass runs the same kernels on the same inputs (and the same
dropout masks: non-reentrant checkpointing restores the RNG state), so loss and gradients match
the plain run to 1e-6; what changes is how many tensors autograd keeps between the passes.
"""

import pytest
import torch
import torch.nn.functional as F

from plait.models.gpt import GPT, GPTConfig
from plait.models.resnet import ResNet, ResNetConfig
from plait.models.seq2seq import Seq2Seq, Seq2SeqConfig
from plait.nn import checkpoint_activations


def gpt():
    return GPT(GPTConfig(vocab_size=61, n_layer=3, n_head=2, n_embd=32, block_size=16,
                         dropout=0.1))


def seq2seq():
    return Seq2Seq(Seq2SeqConfig(vocab_size=61, n_layer=2, n_head=2, n_embd=32, dropout=0.1,
                                 block_size=16))


def loss_of(model, ids):
    logits = model(ids, decoder_input_ids=ids) if isinstance(model, Seq2Seq) else model(ids)
    return F.cross_entropy(logits.flatten(0, 1), ids.roll(-1, 1).flatten())


def run(make, on):
    """Loss, gradients and the count of tensors saved for backward, with or without."""
    torch.manual_seed(0)
    model = make().train()
    if on:
        checkpoint_activations(model)
    ids = torch.randint(0, 61, (2, 16))
    saved = []
    torch.manual_seed(1)  # the dropout masks
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        loss = loss_of(model, ids)
    loss.backward()
    return loss, {k: p.grad for k, p in model.named_parameters()}, len(saved)


@pytest.mark.parametrize("make", [gpt, seq2seq])
def test_same_loss_and_grads_with_fewer_saved_tensors(make):
    loss, grads, n_plain = run(make, on=False)
    loss_ac, grads_ac, n_ac = run(make, on=True)
    torch.testing.assert_close(loss_ac, loss, atol=1e-6, rtol=0)
    for k, g in grads.items():
        torch.testing.assert_close(grads_ac[k], g, atol=1e-6, rtol=1e-6, msg=k)
    assert n_ac < n_plain / 2, (n_ac, n_plain)  # only the blocks' inputs stay


def test_no_grad_and_eval_are_untouched():
    torch.manual_seed(0)
    model = checkpoint_activations(gpt()).eval()
    ids = torch.randint(0, 61, (1, 5))
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=4)
    model.transformer.checkpointing = False
    with torch.no_grad():
        assert torch.equal(out, model.generate(ids, max_new_tokens=4))


def test_a_model_without_blocks_refuses_in_one_line():
    with pytest.raises(ValueError, match="ResNet has no transformer blocks") as e:
        checkpoint_activations(ResNet(ResNetConfig()))
    assert "train.activation_checkpointing = false" in str(e.value)
    assert "\n" not in str(e.value)


def test_the_recipe_switch_trains_the_same(tmp_path):
    from plait.data.tokens import prepare_text
    from plait.training import Trainer, recipe_from_dict

    (tmp_path / "corpus.txt").write_text("now is the winter of our discontent\n" * 50)
    prepare_text(tmp_path / "corpus.txt", tmp_path / "data", log=lambda _: None)
    losses = []
    for on in (False, True):
        tree = {"model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16},
                "data": {"dir": str(tmp_path / "data"), "batch_size": 4},
                "train": {"out_dir": str(tmp_path / str(on)), "max_steps": 3, "threads": 1,
                          "progress": False, "device": "cpu", "activation_checkpointing": on}}
        trainer = Trainer(recipe_from_dict(tree))
        assert trainer.model.transformer.checkpointing is on
        losses.append([float(trainer.train_step(step)[0]) for step in range(3)])
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
