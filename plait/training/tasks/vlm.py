"""A vision–language model taught to caption synthetic scenes and answer questions about them.

Each training row is one scene's image and one turn (:mod:`plait.inference.vlm` frames it):
``scenes-caption`` asks for the caption (the alignment stage), ``scenes-vqa`` one of the
scene's questions in a phrasing drawn from :data:`plait.data.scenes.PHRASINGS` or, with
``data.caption_share``, the caption. With ``data.text_share`` some rows are text alone: the
caption of a scene that is described but never drawn (never a question: without the picture
its answer is noise, and a model taught to guess answers from the question alone learns the
look-up later). The loss is next-token cross-entropy on the answers
(and their ``</s>``) only: the image, the questions and the padding carry target -100.

Held out: the scenes of the ``heldout`` split, each holding a (colour, kind) pair that no
training image shows (``HELDOUT_PAIRS``). The evaluation captions them (a caption is right when
it names exactly the shapes present, by colour and kind; BLEU-4 by sacreBLEU against the
canonical caption) and asks every question in its first phrasing (exact-match accuracy, overall
and per kind).

``train.init_from`` may be a CLIP (or ViT) folder: the VLM is then built around its image tower
(:meth:`VLMScenesTask.build_from`), the recipe's ``[model.vision]`` replaced by the tower's.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from plait.config import Config
from plait.data.masking import hide_tokens
from plait.data.scenes import (
    COLOURS,
    KINDS,
    NUMBERS,
    PHRASINGS,
    PLACE_QUESTION,
    QA,
    QUESTION_KINDS,
    TRAIN_TEMPLATES,
    Scene,
    canonical_caption,
    imagined_scene,
    place,
    placed_answer,
    rephrase,
    scenes,
)
from plait.inference.vlm import CAPTION_QUESTIONS, SPECIALS, prompt_ids, turn_ids
from plait.text.base import pad_batch
from plait.text.char import CharTokenizer
from plait.training.config import TrainConfig
from plait.training.distributed import Dist, unwrap
from plait.training.losses import IGNORE_INDEX, CrossEntropy
from plait.training.tasks import Batch, Task
from plait.vision import ImageConfig, normalize, write_preprocessor_config


@dataclass(frozen=True)
class ScenesData(Config):
    """``[data]`` of the scene captioning and question-answering tasks."""

    image_size: int = 48
    n_train: int = 8000  # training scenes
    n_eval: int = 200  # held-out scenes captioned and questioned by the evaluation
    batch_size: int = 32  # rows per batch: an image (or none) and one turn each
    caption_share: float = 0.25  # scenes-vqa: the chance a row asks for the caption
    # scenes-vqa: the chance a question row asks instead "what colour is the shape in the top
    # left?" (plait.data.scenes.PLACE_QUESTION), a colour read from a place, no kind named
    place_share: float = 0.0
    # the share of rows that are text alone, the caption of a scene that is described but never
    # drawn (any colour+kind pair): the decoder learns every phrase, never an image of a held-out
    # pair
    text_share: float = 0.0
    # the chance that an answer token the decoder reads (teacher forcing) is replaced by padding
    # in training: "yellow" hidden, the kind after it must come from the image, not from which
    # kinds followed "yellow" in training (the targets stay)
    answer_dropout: float = 0.0
    # scenes-vqa: how often each question kind is drawn against the others (a kind not named
    # weighs 1; {} draws uniformly among a scene's questions): relations are one question of
    # about five in a scene, and the hardest
    question_weights: dict[str, float] = field(default_factory=dict)
    # scenes-vqa: a colour question is answered with the shape's place first ("top left
    # yellow", plait.data.scenes.placed_answer): the kind is tied to a place, then the colour
    # is read there as the place question reads it, instead of from which colours the kind
    # had in training
    place_first: bool = False
    seed: int = 0
    dir: str = ""  # tokenizer.json + preprocessor_config.json; "" = <train.out_dir>/data

    def __post_init__(self) -> None:
        if min(self.image_size, self.n_train, self.n_eval, self.batch_size) <= 0:
            raise ValueError("data.image_size, n_train, n_eval and batch_size must be > 0")
        for name in ("caption_share", "text_share", "place_share", "answer_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"data.{name} must be in [0, 1], got {getattr(self, name)}")
        for kind, w in self.question_weights.items():
            if kind not in QUESTION_KINDS:
                raise ValueError(f"data.question_weights: unknown question kind {kind!r}"
                                 f" (one of {', '.join(QUESTION_KINDS)})")
            if not w >= 0:
                raise ValueError(f"data.question_weights.{kind} must be >= 0, got {w}")


def scene_tokenizer(texts: Iterable[str] = ()) -> CharTokenizer:
    """Characters (lower-case letters, digits, punctuation) plus every word of the scenes'
    language (and of ``texts``: another task's questions) as one token: captions, questions
    and answers are a few tokens per word."""
    words = {*COLOURS, *KINDS, *NUMBERS.values(), "yes", "no", "left", "right", "above",
             "below", "of", "the", "and", "small", "large"}
    for text in (*TRAIN_TEMPLATES, *CAPTION_QUESTIONS,
                 *(p for forms in PHRASINGS.values() for p in forms), *texts):
        words.update(w for w in text.replace("{x}", " ").replace("{}", " ").split())
    words = {w.strip("?.,") for w in words}
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789 \n,.?!'-:;"))
    return CharTokenizer(chars, SPECIALS, sorted(w for w in words if len(w) > 1), spaced=True)


class ScenesCaptionTask(Task):
    """Captions only (``scenes-caption``); :class:`ScenesVQATask` adds the questions."""

    name = "scenes-caption"
    data_config = ScenesData
    questions = False
    units = {"loss": "nats/answer token", "caption_exact": "fraction", "caption_bleu4": "BLEU"}

    def __init__(self, data: ScenesData, train: TrainConfig, d: Dist):
        super().__init__(data, train, d)
        self.tokenizer = scene_tokenizer()
        self.image_config = ImageConfig(size=data.image_size, crop_size=data.image_size)
        self.items = scenes(data.n_train, "train", data.seed)
        self.uint8 = torch.stack([_uint8(s, data.image_size) for s in self.items])  # (N, 3, H, W)
        self.criterion = CrossEntropy(train.label_smoothing)
        self.n_image_tokens = 0  # set by model_config
        self.question_first = False  # the model's prompt layout, set by model_config
        if d.is_main:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save(self.data_dir)
            write_preprocessor_config(self.data_dir, self.image_config)

    # -- the model ------------------------------------------------------------------------------
    def model_config(self, config: Config) -> Config:
        t = self.tokenizer
        vision = {**config.vision, "image_size": self.data.image_size}
        text = {**config.text, "vocab_size": t.vocab_size}
        config = config.replace(vision=vision, text=text,
                                image_token_id=t.specials.index(SPECIALS[3]))
        self.n_image_tokens = config.tokens_per_image
        self.question_first = config.question_first
        return config

    def build_from(self, source: nn.Module, config: Config, where: str) -> nn.Module | None:
        """A VLM around the image tower of a CLIP (or a bare ViT) folder, or around a whole
        segmenter, its weights copied; the projector and the decoder start fresh."""
        from plait.models.segment import Segmenter
        from plait.models.vlm import VLM

        segmenter = isinstance(source, Segmenter)
        tower = source if segmenter else getattr(source, "vision", source)
        if not hasattr(tower, "features"):
            raise ValueError(f"train.init_from {where}: a {type(source).__name__} has no ViT"
                             " image tower to build a vision-language model around")
        table = ({"kind": "segmenter"} if segmenter else {}) | tower.config.to_dict()
        model = VLM(self.model_config(config.replace(vision=table)))
        model.vision.load_state_dict(tower.state_dict())
        if self.dist.is_main:
            print(f"init_from {where}: the image tower of a {type(source).__name__}"
                  f" ({len(tower.state_dict())} tensors); projector and decoder new", flush=True)
        return model

    # -- batches --------------------------------------------------------------------------------
    def turns(self, scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
        """The (question, answer) turn of one training row: the caption, or (scenes-vqa) one
        of the scene's questions in a drawn phrasing. One turn per row: with several, a later
        answer could be read off an earlier one (a caption names every shape) instead of the
        image, and a model trained so answers a lone question by chance."""
        if not self.questions or rng.random() < self.data.caption_share:
            return [(rng.choice(CAPTION_QUESTIONS), canonical_caption(scene.shapes))]
        if self.data.place_share and rng.random() < self.data.place_share:
            s = rng.choice(scene.shapes)
            return [(PLACE_QUESTION.format(x=place(s)), s.colour)]
        weights = [self.data.question_weights.get(q.kind, 1.0) for q in scene.qa]
        if self.data.question_weights and sum(weights) > 0:
            q = rng.choices(scene.qa, weights)[0]
        else:  # the draw before question_weights existed: reruns stay bit-identical
            q = rng.choice(scene.qa)
        return [(rephrase(q, rng), self.answer(scene, q))]

    def answer(self, scene: Scene, q: QA) -> str:
        """What the model is taught to answer ``q`` with: the reference, or with
        ``data.place_first`` a colour's place before it (:func:`placed_answer`)."""
        return placed_answer(scene, q) if self.data.place_first else q.answer

    def row(self, turns: list[tuple[str, str]],
            image: bool = True) -> tuple[list[int], list[int]]:
        """(ids, targets): the image (unless ``image`` is false) and every turn; targets are the
        next token where it is an answer's, else -100."""
        t = self.tokenizer
        ids = prompt_ids(t, turns[0][0], self.n_image_tokens, n_images=int(image),
                         question_first=self.question_first)
        labels = [IGNORE_INDEX] * len(ids)
        for k, (q, a) in enumerate(turns):
            q_ids, a_ids = turn_ids(t, q, a)
            if k:  # the first question is in the prompt already
                ids, labels = ids + q_ids, labels + [IGNORE_INDEX] * len(q_ids)
            ids, labels = ids + a_ids, labels + a_ids
        return ids, labels[1:] + [IGNORE_INDEX]  # targets[i] = the token after ids[i]

    def batch(self, uint8: Tensor, turns: list[list[tuple[str, str]]],
              text_only: int = 0) -> Batch:
        """Images (B, 3, H, W) uint8 and each one's turns -> a padded batch; the last
        ``text_only`` rows of ``turns`` have no image."""
        rows = [self.row(ts, image=i < len(turns) - text_only) for i, ts in enumerate(turns)]
        ids, mask = pad_batch([r for r, _ in rows], self.tokenizer.pad_token_id)
        targets = torch.full_like(ids, IGNORE_INDEX)
        for i, (_, lab) in enumerate(rows):
            targets[i, :len(lab)] = torch.tensor(lab)
        return {"input_ids": ids, "attention_mask": mask, "pixel_values": self.pixels(uint8),
                "targets": targets}

    def pixels(self, uint8: Tensor) -> Tensor:
        """(B, 3, H, W) uint8 images -> the model's normalised input."""
        c = self.image_config
        return normalize(uint8.float() / 255.0, c.mean, c.std)

    def heldout(self, n: int) -> tuple[list[Scene], Tensor]:
        """The first ``n`` held-out scenes and their images (uint8)."""
        held = scenes(n, "heldout", self.data.seed)
        return held, torch.stack([_uint8(s, self.data.image_size) for s in held])

    def train_batch(self, step: int, micro: int) -> Batch:
        rng = random.Random(f"{self.name}/{self.train.seed}/{step}/{micro}")
        B, W, r = self.data.batch_size, self.dist.world, self.dist.rank
        n_text = sum(rng.random() < self.data.text_share for _ in range(B))
        picks = [rng.randrange(len(self.items)) for _ in range(B - n_text)]
        turns = [self.turns(self.items[i], rng) for i in picks]
        turns += [[(rng.choice(CAPTION_QUESTIONS), canonical_caption(imagined_scene(rng).shapes))]
                  for _ in range(n_text)]
        lo, hi = r * B // W, (r + 1) * B // W  # this rank's rows: images first, then text
        batch = self.batch(self.uint8[picks[lo:min(hi, len(picks))]], turns[lo:hi],
                           text_only=max(0, hi - max(lo, len(picks))))
        if self.data.answer_dropout > 0:
            targets = batch["targets"]
            read = torch.zeros_like(targets, dtype=torch.bool)  # an answer token, as input
            read[:, 1:] = targets[:, :-1] != IGNORE_INDEX
            batch["input_ids"] = hide_tokens(batch["input_ids"], self.data.answer_dropout,
                                             self.tokenizer.pad_token_id, read,
                                             self.generator(step, micro))
        return batch

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        logits = model(batch["input_ids"], batch["pixel_values"], batch["attention_mask"])
        return self.criterion(logits, batch["targets"])

    def count(self, batch: Batch) -> int:
        return int((batch["targets"] != IGNORE_INDEX).sum())

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        """Captions (and, for scenes-vqa, answers) of the held-out scenes, and the answer-token
        loss of their canonical turns, one turn a row as in training (a later turn of a longer
        row would read its question after the image, which ``question_first`` never trains).
        Every rank computes the same numbers."""
        from plait.evaluation.vlm_eval import evaluate_scenes
        from plait.inference.vlm import CAPTION_QUESTION, VisionAsker
        from plait.training.tasks import to_device

        inner = unwrap(model)
        n = self.data.n_eval if max_batches is None else min(self.data.n_eval, 64)
        held, uint8 = self.heldout(n)
        asker = VisionAsker(inner, self.tokenizer, self.image_config)
        metrics = evaluate_scenes(asker, held, self.pixels(uint8), questions=self.questions)
        rows = [(i, [turn]) for i, s in enumerate(held)
                for turn in [(CAPTION_QUESTION, canonical_caption(s.shapes))]
                + ([(q.question, self.answer(s, q)) for q in s.qa] if self.questions else [])]
        total, count = 0.0, 0
        for at in range(0, len(rows), 64):
            chunk = rows[at:at + 64]
            batch = self.batch(uint8[[i for i, _ in chunk]], [t for _, t in chunk])
            batch = to_device(batch, device)
            k = self.count(batch)
            total += float(self.loss(inner, batch)) * k
            count += k
        return {"loss": total / max(count, 1), **metrics}

    def files(self) -> list[Path]:
        return [self.data_dir / "tokenizer.json", self.data_dir / "preprocessor_config.json"]


class ScenesVQATask(ScenesCaptionTask):
    """Questions about the scenes (five kinds, several phrasings), with captions mixed in."""

    name = "scenes-vqa"
    questions = True
    units = {**ScenesCaptionTask.units, "vqa_accuracy": "fraction",
             **{f"vqa_{k}": "fraction" for k in PHRASINGS}}


def _uint8(scene: Scene, size: int) -> Tensor:
    return torch.from_numpy(np.array(scene.render(size), dtype=np.uint8)).permute(2, 0, 1)
