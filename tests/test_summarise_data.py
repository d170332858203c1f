"""Synthetic news articles for summarisation, and their metrics (plait.data.summarise,
plait.evaluation.summarise)."""

from __future__ import annotations

import re
from functools import cache

import pytest

from plait.data import summarise as S
from plait.data.ner import is_held_out_entity
from plait.evaluation.summarise import (
    fact_scores,
    fact_spans,
    hallucinations,
    lead_baseline,
    rouge,
)

N = 300
ENTITY = ("PER", "ORG", "LOC", "DATE")


@cache
def _sample(split: str) -> tuple[tuple[S.Article, list[str]], ...]:
    return tuple((S.article_at(i, split), S.sentences_at(i, split)) for i in range(N))


@cache
def _regex(frame: str, kind: str, facts: tuple[tuple[str, str], ...] = ()) -> re.Pattern:
    """The frame as a regex whose groups are its slots' values, in order: the given facts
    as written, numbers as digits, roles and events from their lists, names as anything."""
    types, known = dict(S.KIND_BY_NAME[kind].slots), dict(facts)
    by_type = {"NUM": r"\d[\d,.]*", "ROLE": "|".join(S.ROLES), "EVENT": "|".join(S.EVENTS)}

    def group(slot: str) -> str:
        if slot in known:
            return f"({re.escape(known[slot])})"
        return f"({by_type.get(types.get(slot, slot), '.+?')})"

    parts = re.split(r"\{(\w+)\}", frame)
    return re.compile("".join(re.escape(p) if i % 2 == 0 else group(p)
                              for i, p in enumerate(parts)) + r"\Z")


def _frames(kind: S.Kind | None) -> list[tuple[str, bool]]:
    """(frame, held out) for the kind's leads and details (or the fillers)."""
    if kind is None:
        return [(f, i % 4 == 3) for i, f in enumerate(S.FILLERS)]
    return [(f, i % 4 == 3) for group in (kind.leads, kind.details) for i, f in enumerate(group)]


def _match(sentence: str, article: S.Article) -> list[tuple[str, bool, list[tuple[str, str]]]]:
    """Every frame of the article's kind (or filler) that the sentence fills with the article's
    facts: (frame, held out, [(slot type, value)])."""
    kind, facts = S.KIND_BY_NAME[article.kind], dict(article.facts)
    types = dict(kind.slots)
    out = []
    for frame, held in _frames(kind) + _frames(None):
        if not _regex(frame, kind.name).match(sentence):  # a quick filter
            continue
        m = _regex(frame, kind.name, article.facts).match(sentence)  # the values where they are
        if not m:
            continue
        slots = list(zip(re.findall(r"\{(\w+)\}", frame), m.groups(), strict=True))
        if all(facts.get(s, v) == v for s, v in slots):
            out.append((frame, held, [(types.get(s, s), v) for s, v in slots]))
    return out


def test_articles_are_pure_functions_of_their_arguments():
    assert S.article_at(7, "train", seed=3) == S.article_at(7, "train", seed=3)
    assert S.article_at(7, "train") != S.article_at(8, "train")
    assert S.article_at(7, "train") != S.article_at(7, "validation")
    assert S.article_at(7, "train", seed=1) != S.article_at(7, "train", seed=2)
    assert S.articles("heldout", 5, seed=1) == [S.article_at(i, "heldout", 1) for i in range(5)]
    batch = S.train_articles(seed=0, step=5, micro=1, n=8)
    assert batch == S.train_articles(seed=0, step=5, micro=1, n=8)
    assert batch != S.train_articles(seed=0, step=5, micro=2, n=8)
    assert batch != S.train_articles(seed=0, step=6, micro=1, n=8)
    assert len(batch) == 8
    with pytest.raises(ValueError, match="unknown split"):
        S.article_at(0, "test")


def test_every_kind_has_one_summary_and_enough_frames():
    assert len(S.KINDS) >= 6
    for kind in S.KINDS:
        assert len(kind.leads) >= 8 and len(kind.details) >= 8
        assert kind.summary.startswith("{"), kind.summary
        words = re.sub(r"\{\w+\}", "", kind.summary)
        assert words == words.lower(), f"a capitalised template word in {kind.summary!r}"
        assert set(re.findall(r"\{(\w+)\}", kind.summary)) == {s for s, _ in kind.slots}
        number = f"{{{kind.number}}}"  # a training detail can state the number a lead leaves out
        assert any(number in d for d in S.detail_frames(kind, "train"))


