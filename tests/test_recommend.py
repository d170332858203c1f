"""Recommendation: the synthetic world's rules, the ranking metrics against their formulas and
scikit-learn, the baselines, the two-tower model, the leave-one-out loss, and the recipe end to
end on a tiny CLIP (`plait eval --task recommend`, `plait recommend`, bad input)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from plait.cli.main import main
from plait.data import recommend as data
from plait.evaluation.recommend import (
    baselines,
    ndcg_at_k,
    popularity,
    recall_at_k,
    svd_scores,
    top_k,
)
from plait.models.two_tower import TwoTower, TwoTowerConfig
from plait.training import recipe_from_dict, train

SMALL = {"n_warm": 60, "n_cold": 20, "n_users": 300, "history": 6, "heldout": 3,
         "heldout_cold": 2}


# -- metrics ---------------------------------------------------------------------------------
def test_recall_and_ndcg_follow_their_formulas_by_hand():
    ranked = np.array([[3, 1, 2], [7, 8, 9]])
    relevant = np.array([[1, 5], [9, 7]])
    assert recall_at_k(ranked, relevant) == pytest.approx((1 / 2 + 2 / 2) / 2)
    ideal = 1 + 1 / math.log2(3)
    user0 = (1 / math.log2(3)) / ideal  # the hit at rank 2
    user1 = (1 + 1 / math.log2(4)) / ideal  # hits at ranks 1 and 3
    assert ndcg_at_k(ranked, relevant) == pytest.approx((user0 + user1) / 2)


def test_ndcg_matches_scikit_learn_on_random_scores():
    from sklearn.metrics import ndcg_score

    rng = np.random.default_rng(0)
    scores = rng.random((40, 30))  # no ties
    relevant = np.stack([rng.choice(30, 4, replace=False) for _ in range(40)])
    truth = np.zeros_like(scores)
    np.put_along_axis(truth, relevant, 1.0, axis=1)
    ours = ndcg_at_k(top_k(scores, 10), relevant)
    assert ours == pytest.approx(ndcg_score(truth, scores, k=10), abs=1e-12)


def test_top_k_leaves_seen_items_out_and_breaks_ties_by_index():
    scores = np.array([[5.0, 5.0, 9.0, 1.0]])
    assert top_k(scores, 2).tolist() == [[2, 0]]
    assert top_k(scores, 2, seen=np.array([[0, 0, 1, 0]])).tolist() == [[0, 1]]


# -- the world -------------------------------------------------------------------------------
def test_the_world_is_a_pure_function_of_its_arguments_and_keeps_its_splits():
    w = data.build(**SMALL, seed=3)
    data.build.cache_clear()
    again = data.build(**SMALL, seed=3)
    assert np.array_equal(w.history, again.history) and w.captions == again.captions
    assert not np.array_equal(w.history, data.build(**SMALL, seed=4).history)
    assert w.history.max() < w.n_warm and w.heldout.max() < w.n_warm
    assert (w.heldout_cold >= w.n_warm).all() and (w.heldout_cold < w.n_items).all()
    for h, e in zip(w.history, w.heldout, strict=True):  # distinct picks, none held out twice
        assert len(set(h) | set(e)) == len(h) + len(e)
    groups = np.split(w.attributes, [6, 10], axis=1)  # colours, kinds, sizes: shares summing to 1
    assert all(np.allclose(g.sum(1), 1.0) for g in groups)


def test_users_pick_what_their_hidden_taste_likes():
    w = data.build(**SMALL, seed=0)
    picked = np.take_along_axis(w.utility, w.history, axis=1).mean()
    assert picked > w.utility[:, :w.n_warm].mean() + 0.5


def test_gumbel_top_1_draws_from_the_softmax():
    rng = np.random.default_rng(0)
    utility = np.array([1.0, 0.0, -1.0, 0.5])
    n = 40000
    draws = data.pick(rng, np.broadcast_to(utility, (n, 4)), 1, temperature=0.5)[:, 0]
    freq = np.bincount(draws, minlength=4) / n
    expected = np.exp(utility / 0.5) / np.exp(utility / 0.5).sum()
    assert np.abs(freq - expected).max() < 0.01


# -- baselines -------------------------------------------------------------------------------
def test_popularity_counts_histories_and_svd_is_the_best_low_rank_fit():
    w = data.build(**SMALL, seed=0)
    seen = w.seen()
    assert np.array_equal(popularity(w)[:w.n_warm], seen.sum(0))
    assert (popularity(w)[w.n_warm:] == 0).all()
    u, s, vt = np.linalg.svd(seen, full_matrices=False)
    best = np.linalg.norm(seen - (u[:, :8] * s[:8]) @ vt[:8])  # Eckart-Young: the optimum
    assert np.linalg.norm(seen - svd_scores(seen, 8)) < best * 1.01
    assert np.linalg.norm(seen - svd_scores(seen, 4)) > best * 1.05  # rank matters


def test_baselines_sit_below_the_oracle_and_cold_popularity_is_chance():
    out = baselines(data.build(**SMALL, seed=0))
    assert out["popularity_recall@10"] < out["svd_recall@10"] < out["oracle_recall@10"]
    assert out["cold_popularity_recall@10"] < out["cold_oracle_recall@10"]
    assert out["svd_rank"] in (8, 16, 32, 64)


# -- the model and its loss ------------------------------------------------------------------
def tiny_model(n_items: int = 5) -> TwoTower:
    torch.manual_seed(0)
    return TwoTower(TwoTowerConfig(image_dim=4, text_dim=3, n_embd=8, out_dim=6,
                                   n_items=n_items, dropout=0.0)).eval()


def test_scores_are_user_dot_item_plus_the_centred_appeal():
    m = tiny_model(5)
    with torch.no_grad():
        m.item_bias.copy_(torch.arange(5.0))
    hist, img, txt = torch.randn(2, 3, 4), torch.randn(7, 4), torch.randn(7, 3)
    s = m(hist, None, img, txt)
    bias = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0, 0.0, 0.0])  # cold items get the mean
    assert torch.allclose(s, m.users(hist) @ m.items(img, txt).T + bias, atol=1e-6)


def test_the_user_tower_ignores_masked_history_items():
    m = tiny_model()
    hist = torch.randn(1, 4, 4)
    mask = torch.tensor([[1, 1, 0, 0]])
    assert torch.allclose(m.users(hist, mask), m.users(hist[:, :2]), atol=1e-6)
    other = hist.clone()
    other[:, 2:] = 100.0
    assert torch.allclose(m.users(other, mask), m.users(hist, mask), atol=1e-6)


# -- the recipe end to end -------------------------------------------------------------------
TINY_CLIP = {"arch": "clip", "embed_dim": 16,
             "vision": {"kind": "vit", "patch_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 32},
             "text": {"kind": "transformer", "n_layer": 1, "n_head": 2, "n_embd": 32,
                      "block_size": 32, "pool": "last"}}
FAST = {"warmup_steps": 2, "eval_interval": 0, "threads": 1, "progress": False, "device": "cpu",
        "lr": 3e-3}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("recommend") / "run"
    recipe = recipe_from_dict({
        "task": "recommend",
        "model": {"arch": "two-tower", "n_embd": 32, "out_dim": 16},
        "data": {**SMALL, "batch_size": 32},
        "train": {**FAST, "max_steps": 30, "out_dir": str(out)},
        "stages": [{"name": "clip", "task": "clip", "model": TINY_CLIP,
                    "data": {"dataset": "shapes", "image_size": 32, "n_train": 200,
                             "n_gallery": 20, "batch_size": 16},
                    "train": {"max_steps": 4}}]})
    train(recipe)
    return out


def test_the_loss_is_the_softmax_over_warm_items_the_other_picks_left_out(folder):
    from plait.training import TrainConfig
    from plait.training.distributed import Dist
    from plait.training.tasks.recommend import RecommendData, RecommendTask

    task = RecommendTask(RecommendData(**SMALL, batch_size=16),
                         TrainConfig(init_from=str(folder), out_dir=str(folder / "x")), Dist())
    b = task.train_batch(step=3, micro=0)
    again = task.train_batch(step=3, micro=0)
    assert all(torch.equal(b[k], again[k]) for k in b)  # a pure function of the step
    assert not b["seen"].gather(1, b["target"][:, None]).any()  # the target stays a candidate
    m = TwoTower(task.model_config(TwoTowerConfig(n_embd=8, out_dim=4, dropout=0.0)))
    with torch.no_grad():
        s = m(b["history"], b["mask"], b["image"], b["text"])
        loss = float(task.loss(m, b))
    manual = torch.stack([-torch.log_softmax(row[~seen], 0)[int((~seen)[:t].sum())]
                          for row, seen, t in zip(s, b["seen"], b["target"], strict=True)])
    assert loss == pytest.approx(float(manual.mean()), rel=1e-5)


def test_the_recipe_trains_a_clip_then_the_towers_and_evaluates(folder, capsys):
    assert (folder / "clip" / "model.safetensors").is_file()
    assert json.loads((folder / "catalogue.json").read_text())["clip"] == "clip"
    assert main(["eval", "--model", str(folder), "--task", "recommend"]) == 0
    out = capsys.readouterr().out
    for name in ("recall@10", "ndcg@10", "cold_recall@10", "svd_recall@10",
                 "popularity_recall@10", "cold_popularity_recall@10"):
        assert f"{name}  " in out, out


def test_plait_recommend_prints_k_items_per_history_never_the_history(folder, capsys):
    capsys.readouterr()
    a, b, c = (str(folder / "items" / f"{i:04d}.png") for i in (0, 1, 70))
    assert main(["recommend", "--model", str(folder), "--history", f"{a},{b}", "--history", c,
                 "-k", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert len(first) == 4 and {0, 1}.isdisjoint(r["item"] for r in first)
    assert [r["score"] for r in first] == sorted((r["score"] for r in first), reverse=True)
    assert set(first[0]) == {"item", "caption", "image", "cold", "score"}
    assert 70 not in [r["item"] for r in json.loads(lines[1])]


@pytest.mark.parametrize("args, needle", [
    (["--history", ""], "--history 1 is empty"),
    (["--history", " , "], "--history 1 is empty"),
    (["--history", "{folder}/items/0000.png", "-k", "0"], "-k must be a positive"),
    (["--history", "{folder}/catalogue.json"], "not a readable image"),
    (["--history", "{folder}/items/9999.png"], "image not found"),
])
def test_mistakes_are_one_line_and_exit_code_2(folder, capsys, args, needle):
    capsys.readouterr()
    code = main(["recommend", "--model", str(folder), *[a.format(folder=folder) for a in args]])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1, err


def test_a_folder_of_the_wrong_kind_is_named(folder, capsys):
    capsys.readouterr()
    code = main(["recommend", "--model", str(folder / "clip"), "--history",
                 str(folder / "items" / "0000.png")])
    err = capsys.readouterr().err
    assert code == 2 and "not a two-tower recommender" in err and err.count("\n") == 1, err
