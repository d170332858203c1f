"""Tokenizers: characters, byte-level BPE (GPT-2) and WordPiece (BERT), one interface.

``load_tokenizer(folder)`` reads plait's ``tokenizer.json`` or a Hugging Face folder;
``CharTokenizer.train(text)`` and ``BPETokenizer.train(text, vocab_size)`` build new ones.
"""

from plait.text.base import TOKENIZER_FILE, BackedTokenizer, Tokenizer, pad_batch
from plait.text.bpe import EOS_TOKEN, BPETokenizer
from plait.text.char import CharTokenizer
from plait.text.load import load_tokenizer
from plait.text.wordpiece import WordPieceTokenizer

__all__ = [
    "EOS_TOKEN",
    "TOKENIZER_FILE",
    "BPETokenizer",
    "BackedTokenizer",
    "CharTokenizer",
    "Tokenizer",
    "WordPieceTokenizer",
    "load_tokenizer",
    "pad_batch",
]
