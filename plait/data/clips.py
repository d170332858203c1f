"""Synthetic clips of moving shapes, with questions about time, from one seed.

A clip is ``n_frames`` frames of the scene generator (:mod:`plait.data.scenes`): 1-3 shapes,
each one of four motions along one axis (left, right, up or down) at a constant speed:

- ``still``: it stays where it is;
- ``cross``: it moves and stays wholly in the picture, first frame to last;
- ``leave``: wholly in the first frame, wholly outside the last (it leaves the picture);
- ``enter``: wholly outside the first frame, wholly inside the last.

No two shapes ever touch inside the picture, checked at four instants between frames as well,
so no shape hides another and none jumps over another between two frames.

Three kinds of question (each in four phrasings, :data:`PHRASINGS`; training draws any,
evaluation asks the first):

- ``direction``: "which way does the red circle move?" -> left / right / up / down, or
  "still" for a shape that does not move. Shapes of a clip are distinct colour+kind pairs, so
  the name is unique.
- ``leave``: "how many shapes leave the picture?" -> zero / one / two / three.
- ``mover``: "which shape moves?" -> the moving shape's COLOUR (red / orange / yellow / green
  / blue / purple). Asked only when exactly one shape moves. Colours are distinct within a
  clip, so the colour names the shape; and every colour is an answer in training, so a
  classifier can name the moving shape of a held-out pair, while "red triangle" would be a
  label it never saw.

Held out as for images (``HELDOUT_PAIRS``): every clip of the ``heldout`` split shows one of
those colour+kind pairs, and no clip of ``train`` shows any. Clip ``i`` of a split is a pure
function of ``(seed, split, i)``.
"""

from __future__ import annotations

import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context

import numpy as np
from PIL import Image

from plait.data.scenes import (
    BACKGROUND,
    COLOURS,
    HELDOUT_PAIRS,
    KINDS,
    NUMBERS,
    QA,
    SIZES,
    Shape,
    render,
)

FRAMES = 8
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1),
                                          "down": (0, 1)}
MOTIONS = ("still", "cross", "leave", "enter")
COUNTS = ("zero", *NUMBERS.values())
QUESTION_KINDS = ("direction", "leave", "mover")
PHRASINGS: dict[str, tuple[str, ...]] = {
    "direction": ("which way does the {x} move?", "in which direction does the {x} move?",
                  "where does the {x} go?", "which way is the {x} moving?"),
    "leave": ("how many shapes leave the picture?", "how many shapes go out of the picture?",
              "how many shapes move out of the frame?", "count the shapes that leave."),
    "mover": ("which shape moves?", "which shape is moving?", "which one of the shapes moves?",
              "what colour is the moving shape?"),
}
# every answer a question can have, in a fixed order: a classifier's labels
ANSWERS = (*DIRECTIONS, "still", *COUNTS, *COLOURS)
MARGIN = 0.02  # canvas fractions kept between "wholly inside/outside" and the edge
SUBSTEPS = 4  # instants per frame interval at which shapes must not touch


def extent(s: Shape) -> float:
    """Half the width of the square that holds the drawn shape (a star's points reach 1.15 r)."""
    return SIZES[s.size] * (1.15 if s.kind == "star" else 1.0)


@dataclass(frozen=True)
class Track:
    """A shape (its position at the first frame) and how it moves: ``speed`` canvas fractions
    per frame towards ``direction`` (``"still"``: speed 0)."""

    shape: Shape
    motion: str  # one of MOTIONS
    direction: str  # a DIRECTIONS key, or "still"

    speed: float = 0.0

    def at(self, t: float) -> Shape:
        """The shape at (fractional) frame ``t``."""
        dx, dy = DIRECTIONS.get(self.direction, (0, 0))
        s = self.shape
        return replace(s, x=s.x + dx * self.speed * t, y=s.y + dy * self.speed * t)


