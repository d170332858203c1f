"""ViT (``model_type: vit``) <-> :class:`plait.models.vit.ViT`.

``ViTModel`` loads with head ``"tanh"`` (its pooler), ``ViTForImageClassification`` with
``"classify"``. Separate query/key/value projections are fused into plait's ``qkv``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from plait.hf.family import (
    Family,
    Field,
    encoder_fields,
    fields_from_hf,
    fields_to_hf,
    label_maps,
    require,
    require_export,
    with_prefix,
    without_prefix,
)
from plait.hf.keymap import Rule
from plait.models.vit import ViT, ViTConfig

HEADS = {"ViTModel": "tanh", "ViTForImageClassification": "classify"}
ARCHS = {"tanh": "ViTModel", "none": "ViTModel", "classify": "ViTForImageClassification"}

PREFIX = "vit."
L = "vit.encoder.layer.{i}"
B = "encoder.blocks.{i}"
RULES = (
    Rule("vit.embeddings.cls_token", "cls"),
    Rule("vit.embeddings.position_embeddings", "pos"),
    Rule("vit.embeddings.patch_embeddings.projection.weight", "patch.weight"),
    Rule("vit.embeddings.patch_embeddings.projection.bias", "patch.bias"),
    Rule("vit.embeddings.mask_token", None),  # masked-image-modeling only
    Rule(tuple(f"{L}.attention.attention.{n}.weight" for n in ("query", "key", "value")),
         f"{B}.attn.qkv.weight", "cat"),
    Rule(tuple(f"{L}.attention.attention.{n}.bias" for n in ("query", "key", "value")),
         f"{B}.attn.qkv.bias", "cat"),
    Rule(f"{L}.attention.output.dense.weight", f"{B}.attn.proj.weight"),
    Rule(f"{L}.attention.output.dense.bias", f"{B}.attn.proj.bias"),
    Rule(f"{L}.layernorm_before.weight", f"{B}.norm_attn.weight"),
    Rule(f"{L}.layernorm_before.bias", f"{B}.norm_attn.bias"),
    Rule(f"{L}.intermediate.dense.weight", f"{B}.mlp.fc.weight"),
    Rule(f"{L}.intermediate.dense.bias", f"{B}.mlp.fc.bias"),
    Rule(f"{L}.output.dense.weight", f"{B}.mlp.proj.weight"),
    Rule(f"{L}.output.dense.bias", f"{B}.mlp.proj.bias"),
    Rule(f"{L}.layernorm_after.weight", f"{B}.norm_mlp.weight"),
    Rule(f"{L}.layernorm_after.bias", f"{B}.norm_mlp.bias"),
    Rule("vit.layernorm.weight", "encoder.norm.weight"),
    Rule("vit.layernorm.bias", "encoder.norm.bias"),
    Rule("vit.pooler.dense.weight", "head.0.weight"),
    Rule("vit.pooler.dense.bias", "head.0.bias"),
    Rule("classifier.weight", "head.weight"),
    Rule("classifier.bias", "head.bias"),
)




def _square(cfg: dict[str, Any], field: str, default: int, where: str) -> int:
    v = cfg.get(field, default)
    if isinstance(v, list | tuple):
        require(cfg, field, len(v) == 2 and v[0] == v[1], "plait supports square sizes", where)
        v = v[0]
    return int(v)


class ViTFamily(Family):
    name = "ViT"
    model_class = ViT
    FIELDS = (
        Field("num_channels", "num_channels", 3),
        Field("qkv_bias", "qkv_bias", True),
        *encoder_fields(768, 12, 3072, "gelu", 1e-12),
    )
    RULES = RULES

    def normalize(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        return with_prefix(state, PREFIX)

    def denormalize(self, state: dict[str, Tensor], hf_cfg: dict[str, Any]) -> dict[str, Tensor]:
        bare = hf_cfg["architectures"] == ["ViTModel"]
        return without_prefix(state, PREFIX) if bare else state

    def adjust(self, config: ViTConfig, state: dict[str, Tensor]) -> ViTConfig:
        """A ViTModel saved with ``add_pooling_layer=False`` has no pooler: no head then."""
        if config.head == "tanh" and "vit.pooler.dense.weight" not in state:
            return config.replace(head="none")
        return config

    def config_from_hf(self, cfg: dict[str, Any], where: str) -> ViTConfig:
        """ViTConfig from a ViT ``config.json``; unsupported values raise naming the field."""
        arch = (cfg.get("architectures") or ["ViTModel"])[0]
        require(cfg, "architectures", arch in HEADS, f"supported: {', '.join(HEADS)}", where)
        require(cfg, "pooler_act", cfg.get("pooler_act", "tanh") == "tanh",
                "plait supports tanh", where)
        n_embd = cfg.get("hidden_size", 768)
        require(cfg, "pooler_output_size", cfg.get("pooler_output_size") in (None, n_embd),
                "plait's pooler keeps hidden_size", where)
        labels = cfg.get("id2label")
        return ViTConfig(**fields_from_hf(self.FIELDS, cfg, where),
                         image_size=_square(cfg, "image_size", 224, where),
                         patch_size=_square(cfg, "patch_size", 16, where), head=HEADS[arch],
                         num_labels=len(labels) if labels else cfg.get("num_labels", 2))

    def config_to_hf(self, config: ViTConfig) -> dict[str, Any]:
        require_export(config, {"pooling": "cls", "pos_embedding": "learned", "pre_norm": False,
                                "patch_bias": True}, self.name)
        if config.head == "none":
            raise ValueError("cannot export to ViT: ViTConfig.head='none' (ViTModel has a tanh"
                             " pooler; use head='tanh' or 'classify')")
        out = {"architectures": [ARCHS[config.head]], "model_type": "vit",
               "image_size": config.image_size, "patch_size": config.patch_size,
               **fields_to_hf(self.FIELDS, config, self.name),
               "intermediate_size": config.inner_dim,
               "attention_probs_dropout_prob": config.dropout}
        if config.head == "classify":
            out.update(label_maps(config.num_labels))
        return out
