"""Text in, text out: a language model with its tokenizer, whole or streamed, with stop strings.

    gen = TextGenerator.from_folder("runs/shakespeare_char")
    gen.generate("ROMEO:", max_new_tokens=200, do_sample=True, temperature=0.8, stop=["\\n\\n"])
    for chunk in gen.stream("ROMEO:", max_new_tokens=200, do_sample=True):
        print(chunk, end="", flush=True)

Sampling arguments are those of :func:`plait.generation.generate` (``eos_token_id`` defaults to
the tokenizer's). A stop string ends the text just before it, and is not returned; while
streaming, text that might be the start of a stop string is held back until it is not.

One ``TextGenerator`` serves one generation at a time: concurrent callers (server threads) are
queued on a lock and served in turn, so none sees another's KV cache. A caller that starts a
second generation while its own stream is still open, in the same thread, would wait on
itself; that is an error instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from plait.generation import SamplingParams, check, generate, stream


class StopText:
    """Decoded text of a growing token list, released as it becomes safe to show."""

    def __init__(self, tokenizer: Any, stops: Sequence[str] = ()):
        self.tok, self.stops = tokenizer, [s for s in stops if s]
        self.ids: list[int] = []
        self.shown = 0  # characters of the text already released
        self.stopped = False

    def add(self, token: int) -> str:
        """Take one token; return the text that became safe. After a stop string appears,
        ``stopped`` is set and the text before it is the last that is released."""
        self.ids.append(token)
        text = self.tok.decode(self.ids)
        cuts = [i for i in (text.find(s, max(0, self.shown - len(s))) for s in self.stops)
                if i >= 0]
        if cuts:
            self.stopped = True
            return self._release(text, min(cuts))
        safe = len(text)
        while safe > self.shown and text[safe - 1] == "\ufffd":  # an unfinished UTF-8 char
            safe -= 1
        for s in self.stops:  # a tail that could still grow into a stop string waits
            for k in range(min(len(s) - 1, safe - self.shown), 0, -1):
                if text[safe - k:safe] == s[:k]:
                    safe -= k
                    break
        return self._release(text, safe)

    def flush(self) -> str:
        """Whatever is still held back (nothing once a stop string ended the text)."""
        return "" if self.stopped else self._release(self.tok.decode(self.ids), None)

    def _release(self, text: str, end: int | None) -> str:
        end = len(text) if end is None else end
        if end <= self.shown:
            return ""
        out, self.shown = text[self.shown:end], end
        return out


class TextGenerator:
    """A language model and its tokenizer; ``generate`` and ``stream`` take and give text."""

    def __init__(self, model: Any, tokenizer: Any):
        self.model, self.tokenizer = model, tokenizer
        self._lock = threading.Lock()
        self._owner: int | None = None  # the thread holding the lock

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | torch.device = "cpu",
                    quantize: str | None = None) -> TextGenerator:
        """A plait or Hugging Face folder holding a language model and its tokenizer;
        ``quantize``: "int8" or "int4" weights (:func:`plait.load`)."""
        from plait.loading import load
        from plait.text import load_tokenizer

        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        tokenizer = load_tokenizer(folder)
        model = load(folder, device=device, quantize=quantize)
        if not hasattr(model, "prefill"):
            raise ValueError(f"{folder} holds a {type(model).__name__}, which does not generate"
                             " text (it has no decoder)")
        return cls(model, tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def params(self, **sampling: Any) -> SamplingParams:
        """SamplingParams with ``eos_token_id`` defaulting to the tokenizer's end of text."""
        sampling.setdefault("eos_token_id", self.tokenizer.eos_token_id)
        return SamplingParams(**sampling)

    def encode(self, prompt: str) -> torch.Tensor:
        """(1, T) ids of ``prompt``; an empty or unencodable prompt is a ValueError."""
        ids = self.tokenizer.encode(prompt)  # raises ValueError for characters outside the vocab
        if not ids:
            raise ValueError("the prompt is empty: give at least one character to continue")
        return torch.tensor([ids], device=self.device)

    def generate(self, prompt: str, *, stop: Sequence[str] = (), seed: int | None = None,
                 **sampling: Any) -> str:
        """The continuation of ``prompt`` (without it), cut before the first stop string."""
        return "".join(self.stream(prompt, stop=stop, seed=seed, **sampling))

    def stream(self, prompt: str, *, stop: Sequence[str] = (), seed: int | None = None,
               **sampling: Any) -> Iterator[str]:
        """The continuation in pieces as it is generated (beam search: one piece at the end).
        Arguments are checked now; the generation starts at the first ``next``."""
        params = self.params(**sampling)
        ids = self.encode(prompt)
        check(self.model, ids, params=params)
        return self._pieces(ids, params, list(stop), seed)

    def _pieces(self, ids: torch.Tensor, params: SamplingParams, stops: list[str],
                seed: int | None) -> Iterator[str]:
        text = StopText(self.tokenizer, stops)
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        with self._hold():
            if params.num_beams > 1:  # beam search knows its best text only at the end
                new = generate(self.model, ids, params=params)[0, ids.shape[1]:].tolist()
                eos = params.eos_ids
                cut = next((i for i, t in enumerate(new) if t in eos), len(new))
                tokens = iter(new[:cut])
            else:
                tokens = stream(self.model, ids, params=params, generator=generator)
            try:
                for token in tokens:
                    piece = text.add(token)
                    if piece:
                        yield piece
                    if text.stopped:
                        return
                rest = text.flush()
                if rest:
                    yield rest
            finally:
                close = getattr(tokens, "close", None)
                if close is not None:
                    close()  # frees the model's cache at once, not when garbage-collected

    def _hold(self):
        """The generator's lock: other threads wait their turn; this thread may not nest."""
        me = threading.get_ident()
        if self._owner == me:
            raise RuntimeError("this TextGenerator is already generating in this thread (a"
                               " stream is still open); finish or close it first")
        return _Held(self, me)


class _Held:
    def __init__(self, gen: TextGenerator, me: int):
        self.gen, self.me = gen, me

    def __enter__(self) -> None:
        self.gen._lock.acquire()
        self.gen._owner = self.me

    def __exit__(self, *exc: object) -> None:
        self.gen._owner = None
        self.gen._lock.release()
