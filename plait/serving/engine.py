"""Dynamic batching: concurrent requests share the decoding steps of one model.

One thread owns the model. Each loop it admits waiting jobs (one prefill each, at most
``max_batch`` rows in flight), then runs **one** ``model.step`` for every row at once and
hands each row its token. A row leaves as soon as it finishes (end of text, a stop string,
``max_tokens``, or its client gone), and a waiting job takes its place at the next step: the
batch is never drained to let newcomers in (continuous batching, Yu et al. 2022, "Orca").

The rows share one KV store per layer, ``(rows, kv_heads, width, head_dim)``, written through
the model's own caches (the decoding protocol's ``prefill`` / ``step``; :class:`Slots`). Rows
are **right-aligned**: every row's latest token sits in the same column ``col``, so one
``step(tokens, mask, col)`` serves all; a row that started later simply has more masked
columns on its left. Positions come from the mask (``cumsum``, as for left padding), so a
row's numbers are those it would get alone. A newcomer's prompt is prefilled alone (its own
numbers exactly, batch 1) and copied in so that it ends at column ``col``; when ``col`` reaches
the width, every row is shifted left by the columns no row uses any more. A job is admitted
only if prompt + ``max_tokens`` fits the width, so a shift always frees a column.

Sampling is per row with the row's own generator, in the order ``generate`` uses
(temperature, top-k, top-p, then ``multinomial``), so a seeded request draws the tokens it
would draw alone. Stop strings are applied to the decoded text (:class:`StopText`).
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from plait.generation import SamplingParams
from plait.generation.processors import apply
from plait.generation.protocol import exclusive
from plait.inference.text import StopText
from plait.serving.slots import Slots


class QueueFullError(RuntimeError):
    """Too many requests are waiting; the caller should retry later (HTTP 503)."""


@dataclass
class Job:
    """One sequence to generate: prompt ids, sampling, stop strings, prefill extras."""

    ids: list[int]
    params: SamplingParams
    stop: tuple[str, ...] = ()
    seed: int | None = None
    inputs: dict[str, Tensor] = field(default_factory=dict)  # e.g. pixel_values (1, K, 3, H, W)


@dataclass(frozen=True)
class Event:
    """What a job's handle receives: text pieces, then one final event (``finish`` set)."""

    text: str = ""
    finish: str | None = None  # "stop" | "length" | "error" | "cancelled"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


class Handle:
    """The caller's side of a job: its events in order, and ``cancel()``.

    Created with an event loop, events arrive on an ``asyncio.Queue`` (iterate with ``async
    for``); without one, on a thread-safe queue (iterate with ``for``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None):
        self._loop = loop
        self._q: Any = asyncio.Queue() if loop is not None else queue.SimpleQueue()
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop generating for this job; its row is freed at the engine's next step."""
        self.cancelled.set()

    def emit(self, event: Event) -> None:
        if self._loop is None:
            self._q.put(event)
            return
        try:
            self._loop.call_soon_threadsafe(self._q.put_nowait, event)
        except RuntimeError:  # the loop has closed: nobody is listening any more
            self.cancel()

    def __iter__(self):
        while True:
            ev = self._q.get()
            yield ev
            if ev.finish is not None:
                return

    async def __aiter__(self):
        while True:
            ev = await self._q.get()
            yield ev
            if ev.finish is not None:
                return


@dataclass
class _Row:
    job: Job
    handle: Handle
    text: StopText
    generator: torch.Generator | None
    last: int = 0  # the token the next step feeds
    produced: int = 0


