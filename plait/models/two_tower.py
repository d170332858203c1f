"""A two-tower recommender over CLIP embeddings: one tower reads an item, the other a user's
history, and their dot product scores the pair (Covington et al. 2016, "Deep Neural Networks
for YouTube Recommendations"; Yi et al. 2019, "Sampling-Bias-Corrected Neural Modeling"):

    item   v_i = MLP_item([e_img(i); e_txt(i)])                  (out_dim)
    user   u   = MLP_user(mean_{j in H} MLP_hist(e_img(j)))      (out_dim)   a Deep Set
    score  s(u, i) = u . v_i + (b_i - mean_j b_j)

``e_img`` and ``e_txt`` are a frozen CLIP's unit image and caption embeddings, computed once
per item outside the model. The user tower reads the history's pictures only, so a history
can be any images (``plait recommend --history a.png,b.png``). ``b_i`` is a learned appeal for
each of the ``n_items`` items seen in training (what the content cannot show, only who picked
it); centred, so an item with none (a cold-start item, index >= ``n_items``) gets the
average.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from plait.config import Config, require_fraction, require_positive


@dataclass(frozen=True)
class TwoTowerConfig(Config):
    image_dim: int = 64  # the CLIP's embedding width (set from the CLIP folder)
    text_dim: int = 64
    n_embd: int = 256  # the towers' hidden width
    out_dim: int = 64  # the shared space of users and items
    n_items: int = 0  # items with a learned appeal b_i (the warm catalogue); 0: none
    dropout: float = 0.1

    def __post_init__(self) -> None:
        require_positive(self, ("image_dim", "text_dim", "n_embd", "out_dim"))
        require_positive(self, ("n_items",), zero_ok=True)
        require_fraction(self, "dropout")


def mlp(d_in: int, d_hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(d_hidden, d_out))


class TwoTower(nn.Module):
    config_class = TwoTowerConfig

    def __init__(self, config: TwoTowerConfig):
        super().__init__()
        c = self.config = config
        self.item_tower = mlp(c.image_dim + c.text_dim, c.n_embd, c.out_dim, c.dropout)
        self.history_tower = mlp(c.image_dim, c.n_embd, c.n_embd, c.dropout)
        self.user_tower = mlp(c.n_embd, c.n_embd, c.out_dim, c.dropout)
        self.item_bias = nn.Parameter(torch.zeros(c.n_items))

    def items(self, image: Tensor, text: Tensor) -> Tensor:
        """(N, image_dim), (N, text_dim) -> (N, out_dim)."""
        return self.item_tower(torch.cat([image, text], dim=-1))

    def users(self, history: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, L, image_dim) history pictures, ``mask`` (B, L) 1 where a picture is ->
        (B, out_dim)."""
        h = self.history_tower(history)  # (B, L, n_embd)
        if mask is None:
            pooled = h.mean(1)
        else:
            m = mask.to(h.dtype).unsqueeze(-1)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.user_tower(pooled)

    def bias(self, n: int) -> Tensor:
        """(n,) the centred appeal of items 0 .. n-1 (zero past ``n_items``)."""
        b = self.item_bias - self.item_bias.mean() if self.config.n_items else self.item_bias
        out = b.new_zeros(n)
        k = min(n, self.config.n_items)
        return torch.cat([b[:k], out[k:]])

    def forward(self, history: Tensor, mask: Tensor | None, image: Tensor, text: Tensor
                ) -> Tensor:
        """Scores (B, N) of every catalogue item (``image``, ``text``: (N, D) embeddings, in
        item-id order) for each history."""
        return self.users(history, mask) @ self.items(image, text).T + self.bias(len(image))


__all__ = ["TwoTower", "TwoTowerConfig"]
