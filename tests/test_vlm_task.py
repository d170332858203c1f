"""The scene VLM task end to end on a tiny model: the question data, where the loss looks, the
three-stage recipe (CLIP, then the VLM around its frozen tower), and the commands on the folder
it leaves (caption, ask with an attention map, eval), bad input included."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from plait.cli.main import main
from plait.config import read_toml
from plait.data.scenes import (
    COLOURS,
    HELDOUT_PAIRS,
    KINDS,
    PHRASINGS,
    QUESTION_KINDS,
    canonical_caption,
    mentioned,
    place,
    reading_order,
    rephrase,
    scene_at,
    scenes,
    with_placed_captions,
)
from plait.inference.vlm import CAPTION_QUESTIONS
from plait.training import recipe_from_dict, train
from plait.training.distributed import Dist
from plait.training.losses import IGNORE_INDEX

RECIPE = Path(__file__).parents[1] / "configs" / "vlm_scenes.toml"


# -- the data ---------------------------------------------------------------------------------
def test_questions_cover_every_kind_in_several_phrasings_with_balanced_presence():
    items = scenes(400, "train", 0)
    kinds = {q.kind for s in items for q in s.qa}
    assert kinds == set(QUESTION_KINDS)
    assert all(len(PHRASINGS[k]) >= 4 for k in QUESTION_KINDS)  # the first + three more
    presence = [q.answer == "yes" for s in items for q in s.qa if q.kind == "presence"]
    assert 0.4 < sum(presence) / len(presence) < 0.65
    rng = random.Random(0)
    for s in items[:50]:
        for q in s.qa:
            forms = {rephrase(q, rng) for _ in range(40)}
            assert q.question in forms and len(forms) == len(PHRASINGS[q.kind])
            slot = q.question.split(" ")[-1].rstrip("?")  # "circle?" -> circle, etc.
            assert all(slot in f for f in forms) or q.kind == "count"


def test_no_training_question_names_a_held_out_pair_but_held_out_ones_do():
    """Asked about a held-out pair in a training scene, the answer would always be "no", and a
    model would learn that the pair does not exist instead of looking."""
    def named(items):
        return {(c, k) for s in items for q in s.qa for c in COLOURS for k in KINDS
                if f" {c} {k}" in f" {q.question}"}

    assert not named(scenes(1000, "train", 0)) & HELDOUT_PAIRS
    held = scenes(300, "heldout", 0)
    assert named(held) >= HELDOUT_PAIRS
    absent = [q for s in held for q in s.qa if q.kind == "presence" and q.answer == "no"]
    assert named([type(held[0])([], qa=absent)]) & HELDOUT_PAIRS  # asked when absent too


def test_relations_follow_grid_cells_and_name_a_determined_reference():
    """'where is X?' is answered relative to the first other shape in reading order, and the
    relation comes from the grid cells (the horizontal axis on a diagonal), never from the
    jitter inside a cell, so every answer can be read off the picture."""
    from plait.data.scenes import Shape, cell, relation

    a, b = Shape("star", "red", "small", 0.17, 0.19), Shape("circle", "blue", "small", 0.52, 0.48)
    assert cell(a) == (0, 0) and cell(b) == (1, 1) and relation(a, b) == "left of"
    assert relation(Shape("star", "red", "small", 0.5, 0.15), b) == "above"
    checked = 0
    for i in range(300):
        s = scene_at(i, "train")
        for q in s.qa:
            if q.kind == "relation":
                first = s.shapes[0]
                ref = next(x for x in reading_order(s.shapes) if x is not first)
                assert q.answer == f"{relation(first, ref)} the {ref.colour} {ref.kind}"
                checked += 1
    assert checked > 100


def test_canonical_caption_names_every_shape_in_reading_order():
    for i in range(300):
        s = scene_at(i, "heldout" if i % 2 else "train")
        cap = canonical_caption(s.shapes)
        assert mentioned(cap) == s.key
        order = [sh.pair for sh in reading_order(s.shapes)]
        words = cap.replace(",", "").split()
        pairs = [(a, b) for a, b in zip(words, words[1:], strict=False) if (a, b) in set(order)]
        assert pairs == order
    assert mentioned("a red circle and two blue stars") == (("blue", "star"), ("red", "circle"))
    assert not any(p in HELDOUT_PAIRS for s in scenes(300, "train", 0) for p in s.key)


def test_placed_captions_state_every_shape_and_its_cell_in_reading_order(tmp_path):
    from plait.training.config import TrainConfig
    from plait.training.tasks.clip import ClipData, ClipTask

    for split in ("train", "heldout"):
        items = scenes(100, split)
        for s, p in zip(items, with_placed_captions(items, split), strict=True):
            assert p.shapes == s.shapes and p.qa == s.qa and len(set(p.captions)) == 4
            for cap in p.captions:
                assert mentioned(cap) == s.key
                order = [f"{sh.colour} {sh.kind} in the {place(sh)}"
                         for sh in reading_order(s.shapes)]
                found = sorted(order, key=lambda o: cap.index(o))  # each one is there ...
                assert found == order  # ... in reading order
    again = with_placed_captions(scenes(5), "train")[3].captions
    assert again == with_placed_captions(scenes(5), "train")[3].captions
    data = ClipData(n_train=20, n_gallery=10, batch_size=8, image_size=32, captions="placed",
                    dir=str(tmp_path))
    task = ClipTask(data, TrainConfig(), Dist())
    assert all(" in the " in c for it in task.items for c in it.captions)
    assert ClipTask(data.replace(captions="scene"), TrainConfig(), Dist()).items[0].captions != (
        task.items[0].captions)
    with pytest.raises(ValueError, match="needs data.dataset = 'shapes'"):
        ClipData(dataset="digits", captions="placed")


# -- the loss ---------------------------------------------------------------------------------
def _task(tmp_path, name="scenes-vqa"):
    from plait.training import TASKS, TrainConfig

    cls = TASKS.get(name)
    data = cls.data_config(n_train=16, n_eval=4, batch_size=4)
    task = cls(data, TrainConfig(out_dir=str(tmp_path), device="cpu"), Dist())
    task.n_image_tokens = 9
    return task


def test_place_questions_ask_a_colour_by_grid_cell(tmp_path):
    import random

    from plait.data.scenes import PLACE_QUESTION, Shape, place

    cells = {(0.1, 0.1): "top left", (0.5, 0.1): "top", (0.5, 0.5): "middle",
             (0.1, 0.5): "left", (0.9, 0.9): "bottom right", (0.9, 0.5): "right"}
    for (x, y), name in cells.items():
        assert place(Shape("circle", "red", "small", x, y)) == name
    task = _task(tmp_path)
    task = type(task)(task.data.replace(place_share=1.0, caption_share=0.0), task.train, Dist())
    rng = random.Random(0)
    for scene in task.items[:8]:
        [(question, answer)] = task.turns(scene, rng)
        shape = next(s for s in scene.shapes if PLACE_QUESTION.format(x=place(s)) == question)
        assert answer == shape.colour
    plain = _task(tmp_path)  # place_share 0: the scene's own questions only
    asked = {q for scene in plain.items for _ in range(4)
             for q, _ in plain.turns(scene, rng)}
    assert not any("shape in the" in q for q in asked)


def test_targets_are_the_answers_only(tmp_path):
    task = _task(tmp_path)
    t = task.tokenizer
    turns = [("how many shapes are there?", "two"), ("is there a red star?", "no")]
    ids, targets = task.row(turns)
    image = t.specials.index("<image>")
    assert ids[:10] == [t.bos_token_id] + [image] * 9
    labelled = [(i, y) for i, y in enumerate(targets) if y != IGNORE_INDEX]
    # each target is the next input token, and together they spell the answers and their </s>
    assert all(ids[i + 1] == y for i, y in labelled if i + 1 < len(ids))
    spelled = t.decode([y for _, y in labelled if y != t.eos_token_id])
    assert spelled == "twono" and sum(y == t.eos_token_id for _, y in labelled) == 2
    first_answer = ids.index(t.encode("two")[0])
    assert all(y == IGNORE_INDEX for y in targets[:first_answer - 1])  # image and question


def test_the_loss_ignores_image_prompt_and_padding_positions(tmp_path):
    task = _task(tmp_path)
    rng = random.Random(0)
    batch = task.batch(task.uint8[:3], [task.turns(s, rng) for s in task.items[:3]])
    T, V = batch["input_ids"].shape[1], task.tokenizer.vocab_size
    torch.manual_seed(0)
    logits = torch.randn(3, T, V)

    class Fixed(torch.nn.Module):
        def __init__(self, x):
            super().__init__()
            self.x = x

        def forward(self, *_):
            return self.x

    base = task.loss(Fixed(logits), batch)
    ignored = batch["targets"] == IGNORE_INDEX
    assert ignored.any() and (~ignored).any()
    noisy = logits + 100 * torch.randn(3, T, V) * ignored[..., None]
    assert torch.allclose(task.loss(Fixed(noisy), batch), base)
    changed = logits + 5 * torch.randn(3, T, V) * (~ignored)[..., None]
    assert not torch.allclose(task.loss(Fixed(changed), batch), base)
    manual = torch.nn.functional.cross_entropy(logits[~ignored], batch["targets"][~ignored])
    assert torch.allclose(base, manual)


def test_text_only_rows_describe_any_pair_but_no_image_shows_a_held_out_one(tmp_path):
    from plait.data.scenes import imagined_scene
    from plait.models.vlm import VLM, VLMConfig

    rng = random.Random(0)
    imagined = {p for _ in range(400) for p in imagined_scene(rng).key}
    assert imagined >= HELDOUT_PAIRS  # the words of every pair ...
    task = _task(tmp_path)
    assert not any(p in HELDOUT_PAIRS for s in task.items for p in s.key)  # ... no picture
    task = type(task)(task.data.replace(text_share=0.5), task.train, Dist())
    vision = dict(image_size=48, patch_size=16, n_layer=1, n_head=1, n_embd=8)
    text = dict(n_layer=1, n_head=1, n_embd=8, block_size=200)
    model = task.model_config(VLMConfig(vision=vision, text=text))
    m = VLM(model)
    image_id = model.image_token_id
    text_rows = 0
    for step in range(4):
        batch = task.train_batch(step, 0)
        has_image = (batch["input_ids"] == image_id).any(1)
        assert batch["pixel_values"].shape[0] == int(has_image.sum())
        assert has_image.tolist() == sorted(has_image.tolist(), reverse=True)  # images first
        assert torch.isfinite(task.loss(m, batch))
        text_rows += int((~has_image).sum())
        for row in batch["input_ids"][~has_image].tolist():  # a description, never a question
            question, _, caption = task.tokenizer.decode(row).partition("\n")
            assert question in CAPTION_QUESTIONS and mentioned(caption)
    assert 0 < text_rows < 16
    only_text = task.batch(task.uint8[:0], [[("how many shapes are there?", "one")]], 1)
    assert only_text["pixel_values"].shape[0] == 0 and torch.isfinite(task.loss(m, only_text))


# -- the recipe and the commands on its folder ------------------------------------------------
@pytest.fixture(scope="module")
def vlm_run(tmp_path_factory):
    """configs/vlm_scenes.toml shrunk: every stage runs a few steps."""
    out = tmp_path_factory.mktemp("vlm")
    tree = read_toml(RECIPE)
    tree["model"]["text"].update(n_layer=1, n_embd=32, n_head=2, n_kv_head=1)
    tree["data"].update(n_train=48, n_eval=4, batch_size=4)
    tree["train"].update(max_steps=3, warmup_steps=1, out_dir=str(out), progress=False,
                         threads=1, max_minutes=0.0)
    tower, align = tree["stages"]
    tower["model"]["vision"].update(n_layer=1, n_embd=32, n_head=2)
    if tower["task"] == "clip":
        tower["model"]["text"].update(n_layer=1, n_embd=32, n_head=2)
        tower["data"].update(n_train=48, n_gallery=8, batch_size=8)
    else:
        tower["data"].update(batch_size=4, heldout=4)
    tower["train"].update(max_steps=2, warmup_steps=1, max_minutes=0.0)
    align["train"].update(max_steps=2, max_minutes=0.0)
    recipe = recipe_from_dict(tree)
    for run in recipe.runs():
        train(run)
    return out


def test_the_frozen_tower_is_the_first_stages_and_never_changes(vlm_run):
    from plait.loading import load

    name = read_toml(RECIPE)["stages"][0]["name"]
    first, final, align = load(vlm_run / name), load(vlm_run), load(vlm_run / "align")
    tower = (first if name == "segment" else first.vision).state_dict()
    for model in (align, final):
        ours = model.vision.state_dict()
        assert ours.keys() == tower.keys()
        assert all(torch.equal(ours[k], tower[k]) for k in tower)
    moved = [k for k, v in align.decoder.state_dict().items()
             if not torch.equal(v, final.decoder.state_dict()[k])]
    assert moved  # the decoder did train in the last stage


def test_caption_ask_attention_map_and_eval(vlm_run, tmp_path, capsys):
    img = tmp_path / "scene.png"
    scene_at(0, "heldout").render(48).save(img)
    capsys.readouterr()
    assert main(["caption", "--model", str(vlm_run), str(img), str(img)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    att = tmp_path / "att.png"
    assert main(["ask", "--model", str(vlm_run), str(img), "how many shapes are there?",
                 "--attention-map", str(att), "--max-new-tokens", "3"]) in (0, 2)
    err = capsys.readouterr().err
    if att.exists():
        assert Image.open(att).size[0] > 100
    else:  # an untrained model may answer with no word at all: said in one line
        assert "no words to draw" in err
    assert main(["eval", "--model", str(vlm_run), "--task", "scenes-vqa"]) == 0
    out = capsys.readouterr().out
    assert "vqa_accuracy" in out and "caption_exact" in out and "vqa_relation" in out


def test_word_maps_cover_the_image_grid(vlm_run):
    from plait.inference.attention_map import word_maps
    from plait.inference.vlm import VisionAsker

    asker = VisionAsker.from_folder(vlm_run)
    image = scene_at(1, "heldout").render(48)
    maps = word_maps(asker, image, "what colour is the star?", "red and blue")
    assert [w for w, _ in maps] == ["red", "and", "blue"]
    g = int(asker.model.config.image_cells ** 0.5)  # one map cell per grid cell
    for _, grid in maps:
        assert grid.shape == (g, g) and (grid >= 0).all() and 0 < float(grid.sum()) <= 1 + 1e-5


def test_bad_input_is_one_line_and_exit_2(vlm_run, tmp_path, capsys):
    img = tmp_path / "scene.png"
    scene_at(0, "heldout").render(48).save(img)
    broken = tmp_path / "broken.png"
    broken.write_bytes(img.read_bytes()[:60])
    gpt = tmp_path / "gpt"
    from plait.checkpoint import save_model
    from plait.models.gpt import GPT, GPTConfig

    save_model(GPT(GPTConfig(vocab_size=10, n_layer=1, n_head=1, n_embd=8, block_size=8)), gpt)
    cases = [
        (["ask", "--model", str(gpt), str(img), "what?"], "not a vision-language model"),
        (["ask", "--model", str(vlm_run), "how many shapes are there?"], "give an image and"),
        (["ask", "--model", str(vlm_run), str(broken), "what?"], "not a readable image"),
        (["caption", "--model", str(vlm_run), str(broken)], "not a readable image"),
        (["ask", "--model", str(vlm_run), str(img), "<image> and <image>?"],
         "2 <image> placeholder(s) but 1 image(s)"),
        (["ask", "--model", str(vlm_run), str(img), str(img), "what?<image>"],
         "1 <image> placeholder(s) but 2 image(s)"),
        (["ask", "--model", str(vlm_run), str(img), "what " * 200],
         "exceeds the model's maximum length"),
    ]
    for args, needle in cases:
        capsys.readouterr()
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (args, err)


def test_answer_dropout_hides_answer_tokens_read_by_the_decoder_and_nothing_else(tmp_path):
    task = _task(tmp_path)
    plain = task.train_batch(3, 0)
    task = type(task)(task.data.replace(answer_dropout=0.4), task.train, Dist())
    task.n_image_tokens = 9
    batch = task.train_batch(3, 0)
    assert torch.equal(batch["targets"], plain["targets"])  # what is learned stays
    assert torch.equal(batch["pixel_values"], plain["pixel_values"])
    changed = batch["input_ids"] != plain["input_ids"]
    assert (batch["input_ids"][changed] == task.tokenizer.pad_token_id).all()
    read = torch.zeros_like(changed)
    read[:, 1:] = plain["targets"][:, :-1] != IGNORE_INDEX  # answer tokens, as read
    assert changed.any() and not (changed & ~read).any()  # never the image or the question
    hidden = total = 0
    for step in range(20):  # the share hidden: about answer_dropout of the answer tokens read
        b, p = task.train_batch(step, 0), _task(tmp_path).train_batch(step, 0)
        hidden += int((b["input_ids"] != p["input_ids"]).sum())
        total += int((p["targets"][:, :-1] != IGNORE_INDEX).sum())
    assert 0.3 < hidden / total < 0.5
    assert torch.equal(task.train_batch(3, 0)["input_ids"], batch["input_ids"])  # reproducible


def test_question_weights_draw_each_kind_as_often_as_asked(tmp_path):
    import random
    from collections import Counter

    from plait.data.scenes import QUESTION_KINDS

    task = _task(tmp_path)

    def drawn(weights: dict[str, float], scenes) -> Counter:
        t = type(task)(task.data.replace(caption_share=0.0, question_weights=weights),
                       task.train, Dist())
        rng, out = random.Random(0), Counter()
        for _ in range(30):
            for scene in scenes:
                [(_, answer)] = t.turns(scene, rng)
                out[next(q.kind for q in scene.qa if q.answer == answer)] += 1
        return out

    pairs = [s for s in task.items if len(s.shapes) >= 2]  # these have a relation question
    assert 0 < len(pairs) < len(task.items)
    only = {k: 0.0 for k in QUESTION_KINDS if k != "relation"}
    assert set(drawn(only, pairs)) == {"relation"}
    lone = [s for s in task.items if len(s.shapes) == 1]  # every weight 0: drawn uniformly
    assert set(drawn(only, lone)) == {"count", "colour", "presence"}
    plain, heavy = drawn({}, task.items), drawn({"relation": 4.0, "count": 0.0}, task.items)
    assert "count" not in heavy and plain["count"] > 0
    assert heavy["relation"] > 2.5 * plain["relation"]
    with pytest.raises(ValueError, match="unknown question kind 'colours'"):
        task.data.replace(question_weights={"colours": 2.0})
    with pytest.raises(ValueError, match="question_weights.count must be >= 0"):
        task.data.replace(question_weights={"count": -1.0})


def test_word_maps_sum_a_cells_feature_groups():
    from plait.inference.attention_map import word_maps
    from plait.inference.vlm import VisionAsker
    from plait.models.vlm import VLM, VLMConfig
    from plait.training.tasks.vlm import scene_tokenizer
    from plait.vision import ImageConfig

    t = scene_tokenizer()
    vision = dict(kind="segmenter", image_size=48, n_embd=8,
                  vision=dict(patch_size=8, n_layer=1, n_head=2, n_embd=16))
    text = dict(vocab_size=t.vocab_size, n_layer=1, n_head=2, n_embd=32, block_size=96)
    torch.manual_seed(0)
    config = dict(vision=vision, text=text, image_token_id=t.specials.index("<image>"),
                  pixel_shuffle=2, projector="linear", image_attention="bidirectional")
    grouped = VLM(VLMConfig(**config, feature_groups=[7, 4])).eval()
    assert grouped.config.tokens_per_image == 18 and grouped.config.image_cells == 9
    image = scene_at(1, "heldout").render(48)
    asker = VisionAsker(grouped, t, ImageConfig(size=48, crop_size=48))
    maps = word_maps(asker, image, "what colour is the star?", "red and blue")
    assert [w for w, _ in maps] == ["red", "and", "blue"]
    for _, grid in maps:  # 3 x 3 cells, each the sum of its colour and its kind token
        assert grid.shape == (3, 3) and 0 < float(grid.sum()) <= 1 + 1e-5


def test_place_first_answers_a_colour_with_the_asked_shapes_place_and_is_scored_so(tmp_path):
    from plait.data.scenes import answer_right, place, placed_answer

    colour_rows = 0
    for scene in scenes(40, "heldout"):
        for q in scene.qa:
            placed = placed_answer(scene, q)
            assert answer_right(scene, q, q.answer) and answer_right(scene, q, placed)
            if q.kind != "colour":
                assert placed == q.answer
                continue
            colour_rows += 1
            [shape] = [s for s in scene.shapes if s.kind in q.question]
            assert placed == f"{place(shape)} {q.answer}"
            wrong = "middle" if place(shape) != "middle" else "top left"
            assert not answer_right(scene, q, f"{wrong} {q.answer}")  # the place must be true
            assert not answer_right(scene, q, f"{place(shape)} {q.answer} {q.answer}")
    assert colour_rows > 20
    task = _task(tmp_path)
    placed_task = type(task)(task.data.replace(caption_share=0.0, place_first=True),
                             task.train, Dist())
    plain_task = type(task)(task.data.replace(caption_share=0.0), task.train, Dist())
    seen = 0
    for k, scene in enumerate(task.items * 4):
        [(q1, a1)] = placed_task.turns(scene, random.Random(k))
        [(q0, a0)] = plain_task.turns(scene, random.Random(k))
        assert q1 == q0  # the same draw; only a colour answer changes
        qa = next(q for q in scene.qa if q.answer == a0 and q.kind in {
            "colour" if a1 != a0 else q.kind})
        if qa.kind == "colour":
            seen += 1
            assert a1 == placed_answer(scene, qa) != a0
        else:
            assert a1 == a0
    assert seen > 0
