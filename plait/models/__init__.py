"""One file per architecture: a config dataclass and an nn.Module wired from plait.nn.

``MODELS`` maps the ``plait_model`` name stored in a folder's ``config.json`` to the model class
that rebuilds it; each model class names its config class as ``config_class``. Add one line per
architecture.
"""

from __future__ import annotations

import sys

import torch.nn as nn

from plait.config import Config
from plait.models.bert import Bert, BertConfig
from plait.models.clip import CLIP, CLIPConfig
from plait.models.gpt import GPT, GPTConfig
from plait.models.resnet import ResNet, ResNetConfig
from plait.models.seq2seq import Seq2Seq, Seq2SeqConfig
from plait.models.vit import ViT, ViTConfig
from plait.models.whisper import Whisper, WhisperConfig
from plait.registry import Registry

MODELS = Registry("model architecture", {
    "gpt": "plait.models.gpt:GPT",
    "bert": "plait.models.bert:Bert",
    "vit": "plait.models.vit:ViT",
    "clip": "plait.models.clip:CLIP",
    "resnet": "plait.models.resnet:ResNet",
    "seq2seq": "plait.models.seq2seq:Seq2Seq",
    "whisper": "plait.models.whisper:Whisper",
    "vlm": "plait.models.vlm:VLM",
    "visualbert": "plait.models.vl_encoders:VisualBert",
    "vilbert": "plait.models.vl_encoders:ViLBert",
    "visualbert-video": "plait.models.video:VideoVisualBert",
    "fusion": "plait.models.fusion:Fusion",
    "imagine": "plait.models.imagine:Imagine",
    "two-tower": "plait.models.two_tower:TwoTower",
    "detector": "plait.models.detect:Detector",
    "segmenter": "plait.models.segment:Segmenter",
    "clip-captioner": "plait.models.video_caption:ClipCaptioner",
    "pointer-generator": "plait.models.pointer:PointerGenerator",
    "tts": "plait.models.tts:TTS",
})


def model_classes(arch: str) -> tuple[type[Config], type[nn.Module]]:
    """(config class, model class) registered as ``arch``."""
    model_cls = MODELS.get(arch)
    return model_cls.config_class, model_cls


def model_class_for(config: Config) -> type[nn.Module]:
    """The registered model class whose ``config_class`` is exactly ``config``'s class."""
    for name in MODELS:
        cls = MODELS.get(name)
        if type(config) is cls.config_class:
            return cls
    raise ValueError(f"no model in plait.models.MODELS takes a {type(config).__name__}")


def model_type_of(model: nn.Module) -> str:
    """The ``MODELS`` name of ``model``'s class (what ``config.json`` records)."""
    kind = type(model)
    fsdp = sys.modules.get("torch.distributed.fsdp")  # imported by whoever sharded the model
    if fsdp is not None and issubclass(kind, fsdp.FSDPModule):
        # fully_shard made the class FSDP<Class>(FSDPModule, Class): the model's is the other
        kind = next(b for b in kind.__bases__ if not issubclass(b, fsdp.FSDPModule))
    for name in MODELS:
        if kind is MODELS.get(name):
            return name
    raise ValueError(f"{type(model).__name__} is not in plait.models.MODELS")


__all__ = ["CLIP", "GPT", "MODELS", "Bert", "BertConfig", "CLIPConfig", "GPTConfig", "ResNet",
           "ResNetConfig", "Seq2Seq", "Seq2SeqConfig", "ViT", "ViTConfig", "Whisper",
           "WhisperConfig", "model_class_for", "model_classes", "model_type_of"]
