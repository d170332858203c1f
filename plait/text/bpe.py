"""Byte-level BPE: GPT-2's tokenizer, and the one ``plait prepare-text --tokenizer bpe`` trains.

Byte-pair encoding (Sennrich et al. 2016, arXiv:1508.07909) starts from single symbols and
repeatedly merges the most frequent adjacent pair into a new symbol. GPT-2 (Radford et al. 2019)
runs it on *bytes* instead of characters: the text's UTF-8 bytes are first mapped one-to-one onto
256 printable characters (the ``ByteLevel`` pre-tokenizer, which also splits words with GPT-2's
regex), so every string, emoji and control characters included, has an encoding and decodes
back exactly. No unknown token is ever needed, as long as all 256 byte symbols are in the
vocabulary, which ``BPETokenizer.train`` guarantees with ``initial_alphabet``.

The merges are learned and applied by the Rust ``tokenizers`` library, the same code that
``transformers``' GPT-2 tokenizer runs, so ids match it exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer as RustTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from plait.text.base import BackedTokenizer

EOS_TOKEN = "<|endoftext|>"  # GPT-2's end-of-text marker; plait's trained BPE uses it too
MIN_VOCAB = 257  # 256 byte symbols + <|endoftext|>


class BPETokenizer(BackedTokenizer):
    """Byte-level BPE over a ``tokenizers.Tokenizer`` (see module docstring)."""

    def __init__(self, backend: RustTokenizer, eos_token: str | None = EOS_TOKEN,
                 pad_token: str | None = None):
        if backend.token_to_id(eos_token or "") is None:
            eos_token = None
        super().__init__(backend, eos_token=eos_token, pad_token=pad_token)

    @classmethod
    def train(cls, texts: str | Iterable[str], vocab_size: int) -> BPETokenizer:
        """Learn ``vocab_size - 257`` merges from ``texts`` (a string or an iterable of chunks)."""
        if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB:
            raise ValueError(f"BPE vocab size must be an integer >= {MIN_VOCAB} (256 bytes + "
                             f"{EOS_TOKEN}), got {vocab_size!r}")
        backend = RustTokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOS_TOKEN],  # id 0
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: no unknowns
            show_progress=False,
        )
        chunks = [texts] if isinstance(texts, str) else texts
        backend.train_from_iterator(chunks, trainer)
        return cls(backend)

    @classmethod
    def from_vocab_merges(cls, vocab_file: str | Path, merges_file: str | Path,
                          add_prefix_space: bool = False, special_tokens: list | None = None,
                          eos_token: str | None = EOS_TOKEN, pad_token: str | None = None,
                          ) -> BPETokenizer:
        """GPT-2 style ``vocab.json`` + ``merges.txt``, built as ``transformers`` builds them.

        ``special_tokens`` (str or ``tokenizers.AddedToken``) are matched in the raw text before
        BPE, so ``"<|endoftext|>"`` in a prompt becomes one id; default: ``[eos_token]``.
        """
        vocab, merges = models.BPE.read_file(str(vocab_file), str(merges_file))
        backend = RustTokenizer(models.BPE(vocab, merges, continuing_subword_prefix="",
                                           end_of_word_suffix="", fuse_unk=False))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
        backend.decoder = decoders.ByteLevel()
        if special_tokens is None:
            special_tokens = [eos_token] if eos_token else []
        specials = special_tokens
        backend.add_special_tokens(specials)
        return cls(backend, eos_token=eos_token, pad_token=pad_token)
