"""Summarisation metrics: ROUGE, and how faithful a summary's facts are to its article.

:func:`rouge` is the mean F1 of ROUGE-1, ROUGE-2 and ROUGE-L (Lin 2004) from Google's
``rouge_score`` package with its Porter stemmer, the scorer most papers report.

ROUGE rewards shared words, and a summary with one wrong name or number loses little. The fact
metrics look at *fact spans* instead (:func:`fact_spans`): maximal runs of words that are
capitalised or hold a digit (names, places, organisations, dates, amounts), joined by the
punctuation inside them ("Gray, Clark", "Tuesday, March 9, 2021", "2021-03-09", "$450",
"1,250"), without a capitalised function word that only starts a sentence ("The", "In").
A summary's span is *hallucinated* when its words do not occur as one contiguous run in the
article: "Anna Freeman" made of "Anna Weber" and "John Freeman" is; a copied "Anna Weber" is not.
:func:`fact_scores` also compares a prediction's spans with the reference's (exact match).

:func:`lead_baseline` scores an article's first sentence as its summary; the sentence splitter
:func:`plait.data.summarise.lead` lives with the data, whose generator it is tested against.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

from tokenizers import pre_tokenizers

from plait.data.summarise import lead

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
JOINERS = frozenset(",.-/'$%")  # kept inside a span, between two of its words
GLUED = frozenset("$%")  # kept at a span's edge when written against its word ("$450", "5%")
SENTENCE_END = frozenset(".!?")
# Capitalised only because they start a sentence: not facts there.
STOP = frozenset({
    "A", "An", "The", "In", "On", "At", "After", "Before", "By", "For", "From", "Of", "To",
    "With", "As", "When", "While", "During", "Since", "Until", "Its", "It", "This", "That",
    "These", "Those", "He", "She", "They", "We", "I", "And", "But", "Or", "If", "According",
    "Last", "Earlier", "Later", "Meanwhile", "However", "There", "Here", "Some", "All"})

_PRE = pre_tokenizers.BertPreTokenizer()
Span = tuple[str, ...]


@lru_cache(maxsize=1)
def _scorer():
    # imported here: rouge_score pulls in nltk, which takes a second or two to import
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Mean F1 of ROUGE-1, ROUGE-2 and ROUGE-L over pairs, as fractions."""
    if len(references) != len(predictions) or not references:
        raise ValueError(f"rouge needs as many predictions as references, at least one: got "
                         f"{len(predictions)} predictions for {len(references)} references")
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for ref, pred in zip(references, predictions, strict=True):
        for key, score in _scorer().score(ref, pred).items():
            totals[key] += score.fmeasure
    return {key: total / len(references) for key, total in totals.items()}


def _factual(words: list[str], i: int) -> bool:
    word = words[i]
    if not (word[0].isupper() or any(c.isdigit() for c in word)):
        return False
    sentence_start = i == 0 or words[i - 1] in SENTENCE_END
    return not (sentence_start and word in STOP)


def _marks(tokens: list[tuple[str, tuple[int, int]]]) -> list[bool]:
    """Which tokens belong to fact spans: factual words, and the words and "$"/"%" written
    against them without a space ("e.V." with "Kaul", "$450")."""
    words = [w for w, _ in tokens]
    marks = [_factual(words, i) for i in range(len(words))]
    chunk, chunks = 0, []  # the whitespace-separated chunk of each token
    for i, (_, (start, _end)) in enumerate(tokens):
        chunk += i > 0 and start > tokens[i - 1][1][1]  # only whitespace lies between tokens
        chunks.append(chunk)
    factual_chunks = {c for c, m in zip(chunks, marks, strict=True) if m}
    for i, word in enumerate(words):
        glue = word.isalnum() or word in GLUED
        excluded = word in STOP and (i == 0 or words[i - 1] in SENTENCE_END)
        if chunks[i] in factual_chunks and glue and not excluded:
            marks[i] = True
    return marks


def _spans(text: str) -> list[tuple[Span, tuple[int, int]]]:
    """Fact spans as (words, character span)."""
    tokens = _PRE.pre_tokenize_str(text)
    marks = _marks(tokens)
    out, i = [], 0
    while i < len(tokens):
        if not marks[i]:
            i += 1
            continue
        end = i  # extend over marked words, and joiners that sit between two of them
        j = i + 1
        while j < len(tokens):
            if marks[j]:
                end = j
            elif tokens[j][0] not in JOINERS:
                break
            j += 1
        words = tuple(w for w, _ in tokens[i:end + 1])
        out.append((words, (tokens[i][1][0], tokens[end][1][1])))
        i = end + 1
    return out


def fact_spans(text: str) -> list[str]:
    """The text's fact spans, as written in it."""
    return [text[s:e] for _, (s, e) in _spans(text)]


def _occurs(span: Span, words: Sequence[str]) -> bool:
    joined = "\x00" + "\x00".join(words) + "\x00"
    return "\x00" + "\x00".join(span) + "\x00" in joined


def hallucinations(article: str, summary: str) -> tuple[int, int]:
    """(how many of the summary's fact spans are not a contiguous run of the article's words,
    how many fact spans the summary has)."""
    words = [w for w, _ in _PRE.pre_tokenize_str(article)]
    spans = [s for s, _ in _spans(summary)]
    return sum(not _occurs(s, words) for s in spans), len(spans)


def fact_scores(articles: Sequence[str], references: Sequence[str],
                predictions: Sequence[str]) -> dict[str, float]:
    """Hallucination rate of the predictions' spans, micro precision and recall of their spans
    against the references' (exact match), and the share with exactly the reference's spans."""
    if not len(articles) == len(references) == len(predictions):
        raise ValueError(f"fact_scores needs one reference and one prediction per article: got "
                         f"{len(articles)} articles, {len(references)} references, "
                         f"{len(predictions)} predictions")
    made_up = n_pred = n_ref = matched = exact = 0
    for article, ref, pred in zip(articles, references, predictions, strict=True):
        bad, n = hallucinations(article, pred)
        made_up += bad
        pred_spans = Counter(s for s, _ in _spans(pred))
        ref_spans = Counter(s for s, _ in _spans(ref))
        n_pred += n
        n_ref += sum(ref_spans.values())
        matched += sum((pred_spans & ref_spans).values())
        exact += pred_spans == ref_spans
    return {"hallucination": made_up / max(n_pred, 1),
            "fact_precision": matched / max(n_pred, 1),
            "fact_recall": matched / max(n_ref, 1),
            "facts_exact": exact / max(len(articles), 1)}


def lead_baseline(articles: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """ROUGE and fact scores of each article's first sentence as its summary, keys prefixed
    "lead_"."""
    predictions = [lead(a) for a in articles]
    scores = rouge(references, predictions) | fact_scores(articles, references, predictions)
    return {f"lead_{k}": v for k, v in scores.items()}
