"""BERT (``model_type: bert``) <-> :class:`plait.models.bert.Bert`.

``BertModel`` loads with head ``"none"`` (encoder + pooler), ``BertForMaskedLM`` with ``"mlm"``,
``BertForSequenceClassification`` with ``"classify"``. Hugging Face keeps separate query, key
and value projections; plait's attention has one fused ``qkv`` Linear, so the three are
concatenated on import ("cat") and split on export.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from plait.hf.io import ACTS, ACTS_OUT, require
from plait.hf.keymap import Rule, expand
from plait.models.bert import Bert, BertConfig

MODEL_TYPES = ("bert",)
HEADS = {"BertModel": "none", "BertForMaskedLM": "mlm",
         "BertForSequenceClassification": "classify"}
ARCHS = {v: k for k, v in HEADS.items()}

PREFIX = "bert."  # the encoder inside the *For* classes; a bare BertModel has none
L = "bert.encoder.layer.{i}"
B = "encoder.blocks.{i}"
E = "bert.embeddings"
RULES = [
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
]


def rules(config: BertConfig) -> list[Rule]:
    tied = config.tie_embeddings
    decoder = Rule("cls.predictions.decoder.weight", None if tied else "head.decoder.weight")
    return expand([*RULES, decoder], config.n_layer)


def normalize(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Prefix a bare BertModel's keys; rename TF-era LayerNorm ``gamma``/``beta``."""
    bare = not any(k.startswith(PREFIX) for k in state)
    out = {}
    for k, v in state.items():
        k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta",
                                                                     "LayerNorm.bias")
        out[PREFIX + k if bare else k] = v
    return out


def denormalize(state: dict[str, Tensor], hf_cfg: dict[str, Any]) -> dict[str, Tensor]:
    if hf_cfg["architectures"] == ["BertModel"]:
        return {k.removeprefix(PREFIX): v for k, v in state.items()}
    return state


def config_from_hf(cfg: dict[str, Any], where: str) -> BertConfig:
    """BertConfig from a BERT ``config.json``; unsupported values raise naming the field."""
    arch = (cfg.get("architectures") or ["BertModel"])[0]
    require(cfg, "architectures", arch in HEADS, f"supported: {', '.join(HEADS)}", where)
    act = cfg.get("hidden_act", "gelu")
    require(cfg, "hidden_act", act in ACTS, f"supported: {', '.join(ACTS)}", where)
    pos = cfg.get("position_embedding_type", "absolute")
    require(cfg, "position_embedding_type", pos == "absolute", "plait supports 'absolute'", where)
    for field in ("is_decoder", "add_cross_attention"):
        require(cfg, field, not cfg.get(field, False), "plait's Bert is an encoder only", where)
    problem = cfg.get("problem_type")
    require(cfg, "problem_type", problem in (None, "single_label_classification"),
            "plait supports single-label classification", where)
    labels = cfg.get("id2label")
    return BertConfig(
        vocab_size=cfg.get("vocab_size", 30522),
        n_layer=cfg.get("num_hidden_layers", 12),
        n_head=cfg.get("num_attention_heads", 12),
        n_embd=cfg.get("hidden_size", 768),
        n_inner=cfg.get("intermediate_size", 3072),
        block_size=cfg.get("max_position_embeddings", 512),
        type_vocab_size=cfg.get("type_vocab_size", 2),
        mlp=ACTS[act],
        norm_eps=cfg.get("layer_norm_eps", 1e-12),
        dropout=cfg.get("hidden_dropout_prob", 0.1),
        pad_token_id=cfg.get("pad_token_id") or 0,
        head=HEADS[arch],
        num_labels=len(labels) if labels else cfg.get("num_labels", 2),
        classifier_dropout=cfg.get("classifier_dropout"),
        tie_embeddings=cfg.get("tie_word_embeddings", True),
    )


def build(config: BertConfig, architecture: str) -> Bert:
    return Bert(config)


def exports(model: object) -> bool:
    return isinstance(model, Bert)


def config_to_hf(config: BertConfig, model: Bert | None = None) -> dict[str, Any]:
    if config.mlp not in ACTS_OUT:
        raise ValueError(f"cannot export to BERT: BertConfig.mlp={config.mlp!r}"
                         f" (supported: {', '.join(ACTS_OUT)})")
    out = {
        "architectures": [ARCHS[config.head]],
        "model_type": "bert",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "intermediate_size": config.n_inner,
        "hidden_act": ACTS_OUT[config.mlp],
        "max_position_embeddings": config.block_size,
        "type_vocab_size": config.type_vocab_size,
        "layer_norm_eps": config.norm_eps,
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.dropout,
        "classifier_dropout": config.classifier_dropout,
        "pad_token_id": config.pad_token_id,
        "tie_word_embeddings": config.tie_embeddings,
    }
    if config.head == "classify":
        out["id2label"] = {str(i): f"LABEL_{i}" for i in range(config.num_labels)}
        out["label2id"] = {f"LABEL_{i}": i for i in range(config.num_labels)}
    return out
