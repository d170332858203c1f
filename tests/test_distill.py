"""Knowledge distillation of speaker classifiers, and the recipe stages it needs: several
fine-tuning runs that each start from one named stage, and a student that reads them."""

from __future__ import annotations

import pytest
import torch

from plait.checkpoint import save_model
from plait.config import ConfigError
from plait.models.bert import Bert, BertConfig
from plait.text.base import encode_texts
from plait.text.wordpiece import WordPieceTokenizer
from plait.training import recipe_from_dict, train
from plait.training.distill import soft_cross_entropy, teacher_probs
from plait.training.distributed import Dist

TINY_BERT = {"arch": "bert", "n_layer": 1, "n_head": 2, "n_embd": 32, "n_inner": 64,
             "block_size": 64, "dropout": 0.0, "pooling": "weighted"}
FAST = {"max_steps": 6, "warmup_steps": 2, "eval_interval": 0, "threads": 1, "progress": False,
        "device": "cpu", "lr": 3e-3}
PRETRAIN = {"name": "pretrain", "task": "mlm",
            "data": {"corpus": "speakers", "vocab_size": 300, "block_size": 64, "batch_size": 8,
                     "eval_batches": 1}}


def test_soft_cross_entropy_is_kl_plus_the_teachers_entropy_and_ce_for_one_hot_targets():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=g)
    q = torch.randn(5, 4, generator=g).softmax(-1)
    kl = torch.nn.functional.kl_div(logits.log_softmax(-1), q, reduction="batchmean")
    entropy = -(q * q.log()).sum(-1).mean()
    torch.testing.assert_close(soft_cross_entropy(logits, q), kl + entropy)
    y = torch.tensor([0, 3, 1, 1, 2])
    torch.testing.assert_close(soft_cross_entropy(logits, torch.eye(4)[y]),
                               torch.nn.functional.cross_entropy(logits, y))


def classifier_folder(path, labels, seed, tokenizer):
    torch.manual_seed(seed)
    model = Bert(BertConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16,
                            n_inner=32, block_size=16, head="classify", pooling="mean",
                            num_labels=len(labels), labels=tuple(labels)))
    save_model(model, path)
    tokenizer.save(path)
    return model.eval()


def test_teacher_probs_are_the_mean_of_the_teachers_reading_long_texts_whole(tmp_path):
    texts = ["the king is dead", "long live the king " * 12, "a horse"]  # the second > 16
    tokenizer = WordPieceTokenizer.train(texts * 5, 60)
    labels = ("a", "b", "c")
    models = [classifier_folder(tmp_path / f"t{k}", labels, k, tokenizer) for k in range(2)]
    got = teacher_probs([tmp_path / "t0", tmp_path / "t1"], texts, labels)
    ids, mask, owner = encode_texts(tokenizer, texts, 16, whole=True)
    with torch.no_grad():
        want = sum(m.logits(ids, mask, owner=owner).softmax(-1) for m in models) / 2
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, models[0].logits(ids, mask, owner=owner).softmax(-1))
    classifier_folder(tmp_path / "other", ("a", "b", "x"), 2, tokenizer)
    with pytest.raises(ValueError, match="teacher .*other: its labels"):
        teacher_probs([tmp_path / "other"], texts, labels)


def members_recipe(out, **root):
    return {"task": "classify-speakers", "model": TINY_BERT, "start": "pretrain",
            "data": {"batch_size": 8, "max_length": 64, "window": 1000,
                     "teachers": ["m0", "m1"]},
            "train": {**FAST, "out_dir": str(out)},
            "stages": [PRETRAIN,
                       {"name": "m0", "start": "pretrain", "data": {"teachers": []},
                        "train": {"seed": 0}},
                       {"name": "m1", "start": "pretrain", "data": {"teachers": []},
                        "train": {"seed": 1}}], **root}


def test_stages_start_from_the_stage_they_name_and_teachers_are_earlier_stages(tmp_path):
    runs = recipe_from_dict(members_recipe(tmp_path)).runs()
    assert [r.name for r in runs] == ["pretrain", "m0", "m1", ""]
    assert [r.train.init_from for r in runs] == [""] + [str(tmp_path / "pretrain")] * 3
    assert runs[3].data.teachers == (str(tmp_path / "m0"), str(tmp_path / "m1"))
    assert runs[1].data.teachers == () and runs[1].train.seed == 0 and runs[2].train.seed == 1
    assert runs[1].data.window == 1000  # a stage of the recipe's task keeps its [data]
    assert all(not r.start for r in runs)  # resolved: a run's recipe.json reads back alone
    tree = members_recipe(tmp_path)
    tree["stages"][1]["start"] = "m1"  # a later stage
    with pytest.raises(ConfigError, match=r"stages\[1\].start' names 'm1', not an earlier"):
        recipe_from_dict(tree)
    tree = members_recipe(tmp_path)
    del tree["stages"][2]["data"]  # m1 would inherit teachers m0 and m1: itself
    with pytest.raises(ConfigError, match=r"stages\[2\].data.teachers' names 'm1'"):
        recipe_from_dict(tree)
    with pytest.raises(ConfigError, match="'start' names 'nope'"):
        recipe_from_dict(members_recipe(tmp_path, start="nope"))
    without = members_recipe(tmp_path)
    del without["start"]  # the default: the one before
    assert recipe_from_dict(without).runs()[3].train.init_from == str(tmp_path / "m1")


def test_the_student_learns_the_teachers_mean_on_the_rest_of_the_text(tmp_path):
    from plait.loading import load
    from plait.training.tasks import get_task
    from plait.training.tasks.classify import SpeakersData

    out = tmp_path / "speakers"
    result = train(recipe_from_dict(members_recipe(out)))
    assert 0 <= result["val_accuracy"] <= 1
    data = SpeakersData(batch_size=4, max_length=64, window=1000,
                        teachers=(str(out / "m0"), str(out / "m1")), distill=0.5)
    runs = recipe_from_dict(members_recipe(out)).runs()
    task = get_task("classify-speakers")(data, runs[3].train.replace(out_dir=str(tmp_path / "t")),
                                         Dist())
    task.prepare()
    texts = [t for t, _, _ in task.located]
    assert task.soft.shape == (len(texts), 10)
    torch.testing.assert_close(task.soft[:3], teacher_probs([out / "m0", out / "m1"], texts[:3],
                                                            task.labels))
    batch = task.train_batch(0, 0)
    assert batch["soft"].shape == (4, 10) and len(batch["labels"]) == 4
    student = load(out).train()
    pooled = task.pooled(student, batch)
    want = (torch.nn.functional.cross_entropy(student.head(pooled[:4]), batch["labels"])
            + torch.nn.functional.cross_entropy(student.aux_head(pooled[4:]), batch["aux_labels"])
            + 0.5 * soft_cross_entropy(student.head(pooled[4:]), batch["soft"]))
    torch.testing.assert_close(task.loss(student, batch), want)
