"""Datasets: token files for language models (``plait.data.tokens``), more kinds beside it."""

from plait.data.tokens import TokenDataset, prepare_text, read_meta

__all__ = ["TokenDataset", "prepare_text", "read_meta"]
