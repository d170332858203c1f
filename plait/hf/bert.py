"""BERT (``model_type: bert``) <-> :class:`plait.models.bert.Bert`.

``BertModel`` loads with head ``"none"`` (encoder + pooler), ``BertForMaskedLM`` with ``"mlm"``,
``BertForSequenceClassification`` with ``"classify"``. Hugging Face keeps separate query, key
and value projections; plait's attention has one fused ``qkv`` Linear, so the three are
concatenated on import ("cat") and split on export.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from plait.hf.family import (
    Family,
    Field,
    encoder_fields,
    fields_from_hf,
    fields_to_hf,
    label_maps,
    require,
    with_prefix,
    without_prefix,
)
from plait.hf.keymap import Rule, expand
from plait.models.bert import Bert, BertConfig

HEADS = {"BertModel": "none", "BertForMaskedLM": "mlm",
         "BertForSequenceClassification": "classify"}
ARCHS = {v: k for k, v in HEADS.items()}

PREFIX = "bert."  # the encoder inside the *For* classes; a bare BertModel has none
L = "bert.encoder.layer.{i}"
B = "encoder.blocks.{i}"
E = "bert.embeddings"
RULES = (
    Rule(f"{E}.word_embeddings.weight", "wte.weight"),
    Rule(f"{E}.position_embeddings.weight", "pos.wpe.weight"),
    Rule(f"{E}.token_type_embeddings.weight", "wtt.weight"),
    Rule(f"{E}.LayerNorm.weight", "norm_emb.weight"),
    Rule(f"{E}.LayerNorm.bias", "norm_emb.bias"),
    Rule(f"{E}.position_ids", None),  # a buffer older versions saved
    Rule(tuple(f"{L}.attention.self.{n}.weight" for n in ("query", "key", "value")),
         f"{B}.attn.qkv.weight", "cat"),
    Rule(tuple(f"{L}.attention.self.{n}.bias" for n in ("query", "key", "value")),
         f"{B}.attn.qkv.bias", "cat"),
    Rule(f"{L}.attention.output.dense.weight", f"{B}.attn.proj.weight"),
    Rule(f"{L}.attention.output.dense.bias", f"{B}.attn.proj.bias"),
    Rule(f"{L}.attention.output.LayerNorm.weight", f"{B}.norm_attn.weight"),
    Rule(f"{L}.attention.output.LayerNorm.bias", f"{B}.norm_attn.bias"),
    Rule(f"{L}.intermediate.dense.weight", f"{B}.mlp.fc.weight"),
    Rule(f"{L}.intermediate.dense.bias", f"{B}.mlp.fc.bias"),
    Rule(f"{L}.output.dense.weight", f"{B}.mlp.proj.weight"),
    Rule(f"{L}.output.dense.bias", f"{B}.mlp.proj.bias"),
    Rule(f"{L}.output.LayerNorm.weight", f"{B}.norm_mlp.weight"),
    Rule(f"{L}.output.LayerNorm.bias", f"{B}.norm_mlp.bias"),
    Rule("bert.pooler.dense.weight", "pooler.dense.weight"),
    Rule("bert.pooler.dense.bias", "pooler.dense.bias"),
    Rule("cls.predictions.transform.dense.weight", "head.transform.weight"),
    Rule("cls.predictions.transform.dense.bias", "head.transform.bias"),
    Rule("cls.predictions.transform.LayerNorm.weight", "head.norm.weight"),
    Rule("cls.predictions.transform.LayerNorm.bias", "head.norm.bias"),
    Rule("cls.predictions.bias", "head.decoder.bias"),
    Rule("cls.predictions.decoder.bias", None),  # the same tensor as cls.predictions.bias
    Rule("classifier.weight", "head.out.weight"),
    Rule("classifier.bias", "head.out.bias"),
)




class BertFamily(Family):
    name = "BERT"
    model_class = Bert
    FIELDS = (
        Field("vocab_size", "vocab_size", 30522),
        Field("max_position_embeddings", "block_size", 512),
        Field("type_vocab_size", "type_vocab_size", 2),
        *encoder_fields(768, 12, 3072, "gelu", 1e-12, p=0.1),
        Field("classifier_dropout", "classifier_dropout", None),
        Field("tie_word_embeddings", "tie_embeddings", True),
    )
    RULES = RULES

    def rules(self, config: BertConfig) -> list[Rule]:
        tied = config.tie_embeddings
        decoder = Rule("cls.predictions.decoder.weight", None if tied else "head.decoder.weight")
        return expand([*self.RULES, decoder], config.n_layer)

    def normalize(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Prefix a bare BertModel's keys; rename TF-era LayerNorm ``gamma``/``beta``."""
        renamed = {k.replace("LayerNorm.gamma", "LayerNorm.weight")
                   .replace("LayerNorm.beta", "LayerNorm.bias"): v for k, v in state.items()}
        return with_prefix(renamed, PREFIX)

    def denormalize(self, state: dict[str, Tensor], hf_cfg: dict[str, Any]) -> dict[str, Tensor]:
        bare = hf_cfg["architectures"] == ["BertModel"]
        return without_prefix(state, PREFIX) if bare else state

    def config_from_hf(self, cfg: dict[str, Any], where: str) -> BertConfig:
        """BertConfig from a BERT ``config.json``; unsupported values raise naming the field."""
        arch = (cfg.get("architectures") or ["BertModel"])[0]
        require(cfg, "architectures", arch in HEADS, f"supported: {', '.join(HEADS)}", where)
        pos = cfg.get("position_embedding_type", "absolute")
        require(cfg, "position_embedding_type", pos == "absolute", "plait supports 'absolute'",
                where)
        for field in ("is_decoder", "add_cross_attention"):
            require(cfg, field, not cfg.get(field, False), "plait's Bert is an encoder only",
                    where)
        problem = cfg.get("problem_type")
        require(cfg, "problem_type", problem in (None, "single_label_classification"),
                "plait supports single-label classification", where)
        labels = cfg.get("id2label")
        return BertConfig(**fields_from_hf(self.FIELDS, cfg, where),
                          pad_token_id=cfg.get("pad_token_id") or 0, head=HEADS[arch],
                          num_labels=len(labels) if labels else cfg.get("num_labels", 2))

    def config_to_hf(self, config: BertConfig) -> dict[str, Any]:
        out = {"architectures": [ARCHS[config.head]], "model_type": "bert",
               **fields_to_hf(self.FIELDS, config, self.name),
               "attention_probs_dropout_prob": config.dropout,
               "pad_token_id": config.pad_token_id}
        if config.head == "classify":
            out.update(label_maps(config.num_labels))
        return out

