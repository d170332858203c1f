"""BERT's 80/10/10 masking: its proportions, what it never touches, and that it is dynamic
but reproducible."""

from __future__ import annotations

import pytest
import torch

from plait.data.masking import IGNORE_INDEX, drop_tokens, mask_tokens

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


def test_token_dropout_removes_a_share_of_real_tokens_keeps_order_and_specials():
    CLS, SEP, PAD = 2, 3, 0
    lengths = torch.randint(3, 40, (200,))
    body = torch.arange(10, 50).expand(200, 40)  # increasing ids: order is checkable
    ids = torch.where(torch.arange(40) < lengths[:, None] - 1, body, PAD)
    ids[torch.arange(200), 0] = CLS
    ids[torch.arange(200), lengths - 1] = SEP
    mask = (ids != PAD).long()
    out, kept = drop_tokens(ids, mask, (CLS, SEP), 0.3, PAD, torch.Generator().manual_seed(0))
    assert out.shape[1] < 40 and (out[kept == 0] == PAD).all()
    real = (mask.sum() - 2 * 200).item()
    removed = real - (kept.sum() - 2 * 200).item()
    assert abs(removed / real - 0.3) < 0.03
    for row, n in zip(out, kept.sum(1), strict=True):
        assert kept[0].dtype == mask.dtype and row[0] == CLS and row[n - 1] == SEP
        assert (row[1:n - 1].diff() > 0).all()  # the survivors in their order, right-padded
    assert (kept.sum(1) == kept.cumprod(1).sum(1)).all()
    same, _ = drop_tokens(ids, mask, (CLS, SEP), 0.0, PAD)
    assert torch.equal(same, ids[:, :same.shape[1]])
    with pytest.raises(ValueError, match="token dropout"):
        drop_tokens(ids, mask, (CLS, SEP), 1.0)


def test_hide_tokens_pads_only_where_allowed_at_about_the_rate():
    from plait.data.masking import hide_tokens

    ids = torch.arange(1, 4001).view(40, 100)
    where = torch.ones_like(ids, dtype=torch.bool)
    where[:, 0] = False
    out = hide_tokens(ids, 0.3, 0, where, torch.Generator().manual_seed(0))
    hidden = out != ids
    assert (out[hidden] == 0).all() and not hidden[:, 0].any()
    assert 0.25 < hidden[:, 1:].float().mean() < 0.35
    again = hide_tokens(ids, 0.3, 0, where, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_past_start_marks_every_position_but_the_first():
    from plait.data.masking import past_start

    where = past_start(torch.zeros(3, 5, dtype=torch.long))
    assert where.dtype == torch.bool and where.shape == (3, 5)
    assert not where[:, 0].any() and where[:, 1:].all()
