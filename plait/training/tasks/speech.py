"""Speech recognition on synthesised speech (``plait.data.speech``) with a small Whisper.

The data: espeak-ng utterances (numbers, timer commands, scene questions) built once into
``data.speech_dir`` (a folder per split and size, reused by later runs), and their log-mel
features over a short window (``data.n_samples``: 4 s = 400 frames; every utterance is
shorter) computed once and cached beside the audio as float16, so a training step only
indexes a tensor. Training utterances longer than the window are left out.

The model: ``arch = "whisper"`` (conv stem halving the frames, sinusoidal encoder positions,
pre-norm blocks; :mod:`plait.models.whisper`), its encoder sized to the window
(``n_audio_ctx = n_samples / 320``) and its vocabulary the transcripts' characters
(``<pad> <s> </s>``, space, digits, letters; with ``data.words`` also the grammar's words as
single tokens). ``tokenizer.json`` is saved with the model, so the folder alone transcribes.

A batch: features (B, n_mels, frames), with SpecAugment masks while training
(``[data.augment]``, :mod:`plait.audio.augment`); decoder inputs ``<s>`` + transcript;
labels transcript + ``</s>``, padding ignored, so the loss (cross-entropy with
``train.label_smoothing``) is on transcript tokens only.

The evaluation: greedy decoding of the held-out split, whose speakers are never in training
(held-out voice variants and the en-gb-scotland accent), scored by jiwer: WER, CER, the share
transcribed exactly, and WER per phrase kind; periodic evaluations use its first
``data.n_eval`` utterances, the final one all ``data.n_heldout``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from plait.audio import HOP_LENGTH, log_mel
from plait.audio.augment import SpecAugment, spec_augment
from plait.config import Config, ConfigError
from plait.data import speech as data
from plait.data.masking import hide_tokens, past_start
from plait.data.scenes import COLOURS, KINDS, PHRASINGS, article
from plait.io import atomic_write
from plait.models.whisper import cut_frames
from plait.text.base import pad_batch
from plait.text.char import CharTokenizer
from plait.training import distributed
from plait.training.config import TrainConfig
from plait.training.distributed import Dist, unwrap
from plait.training.losses import CTC, IGNORE_INDEX, CrossEntropy
from plait.training.tasks import Batch, Task

SPECIALS = ("<pad>", "<s>", "</s>")
STRIDE = 2 * HOP_LENGTH  # samples per encoder position: 10 ms frames, halved by the conv stem


@dataclass(frozen=True)
class SpeechData(Config):
    """``[data]`` of the speech task."""

    n_train: int = 6000  # training utterances (140 speakers)
    n_heldout: int = 500  # held-out utterances (60 unseen speakers), all decoded at the end
    n_eval: int = 200  # ... of which the periodic evaluations decode the first n_eval
    batch_size: int = 32  # global batch (split across ranks)
    n_samples: int = 64_000  # the model's window: 4 s at 16 kHz, 400 frames
    n_mels: int = 80
    words: bool = False  # the grammar's words as single tokens; else characters only
    # share of the decoder's input tokens (after the start token) replaced by padding while
    # training: a decoder that can continue the transcript from its own past learns the
    # grammar first and listens late (the loss sits at the grammar's entropy for hundreds of
    # steps); with holes in its past it has to read the audio from the start
    decoder_dropout: float = 0.0
    # weight of a CTC loss on the encoder's frames (through the decoder's tied output layer,
    # blank = <pad>) beside the decoder's cross-entropy, as in hybrid CTC/attention training
    # (Kim, Hori and Watanabe 2017, arXiv:1609.06773): the monotonic alignment teaches the
    # encoder to spell from the first steps, so the decoder has something to listen to
    ctc_weight: float = 0.0
    # a batch of recordings of about one length (drawn among the 4 x batch_size utterances
    # nearest in length to a random one), its features cut to the longest of them: the
    # encoder then reads ~1.6 s instead of the whole 4 s window, 2-3x fewer frames a step.
    # The model is told (model.variable_window) and is then given audio cut the same way
    cut_window: bool = False
    # beams of the held-out decoding (the end of training, plait eval); with ctc_weight above
    # 0 the transcript is picked among them by the CTC and decoder scores together
    eval_beams: int = 1
    augment: SpecAugment = field(default_factory=SpecAugment)
    speech_dir: str = "data/speech"  # built audio and feature caches, reused across runs
    workers: int = 2  # espeak-ng processes at once while building
    dir: str = ""  # tokenizer.json + preprocessor_config.json; "" = <train.out_dir>/data
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.n_train, self.n_heldout, self.n_eval, self.batch_size, self.n_mels,
               self.workers, self.eval_beams) <= 0:
            raise ValueError("data.n_train, n_heldout, n_eval, batch_size, n_mels, workers and"
                             " eval_beams must be > 0")
        if not 0.0 <= self.ctc_weight < 1.0:
            raise ValueError(f"data.ctc_weight must be in [0, 1), got {self.ctc_weight}")
        if not 0.0 <= self.decoder_dropout < 1.0:
            raise ValueError(f"data.decoder_dropout must be in [0, 1), got {self.decoder_dropout}")
        if self.n_samples <= 0 or self.n_samples % STRIDE:
            raise ValueError(f"data.n_samples must be a positive multiple of {STRIDE} (two"
                             f" 10 ms frames per encoder position), got {self.n_samples}")


def grammar_words() -> list[str]:
    """Every word of the transcripts that is not a number: the questions' phrasings with every
    colour and shape, and the timer command."""
    slots = " ".join((*COLOURS, *KINDS, "an"))
    text = " ".join(t.format(x=slots) for forms in PHRASINGS.values() for t in forms)
    text = data.transcript_of(text + " set a timer for 1 minute 2 minutes")
    return sorted({w for w in text.split() if len(w) > 1 and w.isalpha()})


def grammar_transcripts() -> list[str]:
    """Every question transcript (236), the longest timer command and a 4-digit number."""
    slots = {"count": [""], "colour": list(KINDS), "shape": list(COLOURS),
             "relation": [f"{c} {k}" for c in COLOURS for k in KINDS],
             "presence": [article(f"{c} {k}") for c in COLOURS for k in KINDS]}
    questions = {data.transcript_of(form.format(x=x)) for kind, forms in PHRASINGS.items()
                 for form in forms for x in slots[kind]}
    return [*sorted(questions), "set a timer for 99 minutes", "9999"]


def speech_tokenizer(words: bool = False) -> CharTokenizer:
    """``<pad> <s> </s>`` and the transcripts' characters (:data:`plait.data.speech.ALPHABET`);
    with ``words`` also each grammar word as one token (and with its leading space)."""
    return CharTokenizer(sorted(data.ALPHABET), SPECIALS,
                         grammar_words() if words else (), spaced=words)


def cached_features(folder: Path, split: data.Split, n_samples: int,
                    n_mels: int) -> tuple[data.SpeechSplit, Tensor]:
    """A built split and its log-mel features (N, n_mels, n_samples / 160) float16, computed
    once and kept beside the audio (named by window, bands and the split's sample count)."""
    part = data.SpeechSplit(folder, split)
    frames = n_samples // HOP_LENGTH
    path = folder / f"{split}-logmel{n_mels}x{frames}-{part.meta[split]['samples']}.npy"
    if path.is_file():
        cached = np.load(path, mmap_mode="r")
        if cached.shape == (len(part), n_mels, frames):
            return part, torch.from_numpy(np.array(cached))  # read into memory
    feats = np.empty((len(part), n_mels, frames), dtype=np.float16)
    for i in range(0, len(part), 256):
        rows = range(i, min(i + 256, len(part)))
        feats[i:rows.stop] = log_mel([part.audio(j) for j in rows], n_mels=n_mels,
                                     n_samples=n_samples).half().numpy()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, feats)

    atomic_write(path, write)
    return part, torch.from_numpy(feats)


