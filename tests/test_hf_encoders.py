"""RoBERTa and ALBERT folders (every head), and BERT's token-classification head, against
``transformers``: identical outputs on right-padded batches, the same parameter counts, export
back; ALBERT's sharing really is one set of weights."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import plait
from plait.models import Bert, BertConfig

ATOL = 1e-4
SIZES = dict(vocab_size=60, hidden_size=32, num_attention_heads=4, intermediate_size=40,
             max_position_embeddings=40)
CASES = [
    ("roberta", "RobertaModel", {}), ("roberta", "RobertaForMaskedLM", {}),
    ("roberta", "RobertaForSequenceClassification", {"num_labels": 3}),
    ("roberta", "RobertaForTokenClassification", {"num_labels": 5}),
    ("albert", "AlbertModel", {}), ("albert", "AlbertForMaskedLM", {}),
    ("albert", "AlbertForSequenceClassification", {"num_labels": 3}),
    ("albert", "AlbertForTokenClassification", {"num_labels": 4}),
    ("bert", "BertForTokenClassification", {"num_labels": 4}),
]


def hf_model(kind: str, cls: str, extra: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "albert":
        cfg = transformers.AlbertConfig(**SIZES, embedding_size=16, num_hidden_layers=3, **extra)
    else:
        config_cls = transformers.RobertaConfig if kind == "roberta" else transformers.BertConfig
        cfg = config_cls(**SIZES, num_hidden_layers=2, **extra)
    model = getattr(transformers, cls)(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 60, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:], mask[2, 3:] = 0, 0
    return ids, mask


def outputs(hf, ours, ids, mask):
    """(transformers' output, plait's) of the same kind: logits, or hidden states + pooled."""
    with torch.no_grad():
        out = hf(input_ids=ids, attention_mask=mask)
        if hasattr(out, "logits"):
            return out.logits, ours.logits(ids, mask)
        return ((out.last_hidden_state, out.pooler_output),
                (ours(ids, mask), ours.pooled(ids, mask)))


@pytest.mark.parametrize("kind,cls,extra", CASES, ids=[c for _, c, _ in CASES])
def test_outputs_equal_transformers_and_export_back(kind, cls, extra, tmp_path):
    hf = hf_model(kind, cls, extra)
    hf.save_pretrained(tmp_path / "hf")
    ours = plait.load(tmp_path / "hf")
    assert isinstance(ours, Bert)
    assert ours.num_params() == sum(p.numel() for p in hf.parameters())
    ids, mask = batch()
    real = mask.bool()
    want, got = outputs(hf, ours, ids, mask)
    if isinstance(want, tuple):  # hidden states at real positions, and the pooled vector
        torch.testing.assert_close(got[0][real], want[0][real], atol=ATOL, rtol=0)
        torch.testing.assert_close(got[1], want[1], atol=ATOL, rtol=0)
    elif want.dim() == 3:  # per-token logits (masked LM, tagging) at real positions
        torch.testing.assert_close(got[real], want[real], atol=ATOL, rtol=0)
    else:
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    plait.hf.export(ours, tmp_path / "back")
    back = getattr(transformers, cls).from_pretrained(tmp_path / "back").eval()
    cfg = json.loads((tmp_path / "back" / "config.json").read_text())
    assert cfg["model_type"] == kind and cfg["architectures"] == [cls]
    again, _ = outputs(back, ours, ids, mask)
    for a, b in zip(again if isinstance(again, tuple) else (again,),
                    want if isinstance(want, tuple) else (want,), strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_albert_sharing_is_one_set_of_weights():
    model = Bert(BertConfig(vocab_size=50, n_layer=6, n_head=2, n_embd=32, n_inner=48,
                            block_size=16, embedding_size=8, share_layers=True))
    blocks = model.encoder.blocks
    assert len(blocks) == 6 and all(b is blocks[0] for b in blocks)
    per_block = sum(p.numel() for p in blocks[0].parameters())
    unshared = Bert(model.config.replace(share_layers=False))
    assert unshared.num_params() - model.num_params() == 5 * per_block
    with torch.no_grad():  # a change to "block 0" is a change to every block
        blocks[0].attn.qkv.weight.add_(1.0)
    assert torch.equal(blocks[5].attn.qkv.weight, blocks[0].attn.qkv.weight)
    state = plait.checkpoint.unique_state_dict(model)
    assert not any(k.startswith("encoder.blocks.1.") for k in state)  # stored once


def test_parameter_counts_of_the_three_encoders_at_base_sizes():
    """BERT-base, RoBERTa-base and ALBERT-base as configurations, counted like the papers."""
    bert = Bert(BertConfig())
    roberta = Bert(BertConfig(vocab_size=50265, type_vocab_size=1, pad_token_id=1, pos_offset=2))
    albert = Bert(BertConfig(vocab_size=30000, embedding_size=128, share_layers=True,
                             mlp="gelu_tanh"))
    millions = [round(m.num_params() / 1e6) for m in (bert, roberta, albert)]
    assert millions == [109, 125, 12]  # the papers: 110M, 125M, 12M


def test_mean_pooling_counts_real_tokens_only():
    torch.manual_seed(0)
    model = Bert(BertConfig(vocab_size=30, n_layer=1, n_head=2, n_embd=16, n_inner=32,
                            block_size=8)).eval()
    ids = torch.randint(1, 30, (2, 6))
    mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]])
    h = model(ids, mask)
    want = torch.stack([h[0].mean(0), h[1, :3].mean(0)])
    torch.testing.assert_close(model.mean_pooled(ids, mask), want)


@pytest.mark.parametrize("field,value", [("num_hidden_groups", 2), ("inner_group_num", 2)])
def test_albert_with_several_layer_groups_is_refused_by_name(tmp_path, field, value):
    hf_model("albert", "AlbertModel", {}).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg[field] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=field):
        plait.load(tmp_path)


@pytest.mark.parametrize("options", [{"pos_encoding": "rope"}, {"pre_norm": True},
                                     {"pos_encoding": "rope", "pre_norm": True},
                                     {"pooling": "mean"}])
def test_rotary_pre_norm_and_mean_pooled_encoders_pad_pool_and_refuse_export(options, tmp_path):
    """The options no Hugging Face BERT has: padding never changes the real tokens' states, the
    pooled vector (for [CLS], its last layer run for [CLS] alone) equals the full pass's, and
    export refuses by naming the field."""
    torch.manual_seed(0)
    model = Bert(BertConfig(vocab_size=60, n_layer=2, n_head=4, n_embd=32, n_inner=40,
                            block_size=40, dropout=0.0, **options)).eval()
    ids, mask = batch()
    with torch.no_grad():
        h = model(ids, mask)
        for i in range(len(ids)):
            n = int(mask[i].sum())
            torch.testing.assert_close(h[i, :n], model(ids[i:i + 1, :n])[0], atol=1e-5, rtol=0)
        pooled = model.pooled(ids, mask)
        torch.testing.assert_close(pooled, model.pool(h, mask), atol=1e-5, rtol=0)
        if "pooling" in options:  # the mean of the real tokens, through the pooler
            n = int(mask[2].sum())
            torch.testing.assert_close(pooled[2], model.pooler(h[2:3, :n].mean(1, keepdim=True))[0])
        else:
            torch.testing.assert_close(pooled, model.pooler(h), atol=1e-5, rtol=0)
    if "pos_encoding" in options:
        assert not any("pos" in name for name, _ in model.named_parameters())  # no table
    with pytest.raises(ValueError, match=sorted(options)[-1]):
        plait.hf.export(model, tmp_path)
