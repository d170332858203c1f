"""DDP: 2 processes (torchrun, gloo on CPU) follow the same loss curve as 1 process.

Both see the same global batch (each rank takes half its rows) and take the same optimizer
steps. Bits can still differ slightly: DDP all-reduces each rank's gradient (a sum over its half
of the batch) and averages, while one process sums over the whole batch in one go; float
addition is not associative, so the two orders round differently (~1e-7 relative per step).
"""

import json
import os
import subprocess
import sys

import pytest

from plait.training import recipe_from_dict, train

TREE = {
    "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, "dropout": 0.0},
    "data": {"batch_size": 4},
    "train": {"max_steps": 6, "warmup_steps": 2, "lr": 3e-3, "grad_accum": 2, "log_interval": 1,
              "eval_interval": 3, "eval_batches": 0, "threads": 1, "progress": False,
              "device": "cpu"},
}


def toml(tree: dict) -> str:
    lines = []
    for section, values in tree.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def events(folder, kind, key):
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    return [(e["step"], e[key]) for e in rows if e["event"] == kind]


@pytest.mark.slow
def test_two_ranks_match_one_process(tmp_path):

    from plait.data.tokens import prepare_text

    (tmp_path / "corpus.txt").write_text("to be or not to be, that is the question.\n" * 200)
    prepare_text(tmp_path / "corpus.txt", tmp_path / "data", log=lambda _: None)
    tree = json.loads(json.dumps(TREE))
    tree["data"]["dir"] = str(tmp_path / "data")
    tree["train"]["out_dir"] = str(tmp_path / "one")
    train(recipe_from_dict(tree))

    tree["train"]["out_dir"] = str(tmp_path / "two")
    (tmp_path / "two.toml").write_text(toml(tree))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "plait.cli.main", "train", str(tmp_path / "two.toml")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("whole val split") == 1  # only rank 0 prints

    for kind, key in (("train", "loss"), ("eval", "val_loss"), ("final", "val_loss")):
        one, two = events(tmp_path / "one", kind, key), events(tmp_path / "two", kind, key)
        assert [s for s, _ in one] == [s for s, _ in two] and one
        for (_, a), (_, b) in zip(one, two, strict=True):
            assert a == pytest.approx(b, abs=1e-5), (kind, one, two)
