"""Video captioning: the captioner's slots and masks, colour-blind reading, the loss
against its formula, the recipe end to end on a tiny model (`plait eval --task video-caption`,
`plait caption` on clips), and bad input."""

from __future__ import annotations

import pytest
import torch

from plait.cli.main import main
from plait.data.clip_captions import facts
from plait.data.clips import clip_at
from plait.models.video_caption import (
    EVENTS,
    ClipCaptioner,
    ClipCaptionerConfig,
    crop_around,
    mask_moments,
)
from plait.training import recipe_from_dict, train

TINY = {"n_layer": 1, "n_head": 2, "n_embd": 32, "stem": 8, "channels": [4, 8]}


def tiny_model(**kw) -> ClipCaptioner:
    torch.manual_seed(0)
    return ClipCaptioner(ClipCaptionerConfig(**{**TINY, **kw})).eval()


def test_the_captioner_reads_every_colour_as_a_slot():
    m = tiny_model()
    frames = torch.randn(2, 8, 3, 48, 48)
    out = m(frames)
    assert out["objectness"].shape == (2, 6) and out["kind"].shape == (2, 6, 4)
    assert out["event"].shape == (2, 6, len(EVENTS))
    assert out["pixel_colour"].shape == (2, 8, 24, 24, 7)  # every other row and column
    slots = torch.tensor([[3, 0], [5, 3]])  # some slots of each clip: the same numbers
    some = m(frames, slots)
    for k in ("objectness", "kind", "event"):
        assert torch.allclose(some[k], out[k][torch.arange(2)[:, None], slots], atol=1e-5)
    with pytest.raises(ValueError, match="frames must be"):
        m(torch.randn(2, 7, 3, 48, 48))
    with pytest.raises(ValueError, match="multiple of 4"):
        ClipCaptionerConfig(**{**TINY, "crop": 22})


def test_masks_are_the_pixel_colour_probabilities():
    m = tiny_model()
    frames = torch.randn(1, 8, 3, 48, 48)
    logits, masks = m.masks(frames)
    probs = m.pixel(frames.permute(0, 1, 3, 4, 2)).softmax(-1)  # (1, 8, 48, 48, 7)
    assert torch.allclose(masks, probs[..., 1:].permute(0, 4, 1, 2, 3), atol=1e-6)
    assert torch.allclose(logits, m.pixel(frames.permute(0, 1, 3, 4, 2)[:, :, ::2, ::2]))
    assert not masks.requires_grad  # the reader cannot teach the colours


def test_mask_moments_by_hand():
    mask = torch.zeros(3, 5, 4)
    mask[0, 0, 3] = 1.0  # top row, last column
    mask[1, 2, :] = 0.5  # the middle row, evenly
    moments = mask_moments(mask)
    assert torch.allclose(moments[0], torch.tensor([1 / 20, 1.0, -1.0]))
    assert torch.allclose(moments[1], torch.tensor([2 / 20, 0.0, 0.0]), atol=1e-6)
    assert torch.equal(moments[2], torch.zeros(3))  # empty: nothing, at the centre


def test_crop_around_centres_each_mask_on_its_centroid():
    masks = torch.zeros(3, 48, 48)
    masks[0, 10:13, 30:35] = 1.0  # centroid (row 11, column 32)
    masks[1, 0:3, 45:48] = 1.0  # a corner, centroid (1, 46): the window runs off the picture
    crops = crop_around(masks, 8, mask_moments(masks))
    assert crops.shape == (3, 8, 8)
    expected = torch.zeros(8, 8)
    expected[3:6, 2:7] = 1.0  # pixel (11, 32) at (4, 4): rows 10-12 -> 3-5, columns 30-34 -> 2-6
    assert torch.equal(crops[0], expected)
    assert crops[1].sum() == 9 and torch.equal(crops[1, 3:6, 3:6], torch.ones(3, 3))
    assert crops[2].sum() == 0  # an empty mask: an empty window


def test_a_slot_is_read_without_its_colour():
    """The reader sees one colour's masks and not which colour: permuting the colours'
    masks permutes the slots' outputs, so a kind cannot follow the colour it is drawn in."""
    m = tiny_model()
    masks = torch.rand(2, 6, 8, 48, 48)
    perm = torch.tensor([4, 2, 0, 5, 1, 3])
    a, b = m.read(masks), m.read(masks[:, perm])
    for k in ("objectness", "kind", "event"):
        assert torch.allclose(b[k], a[k][:, perm], atol=1e-5)


def test_describe_names_every_likely_colour_in_colour_order():
    m = tiny_model()
    logits = {"objectness": torch.tensor([[5.0, -3.0, -5.0, -1.0, 4.0, 0.1]]),
              "kind": torch.zeros(1, 6, 4), "event": torch.zeros(1, 6, len(EVENTS))}
    logits["kind"][0, 0, 1] = logits["kind"][0, 4, 3] = logits["kind"][0, 5, 2] = 9
    logits["event"][0, :, EVENTS.index(("leave", "up"))] = 9
    logits["event"][0, 0, EVENTS.index(("still", "still"))] = 10
    m.forward = lambda x: logits
    assert m.describe(torch.zeros(1)) == [[("red", "square", "still", "still"),
                                           ("blue", "star", "leave", "up"),
                                           ("purple", "triangle", "leave", "up")]]


