"""The relation-extraction data: held-out frames and names, spans, labels, markers, scores."""

import random
import re

import pytest

from plait.data import ner
from plait.data import relations as rel
from plait.data.relations import Entity, Pair, Sentence


def _hand_sentence() -> Sentence:
    # "Acme GmbH's new engineer, Anna Weber, visited Siemens AG in Berlin."
    text = "Acme GmbH's new engineer, Anna Weber, visited Siemens AG in Berlin."
    ents = []
    for kind, value in (("ORG", "Acme GmbH"), ("PER", "Anna Weber"), ("ORG", "Siemens AG"),
                        ("LOC", "Berlin")):
        start = text.index(value)
        ents.append(Entity(kind, value, start, start + len(value)))
    return Sentence(text, tuple(ents), ((1, "works for", 0),))


def _pair(s: Sentence, i: int, j: int, label: str = "none") -> Pair:
    return Pair(s.text, s.entities[i], s.entities[j], label)


def test_frames_split_every_fourth_and_enough_of_them():
    train, heldout = rel.frames("train"), rel.frames("heldout")
    assert len(rel.FRAMES) >= 48 and len(heldout) == len(rel.FRAMES) // 4
    assert heldout == [f for i, f in enumerate(rel.FRAMES) if i % 4 == 3]
    assert not set(train) & set(heldout)
    assert len({f.template for f in rel.FRAMES}) == len(rel.FRAMES)


def test_frame_slots_parse_and_relation_types_match():
    for frame in rel.FRAMES:
        found = rel.slots(frame.template)
        assert found, frame.template
        # nothing slot-like is left unparsed
        assert frame.template.count("{") == len(found) == frame.template.count("}")
        types = dict(found)
        assert len(frame.relations) <= 2
        for head, relation, tail in frame.relations:
            assert relation in rel.RELATIONS
            assert (types[head], types[tail]) == rel.TYPES_OF[relation], frame.template


def test_every_relation_in_both_splits_and_in_several_training_frames():
    for relation in rel.RELATIONS:
        n_train = sum(relation in {r for _, r, _ in f.relations} for f in rel.frames("train"))
        assert n_train >= 4, relation
    for split in ("train", "heldout"):
        labels = {p.label for p in rel.sample_pairs(split, 200, 0)}
        assert labels == set(rel.LABELS), split


def test_entity_spans_index_the_text_and_repeated_slots_are_one_entity():
    rng = random.Random(1)
    for split in ("train", "heldout"):
        for frame in rel.FRAMES:
            s = rel.sentence(frame, split, rng)
            assert len(s.entities) == len(rel.slots(frame.template))
            assert [e.start for e in s.entities] == sorted(e.start for e in s.entities)
            for e in s.entities:
                assert s.text[e.start:e.end] == e.text
            for i, relation, j in s.relations:
                assert (s.entities[i].type, s.entities[j].type) == rel.TYPES_OF[relation]
            assert "{" not in s.text
    repeated = next(f for f in rel.FRAMES if f.template.count("{LOC0}") == 2)
    s = rel.sentence(repeated, "train", rng)
    locs = [i for i, e in enumerate(s.entities) if e.type == "LOC"]
    assert s.entities[locs[0]].text == s.entities[locs[1]].text
    assert {j for _, _, j in s.relations} == set(locs)


def _pattern(frame: rel.Frame) -> re.Pattern:
    """The frame's sentences: its own words literally, any text in its slots."""
    parts = rel.SLOT.split(frame.template)[::3]  # split yields text, type, number, text, ...
    return re.compile("(.+)".join(re.escape(part) for part in parts), re.DOTALL)


def test_training_batches_never_use_held_out_frames_or_names():
    train = [_pattern(f) for f in rel.frames("train")]
    heldout = [_pattern(f) for f in rel.frames("heldout")]
    texts = set()
    for step in range(3):
        for p in rel.batch_pairs(0, step, 0, 64):
            for e in (p.head, p.tail):
                assert not ner.is_held_out_entity(e.text), e.text
            texts.add(p.text)
    assert len(texts) > 20
    for text in texts:
        assert any(pat.fullmatch(text) for pat in train), text
        assert not any(pat.fullmatch(text) for pat in heldout), text
    for p in rel.sample_pairs("heldout", 60, 0):  # and the patterns do tell them apart
        assert any(pat.fullmatch(p.text) for pat in heldout), p.text