def test_no_sentence_ends_with_a_name():
    # names may end in a period ("Kaul e.V."), which would make the sentence end ambiguous
    for kind in S.KINDS:
        types = dict(kind.slots)
        for frame, _ in _frames(kind) + _frames(None):
            last = re.search(r"\{(\w+)\}\.$", frame)
            assert not last or types.get(last.group(1), last.group(1)) not in ENTITY[:3], frame


@pytest.mark.parametrize("split", ["train", "validation", "heldout"])
def test_held_out_frames_and_entities_appear_only_in_held_out_articles(split):
    held_out = split == "heldout"
    context_first = 0
    for article, sentences in _sample(split):
        kind = S.KIND_BY_NAME[article.kind]
        lead_at = 0
        if _match(sentences[0], article) and all(f in S.FILLERS for f, _, _ in
                                              _match(sentences[0], article)):
            lead_at, context_first = 1, context_first + 1
        for i, sentence in enumerate(sentences):
            matches = _match(sentence, article)
            assert matches, f"no frame fills {sentence!r}"
            if not held_out:
                assert not any(held for _, held, _ in matches), sentence
            elif i == lead_at:
                assert any(held and f in kind.leads for f, held, _ in matches), sentence
            for typ, value in matches[0][2]:
                if typ in ENTITY:
                    assert is_held_out_entity(value) == held_out, (value, sentence)
        for slot, value in article.facts:
            if dict(kind.slots)[slot] in ENTITY:
                assert is_held_out_entity(value) == held_out, value
    assert 0.15 * N < context_first < 0.45 * N  # about 30% open with context before the lead


def test_training_batches_use_training_frames_and_entities():
    for article in S.train_articles(seed=0, step=3, micro=0, n=100):
        for sentence in S.split_sentences(article.text):
            matches = _match(sentence, article)
            assert matches and not any(held for _, held, _ in matches), sentence
            assert not any(is_held_out_entity(v) for t, v in matches[0][2] if t in ENTITY)


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_summary_facts_are_verbatim_in_the_article(split):
    for article, _ in _sample(split):
        kind = S.KIND_BY_NAME[article.kind]
        facts = dict(article.facts)
        assert article.summary == kind.summary.format(**facts)
        for slot, value in article.facts:
            assert value in article.text, (slot, value)
        assert [s for s, _ in article.facts] == [s for s, _ in kind.slots]
        # the summary's capitalised words all lie inside its facts
        covered = set()
        for value in facts.values():
            for m in re.finditer(re.escape(value), article.summary):
                covered.update(range(m.start(), m.end()))
        for m in re.finditer(r"\S+", article.summary):
            if m.group()[0].isupper():
                assert m.start() in covered, (m.group(), article.summary)
        number = facts[kind.number]
        assert re.fullmatch(r"\d{1,3}(,\d{3})*|\d\.\d", number), number


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_lengths(split):
    for article, sentences in _sample(split):
        assert 70 <= len(article.text.split()) <= 140, article.text
        assert 4 <= len(sentences) <= 7
        assert 8 <= len(article.summary.split()) <= 40, article.summary


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_lead_is_the_first_generated_sentence(split):
    dotted = 0  # sentences with a name such as "Kaul e.V." or "Dr. Anna Weber" inside
    for article, sentences in _sample(split):
        assert article.text == " ".join(sentences)
        assert S.lead(article.text) == sentences[0]
        assert S.split_sentences(article.text) == sentences
        dotted += any(re.search(r"\w\.\S*\s", s) for s in sentences)
    assert dotted > N // 4


