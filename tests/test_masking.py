"""BERT's 80/10/10 masking: its proportions, what it never touches, and that it is dynamic
but reproducible."""

from __future__ import annotations

import pytest
import torch

from plait.data.masking import IGNORE_INDEX, mask_tokens

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIALS = (PAD, CLS, SEP, MASK)
V = 50


def batch(B: int = 400, T: int = 500, seed: int = 0):
    """[CLS] tokens... [SEP] then padding; ordinary tokens are 4..V-1."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, V, (B, T), generator=g)
    lengths = torch.randint(T // 2, T, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    ids[:, 0] = CLS
    ids[torch.arange(B), lengths - 1] = SEP
    return ids.masked_fill(mask == 0, PAD), mask


def test_proportions_follow_the_80_10_10_rule():
    ids, mask = batch()
    g = torch.Generator().manual_seed(1)
    out, labels = mask_tokens(ids, mask, SPECIALS, MASK, V, g)
    predictable = mask.bool() & ~torch.isin(ids, torch.tensor(SPECIALS))
    chosen = labels != IGNORE_INDEX
    n, k = int(predictable.sum()), int(chosen.sum())
    # binomial: 5 standard deviations are far below the gaps a misread rule would make
    assert abs(k / n - 0.15) < 5 * (0.15 * 0.85 / n) ** 0.5
    masked = (out == MASK) & chosen
    kept = (out == ids) & chosen
    replaced = chosen & ~masked & ~kept
    for part, share in ((masked, 0.8), (replaced, 0.1), (kept, 0.1)):
        # a random draw can hit the original token: 1/46 of the "random" ones look kept
        expected = share + (0.1 / (V - 4) if part is kept else -0.1 / (V - 4) if part is
                            replaced else 0.0)
        assert abs(int(part.sum()) / k - expected) < 5 * (share * (1 - share) / k) ** 0.5
    assert torch.equal(labels[chosen], ids[chosen])  # the targets are the original tokens


def test_specials_and_padding_are_never_chosen_or_drawn():
    ids, mask = batch(seed=2)
    out, labels = mask_tokens(ids, mask, SPECIALS, MASK, V, torch.Generator().manual_seed(3))
    special = torch.isin(ids, torch.tensor(SPECIALS)) | (mask == 0)
    assert (labels[special] == IGNORE_INDEX).all()
    assert torch.equal(out[special], ids[special])  # untouched
    changed = (out != ids) & (out != MASK)
    assert changed.any() and not torch.isin(out[changed], torch.tensor(SPECIALS)).any()


def test_masks_are_dynamic_yet_reproducible():
    ids, mask = batch(B=8, T=64, seed=4)
    one = mask_tokens(ids, mask, SPECIALS, MASK, V, torch.Generator().manual_seed(5))
    same = mask_tokens(ids, mask, SPECIALS, MASK, V, torch.Generator().manual_seed(5))
    other = mask_tokens(ids, mask, SPECIALS, MASK, V, torch.Generator().manual_seed(6))
    assert torch.equal(one[0], same[0]) and torch.equal(one[1], same[1])
    assert not torch.equal(one[1], other[1])


def test_bad_probabilities_are_refused():
    ids, mask = batch(B=2, T=8)
    with pytest.raises(ValueError, match="masking probabilities"):
        mask_tokens(ids, mask, SPECIALS, MASK, V, p=0.0)
    with pytest.raises(ValueError, match="masking probabilities"):
        mask_tokens(ids, mask, SPECIALS, MASK, V, p_mask=0.9, p_random=0.2)
