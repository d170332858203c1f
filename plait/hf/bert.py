"""BERT (``model_type: bert``) and RoBERTa (``roberta``) <-> :class:`plait.models.bert.Bert`.

``*Model`` loads with head ``"none"`` (encoder + pooler), ``*ForMaskedLM`` with ``"mlm"``,
``*ForSequenceClassification`` with ``"classify"``, ``*ForTokenClassification`` with ``"tag"``.
Hugging Face keeps separate query, key and value projections; plait's attention has one fused
``qkv`` Linear, so the three are concatenated on import ("cat") and split on export.

RoBERTa is BERT's encoder under another prefix with three differences: position rows start at
``pad_token_id + 1`` (``BertConfig.pos_offset``), the masked-LM head is named ``lm_head``, and
the classification head (``classifier.dense`` -> tanh -> ``classifier.out_proj`` on ``<s>``)
is exactly BERT's pooler + classifier, so it loads into those.
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

B = "encoder.blocks.{i}"


def _pair(hf: str, plait: str) -> list[Rule]:
    return [Rule(f"{hf}.{p}", f"{plait}.{p}") for p in ("weight", "bias")]


def encoder_rules(prefix: str) -> list[Rule]:
    """Embeddings and layers of a BERT-layout encoder under ``prefix`` (``bert``, ``roberta``)."""
    E, L = f"{prefix}.embeddings", f"{prefix}.encoder.layer.{{i}}"
    return [
        Rule(f"{E}.word_embeddings.weight", "wte.weight"),
        Rule(f"{E}.position_embeddings.weight", "pos.wpe.weight"),
        Rule(f"{E}.token_type_embeddings.weight", "wtt.weight"),
        *_pair(f"{E}.LayerNorm", "norm_emb"),
        Rule(f"{E}.position_ids", None),  # buffers older versions saved
        Rule(f"{E}.token_type_ids", None),
        *[Rule(tuple(f"{L}.attention.self.{n}.{p}" for n in ("query", "key", "value")),
               f"{B}.attn.qkv.{p}", "cat") for p in ("weight", "bias")],
        *_pair(f"{L}.attention.output.dense", f"{B}.attn.proj"),
        *_pair(f"{L}.attention.output.LayerNorm", f"{B}.norm_attn"),
        *_pair(f"{L}.intermediate.dense", f"{B}.mlp.fc"),
        *_pair(f"{L}.output.dense", f"{B}.mlp.proj"),
        *_pair(f"{L}.output.LayerNorm", f"{B}.norm_mlp"),
    ]


def classifier_rules() -> list[Rule]:
    """``classifier`` (BERT's sequence and token heads) -> the head's output Linear."""
    return _pair("classifier", "head.out")


def label_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    """``num_labels`` and ``labels`` from ``id2label`` (its default LABEL_i names dropped)."""
    id2label = cfg.get("id2label") or {}
    if not id2label:
        return {"num_labels": cfg.get("num_labels", 2)}
    names = tuple(str(id2label[k]) for k in sorted(id2label, key=int))
    default = names == tuple(f"LABEL_{i}" for i in range(len(names)))
    return {"num_labels": len(names), "labels": () if default else names}


def normalize_layernorm_names(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """TF-era ``LayerNorm.gamma`` / ``beta`` -> ``weight`` / ``bias``."""
    return {k.replace("LayerNorm.gamma", "LayerNorm.weight")
            .replace("LayerNorm.beta", "LayerNorm.bias"): v for k, v in state.items()}


# BertConfig options no Hugging Face encoder has: every family needs them at these values
PLAIT_ONLY = {"pre_norm": False, "pos_encoding": "learned", "pooling": "cls", "aux_labels": 0,
              "read": "head"}


class BertFamily(Family):
    name = "BERT"
    model_class = Bert
    prefix = "bert"
    arch_prefix = "Bert"
    FIELDS = (
        Field("vocab_size", "vocab_size", 30522),
        Field("max_position_embeddings", "block_size", 512),
        Field("type_vocab_size", "type_vocab_size", 2),
        *encoder_fields(768, 12, 3072, "gelu", 1e-12, p=0.1),
        Field("classifier_dropout", "classifier_dropout", None),
        Field("tie_word_embeddings", "tie_embeddings", True),
    )
    LAYOUT = {"embedding_size": None, "share_layers": False, "pos_offset": 0, **PLAIT_ONLY}

    @property
    def heads(self) -> dict[str, str]:
        """Hugging Face class -> plait head."""
        a = self.arch_prefix
        return {f"{a}Model": "none", f"{a}ForMaskedLM": "mlm",
                f"{a}ForSequenceClassification": "classify", f"{a}ForTokenClassification": "tag"}

    def head_rules(self, config: BertConfig) -> list[Rule]:
        tied = config.tie_embeddings
        return [
            *self.pooler_rules(),
            *_pair("cls.predictions.transform.dense", "head.transform"),
            *_pair("cls.predictions.transform.LayerNorm", "head.norm"),
            Rule("cls.predictions.bias", "head.decoder.bias"),
            Rule("cls.predictions.decoder.bias", None),  # the same tensor as .bias
            Rule("cls.predictions.decoder.weight", None if tied else "head.decoder.weight"),
            *classifier_rules(),
        ]

    def rules(self, config: BertConfig) -> list[Rule]:
        return expand(encoder_rules(self.prefix) + self.head_rules(config), config.n_layer)

    def pooler_rules(self) -> list[Rule]:
        return _pair(f"{self.prefix}.pooler.dense", "pooler.dense")

    def normalize(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Prefix a bare ``*Model``'s keys; rename TF-era LayerNorm names."""
        return with_prefix(normalize_layernorm_names(state), self.prefix + ".")

    def denormalize(self, state: dict[str, Tensor], hf_cfg: dict[str, Any]) -> dict[str, Tensor]:
        bare = hf_cfg["architectures"] == [f"{self.arch_prefix}Model"]
        return without_prefix(state, self.prefix + ".") if bare else state

    def check(self, cfg: dict[str, Any], where: str) -> str:
        """The head this ``config.json`` asks for; unsupported values raise naming the field."""
        default = f"{self.arch_prefix}Model"
        arch = (cfg.get("architectures") or [default])[0]
        require(cfg, "architectures", arch in self.heads, f"supported: {', '.join(self.heads)}",
                where)
        pos = cfg.get("position_embedding_type", "absolute")
        require(cfg, "position_embedding_type", pos == "absolute", "plait supports 'absolute'",
                where)
        for field in ("is_decoder", "add_cross_attention"):
            require(cfg, field, not cfg.get(field, False), f"plait's {self.name} is an encoder"
                    " only", where)
        problem = cfg.get("problem_type")
        require(cfg, "problem_type", problem in (None, "single_label_classification"),
                "plait supports single-label classification", where)
        return self.heads[arch]

    def config_from_hf(self, cfg: dict[str, Any], where: str) -> BertConfig:
        head = self.check(cfg, where)
        return BertConfig(**fields_from_hf(self.FIELDS, cfg, where),
                          pad_token_id=cfg.get("pad_token_id") or 0, head=head,
                          **label_fields(cfg))

    def config_to_hf(self, config: BertConfig) -> dict[str, Any]:
        archs = {v: k for k, v in self.heads.items()}
        out = {"architectures": [archs[config.head]], "model_type": self.prefix,
               **fields_to_hf(self.FIELDS, config, self.name),
               "attention_probs_dropout_prob": config.dropout,
               "pad_token_id": config.pad_token_id}
        if config.head in ("classify", "tag"):
            out.update(label_maps(config.num_labels, config.labels))
        return out


class RobertaFamily(BertFamily):
    name = "RoBERTa"
    prefix = "roberta"
    arch_prefix = "Roberta"
    LAYOUT = {"embedding_size": None, "share_layers": False, **PLAIT_ONLY}

    def head_rules(self, config: BertConfig) -> list[Rule]:
        tied = config.tie_embeddings
        if config.head == "classify":  # dense -> tanh -> out_proj: BERT's pooler + classifier
            return [*_pair("classifier.dense", "pooler.dense"),
                    *_pair("classifier.out_proj", "head.out")]
        return [
            *self.pooler_rules(),
            *_pair("lm_head.dense", "head.transform"),
            *_pair("lm_head.layer_norm", "head.norm"),
            Rule("lm_head.bias", "head.decoder.bias"),
            Rule("lm_head.decoder.bias", None),
            Rule("lm_head.decoder.weight", None if tied else "head.decoder.weight"),
            *classifier_rules(),
        ]

    def config_from_hf(self, cfg: dict[str, Any], where: str) -> BertConfig:
        config = super().config_from_hf(cfg, where)
        offset = config.pad_token_id + 1  # positions count from the padding id, past it
        require(cfg, "max_position_embeddings", config.block_size > offset,
                f"more than pad_token_id + 1 = {offset} rows", where)
        return config.replace(pos_offset=offset, block_size=config.block_size - offset)

    def config_to_hf(self, config: BertConfig) -> dict[str, Any]:
        if config.pos_offset != config.pad_token_id + 1:
            raise ValueError(f"cannot export to RoBERTa: pos_offset={config.pos_offset} (RoBERTa"
                             f" positions start at pad_token_id + 1 = {config.pad_token_id + 1})")
        out = super().config_to_hf(config)
        out["max_position_embeddings"] = config.block_size + config.pos_offset
        return out

    def exports(self, model: Any) -> bool:
        c = getattr(model, "config", None)
        return super().exports(model) and c.pos_offset > 0
