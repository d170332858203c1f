"""Llama (``model_type: llama``), Mistral (``mistral``), Qwen2 (``qwen2``) <-> :class:`plait.GPT`.

The three are one decoder (Touvron et al. 2023, arXiv:2302.13971): pre-norm RMSNorm blocks,
rotary positions in the "rotate half" layout (Su 2021), a SwiGLU feed-forward (Shazeer 2020,
Eq. 6), grouped-query attention (Ainslie 2023) and an untied LM head by default. They differ
in a few config fields, each the small hook :meth:`LlamaFamily.variant`:

- Llama: ``attention_bias`` and ``mlp_bias``, which must agree (plait has one ``bias``);
- Mistral (Jiang et al. 2023, arXiv:2310.06825): no biases, and a ``sliding_window``; plait
  attends to every earlier position, so only a window covering ``max_position_embeddings``
  loads;
- Qwen2 (Yang et al. 2024, arXiv:2407.10671): biases on q, k and v alone
  (``GPTConfig.qkv_bias``), and sliding windows plait refuses.

The checkpoints keep q, k, v and the gate and up projections apart; plait fuses each group in
one Linear, so the key map concatenates them (``cat``, split back by the grouped-query heights).
A rotary RMSNorm SwiGLU GPT exports as Llama, or as Qwen2 when only its q/k/v have biases;
a Mistral folder therefore comes back as a Llama one, which computes the same.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from torch import Tensor

from plait.hf.family import (
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

PREFIX = "model."  # LlamaForCausalLM's body; a bare LlamaModel has no prefix
L = "model.layers.{i}"
BLOCK = "transformer.blocks.{i}"
SILU = (("silu", "swiglu"), ("swish", "swiglu"))  # hidden_act gates the SwiGLU
MISTRAL_POSITIONS = 4096 * 32  # MistralConfig's max_position_embeddings default


def decoder_fields(vocab: int, inner: int, n_pos: int, n_kv: int | None) -> tuple[Field, ...]:
    """The config keys the three name alike, with one family's defaults."""
    return (
        Field("vocab_size", "vocab_size", vocab),
        Field("hidden_size", "n_embd", 4096),
        Field("intermediate_size", "n_inner", inner),
        Field("num_hidden_layers", "n_layer", 32),
        Field("num_attention_heads", "n_head", 32),
        Field("num_key_value_heads", "n_kv_head", n_kv),
        Field("max_position_embeddings", "block_size", n_pos),
        Field("hidden_act", "mlp", "silu", SILU),
        Field("rms_norm_eps", "norm_eps", 1e-6),
        Field("attention_dropout", "dropout", 0.0),
        Field("tie_word_embeddings", "tie_embeddings", False),
    )


def _linear(hf: str, plait: str) -> list[Rule]:
    return [Rule(f"{hf}.{p}", f"{plait}.{p}") for p in ("weight", "bias")]


def _fused(hf: tuple[str, ...], plait: str, split: tuple[int, ...] = ()) -> list[Rule]:
    """Separate HF Linears <-> one plait Linear, their rows stacked in order."""
    return [Rule(tuple(f"{n}.{p}" for n in hf), f"{plait}.{p}", "cat", split)
            for p in ("weight", "bias")]


def _plain(c: GPTConfig) -> GPTConfig:
    """``c`` with a ``qkv_bias`` equal to ``bias`` unset: the same model, as LAYOUT spells it."""
    return c.replace(qkv_bias=None) if c.qkv_bias == c.bias else c


def rope_theta(cfg: dict[str, Any], where: str) -> float:
    """RoPE's base from ``rope_parameters`` (transformers 5) or ``rope_theta`` beside a legacy
    ``rope_scaling``; scaled variants (linear, dynamic, yarn, llama3, ...) are refused."""
    key = "rope_scaling" if cfg.get("rope_scaling") else "rope_parameters"
    rope = cfg.get(key) or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    require(cfg, key, kind == "default", "plait supports rope_type 'default' only", where)
    return float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))