class SpeechTask(Task):
    """Transcripts of synthesised speech, on a Whisper trained from scratch."""

    data_config = SpeechData
    units = {"loss": "nats/token", "wer": "fraction", "cer": "fraction", "exact": "fraction",
             **{f"wer_{k}": "fraction" for k in data.PHRASE_KINDS}}

    def __init__(self, data_cfg: SpeechData, train: TrainConfig, d: Dist):
        super().__init__(data_cfg, train, d)
        if data_cfg.batch_size % d.world:
            raise ValueError(f"data.batch_size {data_cfg.batch_size} must divide evenly over"
                             f" {d.world} ranks")
        self.tokenizer = speech_tokenizer(data_cfg.words)
        self.criterion = CrossEntropy(train.label_smoothing)
        self.ctc = CTC(blank=self.tokenizer.pad_token_id)
        if data_cfg.ctc_weight and d.world > 1:
            raise ValueError("data.ctc_weight reads the encoder's output beside the decoder's,"
                             " which DDP does not wrap: train it in one process")
        self._train: tuple[list[dict], Tensor, Tensor] | None = None  # built on first use
        self._by_length = torch.empty(0, dtype=torch.long)  # training rows by length, on use
        self._heldout: tuple[list[dict], Tensor] | None = None
        if d.is_main:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save(self.data_dir)
            write_feature_config(self.data_dir, data_cfg)

    # -- the model ------------------------------------------------------------------------------
    def model_config(self, config: Config) -> Config:
        if not hasattr(config, "n_audio_ctx"):
            raise ConfigError("task 'speech' needs a speech encoder-decoder: model.arch ="
                              " 'whisper'")
        t, need = self.tokenizer, self.longest_target() + 1
        if config.block_size < need:
            raise ConfigError(f"model.block_size {config.block_size} is too short: the longest"
                              f" transcript needs {need} decoder positions")
        return config.replace(vocab_size=t.vocab_size, pad_token_id=t.pad_token_id,
                              eos_token_id=t.eos_token_id, decoder_start_token_id=t.bos_token_id,
                              n_mels=self.data.n_mels, n_audio_ctx=self.data.n_samples // STRIDE,
                              variable_window=self.data.cut_window,
                              ctc_weight=self.data.ctc_weight)

    def longest_target(self) -> int:
        """Tokens of the longest transcript the grammar writes, plus ``</s>``."""
        return max(len(self.tokenizer.encode(s)) for s in grammar_transcripts()) + 1

    # -- data -----------------------------------------------------------------------------------
    def split_dir(self, split: data.Split) -> Path:
        n = self.data.n_train if split == "train" else self.data.n_heldout
        return Path(self.data.speech_dir) / f"{split}-{n}-seed{self.data.seed}"

    def load_split(self, split: data.Split) -> tuple[list[dict], Tensor]:
        """(manifest rows, features) of a split, built (on rank 0) when missing."""
        folder, c = self.split_dir(split), self.data
        n = (c.n_train, 0) if split == "train" else (0, c.n_heldout)
        if self.dist.is_main:
            data.build_speech(folder, *n, seed=c.seed, workers=c.workers)
            part, feats = cached_features(folder, split, c.n_samples, c.n_mels)
        distributed.all_gather(None, self.dist)  # the others wait for rank 0's build
        if not self.dist.is_main:
            part, feats = cached_features(folder, split, c.n_samples, c.n_mels)
        return part.rows, feats

    def prepare(self) -> None:
        self.training_data()

    def training_data(self) -> tuple[list[dict], Tensor, Tensor]:
        """Training rows that fit the window, their features, and their spoken frames."""
        if self._train is None:
            rows, feats = self.load_split("train")
            fits = [i for i, r in enumerate(rows) if r["length"] <= self.data.n_samples]
            frames = torch.tensor([-(-rows[i]["length"] // HOP_LENGTH) for i in fits])
            self._train = [rows[i] for i in fits], feats[fits], frames
            self._by_length = torch.argsort(frames, stable=True)
        return self._train

    def pick(self, g: torch.Generator) -> Tensor:
        """The batch's utterances: any, or with ``data.cut_window`` B of the 4B nearest in
        length to a random one."""
        rows, _, _ = self.training_data()
        B = self.data.batch_size
        if not self.data.cut_window or len(rows) <= 4 * B:
            return torch.randint(len(rows), (B,), generator=g)
        start = int(torch.randint(len(rows) - 4 * B + 1, (1,), generator=g))
        near = self._by_length[start:start + 4 * B]
        return near[torch.randperm(4 * B, generator=g)[:B]]

    def batch(self, transcripts: list[str], features: Tensor) -> Batch:
        """Features (B, n_mels, frames) as float32, decoder inputs (``<s>`` + transcript) and
        labels (transcript + ``</s>``, padding -100)."""
        t = self.tokenizer
        ids = [t.encode(s) for s in transcripts]
        dec, _ = pad_batch([[t.bos_token_id, *r] for r in ids], t.pad_token_id)
        labels, mask = pad_batch([[*r, t.eos_token_id] for r in ids], IGNORE_INDEX)
        return {"input_features": features.float(), "decoder_input_ids": dec,
                "labels": labels.masked_fill(mask == 0, IGNORE_INDEX)}

    def train_batch(self, step: int, micro: int) -> Batch:
        rows, feats, frames = self.training_data()
        B, W, r = self.data.batch_size, self.dist.world, self.dist.rank
        # ints only: a str in the tuple would make the hash differ from process to process
        g = torch.Generator().manual_seed(hash((self.data.seed, self.train.seed, step, micro))
                                          % 2**63)
        pick = self.pick(g)[r * B // W:(r + 1) * B // W]
        masked = spec_augment(self.cut(feats[pick], frames[pick]), frames[pick],
                              self.data.augment, g)
        batch = self.batch([rows[i]["transcript"] for i in pick.tolist()], masked)
        if self.data.decoder_dropout > 0:
            dec = batch["decoder_input_ids"]
            batch["decoder_input_ids"] = hide_tokens(dec, self.data.decoder_dropout,
                                                     self.tokenizer.pad_token_id,
                                                     past_start(dec), g)
        return batch

    def cut(self, feats: Tensor, frames: Tensor) -> Tensor:
        """With ``data.cut_window``, ``feats`` cut to the longest of ``frames`` (see
        :func:`cut_frames`); otherwise unchanged."""
        if not self.data.cut_window:
            return feats
        return feats[..., :cut_frames(int(frames.max()), feats.shape[-1])]

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """Cross-entropy of the transcript tokens, and with ``data.ctc_weight`` w,
        (1 - w) of it + w x the CTC loss of the encoder's frames."""
        w = self.data.ctc_weight
        if not w:
            logits = model(batch["input_features"], batch["decoder_input_ids"])  # (B, T, V)
            return self.criterion(logits, batch["labels"])
        # the encoder's output is needed beside the logits, so the model's two halves are
        # called: one process only (refused with DDP in __init__), uncompiled
        inner = unwrap(model)
        memory = inner.encode(batch["input_features"])  # (B, S, C)
        logits = inner.decode(batch["decoder_input_ids"], memory)  # (B, T, V)
        targets = batch["labels"].masked_fill(batch["labels"] == self.tokenizer.eos_token_id,
                                              IGNORE_INDEX)  # the transcript without </s>
        return ((1 - w) * self.criterion(logits, batch["labels"])
                + w * self.ctc(inner.lm_head(memory), targets))

    def count(self, batch: Batch) -> int:
        return int((batch["labels"] != IGNORE_INDEX).sum())

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        """Teacher-forced loss and greedy transcripts of held-out speakers' utterances, scored
        by WER, CER, exact share and WER per kind."""
        from plait.evaluation.speech import score
        from plait.inference.speech import Transcriber

        if self._heldout is None:
            self._heldout = self.load_split("heldout")
        rows, feats = self._heldout
        n = len(rows) if max_batches is None else min(self.data.n_eval, len(rows))
        frames = torch.tensor([-(-r["length"] // HOP_LENGTH) for r in rows[:n]])
        refs = [r["transcript"] for r in rows[:n]]
        total, count = 0.0, 0
        for i in range(0, n, 100):
            chunk = refs[i:i + 100]
            batch = {k: v.to(device) for k, v in self.batch(
                chunk, self.cut(feats[i:i + len(chunk)], frames[i:i + len(chunk)])).items()}
            k = self.count(batch)
            logits = model(batch["input_features"], batch["decoder_input_ids"])
            total += float(self.criterion(logits, batch["labels"])) * k
            count += k
        hyps = Transcriber(unwrap(model), self.tokenizer).decode_all(
            feats[:n].float(), frames.tolist(), num_beams=self.data.eval_beams)
        return {"loss": total / max(count, 1),
                **score(refs, hyps, [r["kind"] for r in rows[:n]])}

    def files(self) -> list[Path]:
        return [self.data_dir / "tokenizer.json", self.data_dir / "preprocessor_config.json"]


def write_feature_config(folder: Path, c: SpeechData) -> None:
    """``preprocessor_config.json`` as transformers' WhisperFeatureExtractor writes it, with
    this model's window, so the folder tells any reader how its features were made."""
    import json

    from plait.io import atomic_write_text

    raw = {"feature_extractor_type": "WhisperFeatureExtractor", "feature_size": c.n_mels,
           "sampling_rate": 16_000, "hop_length": HOP_LENGTH, "n_fft": 400,
           "chunk_length": c.n_samples / 16_000, "n_samples": c.n_samples,
           "nb_max_frames": c.n_samples // HOP_LENGTH, "padding_value": 0.0,
           "return_attention_mask": False}
    atomic_write_text(folder / "preprocessor_config.json", json.dumps(raw, indent=2) + "\n")
