"""T5 (``model_type: t5``, T5 and T5 v1.1 / Flan-T5) <-> :class:`Seq2Seq`.

T5 (Raffel et al. 2019) is the pre-norm encoder–decoder with RMSNorm and no biases anywhere,
no position vectors at all but a learned bias per head and bucket of relative distance (kept in
the first layer of each stack and shared by every layer), attention logits left unscaled (the
1/sqrt(d) is folded into its initialisation), a head width ``d_kv`` that need not be
d_model / heads, and, with tied embeddings, the last hidden state scaled by d_model**-0.5
before the output layer. Its feed-forward is ReLU (T5) or GEGLU (``gated-gelu``, v1.1), whose
``wi_0`` (gate) and ``wi_1`` are fused into plait's ``fc``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from plait.hf.family import Family, Field, fields_from_hf, fields_to_hf, require, require_export
from plait.hf.keymap import Rule, expand
from plait.models.seq2seq import Seq2Seq, Seq2SeqConfig

# feed_forward_proj -> plait's mlp ("gated-gelu" is the tanh GELU: transformers' gelu_new)
FEED_FORWARD = (("relu", "relu"), ("gelu", "gelu"), ("gated-gelu", "geglu"),
                ("gated-silu", "swiglu"))
GATED = {"geglu", "swiglu"}


def _attention(hf: str, plait: str, self_attention: bool) -> list[Rule]:
    rules = [Rule(f"{hf}.o.weight", f"{plait}.proj.weight")]
    if self_attention:
        return rules + [Rule((f"{hf}.q.weight", f"{hf}.k.weight", f"{hf}.v.weight"),
                             f"{plait}.qkv.weight", "cat")]
    return rules + [Rule(f"{hf}.q.weight", f"{plait}.q.weight"),
                    Rule((f"{hf}.k.weight", f"{hf}.v.weight"), f"{plait}.kv.weight", "cat")]


def _stack(hf: str, plait: str, decoder: bool, gated: bool) -> list[Rule]:
    L, B = f"{hf}.block.{{i}}.layer", f"{plait}.blocks.{{i}}"
    ff = 2 if decoder else 1  # the feed-forward's sublayer index
    dense = f"{L}.{ff}.DenseReluDense"
    rules = [
        *_attention(f"{L}.0.SelfAttention", f"{B}.attn", True),
        Rule(f"{L}.0.layer_norm.weight", f"{B}.norm_attn.weight"),
        Rule((f"{dense}.wi_0.weight", f"{dense}.wi_1.weight") if gated else f"{dense}.wi.weight",
             f"{B}.mlp.fc.weight", "cat" if gated else ""),
        Rule(f"{dense}.wo.weight", f"{B}.mlp.proj.weight"),
        Rule(f"{L}.{ff}.layer_norm.weight", f"{B}.norm_mlp.weight"),
    ]
    if decoder:
        rules += [*_attention(f"{L}.1.EncDecAttention", f"{B}.cross_attn", False),
                  Rule(f"{L}.1.layer_norm.weight", f"{B}.norm_cross.weight")]
    return rules


class T5Family(Family):
    name = "T5"
    model_class = Seq2Seq
    FIELDS = (
        Field("vocab_size", "vocab_size", 32128),
        Field("d_model", "n_embd", 512),
        Field("d_kv", "d_head", 64),
        Field("d_ff", "n_inner", 2048),
        Field("num_layers", "n_layer", 6),
        Field("num_heads", "n_head", 8),
        Field("feed_forward_proj", "mlp", "relu", FEED_FORWARD),
        Field("relative_attention_num_buckets", "rel_buckets", 32),
        Field("relative_attention_max_distance", "rel_max_distance", 128),
        Field("dropout_rate", "dropout", 0.1),
        Field("layer_norm_epsilon", "norm_eps", 1e-6),
        Field("tie_word_embeddings", "tie_embeddings", True),
        Field("pad_token_id", "pad_token_id", 0),
        Field("eos_token_id", "eos_token_id", 1),
    )
    LAYOUT = {"pre_norm": True, "norm": "rmsnorm", "bias": False, "pos_encoding": "relative",
              "decoder_pos_encoding": None,
              "embed_scale": False, "embed_norm": False, "share_embeddings": True,
              "final_logits_bias": False, "attn_scale": 1.0}

    def rules(self, config: Seq2SeqConfig) -> list[Rule]:
        gated = config.mlp in GATED
        top = [
            Rule("shared.weight", "wte.weight"),
            Rule("encoder.embed_tokens.weight", None),  # the shared table again
            Rule("decoder.embed_tokens.weight", None),
            Rule("lm_head.weight", None if config.tie_embeddings else "lm_head.weight"),
            Rule("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                 "enc_pos.rel_bias.weight"),
            Rule("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                 "dec_pos.rel_bias.weight"),
            Rule("encoder.final_layer_norm.weight", "encoder.norm.weight"),
            Rule("decoder.final_layer_norm.weight", "decoder.norm.weight"),
        ]
        return (top + expand(_stack("encoder", "encoder", False, gated), config.n_layer)
                + expand(_stack("decoder", "decoder", True, gated), config.decoder_layers))

    def config_from_hf(self, cfg: dict[str, Any], where: str) -> Seq2SeqConfig:
        arch = (cfg.get("architectures") or ["T5ForConditionalGeneration"])[0]
        require(cfg, "architectures", arch == "T5ForConditionalGeneration",
                "supported: T5ForConditionalGeneration", where)
        fields = fields_from_hf(self.FIELDS, cfg, where)
        tied = fields["tie_embeddings"]  # adjust() unties it if the checkpoint has its own head
        return Seq2SeqConfig(
            **fields, **self.LAYOUT,
            n_decoder_layer=cfg.get("num_decoder_layers") or fields["n_layer"],
            decoder_start_token_id=cfg.get("decoder_start_token_id", fields["pad_token_id"]),
            # transformers scales the decoder output whenever the output layer is tied
            head_scale=bool(cfg.get("scale_decoder_outputs", tied)),
            block_size=1 << 20)  # relative positions: no table sets a length limit

    def adjust(self, config: Seq2SeqConfig, state: dict[str, Tensor]) -> Seq2SeqConfig:
        """An output layer saved apart from the token table is its own (T5 v1.1), whatever
        ``tie_word_embeddings`` says (transformers 5 rewrites that flag to true)."""
        head, table = state.get("lm_head.weight"), state.get("shared.weight")
        if head is not None and table is not None and not torch.equal(head, table):
            return config.replace(tie_embeddings=False)
        return config

    def config_to_hf(self, config: Seq2SeqConfig) -> dict[str, Any]:
        require_export(config, self.LAYOUT, self.name)
        return {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
                **fields_to_hf(self.FIELDS, config, self.name),
                "d_kv": config.head_dim, "num_decoder_layers": config.decoder_layers,
                "decoder_start_token_id": config.decoder_start_token_id,
                "scale_decoder_outputs": config.head_scale, "is_encoder_decoder": True}
