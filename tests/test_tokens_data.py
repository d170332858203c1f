"""Token files: prepare-text output, resumable batches, DDP rank slices, whole-split eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from plait.cli.main import main
from plait.data.tokens import TokenDataset, prepare_text, token_dtype
from plait.text import BPETokenizer, CharTokenizer, load_tokenizer

TEXT = "".join(f"Line {i}: to be, or not to be, that is the question. ÆØÅ 🙂\n" for i in range(300))


@pytest.fixture(scope="module")
def char_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tokens")
    (root / "input.txt").write_text(TEXT, encoding="utf-8")
    prepare_text(root / "input.txt", root / "char", tokenizer="char", log=lambda _: None)
    return root / "char"


def test_prepare_text_char_splits_the_text_at_the_last_tenth(char_dir):
    meta = json.loads((char_dir / "meta.json").read_text())
    n_val = int(len(TEXT) * 0.1)
    assert meta["tokenizer"] == "char" and meta["dtype"] == "uint16"
    assert meta["train_tokens"] == len(TEXT) - n_val and meta["val_tokens"] == n_val
    assert meta["vocab_size"] == len(set(TEXT))
    tok = load_tokenizer(char_dir)
    assert isinstance(tok, CharTokenizer)
    train = np.fromfile(char_dir / "train.bin", dtype=np.uint16)
    val = np.fromfile(char_dir / "val.bin", dtype=np.uint16)
    assert tok.decode(train.tolist()) == TEXT[:-n_val]
    assert tok.decode(val.tolist()) == TEXT[-n_val:]


def test_prepare_text_bpe_round_trips(tmp_path):
    (tmp_path / "in.txt").write_text(TEXT, encoding="utf-8")
    meta = prepare_text(tmp_path / "in.txt", tmp_path / "out", tokenizer="bpe", vocab_size=300,
                        val_fraction=0.25, log=lambda _: None)
    tok = load_tokenizer(tmp_path / "out")
    assert isinstance(tok, BPETokenizer) and meta["vocab_size"] == 300
    train = np.fromfile(tmp_path / "out" / "train.bin", dtype=meta["dtype"]).tolist()
    val = np.fromfile(tmp_path / "out" / "val.bin", dtype=meta["dtype"]).tolist()
    assert (len(train), len(val)) == (meta["train_tokens"], meta["val_tokens"])
    n_val = int(len(TEXT) * 0.25)
    assert tok.decode(train) == TEXT[:-n_val] and tok.decode(val) == TEXT[-n_val:]


def test_token_dtype_widens_past_uint16():
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_cli_prepare_text_and_one_line_errors(tmp_path, capsys):
    (tmp_path / "in.txt").write_text(TEXT, encoding="utf-8")
    assert main(["prepare-text", str(tmp_path / "in.txt"), "--out", str(tmp_path / "o")]) == 0
    assert "train" in capsys.readouterr().out and (tmp_path / "o" / "train.bin").is_file()
    (tmp_path / "empty.txt").write_text("")
    cases = [
        ([str(tmp_path / "nope.txt")], "not found"),
        ([str(tmp_path / "empty.txt")], "empty"),
        ([str(tmp_path / "in.txt"), "--tokenizer", "bpe", "--vocab-size", "10"], ">= 257"),
        ([str(tmp_path / "in.txt"), "--val-fraction", "1.0"], "[0, 1)"),
    ]
    for args, needle in cases:
        assert main(["prepare-text", *args, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err


def test_batches_are_windows_of_the_data_and_deterministic_by_step(char_dir):
    ds = TokenDataset(char_dir, "train", seed=7)
    data = torch.from_numpy(np.fromfile(char_dir / "train.bin", dtype=np.uint16).astype(np.int64))
    x, y = ds.get_batch(step=3, batch_size=8, block_size=16)
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.int64
    for s, row_x, row_y in zip(ds.batch_starts(3, 8, 16), x, y, strict=True):
        assert torch.equal(row_x, data[s:s + 16]) and torch.equal(row_y, data[s + 1:s + 17])
    # a fresh dataset (a resumed run) draws the same batch for the same step
    x2, y2 = TokenDataset(char_dir, "train", seed=7).get_batch(3, 8, 16)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, ds.get_batch(4, 8, 16)[0])
    assert not torch.equal(x, TokenDataset(char_dir, "train", seed=8).get_batch(3, 8, 16)[0])


@pytest.mark.parametrize("world_size", [2, 4])
def test_rank_slices_concatenate_to_the_single_process_batch(char_dir, world_size):
    ds = TokenDataset(char_dir, "train", seed=1)
    for step in (0, 5):
        x, y = ds.get_batch(step, 8, 12)
        parts = [ds.get_batch(step, 8, 12, rank=r, world_size=world_size)
                 for r in range(world_size)]
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
    with pytest.raises(ValueError, match="divisible"):
        ds.get_batch(0, 6, 12, rank=0, world_size=4)


@pytest.mark.parametrize("world_size", [1, 3])
def test_eval_batches_cover_the_split_exactly_once(char_dir, world_size):
    ds = TokenDataset(char_dir, "val")
    data = np.fromfile(char_dir / "val.bin", dtype=np.uint16).astype(np.int64)
    T = 50
    assert (len(data) - 1) % T  # the test needs a partial last window
    windows = {}  # global window number -> (x row, y row); rank r holds windows r, r + world, ...
    for rank in range(world_size):
        k = 0
        for x, y in ds.iter_eval_batches(T, batch_size=4, rank=rank, world_size=world_size):
            assert x.shape == y.shape and x.shape[0] <= 4
            for row_x, row_y in zip(x, y, strict=True):
                windows[rank + k * world_size] = (row_x, row_y)
                k += 1
    assert sorted(windows) == list(range(len(windows)))
    assert len(windows) == -(-(len(data) - 1) // T)  # ceil: the last window is partial
    # in order, the windows are exactly data[:-1] and data[1:]: every target once
    xs = torch.cat([windows[i][0] for i in range(len(windows))]).numpy()
    ys = torch.cat([windows[i][1] for i in range(len(windows))]).numpy()
    assert np.array_equal(xs, data[:-1]) and np.array_equal(ys, data[1:])


def test_clear_errors_for_missing_or_bad_data(tmp_path, char_dir):
    with pytest.raises(FileNotFoundError, match="plait prepare-text"):
        TokenDataset(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        TokenDataset(char_dir, "test")
    ds = TokenDataset(char_dir, "val")
    with pytest.raises(ValueError, match="lower block_size"):
        ds.get_batch(0, 2, len(ds))
