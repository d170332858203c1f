"""benchmarks/memory.py --small: every measurement runs in its own process and fills its cell."""

import re

import pytest

from benchmarks.memory import first_row, main


@pytest.mark.slow
def test_small_run_fills_every_row(tmp_path):
    (tmp_path / "corpus.txt").write_text("a rose by any other name would smell as sweet\n" * 80)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(f"""[model]
n_layer = 1
n_head = 2
n_embd = 32
block_size = 128
[data]
dir = "{tmp_path / 'data'}"
text = "{tmp_path / 'corpus.txt'}"
batch_size = 2
""")
    out = main(["--small", "--recipes", str(recipe), "--work", str(tmp_path / "runs")])
    assert "skipped" not in out and "not built" not in out, out
    cells = re.findall(r"([\d,]+) \(\+(-?[\d,]+)\)", out)
    assert len(cells) == 5, out  # recipe train + inference; GPT generate, train, train + AC
    assert all(int(peak.replace(",", "")) > 100 for peak, _ in cells)  # torch alone is more
    assert "forward B=1 + generate 64" in out and "activation checkpointing" in out


def test_first_row_keeps_per_example_values_only():
    import torch

    batch = {"x": torch.zeros(4, 3), "n": 7, "names": ["a", "b", "c", "d"], "w": torch.ones(3)}
    row = first_row(batch)
    assert row["x"].shape == (1, 3) and row["n"] == 7 and row["names"] == ["a"]
    assert row["w"].shape == (3,)
