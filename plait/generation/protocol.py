"""The decoding protocol: what ``generate`` needs from a model, and nothing more.

A model that generates implements :class:`Decoder`. ``generate`` calls, in order::

    model.setup_cache(rows, max_len)          # preallocate every layer's KV cache
    logits = model.prefill(ids, mask, **inputs)  # the prompt, once; extra inputs only here
    logits = model.step(tok, mask, pos)       # then one token per row per step
    model.reorder_cache(index)                # beam search: keep the surviving beams' rows
    model.clear_cache()                       # always, in a finally

``inputs`` are whatever the model's ``prefill`` accepts beside the prompt: ``inputs_embeds``
(embeddings placed where tokens would be: an image's features spliced into a prompt),
``encoder_hidden_states`` and ``encoder_attention_mask`` (an encoder's output for
cross-attention), later ``pixel_values`` or ``input_features``. They reach the prefill once and
never a step: whatever a step needs of them (cross-attention keys and values, say) the model
computed at the prefill and keeps in its cache. They come one row per sequence the prefill
runs: per returned sequence when sampling (``generate`` repeats them), per prompt in beam
search (which prefills each prompt once and copies its cache to its beams with
``reorder_cache``).

One model object serves one generation at a time, since its cache lives on its modules.
:func:`exclusive` makes a second, concurrent generation on the same object fail at once with
:class:`ModelBusyError` instead of corrupting the first; to serve several callers, queue them
(:class:`plait.inference.TextGenerator` does) or load one copy per worker.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import weakref
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Decoder(Protocol):
    """A model ``generate`` can drive (``GPT`` is one)."""

    @property
    def max_len(self) -> int | None:
        """Longest sequence (prompt + new tokens) the model accepts; None: no hard limit."""

    def setup_cache(self, batch: int, max_len: int) -> None:
        """Preallocate caches for ``batch`` rows of up to ``max_len`` positions."""

    def reorder_cache(self, index: Tensor) -> None:
        """Keep cache rows ``index`` (N,), in that order (may also grow the batch)."""

    def clear_cache(self) -> None:
        """Free the caches; the model is then ready for ordinary forward passes again."""

    def prefill(self, input_ids: Tensor, attention_mask: Tensor | None, **inputs: Any) -> Tensor:
        """Run the prompt (N, T) into the cache; return next-token logits (N, V)."""

    def step(self, input_ids: Tensor, attention_mask: Tensor | None, input_pos: int) -> Tensor:
        """Run one token per row (N, 1) at cache position ``input_pos``; logits (N, V).
        ``attention_mask`` (N, input_pos + 1) covers the cached positions too, or is None."""


class ModelBusyError(RuntimeError):
    """A second generation was started on a model object that is already generating."""


_busy: weakref.WeakSet = weakref.WeakSet()
_busy_lock = threading.Lock()


@contextlib.contextmanager
def exclusive(model: Any) -> Iterator[None]:
    """Hold ``model`` for one generation; a concurrent second holder gets ModelBusyError."""
    with _busy_lock:
        if model in _busy:
            raise ModelBusyError(
                f"this {type(model).__name__} is already generating (its KV cache is in use):"
                " one model object serves one generation at a time; wait for the first to"
                " finish, or load a second copy with plait.load")
        _busy.add(model)
    try:
        yield
    finally:
        with _busy_lock:
            _busy.discard(model)


PROMPT_ARGS = ("input_ids", "attention_mask")


def prefill_inputs(model: Any) -> tuple[str, ...] | None:
    """The extra inputs ``model.prefill`` accepts by name (None: any, it takes ``**kwargs``).

    Read once per ``generate`` call, so that a misspelt input is an error naming the ones the
    model takes, not an argument silently ignored."""
    params = inspect.signature(model.prefill).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.name not in PROMPT_ARGS
                 and p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                inspect.Parameter.POSITIONAL_OR_KEYWORD))