def test_the_loss_is_its_formula_over_the_slots(tmp_path):
    import random

    from plait.data.scenes import COLOURS, KINDS
    from plait.training import TrainConfig
    from plait.training.distributed import Dist
    from plait.training.tasks.video_caption import VideoCaptionData, VideoCaptionTask

    task = VideoCaptionTask(VideoCaptionData(), TrainConfig(out_dir=str(tmp_path)), Dist())
    clips = [clip_at(i, "train") for i in range(3)]
    batch = task.batch(clips, random.Random(0))
    assert batch["slots"].shape == (3, 4) and batch["pixel_colour"].shape == (3, 8, 24, 24)
    for b, clip in enumerate(clips):  # the clip's own colours first, then absent ones
        n = len(clip.tracks)
        own = {list(COLOURS).index(t.shape.colour): t for t in clip.tracks}
        assert set(batch["slots"][b, :n].tolist()) == set(own)
        assert not set(batch["slots"][b, n:].tolist()) & set(own)
        assert batch["present"][b].tolist() == [1.0] * n + [0.0] * (4 - n)
        for j in range(n):
            t = own[int(batch["slots"][b, j])]
            assert int(batch["kind"][b, j]) == KINDS.index(t.shape.kind)
            assert EVENTS[int(batch["event"][b, j])] == (t.motion, t.direction)
        assert (batch["kind"][b, n:] == -1).all()
    every = task.batch(clips)  # evaluation: every colour, in order, drawn at the model's size
    assert torch.equal(every["frames"], task.batch(clips, random.Random(0))["frames"])
    assert every["slots"].tolist() == [list(range(6))] * 3
    resampled = VideoCaptionTask(VideoCaptionData(resample=1.0), task.train, Dist())
    drawn = resampled.batch(clips, random.Random(0))  # drawn larger, resized: edges blend
    assert drawn["frames"].shape == every["frames"].shape
    assert not torch.equal(drawn["frames"], every["frames"])
    assert torch.equal(drawn["pixel_colour"], every["pixel_colour"])  # targets: the drawing
    torch.manual_seed(0)
    out = {"objectness": torch.randn(3, 4), "kind": torch.randn(3, 4, 4),
           "event": torch.randn(3, 4, len(EVENTS)), "pixel_colour": torch.randn(3, 8, 24, 24, 7)}
    present, terms = batch["present"], []
    for b in range(3):
        for j in range(4):
            if present[b, j]:
                terms.append([-out[k][b, j].log_softmax(-1)[batch[k][b, j]]
                              for k in ("kind", "event")])
    p = torch.sigmoid(out["objectness"])
    bce = -(present * p.log() + (1 - present) * (1 - p).log()).mean()
    per_head = torch.tensor(terms).mean(0).sum()  # each head's CE: a mean over the shapes
    pixels = -out["pixel_colour"].log_softmax(-1).gather(
        -1, batch["pixel_colour"][..., None]).mean()
    assert float(task.loss(lambda x, slots: out, batch)) == pytest.approx(
        float(bce + per_head + pixels), rel=1e-5)


# -- end to end --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("video_caption") / "run"
    recipe = recipe_from_dict({
        "task": "video-caption", "model": {"arch": "clip-captioner", **TINY},
        "data": {"batch_size": 4, "heldout": 20},
        "train": {"max_steps": 3, "warmup_steps": 1, "eval_interval": 0, "threads": 1,
                  "progress": False, "device": "cpu", "out_dir": str(out)}})
    train(recipe)
    return out


def write_gif(path, clip) -> None:
    frames = clip.frames(48)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def test_plait_eval_reports_content_and_bleu(folder, capsys):
    capsys.readouterr()
    assert main(["eval", "--model", str(folder), "--task", "video-caption"]) == 0
    out = capsys.readouterr().out
    for name in ("content", "fact_precision", "fact_recall", "bleu4"):
        assert f"{name}  " in out, out


def test_plait_caption_writes_a_sentence_per_clip(folder, tmp_path, capsys):
    gif = tmp_path / "clip.gif"
    write_gif(gif, clip_at(0, "heldout"))
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, f in enumerate(clip_at(1, "heldout").frames(96)):
        f.save(frames / f"{i:02d}.png")
    capsys.readouterr()
    assert main(["caption", "--model", str(folder), str(gif), str(frames)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line in lines:  # whatever three steps learned, it is a sentence of the grammar
        assert line == "nothing moves" or facts(line), line


@pytest.mark.parametrize("make, needle", [
    ("still", "is not a clip"),
    ("missing", "not found"),
])
def test_mistakes_are_one_line_and_exit_code_2(folder, tmp_path, capsys, make, needle):
    path = tmp_path / "x.png"
    if make == "still":
        clip_at(0, "heldout").frames(48)[0].save(path)
    capsys.readouterr()
    code = main(["caption", "--model", str(folder), str(path)])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1, err