def test_held_out_samples_use_only_held_out_names():
    for p in rel.sample_pairs("heldout", 100, 0):
        for e in (p.head, p.tail):
            assert ner.is_held_out_entity(e.text), e.text
    for p in rel.sample_pairs("train", 100, 0):
        for e in (p.head, p.tail):
            assert not ner.is_held_out_entity(e.text), e.text


def test_pairs_labels_related_pair_and_others_none():
    s = _hand_sentence()
    got = {(p.head.text, p.tail.text): p.label for p in rel.pairs(s)}
    assert got[("Anna Weber", "Acme GmbH")] == "works for"
    assert got[("Anna Weber", "Siemens AG")] == "none"  # a compatible distractor
    assert got[("Acme GmbH", "Berlin")] == "none" and got[("Siemens AG", "Berlin")] == "none"
    assert got[("Anna Weber", "Berlin")] == "none"
    # the reversed pair (ORG, PER) fits no relation's types: not a candidate at all
    assert ("Acme GmbH", "Anna Weber") not in got
    assert len(got) == 5
    # a Sentence whose pair fits in both orders would label the unannotated order "none"
    both = Sentence(s.text, s.entities, ((0, "located in", 3),))
    labels = {(p.head.text, p.tail.text): p.label for p in rel.pairs(both)}
    assert labels[("Acme GmbH", "Berlin")] == "located in"
    assert labels[("Anna Weber", "Acme GmbH")] == "none"


def test_mark_both_orders_and_unmark_gives_text_back():
    s = _hand_sentence()
    tail_first = _pair(s, 1, 0, "works for")  # head Anna Weber comes after tail Acme GmbH
    head_first = _pair(s, 1, 3)
    assert rel.mark(tail_first) == ("[E2] Acme GmbH [/E2]'s new engineer, [E1] Anna Weber [/E1],"
                                    " visited Siemens AG in Berlin.")
    assert rel.mark(head_first) == ("Acme GmbH's new engineer, [E1] Anna Weber [/E1], visited "
                                    "Siemens AG in [E2] Berlin [/E2].")
    for p in (tail_first, head_first):
        marked = rel.mark(p)
        assert all(marked.count(m) == 1 for m in rel.MARKERS)
        for m in rel.MARKERS:
            marked = marked.replace(f"{m} ", "") if "/" not in m else marked.replace(f" {m}", "")
        assert marked == p.text


def test_mark_and_between_on_generated_sentences():
    for p in rel.sample_pairs("heldout", 30, 2):
        marked = rel.mark(p)
        assert f"[E1] {p.head.text} [/E1]" in marked and f"[E2] {p.tail.text} [/E2]" in marked
        assert rel.between(p) in p.text


def test_between_both_orders():
    s = _hand_sentence()
    assert rel.between(_pair(s, 1, 0)) == "'s new engineer,"
    assert rel.between(_pair(s, 0, 1)) == "'s new engineer,"
    assert rel.between(_pair(s, 2, 3)) == "in"
    assert rel.between(_pair(s, 1, 3)) == ", visited Siemens AG in"


def test_micro_scores_hand_example():
    truth = ["works for", "born in", "none", "located in", "none", "founded on"]
    pred = ["works for", "none", "born in", "born in", "none", "founded on"]
    # tp 2 (works for, founded on); predicted relations 5; true relations 4
    s = rel.micro_scores(truth, pred)
    assert s["precision"] == pytest.approx(2 / 4)
    assert s["recall"] == pytest.approx(2 / 4)
    assert s["f1"] == pytest.approx(0.5)
    assert s["f1/works_for"] == 1.0 and s["f1/founded_on"] == 1.0
    assert s["f1/born_in"] == 0.0 and s["f1/located_in"] == 0.0
    only_none = rel.micro_scores(["none", "none"], ["none", "none"])
    assert only_none["precision"] == only_none["recall"] == only_none["f1"] == 0.0
    with pytest.raises(ValueError):
        rel.micro_scores(["none"], [])


def test_micro_scores_match_sklearn():
    from sklearn.metrics import precision_recall_fscore_support

    rng = random.Random(3)
    truth = [rng.choice(rel.LABELS) for _ in range(300)]
    pred = [rng.choice(rel.LABELS) for _ in range(300)]
    p, r, f, _ = precision_recall_fscore_support(truth, pred, labels=list(rel.RELATIONS),
                                                 average="micro", zero_division=0)
    s = rel.micro_scores(truth, pred)
    assert (s["precision"], s["recall"], s["f1"]) == pytest.approx((p, r, f))


