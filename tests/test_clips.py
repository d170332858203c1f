"""The clips of moving shapes against their own frames, and clips read from GIFs and frame
folders (resampled in time; bad files refused in one line)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from plait.data.clips import ANSWERS, COUNTS, PHRASINGS, clip_at, clips
from plait.data.scenes import COLOURS, HELDOUT_PAIRS, rephrase
from plait.vision import ImageError
from plait.vision.video import read_clip, sample_frames, write_gif


# -- the clips ---------------------------------------------------------------------------------
def test_clips_are_a_pure_function_of_seed_split_and_index():
    assert clip_at(5) == clip_at(5) and clip_at(5, seed=1) == clip_at(5, seed=1)
    assert clip_at(5) != clip_at(6) and clip_at(5) != clip_at(5, seed=1)
    a, b = clip_at(3).frames(48), clip_at(3).frames(48)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="split must be"):
        clip_at(0, "test")


def _mask(frame: Image.Image, colour: str) -> np.ndarray:
    return (np.asarray(frame) == np.array(COLOURS[colour])).all(-1)  # (H, W)


def test_motion_and_leaving_are_what_the_frames_show():
    """For every shape (its pixels are those of its colour, one shape per colour): its pixels'
    centre moves the way the answer says (not at all when "still"), and it is in or out of the
    first and last frames as its motion says; the leave count is the number of shapes seen to
    go."""
    steps = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    checked = 0
    for clip in clips(150, "train") + clips(50, "heldout"):
        frames = clip.frames(48)
        answers = {q.question: q.answer for q in clip.qa}
        for tr in clip.tracks:
            colour = tr.shape.colour
            masks = [_mask(f, colour) for f in frames]
            seen = [m.any() for m in masks]
            assert (seen[0], seen[-1]) == {"still": (True, True), "cross": (True, True),
                                           "leave": (True, False),
                                           "enter": (False, True)}[tr.motion]
            named = PHRASINGS["direction"][0].format(x=f"{colour} {tr.shape.kind}")
            assert answers[named] == tr.direction
            shown = [t for t, s in enumerate(seen) if s]
            first, last = masks[shown[0]], masks[shown[-1]]
            if tr.direction == "still":
                assert np.array_equal(first, last)
                continue
            (y0, x0), (y1, x1) = (np.argwhere(m).mean(0) for m in (first, last))
            dx, dy = steps[tr.direction]
            along, across = (x1 - x0, y1 - y0) if dx else (y1 - y0, x1 - x0)
            # a shape half out of the picture has its centre of pixels off its own centre
            assert along * (dx + dy) > 1.0 and abs(across) < abs(along), (tr, along, across)
            checked += 1
        leavers = sum(tr.motion == "leave" for tr in clip.tracks)
        assert answers[PHRASINGS["leave"][0]] == COUNTS[leavers]
    assert checked > 200


def test_questions_are_unambiguous_and_every_answer_a_label():
    asked = 0
    for clip in clips(300, "train") + clips(100, "heldout"):
        colours = [tr.shape.colour for tr in clip.tracks]
        assert len(set(colours)) == len(colours)  # a colour names one shape
        assert any(tr.motion != "still" for tr in clip.tracks)  # frames are never all equal
        movers = [q for q in clip.qa if q.kind == "mover"]
        assert len(movers) == (len(clip.movers) == 1)
        if movers:
            asked += 1
            assert movers[0].answer == clip.movers[0].shape.colour
        assert all(q.answer in ANSWERS for q in clip.qa)
    assert asked > 100


def test_no_training_clip_shows_a_held_out_pair_and_every_held_out_clip_does():
    assert not any(tr.shape.pair in HELDOUT_PAIRS for c in clips(1000) for tr in c.tracks)
    assert all(any(tr.shape.pair in HELDOUT_PAIRS for tr in c.tracks)
               for c in clips(300, "heldout"))


def test_rephrase_keeps_the_named_shape():
    import random

    q = next(q for q in clip_at(0).qa if q.kind == "direction")
    rng = random.Random(0)
    names = {rephrase(q, rng, PHRASINGS) for _ in range(40)}
    assert len(names) == len(PHRASINGS["direction"])
    slot = q.question.removeprefix("which way does the ").removesuffix(" move?")
    assert all(slot in n for n in names)


# -- reading clips -----------------------------------------------------------------------------
def test_sample_frames_reads_evenly_spaced_instants():
    assert sample_frames([100] * 8, 8) == list(range(8))
    assert sample_frames([100] * 16, 8) == list(range(1, 16, 2))
    assert sample_frames([100] * 4, 8) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert sample_frames([300, 100, 400], 8) == [0, 0, 0, 1, 2, 2, 2, 2]  # merged frames
    assert sample_frames([0, 0, 0], 3) == [0, 1, 2]  # no durations: equal


def test_gif_and_frame_folder_round_trip_exactly(tmp_path):
    for i in range(20):  # some clips end with equal frames, which Pillow merges on writing
        frames = clip_at(i).frames(48)
        back = read_clip(write_gif(frames, tmp_path / f"{i}.gif"), 8)
        assert all(np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(frames, back, strict=True))
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, f in enumerate(frames):
        f.save(folder / f"{t:02d}.png")
    back = read_clip(folder, 4)
    assert all(np.array_equal(np.asarray(frames[2 * k + 1]), np.asarray(b))
               for k, b in enumerate(back))


def test_bad_clips_are_one_line_errors(tmp_path):
    gif = write_gif(clip_at(0).frames(48), tmp_path / "c.gif")
    broken = tmp_path / "broken.gif"
    broken.write_bytes(gif.read_bytes()[: gif.stat().st_size // 2])
    still = tmp_path / "still.png"
    clip_at(0).frames(48)[0].save(still)
    one = tmp_path / "one"
    one.mkdir()
    clip_at(0).frames(48)[0].save(one / "0.png")
    for path, needle in [(broken, "not a readable clip"), (still, "a still image"),
                         (one, "at least 2 images"), (tmp_path / "empty.gif", "empty file")]:
        if path.name == "empty.gif":
            path.write_bytes(b"")
        with pytest.raises(ImageError, match=needle) as err:
            read_clip(path, 8)
        assert "\n" not in str(err.value)


def test_drawn_clips_are_the_clips_and_their_frames_exactly():
    from plait.data.clips import PALETTE, draw_clips, palette_frames

    made, frames = draw_clips(6, "heldout", seed=3, size=32, workers=1)
    assert made == clips(6, "heldout", seed=3) and frames.shape == (6, 8, 32, 32)
    assert frames.dtype == np.uint8
    for clip, index in zip(made, frames, strict=True):
        rgb = np.stack([np.asarray(f) for f in clip.frames(32)])
        assert np.array_equal(PALETTE[index], rgb)
    again = draw_clips(1001, "train", size=16, workers=2)  # three jobs over two processes
    assert again[0][1000] == clip_at(1000) and np.array_equal(
        again[1][1000], palette_frames(clip_at(1000), 16))
    smooth = clip_at(0).frames(32)[0].resize((31, 31), Image.BILINEAR).resize((32, 32))
    with pytest.raises(ValueError, match="outside the palette"):
        palette_frames(type("Fake", (), {"frames": lambda self, size: [smooth]})(), 32)
