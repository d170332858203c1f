"""The pointer-generator (plait.models.pointer) and its words (plait.text.words): the mixture
against its formula, copying, the extended ids, and a toy run that must learn to copy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from plait.inference.summarise import Summariser, words_batch
from plait.models.pointer import PointerConfig, PointerGenerator
from plait.text.base import pad_batch
from plait.text.words import (
    BOS,
    EOS,
    N_SHAPES,
    N_SLOTS,
    UNK,
    CopyVocab,
    Word,
    copy_positions,
    join_words,
    shape,
    split_words,
)

TEXTS = ["Kaul e.V. paid 4,250 euros to Anna Weber on 2021-03-09.",
         "The firm said it paid the fine , and the court agreed.",
         "the the the firm firm paid paid said said court court , , . . euros euros"]


def test_split_and_join_keep_the_spacing():
    for text in TEXTS:
        assert join_words(split_words(text)) == text
    words = [w.text for w in split_words(TEXTS[0])]
    assert words == ["Kaul", "e.V.", "paid", "4,250", "euros", "to", "Anna", "Weber", "on",
                     "2021-03-09", "."]
    assert [w.text for w in split_words('"Dr. D. Smith," (Acme) said.')] == [
        '"', "Dr", ".", "D.", "Smith", ",", '"', "(", "Acme", ")", "said", "."]


def test_shape_collapses_runs():
    assert shape("Weber") == "Xx" and shape("4,250") == "d,d" and shape("e.V.") == "x.X."


def test_vocabulary_holds_only_lower_case_words_and_marks():
    vocab = CopyVocab.train(TEXTS, min_count=2)
    words = vocab.itos[4:]
    assert "the" in words and "paid" in words and "," in words
    assert not any(w[0].isupper() or any(c.isdigit() for c in w) for w in words)
    assert "agreed" not in words  # seen once


def test_extended_ids_point_at_the_first_occurrence():
    vocab = CopyVocab.train(TEXTS, min_count=2)
    src = split_words("Anna paid Anna Weber .")
    tgt = split_words("Weber paid Anna Smith")
    V = vocab.vocab_size
    assert vocab.extended(tgt, src) == [V + 3, vocab.stoi["paid"], V + 0, UNK]
    assert vocab.word(V + 3, src) == src[3]
    assert vocab.word(vocab.stoi[","], src) == Word(",", False)


def tiny(vocab: CopyVocab, **kw) -> PointerGenerator:
    torch.manual_seed(0)
    c = PointerConfig(vocab_size=vocab.vocab_size, n_layer=1, n_decoder_layer=1, n_head=2,
                      n_embd=32, n_inner=64, block_size=64, pad_token_id=0, eos_token_id=EOS,
                      decoder_start_token_id=BOS, n_shapes=N_SHAPES, n_slots=N_SLOTS, **kw)
    return PointerGenerator(c)


def test_mixture_is_a_distribution_and_matches_the_formula():
    vocab = CopyVocab.train(TEXTS, min_count=2)
    model = tiny(vocab).eval()
    sources = [split_words(TEXTS[0]), split_words(TEXTS[1])]
    src, mask = words_batch(vocab, sources, sources)
    rows = [[Word("<s>", False), *split_words("Anna Weber paid")]] * 2
    dec, _ = words_batch(vocab, rows, sources)
    pos = torch.full(dec.ids.shape, -1)
    logp = model(src, mask, dec, pos)  # (B, T, V + S)
    V, S = vocab.vocab_size, src.ids.shape[1]
    assert logp.shape == (2, 4, V + S)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2, 4), atol=1e-4, rtol=0)
    # by hand for the first article: p_gen P_vocab, plus the copy attention where words stand
    memory = model.encode_words(src, mask)
    with torch.no_grad():
        h = hidden(model, dec, memory, src, mask)
        p_gen = torch.sigmoid(model.gen_gate(h))[0, -1, 0]
        p_vocab = model.lm_head(h)[0, -1].softmax(-1)
        att = (model.copy_q(h) @ model.copy_k(memory).transpose(1, 2))[0, -1] / math.sqrt(32)
        att = att.masked_fill(mask[0] == 0, -math.inf).softmax(-1)
    anna = sources[0].index(Word("Anna", True))
    want = (1 - p_gen) * att[anna]  # "Anna" is not in the vocabulary: copied only
    torch.testing.assert_close(logp[0, -1, V + anna].exp(), want, atol=1e-6, rtol=1e-4)
    paid = vocab.stoi["paid"]  # in the vocabulary and in the article: both
    at = [s for s, w in enumerate(sources[0]) if w.text == "paid"]
    want = p_gen * p_vocab[paid] + (1 - p_gen) * att[at].sum()
    torch.testing.assert_close(logp[0, -1, paid].exp(), want, atol=1e-6, rtol=1e-4)
    absent = vocab.stoi["court"]  # in the vocabulary, not in the first article: written only
    torch.testing.assert_close(logp[0, -1, absent].exp(), p_gen * p_vocab[absent],
                               atol=1e-6, rtol=1e-4)


def hidden(model, dec, memory, src, mask):
    """The decoder's last hidden state, caught on its way into ``mix``."""
    seen = {}
    original = model.mix
    model.mix = lambda h, *a: (seen.setdefault("h", h), None)
    try:
        model.decode_words(dec, torch.full(dec.ids.shape, -1), memory, src, mask)
    finally:
        model.mix = original
    return seen["h"]


