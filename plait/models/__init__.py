"""One file per architecture: a config dataclass and an nn.Module wired from plait.nn.

``REGISTRY`` maps the ``plait_model`` name stored in a folder's ``config.json`` to the
(config class, model class) pair that rebuilds it. Add one line per architecture.
"""

from __future__ import annotations

import torch.nn as nn

from plait.config import Config
from plait.models.bert import Bert, BertConfig
from plait.models.clip import CLIP, CLIPConfig
from plait.models.gpt import GPT, GPTConfig
from plait.models.resnet import ResNet, ResNetConfig
from plait.models.vit import ViT, ViTConfig

REGISTRY: dict[str, tuple[type[Config], type[nn.Module]]] = {
    "gpt": (GPTConfig, GPT),
    "bert": (BertConfig, Bert),
    "vit": (ViTConfig, ViT),
    "clip": (CLIPConfig, CLIP),
    "resnet": (ResNetConfig, ResNet),
}


def model_type_of(model: nn.Module) -> str:
    for name, (_, cls) in REGISTRY.items():
        if type(model) is cls:
            return name
    raise ValueError(f"{type(model).__name__} is not in plait.models.REGISTRY")


__all__ = ["CLIP", "GPT", "Bert", "BertConfig", "CLIPConfig", "GPTConfig", "REGISTRY",
           "ResNet", "ResNetConfig", "ViT", "ViTConfig", "model_type_of"]
