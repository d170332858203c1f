"""ALBERT (``model_type: albert``) <-> :class:`plait.models.bert.Bert` (``embedding_size``,
``share_layers``).

ALBERT (Lan et al. 2019) keeps BERT's post-norm encoder and changes two things: the embeddings
are ``embedding_size`` wide and a Linear (``embedding_hidden_mapping_in``) lifts them to the
hidden width, and one layer's weights serve every layer (one group of one layer:
``num_hidden_groups = inner_group_num = 1``, the released models' setting). The masked-LM head
projects back down to ``embedding_size`` before the tied decoder; the pooler is a bare Linear.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from plait.hf.bert import (
    PLAIT_ONLY,
    BertFamily,
    _pair,
    classifier_rules,
    label_fields,
    normalize_layernorm_names,
)
from plait.hf.family import Field, encoder_fields, fields_from_hf, require, with_prefix
from plait.hf.keymap import Rule, expand
from plait.models.bert import BertConfig

L = "albert.encoder.albert_layer_groups.0.albert_layers.0"
B = "encoder.blocks.0"  # the one shared block


class AlbertFamily(BertFamily):
    name = "ALBERT"
    prefix = "albert"
    arch_prefix = "Albert"
    FIELDS = (
        Field("vocab_size", "vocab_size", 30000),
        Field("embedding_size", "embedding_size", 128),
        Field("max_position_embeddings", "block_size", 512),
        Field("type_vocab_size", "type_vocab_size", 2),
        *encoder_fields(4096, 64, 16384, "gelu_new", 1e-12),
        Field("classifier_dropout_prob", "classifier_dropout", 0.1),
        Field("tie_word_embeddings", "tie_embeddings", True),
    )
    LAYOUT = {"share_layers": True, "pos_offset": 0, **PLAIT_ONLY}

    def rules(self, config: BertConfig) -> list[Rule]:
        E = "albert.embeddings"
        tied = config.tie_embeddings
        return expand([
            Rule(f"{E}.word_embeddings.weight", "wte.weight"),
            Rule(f"{E}.position_embeddings.weight", "pos.wpe.weight"),
            Rule(f"{E}.token_type_embeddings.weight", "wtt.weight"),
            *_pair(f"{E}.LayerNorm", "norm_emb"),
            Rule(f"{E}.position_ids", None),
            Rule(f"{E}.token_type_ids", None),
            *_pair("albert.encoder.embedding_hidden_mapping_in", "emb_proj"),
            *[Rule(tuple(f"{L}.attention.{n}.{p}" for n in ("query", "key", "value")),
                   f"{B}.attn.qkv.{p}", "cat") for p in ("weight", "bias")],
            *_pair(f"{L}.attention.dense", f"{B}.attn.proj"),
            *_pair(f"{L}.attention.LayerNorm", f"{B}.norm_attn"),
            *_pair(f"{L}.ffn", f"{B}.mlp.fc"),
            *_pair(f"{L}.ffn_output", f"{B}.mlp.proj"),
            *_pair(f"{L}.full_layer_layer_norm", f"{B}.norm_mlp"),
            *_pair("albert.pooler", "pooler.dense"),
            *_pair("predictions.dense", "head.transform"),
            *_pair("predictions.LayerNorm", "head.norm"),
            Rule("predictions.bias", "head.decoder.bias"),
            Rule("predictions.decoder.bias", None),  # the same tensor as .bias
            Rule("predictions.decoder.weight", None if tied else "head.decoder.weight"),
            *classifier_rules(),
        ], 0)

    def normalize(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        heads = ("predictions.", "classifier.")
        state = normalize_layernorm_names(state)
        if any(k.startswith("albert.") for k in state):
            return state
        return with_prefix(state, "albert.", keep=tuple(k for k in state if k.startswith(heads)))

    def config_from_hf(self, cfg: dict[str, Any], where: str) -> BertConfig:
        head = self.check(cfg, where)
        for field in ("num_hidden_groups", "inner_group_num"):
            require(cfg, field, cfg.get(field, 1) == 1, "plait shares one layer: 1", where)
        return BertConfig(**fields_from_hf(self.FIELDS, cfg, where), share_layers=True,
                          pad_token_id=cfg.get("pad_token_id") or 0, head=head,
                          **label_fields(cfg))

    def config_to_hf(self, config: BertConfig) -> dict[str, Any]:
        out = super().config_to_hf(config)
        out.update(embedding_size=config.embed_dim, num_hidden_groups=1, inner_group_num=1)
        return out
