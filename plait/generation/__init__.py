"""Text generation: ``generate`` (greedy, sampling, beam search) and ``stream``.

Arguments and their meaning follow ``transformers``' ``generate`` so code and results carry
over; ``tests/test_generation_hf.py`` checks the tokens against it. Any model implementing the
decoding protocol (:class:`Decoder`, ``protocol.py``) can be driven, and keyword arguments
that are not sampling parameters are the model's extra prefill inputs (``inputs_embeds``,
``encoder_hidden_states`` ...). Two choices of our own:

* a prompt longer than the model accepts (prompt + max_new_tokens > ``model.max_len``) is a
  ``ValueError`` naming both lengths, not a silent truncation;
* left padding never counts as "seen" text (repetition penalty, n-grams), and beam scores use
  generated length only, so a prompt's output does not depend on its batch companions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

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
from plait.generation.protocol import Decoder, ModelBusyError, exclusive, prefill_inputs
from plait.generation.search import Prompt, beam_search, sample_steps

__all__ = [
    "DecodeState", "Decoder", "ModelBusyError", "SamplingParams", "check", "generate",
    "min_new_tokens", "no_repeat_ngram", "repetition_penalty", "stream", "temperature", "top_k",
    "top_p",
]
SAMPLING_ARGS = tuple(SamplingParams.__dataclass_fields__)


def _split(model, params: SamplingParams | None,
           kwargs: dict[str, Any]) -> tuple[SamplingParams, dict[str, Any]]:
    """Keyword arguments -> (sampling parameters, the model's extra prefill inputs)."""
    sampling = {k: v for k, v in kwargs.items() if k in SAMPLING_ARGS}
    inputs = {k: v for k, v in kwargs.items() if k not in SAMPLING_ARGS}
    accepted = prefill_inputs(model)
    unknown = sorted(k for k in inputs if accepted is not None and k not in accepted)
    if unknown:
        takes = ", ".join(accepted) if accepted else "none"
        raise ValueError(f"unknown generation argument(s) {unknown}; sampling arguments:"
                         f" {', '.join(SAMPLING_ARGS)}, generator, streamer, stop, params;"
                         f" this {type(model).__name__}'s inputs: {takes}")
    if params is not None and sampling:
        raise ValueError(f"pass either params= or sampling keyword arguments, not both (got"
                         f" {sorted(sampling)})")
    p = params if params is not None else SamplingParams(**sampling)
    return p, {k: v for k, v in inputs.items() if v is not None}


def _rows(x: Any, name: str, B: int) -> None:
    if isinstance(x, Tensor) and (x.dim() == 0 or x.shape[0] != B):
        raise ValueError(f"{name} has shape {tuple(x.shape)}; its first dimension must be the"
                         f" batch, {B} prompts")


def _prepare(model, input_ids: Tensor | None, attention_mask: Tensor | None, p: SamplingParams,
             inputs: dict[str, Any]) -> Prompt:
    """Check shapes and lengths; repeat rows for beams / multiple samples."""
    embeds = inputs.get("inputs_embeds")
    seen = input_ids is not None
    if input_ids is None:
        if not isinstance(embeds, Tensor) or embeds.dim() != 3:
            raise ValueError("pass input_ids (batch, seq_len), or inputs_embeds (batch, seq_len,"
                             " width) for a prompt given as embeddings")
        # placeholders: the buffers need ids, the penalties must not see them, and the
        # output holds the new tokens only (as transformers returns it)
        input_ids = torch.full(embeds.shape[:2], p.pad_id, dtype=torch.long,
                               device=embeds.device)
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids)
        raise ValueError(f"input_ids must be a (batch, seq_len) tensor of token ids, got {shape}")
    B, T0 = input_ids.shape
    if T0 == 0:
        raise ValueError("input_ids is empty: pass at least one prompt token (e.g. a BOS token)")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} must equal"
                         f" the prompt's shape {tuple(input_ids.shape)}")
    if isinstance(embeds, Tensor) and tuple(embeds.shape[:2]) != (B, T0):
        raise ValueError(f"inputs_embeds shape {tuple(embeds.shape)} must begin with the"
                         f" prompt's (batch, seq_len) {(B, T0)}")
    for name, x in inputs.items():
        _rows(x, name, B)
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if seen and vocab is not None and (int(input_ids.max()) >= vocab
                                       or int(input_ids.min()) < 0):
        raise ValueError(f"input_ids hold ids outside the model's vocabulary [0, {vocab})")
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
        if p.num_beams == 1:  # sampling prefills every row; beam search each prompt once
            inputs = {k: v.repeat_interleave(rep, dim=0) if isinstance(v, Tensor) else v
                      for k, v in inputs.items()}
    return Prompt(input_ids.long(), attention_mask, total, inputs, seen)


def _stop_tensors(stop: Sequence[Sequence[int]] | None, device) -> list[Tensor]:
    if not stop:
        return []
    out = [torch.tensor(list(s), dtype=torch.long, device=device) for s in stop]
    if any(len(s) == 0 for s in out):
        raise ValueError("stop sequences must each hold at least one token id")
    return out


