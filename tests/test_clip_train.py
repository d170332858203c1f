"""The CLIP loss against its formula, its symmetry, and 2 data-parallel processes == 1 process."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

from plait.training.contrastive import MAX_LOGIT_SCALE, clip_loss


def naive_infonce(img: torch.Tensor, txt: torch.Tensor, t: float) -> torch.Tensor:
    """Loop-by-loop: -log softmax of the matching pair, rows and columns, averaged."""
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    s = math.exp(min(t, math.log(100)))
    n = img.shape[0]
    total_i, total_t = 0.0, 0.0
    for i in range(n):
        row = [s * float(img[i] @ txt[j]) for j in range(n)]  # image i vs every text
        col = [s * float(txt[i] @ img[j]) for j in range(n)]  # text i vs every image
        total_i += -(row[i] - math.log(sum(math.exp(v) for v in row)))
        total_t += -(col[i] - math.log(sum(math.exp(v) for v in col)))
    return torch.tensor((total_i / n + total_t / n) / 2)


def test_loss_equals_formula():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    for t in (0.0, math.log(1 / 0.07), 3.0):
        got = clip_loss(img, txt, torch.tensor(t))
        torch.testing.assert_close(got, naive_infonce(img, txt, t).float(), atol=1e-5, rtol=1e-5)


def test_logit_scale_clamped_at_100():
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    t = torch.tensor(10.0, requires_grad=True)  # exp(10) >> 100
    loss = clip_loss(img, txt, t)
    torch.testing.assert_close(loss, clip_loss(img, txt, torch.tensor(MAX_LOGIT_SCALE)))
    loss.backward()
    assert t.grad == 0  # clamped: no push further up


def test_symmetric_in_image_and_text():
    g = torch.Generator().manual_seed(2)
    img, txt = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
    t = torch.tensor(2.0)
    # the two terms swap places when the modalities swap, so the total is unchanged
    i2t = F.cross_entropy(math.exp(2.0) * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T,
                          torch.arange(6))
    t2i = F.cross_entropy(math.exp(2.0) * F.normalize(txt, dim=-1) @ F.normalize(img, dim=-1).T,
                          torch.arange(6))
    torch.testing.assert_close(clip_loss(img, txt, t), (i2t + t2i) / 2)
    torch.testing.assert_close(clip_loss(img, txt, t), clip_loss(txt, img, t))
    assert not torch.allclose(i2t, t2i)  # the terms themselves differ: the test can fail


def test_perfect_alignment_gives_low_loss():
    x = torch.eye(4) * 3
    assert clip_loss(x, x, torch.tensor(MAX_LOGIT_SCALE)) < 1e-3
    assert clip_loss(x, x.roll(1, 0), torch.tensor(MAX_LOGIT_SCALE)) > 10


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="same shape"):
        clip_loss(torch.randn(3, 4), torch.randn(2, 4), torch.tensor(0.0))
