"""plait: a from-scratch PyTorch toolkit for multimodal large models."""

from plait.checkpoint import load, save_model
from plait.models import GPT, GPTConfig

__version__ = "0.1.0"
__all__ = ["GPT", "GPTConfig", "__version__", "load", "save_model"]
