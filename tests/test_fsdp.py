"""FSDP (and DDP) under torchrun, gloo on CPU: the loss curve does not depend on the ranks.

- 2 FSDP processes follow 1 process's loss curve to 1e-5 (as DDP does, ``tests/test_ddp.py``:
  the reduction order differs, so bits may too).
- A run stopped right after a checkpoint and resumed on another number of ranks (2 -> 1,
  1 -> 2, under FSDP and DDP) follows the uninterrupted curve to 1e-5: the checkpoint is whole
  (an ordinary plait folder), the global batch is the same on any number of ranks, and dropout
  is 0 so no RNG stream matters (docs/efficiency.md §4 says what resuming keeps).

Every run is a driver script (below) started as a plain process or by torchrun, so the stop
after the step-3 save happens on every rank at once.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import plait
from plait.training import recipe_from_dict

TREE = {
    "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, "dropout": 0.0},
    "data": {"batch_size": 4},
    "train": {"max_steps": 6, "warmup_steps": 2, "lr": 3e-3, "grad_accum": 2, "log_interval": 1,
              "eval_interval": 3, "eval_batches": 0, "save_interval": 3, "threads": 1,
              "progress": False, "device": "cpu"},
}
STOP = 3  # the interrupted runs stop right after the step-3 checkpoint

DRIVER = textwrap.dedent("""
    import json, sys
    from plait.training import distributed, recipe_from_dict
    from plait.training.trainer import Trainer

    class StopAfterSave(Trainer):
        def save(self):
            super().save()
            if self.state["step"] == int(sys.argv[2]):  # as if killed after this save
                distributed.teardown()
                sys.exit(0)

    tree = json.load(open(sys.argv[1]))
    resume = sys.argv[3] == "resume"
    (Trainer if resume else StopAfterSave)(recipe_from_dict(tree), resume).fit()
    distributed.teardown()
""")


def run(data, tmp_path, name, ranks, strategy, stop=0, resume=False):
    """Train ``TREE`` on the token folder ``data`` into ``tmp_path/name`` on ``ranks``
    processes."""
    tree = json.loads(json.dumps(TREE))
    tree["data"]["dir"] = str(data)
    tree["train"].update(out_dir=str(tmp_path / name), strategy=strategy)
    (tmp_path / f"{name}.json").write_text(json.dumps(tree))
    (tmp_path / "driver.py").write_text(DRIVER)
    launch = [sys.executable]
    if ranks > 1:
        launch += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    cmd = [*launch, str(tmp_path / "driver.py"), str(tmp_path / f"{name}.json"), str(stop),
           "resume" if resume else "start"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp_path / name


def curves(folder):
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    return {kind: [(e["step"], e[key]) for e in rows if e["event"] == kind]
            for kind, key in (("train", "loss"), ("eval", "val_loss"), ("final", "val_loss"))}


def assert_same_curves(a, b):
    ca, cb = curves(a), curves(b)
    for kind in ca:
        assert [s for s, _ in ca[kind]] == [s for s, _ in cb[kind]] and ca[kind], kind
        for (_, x), (_, y) in zip(ca[kind], cb[kind], strict=True):
            assert x == pytest.approx(y, abs=1e-5), (kind, ca[kind], cb[kind])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(data folder, the uninterrupted one-process run), shared by every test."""
    from plait.data.tokens import prepare_text

    root = tmp_path_factory.mktemp("fsdp")
    (root / "corpus.txt").write_text("to be or not to be, that is the question.\n" * 200)
    prepare_text(root / "corpus.txt", root / "data", log=lambda _: None)
    return root / "data", run(root / "data", root, "whole", 1, "ddp")


@pytest.mark.slow
def test_two_fsdp_ranks_match_one_process(reference, tmp_path):
    data, whole = reference
    two = run(data, tmp_path, "two", 2, "fsdp")
    assert_same_curves(whole, two)
    # the saved folder is an ordinary whole plait model, equal to one process's
    a, b = plait.load(whole), plait.load(two)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=0, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "before", "after"),
                         [("fsdp", 2, 1), ("fsdp", 1, 2), ("ddp", 2, 1)])
def test_resume_on_another_rank_count(reference, tmp_path, strategy, before, after):
    data, whole = reference
    out = run(data, tmp_path, "broken", before, strategy, stop=STOP)
    assert not curves(out)["final"] and curves(out)["train"][-1][0] == STOP
    run(data, tmp_path, "broken", after, strategy, resume=True)
    assert_same_curves(whole, out)


def test_bad_strategy_is_one_readable_line():
    tree = json.loads(json.dumps(TREE))
    tree["train"]["strategy"] = "zero3"
    with pytest.raises(ValueError, match=r"strategy.*'zero3'") as e:
        recipe_from_dict(tree)
    assert "\n" not in str(e.value) and "ddp" in str(e.value)


def test_fsdp_with_lora_is_refused_in_one_line():
    tree = {"train": {"strategy": "fsdp", "init_from": "gpt2"}, "lora": {}}
    with pytest.raises(ValueError, match="not supported with \\[lora\\].*use 'ddp'"):
        recipe_from_dict(tree)
