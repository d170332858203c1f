"""Text generation: ``generate`` (greedy, sampling, beam search) and ``stream``.

Arguments and their meaning follow ``transformers``' ``generate`` so code and results carry
over; ``tests/test_generation_hf.py`` checks the tokens against it. Two choices of our own:

* a prompt longer than the model accepts (prompt + max_new_tokens > ``model.max_len``) is a
  ``ValueError`` naming both lengths, not a silent truncation;
* left padding never counts as "seen" text (repetition penalty, n-grams), and beam scores use
  generated length only, so a prompt's output does not depend on its batch companions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from plait.generation.processors import (
    DecodeState,
    SamplingParams,
    min_new_tokens,
    no_repeat_ngram,
    repetition_penalty,
    temperature,
    top_k,
    top_p,
)
from plait.generation.search import beam_search, sample_steps

__all__ = [
    "DecodeState", "SamplingParams", "generate", "min_new_tokens", "no_repeat_ngram",
    "repetition_penalty", "stream", "temperature", "top_k", "top_p",
]


def _prepare(model, input_ids: Tensor, attention_mask: Tensor | None, p: SamplingParams,
             ) -> tuple[Tensor, Tensor | None, int]:
    """Check shapes and lengths; repeat rows for beams / multiple samples; total length."""
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids)
        raise ValueError(f"input_ids must be a (batch, seq_len) tensor of token ids, got {shape}")
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty: pass at least one prompt token (e.g. a BOS token)")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} must equal"
                         f" input_ids shape {tuple(input_ids.shape)}")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None and (int(input_ids.max()) >= vocab or int(input_ids.min()) < 0):
        raise ValueError(f"input_ids hold ids outside the model's vocabulary [0, {vocab})")
    T0 = input_ids.shape[1]
    total = T0 + p.max_new_tokens
    max_len = getattr(model, "max_len", None)
    if max_len is not None and total > max_len:
        raise ValueError(f"prompt of {T0} tokens + max_new_tokens={p.max_new_tokens} = {total}"
                         f" exceeds the model's maximum length {max_len}; shorten the prompt or"
                         " lower max_new_tokens")
    rep = p.num_beams if p.num_beams > 1 else p.num_return_sequences
    if rep > 1:
        input_ids = input_ids.repeat_interleave(rep, dim=0)
        if attention_mask is not None:
            attention_mask = attention_mask.repeat_interleave(rep, dim=0)
    return input_ids.long(), attention_mask, total


def _params(params: SamplingParams | None, kwargs: dict) -> SamplingParams:
    if params is not None:
        if kwargs:
            raise ValueError(f"pass either params= or keyword arguments, not both (got {kwargs})")
        return params
    unknown = sorted(set(kwargs) - set(SamplingParams.__dataclass_fields__))
    if unknown:
        allowed = ", ".join(SamplingParams.__dataclass_fields__)
        raise ValueError(f"unknown generation argument(s) {unknown}; allowed: {allowed},"
                         " generator, streamer, stop")
    return SamplingParams(**kwargs)


def _stop_tensors(stop: Sequence[Sequence[int]] | None, device) -> list[Tensor]:
    if not stop:
        return []
    out = [torch.tensor(list(s), dtype=torch.long, device=device) for s in stop]
    if any(len(s) == 0 for s in out):
        raise ValueError("stop sequences must each hold at least one token id")
    return out


@torch.inference_mode()
def generate(model, input_ids: Tensor, attention_mask: Tensor | None = None, *,
             generator: torch.Generator | None = None,
             streamer: Callable[[Tensor], None] | None = None,
             stop: Sequence[Sequence[int]] | None = None, params: SamplingParams | None = None,
             **kwargs) -> Tensor:
    """Prompt + new tokens, (B * num_return_sequences, T_total), as ``transformers`` returns.

    Args:
        input_ids: (B, T) prompts, left-padded when their lengths differ.
        attention_mask: (B, T) 1 for real tokens, 0 for padding (None = no padding).
        generator: torch.Generator for reproducible sampling.
        streamer: called with each step's new tokens (N,) (greedy / sampling only).
        stop: token-id sequences; a row ends after producing one (greedy / sampling only).
        params: a ready :class:`SamplingParams`, instead of keyword arguments.
        **kwargs: the fields of :class:`SamplingParams` (max_new_tokens, do_sample,
            temperature, top_k, top_p, num_beams, num_return_sequences, length_penalty,
            early_stopping, repetition_penalty, no_repeat_ngram_size, min_new_tokens,
            eos_token_id, pad_token_id).
    Finished rows are padded with pad_token_id (default: the first eos id).
    """
    p = _params(params, kwargs)
    ids, mask, total = _prepare(model, input_ids, attention_mask, p)
    stops = _stop_tensors(stop, ids.device)
    if p.num_beams > 1 and (streamer is not None or stops):
        raise ValueError("streamer and stop work with num_beams=1 only; beam search picks its"
                         " result at the end (use eos_token_id to end beams)")
    try:
        if p.num_beams > 1:
            model.setup_cache(ids.shape[0] // p.num_beams, total)
            return beam_search(model, ids, mask, p, total, generator)
        model.setup_cache(ids.shape[0], total)
        out = ids
        for tok, seq in sample_steps(model, ids, mask, p, total, generator, stops):
            out = seq
            if streamer is not None:
                streamer(tok)
        return out.clone()
    finally:
        model.clear_cache()


def stream(model, input_ids: Tensor, attention_mask: Tensor | None = None, *,
           generator: torch.Generator | None = None,
           stop: Sequence[Sequence[int]] | None = None, params: SamplingParams | None = None,
           **kwargs) -> Iterator[int]:
    """Yield new token ids one at a time for a single prompt (1, T) (greedy or sampling).

    Arguments are checked at once (bad ones raise here, before any token). The eos token that
    ends generation is not yielded; a stop sequence is. Breaking out of the loop (or closing
    the iterator) frees the KV cache.
    """
    p = _params(params, kwargs)
    if p.num_beams > 1 or p.num_return_sequences > 1 or input_ids.shape[0] != 1:
        raise ValueError("stream() decodes one prompt into one sequence: pass input_ids of"
                         " shape (1, T), num_beams=1 and num_return_sequences=1")
    ids, mask, total = _prepare(model, input_ids, attention_mask, p)
    return _stream(model, ids, mask, p, total, generator, _stop_tensors(stop, ids.device))


def _stream(model, ids: Tensor, mask: Tensor | None, p: SamplingParams, total: int,
            generator: torch.Generator | None, stops: list[Tensor]) -> Iterator[int]:
    eos = set(p.eos_ids)
    try:
        with torch.inference_mode():
            model.setup_cache(1, total)
        steps = sample_steps(model, ids, mask, p, total, generator, stops)
        while True:
            with torch.inference_mode():  # not held across yields: the caller runs in between
                nxt = next(steps, None)
            if nxt is None or int(nxt[0][0]) in eos:
                return
            yield int(nxt[0][0])
    finally:
        model.clear_cache()