class Engine:
    """Serve jobs for one decoder (GPT, VLM, ...) and its tokenizer on a background thread.

    Args:
        max_batch: rows decoded together (and KV rows preallocated).
        max_queue: jobs waiting beyond those; ``submit`` raises :class:`QueueFullError` past it.
        width: the longest prompt + max_tokens a job may have (default: the model's context).
        prefill_tokens: prompt tokens prefilled between two steps (at least one prompt): a
            burst of newcomers then delays the running streams by a bounded pause each step,
            not by all their prompts at once.
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_batch: int = 32, max_queue: int = 256,
                 width: int | None = None, prefill_tokens: int = 512):
        self.model, self.tokenizer = model, tokenizer
        self.prefill_tokens = prefill_tokens
        self.width = width or context_of(model)
        self.max_batch, self.max_queue = max_batch, max_queue
        self._waiting: collections.deque[tuple[Job, Handle]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._rows: list[_Row] = []
        self.steps = 0  # decoding steps run (one forward pass each), for tests and metrics
        self.dropped = 0  # rows freed because their client went away
        with exclusive(model), torch.inference_mode():  # errors (no KV cache, ...) raise here
            self._slots = Slots(model, max_batch, self.width)
        self._thread = threading.Thread(target=self._run, name="plait-engine", daemon=True)
        self._thread.start()

    # -- the callers' side ---------------------------------------------------------------------
    def submit(self, job: Job, loop: asyncio.AbstractEventLoop | None = None) -> Handle:
        """Queue ``job``; raises ValueError if it cannot fit, QueueFullError if the queue is."""
        n = len(job.ids)
        if n == 0:
            raise ValueError("the prompt is empty")
        if n + job.params.max_new_tokens > self.width:
            raise ValueError(f"prompt of {n} tokens + max_tokens {job.params.max_new_tokens}"
                             f" exceeds the context of {self.width} tokens")
        handle = Handle(loop)
        with self._cond:
            if self._closed:
                raise RuntimeError("the engine has been closed")
            if len(self._waiting) >= self.max_queue:
                raise QueueFullError(f"{len(self._waiting)} requests are already waiting (the"
                                     f" queue holds {self.max_queue}); retry later")
            self._waiting.append((job, handle))
            self._cond.notify()
        return handle

    @property
    def load(self) -> tuple[int, int]:
        """(rows decoding, jobs waiting)."""
        return len(self._rows), len(self._waiting)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)

    # -- the engine thread ---------------------------------------------------------------------
    def _run(self) -> None:
        with exclusive(self.model), torch.inference_mode():
            slots = self._slots
            try:
                while True:
                    with self._cond:
                        while not self._closed and not self._waiting and not self._rows:
                            self._cond.wait()
                        if self._closed:
                            break
                    try:
                        self._admit(slots)
                        if self._rows:
                            self._step(slots)
                    except Exception as e:  # noqa: BLE001  a model error fails its rows, not us
                        self._fail_all(slots, f"{type(e).__name__}: {e}")
            finally:
                with self._cond:
                    left = [h for _, h in self._waiting] + [r.handle for r in self._rows]
                    self._waiting.clear()
                for handle in left:
                    handle.emit(Event(finish="error", error="the server is shutting down"))
                self.model.clear_cache()

    def _admit(self, slots: Slots) -> None:
        budget = self.prefill_tokens
        while len(self._rows) < self.max_batch and budget > 0:
            with self._cond:
                if not self._waiting:
                    return
                job, handle = self._waiting.popleft()
            if handle.cancelled.is_set():
                handle.emit(Event(finish="cancelled"))
                continue
            ids = torch.tensor([job.ids], device=slots.device)
            try:
                logits = slots.prefill(ids, job.inputs)  # (1, V)
            except Exception as e:  # noqa: BLE001  this job's inputs; the others go on
                handle.emit(Event(finish="error", error=f"{type(e).__name__}: {e}"))
                continue
            budget -= len(job.ids)
            gen = None
            if job.seed is not None:
                gen = torch.Generator(device=slots.device).manual_seed(job.seed)
            row = _Row(job, handle, StopText(self.tokenizer, job.stop), gen)
            self._rows.append(row)
            tok = self._sample(row, logits)
            if not self._advance(row, tok):
                self._drop(slots, len(self._rows) - 1)

    def _step(self, slots: Slots) -> None:
        for i in range(len(self._rows) - 1, -1, -1):  # clients gone: free their rows first
            if self._rows[i].handle.cancelled.is_set():
                self._rows[i].handle.emit(Event(finish="cancelled"))
                self._drop(slots, i)
                self.dropped += 1
        if not self._rows:
            return
        last = torch.tensor([[r.last] for r in self._rows], device=slots.device)
        logits = slots.step(last)  # (n, V)
        self.steps += 1
        toks = self._choose(logits)
        done = []
        for i, row in enumerate(self._rows):
            if not self._advance(row, toks[i]):
                done.append(i)
        for i in reversed(done):
            self._drop(slots, i)

    def _choose(self, logits: Tensor) -> list[int]:
        """Each row's next token. Rows that decode alike share one call: greedy rows one
        argmax, unseeded rows with equal sampling settings one ``multinomial``; a seeded row
        draws alone from its own generator (the draws it would make alone)."""
        groups: dict[object, list[int]] = {}
        for i, r in enumerate(self._rows):
            p = r.job.params
            key = "greedy" if p.greedy else i if r.generator is not None else (
                p.temperature, p.top_k, p.top_p)
            groups.setdefault(key, []).append(i)
        toks = [0] * len(self._rows)
        for key, idx in groups.items():
            if key == "greedy":
                picked = logits[idx].argmax(-1).tolist()
            elif len(idx) == 1:
                picked = [self._sample(self._rows[idx[0]], logits[idx[0]:idx[0] + 1])]
            else:
                group = apply(self._rows[idx[0]].job.params.processors(), logits[idx], None)
                picked = torch.multinomial(group.softmax(-1), 1).squeeze(1).tolist()
            for i, t in zip(idx, picked, strict=True):
                toks[i] = t
        return toks

    @staticmethod
    def _sample(row: _Row, logits: Tensor) -> int:
        p = row.job.params
        procs = p.processors()
        if procs:
            logits = apply(procs, logits, None)
        if p.greedy:
            return int(logits.argmax(-1))
        probs = logits.softmax(-1)
        return int(torch.multinomial(probs, 1, generator=row.generator))

    def _advance(self, row: _Row, tok: int) -> bool:
        """Give ``tok`` to its row; False when the row has finished."""
        p, n_prompt = row.job.params, len(row.job.ids)
        if tok in p.eos_ids:
            row.handle.emit(Event(finish="stop", prompt_tokens=n_prompt,
                                  completion_tokens=row.produced))
            return False
        row.produced += 1
        row.last = tok
        piece = row.text.add(tok)
        if piece:
            row.handle.emit(Event(text=piece))
        finish = "stop" if row.text.stopped else (
            "length" if row.produced >= p.max_new_tokens else None)
        if finish is None:
            if row.handle.cancelled.is_set():  # the client has gone: free the row now
                row.handle.emit(Event(finish="cancelled"))
                self.dropped += 1
                return False
            return True
        rest = row.text.flush()
        row.handle.emit(Event(text=rest, finish=finish, prompt_tokens=n_prompt,
                              completion_tokens=row.produced))
        return False

    def _drop(self, slots: Slots, i: int) -> None:
        slots.remove(i)
        self._rows[i] = self._rows[-1]
        self._rows.pop()

    def _fail_all(self, slots: Slots, message: str) -> None:
        for row in self._rows:
            row.handle.emit(Event(finish="error", error=message))
        self._rows.clear()
        slots.reset()


def context_of(model: Any) -> int:
    """The longest sequence to serve: the model's hard limit, else its trained block size."""
    limit = getattr(model, "max_len", None)
    if limit:
        return int(limit)
    block = getattr(getattr(model, "config", None), "block_size", None)
    if block:
        return int(block)
    raise ValueError(f"{type(model).__name__} names no context length; pass width=")


__all__ = ["Engine", "Event", "Handle", "Job", "QueueFullError", "context_of"]
