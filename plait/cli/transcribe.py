"""Transcribe speech with a speech-recognition folder: one transcript per line.

    plait transcribe --model runs/speech question.wav timer.flac
    ls *.wav | plait transcribe --model runs/speech --num-beams 8

The folder is plait's (plait train configs/speech.toml): a Whisper with the transcripts'
characters as its vocabulary. Files are wav or flac (anything libsndfile reads), at any
sampling rate (resampled to 16 kHz) and mixed down to mono. A recording longer than the
model's window (4 s for the recipe's model) is refused with both lengths; cut it first. Every
file is read and checked before anything is printed.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="speech recognition folder")
    parser.add_argument("files", nargs="*", metavar="FILE",
                        help="audio files (default: one path per line of standard input)")
    parser.add_argument("--num-beams", type=int, default=1, metavar="B",
                        help="beam search with B beams (default 1: greedy); a folder trained"
                        " with CTC picks among them by its CTC and decoder scores together")
    parser.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                        help="longest transcript in tokens (default: the model's decoder length)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from plait.cli.common import in_chunks, read_texts
    from plait.inference.speech import Transcriber

    if args.num_beams < 1:
        raise ValueError(f"--num-beams must be >= 1, got {args.num_beams}")
    paths = read_texts(args.files)
    transcriber = Transcriber.from_folder(args.model, device=args.device)
    audio = dict(zip(paths, transcriber.read(paths), strict=True))  # all checked first

    def work(chunk: list[str]) -> list[str]:
        return transcriber.transcribe([audio[p] for p in chunk], args.num_beams,
                                      args.max_new_tokens)

    for text in in_chunks(paths, work):
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    return 0