class LlamaFamily(Family):
    name = "Llama"
    model_type = "llama"
    architecture = "LlamaForCausalLM"  # also read: the bare LlamaModel (a tied head)
    model_class = GPT
    FIELDS = decoder_fields(vocab=32000, inner=11008, n_pos=2048, n_kv=None)
    LAYOUT = {"pos_encoding": "rope", "norm": "rmsnorm", "mlp": "swiglu",
              "add_cross_attention": False, "qkv_bias": None}
    RULES = (
        Rule("model.embed_tokens.weight", "wte.weight"),
        Rule(f"{L}.input_layernorm.weight", f"{BLOCK}.norm_attn.weight"),
        *_linear(f"{L}.self_attn.o_proj", f"{BLOCK}.attn.proj"),
        Rule(f"{L}.post_attention_layernorm.weight", f"{BLOCK}.norm_mlp.weight"),
        *_fused((f"{L}.mlp.gate_proj", f"{L}.mlp.up_proj"), f"{BLOCK}.mlp.fc"),  # gate first
        *_linear(f"{L}.mlp.down_proj", f"{BLOCK}.mlp.proj"),
        Rule("model.norm.weight", "transformer.norm.weight"),
        Rule(f"{L}.self_attn.rotary_emb.inv_freq", None),  # a buffer older checkpoints saved
    )

    def rules(self, config: GPTConfig) -> list[Rule]:
        hs, attn = config.head_dim, f"{L}.self_attn"
        heights = (config.n_head * hs, config.kv_heads * hs, config.kv_heads * hs)  # q, k, v
        qkv = _fused((f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"),
                     f"{BLOCK}.attn.qkv", heights)
        # a tied LM head is the token embedding: checkpoints may carry a copy, which we drop
        head = Rule("lm_head.weight", None if config.tie_embeddings else "lm_head.weight")
        return expand([*self.RULES, *qkv, head], config.n_layer)

    def normalize(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Give a bare *Model checkpoint the *ForCausalLM names the rules use."""
        return with_prefix(state, PREFIX, keep=("lm_head.weight",))

    def variant(self, cfg: dict[str, Any], where: str) -> dict[str, Any]:
        """The GPTConfig fields where the family differs (biases), after refusing what plait
        cannot compute."""
        bias = cfg.get("attention_bias", False)
        require(cfg, "mlp_bias", cfg.get("mlp_bias", False) == bias,
                f"plait's one bias flag needs it equal to attention_bias={bias!r}", where)
        return {"bias": bool(bias)}

    def variant_to_hf(self, config: GPTConfig) -> dict[str, Any]:
        return {"attention_bias": config.bias, "mlp_bias": config.bias}

    def config_from_hf(self, cfg: dict[str, Any], where: str) -> GPTConfig:
        """GPTConfig from a ``config.json``; unsupported values raise naming the field."""
        bare = self.architecture.replace("ForCausalLM", "Model")
        arch = (cfg.get("architectures") or [self.architecture])[0]
        require(cfg, "architectures", arch in (self.architecture, bare),
                f"supported: {self.architecture}, {bare}", where)
        fields = fields_from_hf(self.FIELDS, cfg, where)
        if arch == bare:  # no LM head of its own: the token embedding is the only one there is
            fields["tie_embeddings"] = True
        even = fields["n_embd"] // fields["n_head"]
        head_dim = cfg.get("head_dim") or even
        return GPTConfig(**fields, **self.variant(cfg, where),
                         d_head=None if head_dim == even else head_dim,
                         pos_encoding="rope", rope_base=rope_theta(cfg, where), norm="rmsnorm")

    def config_to_hf(self, config: GPTConfig) -> dict[str, Any]:
        """A ``config.json`` for ``config``; features the family lacks raise naming them."""
        require_export(_plain(config), self.LAYOUT, self.name)
        theta = config.rope_base
        return {"architectures": [self.architecture], "model_type": self.model_type,
                **fields_to_hf(self.FIELDS, config, self.name),
                "num_key_value_heads": config.kv_heads, "head_dim": config.head_dim,
                # n_inner unset means 4 * n_embd in plait; transformers needs the number
                "intermediate_size": config.inner_dim,
                # both spellings: transformers 5 reads rope_parameters, 4.x rope_theta
                "rope_parameters": {"rope_type": "default", "rope_theta": theta},
                "rope_theta": theta, **self.variant_to_hf(config),
                # plait's config has no generation ids: write none rather than let transformers
                # assume LlamaConfig's 1 and 2 (export's ``extra`` fills them in when known)
                "bos_token_id": None, "eos_token_id": None, "pad_token_id": None}

    def exports(self, model: nn.Module) -> bool:
        return type(model) is GPT and all(getattr(_plain(model.config), k) == v
                                          for k, v in self.LAYOUT.items())


class MistralFamily(LlamaFamily):
    name = "Mistral"
    model_type = "mistral"
    architecture = "MistralForCausalLM"
    FIELDS = decoder_fields(vocab=32000, inner=14336, n_pos=MISTRAL_POSITIONS, n_kv=8)

    def variant(self, cfg: dict[str, Any], where: str) -> dict[str, Any]:
        window = cfg.get("sliding_window", 4096)
        n_pos = cfg.get("max_position_embeddings", MISTRAL_POSITIONS)
        require(cfg, "sliding_window", window is None or window >= n_pos,
                f"plait attends to every earlier position: needs null or >= max_position_"
                f"embeddings={n_pos}", where)
        return {"bias": False}

    def variant_to_hf(self, config: GPTConfig) -> dict[str, Any]:
        return {"sliding_window": None}

    def exports(self, model: nn.Module) -> bool:
        return False  # Llama writes the same computation; it is the one chosen


class Qwen2Family(LlamaFamily):
    name = "Qwen2"
    model_type = "qwen2"
    architecture = "Qwen2ForCausalLM"
    FIELDS = decoder_fields(vocab=151936, inner=22016, n_pos=32768, n_kv=32)
    LAYOUT = {**LlamaFamily.LAYOUT, "bias": False, "qkv_bias": True}

    def variant(self, cfg: dict[str, Any], where: str) -> dict[str, Any]:
        require(cfg, "use_sliding_window", not cfg.get("use_sliding_window", False),
                "plait supports only false", where)
        layers = cfg.get("layer_types") or ["full_attention"]
        require(cfg, "layer_types", set(layers) == {"full_attention"},
                "plait supports full_attention layers only", where)
        return {"bias": False, "qkv_bias": True}  # q, k, v have biases; o_proj and the MLP none

    def variant_to_hf(self, config: GPTConfig) -> dict[str, Any]:
        return {"use_sliding_window": False}
