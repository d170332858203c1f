"""Whisper log-mel features: plait against transformers' WhisperFeatureExtractor, side by side.

Both sides get the same batch of random recordings in this one process and take turns (see
:mod:`benchmarks.timing`); every row shows the largest difference of their features.
transformers runs its fastest CPU path: with torch installed, ``__call__`` pads in numpy and
computes in ``_torch_extract_fbank_features`` (one batched ``torch.stft``, float32) on
``device="cpu"``; its numpy path (``_np_extract_fbank_features``, float64, one recording at a
time) is slower and is not timed.

    python -m benchmarks.audio_speed                    # 8 x 30 s, 2 threads
    python -m benchmarks.audio_speed --threads 1 --reps 20
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
import transformers
from transformers import WhisperFeatureExtractor

from benchmarks.timing import Row, interleaved, table
from plait.audio import SAMPLING_RATE, log_mel


def diff(a: torch.Tensor, b: torch.Tensor) -> str:
    if a.shape != b.shape:
        return f"shapes differ {tuple(a.shape)} vs {tuple(b.shape)}"
    return f"max abs diff {(a - b).abs().max().item():.1e}"


def compare(name: str, hf_fn, plait_fn, work: int, args: argparse.Namespace) -> Row:
    """Recordings/s of both sides on the same input, and how far apart their outputs are."""
    out: dict[str, torch.Tensor] = {}
    t = interleaved({"hf": lambda: out.__setitem__("hf", torch.as_tensor(hf_fn())),
                     "plait": lambda: out.__setitem__("plait", plait_fn())}, args.reps)
    return Row(name, "rec/s", work, t["hf"], t["plait"], diff(out["hf"], out["plait"]))


def bench(args: argparse.Namespace) -> list[Row]:
    rng = np.random.default_rng(0)
    n = round(args.seconds * SAMPLING_RATE)
    audio = [(0.1 * rng.standard_normal(n)).astype(np.float32) for _ in range(args.batch)]
    fe = WhisperFeatureExtractor()
    shape = f"{args.batch} x {args.seconds:g} s"

    def hf_call() -> torch.Tensor:
        return fe(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt",
                  device="cpu").input_features

    # the transform alone, from recordings already padded or cut to 30 s
    padded = np.zeros((args.batch, fe.n_samples), np.float32)
    for row, a in zip(padded, audio, strict=True):
        row[:min(n, fe.n_samples)] = a[:fe.n_samples]
    padded_list = list(padded)
    return [
        compare(f"log-mel, {shape}, list of arrays in (the whole call)", hf_call,
                lambda: log_mel(audio), args.batch, args),
        compare(f"log-mel, {shape}, padded to 30 s (STFT to features only)",
                lambda: fe._torch_extract_fbank_features(padded, "cpu"),
                lambda: log_mel(padded_list), args.batch, args),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8, help="recordings per call")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each recording")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--reps", type=int, default=10, help="timed rounds per row")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    print(f"device=cpu ({cpu}) threads={torch.get_num_threads()} torch={torch.__version__}"
          f" transformers={transformers.__version__} (WhisperFeatureExtractor, torch path)",
          flush=True)
    t0 = time.perf_counter()
    with torch.inference_mode():
        rows = bench(args)
    print(f"\n{table(rows)}\n")
    print(f"- total {time.perf_counter() - t0:.0f} s; medians of {args.reps} interleaved rounds"
          " after one warm-up round")


if __name__ == "__main__":
    main()
