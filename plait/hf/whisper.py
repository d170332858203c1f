"""Whisper (``model_type: whisper``) <-> :class:`plait.models.whisper.Whisper`.

``WhisperForConditionalGeneration`` (and the bare ``WhisperModel``, whose keys lack the
``model.`` prefix and which has no output layer: its tied one is the token table) names its
layers as BART does (:func:`plait.hf.bart.layer_rules`; pre-norm, so each norm runs before its
sublayer), with three differences: the key projections have no bias (plait's fused bias keeps
zeros there, ``no_key_bias``), the encoder starts with two convolutions and a stored table of
fixed sinusoids, and each stack ends with a LayerNorm. The output layer ``proj_out`` is the
decoder's token table unless ``tie_word_embeddings`` is false.

``scale_embedding`` is read and ignored: ``transformers`` computes the scale but never applies
it, so neither does plait (export writes false). Training-only fields (dropouts other than
``dropout``, layer drop, SpecAugment) do nothing at inference and are not read. Export writes
``suppress_tokens`` and ``begin_suppress_tokens`` as null, so that ``transformers`` decodes
the written folder as plait does (plait applies neither; see :mod:`plait.models.whisper`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from plait.hf.bart import _pair, check_symmetric, layer_rules
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
from plait.models.whisper import Whisper, WhisperConfig

ARCHITECTURES = ("WhisperForConditionalGeneration", "WhisperModel")
FUSED_BIASES = (".attn.qkv.bias", ".cross_attn.kv.bias")


def without_key_bias(rule: Rule) -> Rule:
    """A BART fused-bias rule (q, k, v or k, v) without the key bias Whisper does not have."""
    if rule.plait is None or not rule.plait.endswith(FUSED_BIASES):
        return rule
    return Rule(tuple(n for n in rule.hf_names if ".k_proj." not in n), rule.plait, "no_key_bias")


def stack_rules(hf: str, plait: str, decoder: bool) -> list[Rule]:
    """One Whisper stack's layers, and the LayerNorm that ends it."""
    layers = [without_key_bias(r) for r in layer_rules(hf, plait, decoder)]
    return [*layers, *_pair(f"{hf}.layer_norm", f"{plait}.norm")]


class WhisperFamily(Family):
    name = "Whisper"
    model_class = Whisper
    FIELDS = (
        Field("vocab_size", "vocab_size", 51865),
        Field("d_model", "n_embd", 384),
        Field("encoder_layers", "n_layer", 4),
        Field("decoder_layers", "n_decoder_layer", 4),
        Field("encoder_attention_heads", "n_head", 6),
        Field("encoder_ffn_dim", "n_inner", 1536),
        Field("num_mel_bins", "n_mels", 80),
        Field("max_source_positions", "n_audio_ctx", 1500),
        Field("max_target_positions", "block_size", 448),
        Field("activation_function", "mlp", "gelu", ACTIVATIONS),
        Field("dropout", "dropout", 0.0),
        Field("tie_word_embeddings", "tie_embeddings", True),
        Field("pad_token_id", "pad_token_id", 50256),
        Field("eos_token_id", "eos_token_id", 50256),
        Field("decoder_start_token_id", "decoder_start_token_id", 50257),
    )
    LAYOUT = {"pre_norm": True, "norm": "layernorm", "norm_eps": 1e-5, "bias": True,
              "pos_encoding": "learned", "decoder_pos_encoding": None, "pos_offset": 0,
              "embed_scale": False, "embed_norm": False, "share_embeddings": True,
              "final_logits_bias": False, "head_scale": False, "attn_scale": None,
              "d_head": None, "forced_bos_token_id": None, "forced_eos_token_id": None}

    def rules(self, config: WhisperConfig) -> list[Rule]:
        E, D = "model.encoder", "model.decoder"
        top = [
            Rule(f"{D}.embed_tokens.weight", "wte.weight"),
            Rule("proj_out.weight", None if config.tie_embeddings else "lm_head.weight"),
            Rule(f"{E}.embed_positions.weight", "enc_pos.wpe.weight"),
            Rule(f"{D}.embed_positions.weight", "dec_pos.wpe.weight"),
            *_pair(f"{E}.conv1", "stem.conv1"),
            *_pair(f"{E}.conv2", "stem.conv2"),
        ]
        return (top + expand(stack_rules(E, "encoder", False), config.n_layer)
                + expand(stack_rules(D, "decoder", True), config.decoder_layers))

    def normalize(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A bare ``WhisperModel``'s keys under ``model.``, as the generation class saves them."""
        return with_prefix(state, "model.", keep=("proj_out.weight",))

    def config_from_hf(self, cfg: dict[str, Any], where: str) -> WhisperConfig:
        arch = (cfg.get("architectures") or [ARCHITECTURES[0]])[0]
        require(cfg, "architectures", arch in ARCHITECTURES,
                f"supported: {', '.join(ARCHITECTURES)}", where)
        check_symmetric(cfg, where)
        fields = fields_from_hf(self.FIELDS, cfg, where)
        for name in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):  # same names
            require(cfg, name, isinstance(fields[name], int), "plait needs one token id", where)
        if arch == "WhisperModel":  # no output layer of its own: logits read the token table
            fields["tie_embeddings"] = True
        return WhisperConfig(**fields, **self.LAYOUT)

    def config_to_hf(self, config: WhisperConfig) -> dict[str, Any]:
        require_export(config, self.LAYOUT, self.name)
        return {"architectures": [ARCHITECTURES[0]], "model_type": "whisper",
                **fields_to_hf(self.FIELDS, config, self.name),
                "decoder_layers": config.decoder_layers, "decoder_attention_heads": config.n_head,
                "decoder_ffn_dim": config.inner_dim, "encoder_ffn_dim": config.inner_dim,
                "scale_embedding": False, "is_encoder_decoder": True,
                "suppress_tokens": None, "begin_suppress_tokens": None}
