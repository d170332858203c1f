"""Decoding loops over a model's preallocated KV cache: greedy / sampling, and beam search.

A model here is a :class:`plait.generation.protocol.Decoder`: ``prefill`` runs the prompt (with
any extra inputs) once, ``step`` one token per row after that; tokens go into a preallocated
(N, T_total) buffer, never a growing ``torch.cat``.

Beam search (as in ``transformers`` >= 4.50, vectorised over the batch) keeps ``num_beams``
running hypotheses per prompt, scored by their summed log-probabilities. A hypothesis that
emits eos (or reaches max length) is moved to the finished pool with the score

    score(y) = sum_i log p(y_i | y_<i, x) / |y| ** length_penalty        (Wu et al. 2016, §7)

where |y| counts the *generated* tokens (eos included), never the prompt or its padding, so a
prompt's beams do not depend on how much its batch companions pad it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from plait.generation.processors import DecodeState, SamplingParams, apply

NEG = -1.0e9  # "impossible" score used by transformers' beam search (kept for parity)


@dataclass
class Prompt:
    """What a decoding loop starts from.

    ids: (N, T0) prompt tokens, one row per sequence (repeated per beam / returned sequence).
    mask: (N, T0) 1 for real tokens, 0 for left padding; None when nothing is padded.
    total: T0 + max_new_tokens, the length of the preallocated buffers.
    inputs: the prefill's extra inputs, one row per sequence it runs (see protocol.py).
    seen: whether prompt tokens count as "seen" text for the penalties; False when the prompt
        came as embeddings only and ``ids`` are placeholders.
    """

    ids: Tensor
    mask: Tensor | None
    total: int
    inputs: dict[str, Any] = field(default_factory=dict)
    seen: bool = True


class _Buffers:
    """Preallocated token ids and attention mask for N rows of up to ``total`` tokens."""

    def __init__(self, prompt: Prompt, fill: int):
        input_ids, attention_mask = prompt.ids, prompt.mask
        N, T0 = input_ids.shape
        self.prompt_len = T0
        self.ids = input_ids.new_full((N, prompt.total), fill)
        self.ids[:, :T0] = input_ids
        padded = attention_mask is not None and not bool(attention_mask.all())
        self.mask = None
        self.valid = torch.ones(N, prompt.total, dtype=torch.bool, device=input_ids.device)
        if padded:
            self.mask = torch.ones(N, prompt.total, dtype=torch.long, device=input_ids.device)
            self.mask[:, :T0] = attention_mask
            self.valid[:, :T0] = attention_mask.bool()
        if not prompt.seen:
            self.valid[:, :T0] = False

    def mask_upto(self, t: int) -> Tensor | None:
        return None if self.mask is None else self.mask[:, :t]

    def state(self, t: int, ids: Tensor | None = None) -> DecodeState:
        ids = self.ids if ids is None else ids
        return DecodeState(ids[:, :t], self.valid[:, :t], self.prompt_len)


def _prefill(model, buf: _Buffers, prompt: Prompt, rows: slice = slice(None)) -> Tensor:
    """Float32 next-token logits after the prompt (its ``rows``), with the extra inputs."""
    t = buf.prompt_len
    mask = buf.mask_upto(t)
    return model.prefill(buf.ids[rows, :t], None if mask is None else mask[rows],
                         **prompt.inputs).float()


def _step(model, buf: _Buffers, t: int) -> Tensor:
    """Float32 next-token logits (N, V) for position t, after feeding the token at t - 1."""
    return model.step(buf.ids[:, t - 1:t], buf.mask_upto(t), t - 1).float()


def _ends_with(ids: Tensor, t: int, stops: list[Tensor]) -> Tensor:
    """(N,) bool: the first t tokens of a row end with one of the stop sequences."""
    hit = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    for s in stops:
        if len(s) <= t:
            hit |= (ids[:, t - len(s):t] == s).all(-1)
    return hit


def sample_steps(model, prompt: Prompt, p: SamplingParams,
                 generator: torch.Generator | None = None,
                 stop: list[Tensor] | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Greedy or sampled decoding; yields (new tokens (N,), ids so far (N, t)) per step.

    Rows that produced eos (or a stop sequence) get ``pad_id`` from then on; the loop ends
    when every row has finished or after ``max_new_tokens`` steps. The cache must be set up
    for N rows.
    """
    buf = _Buffers(prompt, p.pad_id)
    procs = p.processors()
    device = prompt.ids.device
    eos = torch.tensor(p.eos_ids, device=device) if p.eos_ids else None
    stop = stop or []
    running = torch.ones(prompt.ids.shape[0], dtype=torch.bool, device=device)
    t = buf.prompt_len
    for step in range(p.max_new_tokens):
        logits = _prefill(model, buf, prompt) if step == 0 else _step(model, buf, t)  # (N, V)
        if procs:
            logits = apply(procs, logits, buf.state(t))
        if p.greedy:
            tok = logits.argmax(-1)
        else:
            probs = logits.softmax(-1)
            tok = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        if eos is not None or stop:
            tok = torch.where(running, tok, p.pad_id)
        buf.ids[:, t] = tok
        t += 1
        yield tok, buf.ids[:, :t]
        if eos is not None or stop:
            if eos is not None:
                running &= ~torch.isin(tok, eos)
            if stop:
                running &= ~_ends_with(buf.ids, t, stop)
            if not bool(running.any()):
                return


