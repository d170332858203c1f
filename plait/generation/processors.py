"""Logits processors: pure functions ``(logits (N, V), state) -> logits (N, V)``.

Each step of decoding turns the model's next-token logits into a choice. Between the two sit
these small functions, applied in one fixed order (the order of Hugging Face ``transformers``,
so outputs compare token for token):

    repetition penalty -> no-repeat n-gram -> min new tokens -> forced bos -> forced eos
        -> temperature -> top-k -> top-p

The first five are constraints and apply to every search (greedy, sampling, beam search).
The last three reshape the distribution and apply only when sampling. None of them mutates
its input, and each always keeps at least one token.

References: repetition penalty (Keskar et al. 2019, CTRL, arXiv:1909.05858, Eq. 2); top-k
(Fan et al. 2018, arXiv:1805.04833); top-p / nucleus (Holtzman et al. 2019, arXiv:1904.09751);
no-repeat n-gram (Paulus et al. 2017, arXiv:1705.04304, as in fairseq).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from plait.config import Config


@dataclass
class DecodeState:
    """What processors may read about the sequences so far (never written by them).

    ids: (N, t) every token so far, prompt included, left padding included.
    valid: (N, t) bool, False at left-padding positions (they never count as "seen").
    prompt_len: t at the first step (the padded prompt length).
    """

    ids: Tensor
    valid: Tensor
    prompt_len: int

    @property
    def new_tokens(self) -> int:
        return self.ids.shape[1] - self.prompt_len


Processor = Callable[[Tensor, DecodeState], Tensor]


# -- constraints: applied in every search ------------------------------------------------------
def repetition_penalty(logits: Tensor, state: DecodeState, *, penalty: float) -> Tensor:
    """CTRL's penalty on every token already in the sequence (prompt included, padding not).

    A seen token's logit x becomes x * penalty if x < 0 else x / penalty, so penalty > 1
    always lowers it. Each token is penalised once, however often it occurred.
    """
    N, V = logits.shape
    ids = state.ids.masked_fill(~state.valid, V)  # padding -> a spare column V, dropped below
    seen = torch.zeros(N, V + 1, dtype=torch.bool, device=logits.device)
    seen.scatter_(1, ids, True)
    seen = seen[:, :V]
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def no_repeat_ngram(logits: Tensor, state: DecodeState, *, n: int) -> Tensor:
    """Forbid any token that would complete an n-gram already present in the sequence.

    The next token completes the n-gram (last n-1 tokens, token). Every earlier window of n
    tokens whose first n-1 equal that suffix bans its own last token. Windows touching left
    padding do not count.
    """
    ids = state.ids
    N, t = ids.shape
    if t < n:
        return logits
    V = logits.shape[1]
    suffix = ids[:, t - n + 1:]  # (N, n-1)
    windows = ids.unfold(1, n, 1)  # (N, t-n+1, n)
    real = state.valid.unfold(1, n, 1).all(-1)  # (N, t-n+1)
    hit = (windows[..., :-1] == suffix[:, None]).all(-1) & real
    banned = torch.zeros(N, V + 1, dtype=torch.bool, device=logits.device)
    banned.scatter_(1, torch.where(hit, windows[..., -1], V), True)  # misses -> spare column V
    return logits.masked_fill(banned[:, :V], -math.inf)


def min_new_tokens(logits: Tensor, state: DecodeState, *, n: int, eos: tuple[int, ...]) -> Tensor:
    """Forbid the end-of-sequence token(s) until ``n`` new tokens exist."""
    if state.new_tokens >= n:
        return logits
    out = logits.clone()
    out[:, list(eos)] = -math.inf
    return out


def forced_token(logits: Tensor, state: DecodeState, *, token: tuple[int, ...],
                 when: int, length: bool = False) -> Tensor:
    """Allow only ``token`` at one step: when ``new_tokens == when`` (or, with ``length``, when
    the whole sequence is ``when`` long, as ``transformers``' forced-BOS rule reads it)."""
    now = state.ids.shape[1] if length else state.new_tokens
    if now != when:
        return logits
    out = torch.full_like(logits, -math.inf)
    out[:, list(token)] = 0.0
    return out


# -- warpers: applied only when sampling ---------------------------------------------------
def temperature(logits: Tensor, state: DecodeState | None = None, *, t: float) -> Tensor:
    """Divide by ``t``; ``t == 0`` keeps only the argmax (the limit t -> 0, no division)."""
    if t == 0:
        keep = logits.argmax(-1, keepdim=True)
        return torch.full_like(logits, -math.inf).scatter(1, keep, logits.gather(1, keep))
    return logits / t


def top_k(logits: Tensor, state: DecodeState | None = None, *, k: int,
          min_keep: int = 1) -> Tensor:
    """Keep the k largest logits, and every logit tied with the k-th (so ties may keep > k).

    Ties are kept, as in ``transformers``' ``TopKLogitsWarper``: dropping one of two equal
    logits would have to pick by token id, which says nothing about the model.
    """
    k = min(max(k, min_keep), logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (N, 1)
    return logits.masked_fill(logits < kth, -math.inf)


def top_p(logits: Tensor, state: DecodeState | None = None, *, p: float,
          min_keep: int = 1) -> Tensor:
    """Keep the smallest set of most likely tokens whose probability sums to at least ``p``.

    Sorted ascending, a token is dropped when the mass of it and everything below it is at
    most 1 - p; the ``min_keep`` most likely tokens always stay.
    """
    sorted_logits, order = torch.sort(logits, dim=-1)  # ascending
    mass_below = sorted_logits.softmax(-1).cumsum(-1)
    drop_sorted = mass_below <= 1 - p
    drop_sorted[:, -min_keep:] = False
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, -math.inf)


def apply(processors: list[Processor], logits: Tensor, state: DecodeState) -> Tensor:
    for fn in processors:
        logits = fn(logits, state)
    return logits


# -- parameters ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplingParams(Config):
    """Every knob of ``generate``, validated once; same names and meaning as ``transformers``."""

    max_new_tokens: int = 20
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    num_beams: int = 1
    num_return_sequences: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    forced_bos_token_id: int | None = None  # the only token allowed when the sequence is 1 long
    forced_eos_token_id: int | tuple[int, ...] | None = None  # ... and at the last new token

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> ValueError:
            return ValueError(f"`{name}` has to be {allowed}, but is {getattr(self, name)!r}")

        def is_int(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not is_int(self.max_new_tokens) or self.max_new_tokens <= 0:
            raise bad("max_new_tokens", "a positive integer")
        for name in ("min_new_tokens", "top_k", "no_repeat_ngram_size"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "a non-negative integer (0 disables it)")
        if not self.temperature >= 0:
            raise bad("temperature", "a non-negative float (0 means greedy decoding)")
        if not 0 <= self.top_p <= 1:
            raise bad("top_p", "a float in [0, 1] (1 disables it)")
        if not self.repetition_penalty > 0:
            raise bad("repetition_penalty", "a strictly positive float (1.0 disables it)")
        if not is_int(self.num_beams) or self.num_beams < 1:
            raise bad("num_beams", "a positive integer")
        if not is_int(self.num_return_sequences) or self.num_return_sequences < 1:
            raise bad("num_return_sequences", "a positive integer")
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise ValueError(f"`num_return_sequences` ({self.num_return_sequences}) has to be"
                             f" <= `num_beams` ({self.num_beams}); raise num_beams")
        if self.num_beams == 1 and self.greedy and self.num_return_sequences > 1:
            raise ValueError(f"greedy decoding returns one sequence per prompt, got"
                             f" `num_return_sequences`={self.num_return_sequences}; set"
                             " do_sample=True or num_beams > 1")
        if self.early_stopping not in (True, False, "never"):
            raise bad("early_stopping", "True, False or 'never'")
        eos = self.eos_ids
        if any(not is_int(e) or e < 0 for e in eos):
            raise bad("eos_token_id", "a non-negative integer, a list of them, or None")
        for name in ("pad_token_id", "forced_bos_token_id"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 0):
                raise bad(name, "a non-negative integer or None")
        if any(not is_int(e) or e < 0 for e in _ids(self.forced_eos_token_id)):
            raise bad("forced_eos_token_id", "a non-negative integer, a list of them, or None")

    @property
    def eos_ids(self) -> tuple[int, ...]:
        return _ids(self.eos_token_id)

    @property
    def pad_id(self) -> int:
        """Token written after a row has finished (as in transformers: pad, else first eos)."""
        if self.pad_token_id is not None:
            return self.pad_token_id
        return self.eos_ids[0] if self.eos_ids else 0

    @property
    def greedy(self) -> bool:
        """Pick the argmax: no sampling requested, or temperature 0."""
        return not self.do_sample or self.temperature == 0

    def processors(self) -> list[Processor]:
        """The processors these parameters ask for, in transformers' order."""
        procs: list[Processor] = []
        if self.repetition_penalty != 1.0:
            procs.append(partial(repetition_penalty, penalty=self.repetition_penalty))
        if self.no_repeat_ngram_size > 0:
            procs.append(partial(no_repeat_ngram, n=self.no_repeat_ngram_size))
        if self.min_new_tokens > 0 and self.eos_ids:
            procs.append(partial(min_new_tokens, n=self.min_new_tokens, eos=self.eos_ids))
        if self.forced_bos_token_id is not None:
            procs.append(partial(forced_token, token=(self.forced_bos_token_id,), when=1,
                                 length=True))
        if self.forced_eos_token_id is not None:
            procs.append(partial(forced_token, token=_ids(self.forced_eos_token_id),
                                 when=self.max_new_tokens - 1))
        if self.greedy:
            return procs
        # beam sampling keeps room for every eos plus one more token (transformers does too)
        keep = max(1, len(self.eos_ids)) + 1 if self.num_beams > 1 else 1
        if self.temperature != 1.0:
            procs.append(partial(temperature, t=self.temperature))
        if self.top_k > 0:
            procs.append(partial(top_k, k=self.top_k, min_keep=keep))
        if self.top_p < 1.0:
            procs.append(partial(top_p, p=self.top_p, min_keep=keep))
        return procs


def _ids(value: int | tuple[int, ...] | list[int] | None) -> tuple[int, ...]:
    """One token id, several, or none, as a tuple."""
    return () if value is None else (value,) if isinstance(value, int) else tuple(value)
