"""Marian (``model_type: marian``, the OPUS-MT translators) <-> :class:`Seq2Seq`.

BART's layout (:mod:`plait.hf.bart`) with fixed sinusoidal positions laid out as halves (every
sine, then every cosine; not saved in the checkpoint), token embeddings scaled by sqrt(d_model)
when ``scale_embedding``, no LayerNorm after the embeddings, and a decoder that starts from the
padding token. ``share_encoder_decoder_embeddings: false`` keeps a second token table for the
decoder (same vocabulary size).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from plait.hf.bart import SEQ2SEQ_FIELDS, check_symmetric, own_tables, seq2seq_rules
from plait.hf.family import (
    ACTIVATIONS,
    Family,
    Field,
    fields_from_hf,
    fields_to_hf,
    require,
    require_export,
)
from plait.hf.keymap import Rule
from plait.models.seq2seq import Seq2Seq, Seq2SeqConfig


class MarianFamily(Family):
    name = "Marian"
    model_class = Seq2Seq
    FIELDS = (*SEQ2SEQ_FIELDS, Field("activation_function", "mlp", "gelu", ACTIVATIONS),
              Field("share_encoder_decoder_embeddings", "share_embeddings", True),
              Field("forced_eos_token_id", "forced_eos_token_id", None))
    LAYOUT = {"pre_norm": False, "norm": "layernorm", "bias": True, "decoder_pos_encoding": None,
              "pos_encoding": "sinusoidal", "sinusoid_layout": "halves", "pos_offset": 0,
              "embed_norm": False, "final_logits_bias": True, "head_scale": False,
              "attn_scale": None}

    def rules(self, config: Seq2SeqConfig) -> list[Rule]:
        return seq2seq_rules(config, positions=False, embed_norm=False)

    def adjust(self, config: Seq2SeqConfig, state: dict[str, Tensor]) -> Seq2SeqConfig:
        return config.replace(share_embeddings=not own_tables(state))

    def config_from_hf(self, cfg: dict[str, Any], where: str) -> Seq2SeqConfig:
        arch = (cfg.get("architectures") or ["MarianMTModel"])[0]
        require(cfg, "architectures", arch == "MarianMTModel", "supported: MarianMTModel", where)
        check_symmetric(cfg, where)
        vocab = cfg.get("vocab_size", 58101)
        require(cfg, "decoder_vocab_size", cfg.get("decoder_vocab_size") in (None, vocab),
                f"plait needs decoder_vocab_size == vocab_size ({vocab})", where)
        return Seq2SeqConfig(**fields_from_hf(self.FIELDS, cfg, where), **self.LAYOUT)

    def config_to_hf(self, config: Seq2SeqConfig) -> dict[str, Any]:
        require_export(config, self.LAYOUT, self.name)
        return {"architectures": ["MarianMTModel"], "model_type": "marian",
                **fields_to_hf(self.FIELDS, config, self.name),
                "decoder_layers": config.decoder_layers, "decoder_vocab_size": config.vocab_size,
                "decoder_attention_heads": config.n_head, "decoder_ffn_dim": config.inner_dim,
                "encoder_ffn_dim": config.inner_dim, "is_encoder_decoder": True}
