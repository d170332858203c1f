"""WordPiece: BERT's tokenizer (Devlin 2019, arXiv:1810.04805; Wu 2016, arXiv:1609.08144).

The pipeline, each stage a ``tokenizers`` component configured the way ``transformers`` does:

1. ``BertNormalizer``: drop control characters, put spaces around CJK ideographs, and for
   uncased models lowercase and strip accents (NFD, then drop combining marks).
2. ``BertPreTokenizer``: split on whitespace and punctuation.
3. ``WordPiece``: greedy longest-match-first over the vocabulary; continuation pieces carry
   a ``##`` prefix, and a word with no match (or over 100 characters) becomes ``[UNK]``.
4. ``TemplateProcessing``: ``[CLS] text [SEP]``.

``encode(text, max_length=n)`` truncates so the result, specials included, has at most ``n``
ids; ``encode_batch`` right-pads with ``[PAD]`` and returns the attention mask.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer as RustTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from plait.text.base import BackedTokenizer

# transformers' BertTokenizer defaults; a tokenizer_config.json may rename them
SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
            "sep_token": "[SEP]", "mask_token": "[MASK]"}


def bert_normalizer(do_lower_case: bool = True, strip_accents: bool | None = None,
                    tokenize_chinese_chars: bool = True) -> normalizers.Normalizer:
    # strip_accents=None means "follow do_lower_case", as in the original BERT code
    return normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=tokenize_chinese_chars,
                                      strip_accents=strip_accents, lowercase=do_lower_case)


class WordPieceTokenizer(BackedTokenizer):
    """BERT WordPiece over a ``tokenizers.Tokenizer``; ``encode`` adds [CLS] ... [SEP]."""

    def __init__(self, backend: RustTokenizer, specials: dict[str, str] | None = None):
        self.specials = {**SPECIALS, **(specials or {})}
        super().__init__(backend, eos_token=None, pad_token=self.specials["pad_token"])
        self.cls_token_id = self._id(self.specials["cls_token"])
        self.sep_token_id = self._id(self.specials["sep_token"])
        self.mask_token_id = self._id(self.specials["mask_token"])
        self.unk_token_id = self._id(self.specials["unk_token"])

    @classmethod
    def from_vocab(cls, vocab: str | Path | dict[str, int], do_lower_case: bool = True,
                   strip_accents: bool | None = None, tokenize_chinese_chars: bool = True,
                   specials: dict[str, str] | None = None,
                   post_processor: processors.PostProcessor | None = None) -> WordPieceTokenizer:
        """Build from a BERT ``vocab.txt`` (one token per line; the line number is the id) or a
        token -> id dict, the way ``transformers``' ``BertTokenizer`` builds its pipeline."""
        sp = {**SPECIALS, **(specials or {})}
        if not isinstance(vocab, dict):
            with open(vocab, encoding="utf-8") as f:
                vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
        backend = RustTokenizer(models.WordPiece(vocab, unk_token=sp["unk_token"],
                                                 max_input_chars_per_word=100))
        backend.normalizer = bert_normalizer(do_lower_case, strip_accents, tokenize_chinese_chars)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        # specials are matched in the raw text first, so a literal "[MASK]" stays one token
        backend.add_special_tokens([t for t in sp.values() if t in vocab])
        backend.post_processor = post_processor or cls_sep_template(vocab, sp)
        return cls(backend, sp)


    @classmethod
    def train(cls, texts: str | Iterable[str], vocab_size: int,
              do_lower_case: bool = True) -> WordPieceTokenizer:
        """Learn a WordPiece vocabulary of ``vocab_size`` from ``texts`` (a string or chunks),
        the five specials first ([PAD] is id 0), then the pieces, in BERT's pipeline."""
        if not isinstance(vocab_size, int) or vocab_size <= len(SPECIALS):
            raise ValueError(f"WordPiece vocab size must be an integer above {len(SPECIALS)},"
                             f" got {vocab_size!r}")
        backend = RustTokenizer(models.WordPiece(unk_token=SPECIALS["unk_token"],
                                                 max_input_chars_per_word=100))
        backend.normalizer = bert_normalizer(do_lower_case)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size,
                                            special_tokens=list(SPECIALS.values()),
                                            continuing_subword_prefix="##", show_progress=False)
        backend.train_from_iterator([texts] if isinstance(texts, str) else texts, trainer)
        return cls.from_vocab(backend.get_vocab(), do_lower_case=do_lower_case)


def cls_sep_template(vocab: dict[str, int], sp: dict[str, str]) -> processors.PostProcessor | None:
    """``[CLS] A [SEP]`` (and ``[CLS] A [SEP] B [SEP]`` for pairs), as BERT was trained."""
    cls_, sep = sp["cls_token"], sp["sep_token"]
    if cls_ not in vocab or sep not in vocab:
        return None
    return processors.TemplateProcessing(
        single=f"{cls_}:0 $A:0 {sep}:0",
        pair=f"{cls_}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls_, vocab[cls_]), (sep, vocab[sep])],
    )


def word_pieces(tokenizer, words: list[str], max_length: int) -> tuple[list[int], list[int]]:
    """(piece ids with [CLS] ... [SEP], the word index of each piece or -1)."""
    enc = tokenizer.backend.encode(words, is_pretokenized=True)
    ids, wids = enc.ids[:max_length], [-1 if w is None else w for w in enc.word_ids][:max_length]
    if len(enc.ids) > max_length:  # keep the closing [SEP]
        ids[-1], wids[-1] = tokenizer.sep_token_id, -1
    return ids, wids
