"""CLIP: an image tower and a text tower trained to agree (Radford et al. 2021, arXiv:2103.00020).

    I_e = W_i f_img(image),  T_e = W_t f_txt(text)          (Fig. 3, linear projections, no bias)
    logits = exp(t) * norm(I_e) @ norm(T_e)^T              (t: the learned log temperature)

The towers are modules chosen by name in :data:`VISION_TOWERS` / :data:`TEXT_TOWERS`, so an image
tower can be a ViT or a ResNet and a text tower CLIP's causal Transformer or a BERT. A tower
needs one method: ``pooled(x, ...)`` -> (B, width) (a tower without it is called directly).

``model(pixel_values, input_ids, attention_mask)`` returns what it computes: the two projected
embeddings and the log-temperature (:class:`ClipFeatures`). The contrastive loss
(:class:`plait.training.losses.ClipLoss`) or ``model.logits`` (Hugging Face's
``logits_per_image`` / ``logits_per_text``) turns them into scores.

In a TOML recipe a tower is a table naming its ``kind`` beside that tower's own config keys::

    [model.vision]                    [model.text]
    kind = "vit"                      kind = "transformer"
    image_size = 32                   vocab_size = 1000
    patch_size = 8                    n_layer = 2
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from plait.config import Config, ConfigError
from plait.models.base import TransformerConfig, build_stack
from plait.nn import AttnInputs, Learned, make_attn_mask
from plait.registry import Registry


@dataclass(frozen=True)
class TextConfig(TransformerConfig):
    """CLIP's text Transformer: causal, learned positions, pooled at one token."""

    vocab_size: int = 49408
    n_layer: int = 12
    n_head: int = 8
    n_embd: int = 512
    n_inner: int | None = None  # MLP width; default 4 * n_embd
    block_size: int = 77
    mlp: str = "quick_gelu"
    norm_eps: float = 1e-5
    dropout: float = 0.0
    # which token's state represents the text: "argmax" = the highest id (OpenAI's EOT is the
    # largest id, and transformers keeps this rule when eos_token_id == 2); "eos" = the first
    # eos_token_id; "last" = the last real token by attention_mask
    pool: Literal["argmax", "eos", "last"] = "argmax"
    eos_token_id: int | None = None

    def __post_init__(self) -> None:
        self.check_transformer(("vocab_size", "block_size"))
        if self.pool == "eos" and self.eos_token_id is None:
            raise ValueError("TextConfig.pool='eos' needs eos_token_id")


