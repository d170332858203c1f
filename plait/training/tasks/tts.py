"""Speech synthesis: the speech grammar's phrases in one espeak-ng voice (:mod:`plait.data.tts`)
learned by a non-autoregressive TTS (``arch = "tts"``, :mod:`plait.models.tts`).

The data: utterances built once into ``data.speech_dir`` (cached, as the speech task's), their
log-mel features computed once per utterance over its own length (rounded up to whole frame
groups). A batch: the normalised texts' characters (B, N) and the features in frame groups
(B, G, R * 80), both padded and masked. The loss:

    loss = ||y - A^T mu||^2 / 2      (the alignment's Gaussian prior, per dimension)
         + |y - y_hat|               (the decoder's frames, L1)
         + (log(1 + d) - log_d_hat)^2  (durations from the alignment, per character)

The evaluation: the losses on held-out phrases, and (with ``data.asr``, a speech recognition
folder of ``configs/speech.toml``) the recogniser's word error rate on the held-out phrases
the model says, vocoded by Griffin-Lim: ``wer``. Beside it, at the end, the same recogniser on
espeak-ng's own recordings (``wer_espeak``) and on those recordings' features vocoded the same
way (``wer_espeak_vocoded``): what a perfect imitation would score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

from plait.audio import HOP_LENGTH, log_mel
from plait.config import Config, ConfigError
from plait.data import tts as data
from plait.data.speech import SpeechSplit
from plait.inference.tts import Speaker, encode_texts
from plait.models.tts import ALPHABET
from plait.training import distributed
from plait.training.config import TrainConfig
from plait.training.distributed import Dist, unwrap
from plait.training.tasks import Batch, Task

REDUCTION = 2  # frames per decoder position: the features are cut and grouped for it


@dataclass(frozen=True)
class TTSData(Config):
    """``[data]`` of the speech synthesis task."""

    n_train: int = 4000
    n_heldout: int = 300  # held-out phrases: all said and transcribed at the end
    n_eval: int = 50  # ... the first n_eval in the periodic evaluations
    batch_size: int = 16
    speech_dir: str = "data/tts"
    asr: str = "runs/speech"  # the recogniser that judges (skipped when the folder is absent)
    n_iter: int = 32  # Griffin-Lim iterations
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.n_train, self.n_heldout, self.n_eval, self.batch_size, self.n_iter) <= 0:
            raise ValueError("data.n_train, n_heldout, n_eval, batch_size and n_iter must be"
                             " > 0")


class TTSTask(Task):
    """Texts into log-mel features that a recogniser understands."""

    data_config = TTSData
    units = {"loss": "sum of the three", "l1": "per feature", "wer": "fraction"}

    def __init__(self, data_cfg: TTSData, train: TrainConfig, d: Dist):
        super().__init__(data_cfg, train, d)
        self.folder = Path(data_cfg.speech_dir) / (
            f"seed{data_cfg.seed}_{data_cfg.n_train}_{data_cfg.n_heldout}")
        self._cache: dict[str, tuple[list[str], list[Tensor], list[str]]] = {}

    def model_config(self, config: Config) -> Config:
        if not hasattr(config, "reduction"):
            raise ConfigError("task 'tts' needs model.arch = 'tts'")
        if config.reduction != REDUCTION:
            raise ConfigError(f"task 'tts' groups frames {REDUCTION} at a time: model.reduction"
                              f" must be {REDUCTION}, got {config.reduction}")
        return config

    def prepare(self) -> None:
        self.split("train")

    def split(self, name: str) -> tuple[list[str], list[Tensor], list[str]]:
        """(texts, features (n_mels, frames) each, transcripts) of a split, built once."""
        if name not in self._cache:
            if self.dist.is_main:
                data.build_tts(self.folder, self.data.n_train, self.data.n_heldout,
                               self.data.seed, log=lambda m: None)
            distributed.all_gather(None, self.dist)  # the others wait for rank 0's build
            part = SpeechSplit(self.folder, name)
            group = HOP_LENGTH * REDUCTION  # features in whole groups of frames
            feats = []
            for i in range(len(part)):
                audio = part.audio(i)
                n = max(-(-len(audio) // group), 2) * group
                feats.append(log_mel(audio, n_samples=n)[0].half())
            self._cache[name] = ([r["text"] for r in part.rows], feats,
                                 [r["transcript"] for r in part.rows])
        return self._cache[name]

    def batch(self, texts: list[str], feats: list[Tensor]) -> Batch:
        chars, char_mask = encode_texts(texts, ALPHABET)
        groups = [f.float().T.reshape(-1, REDUCTION * f.shape[0]) for f in feats]  # (G, R*M)
        G = max(g.shape[0] for g in groups)
        out = torch.zeros(len(groups), G, groups[0].shape[1])
        mask = torch.zeros(len(groups), G, dtype=torch.long)
        for i, g in enumerate(groups):
            out[i, :len(g)], mask[i, :len(g)] = g, 1
        return {"chars": chars, "char_mask": char_mask, "groups": out, "group_mask": mask}

    def train_batch(self, step: int, micro: int) -> Batch:
        texts, feats, _ = self.split("train")
        B, W, r = self.data.batch_size, self.dist.world, self.dist.rank
        g = torch.Generator().manual_seed(hash((self.data.seed + self.train.seed, step,
                                                micro)) % 2**63)
        rows = torch.randint(len(texts), (B,), generator=g)[r * B // W:(r + 1) * B // W]
        return self.batch([texts[i] for i in rows], [feats[i] for i in rows])

    def losses(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        y_hat, aligned, d, log_d = model(batch["chars"], batch["char_mask"], batch["groups"],
                                         batch["group_mask"])
        y, gm = batch["groups"], batch["group_mask"][..., None].float()
        n = gm.sum() * y.shape[-1]
        cm = batch["char_mask"].float()
        return {"prior": 0.5 * ((y - aligned).square() * gm).sum() / n,
                "l1": ((y - y_hat).abs() * gm).sum() / n,
                "duration": ((torch.log1p(d) - log_d).square() * cm).sum() / cm.sum()}

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return sum(self.losses(model, batch).values())

    def count(self, batch: Batch) -> int:
        return int(batch["group_mask"].sum())

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        full = max_batches is None
        texts, feats, transcripts = self.split("heldout")
        n = len(texts) if full else min(self.data.n_eval, len(texts))
        totals: dict[str, float] = {}
        with torch.no_grad():
            for i in range(0, n, 32):
                batch = {k: v.to(device) for k, v in
                         self.batch(texts[i:min(i + 32, n)], feats[i:min(i + 32, n)]).items()}
                for k, v in self.losses(model, batch).items():
                    totals[k] = totals.get(k, 0.0) + float(v) * len(batch["chars"])
        metrics = {k: v / n for k, v in totals.items()}
        metrics = {"loss": sum(metrics.values()), **metrics}
        if Path(self.data.asr).is_dir():
            metrics.update(self.judge(unwrap(model), texts[:n], transcripts[:n], full))
        return metrics

    def judge(self, model: nn.Module, texts: list[str], transcripts: list[str],
              full: bool) -> dict[str, float]:
        """The recogniser's WER on what the model says (and, ``full``, on espeak-ng)."""
        from plait.audio.vocoder import features_to_audio
        from plait.evaluation.speech import wer
        from plait.inference.speech import Transcriber

        asr = Transcriber.from_folder(self.data.asr)
        speaker = Speaker(model, self.data.n_iter)
        said = [a for i in range(0, len(texts), 32) for a in speaker.speak(texts[i:i + 32])]
        out = {"wer": wer(transcripts, asr.transcribe(said))}
        if full:
            part = SpeechSplit(self.folder, "heldout")
            real = [part.audio(i) for i in range(len(texts))]
            vocoded = [features_to_audio(log_mel(a, n_samples=-(-len(a) // 160) * 160)[0],
                                         self.data.n_iter) for a in real]
            out["wer_espeak"] = wer(transcripts, asr.transcribe(real))
            out["wer_espeak_vocoded"] = wer(transcripts, asr.transcribe(vocoded))
        return out