@dataclass(frozen=True)
class Clip:
    tracks: tuple[Track, ...]
    n_frames: int = FRAMES

    def shapes_at(self, t: float) -> list[Shape]:
        return [tr.at(t) for tr in self.tracks]

    def frames(self, size: int = 48) -> list[Image.Image]:
        """The clip drawn: ``n_frames`` RGB images of ``size`` x ``size``."""
        return [render(self.shapes_at(t), size) for t in range(self.n_frames)]

    @property
    def movers(self) -> list[Track]:
        return [tr for tr in self.tracks if tr.motion != "still"]

    @property
    def qa(self) -> list[QA]:
        """Every question the clip answers, in its kind's first phrasing."""
        out = [QA(PHRASINGS["direction"][0].format(x=f"{tr.shape.colour} {tr.shape.kind}"),
                  tr.direction, "direction") for tr in self.tracks]
        out.append(QA(PHRASINGS["leave"][0],
                      COUNTS[sum(tr.motion == "leave" for tr in self.tracks)], "leave"))
        if len(self.movers) == 1:  # colours are distinct in a clip: the colour names it
            out.append(QA(PHRASINGS["mover"][0], self.movers[0].shape.colour, "mover"))
        return out


# -- sampling ----------------------------------------------------------------------------------
def _motions(rng: random.Random, n: int) -> list[str]:
    """Motions of n shapes: the number that leave is uniform in 0..n (so every count answer is
    common); half the clips with at most one leaver have exactly one moving shape (so "which
    shape moves?" is often asked); at least one shape always moves."""
    leaving = rng.randint(0, n)
    rest = n - leaving
    if leaving <= 1 and rng.random() < 0.5:
        others = ["still"] * rest
        if not leaving:
            others[0] = rng.choice(("cross", "enter"))
    else:
        others = rng.choices(("still", "cross", "enter"), weights=(0.4, 0.35, 0.25), k=rest)
    motions = ["leave"] * leaving + others
    if all(m == "still" for m in motions):
        motions[0] = "cross"
    rng.shuffle(motions)
    return motions


def _along(rng: random.Random, motion: str, e: float) -> tuple[float, float]:
    """(start, distance) along the direction of travel, in canvas fractions from the edge the
    shape moves away from; ``e`` is its half extent plus the margin."""
    if motion == "cross":
        dist = rng.uniform(0.3, 1 - 2 * e)
        return rng.uniform(e, 1 - e - dist), dist
    if motion == "leave":  # ends wholly beyond the far edge
        start = rng.uniform(e, 1 - e)
        return start, 1 + e - start + rng.uniform(0.0, 0.3)
    end = rng.uniform(e, 1 - e)  # enter: starts wholly before the near edge
    dist = end + e + rng.uniform(0.0, 0.3)
    return end - dist, dist


def _track(rng: random.Random, colour: str, kind: str, motion: str, n_frames: int) -> Track:
    shape = Shape(kind, colour, rng.choice(list(SIZES)), 0.0, 0.0)
    e = extent(shape) + MARGIN
    across = rng.uniform(e, 1 - e)
    if motion == "still":
        return Track(replace(shape, x=rng.uniform(e, 1 - e), y=across), "still", "still")
    direction = rng.choice(list(DIRECTIONS))
    start, dist = _along(rng, motion, e)
    dx, dy = DIRECTIONS[direction]
    u = start if dx + dy > 0 else 1 - start  # left and up run from the right and bottom edges
    x, y = (u, across) if dx else (across, u)
    return Track(replace(shape, x=x, y=y), motion, direction, dist / (n_frames - 1))


def touching(a: Track, b: Track, n_frames: int) -> bool:
    """Whether two shapes' boxes (plus the margin) overlap inside the picture at any frame or
    between frames."""
    for k in range((n_frames - 1) * SUBSTEPS + 1):
        sa, sb = a.at(k / SUBSTEPS), b.at(k / SUBSTEPS)
        ra, rb = extent(sa) + MARGIN / 2, extent(sb) + MARGIN / 2
        lo_x, hi_x = max(sa.x - ra, sb.x - rb, 0.0), min(sa.x + ra, sb.x + rb, 1.0)
        lo_y, hi_y = max(sa.y - ra, sb.y - rb, 0.0), min(sa.y + ra, sb.y + rb, 1.0)
        if lo_x < hi_x and lo_y < hi_y:
            return True
    return False


def _pairs(rng: random.Random, n: int, heldout: bool) -> list[tuple[str, str]]:
    """n (colour, kind) pairs of distinct colours; a held-out clip's first is a held-out pair, a
    training clip has none."""
    everything = [(c, k) for c in COLOURS for k in KINDS]
    pairs = [rng.choice(sorted(HELDOUT_PAIRS))] if heldout else []
    pool = everything if heldout else [p for p in everything if p not in HELDOUT_PAIRS]
    while len(pairs) < n:
        p = rng.choice(pool)
        if all(p[0] != q[0] for q in pairs):  # one shape per colour
            pairs.append(p)
    rng.shuffle(pairs)
    return pairs


