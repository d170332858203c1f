"""Relation extraction with entity markers: the marker pooling, the markers as tokens, the token
table that grows with them, and the recipe end to end on a tiny model (a tagger stage, then the
relation classifier; `plait eval --task relations`, `plait relations`, bad input)."""

from __future__ import annotations

import json

import pytest
import torch

from plait.cli.main import main
from plait.data import relations as data
from plait.models import Bert, BertConfig
from plait.text.relations import allowed, encode_pairs, typed_logits, with_markers
from plait.training import recipe_from_dict, train
from plait.training.build import start_from

TINY_BERT = {"arch": "bert", "n_layer": 1, "n_head": 2, "n_embd": 32, "n_inner": 64,
             "block_size": 128, "dropout": 0.0, "pos_encoding": "rope"}
FAST = {"max_steps": 6, "warmup_steps": 2, "eval_interval": 0, "threads": 1, "progress": False,
        "device": "cpu", "lr": 3e-3}


def tiny_config(**kw) -> BertConfig:
    keys = {k: v for k, v in TINY_BERT.items() if k != "arch"}
    return BertConfig(**{"vocab_size": 50, **keys, **kw})


def test_marker_pooling_puts_the_two_marker_states_side_by_side():
    torch.manual_seed(0)
    model = Bert(tiny_config(head="classify", num_labels=5, pooling="markers")).eval()
    assert model.head.out.in_features == 64  # [h_E1; h_E2]: twice n_embd
    ids = torch.randint(5, 50, (3, 9))
    h = model(ids)
    starts = torch.tensor([[1, 4], [7, 2], [0, 8]])
    pooled = model.pool_markers(h, starts)
    assert pooled.shape == (3, 64)
    for b, (i, j) in enumerate(starts.tolist()):
        assert torch.equal(pooled[b], torch.cat((h[b, i], h[b, j])))
    with pytest.raises(ValueError, match="pool_markers"):
        model.pooled(ids)


def test_the_token_table_grows_for_added_tokens_and_keeps_its_rows(capsys):
    torch.manual_seed(0)
    source = Bert(tiny_config(head="tag", num_labels=9))
    grown = Bert(tiny_config(vocab_size=54, head="classify", num_labels=5, pooling="markers"))
    fresh_rows = grown.wte.weight[50:].detach().clone()
    start_from(grown, source, "tagger")
    assert torch.equal(grown.wte.weight[:50], source.wte.weight)
    assert torch.equal(grown.wte.weight[50:], fresh_rows)  # the new tokens start fresh
    assert "wte.weight 50 -> 54" in capsys.readouterr().out
    wider = Bert(tiny_config(n_inner=96))
    with pytest.raises(ValueError, match="does not fit|there but"):
        start_from(wider, source, "tagger")  # any other shape change is still refused


def test_markers_are_single_tokens_that_survive_saving(tmp_path):
    from plait.text import load_tokenizer
    from plait.text.wordpiece import WordPieceTokenizer

    tok = WordPieceTokenizer.train(["Anna Weber works for Acme in Lyon."] * 20, 60,
                                   do_lower_case=False)
    n = tok.vocab_size
    tok = with_markers(tok)
    assert tok.vocab_size == n + 4
    text = "[E1] Anna Weber [/E1] works for [E2] Acme [/E2] ."
    ids = tok.encode(text)
    markers = [tok.backend.token_to_id(m) for m in data.MARKERS]
    assert [i for i in ids if i in markers] == markers  # one id each, in order
    tok.save(tmp_path)
    again = with_markers(load_tokenizer(tmp_path))  # adding them again changes nothing
    assert again.vocab_size == n + 4 and again.encode(text) == ids


def markers_of(tok) -> list[int]:
    return [tok.backend.token_to_id(m) for m in data.MARKERS]


def test_encode_pairs_finds_the_markers_and_keeps_them_in_a_window():
    from plait.text.wordpiece import WordPieceTokenizer

    s = data.sample_pairs("train", 20, 0)
    tok = with_markers(WordPieceTokenizer.train([p.text for p in s], 300, do_lower_case=False))
    ids, mask, starts, kept = encode_pairs(tok, s[:5], 96)
    assert kept == [0, 1, 2, 3, 4]
    e1, e2 = (tok.backend.token_to_id(m) for m in ("[E1]", "[E2]"))
    for row, (i, j) in zip(ids.tolist(), starts.tolist(), strict=True):
        assert row[i] == e1 and row[j] == e2
    assert mask.sum(1).min() > 0
    long = max(s, key=lambda p: len(tok.encode(data.mark(p))))
    full = tok.encode(data.mark(long))
    inner = [full[1:-1].index(m) for m in markers_of(tok)]
    need = max(inner) - min(inner) + 3  # the markers and what lies between, [CLS] and [SEP]
    if need < len(full):  # a window around the entities: shorter, every marker kept
        ids, _, starts, _ = encode_pairs(tok, [long], need)
        row = ids[0].tolist()
        assert len(row) == need and row[0] == full[0] and row[-1] == full[-1]
        assert all(m in row for m in markers_of(tok)) and row[starts[0, 0]] == e1
    with pytest.raises(ValueError, match="cut off"):
        encode_pairs(tok, [long], need - 1)
    assert encode_pairs(tok, [long, s[0]], need - 1, skip_long=True)[3] == [1]  # left out


