"""BERT's masked-language-model corruption (Devlin et al. 2018, arXiv:1810.04805, §3.1, A.1).

Of the tokens that may be predicted (real tokens that are not special: never ``[CLS]``,
``[SEP]``, ``[PAD]`` or padding), each is chosen with probability ``p`` (15 %). A chosen
token is the model's target; in the input it becomes

- ``[MASK]`` 80 % of the time,
- a random token 10 % of the time, drawn uniformly from the *ordinary* vocabulary (never a
  special token, which would teach the model that specials can stand anywhere),
- itself 10 % of the time (so the model cannot assume the token it sees is always wrong).

Masks are drawn afresh for every batch (RoBERTa's dynamic masking, Liu et al. 2019 §4.1) from a
``torch.Generator`` the caller seeds, so a batch is still a pure function of its seed.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

IGNORE_INDEX = -100  # labels of positions that are not predicted


def mask_tokens(input_ids: Tensor, attention_mask: Tensor | None, special_ids: Iterable[int],
                mask_id: int, vocab_size: int, generator: torch.Generator | None = None,
                p: float = 0.15, p_mask: float = 0.8, p_random: float = 0.1
                ) -> tuple[Tensor, Tensor]:
    """(corrupted input_ids, labels) for ids (B, T); labels are -100 except at chosen tokens.

    Args:
        special_ids: ids never chosen and never drawn as replacements.
        p: the chance a predictable token is chosen; p_mask / p_random: of the chosen, the
            share that becomes [MASK] / a random token (the rest stays).
    """
    if not (0 < p < 1 and p_mask >= 0 and p_random >= 0 and p_mask + p_random <= 1):
        raise ValueError(f"masking probabilities out of range: p={p}, p_mask={p_mask},"
                         f" p_random={p_random}")
    specials = torch.tensor(sorted(set(special_ids)), dtype=torch.long)
    ordinary = torch.ones(vocab_size, dtype=torch.bool)
    ordinary[specials] = False
    choices = ordinary.nonzero().squeeze(1)  # the ids a random replacement may take
    if len(choices) == 0:
        raise ValueError("every id is special: nothing to draw random replacements from")
    predictable = ~torch.isin(input_ids, specials)
    if attention_mask is not None:
        predictable &= attention_mask.bool()
    draw = torch.rand(input_ids.shape, generator=generator)  # one draw decides each token
    chosen = predictable & (draw < p)
    # the chosen token's own draw, rescaled to [0, 1), picks its fate: no second coin needed
    fate = draw / p
    to_mask = chosen & (fate < p_mask)
    to_random = chosen & (fate >= p_mask) & (fate < p_mask + p_random)
    random_ids = choices[torch.randint(len(choices), input_ids.shape, generator=generator)]
    corrupted = torch.where(to_mask, mask_id, input_ids)
    corrupted = torch.where(to_random, random_ids, corrupted)
    labels = torch.where(chosen, input_ids, IGNORE_INDEX)
    return corrupted, labels


def drop_tokens(input_ids: Tensor, attention_mask: Tensor, special_ids: Iterable[int], p: float,
                pad_id: int = 0, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor]:
    """Word dropout for fine-tuning a classifier (Iyyer et al. 2015): each real token that is
    not special is removed with chance ``p``, and each row closes up and is right-padded again
    to the batch's new longest. (ids, mask) of a right-padded batch (B, T)."""
    if not 0 <= p < 1:
        raise ValueError(f"token dropout must be in [0, 1), got {p}")
    specials = torch.tensor(sorted(set(special_ids)), dtype=torch.long)
    draw = torch.rand(input_ids.shape, generator=generator)
    keep = attention_mask.bool() & ((draw >= p) | torch.isin(input_ids, specials))
    n = int(keep.sum(1).max())
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :n]  # kept ones first
    ids, mask = input_ids.gather(1, order), keep.gather(1, order)
    return torch.where(mask, ids, pad_id), mask.to(attention_mask.dtype)


def hide_tokens(input_ids: Tensor, p: float, pad_id: int, where: Tensor,
                generator: torch.Generator | None = None) -> Tensor:
    """Decoder-input dropout: each token of ``input_ids`` (B, T) where ``where`` (B, T, bool)
    holds is replaced by ``pad_id`` with chance ``p`` (one uniform draw per position, all
    positions drawn); the targets stay, so the model must read its source, not its past."""
    hide = where & (torch.rand(input_ids.shape, generator=generator) < p)
    return input_ids.masked_fill(hide, pad_id)


def past_start(ids: Tensor) -> Tensor:
    """(B, T) bool: every position but the first, where a decoder's start token stays (the
    ``where`` of :func:`hide_tokens` for decoder-input dropout)."""
    where = torch.ones_like(ids, dtype=torch.bool)
    where[:, 0] = False
    return where