def make_clip(rng: random.Random, heldout: bool = False, n_frames: int = FRAMES) -> Clip:
    """One clip: 1-3 shapes and their motions; each shape's start and direction are redrawn
    until it touches none placed before it (all of them again if one cannot be placed)."""
    n = rng.randint(1, 3)
    pairs = _pairs(rng, n, heldout)
    motions = _motions(rng, n)
    for _ in range(100):
        tracks: list[Track] = []
        for (colour, kind), motion in zip(pairs, motions, strict=True):
            for _ in range(100):
                tr = _track(rng, colour, kind, motion, n_frames)
                if not any(touching(tr, other, n_frames) for other in tracks):
                    tracks.append(tr)
                    break
            else:
                break
        if len(tracks) == n:
            return Clip(tuple(tracks), n_frames)
    raise RuntimeError(f"cannot place {motions} without touching")  # not seen in 100k clips


def clip_at(index: int, split: str = "train", seed: int = 0, n_frames: int = FRAMES) -> Clip:
    """Clip ``index`` of ``split`` ('train' or 'heldout'), a pure function of its arguments."""
    if split not in ("train", "heldout"):
        raise ValueError(f"clip split must be 'train' or 'heldout', got {split!r}")
    if n_frames < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {n_frames}")
    rng = random.Random(f"clips/{seed}/{split}/{index}/{n_frames}")
    return make_clip(rng, heldout=split == "heldout", n_frames=n_frames)


def clips(n: int, split: str = "train", seed: int = 0, start: int = 0,
          n_frames: int = FRAMES) -> list[Clip]:
    return [clip_at(i, split, seed, n_frames) for i in range(start, start + n)]


# -- clips drawn in bulk -----------------------------------------------------------------------
# The scene renderer fills shapes without anti-aliasing, so every pixel of a frame is the
# background or one of the colours: a frame is stored as one byte per pixel, an index here.
PALETTE = np.array([BACKGROUND, *COLOURS.values()], dtype=np.uint8)  # (K, 3)
_RGB_KEY = np.array([65536, 256, 1])
_KEYS = PALETTE.astype(np.int64) @ _RGB_KEY  # one integer per colour
_ORDER = np.argsort(_KEYS)


def palette_frames(clip: Clip, size: int) -> np.ndarray:
    """A clip drawn as palette indices (T, size, size) uint8 (``PALETTE[i]`` gives RGB)."""
    rgb = np.stack([np.asarray(f) for f in clip.frames(size)]).astype(np.int64)
    keys = rgb @ _RGB_KEY
    index = _ORDER[np.minimum(np.searchsorted(_KEYS[_ORDER], keys), len(_KEYS) - 1)]
    if not (_KEYS[index] == keys).all():
        raise ValueError("a frame holds a colour outside the palette (anti-aliased drawing?)")
    return index.astype(np.uint8)


def _draw_range(args: tuple[int, int, str, int, int, int]) -> tuple[list[Clip], np.ndarray]:
    start, stop, split, seed, n_frames, size = args
    made = clips(stop - start, split, seed, start, n_frames)
    return made, np.stack([palette_frames(c, size) for c in made])


def draw_clips(n: int, split: str = "train", seed: int = 0, n_frames: int = FRAMES,
               size: int = 48, workers: int = 2) -> tuple[list[Clip], np.ndarray]:
    """Clips 0..n-1 of a split and their frames as palette indices (n, T, size, size) uint8,
    made by ``workers`` processes (about 5 ms of CPU a clip, most of it placing shapes that
    never touch): what a training run draws its rows from."""
    chunk = 500
    jobs = [(i, min(i + chunk, n), split, seed, n_frames, size) for i in range(0, n, chunk)]
    if workers <= 1 or len(jobs) == 1:
        parts = [_draw_range(j) for j in jobs]
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            parts = list(pool.map(_draw_range, jobs))
    return ([c for made, _ in parts for c in made],
            np.concatenate([frames for _, frames in parts]))
