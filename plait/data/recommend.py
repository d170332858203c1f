"""Synthetic shoppers: hidden tastes over colours, kinds and sizes, and what they picked.

The catalogue is ``n_warm + n_cold`` scene items (:mod:`plait.data.scenes`: a picture and one
of its captions), drawn from scene indices no CLIP recipe trains on. Item ``i``'s attributes
``a_i`` are the shares of its shapes of each colour, kind and size (12 numbers, each group
summing to 1). A user ``u`` has a hidden taste ``w_u`` over the same 12: two favourite colours
(+1.5), one colour they avoid (-1.5), one favourite kind (+1.5) and, for half of them, a size
(+0.75). Each item also has a hidden appeal ``q_i ~ N(0, appeal^2)`` that no picture or caption
shows (only who picked it does). The utility is

    s(u, i) = w_u . a_i + q_i

and a user's picks are a sample without replacement from ``softmax(s(u, .) / temperature)``
(the Gumbel top-k trick: the k largest of ``s / T + Gumbel noise``). Each user picks
``history + heldout`` warm items, split at random into the history a model learns from and the
held-out picks it is scored on, and separately ``heldout_cold`` items among the cold ones, the
items no history touches (cold start).

Everything is a pure function of the arguments: no files.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from plait.data.scenes import COLOURS, KINDS, SIZES, Scene, scene_at

FEATURES = (*COLOURS, *KINDS, *SIZES)  # what a taste weighs
FIRST_SCENE = 500_000  # catalogue scene indices start here, far past any CLIP recipe's


@dataclass(frozen=True, eq=False)
class World:
    """The catalogue, the users' hidden tastes and their picks (item ids: warm ones are
    ``0 .. n_warm - 1``, cold ones ``n_warm ..``)."""

    scenes: tuple[Scene, ...]
    captions: tuple[str, ...]
    n_warm: int
    tastes: np.ndarray  # (U, 12)
    appeal: np.ndarray  # (N,)
    history: np.ndarray  # (U, H) warm ids
    heldout: np.ndarray  # (U, E) warm ids, none in the history
    heldout_cold: np.ndarray  # (U, C) cold ids

    @property
    def n_items(self) -> int:
        return len(self.scenes)

    @property
    def n_users(self) -> int:
        return len(self.tastes)

    @cached_property
    def attributes(self) -> np.ndarray:
        """(N, 12): each item's share of shapes by colour, by kind and by size."""
        return np.stack([attributes(s) for s in self.scenes])

    @cached_property
    def utility(self) -> np.ndarray:
        """(U, N): s(u, i), what the picks were drawn from (an oracle's scores)."""
        return self.tastes @ self.attributes.T + self.appeal

    def seen(self) -> np.ndarray:
        """(U, n_warm) 0/1: the interaction matrix of the histories."""
        out = np.zeros((self.n_users, self.n_warm), dtype=np.float32)
        np.put_along_axis(out, self.history, 1.0, axis=1)
        return out


def attributes(scene: Scene) -> np.ndarray:
    a = np.zeros(len(FEATURES))
    for s in scene.shapes:
        for name in (s.colour, s.kind, s.size):
            a[FEATURES.index(name)] += 1.0
    return a / len(scene.shapes)


def draw_tastes(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 12) hidden tastes: two liked colours, one avoided, one liked kind, maybe a size."""
    nc, nk = len(COLOURS), len(KINDS)
    w = np.zeros((n, len(FEATURES)))
    for u in range(n):
        c = rng.permutation(nc)
        w[u, c[:2]], w[u, c[2]] = 1.5, -1.5
        w[u, nc + rng.integers(nk)] = 1.5
        if rng.random() < 0.5:
            w[u, nc + nk + rng.integers(len(SIZES))] = 0.75
    return w


def pick(rng: np.random.Generator, utility: np.ndarray, k: int, temperature: float
         ) -> np.ndarray:
    """(U, k) item columns: each row a sample without replacement from softmax(utility / T)
    (the k largest perturbed utilities; Gumbel top-k)."""
    g = utility / temperature + rng.gumbel(size=utility.shape)
    return np.argsort(-g, axis=1, kind="stable")[:, :k]


@lru_cache(maxsize=4)
def build(n_warm: int = 600, n_cold: int = 150, n_users: int = 2000, history: int = 10,
          heldout: int = 5, heldout_cold: int = 3, temperature: float = 0.5,
          appeal: float = 0.5, seed: int = 0) -> World:
    """The world of ``seed``: catalogue, tastes and picks (cached: built once per process)."""
    if min(n_warm, n_cold, n_users, history, heldout, heldout_cold) <= 0:
        raise ValueError("every count of the recommendation data must be > 0")
    if history + heldout > n_warm or heldout_cold > n_cold:
        raise ValueError(f"{history} + {heldout} picks need more than {n_warm} warm items and"
                         f" {heldout_cold} cold picks more than {n_cold} cold items")
    if temperature <= 0 or appeal < 0:
        raise ValueError("temperature must be > 0 and appeal >= 0")
    scenes = tuple(scene_at(FIRST_SCENE + i, "train", seed) for i in range(n_warm + n_cold))
    rng = np.random.default_rng([seed, 2024])
    tastes = draw_tastes(rng, n_users)
    appeals = rng.normal(0.0, appeal, len(scenes))
    s = tastes @ np.stack([attributes(sc) for sc in scenes]).T + appeals
    warm = pick(rng, s[:, :n_warm], history + heldout, temperature)
    warm = np.take_along_axis(warm, np.argsort(rng.random(warm.shape), axis=1), axis=1)
    cold = n_warm + pick(rng, s[:, n_warm:], heldout_cold, temperature)
    return World(scenes, tuple(sc.captions[0] for sc in scenes), n_warm, tastes, appeals,
                 warm[:, :history], warm[:, history:], cold)

__all__ = ["FEATURES", "World", "attributes", "build", "draw_tastes", "pick"]
