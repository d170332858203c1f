"""CLIP (``model_type: clip``) <-> :class:`plait.models.clip.CLIP` (ViT + text Transformer).

The vision tower is plait's ViT with a LayerNorm before the blocks (HF ``pre_layrnorm``), a
bias-free patch conv, and its final norm as HF's ``post_layernorm`` (applied per token, so the
class token's state is the same either way). CLIP stores the class token as (C,) and positions
as an ``nn.Embedding``; plait keeps (1, 1, C) and (1, N, C) parameters, hence two reshapes.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from plait.hf.io import ACTS, ACTS_OUT, require
from plait.hf.keymap import Rule, expand
from plait.models.clip import CLIP, CLIPConfig, TextConfig
from plait.models.vit import ViTConfig

MODEL_TYPES = ("clip",)


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


TEXT = [
    Rule("text_model.embeddings.token_embedding.weight", "text.wte.weight"),
    Rule("text_model.embeddings.position_embedding.weight", "text.pos.wpe.weight"),
    Rule("text_model.embeddings.position_ids", None),  # a buffer older versions saved
    Rule("text_model.final_layer_norm.weight", "text.encoder.norm.weight"),
    Rule("text_model.final_layer_norm.bias", "text.encoder.norm.bias"),
    *_layers("text_model", "text"),
]
VISION = [
    Rule("vision_model.embeddings.class_embedding", "vision.cls", "vec_to_token"),
    Rule("vision_model.embeddings.patch_embedding.weight", "vision.patch.weight"),
    Rule("vision_model.embeddings.position_embedding.weight", "vision.pos", "unsqueeze0"),
    Rule("vision_model.embeddings.position_ids", None),
    Rule("vision_model.pre_layrnorm.weight", "vision.norm_pre.weight"),
    Rule("vision_model.pre_layrnorm.bias", "vision.norm_pre.bias"),
    Rule("vision_model.post_layernorm.weight", "vision.encoder.norm.weight"),
    Rule("vision_model.post_layernorm.bias", "vision.encoder.norm.bias"),
    *_layers("vision_model", "vision"),
]
TOP = [
    Rule("visual_projection.weight", "visual_proj.weight"),
    Rule("text_projection.weight", "text_proj.weight"),
    Rule("logit_scale", "logit_scale"),
]


def rules(config: CLIPConfig) -> list[Rule]:
    return (expand(TEXT, config.text_config.n_layer)
            + expand(VISION, config.vision_config.n_layer) + expand(TOP, 0))


def normalize(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return state


def denormalize(state: dict[str, Tensor], hf_cfg: dict[str, Any]) -> dict[str, Tensor]:
    return state


def _act(cfg: dict[str, Any], where: str) -> str:
    act = cfg.get("hidden_act", "quick_gelu")
    require(cfg, "hidden_act", act in ACTS, f"supported: {', '.join(ACTS)}", where)
    return ACTS[act]


def config_from_hf(cfg: dict[str, Any], where: str) -> CLIPConfig:
    """CLIPConfig from a CLIP ``config.json``; unsupported values raise naming the field."""
    arch = (cfg.get("architectures") or ["CLIPModel"])[0]
    require(cfg, "architectures", arch == "CLIPModel", "supported: CLIPModel", where)
    t, v = cfg.get("text_config") or {}, cfg.get("vision_config") or {}
    eos = t.get("eos_token_id", 49407)
    require(t, "eos_token_id", eos is None or isinstance(eos, int), "an integer", where)
    text = TextConfig(
        vocab_size=t.get("vocab_size", 49408), n_layer=t.get("num_hidden_layers", 12),
        n_head=t.get("num_attention_heads", 8), n_embd=t.get("hidden_size", 512),
        n_inner=t.get("intermediate_size", 2048), block_size=t.get("max_position_embeddings", 77),
        mlp=_act(t, where + " text_config"), norm_eps=t.get("layer_norm_eps", 1e-5),
        dropout=t.get("attention_dropout", 0.0),
        # transformers keeps the original argmax rule for the old eos_token_id == 2 configs
        pool="argmax" if eos in (None, 2) else "eos", eos_token_id=eos,
    )
    vision = ViTConfig(
        image_size=v.get("image_size", 224), patch_size=v.get("patch_size", 32),
        num_channels=v.get("num_channels", 3), n_layer=v.get("num_hidden_layers", 12),
        n_head=v.get("num_attention_heads", 12), n_embd=v.get("hidden_size", 768),
        n_inner=v.get("intermediate_size", 3072), mlp=_act(v, where + " vision_config"),
        norm_eps=v.get("layer_norm_eps", 1e-5), dropout=v.get("attention_dropout", 0.0),
        pre_norm=True, patch_bias=False, pooling="cls", head="none",
    )
    return CLIPConfig(
        vision={"kind": "vit", **vision.to_dict()}, text={"kind": "transformer", **text.to_dict()},
        embed_dim=cfg.get("projection_dim", 512),
        logit_scale_init=cfg.get("logit_scale_init_value", 2.6592),
    )


def build(config: CLIPConfig, architecture: str) -> CLIP:
    return CLIP(config)


def exports(model: object) -> bool:
    return isinstance(model, CLIP)


def config_to_hf(config: CLIPConfig, model: CLIP | None = None) -> dict[str, Any]:
    if config.vision_kind != "vit" or config.text_kind != "transformer":
        raise ValueError(f"cannot export to CLIP: towers vision.kind={config.vision_kind!r},"
                         f" text.kind={config.text_kind!r} (Hugging Face CLIP needs 'vit' and"
                         " 'transformer')")
    v, t = config.vision_config, config.text_config
    needs = {"pre_norm": True, "patch_bias": False, "pooling": "cls", "pos_embedding": "learned",
             "qkv_bias": True, "head": "none"}
    for name, value in needs.items():
        if getattr(v, name) != value:
            raise ValueError(f"cannot export to CLIP: vision.{name}={getattr(v, name)!r}"
                             f" (CLIP needs {value!r})")
    if t.pool == "last" or (t.pool == "argmax") != (t.eos_token_id in (None, 2)):
        raise ValueError(f"cannot export to CLIP: text.pool={t.pool!r} with eos_token_id="
                         f"{t.eos_token_id} (CLIP pools 'argmax' iff eos_token_id is 2)")
    for name, cfg in (("vision", v), ("text", t)):
        if cfg.mlp not in ACTS_OUT:
            raise ValueError(f"cannot export to CLIP: {name}.mlp={cfg.mlp!r}")
    text = {"vocab_size": t.vocab_size, "hidden_size": t.n_embd,
            "intermediate_size": t.n_inner or 4 * t.n_embd, "num_hidden_layers": t.n_layer,
            "num_attention_heads": t.n_head, "max_position_embeddings": t.block_size,
            "hidden_act": ACTS_OUT[t.mlp], "layer_norm_eps": t.norm_eps,
            "attention_dropout": t.dropout, "eos_token_id": t.eos_token_id if t.eos_token_id
            is not None else 2, "projection_dim": config.embed_dim}
    vision = {"image_size": v.image_size, "patch_size": v.patch_size,
              "num_channels": v.num_channels, "hidden_size": v.n_embd,
              "intermediate_size": v.n_inner or 4 * v.n_embd, "num_hidden_layers": v.n_layer,
              "num_attention_heads": v.n_head, "hidden_act": ACTS_OUT[v.mlp],
              "layer_norm_eps": v.norm_eps, "attention_dropout": v.dropout,
              "projection_dim": config.embed_dim}
    return {"architectures": ["CLIPModel"], "model_type": "clip",
            "projection_dim": config.embed_dim, "logit_scale_init_value": config.logit_scale_init,
            "text_config": text, "vision_config": vision}
