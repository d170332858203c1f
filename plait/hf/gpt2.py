"""GPT-2 (``model_type: gpt2``) <-> :class:`plait.GPT`.

GPT-2 (Radford et al. 2019) is plait's default GPT layout: learned positions, pre-norm
LayerNorm blocks, a GELU MLP, a LM head tied to the token embedding. The only surprise in the
checkpoint is that OpenAI's linear layers are ``Conv1D`` with weight ``(in, out)``, so every
matrix is transposed on the way in and out.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from plait.hf.io import ACTS, ACTS_OUT, require
from plait.hf.keymap import Rule, expand
from plait.models.gpt import GPT, GPTConfig

MODEL_TYPES = ("gpt2",)


PREFIX = "transformer."  # GPT2LMHeadModel's body; a bare GPT2Model has no prefix
BLOCK = "transformer.blocks.{i}"
RULES = [
    Rule("transformer.wte.weight", "wte.weight"),
    Rule("transformer.wpe.weight", "pos.wpe.weight"),
    Rule("transformer.h.{i}.ln_1.weight", f"{BLOCK}.norm_attn.weight"),
    Rule("transformer.h.{i}.ln_1.bias", f"{BLOCK}.norm_attn.bias"),
    Rule("transformer.h.{i}.attn.c_attn.weight", f"{BLOCK}.attn.qkv.weight", "transpose"),
    Rule("transformer.h.{i}.attn.c_attn.bias", f"{BLOCK}.attn.qkv.bias"),
    Rule("transformer.h.{i}.attn.c_proj.weight", f"{BLOCK}.attn.proj.weight", "transpose"),
    Rule("transformer.h.{i}.attn.c_proj.bias", f"{BLOCK}.attn.proj.bias"),
    Rule("transformer.h.{i}.ln_2.weight", f"{BLOCK}.norm_mlp.weight"),
    Rule("transformer.h.{i}.ln_2.bias", f"{BLOCK}.norm_mlp.bias"),
    Rule("transformer.h.{i}.mlp.c_fc.weight", f"{BLOCK}.mlp.fc.weight", "transpose"),
    Rule("transformer.h.{i}.mlp.c_fc.bias", f"{BLOCK}.mlp.fc.bias"),
    Rule("transformer.h.{i}.mlp.c_proj.weight", f"{BLOCK}.mlp.proj.weight", "transpose"),
    Rule("transformer.h.{i}.mlp.c_proj.bias", f"{BLOCK}.mlp.proj.bias"),
    Rule("transformer.ln_f.weight", "transformer.norm.weight"),
    Rule("transformer.ln_f.bias", "transformer.norm.bias"),
    # causal-mask buffers that older checkpoints saved; plait builds masks on the fly
    Rule("transformer.h.{i}.attn.bias", None),
    Rule("transformer.h.{i}.attn.masked_bias", None),
]


def rules(config: GPTConfig) -> list[Rule]:
    # a tied LM head is the token embedding: checkpoints may carry a copy, which we drop
    head = Rule("lm_head.weight", None if config.tie_embeddings else "lm_head.weight")
    return expand([*RULES, head], config.n_layer)


def normalize(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Give a bare GPT2Model checkpoint the GPT2LMHeadModel names the rules use."""
    if any(k.startswith(PREFIX) for k in state):
        return state
    return {k if k == "lm_head.weight" else PREFIX + k: v for k, v in state.items()}


def config_from_hf(cfg: dict[str, Any], where: str) -> GPTConfig:
    """GPTConfig from a GPT-2 ``config.json``; unsupported values raise naming the field."""
    arch = (cfg.get("architectures") or ["GPT2LMHeadModel"])[0]
    require(cfg, "architectures", arch in ("GPT2LMHeadModel", "GPT2Model"),
            "supported: GPT2LMHeadModel, GPT2Model", where)
    act = cfg.get("activation_function", "gelu_new")
    require(cfg, "activation_function", act in ACTS, f"supported: {', '.join(ACTS)}", where)
    for field in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn",
                  "add_cross_attention"):
        require(cfg, field, not cfg.get(field, False), "plait supports only false", where)
    require(cfg, "scale_attn_weights", cfg.get("scale_attn_weights", True),
            "plait always scales attention by 1/sqrt(head_dim)", where)
    return GPTConfig(
        vocab_size=cfg.get("vocab_size", 50257),
        n_layer=cfg.get("n_layer", 12),
        n_head=cfg.get("n_head", 12),
        n_embd=cfg.get("n_embd", 768),
        block_size=cfg.get("n_positions", 1024),
        n_inner=cfg.get("n_inner"),
        mlp=ACTS[act],
        norm_eps=cfg.get("layer_norm_epsilon", 1e-5),
        dropout=cfg.get("resid_pdrop", 0.1),
        tie_embeddings=cfg.get("tie_word_embeddings", True),
        pos_encoding="learned",
        norm="layernorm",
        bias=True,
    )


def build(config: GPTConfig, architecture: str) -> GPT:
    return GPT(config)


def exports(model: object) -> bool:
    return isinstance(model, GPT)


def denormalize(state: dict[str, Tensor], hf_cfg: dict[str, Any]) -> dict[str, Tensor]:
    return state  # always written as GPT2LMHeadModel


def config_to_hf(config: GPTConfig, model: GPT | None = None) -> dict[str, Any]:
    """A GPT-2 ``config.json`` for ``config``; plait features GPT-2 lacks raise naming them."""
    needs = {"pos_encoding": "learned", "norm": "layernorm", "bias": True}
    for field, value in needs.items():
        if getattr(config, field) != value:
            raise ValueError(f"cannot export to GPT-2: GPTConfig.{field}="
                             f"{getattr(config, field)!r} (GPT-2 needs {value!r})")
    if config.mlp not in ACTS_OUT:
        raise ValueError(f"cannot export to GPT-2: GPTConfig.mlp={config.mlp!r} (GPT-2 supports"
                         f" {', '.join(ACTS_OUT)})")
    if config.kv_heads != config.n_head:
        raise ValueError(f"cannot export to GPT-2: GPTConfig.n_kv_head={config.n_kv_head}"
                         f" (GPT-2 has no grouped-query attention; use {config.n_head} or none)")
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": config.n_inner,
        "activation_function": ACTS_OUT[config.mlp],
        "layer_norm_epsilon": config.norm_eps,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "tie_word_embeddings": config.tie_embeddings,
    }
