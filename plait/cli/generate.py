"""Generate text from a model folder, streamed as it is produced.

    plait generate --model runs/shakespeare --prompt "ROMEO:" --max-new-tokens 200

Prints the prompt, then the continuation. Samples by default; --temperature 0 decodes greedily;
--num-beams > 1 runs (deterministic) beam search and prints its best result at the end.
Generation stops at the tokenizer's end-of-text token, after --max-new-tokens, or just before
the first --stop string (the stop string itself is not printed). The folder may be a plait
folder or a Hugging Face one; its tokenizer is read from the same folder. The work is done by
plait.inference.TextGenerator, which a server can use the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR",
                   help="model folder (plait or Hugging Face) with its tokenizer")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=100, metavar="N",
                   help="tokens to generate at most (default 100)")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="sampling temperature; 0 = greedy (default 1.0)")
    p.add_argument("--top-k", type=int, default=0, metavar="K",
                   help="sample among the K most likely tokens (ties kept; 0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, metavar="P",
                   help="nucleus sampling: smallest set with probability >= P (1 = off)")
    p.add_argument("--num-beams", type=int, default=1, metavar="B",
                   help="beam search with B beams (ignores temperature/top-k/top-p)")
    p.add_argument("--length-penalty", type=float, default=1.0, metavar="A",
                   help="beam score = log p / length**A (A > 1 favours longer text)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, metavar="R",
                   help="divide seen tokens' positive logits by R (1 = off; try 1.2)")
    p.add_argument("--no-repeat-ngram-size", type=int, default=0, metavar="N",
                   help="never repeat an N-gram (0 = off)")
    p.add_argument("--stop", action="append", default=[], metavar="STR",
                   help="stop before this text (repeatable; not printed)")
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="random seed for reproducible sampling")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--quantize", choices=["int8", "int4"], default=None,
                   help="weights in 8 or 4 bits: faster CPU decoding (docs/efficiency.md)")


def run(args: argparse.Namespace) -> int:
    from plait.inference import TextGenerator

    gen = TextGenerator.from_folder(args.model, device=args.device, quantize=args.quantize)
    beams = args.num_beams > 1
    pieces = gen.stream(  # checks every argument (and encodes the prompt) before any output
        args.prompt, stop=args.stop, seed=args.seed, max_new_tokens=args.max_new_tokens,
        do_sample=not beams and args.temperature > 0, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, num_beams=args.num_beams,
        length_penalty=args.length_penalty, repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size)
    out = sys.stdout
    out.write(args.prompt)
    with contextlib.closing(pieces):
        for piece in pieces:
            out.write(piece)
            out.flush()
    out.write("\n")
    out.flush()
    return 0
