"""A vision–language model: an image encoder, a projector and a decoder LM that reads the image
as part of its prompt (LLaVA, Liu et al. 2023, arXiv:2304.08485; LLaVA-1.5's two-layer MLP
projector, arXiv:2310.03744; nanoVLM's pixel shuffle).

    V = f_img(image)[layer]                    (B, N, Cv)  patch states of one vision layer
    V' = shuffle_r(V)                          (B, N / r^2, r^2 Cv)  optional pixel shuffle
    H = W_2 act(W_1 V' + b_1) + b_2            (B, N / r^2, C)  the projector
    x_t = H_j  where ids_t = <image> (the j-th placeholder), else E[ids_t]
    logits = decoder(x)                        (B, T, V)

The prompt holds one ``image_token_id`` per image token (``tokens_per_image`` for each image),
as Hugging Face's LLaVA processor expands them; image rows replace those positions in order.
The decoder is plait's :class:`~plait.models.gpt.GPT` (GPT-2 or Llama layout), the image
encoder plait's :class:`~plait.models.vit.ViT` (CLIP's image tower is one) or, with
``vision.kind = "segmenter"``, a :class:`~plait.models.segment.Segmenter` whose features are each
patch's shares of the colours and kinds it sees (:meth:`Segmenter.features`): what is where,
colour and kind read apart, so a pair no training image showed is read like any other
(docs/vlm.md). With ``image_positions = "learned"``, H gains one learned row per image token.

With ``feature_groups`` (widths that split each patch's features, e.g. a segmenter's colour
shares and its kind shares), every group is shuffled and projected apart and becomes its own
run of tokens, one per cell: "what kind is here" and "what colour is here" are separate tokens
that share their cell's position row (plus a row per group), so a key that finds the square by
its kind holds no colour until the decoder's own attention mixes them.

``VLM`` implements the decoding protocol: ``generate(ids, mask, pixel_values=...)`` splices the
image in at prefill, then every step is the decoder's own, with its KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn as nn
from torch import Tensor

from plait.config import Config, require_choice
from plait.models.base import complete_tables
from plait.models.clip import tower_classes, tower_config
from plait.models.gpt import GPT, GPTConfig
from plait.models.segment import Segmenter, SegmenterConfig
from plait.models.vit import ViTConfig
from plait.nn.layers import ACTIVATIONS
from plait.registry import Registry

# the image tower's ``kind`` -> its model class; a ViT's table keeps no kind
TOWERS = Registry("VLM image tower", {
    "vit": "plait.models.vit:ViT",
    "segmenter": "plait.models.segment:Segmenter",
})


@dataclass(frozen=True)
class VLMConfig(Config):
    """The image tower's table (``ViTConfig`` keys, or ``kind = "segmenter"`` and
    ``SegmenterConfig`` keys), the decoder's (``GPTConfig`` keys), and how the two meet."""

    vision: dict[str, Any] = field(default_factory=dict)
    text: dict[str, Any] = field(default_factory=dict)
    image_token_id: int = 0  # the placeholder id in prompts (HF: image_token_index)
    feature_layer: int = -1  # whose states the projector reads (HF: vision_feature_layer)
    features: Literal["patches", "all"] = "patches"  # drop the class token? (HF: "default")
    pixel_shuffle: int = 1  # r: r x r neighbouring patches become one token r^2 times wider
    projector: Literal["mlp", "linear"] = "mlp"
    projector_act: str = "gelu"  # HF: projector_hidden_act
    projector_bias: bool = True  # HF: multimodal_projector_bias
    # "bidirectional": an image's tokens read each other both ways (PaliGemma's prefix, here
    # the image alone); "causal" as LLaVA, whose folders are causal
    image_attention: Literal["causal", "bidirectional"] = "causal"
    # "learned": a vector per image token (its place in the grid) added after the projector
    # (a segmenter's shares carry no position of their own; a ViT's states do)
    image_positions: Literal["none", "learned"] = "none"
    # widths that split each patch's features into groups, each its own run of image tokens
    # (its own projector): a segmenter's (1 + colours, kinds) keeps colour and kind apart;
    # () = one token per cell with everything
    feature_groups: tuple[int, ...] = ()
    # the prompt's layout (plait.inference.vlm.prompt_ids): false = LLaVA's "<s> <image>...
    # question", true = "<s> question <image>...": the image tokens come after the question and
    # read it, so each cell can answer "am I what is asked about?" before the answer is written
    question_first: bool = False

    def __post_init__(self) -> None:
        kind = self.tower
        object.__setattr__(self, "vision", ({"kind": kind} if kind != "vit" else {})
                           | self.vision_config.to_dict())
        complete_tables(self, (("text", GPTConfig),))
        t = self.text_config
        if not 0 <= self.image_token_id < t.vocab_size:
            raise ValueError(f"VLMConfig.image_token_id ({self.image_token_id}) must be a token"
                             f" id of the decoder's vocabulary [0, {t.vocab_size})")
        if self.projector_act not in ACTIVATIONS:
            raise ValueError(f"VLMConfig.projector_act {self.projector_act!r} is not one of"
                             f" {', '.join(ACTIVATIONS)}")
        require_choice(self, "image_attention", ("causal", "bidirectional"))
        require_choice(self, "image_positions", ("none", "learned"))
        if self.image_positions != "none" and self.has_cls:
            raise ValueError("image_positions needs features = 'patches' (the class token has"
                             " no place in the grid)")
        r = self.pixel_shuffle
        grid = self.image_grid
        if r < 1 or grid % r:
            raise ValueError(f"VLMConfig.pixel_shuffle ({r}) must divide the patch grid"
                             f" ({grid} x {grid})")
        if r > 1 and self.has_cls:
            raise ValueError("pixel_shuffle needs features = 'patches' (the class token has no"
                             " place in the grid)")
        groups = tuple(self.feature_groups)
        object.__setattr__(self, "feature_groups", groups)
        if groups and min(groups) < 1:  # their sum is the built tower's width (VLM checks)
            raise ValueError(f"VLMConfig.feature_groups {list(groups)} must be widths >= 1")
        if groups and self.has_cls:
            raise ValueError("feature_groups needs features = 'patches' (the class token has"
                             " no place in the grid)")

    @property
    def tower(self) -> str:
        return self.vision.get("kind", "vit")

    @property
    def vision_config(self) -> ViTConfig | SegmenterConfig:
        return tower_config(TOWERS, self.vision, "vit", "model.vision")

    @property
    def image_grid(self) -> int:
        """The side of the tower's patch grid."""
        v = self.vision_config
        return v.vit.grid if isinstance(v, SegmenterConfig) else v.grid

    @property
    def feature_width(self) -> int:
        """The width of one patch's features, before the pixel shuffle."""
        v = self.vision_config
        return Segmenter.n_features(v) if isinstance(v, SegmenterConfig) else v.n_embd

    @property
    def has_cls(self) -> bool:
        """Whether the image tokens include the tower's class token."""
        v = self.vision_config
        return self.features == "all" and isinstance(v, ViTConfig) and v.pooling == "cls"

    @property
    def text_config(self) -> GPTConfig:
        return GPTConfig.from_dict(self.text)

    @property
    def image_cells(self) -> int:
        """Grid cells after the pixel shuffle (plus the class token): one group's tokens."""
        return (self.image_grid // self.pixel_shuffle) ** 2 + self.has_cls

    @property
    def tokens_per_image(self) -> int:
        """Placeholders one image takes in a prompt: each feature group's cells in turn."""
        return self.image_cells * max(1, len(self.feature_groups))


def pixel_shuffle(x: Tensor, r: int) -> Tensor:
    """(B, g*g, C) patch states on a g x g grid -> (B, (g/r)^2, r*r*C): each r x r block of
    neighbours becomes one token (its rows concatenated in reading order)."""
    if r == 1:
        return x
    B, N, C = x.shape
    g = int(round(N**0.5))
    if g * g != N or g % r:
        raise ValueError(f"pixel shuffle by {r} needs a square grid divisible by {r}, got {N}"
                         " tokens")
    x = x.reshape(B, g // r, r, g // r, r, C)  # (B, gy, ry, gx, rx, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, (g // r) ** 2, r * r * C)


class Projector(nn.Module):
    """Image features -> decoder width: Linear, or Linear -> act -> Linear (LLaVA-1.5)."""

    def __init__(self, c: VLMConfig, in_dim: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim, bias=c.projector_bias)
        mlp = c.projector == "mlp"
        self.act = ACTIVATIONS[c.projector_act]() if mlp else nn.Identity()
        self.fc2 = nn.Linear(out_dim, out_dim, bias=c.projector_bias) if mlp else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VLM(nn.Module):
    """``model(input_ids, pixel_values, attention_mask=None) -> logits (B, T, V)``."""

    config_class = VLMConfig

    def __init__(self, config: VLMConfig):
        super().__init__()
        self.config = c = config
        t = c.text_config
        self.vision = tower_classes(TOWERS, c.tower, "model.vision")[1](c.vision_config)
        r2, groups = c.pixel_shuffle**2, c.feature_groups
        if groups and sum(groups) != c.feature_width:
            raise ValueError(f"VLMConfig.feature_groups {list(groups)} must add up to the"
                             f" image tower's feature width ({c.feature_width})")
        if groups:
            self.projectors = nn.ModuleList(Projector(c, w * r2, t.n_embd) for w in groups)
            self.group_emb = nn.Parameter(torch.randn(len(groups), 1, t.n_embd) * 0.02)
        else:
            self.projector = Projector(c, c.feature_width * r2, t.n_embd)
        self.image_pos = (nn.Parameter(torch.randn(c.image_cells, t.n_embd) * 0.02)
                          if c.image_positions == "learned" else None)  # (cells, C)
        self.decoder = GPT(t)

    def image_features(self, pixel_values: Tensor) -> Tensor:
        """(B_img, 3, H, W) -> projected image tokens (B_img, tokens_per_image, C)."""
        c = self.config
        x = self.vision.features(pixel_values, c.feature_layer)  # (B_img, T_img, Cv)
        if c.features == "patches" and getattr(self.vision, "cls", None) is not None:
            x = x[:, 1:]
        if not c.feature_groups:
            x = self.projector(pixel_shuffle(x, c.pixel_shuffle))
            return x if self.image_pos is None else x + self.image_pos
        parts = x.split(list(c.feature_groups), dim=-1)
        x = torch.stack([proj(pixel_shuffle(part, c.pixel_shuffle))
                         for proj, part in zip(self.projectors, parts, strict=True)], 1)
        x = x + self.group_emb + (0 if self.image_pos is None else self.image_pos)
        return x.flatten(1, 2)  # (B_img, groups * cells, C): group 0's cells, then group 1's

    def embed(self, input_ids: Tensor, pixel_values: Tensor | None) -> Tensor:
        """Token embeddings (B, T, C) with the image tokens written over the placeholders.

        ``pixel_values``: (B_img, 3, H, W), or (B, K, 3, H, W) for K images per prompt; the
        prompts must hold exactly ``tokens_per_image`` placeholders per image, in order.
        """
        c = self.config
        slots = input_ids == c.image_token_id  # (B, T)
        n_slots = int(slots.sum())
        if pixel_values is None:
            if n_slots:
                raise ValueError(f"the prompt holds {n_slots} image placeholder tokens but no"
                                 " image was given (pixel_values)")
            return self.decoder.embed(input_ids, None)
        if pixel_values.dim() == 5:  # (B, K, 3, H, W) -> (B * K, 3, H, W)
            pixel_values = pixel_values.flatten(0, 1)
        n_img = pixel_values.shape[0]
        if n_slots != n_img * c.tokens_per_image:
            raise ValueError(f"{n_img} image(s) need {n_img * c.tokens_per_image} placeholder"
                             f" tokens ({c.tokens_per_image} each), the prompt holds {n_slots}")
        x = self.decoder.embed(input_ids, None)  # (B, T, C)
        if n_img == 0:  # a batch of text-only rows
            return x
        feats = self.image_features(pixel_values).to(x.dtype)  # (B_img, N, C)
        return x.masked_scatter(slots[..., None], feats.reshape(-1, x.shape[-1]))

    def forward(self, input_ids: Tensor, pixel_values: Tensor | None = None,
                attention_mask: Tensor | None = None, last_only: bool = False) -> Tensor:
        """Next-token logits (B, T, V) for prompts that may hold images."""
        x = self.embed(input_ids, pixel_values)
        return self.decoder(None, attention_mask, last_only=last_only, inputs_embeds=x,
                            attend_within=self.image_groups(input_ids))

    def image_groups(self, input_ids: Tensor) -> Tensor | None:
        """(B, T) the image each placeholder belongs to (1, 2, ...; 0 for text), when an
        image's tokens attend both ways; None when everything is causal."""
        c = self.config
        if c.image_attention == "causal":
            return None
        slots = input_ids == c.image_token_id
        return torch.where(slots, (slots.cumsum(-1) - 1) // c.tokens_per_image + 1, 0)

    # -- the decoding protocol: the decoder's, with the image spliced in at prefill -------------
    @property
    def max_len(self) -> int:
        """The decoder's ``block_size``: the context the model was built for (rotary positions
        would run on past it, untrained), so a longer prompt is refused by name."""
        return self.decoder.config.block_size

    def setup_cache(self, batch: int, max_len: int) -> None:
        self.decoder.setup_cache(batch, max_len)

    def reorder_cache(self, index: Tensor) -> None:
        self.decoder.reorder_cache(index)

    def clear_cache(self) -> None:
        self.decoder.clear_cache()

    def prefill(self, input_ids: Tensor, attention_mask: Tensor | None = None, *,
                pixel_values: Tensor | None = None) -> Tensor:
        """Run the prompt (with its images) into the cache; next-token logits (B, V)."""
        x = self.embed(input_ids, pixel_values)
        return self.decoder.prefill(input_ids, attention_mask, inputs_embeds=x,
                                    attend_within=self.image_groups(input_ids))

    def step(self, input_ids: Tensor, attention_mask: Tensor | None, input_pos: int) -> Tensor:
        return self.decoder.step(input_ids, attention_mask, input_pos)

    def generate(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                 **kwargs) -> Tensor:
        """Prompt + new tokens, as :func:`plait.generation.generate`; ``pixel_values=`` gives
        the images (one row, or K, per prompt)."""
        from plait.generation import generate

        return generate(self, input_ids, attention_mask, **kwargs)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = ["VLM", "VLMConfig", "pixel_shuffle"]