def test_padding_does_not_change_an_article():
    vocab = CopyVocab.train(TEXTS, min_count=2)
    model = tiny(vocab).eval()
    short, long = split_words(TEXTS[1]), split_words(TEXTS[0] + " " + TEXTS[0])
    alone, m1 = words_batch(vocab, [short], [short])
    both, m2 = words_batch(vocab, [short, long], [short, long])
    rows = [[Word("<s>", False), *split_words("the firm")]]
    d1, _ = words_batch(vocab, rows, [short])
    d2, _ = words_batch(vocab, rows * 2, [short, long])
    a = model(alone, m1, d1, torch.full(d1.ids.shape, -1))[0]
    b = model(both, m2, d2, torch.full(d2.ids.shape, -1))[0, :, :a.shape[-1]]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("steps", [500])
def test_a_toy_model_learns_to_copy_unseen_names(steps):
    """Sources "the winner was <First> <Last> , said <Other> ." -> "<First> <Last>": names are
    never in the vocabulary, and the test names are never trained on."""
    import random

    rng = random.Random(0)
    first = [f"N{i}a" for i in range(40)]
    last = [f"M{i}b" for i in range(40)]

    def example(names):
        a, b, c = rng.sample(names[0], 1)[0], rng.sample(names[1], 1)[0], rng.sample(
            names[0], 1)[0]
        order = rng.random() < 0.5
        text = (f"the winner was {a} {b} , said {c} ." if order else
                f"{c} said the winner was {a} {b} .")
        return text, f"{a} {b}"

    train_names, test_names = (first[:30], last[:30]), (first[30:], last[30:])
    vocab = CopyVocab.train(["the winner was said , ."] * 3, min_count=1)
    model = tiny(vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        batch = [example(train_names) for _ in range(16)]
        sources = [split_words(s) for s, _ in batch]
        targets = [split_words(t) for _, t in batch]
        slots = [vocab.slots(s, rng) for s in sources]
        src, mask = words_batch(vocab, sources, sources, slots)
        dec, _ = words_batch(vocab, [[Word("<s>", False), *t] for t in targets], sources, slots)
        lab, lm = words_batch(vocab, [[*t, Word("</s>", False)] for t in targets], sources,
                              slots)
        pos, _ = pad_batch([[-1, *copy_positions(t, s)] for t, s in
                            zip(targets, sources, strict=True)], -1)
        loss = F.nll_loss(model(src, mask, dec, pos).flatten(0, 1),
                          lab.ext.masked_fill(lm == 0, -100).flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    tests = [example(test_names) for _ in range(50)]
    out = Summariser(model, vocab).summarise([s for s, _ in tests], max_words=5)
    right = sum(o == t for o, (_, t) in zip(out, tests, strict=True))
    assert right >= 45, (right, [(o, t) for o, (_, t) in zip(out, tests, strict=True) if o != t])


def test_slots_number_unknown_words_alike_within_an_article_only():
    import random

    vocab = CopyVocab.train(TEXTS, min_count=2)
    src = split_words("Anna paid Weber , Anna paid .")
    slots = vocab.slots(src)
    assert slots == {"Anna": 1, "Weber": 2}  # in order of appearance; vocabulary words: none
    _, _, numbers = vocab.features(split_words("Anna Weber paid Smith"), slots)
    assert numbers == [1, 2, 0, 0]
    drawn = [vocab.slots(src, random.Random(k)) for k in range(20)]
    assert all(d["Anna"] != d["Weber"] and min(d.values()) >= 1 for d in drawn)
    assert len({d["Anna"] for d in drawn}) > 5  # a random number, not a meaning
