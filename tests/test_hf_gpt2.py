"""GPT-2 interop: random tiny transformers models load into plait.GPT with equal logits, and a
plait GPT exported with ``plait convert --to-hf`` loads back into GPT2LMHeadModel unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import randomize

import plait
from plait.cli.main import main
from plait.hf import load
from plait.models import GPT, GPTConfig

transformers = pytest.importorskip("transformers")

ATOL = 1e-4



def hf_gpt2(tmp_path, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(**{"vocab_size": 97, "n_positions": 32, "n_embd": 32,
                                     "n_layer": 2, "n_head": 4, **kw})
    model = randomize(transformers.GPT2LMHeadModel(cfg).eval())
    model.save_pretrained(tmp_path)
    return model


def left_padded(B, T, vocab, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for b in range(B):
        mask[b, : b % T] = 0  # row b has b pad tokens on the left
    return ids, mask


def hf_logits(model, ids, mask):
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # what generate() passes for left padding
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=pos).logits


@pytest.mark.parametrize("kw", [
    {},
    {"n_embd": 48, "n_head": 3, "n_inner": 80, "activation_function": "gelu"},
    {"n_layer": 3, "n_head": 2, "activation_function": "relu", "layer_norm_epsilon": 1e-6},
    {"tie_word_embeddings": False, "activation_function": "gelu_pytorch_tanh"},
])
def test_gpt2_logits_match(tmp_path, kw):
    ref = hf_gpt2(tmp_path, **kw)
    model = load(tmp_path)
    assert isinstance(model, GPT) and not model.training
    ids, mask = left_padded(4, 11, 97)
    want = hf_logits(ref, ids, mask)
    with torch.no_grad():
        got = model(ids, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=ATOL, rtol=0)
    with torch.no_grad():  # no mask at all: plain causal prefill
        torch.testing.assert_close(model(ids), ref(ids).logits, atol=ATOL, rtol=0)


def test_plait_load_dispatches_and_model_trains(tmp_path):
    hf_gpt2(tmp_path)
    model = plait.load(tmp_path)
    assert model.config.block_size == 32 and model.config.mlp == "gelu_tanh"
    model.train()
    loss = model(torch.randint(0, 97, (2, 5))).logsumexp(-1).mean()
    loss.backward()
    assert model.wte.weight.grad is not None


def test_bare_gpt2model_and_legacy_bin(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=2)
    lm = randomize(transformers.GPT2LMHeadModel(cfg).eval())
    # a bare GPT2Model state dict with the old causal-mask buffers, as pytorch_model.bin
    state = {k.removeprefix("transformer."): v for k, v in lm.state_dict().items()
             if k != "lm_head.weight"}
    state["h.0.attn.bias"] = torch.ones(1, 1, 16, 16)
    state["h.0.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps({**cfg.to_dict(),
                                                       "architectures": ["GPT2Model"]}))
    model = load(tmp_path)
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), lm(ids).logits, atol=ATOL, rtol=0)


def test_export_round_trip_via_cli(tmp_path):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=101, n_layer=2, n_head=4, n_embd=32, block_size=24,
                    mlp="gelu_tanh", n_inner=72)
    src, dst = tmp_path / "plait", tmp_path / "hf"
    plait.save_model(randomize(GPT(cfg).eval()), src)
    (src / "tokenizer.json").write_text("{}")
    assert main(["convert", "--to-hf", str(src), str(dst)]) == 0
    assert (dst / "tokenizer.json").is_file()
    ref = transformers.GPT2LMHeadModel.from_pretrained(dst).eval()
    model = plait.load(src)
    ids, mask = left_padded(3, 9, 101)
    with torch.no_grad():
        got = model(ids, attention_mask=mask)
    want = hf_logits(ref, ids, mask)
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=ATOL, rtol=0)
    # and back: HF folder -> plait folder -> same logits
    back = tmp_path / "back"
    assert main(["convert", "--from-hf", str(dst), str(back)]) == 0
    with torch.no_grad():
        torch.testing.assert_close(plait.load(back)(ids), model(ids), atol=1e-6, rtol=0)


@pytest.mark.parametrize("change, field", [
    ({"pos_encoding": "rope"}, "pos_encoding"),
    ({"norm": "rmsnorm"}, "norm"),
    ({"mlp": "swiglu"}, "mlp"),
    ({"n_kv_head": 2}, "n_kv_head"),
    ({"bias": False}, "bias"),
    ({"qkv_bias": False}, "qkv_bias"),
    ({"d_head": 16}, "d_head"),
])
def test_export_refuses_non_gpt2_features(tmp_path, capsys, change, field):
    cfg = GPTConfig(vocab_size=50, n_layer=1, n_head=4, n_embd=32, block_size=16, **change)
    plait.save_model(GPT(cfg), tmp_path / "src")
    assert main(["convert", "--to-hf", str(tmp_path / "src"), str(tmp_path / "dst")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err


@pytest.mark.parametrize("field, value", [
    ("activation_function", "gelu_fast_unknown"),
    ("scale_attn_by_inverse_layer_idx", True),
    ("reorder_and_upcast_attn", True),
    ("scale_attn_weights", False),
    ("architectures", ["GPT2ForSequenceClassification"]),
])
def test_unsupported_gpt2_config_names_field(tmp_path, field, value):
    hf_gpt2(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg[field] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=field):
        load(tmp_path)


def test_greedy_generation_of_a_loaded_checkpoint_matches_hf(tmp_path):
    ref = hf_gpt2(tmp_path, seed=3, n_positions=48)
    model = load(tmp_path)
    ids, mask = left_padded(3, 6, 97, seed=4)
    with torch.no_grad():
        want = ref.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12,
                            do_sample=False, pad_token_id=0, eos_token_id=None)
    got = model.generate(ids, attention_mask=mask, max_new_tokens=12, pad_token_id=0)
    assert torch.equal(got, want)


def test_sharded_checkpoint_and_wrong_direction(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    ref = randomize(transformers.GPT2LMHeadModel(cfg).eval())
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ids = torch.randint(0, 97, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(load(tmp_path)(ids), ref(ids).logits, atol=ATOL, rtol=0)
    assert main(["convert", "--to-hf", str(tmp_path), str(tmp_path / "x")]) == 2
    assert "--from-hf" in capsys.readouterr().err


def test_gpt_trained_on_shakespeare_exports_to_transformers(tmp_path):
    """The issue's round trip: plait train on Shakespeare -> convert --to-hf -> same logits."""
    from plait.data.tokens import prepare_text
    from plait.text import load_tokenizer
    from plait.training import recipe_from_dict, train

    text = Path(__file__).parents[1] / "data" / "tinyshakespeare.txt"
    src = tmp_path / "shakespeare.txt"
    src.write_text(text.read_text()[:30_000])
    prepare_text(src, tmp_path / "char", log=lambda _: None)
    run = tmp_path / "run"
    train(recipe_from_dict({
        "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32, "mlp": "gelu_tanh"},
        "data": {"dir": str(tmp_path / "char"), "batch_size": 8},
        "train": {"out_dir": str(run), "max_steps": 30, "warmup_steps": 5, "lr": 3e-3,
                  "eval_interval": 0, "eval_batches": 2, "threads": 1, "progress": False,
                  "device": "cpu"},
    }))
    dst = tmp_path / "hf"
    assert main(["convert", "--to-hf", str(run), str(dst)]) == 0
    ref = transformers.GPT2LMHeadModel.from_pretrained(dst).eval()
    ids = torch.tensor([load_tokenizer(run).encode("ROMEO:\nWhat light through yonder")])
    with torch.no_grad():
        got, want = plait.load(run)(ids), ref(ids).logits
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    assert got.std() > 0.5  # trained, not the near-uniform logits of a fresh init
