"""ViT (``model_type: vit``) <-> :class:`plait.models.vit.ViT`.

``ViTModel`` loads with head ``"tanh"`` (its pooler), ``ViTForImageClassification`` with
``"classify"``. Separate query/key/value projections are fused into plait's ``qkv``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from plait.hf.io import ACTS, ACTS_OUT, require
from plait.hf.keymap import Rule, expand
from plait.models.vit import ViT, ViTConfig

MODEL_TYPES = ("vit",)
HEADS = {"ViTModel": "tanh", "ViTForImageClassification": "classify"}
ARCHS = {"tanh": "ViTModel", "none": "ViTModel", "classify": "ViTForImageClassification"}

PREFIX = "vit."
L = "vit.encoder.layer.{i}"
B = "encoder.blocks.{i}"
RULES = [
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
]


def rules(config: ViTConfig) -> list[Rule]:
    return expand(RULES, config.n_layer)


def normalize(state: dict[str, Tensor]) -> dict[str, Tensor]:
    if any(k.startswith(PREFIX) for k in state):
        return state
    return {PREFIX + k: v for k, v in state.items()}


def denormalize(state: dict[str, Tensor], hf_cfg: dict[str, Any]) -> dict[str, Tensor]:
    if hf_cfg["architectures"] == ["ViTModel"]:
        return {k.removeprefix(PREFIX): v for k, v in state.items()}
    return state


def _square(cfg: dict[str, Any], field: str, default: int, where: str) -> int:
    v = cfg.get(field, default)
    if isinstance(v, list | tuple):
        require(cfg, field, len(v) == 2 and v[0] == v[1], "plait supports square sizes", where)
        v = v[0]
    return int(v)


def config_from_hf(cfg: dict[str, Any], where: str) -> ViTConfig:
    """ViTConfig from a ViT ``config.json``; unsupported values raise naming the field."""
    arch = (cfg.get("architectures") or ["ViTModel"])[0]
    require(cfg, "architectures", arch in HEADS, f"supported: {', '.join(HEADS)}", where)
    act = cfg.get("hidden_act", "gelu")
    require(cfg, "hidden_act", act in ACTS, f"supported: {', '.join(ACTS)}", where)
    require(cfg, "pooler_act", cfg.get("pooler_act", "tanh") == "tanh", "plait supports tanh",
            where)
    n_embd = cfg.get("hidden_size", 768)
    require(cfg, "pooler_output_size", cfg.get("pooler_output_size") in (None, n_embd),
            "plait's pooler keeps hidden_size", where)
    labels = cfg.get("id2label")
    return ViTConfig(
        image_size=_square(cfg, "image_size", 224, where),
        patch_size=_square(cfg, "patch_size", 16, where),
        num_channels=cfg.get("num_channels", 3),
        n_layer=cfg.get("num_hidden_layers", 12),
        n_head=cfg.get("num_attention_heads", 12),
        n_embd=n_embd,
        n_inner=cfg.get("intermediate_size", 3072),
        norm_eps=cfg.get("layer_norm_eps", 1e-12),
        mlp=ACTS[act],
        qkv_bias=cfg.get("qkv_bias", True),
        dropout=cfg.get("hidden_dropout_prob", 0.0),
        head=HEADS[arch],
        num_labels=len(labels) if labels else cfg.get("num_labels", 2),
    )


def adjust(config: ViTConfig, state: dict[str, Tensor]) -> ViTConfig:
    """A ViTModel saved with ``add_pooling_layer=False`` has no pooler: no head then."""
    if config.head == "tanh" and "vit.pooler.dense.weight" not in state:
        return config.replace(head="none")
    return config


def build(config: ViTConfig, architecture: str) -> ViT:
    return ViT(config)


def exports(model: object) -> bool:
    return isinstance(model, ViT)


def config_to_hf(config: ViTConfig, model: ViT | None = None) -> dict[str, Any]:
    needs = {"pooling": "cls", "pos_embedding": "learned", "pre_norm": False,
             "patch_bias": True}
    for field, value in needs.items():
        if getattr(config, field) != value:
            raise ValueError(f"cannot export to ViT: ViTConfig.{field}="
                             f"{getattr(config, field)!r} (Hugging Face ViT needs {value!r})")
    if config.mlp not in ACTS_OUT:
        raise ValueError(f"cannot export to ViT: ViTConfig.mlp={config.mlp!r}")
    if config.head == "none":
        raise ValueError("cannot export to ViT: ViTConfig.head='none' (ViTModel has a tanh"
                         " pooler; use head='tanh' or 'classify')")
    out = {
        "architectures": [ARCHS[config.head]],
        "model_type": "vit",
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "num_channels": config.num_channels,
        "hidden_size": config.n_embd,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "intermediate_size": config.n_inner or 4 * config.n_embd,
        "hidden_act": ACTS_OUT[config.mlp],
        "layer_norm_eps": config.norm_eps,
        "qkv_bias": config.qkv_bias,
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.dropout,
    }
    if config.head == "classify":
        out["id2label"] = {str(i): f"LABEL_{i}" for i in range(config.num_labels)}
        out["label2id"] = {f"LABEL_{i}": i for i in range(config.num_labels)}
    return out