def test_the_types_of_a_pair_allow_none_and_one_relation():
    e = {t: data.Entity(t, t.lower(), 0, 1) for t in ("PER", "ORG", "LOC", "DATE")}
    pairs = [data.Pair("x", e[a], e[b], "none") for a, b in
             [("PER", "ORG"), ("PER", "LOC"), ("ORG", "LOC"), ("ORG", "DATE")]]
    mask = allowed(pairs)
    assert mask.shape == (4, len(data.LABELS)) and mask[:, 0].all()  # "none" always
    for row, relation in zip(mask, data.RELATIONS, strict=True):
        assert row.sum() == 2 and row[data.LABELS.index(relation)]
    logits = torch.zeros(4, len(data.LABELS))
    logits[:, 1:] = 5.0  # every relation preferred to "none" before the mask
    best = typed_logits(logits, mask).argmax(-1).tolist()
    assert [data.LABELS[i] for i in best] == list(data.RELATIONS)  # a person is never located
    logits.requires_grad_(True)
    torch.nn.functional.cross_entropy(typed_logits(logits, mask), torch.tensor([0, 2, 3, 4]),
                                      label_smoothing=0.1).backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[~mask] == 0).all()


@pytest.fixture(scope="module")
def relations_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("relations") / "run"
    recipe = recipe_from_dict({
        "task": "relations", "model": TINY_BERT,
        "data": {"batch_size": 8, "heldout": 20, "baseline_train": 60},
        "train": {**FAST, "out_dir": str(out)},
        "stages": [{"name": "tagger", "task": "ner",
                    "data": {"batch_size": 8, "vocab_size": 400, "vocab_sentences": 300,
                             "heldout": 20, "relation_frames": 0.5}}]})
    train(recipe)
    return out


def test_the_recipe_trains_a_tagger_then_the_relation_classifier(relations_folder, capsys):
    assert (relations_folder / "tagger" / "model.safetensors").is_file()
    assert main(["eval", "--model", str(relations_folder), "--task", "relations"]) == 0
    out = capsys.readouterr().out
    for name in ("f1", "precision", "recall", "baseline_f1", "f1/works_for"):
        assert f" {name} " in out or f" {name}\n" in out or f"{name}  " in out, out


def test_plait_relations_prints_a_json_list_per_text(relations_folder, capsys):
    capsys.readouterr()
    texts = ["Anna Weber works for Acme GmbH.", "Acme GmbH is based in Lyon."]
    assert main(["relations", "--model", str(relations_folder), *texts]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, texts, strict=True):
        triples = json.loads(line)
        assert isinstance(triples, list)
        for t in triples:  # whatever a few steps learned, the shape holds
            assert t["relation"] in data.RELATIONS and t["head"] in text and t["tail"] in text
            assert (t["head_type"], t["tail_type"]) in data.CANDIDATE_TYPES


@pytest.mark.parametrize("args, needle", [
    (["relations", "--model", "{folder}", "  "], "text 1 is empty"),
    (["relations", "--model", "{folder}/tagger", "Anna works for Acme."], "no entity tagger"),
    (["relations", "--model", "{folder}", "--tagger", "{folder}/missing", "x"],
     "no entity tagger"),
    (["relations", "--model", "{folder}/tagger", "--tagger", "{folder}/tagger", "x"],
     "holds a tag model"),  # a folder of the wrong kind
])
def test_mistakes_are_one_line_and_exit_code_2(relations_folder, capsys, args, needle):
    capsys.readouterr()
    code = main([a.format(folder=relations_folder) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1, err


def test_relation_sentences_tag_as_their_spans_say_and_commas_stay_out():
    import random

    from plait.data.ner import tagged
    from plait.inference.bert import spans

    s = data.sentence(data.frames("train")[2], "train", random.Random(0))  # an apposition
    t = tagged(s.text, [(e.type, e.start, e.end) for e in s.entities])
    got = spans(s.text, list(t.spans), list(t.tags))
    assert [(e["type"], e["text"]) for e in got] == [(e.type, e.text) for e in s.entities]
    text = "Anna, a native of Lyon"  # a tagger that ran the comma into the name
    words = [(0, 4), (4, 5), (6, 7), (8, 14), (15, 17), (18, 22)]
    got = spans(text, words, ["B-PER", "I-PER", "O", "O", "O", "B-LOC"])
    assert [e["text"] for e in got] == ["Anna", "Lyon"] and got[0]["end"] == 4
