"""plait: a from-scratch PyTorch toolkit for multimodal large models."""

from plait.checkpoint import save_model
from plait.loading import load
from plait.models import CLIP, GPT, Bert, BertConfig, CLIPConfig, GPTConfig, ViT, ViTConfig

__version__ = "0.1.0"
__all__ = ["CLIP", "GPT", "Bert", "BertConfig", "CLIPConfig", "GPTConfig", "ViT", "ViTConfig",
           "__version__", "load", "save_model"]
