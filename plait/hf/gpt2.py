"""GPT-2 (``model_type: gpt2``) <-> :class:`plait.GPT`.

GPT-2 (Radford et al. 2019) is plait's default GPT layout: learned positions, pre-norm
LayerNorm blocks, a GELU MLP, a LM head tied to the token embedding. The only surprise in the
checkpoint is that OpenAI's linear layers are ``Conv1D`` with weight ``(in, out)``, so every
matrix is transposed on the way in and out. ``add_cross_attention`` checkpoints (GPT-2 as the
decoder of an encoder-decoder) carry a ``crossattention`` layer and its ``ln_cross_attn`` in
every block; they map onto ``GPTConfig.add_cross_attention``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from plait.hf.family import (
    ACTIVATIONS,
    Family,
    Field,
    fields_from_hf,
    fields_to_hf,
    require,
    require_export,
    with_prefix,
)
from plait.hf.keymap import Rule, expand
from plait.models.gpt import GPT, GPTConfig

PREFIX = "transformer."  # GPT2LMHeadModel's body; a bare GPT2Model has no prefix
H = "transformer.h.{i}"
BLOCK = "transformer.blocks.{i}"


def _conv1d(hf: str, plait: str) -> list[Rule]:
    """A GPT-2 Conv1D (weight stored (in, out)) <-> a plait Linear."""
    return [Rule(f"{hf}.weight", f"{plait}.weight", "transpose"),
            Rule(f"{hf}.bias", f"{plait}.bias")]


def _norm(hf: str, plait: str) -> list[Rule]:
    return [Rule(f"{hf}.weight", f"{plait}.weight"), Rule(f"{hf}.bias", f"{plait}.bias")]


class GPT2(Family):
    name = "GPT-2"
    model_class = GPT
    # what tells GPT-2 from the rotary RMSNorm decoders of plait.hf.llama; config_to_hf
    # refuses, by name, what else GPT-2 lacks
    LAYOUT = {"pos_encoding": "learned", "norm": "layernorm"}
    FIELDS = (
        Field("vocab_size", "vocab_size", 50257),
        Field("n_layer", "n_layer", 12),
        Field("n_head", "n_head", 12),
        Field("n_embd", "n_embd", 768),
        Field("n_positions", "block_size", 1024),
        Field("n_inner", "n_inner", None),
        Field("activation_function", "mlp", "gelu_new", ACTIVATIONS),
        Field("layer_norm_epsilon", "norm_eps", 1e-5),
        Field("resid_pdrop", "dropout", 0.1),
        Field("tie_word_embeddings", "tie_embeddings", True),
        Field("add_cross_attention", "add_cross_attention", False),
    )
    RULES = (
        Rule("transformer.wte.weight", "wte.weight"),
        Rule("transformer.wpe.weight", "pos.wpe.weight"),
        *_norm(f"{H}.ln_1", f"{BLOCK}.norm_attn"),
        *_conv1d(f"{H}.attn.c_attn", f"{BLOCK}.attn.qkv"),
        *_conv1d(f"{H}.attn.c_proj", f"{BLOCK}.attn.proj"),
        *_norm(f"{H}.ln_2", f"{BLOCK}.norm_mlp"),
        *_conv1d(f"{H}.mlp.c_fc", f"{BLOCK}.mlp.fc"),
        *_conv1d(f"{H}.mlp.c_proj", f"{BLOCK}.mlp.proj"),
        # add_cross_attention: queries from the decoder, keys and values from the encoder
        *_norm(f"{H}.ln_cross_attn", f"{BLOCK}.norm_cross"),
        *_conv1d(f"{H}.crossattention.q_attn", f"{BLOCK}.cross_attn.q"),
        *_conv1d(f"{H}.crossattention.c_attn", f"{BLOCK}.cross_attn.kv"),
        *_conv1d(f"{H}.crossattention.c_proj", f"{BLOCK}.cross_attn.proj"),
        *_norm("transformer.ln_f", "transformer.norm"),
        # causal-mask buffers that older checkpoints saved; plait builds masks on the fly
        Rule(f"{H}.attn.bias", None),
        Rule(f"{H}.attn.masked_bias", None),
        Rule(f"{H}.crossattention.bias", None),
        Rule(f"{H}.crossattention.masked_bias", None),
    )

    def rules(self, config: GPTConfig) -> list[Rule]:
        # a tied LM head is the token embedding: checkpoints may carry a copy, which we drop
        head = Rule("lm_head.weight", None if config.tie_embeddings else "lm_head.weight")
        return expand([*self.RULES, head], config.n_layer)

    def normalize(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Give a bare GPT2Model checkpoint the GPT2LMHeadModel names the rules use."""
        return with_prefix(state, PREFIX, keep=("lm_head.weight",))

    def config_from_hf(self, cfg: dict[str, Any], where: str) -> GPTConfig:
        """GPTConfig from a GPT-2 ``config.json``; unsupported values raise naming the field."""
        arch = (cfg.get("architectures") or ["GPT2LMHeadModel"])[0]
        require(cfg, "architectures", arch in ("GPT2LMHeadModel", "GPT2Model"),
                "supported: GPT2LMHeadModel, GPT2Model", where)
        for field in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            require(cfg, field, not cfg.get(field, False), "plait supports only false", where)
        require(cfg, "scale_attn_weights", cfg.get("scale_attn_weights", True),
                "plait always scales attention by 1/sqrt(head_dim)", where)
        return GPTConfig(**fields_from_hf(self.FIELDS, cfg, where),
                         pos_encoding="learned", norm="layernorm", bias=True)

    def config_to_hf(self, config: GPTConfig) -> dict[str, Any]:
        """A GPT-2 ``config.json`` for ``config``; plait features GPT-2 lacks raise naming them."""
        require_export(config, {"pos_encoding": "learned", "norm": "layernorm", "bias": True},
                       self.name)
        if config.qkv_bias is False:
            raise ValueError("cannot export to GPT-2: GPTConfig.qkv_bias=False (GPT-2's c_attn"
                             " has a bias; use true or none)")
        if config.head_dim != config.n_embd // config.n_head:
            raise ValueError(f"cannot export to GPT-2: GPTConfig.d_head={config.d_head} (GPT-2's"
                             f" heads are n_embd / n_head = {config.n_embd // config.n_head} wide)")
        if config.kv_heads != config.n_head:
            raise ValueError(f"cannot export to GPT-2: GPTConfig.n_kv_head={config.n_kv_head}"
                             f" (GPT-2 has no grouped-query attention; use {config.n_head} or"
                             " none)")
        if config.memory_dim not in (None, config.n_embd):
            raise ValueError(f"cannot export to GPT-2: GPTConfig.memory_dim={config.memory_dim}"
                             f" (GPT-2's cross-attention reads n_embd={config.n_embd} wide)")
        out = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
               **fields_to_hf(self.FIELDS, config, self.name)}
        out["embd_pdrop"] = out["attn_pdrop"] = config.dropout
        return out