class TextTransformer(nn.Module):
    """``model(input_ids, attention_mask=None) -> hidden (B, T, C)`` after the final LayerNorm."""

    config_class = TextConfig

    def __init__(self, config: TextConfig):
        super().__init__()
        self.config = c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.pos = Learned(c.block_size, c.n_embd)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = build_stack(c)
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                rows: Tensor | int | None = None) -> Tensor:
        """Hidden states (B, T, C); with ``rows`` (B,) only those positions', (B, 1, C)."""
        T = input_ids.shape[1]
        if self.config.block_size < T:
            raise ValueError(f"text of {T} tokens exceeds block_size {self.config.block_size};"
                             " truncate it")
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        pos = torch.arange(T, device=input_ids.device)[None]  # (1, T): CLIP pads on the right
        x = self.drop(self.wte(input_ids) + self.pos.embed(pos))  # (B, T, C)
        mask, is_causal = make_attn_mask(T, T, causal=True, key_padding=attention_mask)
        return self.encoder(x, AttnInputs(mask, is_causal), rows=rows)

    def pool_index(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """(B,) position of the token whose state stands for each text."""
        c = self.config
        if c.pool == "argmax":
            return input_ids.argmax(dim=-1)
        if c.pool == "eos":  # first eos (pad may equal eos); a row without one gives 0, as in HF
            return (input_ids == c.eos_token_id).int().argmax(dim=-1)
        if attention_mask is None:
            return torch.full_like(input_ids[:, 0], input_ids.shape[1] - 1)
        return attention_mask.long().sum(-1).clamp(min=1) - 1

    def pooled(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """The pooled token's state (B, C); the last layer runs for that token alone."""
        return self(input_ids, attention_mask, self.pool_index(input_ids, attention_mask))[:, 0]


# a tower's ``kind`` -> its model class (whose ``config_class`` reads the rest of the table)
VISION_TOWERS = Registry("vision tower", {
    "vit": "plait.models.vit:ViT",
    "resnet": "plait.models.resnet:ResNet",
})
TEXT_TOWERS = Registry("text tower", {
    "transformer": "plait.models.clip:TextTransformer",
    "bert": "plait.models.bert:Bert",
})


def tower_classes(registry: Registry, kind: str,
                  where: str) -> tuple[type[Config], type[nn.Module]]:
    try:
        model_cls = registry.get(kind)
    except ValueError:
        raise ValueError(f"unknown {where}.kind {kind!r} (known: {', '.join(registry)})") from None
    return model_cls.config_class, model_cls


def tower_config(registry: Registry, table: dict[str, Any],
                 default_kind: str, where: str) -> Config:
    """A tower's typed config from its table (``kind`` + that tower's keys)."""
    table = dict(table)
    kind = table.pop("kind", default_kind)
    config_cls, _ = tower_classes(registry, kind, where)
    try:
        return config_cls.from_dict(table, where=where)
    except ConfigError:
        raise
    except ValueError as e:  # __post_init__ validation
        raise ValueError(f"{where}: {e}") from None


def width(config: Config) -> int:
    """A tower's output width (n_embd for Transformers, hidden_size for a ResNet)."""
    return getattr(config, "n_embd", None) or config.hidden_size  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CLIPConfig(Config):
    """Two tower tables (each with a ``kind``), the shared embedding width, the temperature."""

    vision: dict[str, Any] = field(default_factory=lambda: {"kind": "vit"})
    text: dict[str, Any] = field(default_factory=lambda: {"kind": "transformer"})
    embed_dim: int = 512  # HF: projection_dim
    logit_scale_init: float = math.log(1 / 0.07)  # HF: logit_scale_init_value (2.6592)

    def __post_init__(self) -> None:
        if self.embed_dim <= 0:
            raise ValueError(f"CLIPConfig.embed_dim must be positive, got {self.embed_dim}")
        # validate both tables now and keep them complete and typed (defaults filled in,
        # command-line strings coerced), so config.json records exactly what was built
        for name, cfg in (("vision", self.vision_config), ("text", self.text_config)):
            kind = getattr(self, f"{name}_kind")
            object.__setattr__(self, name, {"kind": kind, **cfg.to_dict()})

    @property
    def vision_kind(self) -> str:
        return self.vision.get("kind", "vit")

    @property
    def text_kind(self) -> str:
        return self.text.get("kind", "transformer")

    @property
    def vision_config(self) -> Config:
        return tower_config(VISION_TOWERS, self.vision, "vit", "vision")

    @property
    def text_config(self) -> Config:
        return tower_config(TEXT_TOWERS, self.text, "transformer", "text")


class ClipFeatures(NamedTuple):
    """What ``CLIP.forward`` computes (open_clip returns the same three)."""

    image_embeds: Tensor  # (B_img, D) projected, unnormalised
    text_embeds: Tensor  # (B_txt, D) projected, unnormalised
    logit_scale: Tensor  # () the learned log-temperature t; scores are exp(t) * cosines


class CLIP(nn.Module):
    """``model(pixels, ids, mask)`` -> :class:`ClipFeatures`; ``logits(...)`` -> scores."""

    config_class = CLIPConfig

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = c = config
        vcfg, tcfg = c.vision_config, c.text_config
        self.vision = tower_classes(VISION_TOWERS, c.vision_kind, "vision")[1](vcfg)
        self.text = tower_classes(TEXT_TOWERS, c.text_kind, "text")[1](tcfg)
        self.visual_proj = nn.Linear(width(vcfg), c.embed_dim, bias=False)
        self.text_proj = nn.Linear(width(tcfg), c.embed_dim, bias=False)
        nn.init.normal_(self.visual_proj.weight, std=width(vcfg) ** -0.5)
        nn.init.normal_(self.text_proj.weight, std=width(tcfg) ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(float(c.logit_scale_init)))

    def encode_image(self, pixel_values: Tensor) -> Tensor:
        """Projected, unnormalised image embeddings (B, D) (HF ``get_image_features``)."""
        tower = self.vision
        feats = tower.pooled(pixel_values) if hasattr(tower, "pooled") else tower(pixel_values)
        return self.visual_proj(feats)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Projected, unnormalised text embeddings (B, D) (HF ``get_text_features``)."""
        return self.text_proj(self.text.pooled(input_ids, attention_mask))

    def forward(self, pixel_values: Tensor, input_ids: Tensor,
                attention_mask: Tensor | None = None) -> ClipFeatures:
        """Both towers' embeddings and the log-temperature: what contrastive training needs,
        through one call (so that DDP sees every parameter's work)."""
        return ClipFeatures(self.encode_image(pixel_values),
                            self.encode_text(input_ids, attention_mask), self.logit_scale)

    def logits(self, pixel_values: Tensor, input_ids: Tensor,
               attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(logits_per_image (B_img, B_txt), logits_per_text (B_txt, B_img)): scaled cosines,
        as Hugging Face's ``CLIPModel`` returns them."""
        img, txt, _ = self(pixel_values, input_ids, attention_mask)
        img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
        logits_per_text = self.logit_scale.exp() * txt @ img.t()
        return logits_per_text.t(), logits_per_text
