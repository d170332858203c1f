"""Generate text from a model folder, streamed as it is produced.

    plait generate --model runs/shakespeare --prompt "ROMEO:" --max-new-tokens 200

Prints the prompt, then the continuation. Samples by default; --temperature 0 decodes greedily;
--num-beams > 1 runs (deterministic) beam search and prints its best result at the end.
Generation stops at the tokenizer's end-of-text token, after --max-new-tokens, or just before
the first --stop string (the stop string itself is not printed). The folder may be a plait
folder or a Hugging Face one; its tokenizer is read from the same folder.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import TextIO

import torch


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


class StopPrinter:
    """Writes decoded text as tokens arrive, holding back what might begin a stop string."""

    def __init__(self, tokenizer, stops: list[str], out: TextIO):
        self.tok, self.stops, self.out = tokenizer, [s for s in stops if s], out
        self.ids: list[int] = []
        self.shown = 0  # characters of the continuation already written
        self.stopped = False

    def add(self, token: int) -> bool:
        """Take one token; True once a stop string has appeared (text before it is written)."""
        self.ids.append(token)
        text = self.tok.decode(self.ids)
        cuts = [i for i in (text.find(s, max(0, self.shown - len(s))) for s in self.stops)
                if i >= 0]
        if cuts:
            self._write(text, min(cuts))
            self.stopped = True
            return True
        safe = len(text)
        while safe > self.shown and text[safe - 1] == "\ufffd":  # an unfinished UTF-8 char
            safe -= 1
        for s in self.stops:  # a tail that could still grow into a stop string waits
            for k in range(min(len(s) - 1, safe - self.shown), 0, -1):
                if text[safe - k:safe] == s[:k]:
                    safe -= k
                    break
        self._write(text, safe)
        return False

    def finish(self) -> None:
        """Write whatever is still held back (unless a stop string ended the text)."""
        if not self.stopped:
            self._write(self.tok.decode(self.ids), None)
        self.out.write("\n")
        self.out.flush()

    def _write(self, text: str, end: int | None) -> None:
        end = len(text) if end is None else end
        if end > self.shown:
            self.out.write(text[self.shown:end])
            self.out.flush()
            self.shown = end


def _load(args: argparse.Namespace):
    folder = Path(args.model)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    import plait
    from plait.text import load_tokenizer

    tokenizer = load_tokenizer(folder)
    model = plait.load(folder, device=args.device)
    return model, tokenizer


def run(args: argparse.Namespace) -> int:
    from plait.generation import SamplingParams, generate, stream

    model, tokenizer = _load(args)
    prompt = tokenizer.encode(args.prompt)  # raises ValueError for characters outside the vocab
    if not prompt:
        raise ValueError("--prompt is empty: give at least one character to continue")
    eos = tokenizer.eos_token_id
    beams = args.num_beams > 1
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens, do_sample=not beams and args.temperature > 0,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        num_beams=args.num_beams, length_penalty=args.length_penalty,
        repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size,
        eos_token_id=eos)
    ids = torch.tensor([prompt], device=args.device)
    generator = None
    if args.seed is not None:
        generator = torch.Generator(device=args.device).manual_seed(args.seed)
    printer = StopPrinter(tokenizer, args.stop, sys.stdout)
    if beams:  # beam search knows its best text only at the end
        new = generate(model, ids, params=params)[0, len(prompt):].tolist()
        sys.stdout.write(args.prompt)
        _emit(printer, new[:new.index(eos)] if eos is not None and eos in new else new)
        return 0
    tokens = stream(model, ids, params=params, generator=generator)  # checks arguments now
    sys.stdout.write(args.prompt)
    with contextlib.closing(tokens):
        _emit(printer, tokens)
    return 0


def _emit(printer: StopPrinter, tokens) -> None:
    for t in tokens:
        if printer.add(t):
            break
    printer.finish()
