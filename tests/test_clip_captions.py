"""Video captions' grammar: a clip's sentence, the facts read back from a sentence, and the
content score against the clip (the ground for video captioning, issue 19)."""

from __future__ import annotations

import pytest

from plait.data.clip_captions import caption, content_scores, facts, truth
from plait.data.clips import clip_at
from plait.data.scenes import HELDOUT_PAIRS


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_every_caption_reads_back_as_its_clips_facts(split):
    motions = set()
    for i in range(300):
        clip = clip_at(i, split)
        assert facts(caption(clip)) == truth(clip)
        motions |= {m for _, _, m, _ in truth(clip)}
    assert motions == {"still", "cross", "leave", "enter"}


def test_held_out_captions_name_a_held_out_pair_and_training_captions_none():
    for i in range(100):
        assert {(c, k) for c, k, _, _ in facts(caption(clip_at(i, "train")))}.isdisjoint(
            HELDOUT_PAIRS)
        assert {(c, k) for c, k, _, _ in facts(caption(clip_at(i, "heldout")))} & HELDOUT_PAIRS


def test_facts_are_read_from_a_sentence_however_it_is_joined():
    text = ("First, A Red Circles moves left; then a blue star enters the picture moving up,"
            " while the green square stays still.")
    assert facts(text) == (("blue", "star", "enter", "up"), ("green", "square", "still", "still"),
                           ("red", "circle", "cross", "left"))
    assert facts("a red circle wanders about") == ()


def test_content_is_exact_facts_and_precision_recall_count_them():
    clips = [clip_at(i, "heldout") for i in range(3)]
    right = caption(clips[0])
    missing = "nothing happens"  # states no fact
    c = truth(clips[2])[0]
    wrong = f"a {c[0]} {c[1]} moves {'up' if c[3] != 'up' else 'down'}"
    scores = content_scores([right, missing, wrong], clips)
    n_true = sum(len(truth(clip)) for clip in clips)
    assert scores["content"] == pytest.approx(1 / 3)
    assert scores["fact_precision"] == pytest.approx(len(truth(clips[0])) / (len(truth(clips[0]))
                                                                            + 1))
    assert scores["fact_recall"] == pytest.approx(len(truth(clips[0])) / n_true)
