"""Ranking metrics and the two baselines of the recommendation task.

For a user with held-out items ``R`` and a ranked list (items already in the history left out):

    recall@k = |top_k ∩ R| / |R|
    NDCG@k   = DCG@k / IDCG@k,   DCG@k = sum_{r=1..k} [item_r in R] / log2(r + 1),
                                 IDCG@k = sum_{r=1..min(k, |R|)} 1 / log2(r + 1)

both averaged over users. The baselines, neither written here: **popularity** ranks items by
how many histories hold them (every user gets the same list; cold items, held by none, tie and
are ordered at random), and **collaborative filtering**: scikit-learn's ``TruncatedSVD`` of the
user x item interaction matrix ``X ~ U S V^T``, scoring ``(U S V^T)_{ui}`` (the rank picked by
recall@10 on one history item per user held back for validation). Neither can score an item
no one picked by anything but chance: that is the cold-start problem a content model solves.
"""

from __future__ import annotations

import numpy as np

from plait.data.recommend import World


def top_k(scores: np.ndarray, k: int, seen: np.ndarray | None = None) -> np.ndarray:
    """(U, k) column indices of each row's k highest scores, ``seen`` (U, N) 0/1 items left
    out; ties go to the lower index."""
    if seen is not None:
        scores = np.where(seen > 0, -np.inf, scores)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def recall_at_k(ranked: np.ndarray, relevant: np.ndarray) -> float:
    """Mean over rows of |ranked_u ∩ relevant_u| / |relevant_u| (``ranked``: (U, k) top items,
    ``relevant``: (U, R) held-out items)."""
    hits = (ranked[:, :, None] == relevant[:, None, :]).any(axis=2)  # (U, k)
    return float((hits.sum(1) / relevant.shape[1]).mean())


def ndcg_at_k(ranked: np.ndarray, relevant: np.ndarray) -> float:
    """Mean over rows of DCG@k / IDCG@k with binary gains (k = ``ranked.shape[1]``)."""
    k = ranked.shape[1]
    hits = (ranked[:, :, None] == relevant[:, None, :]).any(axis=2)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = discount[:min(k, relevant.shape[1])].sum()
    return float((hits @ discount / ideal).mean())


def scores_of(ranked_scores: np.ndarray, relevant: np.ndarray, k: int,
              seen: np.ndarray | None = None, prefix: str = "") -> dict[str, float]:
    """``{prefix}recall@k`` and ``{prefix}ndcg@k`` of a (U, N) score matrix."""
    ranked = top_k(ranked_scores, k, seen)
    return {f"{prefix}recall@{k}": recall_at_k(ranked, relevant),
            f"{prefix}ndcg@{k}": ndcg_at_k(ranked, relevant)}


def popularity(world: World) -> np.ndarray:
    """(N,) how many histories hold each item (cold items: 0)."""
    counts = np.zeros(world.n_items)
    np.add.at(counts, world.history.ravel(), 1.0)
    return counts


def svd_scores(seen: np.ndarray, rank: int, seed: int = 0) -> np.ndarray:
    """(U, N) reconstruction of the interaction matrix from its top ``rank`` singular
    directions (scikit-learn's randomized TruncatedSVD)."""
    from sklearn.decomposition import TruncatedSVD

    svd = TruncatedSVD(rank, random_state=seed)
    return svd.fit_transform(seen) @ svd.components_


def best_svd_rank(world: World, ranks: tuple[int, ...] = (8, 16, 32, 64), k: int = 10,
                  seed: int = 0) -> int:
    """The rank with the best recall@k on one history item per user held back."""
    rng = np.random.default_rng(seed)
    col = rng.integers(world.history.shape[1], size=world.n_users)
    valid = world.history[np.arange(world.n_users), col][:, None]
    seen = world.seen()
    seen[np.arange(world.n_users), valid[:, 0]] = 0.0
    recalls = {r: recall_at_k(top_k(svd_scores(seen, r, seed), k, seen), valid)
               for r in ranks if r < min(seen.shape)}
    return max(recalls, key=lambda r: (recalls[r], -r))


def baselines(world: World, k: int = 10, seed: int = 0) -> dict[str, float]:
    """Popularity and TruncatedSVD on the held-out warm picks; popularity (random order among
    cold items, all tied at zero) on the cold ones; and the oracle (the true utilities) as a
    ceiling for both."""
    seen, W = world.seen(), world.n_warm
    pop = np.broadcast_to(popularity(world), (world.n_users, world.n_items))
    rank = best_svd_rank(world, k=k, seed=seed)
    rng = np.random.default_rng(seed)
    cold_pop = pop[:, W:] + rng.random((world.n_users, world.n_items - W))  # ties at random
    out = {**scores_of(pop[:, :W], world.heldout, k, seen, "popularity_"),
           **scores_of(svd_scores(seen, rank, seed), world.heldout, k, seen, "svd_"),
           "svd_rank": float(rank),
           **scores_of(world.utility[:, :W], world.heldout, k, seen, "oracle_"),
           **scores_of(cold_pop, world.heldout_cold - W, k, None, "cold_popularity_"),
           **scores_of(world.utility[:, W:], world.heldout_cold - W, k, None, "cold_oracle_")}
    return out


__all__ = ["baselines", "best_svd_rank", "ndcg_at_k", "popularity", "recall_at_k",
           "scores_of", "svd_scores", "top_k"]