# -- beam search ---------------------------------------------------------------------------
def _gather(x: Tensor, idx: Tensor) -> Tensor:
    """x (B, K, ...) gathered along dim 1 by idx (B, J) -> (B, J, ...)."""
    while idx.dim() < x.dim():
        idx = idx.unsqueeze(-1)
    return torch.take_along_dim(x, idx, dim=1)


class _Beams:
    """Running and finished hypotheses of a batch, each (B, nb, ...)."""

    def __init__(self, buf: _Buffers, B: int, nb: int):
        dev = buf.ids.device
        self.run_ids = buf.ids.view(B, nb, -1)  # shares memory with buf.ids
        self.run_scores = torch.zeros(B, nb, device=dev)
        self.run_scores[:, 1:] = NEG  # only beam 0 expands at step one (all beams are equal)
        self.fin_ids = self.run_ids.clone()
        self.fin_scores = torch.full((B, nb), NEG, device=dev)
        self.fin_done = torch.zeros(B, nb, dtype=torch.bool, device=dev)
        self.fin_len = torch.zeros(B, nb, dtype=torch.long, device=dev)
        self.improvable = torch.ones(B, 1, dtype=torch.bool, device=dev)


def _beam_step(bm: _Beams, logp: Tensor, p: SamplingParams, eos: Tensor | None, t: int,
               T0: int, total: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Extend every beam by one token at position t; returns (source rows (N,), hits (B, K))."""
    B, nb, L = bm.run_ids.shape
    V = logp.shape[-1]
    acc = (logp.view(B, nb, V) + bm.run_scores[..., None]).view(B, nb * V)
    # keep enough candidates that nb survive even if the best all end in eos
    K = max(2, 1 + len(p.eos_ids)) * nb
    if p.greedy:
        cand_scores, flat = torch.topk(acc, K)  # (B, K), sorted
    else:
        flat = torch.multinomial(acc.softmax(-1), K, generator=generator)
        # best first, as topk returns them: the first nb candidates are the ones that survive
        cand_scores, order = acc.gather(1, flat).sort(dim=-1, descending=True)
        flat = flat.gather(1, order)
    src, tok = flat // V, flat % V
    cand_ids = _gather(bm.run_ids, src)  # (B, K, L)
    cand_ids[:, :, t] = tok
    hits = torch.full_like(tok, t + 1 >= total, dtype=torch.bool)
    if eos is not None:
        hits |= torch.isin(tok, eos)

    # the best nb candidates that did not finish keep running
    alive = cand_scores + hits.float() * NEG
    keep = torch.topk(alive, nb).indices  # (B, nb)
    bm.run_ids.copy_(_gather(cand_ids, keep))
    bm.run_scores = _gather(alive, keep)
    rows = (_gather(src, keep) + torch.arange(B, device=src.device)[:, None] * nb).view(-1)

    # finished candidates among the top nb join the pool, scored with the length penalty
    top = torch.arange(K, device=tok.device)[None] < nb
    new_done = hits & top
    score = cand_scores / float(t + 1 - T0) ** p.length_penalty
    full = bm.fin_done.all(-1, keepdim=True) & (p.early_stopping is True)
    score = score + (full | ~bm.improvable).float() * NEG + (~new_done).float() * NEG
    merged = torch.cat([bm.fin_scores, score], 1)
    best = torch.topk(merged, nb).indices
    bm.fin_scores = _gather(merged, best)
    bm.fin_ids = _gather(torch.cat([bm.fin_ids, cand_ids], 1), best)
    bm.fin_done = _gather(torch.cat([bm.fin_done, new_done], 1), best)
    new_len = torch.full_like(tok, t + 1 - T0)
    bm.fin_len = _gather(torch.cat([bm.fin_len, new_len], 1), best)
    return rows, hits


def _keep_going(bm: _Beams, hits: Tensor, p: SamplingParams, t: int, T0: int,
                total: int) -> bool:
    """transformers' stopping rule: stop when no batch can improve, or all beams are done."""
    never = p.early_stopping == "never" and p.length_penalty > 0
    best_len = (total if never else t) - T0
    best_running = bm.run_scores[:, :1] / float(best_len) ** p.length_penalty
    worst_done = torch.where(bm.fin_done, bm.fin_scores.min(-1, keepdim=True).values, NEG)
    bm.improvable &= (best_running > worst_done).any(-1, keepdim=True)
    all_done = bool(bm.fin_done.all()) and p.early_stopping is True
    return bool(bm.improvable.any()) and not all_done and not bool(hits.all())


def beam_search(model, prompt: Prompt, p: SamplingParams,
                generator: torch.Generator | None = None) -> Tensor:
    """Beam search; prompt rows already repeated num_beams times (prompt b -> rows b*nb ...),
    its extra inputs one row per prompt.

    The model's cache must be set up for B = N // num_beams rows (each prompt is run once).

    Returns the best ``num_return_sequences`` finished hypotheses per prompt, best first,
    (B * num_return_sequences, T0 + longest returned generation), padded with ``pad_id``.
    """
    nb, total = p.num_beams, prompt.total
    B = prompt.ids.shape[0] // nb
    buf = _Buffers(prompt, p.pad_id)
    procs = p.processors()
    eos = torch.tensor(p.eos_ids, device=prompt.ids.device) if p.eos_ids else None
    T0 = t = buf.prompt_len
    bm = _Beams(buf, B, nb)
    # prefill each prompt once (the cache was set up for B rows), then copy it to its beams
    logits = _prefill(model, buf, prompt, rows=slice(None, None, nb))
    logits = logits.repeat_interleave(nb, dim=0)  # (N, V)
    model.reorder_cache(torch.arange(B, device=logits.device).repeat_interleave(nb))
    while True:
        logp = F.log_softmax(logits, dim=-1)
        if procs:
            logp = apply(procs, logp, buf.state(t))
        rows, hits = _beam_step(bm, logp, p, eos, t, T0, total, generator)
        t += 1
        if not _keep_going(bm, hits, p, t, T0, total):
            break
        model.reorder_cache(rows)
        logits = _step(model, buf, t)
    r = p.num_return_sequences
    out_len = T0 + int(bm.fin_len[:, :r].max())
    return bm.fin_ids[:, :r, :out_len].reshape(B * r, out_len)
