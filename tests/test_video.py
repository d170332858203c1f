"""Video question answering: the frame-sequence classifier, the task's batches, and the
commands on a tiny trained folder (a GIF or a frame folder asked, bad input refused)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from plait.cli.main import main
from plait.config import read_toml
from plait.data.clips import ANSWERS, Clip, clip_at
from plait.models.video import VideoVisualBert, VideoVisualBertConfig
from plait.training import recipe_from_dict, train
from plait.vision.video import write_gif

RECIPE = Path(__file__).parents[1] / "configs" / "video_qa.toml"


# -- the model ---------------------------------------------------------------------------------
VISION = dict(image_size=32, patch_size=8, n_layer=1, n_head=2, n_embd=16, pooling="mean")


def _model(tubelet: int = 1, shuffle: int = 2) -> VideoVisualBert:
    torch.manual_seed(0)
    cfg = VideoVisualBertConfig(vision=VISION, vocab_size=20, n_layer=1, n_head=2, n_embd=16,
                                block_size=12, labels=("a", "b", "c"), n_frames=4,
                                tubelet=tubelet, pixel_shuffle=shuffle)
    return VideoVisualBert(cfg).eval()


@pytest.mark.parametrize("tubelet", [1, 2])
def test_answers_read_frame_order_and_ignore_padding(tubelet):
    m = _model(tubelet)
    ids, mask = torch.tensor([[1, 5, 6], [1, 7, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]])
    px = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        out = m(ids, mask, px)
        assert out.shape == (2, 3)
        assert torch.allclose(out[1], m(ids[1:, :2], None, px[1:])[0], atol=1e-5)
        assert not torch.allclose(m(ids, mask, px.flip(1)), out, atol=1e-4)  # time matters
    assert m.image_input(px).shape == (2, 4 // tubelet * 4, 16)  # (2x2 tokens) per tubelet


def test_a_tubelet_is_its_frames_patch_states_side_by_side():
    m = _model(tubelet=2, shuffle=1)
    px = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        tokens = m.image_input(px)  # (1, 2 * 16, C)
        side = torch.cat([m.patches(px[:, 2]), m.patches(px[:, 3])], dim=-1)  # frames 2 and 3
        want = m.visual_proj(side) + m.image_pos + m.frame_pos[:, 1] + m.segment[1]
    assert tokens.shape == (1, 32, 16) and torch.allclose(tokens[:, 16:], want, atol=1e-5)


def test_config_checks_frames_and_shuffle():
    with pytest.raises(ValueError, match="multiple of model.tubelet"):
        VideoVisualBertConfig(vision=VISION, n_frames=4, tubelet=3)
    with pytest.raises(ValueError, match="must divide the patch grid"):
        VideoVisualBertConfig(vision=VISION, n_frames=4, pixel_shuffle=3)
    with pytest.raises(ValueError, match="resample it to 4 frames"):
        _model()(torch.tensor([[1]]), None, torch.randn(1, 5, 3, 32, 32))


# -- the task and the commands -----------------------------------------------------------------
@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    """configs/video_qa.toml shrunk to a few steps."""
    out = tmp_path_factory.mktemp("video")
    tree = read_toml(RECIPE)
    tree["model"].update(n_layer=1, n_embd=32, n_head=2)
    tree["model"]["vision"].update(n_layer=1, n_embd=16, n_head=2)
    tree["data"].update(n_eval=4, batch_size=4, n_train=40)
    tree["train"].update(max_steps=2, warmup_steps=1, out_dir=str(out), progress=False,
                         threads=1, max_minutes=0.0)
    train(recipe_from_dict(tree))
    return out


def test_batches_and_loss(video_run):
    from plait.training import TASKS, TrainConfig
    from plait.training.distributed import Dist

    recipe = recipe_from_dict(read_toml(RECIPE))
    task = TASKS.get("video-qa")(recipe.data.replace(batch_size=6, n_train=40),
                                 TrainConfig(out_dir=str(video_run / "t")), Dist())
    batch = task.train_batch(0, 0)
    assert batch["pixel_values"].shape == (6, 8, 3, 48, 48)
    assert batch["input_ids"].shape[0] == 6 and batch["labels"].shape == (6,)
    assert torch.equal(batch["labels"], task.train_batch(0, 0)["labels"])  # pure in the step
    from plait.loading import load

    model = load(video_run)
    assert model.config.labels == ANSWERS
    loss = task.loss(model, batch)
    assert loss.shape == () and torch.isfinite(loss)
    assert model(batch["input_ids"], batch["attention_mask"],
                 batch["pixel_values"]).shape == (6, len(ANSWERS))


def test_ask_a_gif_and_a_folder_and_eval(video_run, tmp_path, capsys):
    clip: Clip = clip_at(0, "heldout")
    gif = write_gif(clip.frames(48), tmp_path / "clip.gif")
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, f in enumerate(clip.frames(48)):
        f.save(folder / f"{t}.png")
    for path in (gif, folder):
        capsys.readouterr()
        assert main(["ask", "--model", str(video_run), str(path), "which shape moves?"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert len(out) == 1 and out[0] in ANSWERS
    assert main(["eval", "--model", str(video_run), "--task", "video-qa"]) == 0
    out = capsys.readouterr().out
    assert all(f"vqa_{k}" in out for k in ("accuracy", "direction", "leave", "mover"))


def test_bad_input_is_one_line_and_exit_2(video_run, tmp_path, capsys):
    from plait.checkpoint import save_model
    from plait.models.vlm import VLM, VLMConfig

    gif = write_gif(clip_at(0).frames(48), tmp_path / "c.gif")
    broken = tmp_path / "broken.gif"
    broken.write_bytes(gif.read_bytes()[:200])
    import numpy as np
    import soundfile as sf

    sound = tmp_path / "question.wav"
    sf.write(sound, np.zeros(1600, np.float32), 16_000)
    text = tmp_path / "notes.gif"
    text.write_text("not a picture\n")
    still = tmp_path / "still.png"
    clip_at(0).frames(48)[0].save(still)
    vlm = tmp_path / "vlm"
    save_model(VLM(VLMConfig(vision=dict(image_size=16, patch_size=8, n_layer=1, n_head=1,
                                         n_embd=8),
                             text=dict(vocab_size=10, n_layer=1, n_head=1, n_embd=8,
                                       block_size=16))), vlm)
    run = str(video_run)
    cases = [
        (["ask", "--model", run, str(broken), "which shape moves?"], "not a readable clip"),
        (["ask", "--model", run, str(still), "which shape moves?"], "a still image"),
        (["ask", "--model", run, str(sound), "which shape moves?"],
         "this is a WAV audio file, not a clip"),
        (["ask", "--model", run, str(text), "which shape moves?"], "not a readable clip"),
        (["ask", "--model", run, str(tmp_path / "gone.gif"), "which shape moves?"], "not found"),
        (["ask", "--model", run, str(gif), str(gif), "which shape moves?"], "give one clip"),
        (["ask", "--model", run, str(gif), "which shape moves?", "--attention-map", "a.png"],
         "has none to draw"),
        (["ask", "--model", run, str(gif), "which shape moves? £"], "£"),
        (["ask", "--model", str(vlm), str(gif), "what?"], "is a clip, but"),
    ]
    for args, needle in cases:
        capsys.readouterr()
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (args, err)


def test_kind_weights_choose_the_questions_rows_ask(tmp_path):
    from plait.data.clips import DIRECTIONS
    from plait.training import TASKS, TrainConfig
    from plait.training.distributed import Dist
    from plait.training.tasks.video_qa import ClipsData

    data = ClipsData(n_train=40, batch_size=16, workers=1, kind_weights=(1.0, 0.0, 0.0))
    task = TASKS.get("video-qa")(data, TrainConfig(out_dir=str(tmp_path)), Dist())
    answers = [ANSWERS[i] for i in task.train_batch(0, 0)["labels"].tolist()]
    assert set(answers) <= {*DIRECTIONS, "still"}
    leave = task.__class__(data.replace(kind_weights=(0.0, 1.0, 0.0)),
                           TrainConfig(out_dir=str(tmp_path)), Dist())
    assert {ANSWERS[i] for i in leave.train_batch(0, 0)["labels"].tolist()} <= {
        "zero", "one", "two", "three"}
    for bad in ((1.0, 1.0), (0.0, 0.0, 0.0), (1.0, -1.0, 1.0)):
        with pytest.raises(ValueError, match="kind_weights"):
            ClipsData(kind_weights=bad)
