"""Composed relation frames: well formed, facts that fit their words, never a held-out shape."""

import random
import re

import pytest

from plait.data import ner
from plait.data import relation_grammar as g
from plait.data import relations as rel

WORD_CLASS = {"works for": "WORK", "born in": "BORN", "located in": "BASED",
              "founded on": "FOUNDED"}
TABLES = [*g.PREDICATES.values(), *g.MODIFIERS.values(), *g.FRONTS.values(), g.OWNERS,
          g.TAILS]


def test_every_part_states_the_relation_its_words_state_and_in_the_types_order():
    for table, kind in [(t, k) for k, t in g.PREDICATES.items()] + \
                       [(t, k) for k, t in g.MODIFIERS.items()] + \
                       [(t, k) for k, t in g.FRONTS.items()] + [(g.OWNERS, "PER")]:
        for part in table:
            words = {x for x in g.skeleton(part.text) if x in WORD_CLASS.values()}
            assert words == ({WORD_CLASS[part.relation]} if part.relation else set()), part
            if part.relation:
                head, tail = (part.other, kind) if part.reverse else (kind, part.other)
                assert (head, tail) == rel.TYPES_OF[part.relation], part
    assert all(part.relation is None for part in g.TAILS)
    assert sum(len(t) for t in TABLES) > 50


def _composed(n: int, seed: int = 0) -> list[rel.Frame]:
    rng = random.Random(seed)
    return [g.compose(rng) for _ in range(n)]


def test_composed_frames_are_well_formed_and_deterministic():
    frames = _composed(2000)
    assert frames[:50] == _composed(50)
    assert len({f.template for f in frames}) > 1000  # a great many shapes, not 45
    for f in frames:
        assert "{s}" not in f.template and "{t}" not in f.template and ",," not in f.template
        assert f.template.endswith(".") and f.template[0] in "{ABEFHO"
        slots = rel.slots(f.template)
        types = dict(slots)
        for kind in ("PER", "ORG", "LOC", "DATE"):  # numbered 0, 1, ... in order of use
            names = [name for name, k in slots if k == kind]
            assert names == [f"{kind}{i}" for i in range(len(names))], f.template
        for head, relation, tail in f.relations:
            assert (types[head], types[tail]) == rel.TYPES_OF[relation], f.template
        once = [(h, r) for h, r, _ in f.relations if r != "works for"]
        assert len(once) == len(set(once)), f.template  # one birthplace, seat, founding each
    relations = [r for f in frames for _, r, _ in f.relations]
    assert set(relations) == set(rel.RELATIONS)
    assert min(relations.count(r) for r in rel.RELATIONS) > 0.1 * len(relations)
    assert sum(not f.relations for f in frames) > 100  # frames that state nothing too


def test_hand_written_parts_label_as_english_says():
    f = g._Frame()
    s = f.new("PER")
    text, t = f.say(g.FRONTS["PER"][1], s)  # "{t}'s new engineer, {s},": s works for t
    assert text == "{ORG0}'s new engineer, {PER0}," and f.facts == [("PER0", "works for", "ORG0")]
    loc = f.new("LOC")
    text, t = f.say(g.MODIFIERS["LOC"][0], loc)  # "{s}, the birthplace of {t}": t born in s
    assert text == "the birthplace of {PER1}" and f.facts[-1] == ("PER1", "born in", "LOC0")
    lives = next(p for p in g.PREDICATES["PER"] if p.text == "{s} lives in {t}")
    f.say(lives, s)
    assert len(f.facts) == 2  # living somewhere is no relation


def test_skeleton_sees_through_synonyms_and_never_composes_a_held_out_one():
    heldout = "Headquartered in {LOC0}, {ORG0} was established on {DATE0}."
    assert heldout in {f.template for f in rel.frames("heldout")}
    variant = "Based in {LOC0}, {ORG0} was created on {DATE0}."
    assert g.skeleton(variant) == g.skeleton(heldout) in g.heldout_skeletons()
    assert g.skeleton("Based in {LOC0}, {ORG0} opened a shop in {LOC1}.") != g.skeleton(heldout)
    longer = "Headquartered in {LOC0}, {ORG0} sued {ORG1} but was established on {DATE0}."
    assert g.skeleton(longer) not in g.heldout_skeletons() and g.is_held_out_shape(longer)
    assert not g.is_held_out_shape("Based in {LOC0}, {ORG0} opened a shop in {LOC1}.")
    assert g.skeleton("{ORG0}'s chief executive, {PER0}, met {PER1}.")[:3] == ("ORG", "'s",
                                                                               "WORK")
    rng = random.Random(1)
    raw = [g._compose(rng) for _ in range(5000)]
    assert sum(g.skeleton(f.template) in g.heldout_skeletons() for f in raw) > 20  # it can
    assert not any(g.is_held_out_shape(f.template) for f in _composed(5000, 1))


def _pattern(frame: rel.Frame) -> re.Pattern:
    parts = rel.SLOT.split(frame.template)[::3]
    return re.compile("(.+)".join(re.escape(part) for part in parts), re.DOTALL)


def test_composed_batches_use_training_names_and_no_held_out_frame():
    heldout = [_pattern(f) for f in rel.frames("heldout")]
    train = [_pattern(f) for f in rel.frames("train")]

    def batch() -> list[rel.Pair]:
        return [p for step in range(4)
                for p in rel.batch_pairs(0, step, 0, 64, composed=1.0, compose=g.compose)]

    assert batch() == batch()
    texts = {p.text for p in batch()}
    for p in batch():
        assert not ner.is_held_out_entity(p.head.text) and not ner.is_held_out_entity(
            p.tail.text)
    assert not any(pat.fullmatch(t) for pat in heldout for t in texts)
    new = sum(not any(pat.fullmatch(t) for pat in train) for t in texts)
    assert new > 0.8 * len(texts)  # composed, not the hand-written frames


def test_sampled_training_pairs_take_the_composed_share_and_held_out_refuses_it():
    train = [_pattern(f) for f in rel.frames("train")]
    texts = {p.text for p in rel.sample_pairs("train", 300, 0, 0.8, g.compose)}
    new = sum(not any(pat.fullmatch(t) for pat in train) for t in texts)
    assert 0.6 * len(texts) < new < len(texts)  # most composed, some written
    assert rel.sample_pairs("train", 30, 0, 0.8, g.compose) == rel.sample_pairs(
        "train", 30, 0, 0.8, g.compose)
    with pytest.raises(ValueError, match="training only"):
        rel.sample_pairs("heldout", 10, 0, 0.5, g.compose)
    with pytest.raises(ValueError, match="compose function"):
        rel.batch_pairs(0, 0, 0, 8, composed=0.5)
