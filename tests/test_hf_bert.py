"""BERT interop: random tiny BertModel / BertForMaskedLM / BertForSequenceClassification load
into plait's Bert with equal outputs (padding included), and export back unchanged."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import randomize

import plait
from plait.cli.main import main
from plait.hf import load
from plait.models.bert import Bert, BertConfig

transformers = pytest.importorskip("transformers")

ATOL = 1e-4
CLASSES = {"none": "BertModel", "mlm": "BertForMaskedLM",
           "classify": "BertForSequenceClassification"}



def hf_bert(tmp_path, head="none", seed=0, **kw):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(**{"vocab_size": 120, "hidden_size": 32, "num_hidden_layers": 2,
                                     "num_attention_heads": 4, "intermediate_size": 48,
                                     "max_position_embeddings": 24, **kw})
    model = randomize(getattr(transformers, CLASSES[head])(cfg).eval())
    model.save_pretrained(tmp_path)
    return model


def right_padded(B, T, vocab, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for b in range(1, B):
        mask[b, T - b:] = 0  # row b has b pads on the right
    ids[mask == 0] = 0
    types = torch.randint(0, 2, (B, T), generator=g)
    return ids, mask, types


@pytest.mark.parametrize("kw", [
    {},
    {"hidden_size": 48, "num_attention_heads": 3, "hidden_act": "gelu_new"},
    {"num_hidden_layers": 3, "hidden_act": "relu", "type_vocab_size": 3, "layer_norm_eps": 1e-5},
])
def test_bert_model_hidden_and_pooler_match(tmp_path, kw):
    ref = hf_bert(tmp_path, **kw)
    model = load(tmp_path)
    assert isinstance(model, Bert) and model.config.head == "none"
    ids, mask, types = right_padded(4, 10, 120)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, token_type_ids=types)
        hidden = model(ids, attention_mask=mask, token_type_ids=types)
        pooled = model.pooled(ids, attention_mask=mask, token_type_ids=types)
    real = mask.bool()
    torch.testing.assert_close(hidden[real], want.last_hidden_state[real], atol=ATOL, rtol=0)
    torch.testing.assert_close(pooled, want.pooler_output, atol=ATOL, rtol=0)
    with torch.no_grad():  # no mask, default token types
        torch.testing.assert_close(model(ids), ref(ids).last_hidden_state, atol=ATOL, rtol=0)


def test_masked_lm_logits_match(tmp_path):
    ref = hf_bert(tmp_path, "mlm")
    model = load(tmp_path)
    assert model.config.head == "mlm"
    assert model.head.decoder.weight is model.wte.weight  # tied, as in HF
    ids, mask, types = right_padded(3, 12, 120)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got = model.logits(ids, mask, types)
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=ATOL, rtol=0)


def test_sequence_classification_logits_match(tmp_path):
    ref = hf_bert(tmp_path, "classify", num_labels=5)
    model = load(tmp_path)
    assert model.config.num_labels == 5
    ids, mask, types = right_padded(4, 9, 120)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        torch.testing.assert_close(model.logits(ids, mask, types), want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("head", ["none", "mlm", "classify"])
def test_export_round_trip(tmp_path, head):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=90, n_layer=2, n_head=4, n_embd=32, n_inner=40, block_size=16,
                     head=head, num_labels=3)
    src, dst = tmp_path / "plait", tmp_path / "hf"
    model = randomize(Bert(cfg)).eval()
    plait.save_model(model, src)
    assert main(["convert", "--to-hf", str(src), str(dst)]) == 0
    ref = getattr(transformers, CLASSES[head]).from_pretrained(dst).eval()
    ids, mask, types = right_padded(3, 8, 90)
    with torch.no_grad():
        out = ref(input_ids=ids, attention_mask=mask, token_type_ids=types)
        real = mask.bool()
        if head == "mlm":
            torch.testing.assert_close(model.logits(ids, mask, types)[real], out.logits[real],
                                       atol=ATOL, rtol=0)
        elif head == "classify":
            torch.testing.assert_close(model.logits(ids, mask, types), out.logits, atol=ATOL,
                                       rtol=0)
        else:
            torch.testing.assert_close(model(ids, mask, types)[real],
                                       out.last_hidden_state[real], atol=ATOL, rtol=0)
    torch.testing.assert_close(plait.load(dst).state_dict(), model.state_dict())


@pytest.mark.parametrize("field, value", [
    ("hidden_act", "gelu_fast_unknown"),
    ("position_embedding_type", "relative_key"),
    ("is_decoder", True),
    ("architectures", ["BertForQuestionAnswering"]),
])
def test_unsupported_bert_config_names_field(tmp_path, field, value):
    hf_bert(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg[field] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=field):
        load(tmp_path)


def test_legacy_gamma_beta_names(tmp_path):
    ref = hf_bert(tmp_path)
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                                                                     "LayerNorm.beta"): v
             for k, v in ref.state_dict().items()}
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    ids = torch.randint(0, 120, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(load(tmp_path)(ids), ref(ids).last_hidden_state,
                                   atol=ATOL, rtol=0)