def test_batch_pairs_deterministic_and_varied():
    a = rel.batch_pairs(0, 5, 1, 32)
    assert len(a) == 32 and a == rel.batch_pairs(0, 5, 1, 32)
    assert a != rel.batch_pairs(0, 6, 1, 32)
    assert a != rel.batch_pairs(0, 5, 2, 32) and a != rel.batch_pairs(1, 5, 1, 32)
    assert all(p.label in rel.LABELS for p in a)
    assert rel.sample_pairs("heldout", 20, 0) == rel.sample_pairs("heldout", 20, 0)


def test_batch_pairs_keep_positives_frequent():
    ps = [p for step in range(4) for p in rel.batch_pairs(0, step, 0, 100)]
    positive = sum(p.label != "none" for p in ps) / len(ps)
    sampled = rel.sample_pairs("train", 200, 0)
    assert positive > sum(p.label != "none" for p in sampled) / len(sampled)


def test_baseline_runs():
    scores = rel.baseline(rel.sample_pairs("train", 300, 0), rel.sample_pairs("heldout", 100, 0))
    assert 0.0 < scores["f1"] < 1.0
    assert set(scores) >= {"precision", "recall", "f1", "f1/works_for"}


def test_vary_swaps_only_words_that_state_no_relation():
    rng = random.Random(0)
    frame = rel.Frame("{PER0}, a native of {LOC0}, praised {ORG0} after flying to {LOC1}.",
                      (("PER0", "born in", "LOC0"),))
    varied = rel.vary(frame, rng, 1.0)
    assert varied.relations == frame.relations
    assert rel.slots(varied.template) == rel.slots(frame.template)
    words = re.findall(r"(?<![{\w])[A-Za-z][a-z]+(?![\w}])", varied.template)
    assert [w for w in words if w in rel.KEEP] == ["native", "of"]  # kept, in place
    assert ", a native of " in varied.template  # (one-letter words are never words to swap)
    assert not {"praised", "after", "flying", "to"} & set(words)  # all swapped at p = 1
    assert not (set(words) - {"native", "of"}) & rel.KEEP  # never a relation word
    assert rel.vary(frame, rng, 0.0) == frame


def test_join_renumbers_the_second_frame_and_keeps_both_frames_relations():
    a = rel.Frame("{PER0} works for {ORG0}.", (("PER0", "works for", "ORG0"),))
    b = rel.Frame("{ORG0} is based in {LOC0}.", (("ORG0", "located in", "LOC0"),))
    j = rel.join(a, b)
    assert j.template == "{PER0} works for {ORG0}. {ORG1} is based in {LOC1}."
    assert j.relations == (("PER0", "works for", "ORG0"), ("ORG1", "located in", "LOC1"))
    s = rel.sentence(j, "train", random.Random(0))
    labels = {(p.head.text, p.tail.text): p.label for p in rel.pairs(s)}
    per, org0, org1, loc = (e.text for e in s.entities)
    assert labels[(per, org0)] == "works for" and labels[(org1, loc)] == "located in"
    assert labels[(per, org1)] == "none" and labels[(org0, loc)] == "none"  # across: none


def test_varied_and_joined_batches_stay_deterministic_and_in_training_frames():
    one = rel.batch_pairs(3, 7, 0, 40, vary_words=0.5, joined=0.5)
    assert one == rel.batch_pairs(3, 7, 0, 40, vary_words=0.5, joined=0.5)
    def mean_length(pairs: list[rel.Pair]) -> float:
        texts = {p.text for p in pairs}
        return sum(map(len, texts)) / len(texts)

    single = mean_length(rel.batch_pairs(3, 8, 0, 60))
    assert mean_length(rel.batch_pairs(3, 8, 0, 60, joined=1.0)) > 1.6 * single  # two frames
    for p in one:
        assert not ner.is_held_out_entity(p.head.text)
        assert not ner.is_held_out_entity(p.tail.text)


def test_sentences_are_the_same_in_every_process():
    """faker's it_IT cities come from a set, whose order follows each process's string hashing:
    plait sorts them, so NER and relation sentences do not depend on PYTHONHASHSEED."""
    import os
    import subprocess
    import sys

    code = ("from plait.data import ner, relations as r; import hashlib; print(hashlib.md5("
            "''.join([s.text for s in ner.sentences('heldout', 200)] + [p.text for p in "
            "r.sample_pairs('heldout', 200, 0)]).encode()).hexdigest())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}, check=True).stdout
            for seed in ("1", "2", "3")}
    assert len(outs) == 1, outs
