"""Synthetic shape scenes: images, captions and question-answer pairs from one seed.

A scene holds 1-3 shapes (kind, colour, size, position) drawn with Pillow on a light canvas.
Every scene carries several true captions ("a red circle left of a blue square") and
question-answer pairs ("what colour is the circle?" -> "red", kept for a later VQA task).

Compositional split: some (colour, shape) PAIRS never appear in training scenes, although each
colour and each shape alone does (Johnson et al. 2017, CLEVR CoGenT, arXiv:1612.06890, held
out attribute combinations the same way). Held-out scenes contain at least one such pair, so
retrieving them is a test of composition, not memory.

Scene ``i`` of a split is a pure function of ``(seed, split, i)``: no files to download.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from PIL import Image, ImageDraw

from plait.text.events import english_list

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 0),
    "yellow": (225, 205, 0),
    "green": (30, 155, 45),
    "blue": (35, 70, 225),
    "purple": (140, 45, 185),
}
KINDS = ("circle", "square", "triangle", "star")
SIZES = {"small": 0.12, "large": 0.17}  # half-width as a fraction of the canvas
# never seen together in training: each colour and each kind still appears with others
HELDOUT_PAIRS = frozenset({("red", "triangle"), ("orange", "star"), ("yellow", "square"),
                           ("green", "circle"), ("blue", "star"), ("purple", "square")})
NUMBERS = {1: "one", 2: "two", 3: "three"}
BACKGROUND = (245, 245, 240)
TRAIN_TEMPLATES = ("{}", "a picture of {}", "an image showing {}", "a drawing of {}")


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str
    x: float  # centre, as a fraction of the canvas width (0 = left)
    y: float  # centre, as a fraction of the canvas height (0 = top)

    @property
    def pair(self) -> tuple[str, str]:
        return (self.colour, self.kind)

    def phrase(self, with_size: bool = False) -> str:
        return article(f"{self.size + ' ' if with_size else ''}{self.colour} {self.kind}")


@dataclass
class Scene:
    shapes: list[Shape]
    captions: list[str] = field(default_factory=list)
    qa: list[QA] = field(default_factory=list)

    @property
    def key(self) -> tuple[tuple[str, str], ...]:
        """The scene's content as a sorted multiset of (colour, kind): its 'description'."""
        return tuple(sorted(s.pair for s in self.shapes))

    def render(self, size: int = 64) -> Image.Image:
        return render(self.shapes, size)


def article(noun_phrase: str) -> str:
    return ("an " if noun_phrase[0] in "aeiou" else "a ") + noun_phrase


def cell(s: Shape) -> tuple[int, int]:
    """(row, column) of the 3 x 3 grid cell a shape sits in (jitter never leaves it)."""
    return int(s.y * 3), int(s.x * 3)


def relation(a: Shape, b: Shape) -> str:
    """Where ``a`` is relative to ``b``, by grid cells: the axis with more cells between them
    decides, the horizontal one on a diagonal (so what is said never hangs on the jitter)."""
    (ra, ca), (rb, cb) = cell(a), cell(b)
    if abs(ca - cb) >= abs(ra - rb):
        return "left of" if ca < cb else "right of"
    return "above" if ra < rb else "below"


