"""``load_tokenizer(folder_or_file)``: plait's own ``tokenizer.json`` or a Hugging Face folder.

What is looked for, in order:

- ``tokenizer.json``: ``{"type": "plait-char"}`` is a ``CharTokenizer``; a ``tokenizers`` file
  whose model is ``BPE`` is a ``BPETokenizer`` (plait's trained BPE, GPT-2), ``WordPiece`` a
  ``WordPieceTokenizer`` (BERT, MiniLM).
- ``vocab.json`` + ``merges.txt``: GPT-2 byte-level BPE.
- ``vocab.txt``: BERT WordPiece.

Options come from ``tokenizer_config.json`` and ``special_tokens_map.json`` when present:
``do_lower_case``, ``strip_accents``, ``tokenize_chinese_chars``, ``add_prefix_space`` and the
special tokens, read the way ``transformers`` reads them (its ``do_lower_case`` wins over the
normalizer stored in a BERT ``tokenizer.json``, as in transformers 5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as RustTokenizer
from tokenizers import pre_tokenizers

from plait.io import read_json
from plait.text.base import TOKENIZER_FILE, Tokenizer
from plait.text.bpe import EOS_TOKEN, BPETokenizer
from plait.text.char import CHAR_TYPE, CharTokenizer
from plait.text.wordpiece import SPECIALS, WordPieceTokenizer, cls_sep_template

HF_FILES = "tokenizer.json, vocab.json + merges.txt (GPT-2) or vocab.txt (BERT)"


def _token(value: Any) -> str | None:
    """A special token as written in HF configs: a string or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def read_hf_config(folder: Path) -> dict[str, Any]:
    """tokenizer_config.json merged with special_tokens_map.json (either may be missing)."""
    config: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            config.update(read_json(folder / name))
    return config


def _specials(config: dict[str, Any], defaults: dict[str, str]) -> dict[str, str]:
    return {k: _token(config.get(k, v)) for k, v in defaults.items()}


def _from_tokenizer_json(path: Path, config: dict[str, Any]) -> Tokenizer:
    data = read_json(path)
    if data.get("type") == CHAR_TYPE:
        return CharTokenizer.from_dict(data)
    kind = (data.get("model") or {}).get("type")
    if kind not in ("BPE", "WordPiece"):
        raise ValueError(f"{path}: unsupported tokenizer model {kind!r} (plait reads "
                         f"'{CHAR_TYPE}', byte-level BPE and WordPiece)")
    try:
        backend = RustTokenizer.from_file(str(path))
    except Exception as e:  # the Rust error type is not exported
        raise ValueError(f"cannot read {path} as a tokenizers file: {e}") from None
    if kind == "BPE":
        pre = data.get("pre_tokenizer") or {}
        if "add_prefix_space" in config and pre.get("type") == "ByteLevel":
            # transformers 5 rebuilds GPT-2's pre-tokenizer from tokenizer_config.json
            backend.pre_tokenizer = pre_tokenizers.ByteLevel(
                add_prefix_space=bool(config["add_prefix_space"]))
        return BPETokenizer(backend, eos_token=_token(config.get("eos_token", EOS_TOKEN)),
                            pad_token=_token(config.get("pad_token")))
    specials = _specials(config, SPECIALS)
    if config:  # like transformers 5: rebuild from the vocabulary and tokenizer_config.json
        return _wordpiece_from_vocab(data["model"]["vocab"], config, backend.post_processor)
    if backend.post_processor is None:
        backend.post_processor = cls_sep_template(backend.get_vocab(), specials)
    return WordPieceTokenizer(backend, specials)


def _wordpiece_from_vocab(vocab, config: dict[str, Any], post_processor=None) -> Tokenizer:
    return WordPieceTokenizer.from_vocab(
        vocab, do_lower_case=config.get("do_lower_case", True),
        strip_accents=config.get("strip_accents"),
        tokenize_chinese_chars=config.get("tokenize_chinese_chars", True),
        specials=_specials(config, SPECIALS), post_processor=post_processor)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer stored in a folder (or a ``tokenizer.json`` file); see the module docstring."""
    path = Path(path)
    if path.is_file():
        return _from_tokenizer_json(path, read_hf_config(path.parent))
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer folder or file not found: {path}")
    config = read_hf_config(path)
    if (path / TOKENIZER_FILE).is_file():
        return _from_tokenizer_json(path / TOKENIZER_FILE, config)
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        eos = _token(config.get("eos_token", EOS_TOKEN))
        names = ("unk_token", "bos_token", "eos_token")
        specials = {_token(config.get(k, EOS_TOKEN)) for k in names}
        if config.get("pad_token"):
            specials.add(_token(config["pad_token"]))
        return BPETokenizer.from_vocab_merges(
            path / "vocab.json", path / "merges.txt",
            add_prefix_space=bool(config.get("add_prefix_space", False)),
            special_tokens=sorted(t for t in specials if t), eos_token=eos,
            pad_token=_token(config.get("pad_token")))
    if (path / "vocab.txt").is_file():
        return _wordpiece_from_vocab(path / "vocab.txt", config)
    raise FileNotFoundError(f"no tokenizer in {path}: expected {HF_FILES}")
