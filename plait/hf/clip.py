"""CLIP (``model_type: clip``) <-> :class:`plait.models.clip.CLIP` (ViT + text Transformer).

The vision tower is plait's ViT with a LayerNorm before the blocks (HF ``pre_layrnorm``), a
bias-free patch conv, and its final norm as HF's ``post_layernorm`` (applied per token, so the
class token's state is the same either way). CLIP stores the class token as (C,) and positions
as an ``nn.Embedding``; plait keeps (1, 1, C) and (1, N, C) parameters, hence two reshapes.
"""

from __future__ import annotations

from typing import Any

from plait.hf.family import (
    Family,
    Field,
    encoder_fields,
    fields_from_hf,
    fields_to_hf,
    require,
    require_export,
)
from plait.hf.keymap import Rule, expand
from plait.models.clip import CLIP, CLIPConfig, TextConfig
from plait.models.vit import ViTConfig


def _layers(hf: str, pl: str) -> list[Rule]:
    """One Transformer layer: CLIP's encoder layer names -> plait's PreNormBlock."""
    L, B = f"{hf}.encoder.layers.{{i}}", f"{pl}.encoder.blocks.{{i}}"
    qkv = ("q_proj", "k_proj", "v_proj")
    out = [Rule(tuple(f"{L}.self_attn.{n}.{p}" for n in qkv), f"{B}.attn.qkv.{p}", "cat")
           for p in ("weight", "bias")]
    pairs = {"self_attn.out_proj": "attn.proj", "layer_norm1": "norm_attn", "mlp.fc1": "mlp.fc",
             "mlp.fc2": "mlp.proj", "layer_norm2": "norm_mlp"}
    return out + [Rule(f"{L}.{h}.{p}", f"{B}.{q}.{p}") for h, q in pairs.items()
                  for p in ("weight", "bias")]


TEXT = (
    Rule("text_model.embeddings.token_embedding.weight", "text.wte.weight"),
    Rule("text_model.embeddings.position_embedding.weight", "text.pos.wpe.weight"),
    Rule("text_model.embeddings.position_ids", None),  # a buffer older versions saved
    Rule("text_model.final_layer_norm.weight", "text.encoder.norm.weight"),
    Rule("text_model.final_layer_norm.bias", "text.encoder.norm.bias"),
    *_layers("text_model", "text"),
)
VISION = (
    Rule("vision_model.embeddings.class_embedding", "vision.cls", "vec_to_token"),
    Rule("vision_model.embeddings.patch_embedding.weight", "vision.patch.weight"),
    Rule("vision_model.embeddings.position_embedding.weight", "vision.pos", "unsqueeze0"),
    Rule("vision_model.embeddings.position_ids", None),
    Rule("vision_model.pre_layrnorm.weight", "vision.norm_pre.weight"),
    Rule("vision_model.pre_layrnorm.bias", "vision.norm_pre.bias"),
    Rule("vision_model.post_layernorm.weight", "vision.encoder.norm.weight"),
    Rule("vision_model.post_layernorm.bias", "vision.encoder.norm.bias"),
    *_layers("vision_model", "vision"),
)
TOP = (
    Rule("visual_projection.weight", "visual_proj.weight"),
    Rule("text_projection.weight", "text_proj.weight"),
    Rule("logit_scale", "logit_scale"),
)



# each tower's table in config.json (text_config, vision_config); CLIP keeps its dropout rate
# under attention_dropout
TEXT_FIELDS = (Field("vocab_size", "vocab_size", 49408),
               Field("max_position_embeddings", "block_size", 77),
               *encoder_fields(512, 8, 2048, "quick_gelu", 1e-5, "attention_dropout"))
VISION_FIELDS = (Field("image_size", "image_size", 224), Field("patch_size", "patch_size", 32),
                 Field("num_channels", "num_channels", 3),
                 *encoder_fields(768, 12, 3072, "quick_gelu", 1e-5, "attention_dropout"))
# what a CLIP vision tower is, in plait's ViT terms (fixed, not read from config.json)
VISION_LAYOUT = {"pre_norm": True, "patch_bias": False, "pooling": "cls", "head": "none",
                 "pos_embedding": "learned", "qkv_bias": True}


class CLIPFamily(Family):
    name = "CLIP"
    model_class = CLIP
    FIELDS = (
        Field("projection_dim", "embed_dim", 512),
        Field("logit_scale_init_value", "logit_scale_init", 2.6592),
    )

    def rules(self, config: CLIPConfig) -> list[Rule]:
        return (expand(list(TEXT), config.text_config.n_layer)
                + expand(list(VISION), config.vision_config.n_layer) + expand(list(TOP), 0))

    def config_from_hf(self, cfg: dict[str, Any], where: str) -> CLIPConfig:
        """CLIPConfig from a CLIP ``config.json``; unsupported values raise naming the field."""
        arch = (cfg.get("architectures") or ["CLIPModel"])[0]
        require(cfg, "architectures", arch == "CLIPModel", "supported: CLIPModel", where)
        t, v = cfg.get("text_config") or {}, cfg.get("vision_config") or {}
        eos = t.get("eos_token_id", 49407)
        require(t, "eos_token_id", eos is None or isinstance(eos, int), "an integer", where)
        text = TextConfig(
            **fields_from_hf(TEXT_FIELDS, t, where + " text_config"),
            # transformers keeps the original argmax rule for the old eos_token_id == 2 configs
            pool="argmax" if eos in (None, 2) else "eos", eos_token_id=eos)
        vision = ViTConfig(**fields_from_hf(VISION_FIELDS, v, where + " vision_config"),
                           **VISION_LAYOUT)
        return CLIPConfig(vision={"kind": "vit", **vision.to_dict()},
                          text={"kind": "transformer", **text.to_dict()},
                          **fields_from_hf(self.FIELDS, cfg, where))

    def config_to_hf(self, config: CLIPConfig) -> dict[str, Any]:
        if config.vision_kind != "vit" or config.text_kind != "transformer":
            raise ValueError(f"cannot export to CLIP: towers vision.kind={config.vision_kind!r},"
                             f" text.kind={config.text_kind!r} (Hugging Face CLIP needs 'vit'"
                             " and 'transformer')")
        v, t = config.vision_config, config.text_config
        require_export(v, VISION_LAYOUT, "CLIP")
        if t.pool == "last" or (t.pool == "argmax") != (t.eos_token_id in (None, 2)):
            raise ValueError(f"cannot export to CLIP: text.pool={t.pool!r} with eos_token_id="
                             f"{t.eos_token_id} (CLIP pools 'argmax' iff eos_token_id is 2)")
        shared = {"projection_dim": config.embed_dim}
        text = {**fields_to_hf(TEXT_FIELDS, t, "CLIP"), "intermediate_size": t.inner_dim,
                "eos_token_id": 2 if t.eos_token_id is None else t.eos_token_id, **shared}
        vision = {**fields_to_hf(VISION_FIELDS, v, "CLIP"), "intermediate_size": v.inner_dim,
                  **shared}
        return {"architectures": ["CLIPModel"], "model_type": "clip",
                **fields_to_hf(self.FIELDS, config, "CLIP"),
                "text_config": text, "vision_config": vision}
