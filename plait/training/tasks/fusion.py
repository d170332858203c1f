"""A picture, a spoken word and a written question, answered yes or no (``fusion``): the task
of :mod:`plait.data.fusion`, read by :class:`plait.models.fusion.Fusion` in any of its modes and
with any subset of the three modalities (an ablation row leaves some out).

A training row is a fresh example of the training split (a pure function of seed, step and
row): its scene drawn at ``data.image_size``, its word one of ``data.n_words`` training
recordings (log-mel features computed once, :func:`plait.training.tasks.speech.cached_features`)
and its question in a drawn phrasing. The evaluation asks the first ``data.n_eval`` held-out
examples (held-out scenes and speakers, first phrasing): accuracy overall, per family, and on
the colour-kind questions about a held-out pair.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from plait.audio import HOP_LENGTH
from plait.config import Config
from plait.data import speech
from plait.data.fusion import (
    ANSWERS,
    FAMILIES,
    NUMBER_WORDS,
    PHRASINGS,
    WORDS,
    Example,
    example,
    example_at,
)
from plait.data.fusion import word_utterances as _words
from plait.data.scenes import COLOURS, render
from plait.inference.video import question_ids
from plait.training import distributed
from plait.training.config import TrainConfig
from plait.training.distributed import Dist, unwrap
from plait.training.losses import CrossEntropy
from plait.training.optim import param_groups
from plait.training.tasks import Batch, Task
from plait.training.tasks.speech import cached_features
from plait.training.tasks.vlm import scene_tokenizer
from plait.vision import ImageConfig, normalize, write_preprocessor_config


@dataclass(frozen=True)
class FusionData(Config):
    """``[data]`` of ``fusion``."""

    image_size: int = 48
    n_words: int = 2200  # training recordings, every word in turn (200 of each of 11 words)
    n_words_heldout: int = 550  # held-out speakers' recordings the evaluation draws from
    n_eval: int = 1000  # held-out examples asked
    batch_size: int = 64
    n_frames: int = 96  # the audio window in 10 ms frames (the longest word is ~0.65 s)
    n_mels: int = 80
    words_dir: str = "data/fusion_words"  # built recordings and their features, reused
    workers: int = 2  # espeak-ng processes at once while building
    # weight of the auxiliary losses on the fused representation: the word said (when the
    # model hears), the count asked about and the colours of the kind asked about (when it
    # reads and sees). The answer alone is one bit that depends on all three inputs at once:
    # from it alone a model stays at chance for thousands of steps (docs/fusion.md)
    aux_weight: float = 0.0
    seed: int = 0
    dir: str = ""  # tokenizer.json + preprocessor_config.json; "" = <train.out_dir>/data

    def __post_init__(self) -> None:
        if min(self.image_size, self.n_words, self.n_words_heldout, self.n_eval,
               self.batch_size, self.n_frames, self.n_mels, self.workers) <= 0:
            raise ValueError("data.image_size, n_words, n_words_heldout, n_eval, batch_size,"
                             " n_frames, n_mels and workers must be > 0")
        if self.n_frames % 2:
            raise ValueError(f"data.n_frames must be even, got {self.n_frames}")


ENCODERS = ("wte", "text_pos", "text", "vision", "image_proj", "image_pos", "audio",
            "audio_proj")  # a fusion model's per-modality parts (plait.models.fusion)


def fusion_tokenizer():
    """The scenes' word tokenizer with the fusion questions' words."""
    return scene_tokenizer([p for forms in PHRASINGS.values() for p in forms])


class FusionTask(Task):
    """One example per row; the answer is "yes" or "no"."""

    name = "fusion"
    data_config = FusionData
    units = {"loss": "nats/question", "accuracy": "fraction",
             **{f"accuracy_{f}": "fraction" for f in FAMILIES},
             "accuracy_heldout_pair": "fraction"}

    def __init__(self, data: FusionData, train: TrainConfig, d: Dist):
        super().__init__(data, train, d)
        self.tokenizer = fusion_tokenizer()
        self.image_config = ImageConfig(size=data.image_size, crop_size=data.image_size)
        self.criterion = CrossEntropy(train.label_smoothing)
        self.modalities: tuple[str, ...] = ()  # set by model_config
        self.absent: frozenset[str] = frozenset()  # evaluated without (plait eval --without)
        self._features: dict[str, Tensor] = {}  # split -> (N, n_mels, n_frames), built once
        if d.is_main:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save(self.data_dir)
            write_preprocessor_config(self.data_dir, self.image_config)

    # -- the model ------------------------------------------------------------------------------
    def model_config(self, config: Config) -> Config:
        c = self.data
        vit = config.vision.get("kind", "vit") == "vit"
        config = config.replace(
            vision={**config.vision, **({"image_size": c.image_size} if vit else {})},
            image_size=c.image_size,
            audio={**config.audio, "n_mels": c.n_mels, "n_frames": c.n_frames},
            vocab_size=self.tokenizer.vocab_size, pad_token_id=self.tokenizer.pad_token_id,
            labels=ANSWERS, aux=aux_heads(config.modalities) if c.aux_weight > 0 else {})
        self.modalities = config.modalities
        return config

    def build_from(self, source: nn.Module, config: Config, where: str) -> nn.Module | None:
        """A fusion model around the image tower of a CLIP (or bare ViT) folder, its weights
        copied; the text and audio encoders and the fusion start fresh."""
        from plait.models.fusion import Fusion

        tower = getattr(source, "vision", source)
        if not hasattr(tower, "features"):
            raise ValueError(f"train.init_from {where}: a {type(source).__name__} has no ViT or"
                             " ResNet image tower to read pictures with")
        from plait.models.resnet import ResNet

        kind = {"kind": "resnet"} if isinstance(tower, ResNet) else {}
        model = Fusion(self.model_config(config.replace(vision=kind | tower.config.to_dict())))
        if "image" in model.config.modalities:
            model.vision.load_state_dict(tower.state_dict())
        if self.dist.is_main:
            used = "its image tower" if "image" in model.config.modalities else "nothing"
            print(f"init_from {where}: {used} from a {type(source).__name__}; the rest new",
                  flush=True)
        return model

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """``train.freeze`` without the patterns of an encoder the model was built without (an
        ablation row leaves the image out; the recipe still says to freeze its tower)."""
        names = {n.split(".")[0] for n, _ in model.named_parameters()}
        keep = tuple(p for p in self.train.freeze
                     if p.split(".")[0] not in ENCODERS or p.split(".")[0] in names)
        return param_groups(model, self.train.replace(freeze=keep))

    # -- data -----------------------------------------------------------------------------------
    def words(self, split: speech.Split) -> Tensor:
        """The log-mel features of ``split``'s recordings, built (on rank 0) when missing."""
        if split not in self._features:
            c = self.data
            n = c.n_words if split == "train" else c.n_words_heldout
            folder = Path(c.words_dir) / f"{split}-{n}-seed{c.seed}"
            counts = (n, 0) if split == "train" else (0, n)
            if self.dist.is_main:
                speech.build_speech(folder, *counts, seed=c.seed, workers=c.workers,
                                    grammar="fusion-words", make=_words, quiet_when_cached=True,
                                    log=lambda m: print(m, flush=True))
            distributed.all_gather(None, self.dist)  # the others wait for rank 0's build
            _, feats = cached_features(folder, split, c.n_frames * HOP_LENGTH, c.n_mels)
            self._features[split] = feats
        return self._features[split]

    def prepare(self) -> None:
        self.words("train")

    def batch(self, examples: list[Example], questions: list[str],
              split: speech.Split) -> Batch:
        """Examples -> the inputs of the task's modalities and the labels."""
        out: Batch = {"labels": torch.tensor([ANSWERS.index(e.answer) for e in examples])}
        used = [m for m in self.modalities if m not in self.absent]
        if "text" in used:
            out["input_ids"], out["attention_mask"] = question_ids(self.tokenizer, questions)
        if "image" in used:
            size, ic = self.data.image_size, self.image_config
            uint8 = np.stack([np.asarray(render(list(e.shapes), size)) for e in examples])
            rgb = torch.from_numpy(uint8).permute(0, 3, 1, 2).float() / 255.0
            out["pixel_values"] = normalize(rgb, ic.mean, ic.std)
        if "audio" in used:
            out["input_features"] = self.words(split)[[e.utterance for e in examples]].float()
        return out | aux_targets(examples) if self.data.aux_weight > 0 else out

    def train_batch(self, step: int, micro: int) -> Batch:
        return self.batch(*self.train_examples(step, micro), "train")

    def train_examples(self, step: int, micro: int) -> tuple[list[Example], list[str]]:
        """This rank's rows of a training batch: fresh examples and their questions, each in a
        drawn phrasing (a rank draws its rows alone)."""
        rng = random.Random(f"{self.name}/{self.train.seed}/{step}/{micro}")
        B, W, r = self.data.batch_size, self.dist.world, self.dist.rank
        rows = [random.Random(rng.random()) for _ in range(B)][r * B // W:(r + 1) * B // W]
        examples = [example(g, heldout=False, n_words=self.data.n_words) for g in rows]
        questions = [e.question(g.randrange(len(PHRASINGS[e.family])))
                     for e, g in zip(examples, rows, strict=True)]
        return examples, questions

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        if not self.data.aux_weight:
            return self.criterion(model(**_inputs(batch)), batch["labels"])
        logits, aux = model(**_inputs(batch), aux_logits=True)
        total = self.criterion(logits, batch["labels"])
        for name, out in aux.items():
            target = batch[f"aux_{name}"]
            if name == "colours":  # several colours may be right: one yes/no per colour
                rows = target[:, 0] >= 0  # colour-kind rows only
                extra = F.binary_cross_entropy_with_logits(out[rows], target[rows].float()) \
                    if rows.any() else out.sum() * 0.0
            else:
                extra = self.criterion(out, target)
            total = total + self.data.aux_weight * extra
        return total

    def count(self, batch: Batch) -> int:
        return len(batch["labels"])

    # -- evaluation -----------------------------------------------------------------------------
    def heldout(self, n: int) -> list[Example]:
        c = self.data
        return [example_at(i, "heldout", c.seed, c.n_words_heldout) for i in range(n)]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        """The first ``data.n_eval`` held-out examples (first phrasing): accuracy overall, per
        family and on colour-kind questions about a held-out pair."""
        from plait.training.tasks import to_device

        m = unwrap(model)
        n = self.data.n_eval if max_batches is None else min(self.data.n_eval, 256)
        held = self.heldout(n)
        logits, labels = [], []
        for k in range(0, n, 256):
            part = held[k:k + 256]
            batch = to_device(self.batch(part, [e.question() for e in part], "heldout"), device)
            logits.append(m(**_inputs(batch)).float().cpu())
            labels.append(batch["labels"].cpu())
        logit, label = torch.cat(logits), torch.cat(labels)
        ok = (logit.argmax(-1) == label).tolist()
        right: dict[str, list[bool]] = defaultdict(list)
        for e, good in zip(held, ok, strict=True):
            right[e.family].append(good)
            if e.about_heldout_pair:
                right["heldout_pair"].append(good)
        out = {"loss": float(self.criterion(logit, label)), "accuracy": sum(ok) / len(ok)}
        return out | {f"accuracy_{k}": sum(v) / len(v) for k, v in right.items()}

    def files(self) -> list[Path]:
        return [self.data_dir / "tokenizer.json", self.data_dir / "preprocessor_config.json"]


def _inputs(batch: Batch) -> Batch:
    return {k: v for k, v in batch.items() if k != "labels" and not k.startswith("aux_")}


def aux_heads(modalities: tuple[str, ...]) -> dict[str, int]:
    """The auxiliary heads a model of ``modalities`` can learn: the word said needs the audio;
    the count of the colour (kind) asked about, and the colours of the kind asked about, need
    the question and the picture."""
    heads = {"word": len(WORDS)} if "audio" in modalities else {}
    if "text" in modalities and "image" in modalities:
        heads |= {"count": len(NUMBER_WORDS), "colours": len(COLOURS)}
    return heads


def aux_targets(examples: list[Example]) -> dict[str, Tensor]:
    """Every auxiliary head's targets (-100 / -1 where a row has none)."""
    word, count, colours = [], [], []
    for e in examples:
        word.append(WORDS.index(e.word))
        count.append(-100 if e.asked_count is None else e.asked_count)
        on_kind = {s.colour for s in e.shapes if s.kind == e.slot}
        colours.append([float(c in on_kind) for c in COLOURS] if e.family == "colour-kind"
                       else [-1.0] * len(COLOURS))
    return {"aux_word": torch.tensor(word), "aux_count": torch.tensor(count),
            "aux_colours": torch.tensor(colours)}
