"""The Transformer, piece by piece: attention, positions, feed-forward, norms, blocks, LoRA,
int8 / int4 weights."""

from plait.nn.attention import (
    AttnInputs,
    CrossAttention,
    KVCache,
    SelfAttention,
    dropout_layer,
    make_attn_mask,
)
from plait.nn.layers import (
    MLP,
    Block,
    PostNormBlock,
    PreNormBlock,
    RMSNorm,
    Stack,
    SwiGLU,
    checkpoint_activations,
    make_mlp,
    make_norm,
    normal_init,
)
from plait.nn.linear import Linear, gemv_layout, row_major
from plait.nn.lora import LoRALinear, add_lora, merge, unmerge
from plait.nn.positions import (
    ALiBi,
    Learned,
    NoPositions,
    PositionEncoding,
    RelativeBias,
    Rotary,
    Sinusoidal,
    apply_rope,
    sincos_2d,
    whisper_sinusoids,
)
from plait.nn.quant import Int4Linear, Int8Linear, QuantLinear, quantize

__all__ = [
    "ALiBi", "AttnInputs", "Block", "CrossAttention", "Int4Linear", "Int8Linear", "KVCache",
    "Learned", "Linear", "LoRALinear", "MLP", "QuantLinear",
    "NoPositions", "PositionEncoding", "PostNormBlock", "PreNormBlock", "RMSNorm",
    "RelativeBias", "Rotary", "SelfAttention", "Sinusoidal", "Stack", "SwiGLU", "apply_rope",
    "add_lora", "checkpoint_activations", "dropout_layer", "gemv_layout",
    "make_attn_mask", "make_mlp", "make_norm", "merge", "normal_init", "quantize", "row_major",
    "sincos_2d",
    "unmerge", "whisper_sinusoids",
]