# -- sampling ----------------------------------------------------------------------------------
def sample_shapes(rng: random.Random, n: int, heldout: bool,
                   any_pair: bool = False) -> list[Shape]:
    """n shapes in distinct cells of a 3x3 grid; training scenes avoid every held-out pair
    (``any_pair``: draw from all pairs, for scenes that are only described)."""
    cells = rng.sample(range(9), n)
    pairs: list[tuple[str, str]] = []
    everything = [(c, k) for c in COLOURS for k in KINDS]
    if heldout:  # the first shape is a held-out pair; the others may be anything
        pairs.append(rng.choice(sorted(HELDOUT_PAIRS)))
        pool = everything
    else:
        pool = everything if any_pair else [p for p in everything if p not in HELDOUT_PAIRS]
    while len(pairs) < n:
        p = rng.choice(pool)
        if p not in pairs:  # distinct objects keep captions like "the red circle" unambiguous
            pairs.append(p)
    rng.shuffle(pairs)
    shapes = []
    for (colour, kind), cell in zip(pairs, cells, strict=True):
        jx, jy = rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03)
        x, y = (cell % 3 + 0.5) / 3 + jx, (cell // 3 + 0.5) / 3 + jy
        shapes.append(Shape(kind, colour, rng.choice(list(SIZES)), x, y))
    return shapes


def make_scene(rng: random.Random, heldout: bool = False, max_shapes: int = 3) -> Scene:
    n = rng.randint(1, max_shapes)
    shapes = sample_shapes(rng, n, heldout)
    return Scene(shapes, captions(shapes, rng), questions(shapes, rng, heldout))


def imagined_scene(rng: random.Random, max_shapes: int = 3) -> Scene:
    """A scene that is only described, never drawn: any (colour, kind) pair may occur, held-out
    ones included. Text about it teaches a model's language side every phrase ("a green
    circle") without ever showing it an image of a held-out pair, as a pretrained language
    model knows words it has never seen pictured."""
    n = rng.randint(1, max_shapes)
    return Scene(sample_shapes(rng, n, heldout=False, any_pair=True))  # shapes only: no rows ask


def scene_at(index: int, split: str = "train", seed: int = 0, max_shapes: int = 3) -> Scene:
    """Scene ``index`` of ``split`` ('train' or 'heldout'), a pure function of its arguments."""
    if split not in ("train", "heldout"):
        raise ValueError(f"scene split must be 'train' or 'heldout', got {split!r}")
    rng = random.Random(f"scenes/{seed}/{split}/{index}")
    return make_scene(rng, heldout=split == "heldout", max_shapes=max_shapes)


def scenes(n: int, split: str = "train", seed: int = 0, start: int = 0,
           max_shapes: int = 3) -> list[Scene]:
    return [scene_at(i, split, seed, max_shapes) for i in range(start, start + n)]


def distinct_scenes(n: int, split: str = "heldout", seed: int = 0,
                    max_shapes: int = 3) -> list[Scene]:
    """The first ``n`` scenes of ``split`` whose content (multiset of colour+kind) is unique.

    A retrieval gallery built from these has exactly one correct image per caption's content, so
    recall@1 measures understanding rather than luck among look-alikes.
    """
    out: list[Scene] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    i = 0
    while len(out) < n:
        if i > 100 * n + 1000:
            raise ValueError(f"cannot find {n} distinct '{split}' scenes; ask for fewer")
        s = scene_at(i, split, seed, max_shapes)
        i += 1
        if s.key not in seen:
            seen.add(s.key)
            out.append(s)
    return out


# -- language --------------------------------------------------------------------------------
def describe(shapes: list[Shape], rng: random.Random) -> str:
    """One true description: a list, or (for 2-3 shapes) a relation between two of them."""
    sized = rng.random() < 0.5
    order = sorted(shapes, key=lambda s: s.x) if rng.random() < 0.5 else rng.sample(shapes,
                                                                                    len(shapes))
    phrases = [s.phrase(sized) for s in order]
    if len(shapes) == 1:
        return phrases[0]
    if rng.random() < 0.5:
        a, b = order[0], order[1]
        rel = f"{a.phrase(sized)} {relation(a, b)} {b.phrase(sized)}"
        return rel if len(shapes) == 2 else f"{rel} and {phrases[2]}"
    return english_list(phrases)


def describe_placed(shapes: list[Shape], rng: random.Random) -> str:
    """Every shape with its grid cell, in reading order ("a red circle in the top left and a
    blue square in the middle"): a description that states the whole layout."""
    sized = rng.random() < 0.5
    return english_list([f"{s.phrase(sized)} in the {place(s)}" for s in reading_order(shapes)])


def captions(shapes: list[Shape], rng: random.Random, n: int = 4,
             placed: bool = False) -> list[str]:
    """``n`` distinct true captions (different orders, relations, sizes and templates);
    ``placed``: each states every shape's cell instead (:func:`describe_placed`)."""
    out: list[str] = []
    for _ in range(20 * n):
        words = describe_placed(shapes, rng) if placed else describe(shapes, rng)
        text = rng.choice(TRAIN_TEMPLATES).format(words)
        if text not in out:
            out.append(text)
        if len(out) == n:
            break
    return out


def with_placed_captions(items: list[Scene], split: str) -> list[Scene]:
    """The same scenes, each captioned by where its shapes are (``placed=True``), from a seed
    of its split and position."""
    return [Scene(s.shapes, captions(s.shapes, random.Random(f"placed/{split}/{i}"), placed=True),
                  s.qa) for i, s in enumerate(items)]


class QA(NamedTuple):
    question: str
    answer: str
    kind: str  # one of QUESTION_KINDS


QUESTION_KINDS = ("count", "colour", "shape", "relation", "presence")
# every kind's phrasings: the first is the one held-out evaluation asks; training draws from
# all of them, so a model learns the question, not one string ({x}: the slot's words)
PHRASINGS: dict[str, tuple[str, ...]] = {
    "count": ("how many shapes are there?", "how many shapes do you see?",
              "count the shapes.", "what is the number of shapes?"),
    "colour": ("what colour is the {x}?", "which colour is the {x}?",
               "what is the colour of the {x}?", "the {x} is what colour?"),
    "shape": ("what shape is {x}?", "which shape is {x}?", "what kind of shape is {x}?",
              "the {x} shape is which one?"),
    "relation": ("where is the {x}?", "where is the {x} placed?",
                 "where can you see the {x}?", "what is the position of the {x}?"),
    "presence": ("is there {x}?", "do you see {x}?", "can you find {x}?",
                 "does the picture have {x}?"),
}


# a training-only question that names no kind: its answer is read from a place, so the colour
# read-out it trains is shared by every kind (data.place_share of scenes-vqa)
PLACE_QUESTION = "what colour is the shape in the {x}?"


def place(s: Shape) -> str:
    """The grid cell of a shape in words: "top left", "top", ..., "middle", "bottom right"."""
    r, c = cell(s)
    words = [w for w in (("top", "", "bottom")[r], ("left", "", "right")[c]) if w]
    return " ".join(words) or "middle"


def placed_answer(scene: Scene, qa: QA) -> str:
    """A colour question's answer with the asked shape's place first ("top left yellow"): the
    kind is tied to a place, then the colour read there (``data.place_first`` of scenes-vqa).
    Any other question's answer is unchanged."""
    if qa.kind != "colour":
        return qa.answer
    words = {w.strip("?.,") for w in qa.question.split()}
    shape = next(s for s in scene.shapes if s.kind in words)
    return f"{place(shape)} {qa.answer}"


def answer_right(scene: Scene, qa: QA, answer: str) -> bool:
    """Whether ``answer`` is right: it equals the reference, or is the reference with the
    asked shape's true place first (:func:`placed_answer`)."""
    return answer in (qa.answer, placed_answer(scene, qa))


def questions(shapes: list[Shape], rng: random.Random, heldout: bool = True) -> list[QA]:
    """Question-answer pairs about counts, colours, kinds, relations and presence, in each
    kind's first phrasing (:func:`rephrase` draws another). Presence asks about a shape that
    is there half the time; in a training scene (``heldout=False``) never about a held-out
    pair, whose answer there would always be "no": a model would learn that those pairs do not
    exist instead of looking."""
    qa = [QA(PHRASINGS["count"][0], NUMBERS[len(shapes)], "count")]
    for s in shapes:
        qa.append(QA(PHRASINGS["colour"][0].format(x=s.kind), s.colour, "colour")
                  if sum(t.kind == s.kind for t in shapes) == 1 else
                  QA(PHRASINGS["shape"][0].format(x=s.colour), s.kind, "shape"))
    if len(shapes) >= 2:  # relative to the first other shape in reading order
        a = shapes[0]
        b = next(s for s in reading_order(shapes) if s is not a)
        where = f"{relation(a, b)} the {b.colour} {b.kind}"
        qa.append(QA(PHRASINGS["relation"][0].format(x=f"{a.colour} {a.kind}"), where,
                     "relation"))
    if rng.random() < 0.5:
        colour, kind = rng.choice(shapes).pair
    else:
        colour, kind = rng.choice(list(COLOURS)), rng.choice(KINDS)
        while not heldout and (colour, kind) in HELDOUT_PAIRS:
            colour, kind = rng.choice(list(COLOURS)), rng.choice(KINDS)
    present = any(s.pair == (colour, kind) for s in shapes)
    qa.append(QA(PHRASINGS["presence"][0].format(x=article(f"{colour} {kind}")),
                 "yes" if present else "no", "presence"))
    return qa


def rephrase(qa: QA, rng: random.Random,
             phrasings: dict[str, tuple[str, ...]] | None = None) -> str:
    """``qa``'s question in a phrasing of its kind drawn by ``rng`` (the first included), from
    ``phrasings`` (default: the scenes' :data:`PHRASINGS`)."""
    forms = (phrasings or PHRASINGS)[qa.kind]
    first = forms[0]
    head, _, tail = first.partition("{x}")
    slot = qa.question[len(head):len(qa.question) - len(tail)] if tail else qa.question[len(head):]
    return rng.choice(forms).format(x=slot)


def reading_order(shapes: list[Shape]) -> list[Shape]:
    """Top row first, each row left to right (by grid cell, so jitter never reorders)."""
    return sorted(shapes, key=cell)


def canonical_caption(shapes: list[Shape]) -> str:
    """The one caption a captioner is taught: every shape by colour and kind, in reading
    order ("a red circle, a blue square and a green star")."""
    return english_list([s.phrase() for s in reading_order(shapes)])


def mentioned(text: str) -> tuple[tuple[str, str], ...]:
    """The (colour, kind) pairs a caption names, sorted: compare with ``Scene.key``."""
    words = re.findall(r"[a-z]+", text.lower())
    return tuple(sorted((a, b.rstrip("s")) for a, b in zip(words, words[1:], strict=False)
                        if a in COLOURS and b.rstrip("s") in KINDS))


# -- drawing ---------------------------------------------------------------------------------
def render(shapes: list[Shape], size: int = 64) -> Image.Image:
    """Draw shapes on a light canvas: (size, size) RGB."""
    img = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for s in shapes:
        draw_shape(draw, s, size)
    return img


def draw_shape(draw: ImageDraw.ImageDraw, s: Shape, size: int,
               fill: tuple[int, int, int] | int | None = None) -> None:
    """Draw ``s`` on a ``size`` canvas in its colour, or in ``fill`` (a mask's value)."""
    cx, cy, r = s.x * size, s.y * size, SIZES[s.size] * size
    fill = COLOURS[s.colour] if fill is None else fill
    if s.kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif s.kind == "square":
        q = r * 0.85  # equal area feel next to the circle
        draw.rectangle((cx - q, cy - q, cx + q, cy + q), fill=fill)
    elif s.kind == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    elif s.kind == "star":
        draw.polygon(_star_points(cx, cy, r * 1.15), fill=fill)
    else:
        raise ValueError(f"unknown shape kind {s.kind!r} (known: {', '.join(KINDS)})")


def _star_points(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        rad = r if i % 2 == 0 else r * 0.45
        ang = -math.pi / 2 + i * math.pi / 5
        pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
    return pts
