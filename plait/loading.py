"""``plait.load(folder)``: a ready model from a plait folder or a Hugging Face one.

It sits above both formats: :mod:`plait.checkpoint` (``config.json`` with ``plait_model``) and
:mod:`plait.hf` (``config.json`` with ``model_type``), and neither of them imports it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from plait import hf
from plait.checkpoint import is_plait_folder, load_model


def load(folder: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A ready model (eval mode, with ``.config``) from a plait or a Hugging Face folder."""
    if is_plait_folder(folder):
        return load_model(folder, device)
    return hf.load(folder, device=device)
