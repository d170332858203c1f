"""Video captioning: the captioner's shapes and colour pooling, one fact per colour, the loss
against its formula, the recipe end to end on a tiny model (`plait eval --task video-caption`,
`plait caption` on clips), and bad input."""

from __future__ import annotations

import pytest
import torch

from plait.cli.main import main
from plait.data.clip_captions import facts
from plait.data.clips import clip_at
from plait.models.video_caption import EVENTS, ClipCaptioner, ClipCaptionerConfig
from plait.training import recipe_from_dict, train

TINY = {"n_layer": 1, "n_dec_layer": 1, "n_head": 2, "n_embd": 32, "stem": 8, "tubelet": 4}


def tiny_model(**kw) -> ClipCaptioner:
    torch.manual_seed(0)
    return ClipCaptioner(ClipCaptionerConfig(**{**TINY, **kw})).eval()


def test_the_captioner_gives_every_query_its_logits_and_a_pointer():
    m = tiny_model()
    out = m(torch.randn(2, 8, 3, 48, 48))
    assert out["objectness"].shape == (2, 4) and out["colour"].shape == (2, 4, 6)
    assert out["kind"].shape == (2, 4, 4) and out["event"].shape == (2, 4, len(EVENTS))
    assert out["pointer"].shape == (2, 4, 2 * 36)
    assert torch.allclose(out["pointer"].sum(-1), torch.ones(2, 4))
    with pytest.raises(ValueError, match="frames must be"):
        m(torch.randn(2, 7, 3, 48, 48))


def test_pixel_tokens_are_the_mean_colour_feature_of_each_tubelet():
    m = tiny_model()
    frames = torch.randn(1, 8, 3, 48, 48)
    feats, logits = m.pixels(frames)  # the 2 x 2 means' features and colour logits
    small = torch.nn.functional.avg_pool2d(frames[0], 2)  # (8, 3, 24, 24)
    assert torch.allclose(feats[0], m.stem(small.permute(0, 2, 3, 1)), atol=1e-6)
    assert logits.shape == (1, 8, 24, 24, 7)
    tokens = m.pixel_tokens(feats)  # (1, 2 * 36, stem)
    # token (tubelet 1, row 2, column 5): frames 4-7, pixels 8-11 x 20-23 of the half picture
    expected = feats[0, 4:8, 8:12, 20:24].mean((0, 1, 2))
    assert torch.allclose(tokens[0, 36 + 2 * 6 + 5], expected, atol=1e-5)


@pytest.mark.parametrize("shape_channels", [0, 4])
def test_kind_and_motion_see_the_clip_only_through_its_silhouette(shape_channels):
    m = tiny_model(shape_channels=shape_channels)
    a, b = torch.randn(1, 8, 3, 48, 48), torch.randn(1, 8, 3, 48, 48)
    fixed = m.pixels(a)
    m.pixels = lambda frames: fixed  # the same per-pixel colours for both clips
    out_a, out_b = m(a), m(b)
    assert torch.equal(out_a["kind"], out_b["kind"]) and torch.equal(out_a["event"],
                                                                      out_b["event"])


def test_describe_keeps_one_fact_per_colour_the_likelier():
    m = tiny_model()
    logits = {"objectness": torch.tensor([[5.0, 3.0, -5.0, 4.0]]),
              "colour": torch.zeros(1, 4, 6), "kind": torch.zeros(1, 4, 4),
              "event": torch.zeros(1, 4, len(EVENTS))}
    logits["colour"][0, [0, 1, 2], 0] = 9  # red, red, red (too unlikely an object)
    logits["colour"][0, 3, 4] = 9  # blue
    logits["kind"][0, 0, 1] = logits["kind"][0, 1, 2] = logits["kind"][0, 3, 3] = 9
    logits["event"][0, :, EVENTS.index(("leave", "up"))] = 9
    m.forward = lambda x: logits
    assert m.describe(torch.zeros(1)) == [[("blue", "star", "leave", "up"),
                                           ("red", "square", "leave", "up")]]


def test_the_loss_is_its_formula_on_the_matched_pairs(tmp_path):
    from plait.training import TrainConfig
    from plait.training.distributed import Dist
    from plait.training.tasks.video_caption import VideoCaptionData, VideoCaptionTask

    task = VideoCaptionTask(VideoCaptionData(), TrainConfig(out_dir=str(tmp_path)), Dist())
    batch = task.batch([clip_at(i, "train") for i in range(3)])
    torch.manual_seed(0)
    out = {"objectness": torch.randn(3, 4), "colour": torch.randn(3, 4, 6),
           "kind": torch.randn(3, 4, 4), "event": torch.randn(3, 4, len(EVENTS)),
           "pixel_colour": torch.randn(3, 8, 24, 24, 7)}
    assert batch["pixel_colour"].shape == (3, 8, 24, 24)
    pairs = task.match(out, batch)
    target, terms = torch.zeros(3, 4), []
    for b, (q, t) in enumerate(pairs):
        assert len(q) == int((batch["colour"][b] >= 0).sum())  # every shape gets a query
        target[b, q] = 1.0
        for i, j in zip(q.tolist(), t.tolist(), strict=True):
            terms.append(sum(-out[k][b, i].log_softmax(-1)[batch[k][b, j]]
                             for k in ("colour", "kind", "event")))
    p = torch.sigmoid(out["objectness"])
    bce = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    per_head = torch.stack(terms).mean()  # each head's CE is a mean over the matched pairs
    pixels = -out["pixel_colour"].log_softmax(-1).gather(
        -1, batch["pixel_colour"][..., None]).mean()
    assert float(task.loss(lambda x: out, batch)) == pytest.approx(
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
