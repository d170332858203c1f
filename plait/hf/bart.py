"""BART (``model_type: bart``) <-> :class:`plait.models.seq2seq.Seq2Seq`.

BART (Lewis et al. 2019) is the post-norm encoder–decoder with learned positions whose table
starts at row 2 (``pos_offset``), a LayerNorm after the embeddings of each stack, one token
table shared by both stacks and the output layer, and a trained bias on the logits. Separate
query/key/value projections are fused into plait's ``qkv``; the decoder's cross-attention keeps
a query projection and a fused key/value one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from plait.hf.family import (
    ACTIVATIONS,
    Family,
    Field,
    fields_from_hf,
    fields_to_hf,
    require,
    require_export,
)
from plait.hf.keymap import Rule, expand
from plait.models.seq2seq import Seq2Seq, Seq2SeqConfig


def _pair(hf: str, plait: str, transform: str = "") -> list[Rule]:
    """A Linear or a norm: weight and bias."""
    return [Rule(f"{hf}.{p}", f"{plait}.{p}", transform) for p in ("weight", "bias")]


def _fused(hf: str, names: tuple[str, ...], plait: str) -> list[Rule]:
    """Separate projections (q, k, v or k, v) -> one fused Linear, rows stacked in order."""
    return [Rule(tuple(f"{hf}.{n}.{p}" for n in names), f"{plait}.{p}", "cat")
            for p in ("weight", "bias")]


def layer_rules(hf: str, plait: str, decoder: bool) -> list[Rule]:
    """One BART/Marian layer -> a plait block (post-norm names: the norm after each sublayer)."""
    L, B = f"{hf}.layers.{{i}}", f"{plait}.blocks.{{i}}"
    rules = [
        *_fused(f"{L}.self_attn", ("q_proj", "k_proj", "v_proj"), f"{B}.attn.qkv"),
        *_pair(f"{L}.self_attn.out_proj", f"{B}.attn.proj"),
        *_pair(f"{L}.self_attn_layer_norm", f"{B}.norm_attn"),
        *_pair(f"{L}.fc1", f"{B}.mlp.fc"),
        *_pair(f"{L}.fc2", f"{B}.mlp.proj"),
        *_pair(f"{L}.final_layer_norm", f"{B}.norm_mlp"),
    ]
    if decoder:
        rules += [
            *_pair(f"{L}.encoder_attn.q_proj", f"{B}.cross_attn.q"),
            *_fused(f"{L}.encoder_attn", ("k_proj", "v_proj"), f"{B}.cross_attn.kv"),
            *_pair(f"{L}.encoder_attn.out_proj", f"{B}.cross_attn.proj"),
            *_pair(f"{L}.encoder_attn_layer_norm", f"{B}.norm_cross"),
        ]
    return rules


def seq2seq_rules(config: Seq2SeqConfig, positions: bool, embed_norm: bool) -> list[Rule]:
    """The tensor map of a BART-layout checkpoint (``model.`` body, ``lm_head``)."""
    shared = config.share_embeddings
    top = [
        # one table for both stacks (the stacks' copies, when saved, are that table again),
        # or each stack its own (transformers 5 unties them all when tie_word_embeddings is off)
        Rule("model.shared.weight", "wte.weight" if shared else None),
        Rule("model.encoder.embed_tokens.weight", None if shared else "wte.weight"),
        Rule("model.decoder.embed_tokens.weight", None if shared else "dec_wte.weight"),
        Rule("lm_head.weight", None if config.tie_embeddings else "lm_head.weight"),
        Rule("final_logits_bias", "logits_bias"),
        Rule("model.encoder.embed_positions.weight", "enc_pos.wpe.weight" if positions else None),
        Rule("model.decoder.embed_positions.weight", "dec_pos.wpe.weight" if positions else None),
    ]
    if embed_norm:
        top += [*_pair("model.encoder.layernorm_embedding", "enc_norm"),
                *_pair("model.decoder.layernorm_embedding", "dec_norm")]
    return (top + expand(layer_rules("model.encoder", "encoder", False), config.n_layer)
            + expand(layer_rules("model.decoder", "decoder", True), config.decoder_layers))


def own_tables(state: dict[str, Tensor]) -> bool:
    """The checkpoint keeps a token table per stack, not the shared one (transformers 5 with
    ``tie_word_embeddings: false``, or Marian's ``share_encoder_decoder_embeddings: false``)."""
    enc, dec = "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"
    shared = state.get("model.shared.weight")
    return enc in state and dec in state and not (
        shared is not None and torch.equal(state[enc], shared) and torch.equal(state[dec], shared))


def check_symmetric(cfg: dict[str, Any], where: str) -> None:
    """plait's two stacks share head count and MLP width; refuse checkpoints that differ."""
    for enc, dec in (("encoder_attention_heads", "decoder_attention_heads"),
                     ("encoder_ffn_dim", "decoder_ffn_dim")):
        require(cfg, dec, cfg.get(dec, cfg.get(enc)) == cfg.get(enc),
                f"plait needs {dec} == {enc} ({cfg.get(enc)})", where)


# config.json <-> Seq2SeqConfig, both BART and Marian
SEQ2SEQ_FIELDS = (
    Field("vocab_size", "vocab_size", 50265),
    Field("d_model", "n_embd", 1024),
    Field("encoder_layers", "n_layer", 12),
    Field("decoder_layers", "n_decoder_layer", 12),
    Field("encoder_attention_heads", "n_head", 16),
    Field("encoder_ffn_dim", "n_inner", 4096),
    Field("max_position_embeddings", "block_size", 1024),
    Field("dropout", "dropout", 0.1),
    Field("scale_embedding", "embed_scale", False),
    Field("tie_word_embeddings", "tie_embeddings", True),
    Field("pad_token_id", "pad_token_id", 1),
    Field("eos_token_id", "eos_token_id", 2),
    Field("decoder_start_token_id", "decoder_start_token_id", 2),
    Field("forced_bos_token_id", "forced_bos_token_id", None),
)


class BartFamily(Family):
    name = "BART"
    model_class = Seq2Seq
    FIELDS = (*SEQ2SEQ_FIELDS, Field("activation_function", "mlp", "gelu", ACTIVATIONS),
              Field("forced_eos_token_id", "forced_eos_token_id", 2))
    LAYOUT = {"pre_norm": False, "norm": "layernorm", "bias": True, "pos_encoding": "learned",
              "decoder_pos_encoding": None, "pos_offset": 2, "embed_norm": True,
              "final_logits_bias": True, "head_scale": False, "attn_scale": None}

    def rules(self, config: Seq2SeqConfig) -> list[Rule]:
        return seq2seq_rules(config, positions=True, embed_norm=True)

    def adjust(self, config: Seq2SeqConfig, state: dict[str, Tensor]) -> Seq2SeqConfig:
        return config.replace(share_embeddings=not own_tables(state))

    def config_from_hf(self, cfg: dict[str, Any], where: str) -> Seq2SeqConfig:
        arch = (cfg.get("architectures") or ["BartForConditionalGeneration"])[0]
        require(cfg, "architectures", arch == "BartForConditionalGeneration",
                "supported: BartForConditionalGeneration", where)
        check_symmetric(cfg, where)
        for field in ("add_bias_logits", "normalize_before", "add_final_layer_norm"):
            require(cfg, field, not cfg.get(field, False), "plait supports only false", where)
        return Seq2SeqConfig(**fields_from_hf(self.FIELDS, cfg, where), **self.LAYOUT)

    def config_to_hf(self, config: Seq2SeqConfig) -> dict[str, Any]:
        require_export(config, self.LAYOUT, self.name)
        if config.share_embeddings != config.tie_embeddings:
            raise ValueError(f"cannot export to BART: share_embeddings={config.share_embeddings}"
                             f" with tie_embeddings={config.tie_embeddings} (transformers ties"
                             " both or neither)")
        out = {"architectures": ["BartForConditionalGeneration"], "model_type": "bart",
               **fields_to_hf(self.FIELDS, config, self.name),
               "decoder_attention_heads": config.n_head, "decoder_ffn_dim": config.inner_dim,
               "encoder_ffn_dim": config.inner_dim, "is_encoder_decoder": True}
        out["decoder_layers"] = config.decoder_layers
        return out
