"""Chat with a language model in the terminal, the answers streamed as they are generated.

    plait chat --model runs/chat
    plait chat --model runs/shakespeare_char --system "You are a poet." --temperature 0.8
    plait chat --model runs/chat --quantize int8
    printf 'Write 437 in words.\\nAnd 438?\\n' | plait chat --model runs/chat

The conversation is rendered with the folder's chat_template.json (plait/text/chat.py), or,
without one, with the PLAIN template ("user: ...", "assistant:"), which any language model can
continue. The whole history goes into every prompt; when it no longer fits the model's context
with --max-tokens to spare, the oldest exchanges are dropped (the system message stays) and
stderr says so. /reset forgets the history, /exit or end of input ends the chat.

On a terminal: a "you> " prompt, and a message that cannot be answered (a character the
tokenizer does not know, a message too long for the context) is reported and skipped. With
input from a pipe or a file: one user message per line, each answer on one line of stdout
(its own line breaks written as spaces), and such a message ends the command with code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from plait.inference.chat import Chat

RESET, EXIT = "/reset", "/exit"
DEFAULT_TOKENS = 64


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR",
                   help="language-model folder (plait or Hugging Face) with its tokenizer")
    p.add_argument("--system", default="", metavar="TEXT",
                   help="a system message that opens the conversation")
    p.add_argument("--max-tokens", type=int, default=None, metavar="N",
                   help=f"tokens per answer at most, kept free in the context (default"
                   f" {DEFAULT_TOKENS}, or half the context if that is less)")
    p.add_argument("--temperature", type=float, default=0.0, metavar="T",
                   help="sampling temperature; 0 = greedy (default)")
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="random seed for reproducible sampling")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--quantize", choices=["int8", "int4"], default=None,
                   help="weight-only quantisation for faster CPU decoding (docs/efficiency.md)")


def run(args: argparse.Namespace) -> int:
    from plait.inference.chat import Chat

    chat = Chat.from_folder(args.model, device=args.device, quantize=args.quantize)
    context = chat.context
    if args.max_tokens is None:
        args.max_tokens = DEFAULT_TOKENS if context is None else min(DEFAULT_TOKENS, context // 2)
    if args.max_tokens < 1 or (context is not None and args.max_tokens >= context):
        raise ValueError(f"--max-tokens must be at least 1 and leave room for the conversation"
                         f" in this model's {context}-token context, got {args.max_tokens}")
    sampling = {"max_new_tokens": args.max_tokens, "seed": args.seed,
                "do_sample": args.temperature > 0, "temperature": args.temperature}
    chat.generator.params(**{k: v for k, v in sampling.items() if k != "seed"})  # checks them
    system = [{"role": "system", "content": args.system}] if args.system else []
    if system:
        chat.fit(system, args.max_tokens)  # a system message that cannot fit: say so now
    session = Session(chat, system, sampling, interactive=sys.stdin.isatty())
    return session.loop(sys.stdin, sys.stdout)


class Session:
    """The history of one chat and the loop that reads messages and writes answers."""

    def __init__(self, chat: Chat, system: list[dict[str, str]], sampling: dict[str, Any],
                 interactive: bool):
        self.chat, self.system, self.sampling = chat, system, sampling
        self.interactive = interactive
        self.history: list[Mapping[str, str]] = list(system)

    def loop(self, stdin: TextIO, out: TextIO) -> int:
        if self.interactive:
            print(f"{RESET} forgets the conversation, {EXIT} or Ctrl-D ends it",
                  file=sys.stderr)
        for line in _lines(stdin, self.interactive):
            text = line.strip()
            if text == EXIT:
                break
            if text == RESET:
                self.history = list(self.system)
                continue
            if not text:
                continue
            try:
                self.answer(text, out)
            except ValueError as e:
                if not self.interactive:
                    raise
                print(f"error: {e}", file=sys.stderr)
        return 0

    def answer(self, text: str, out: TextIO) -> None:
        """Stream the answer to ``text`` to ``out`` and add both to the history."""
        turn = [*self.history, {"role": "user", "content": text}]
        turn, dropped = self.chat.fit(turn, self.sampling["max_new_tokens"])
        if dropped:
            print(f"(the conversation outgrew the model's {self.chat.context}-token context:"
                  f" dropped the oldest {dropped} message{'s' * (dropped > 1)})", file=sys.stderr)
        pieces = self.chat.stream(turn, **self.sampling)  # checks the message before output
        words = []
        try:
            for piece in pieces:
                words.append(piece)
                out.write(piece if self.interactive else piece.replace("\n", " "))
                out.flush()
        finally:
            pieces.close()
        out.write("\n")
        out.flush()
        self.history = [*turn, {"role": "assistant", "content": "".join(words).strip()}]


def _lines(stdin: TextIO, interactive: bool) -> Iterator[str]:
    """Messages typed after a "you> " prompt on a terminal, else the lines of stdin."""
    if not interactive:
        yield from stdin
        return
    while True:
        try:
            yield input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return