def test_lead_on_hand_examples():
    text = ("Kaul e.V. paid 4.5 million dollars to Dr. Anna Weber on 2021-03-09. Ehlert AG & Co."
            " KG was founded by Klaus-D. Ruppert in St. Jakob. Nobody else came.")
    assert S.lead(text) == "Kaul e.V. paid 4.5 million dollars to Dr. Anna Weber on 2021-03-09."
    assert S.split_sentences(text)[1] == ("Ehlert AG & Co. KG was founded by Klaus-D. Ruppert"
                                          " in St. Jakob.")
    assert S.lead("van der Dussen GmbH won. it rained.") == "van der Dussen GmbH won."
    assert S.lead("") == ""


def test_rouge_matches_hand_counts():
    ref, pred = "the cat sat on the mat", "the cat lay on a mat"
    # unigrams: the, cat, on, mat shared (4 of 6 each side); bigrams: only "the cat" (1 of 5);
    # longest common subsequence: the cat on mat (4)
    one = rouge([ref], [pred])
    assert one["rouge1"] == pytest.approx(2 / 3)
    assert one["rouge2"] == pytest.approx(0.2)
    assert one["rougeL"] == pytest.approx(2 / 3)
    two = rouge([ref, "a dog barked"], [pred, "A dog barked."])  # case and punctuation ignored
    assert two == pytest.approx({"rouge1": 5 / 6, "rouge2": 0.6, "rougeL": 5 / 6})
    assert rouge(["storms damaged homes"], ["storm damaging home"])["rouge1"] == 1.0  # stemmed
    with pytest.raises(ValueError, match="as many predictions"):
        rouge(["a"], [])


def test_fact_spans_on_hand_examples():
    assert fact_spans("Gray, Clark and Freeman bought Kaul e.V. on Tuesday, March 9, 2021.") == [
        "Gray, Clark", "Freeman", "Kaul e.V", "Tuesday, March 9, 2021"]
    assert fact_spans("The firm paid $450 on 2021-03-09, up 5%.") == ["$450", "2021-03-09", "5%"]
    assert fact_spans("In the end, 1,250 homes and 4.5 million. After it, Anna Weber left.") == [
        "1,250", "4.5", "Anna Weber"]
    assert fact_spans("she said in London that The Times was sold") == ["London", "The Times"]
    assert fact_spans("nothing here.") == []


def test_hallucinations_of_mixed_names_and_copies():
    article = "Anna Weber met John Freeman in Berlin on 3 May 2020. They paid 1,250 dollars."
    assert hallucinations(article, "Anna Freeman met John Weber.") == (2, 2)
    assert hallucinations(article, "Anna Weber met John Freeman in Berlin.") == (0, 3)
    assert hallucinations(article, "Anna Weber paid 1,350 dollars on 3 May 2020.") == (1, 3)
    assert hallucinations(article, "they met.") == (0, 0)


def test_fact_scores():
    article = "Anna Weber met John Freeman in Berlin on 3 May 2020."
    ref = "Anna Weber met John Freeman on 3 May 2020."
    perfect = fact_scores([article], [ref], [ref])
    assert perfect == {"hallucination": 0.0, "fact_precision": 1.0, "fact_recall": 1.0,
                       "facts_exact": 1.0}
    scores = fact_scores([article, article], [ref, ref],
                         ["Anna Freeman met John Weber in Berlin.", ref])
    # prediction spans: 3 + 3, of which 2 made up and 3 + 0 ... matched: 0 + 3 of 3 + 3 refs
    assert scores["hallucination"] == pytest.approx(2 / 6)
    assert scores["fact_precision"] == pytest.approx(3 / 6)
    assert scores["fact_recall"] == pytest.approx(3 / 6)
    assert scores["facts_exact"] == 0.5


def test_references_are_faithful_and_lead_is_a_beatable_baseline():
    sample = [a for a, _ in _sample("heldout")][:100]
    texts, refs = [a.text for a in sample], [a.summary for a in sample]
    assert fact_scores(texts, refs, refs)["hallucination"] == 0.0
    base = lead_baseline(texts, refs)
    assert set(base) == {f"lead_{k}" for k in ("rouge1", "rouge2", "rougeL", "hallucination",
                                               "fact_precision", "fact_recall", "facts_exact")}
    assert base["lead_hallucination"] == 0.0  # the lead is copied from the article
    assert 0.1 < base["lead_rougeL"] < 1.0
    assert base["lead_fact_recall"] < 0.9
