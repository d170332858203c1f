"""Sentence embeddings from a sentence-transformers folder (Reimers & Gurevych 2019,
arXiv:1908.10084): encoder -> pooling over the real tokens -> optional L2 normalisation.

The folder's ``modules.json`` lists the pipeline. plait runs the common one: a Transformer
(here a BERT loaded by :func:`plait.hf.load`), ``Pooling`` (``1_Pooling/config.json``: cls,
max, mean, mean_sqrt_len_tokens, lasttoken, concatenated in that order when several are on),
and ``Normalize``. Texts are cut to ``max_seq_length`` (``sentence_bert_config.json``, capped by
the model's positions) tokens, specials included, as sentence-transformers does. A folder
without ``modules.json`` (a plain BERT) gets mean pooling and no normalisation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from plait.nn.ragged import by_length
from plait.text.base import pad_batch

MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "lasttoken")  # sentence-transformers order
LEGACY = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
          "pooling_mode_mean_tokens": "mean",
          "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
          "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
KNOWN_MODULES = ("Transformer", "Pooling", "Normalize")


def _json(path: Path) -> dict[str, Any] | list[Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None


def pooling_modes(cfg: dict[str, Any], where: Path) -> list[str]:
    """The pooling modes a ``1_Pooling/config.json`` switches on (new or legacy keys)."""
    if "pooling_mode" in cfg:
        m = cfg["pooling_mode"]
        modes = [m] if isinstance(m, str) else list(m)
    else:
        modes = [mode for key, mode in LEGACY.items() if cfg.get(key)]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"{where}: unsupported pooling mode {bad or modes} (plait supports"
                         f" {', '.join(MODES)})")
    return sorted(modes, key=MODES.index)


def pool(hidden: Tensor, mask: Tensor, modes: list[str]) -> Tensor:
    """(B, T, C) token states and (B, T) 0/1 mask -> (B, len(modes) * C)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    count = m.sum(1).clamp(min=1e-9)  # (B, 1)
    out = []
    for mode in modes:
        if mode == "cls":  # first real token (right padding: position 0)
            out.append(hidden[torch.arange(len(hidden)), mask.int().argmax(1)])
        elif mode == "max":
            out.append(hidden.masked_fill(m == 0, float("-inf")).max(1).values)
        elif mode == "mean":
            out.append((hidden * m).sum(1) / count)
        elif mode == "mean_sqrt_len_tokens":
            out.append((hidden * m).sum(1) / count.sqrt())
        else:  # lasttoken
            out.append(hidden[torch.arange(len(hidden)), mask.long().sum(1).clamp(min=1) - 1])
    return torch.cat(out, dim=-1)


class SentenceEncoder:
    """``SentenceEncoder.from_folder(dir).encode(texts) -> (N, D)`` float32, in input order."""

    def __init__(self, model: Any, tokenizer: Any, modes: list[str] | None = None,
                 normalize: bool = False, max_length: int | None = None, lower: bool = False):
        from plait.models.bert import Bert

        if not isinstance(model, Bert):
            raise ValueError(f"sentence embeddings need a BERT encoder, got"
                             f" {type(model).__name__}")
        self.model, self.tokenizer = model, tokenizer
        self.modes, self.normalize, self.lower = modes or ["mean"], normalize, lower
        limit = model.config.block_size
        self.max_length = min(max_length or limit, limit)

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | torch.device = "cpu",
                    quantize: str | None = None) -> SentenceEncoder:
        """A sentence-transformers folder, or a plain Hugging Face / plait BERT folder;
        ``quantize``: "int8" or "int4" weights (:func:`plait.load`)."""
        from plait.loading import load
        from plait.text import load_tokenizer

        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        modes, normalize, encoder_dir = ["mean"], False, folder
        if (folder / "modules.json").is_file():
            modes, normalize, encoder_dir = _read_modules(folder)
        st_cfg: dict[str, Any] = {}
        if (encoder_dir / "sentence_bert_config.json").is_file():
            st_cfg = _json(encoder_dir / "sentence_bert_config.json")
        model = load(encoder_dir, device=device, quantize=quantize)  # Hugging Face or plait
        try:
            return cls(model, load_tokenizer(encoder_dir), modes, normalize,
                       st_cfg.get("max_seq_length"), bool(st_cfg.get("do_lower_case", False)))
        except ValueError as e:
            raise ValueError(f"{encoder_dir}: {e}") from None

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 32) -> Tensor:
        """(N, D) embeddings of ``texts``, in their order. The texts are batched longest first,
        so each batch pads to lengths close to its own (as sentence-transformers does): the
        same vectors as any other batching, with far less padding on texts of mixed length. A
        batch's rows then run in groups of similar length (:func:`plait.nn.ragged.by_length`)."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        device = next(self.model.parameters()).device
        rows = [self.tokenizer.encode(t.lower() if self.lower else t, max_length=self.max_length)
                for t in texts]
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        dim = len(self.modes) * self.model.config.n_embd
        out = torch.zeros(len(rows), dim)
        for i in range(0, len(order), batch_size):
            picked = order[i:i + batch_size]
            ids, mask = pad_batch([rows[j] for j in picked], self.tokenizer.pad_token_id)
            ids, mask = ids.to(device), mask.to(device)
            hidden = by_length(lambda x, m: self.model(x, attention_mask=m), ids, mask)
            emb = pool(hidden, mask, self.modes)
            out[picked] = (F.normalize(emb, dim=-1) if self.normalize else emb).float().cpu()
        return out


def _read_modules(folder: Path) -> tuple[list[str], bool, Path]:
    """(pooling modes, normalize?, the Transformer's folder) from ``modules.json``."""
    modes, normalize, encoder_dir = ["mean"], False, folder
    modules = _json(folder / "modules.json")
    for mod in modules:
        kind = str(mod.get("type", "")).rsplit(".", 1)[-1]
        if kind not in KNOWN_MODULES:
            raise ValueError(f"{folder / 'modules.json'}: unsupported module"
                             f" {mod.get('type')!r} (plait runs {', '.join(KNOWN_MODULES)})")
        if kind == "Transformer":
            encoder_dir = folder / mod.get("path", "")  # older folders: 0_Transformer/
        if kind == "Pooling":
            cfg_path = folder / mod.get("path", "") / "config.json"
            modes = pooling_modes(_json(cfg_path), cfg_path)
        if kind == "Normalize":
            normalize = True
    return modes, normalize, encoder_dir