def check(model: Decoder, input_ids: Tensor | None = None,
          attention_mask: Tensor | None = None, *, params: SamplingParams | None = None,
          **kwargs: Any) -> None:
    """Raise what ``generate`` would raise for these arguments, without generating (so a
    command can refuse bad input before it prints anything)."""
    p, inputs = _split(model, params, kwargs)
    _prepare(model, input_ids, attention_mask, p, inputs)


@torch.inference_mode()
def generate(model: Decoder, input_ids: Tensor | None = None,
             attention_mask: Tensor | None = None, *,
             generator: torch.Generator | None = None,
             streamer: Callable[[Tensor], None] | None = None,
             stop: Sequence[Sequence[int]] | None = None, params: SamplingParams | None = None,
             **kwargs: Any) -> Tensor:
    """Prompt + new tokens, (B * num_return_sequences, T_total), as ``transformers`` returns.

    Args:
        input_ids: (B, T) prompts, left-padded when their lengths differ. May be None when
            ``inputs_embeds`` carries the prompt; then only the new tokens are returned, as
            ``transformers`` does.
        attention_mask: (B, T) 1 for real tokens, 0 for padding (None = no padding).
        generator: torch.Generator for reproducible sampling.
        streamer: called with each step's new tokens (N,) (greedy / sampling only).
        stop: token-id sequences; a row ends after producing one (greedy / sampling only).
        params: a ready :class:`SamplingParams`, instead of keyword arguments.
        **kwargs: the fields of :class:`SamplingParams` (max_new_tokens, do_sample,
            temperature, top_k, top_p, num_beams, num_return_sequences, length_penalty,
            early_stopping, repetition_penalty, no_repeat_ngram_size, min_new_tokens,
            eos_token_id, pad_token_id), and the model's prefill inputs (for GPT:
            inputs_embeds (B, T, C), encoder_hidden_states (B, S, C_enc),
            encoder_attention_mask (B, S)), passed to the prefill only.
    Finished rows are padded with pad_token_id (default: the first eos id). Raises
    ModelBusyError if the model is already generating elsewhere.
    """
    p, inputs = _split(model, params, kwargs)
    prompt = _prepare(model, input_ids, attention_mask, p, inputs)
    stops = _stop_tensors(stop, prompt.ids.device)
    if p.num_beams > 1 and (streamer is not None or stops):
        raise ValueError("streamer and stop work with num_beams=1 only; beam search picks its"
                         " result at the end (use eos_token_id to end beams)")
    with exclusive(model):
        try:
            if p.num_beams > 1:
                model.setup_cache(prompt.ids.shape[0] // p.num_beams, prompt.total)
                out = beam_search(model, prompt, p, generator)
            else:
                model.setup_cache(prompt.ids.shape[0], prompt.total)
                out = prompt.ids
                for tok, seq in sample_steps(model, prompt, p, generator, stops):
                    out = seq
                    if streamer is not None:
                        streamer(tok)
                out = out.clone()
        finally:
            model.clear_cache()
    return out if prompt.seen else out[:, prompt.ids.shape[1]:]


def stream(model: Decoder, input_ids: Tensor | None = None,
           attention_mask: Tensor | None = None, *,
           generator: torch.Generator | None = None,
           stop: Sequence[Sequence[int]] | None = None, params: SamplingParams | None = None,
           **kwargs: Any) -> Iterator[int]:
    """Yield new token ids one at a time for a single prompt (1, T) (greedy or sampling).

    Arguments are checked at once (bad ones raise here, before any token). The model is held
    (:func:`exclusive`) from the first token until the iterator ends or is closed; the eos
    token that ends generation is not yielded, a stop sequence is. Breaking out of the loop
    (or closing the iterator) frees the KV cache.
    """
    p, inputs = _split(model, params, kwargs)
    prompt = _prepare(model, input_ids, attention_mask, p, inputs)
    if p.num_beams > 1 or p.num_return_sequences > 1 or prompt.ids.shape[0] != 1:
        raise ValueError("stream() decodes one prompt into one sequence: pass input_ids of"
                         " shape (1, T), num_beams=1 and num_return_sequences=1")
    return _stream(model, prompt, p, generator, _stop_tensors(stop, prompt.ids.device))


def _stream(model, prompt: Prompt, p: SamplingParams, generator: torch.Generator | None,
            stops: list[Tensor]) -> Iterator[int]:
    eos = set(p.eos_ids)
    with exclusive(model):
        try:
            with torch.inference_mode():
                model.setup_cache(1, prompt.total)
            steps = sample_steps(model, prompt, p, generator, stops)
            while True:
                with torch.inference_mode():  # not held across yields: the caller runs between
                    nxt = next(steps, None)
                if nxt is None or int(nxt[0][0]) in eos:
                    return
                yield int(nxt[0][0])
        finally:
            model.clear_cache()
