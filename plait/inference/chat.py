"""A conversation with a language model: messages in, the assistant's next answer out.

    chat = Chat.from_folder("runs/chat")
    messages = [{"role": "user", "content": "Write 437 in words."}]
    print("".join(chat.stream(messages, max_new_tokens=64)))   # four hundred and thirty-seven

The folder's ``chat_template.json`` (:func:`plait.text.chat.load_template`; :data:`PLAIN` when
it has none) renders the messages and the generation prompt; the answer ends at the template's
first stop string or the tokenizer's end of text, and leading spaces are dropped (``PLAIN``'s
prompt ``assistant:`` is continued by " Hello"). :meth:`Chat.fit` drops the oldest exchanges,
never the system message, until the conversation and the answer fit in the model's context;
:meth:`Chat.answers` answers many conversations at once, greedily (what an evaluation needs).
``plait chat`` is a loop around :meth:`Chat.fit` and :meth:`Chat.stream`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from plait.generation import generate
from plait.inference.text import TextGenerator
from plait.text.base import pad_batch
from plait.text.chat import ChatTemplate, check_messages, load_template

Messages = Sequence[Mapping[str, Any]]


class Chat:
    """A :class:`TextGenerator` and the chat template its model was trained with."""

    def __init__(self, generator: TextGenerator, template: ChatTemplate):
        self.generator, self.template = generator, template

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | torch.device = "cpu",
                    quantize: str | None = None) -> Chat:
        """A language-model folder (plait or Hugging Face) and its template, or PLAIN.
        ``quantize``: "int8" or "int4" weights (:func:`plait.load`)."""
        generator = TextGenerator.from_folder(folder, device, quantize=quantize)
        return cls(generator, load_template(folder))

    @property
    def context(self) -> int | None:
        """Tokens the model reads at most: a hard limit (learned positions) or the length it
        was trained on (``block_size``); None when it names neither."""
        model = self.generator.model
        limit = getattr(model, "max_len", None)
        return limit or getattr(getattr(model, "config", None), "block_size", None)

    def n_tokens(self, messages: Messages) -> int:
        """Tokens of the rendered conversation, generation prompt included."""
        return len(self.generator.tokenizer.encode(self.template.render(messages)))

    def fit(self, messages: Messages, max_new_tokens: int) -> tuple[list[Mapping[str, Any]], int]:
        """The messages with the oldest exchanges dropped (the system message kept) until they
        and ``max_new_tokens`` fit in :attr:`context`; and how many messages were dropped."""
        messages = check_messages(messages)
        limit = self.context
        if limit is None:
            return messages, 0
        if max_new_tokens >= limit:
            raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room for the"
                             f" conversation in this model's {limit}-token context; lower it")
        head = messages[:1] if messages[0]["role"] == "system" else []
        rest = messages[len(head):]
        dropped = 0
        while (n := self.n_tokens(head + rest)) + max_new_tokens > limit:
            # an exchange runs from a user message to the next one
            nxt = next((i for i, m in enumerate(rest) if i and m["role"] == "user"), None)
            if nxt is None:
                raise ValueError(f"the last message needs {n} tokens with the template, and the"
                                 f" answer {max_new_tokens}: more than this model's {limit}-token"
                                 " context; write a shorter message or ask for fewer tokens")
            rest, dropped = rest[nxt:], dropped + nxt
        return head + rest, dropped

    def stream(self, messages: Messages, *, max_new_tokens: int, seed: int | None = None,
               **sampling: Any) -> Iterator[str]:
        """The assistant's answer to ``messages``, in pieces as it is generated. Arguments are
        checked now; ``sampling`` as for :meth:`TextGenerator.stream`."""
        prompt = self.template.render(messages)
        pieces = self.generator.stream(prompt, stop=self.template.stop, seed=seed,
                                       max_new_tokens=max_new_tokens, **sampling)
        return _lstripped(pieces)

    def answers(self, conversations: Sequence[Messages], max_new_tokens: int,
                batch_size: int = 64) -> list[str]:
        """The greedy answer to each conversation, in order; conversations of similar length
        share a (left-padded) batch."""
        tok = self.generator.tokenizer
        model = self.generator.model
        prompts = [tok.encode(self.template.render(c)) for c in conversations]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out = [""] * len(prompts)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            ids, mask = pad_batch([prompts[i] for i in rows], tok.pad_token_id, side="left")
            device = self.generator.device
            with torch.no_grad():
                new = generate(model, ids.to(device), mask.to(device),
                               max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id)[:, ids.shape[1]:]
            for i, row in zip(rows, new.tolist(), strict=True):
                out[i] = self.cut(tok.decode(_before_eos(row, tok.eos_token_id)))
        return out

    def cut(self, text: str) -> str:
        """Generated text up to the template's first stop string, without outer spaces."""
        ends = [i for i in (text.find(s) for s in self.template.stop) if i >= 0]
        return text[:min(ends)].strip() if ends else text.strip()


def _before_eos(ids: list[int], eos: int | None) -> list[int]:
    return ids[:ids.index(eos)] if eos is not None and eos in ids else ids


def _lstripped(pieces: Iterator[str]) -> Iterator[str]:
    """``pieces`` without the spaces before the first visible character; closing this closes
    ``pieces`` (which frees the model's cache at once)."""
    started = False
    try:
        for piece in pieces:
            if not started:
                piece = piece.lstrip()
                started = bool(piece)
            if piece:
                yield piece
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


__all__ = ["Chat"]
