"""Text to image: the factorised logits and loss against their formulas, cached sampling
against the full forward pass (with and without guidance), seeded sampling reproducible, the
pixel check on real and broken pictures, prompts refused by name, and `plait imagine` /
`plait eval --task imagine` on a two-step run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from plait.cli.main import main
from plait.config import read_toml
from plait.data import imagine as prompts
from plait.data.palette import to_rgb
from plait.models.imagine import PAD, Imagine, ImagineConfig, prompt_ids
from plait.training import recipe_from_dict, train

RECIPE = "configs/imagine_scenes.toml"
WORDS = (PAD, *prompts.vocabulary())


def tiny(seed: int = 0, **kw) -> Imagine:
    torch.manual_seed(seed)
    c = ImagineConfig(words=WORDS, masks=tuple(range(1, 12)), size=16, plan_grid=2, n_layer=2,
                      n_head=2, n_embd=16, max_words=8, **kw)  # 4 regions of 4 kinds
    return Imagine(c).eval()


def words(*texts: str, model: Imagine) -> torch.Tensor:
    return model.word_ids(list(texts))


def plans(m: Imagine, n: int) -> torch.Tensor:
    return torch.randint(0, m.config.plan_vocab_size, (n, m.config.n_plan))


def test_logits_are_colour_plus_part_and_the_loss_is_their_cross_entropy():
    m = tiny()
    w = words("a red circle", "a blue star and a green square", model=m)
    t = torch.randint(0, m.config.vocab_size, (2, m.config.n_tokens))
    t[0, :4] = 0
    plan = plans(m, 2)
    plan[1, 0] = 0
    plan_logits, logits = m(w, plan, t)
    assert logits.shape == (2, 16, 1 + 6 * 11) and plan_logits.shape == (2, 4, 1 + 6 * 4)
    h = torch.randn(3, 16)
    for head, K in ((m.squares, 11), (m.plan, 4)):
        u, v, full = head.colour_head(h), head.part_head(h), head.logits(h)
        for c in (1, 4, 6):
            for k in (0, K - 1):
                torch.testing.assert_close(full[:, 1 + (c - 1) * K + k], u[:, c] + v[:, k])
        torch.testing.assert_close(full[:, 0], u[:, 0])
    both = torch.cat([F.cross_entropy(plan_logits.flatten(0, 1), plan.flatten(), reduction="none"),
                      F.cross_entropy(logits.flatten(0, 1), t.flatten(), reduction="none")])
    torch.testing.assert_close(m.loss(w, plan, t), both.mean())
    torch.testing.assert_close(m(w, plan, t, return_loss=True), both.mean())


def test_greedy_sampling_with_the_cache_is_the_argmax_of_the_full_pass():
    m = tiny(1)
    w = words("a red circle left of a blue square", "a star", model=m)
    out = m.sample(w, temperature=0, with_plan=True)
    assert out.shape == (2, 4 + 16)
    plan, tokens = out[:, :4], out[:, 4:]
    plan_logits, logits = m(w, plan, tokens)
    assert torch.equal(plan_logits.argmax(-1), plan) and torch.equal(logits.argmax(-1), tokens)
    assert torch.equal(m.sample(w, temperature=0), tokens)


def test_guided_greedy_sampling_mixes_the_unconditional_logits():
    m = tiny(2)
    w = words("a green triangle", model=m)
    out = m.sample(w, temperature=0, guidance=3.0, with_plan=True)
    plan, tokens = out[:, :4], out[:, 4:]
    (plan_c, tokens_c), (plan_u, tokens_u) = m(w, plan, tokens), m(torch.zeros_like(w), plan,
                                                                   tokens)
    assert torch.equal((plan_u + 3.0 * (plan_c - plan_u)).argmax(-1), plan)
    assert torch.equal((tokens_u + 3.0 * (tokens_c - tokens_u)).argmax(-1), tokens)


def test_sampling_with_a_seed_is_reproducible_and_seeds_differ():
    m = tiny(3)
    w = words("a red circle", model=m).expand(4, -1)

    def draw(seed):
        return m.sample(w, generator=torch.Generator().manual_seed(seed), top_k=20)

    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))


def test_the_plan_names_the_shape_in_each_region():
    from plait.data.scenes import COLOURS, KINDS, Shape

    shapes = [Shape("star", "blue", "small", 0.8, 0.2), Shape("circle", "red", "large", 0.5, 0.5)]
    blue_star = 1 + list(COLOURS).index("blue") * 4 + KINDS.index("star")
    assert prompts.plan(shapes) == [0, 0, blue_star, 0, 1 + KINDS.index("circle"), 0, 0, 0, 0]
    assert prompts.plan(shapes, 6)[1 * 6 + 4] == blue_star
    with pytest.raises(ValueError, match="two shapes in one region"):
        prompts.plan(shapes, 1)


def test_the_pixel_check_passes_real_pictures_and_fails_wrong_ones():
    for split in prompts.SPLITS:
        rows = [prompts.prompt_at(i, split) for i in range(300)]
        passed = [prompts.check(prompts.picture(s), p) for s, p in rows]
        assert sum(passed) >= 0.99 * len(rows), split  # shapes that touch are the rest
    shapes, prompt = next(r for r in (prompts.prompt_at(i, "heldout") for i in range(50))
                          if len(r[0]) == 2 and r[0][0].colour != r[0][1].colour)
    both, one = prompts.picture(shapes), prompts.picture(shapes[:1])
    assert prompts.check(both, prompt)
    assert not prompts.check(one, prompt)  # a shape missing
    assert not prompts.check(np.zeros_like(both), prompt)  # nothing drawn
    speck = both.copy()
    speck[0, 0] = 1
    assert prompts.check(speck, prompt)  # one stray pixel is no shape
    recoloured = np.where(both == both.max(), 7 - both.max(), both).astype(np.uint8)
    assert not prompts.check(recoloured, prompt)


def test_prompts_with_no_words_unknown_words_or_too_many_are_refused_by_name():
    with pytest.raises(ValueError, match="no words"):
        prompt_ids("  ... ", WORDS, 16)
    with pytest.raises(ValueError, match="'pink'.*'rhombus'"):
        prompt_ids("a pink rhombus", WORDS, 16)
    with pytest.raises(ValueError, match="at most 4"):
        prompt_ids("a red circle and a blue star", WORDS, 4)
    assert prompt_ids("A Red circle.", WORDS, 16) == [WORDS.index(w) for w in ("a", "red",
                                                                               "circle")]


def test_decode_is_the_codebooks_decode_and_the_palette_is_the_scenes():
    from plait.data.palette import PALETTE
    from plait.training.tasks.imagine import ImagineData, build_codebook, mask_ints

    codebook = build_codebook(ImagineData(codebook_pictures=200))
    m = Imagine(ImagineConfig(words=WORDS, masks=mask_ints(codebook), n_layer=1, n_head=2,
                              n_embd=16, palette=tuple(map(tuple, PALETTE.tolist()))))
    pictures = [prompts.picture(prompts.prompt_at(i, "heldout-pair")[0]) for i in range(20)]
    tokens = torch.tensor(np.stack([codebook.encode(p) for p in pictures]))
    decoded = m.decode(tokens)
    for i in range(len(pictures)):
        assert np.array_equal(decoded[i].numpy(), codebook.decode(tokens[i].numpy()))
    assert np.array_equal(m.to_rgb(decoded).numpy(), to_rgb(decoded.numpy()))


def test_clip_recall_counts_prompts_of_equal_content_as_one_answer():
    from plait.training.tasks.imagine import clip_recall

    class Judge:  # embeds a picture by its colour counts and a prompt by the colours it names
        def embed_images(self, images):
            rows = [np.bincount(prompts.to_indices(np.asarray(i)).ravel(), minlength=7)[1:]
                    for i in images]
            return torch.tensor(np.stack(rows) > 0, dtype=torch.float)

        def embed_texts(self, texts):
            names = list(prompts.COLOURS)
            return torch.tensor([[float(c in prompts.wanted(t)) for c in names] for t in texts])

    rows = [prompts.prompt_at(i, "heldout") for i in range(40)]
    singles = [(s, p) for s, p in rows if len(s) == 1][:6]
    pictures = [prompts.picture(s) for s, _ in singles]
    texts = [p for _, p in singles]
    score = clip_recall(Judge(), pictures, texts)
    assert score == pytest.approx(np.mean([
        prompts.mentioned(texts[int(np.argmax([prompts.wanted(t)[s[0].colour] for t in texts]))])
        == prompts.mentioned(p) for s, p in singles]))
    assert clip_recall(Judge(), [np.zeros_like(pictures[0])] * 6, texts) <= 0.5


# -- the task and the commands on a two-step run ----------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("imagine") / "run"
    tree = read_toml(RECIPE)
    del tree["stages"]
    tree["model"].update(n_layer=1, n_head=2, n_embd=16)
    tree["data"].update(codebook_size=32, codebook_pictures=50, batch_size=4, n_eval=4)
    tree["train"].update(max_steps=2, warmup_steps=1, out_dir=str(out), progress=False,
                         threads=1, max_minutes=0.0)
    train(recipe_from_dict(tree))
    return out


def test_training_rows_are_seeded_and_drop_a_share_of_prompts(run):
    from plait.training import TASKS, TrainConfig
    from plait.training.distributed import Dist

    data = recipe_from_dict(read_toml(RECIPE)).data.replace(
        codebook_size=32, codebook_pictures=50, batch_size=64, uncond=0.25)
    task = TASKS.get("imagine")(data, TrainConfig(out_dir=str(run.parent / "t")), Dist())
    a, b = task.train_batch(7, 0), task.train_batch(7, 0)
    assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["word_ids"], b["word_ids"])
    assert a["tokens"].shape == (64, 144) and a["word_ids"].shape == (64, 16)
    assert a["plan"].shape == (64, 9) and ((a["plan"] > 0).sum(1) >= 1).all()
    dropped = (a["word_ids"] == 0).all(1).float().mean()
    assert 0.1 < dropped < 0.45


def test_imagine_writes_reproducible_pictures_and_a_grid(run, tmp_path, capsys):
    from PIL import Image

    prompt = "a red circle left of a blue square"
    assert main(["imagine", "--model", str(run), prompt, "--out", str(tmp_path / "x.png"),
                 "--num", "3", "--seed", "4", "--grid", str(tmp_path / "g.png")]) == 0
    files = [tmp_path / f"x-{i}.png" for i in (1, 2, 3)]
    assert all(f.is_file() for f in files)
    assert Image.open(files[0]).size == (192, 192)
    assert Image.open(tmp_path / "g.png").size == (2 * 192 + 8, 2 * 192 + 8)
    again = tmp_path / "again"
    again.mkdir()
    assert main(["imagine", "--model", str(run), prompt, "--out", str(again / "x.png"),
                 "--num", "3", "--seed", "4"]) == 0
    for i in (1, 2, 3):
        assert np.array_equal(np.asarray(Image.open(again / f"x-{i}.png")),
                              np.asarray(Image.open(tmp_path / f"x-{i}.png")))
    pixels = np.asarray(Image.open(files[0]).convert("RGB"))[::4, ::4]
    assert np.array_equal(to_rgb(prompts.to_indices(pixels)), pixels)  # palette colours only


@pytest.mark.parametrize("argv, message", [
    (["", "--out", "{tmp}/x.png"], "has no words"),
    (["a pink circle", "--out", "{tmp}/x.png"], "never saw the word(s) 'pink'"),
    (["a red circle " * 6, "--out", "{tmp}/x.png"], "reads at most 16"),
    (["a red circle", "--out", "{tmp}/nowhere/x.png"], "no directory"),
    (["a red circle", "--out", "{tmp}"], "image type"),
    (["a red circle", "--out", "{tmp}/x.txt"], "image type"),
    (["a red circle"], "--out PATH"),
])
def test_bad_input_is_one_line_and_exit_code_2(run, tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["imagine", "--model", str(run), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.png"))


def test_eval_reports_the_pixel_check_on_both_held_out_splits(run, capsys):
    assert main(["eval", "--model", str(run), "--task", "imagine"]) == 0
    out = capsys.readouterr().out
    assert "pixel_heldout " in out.replace("pixel_heldout_pair", "") and "pixel_heldout_pair" \
        in out
