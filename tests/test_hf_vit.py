"""ViT interop: random tiny ViTModel / ViTForImageClassification load into plait's ViT with
equal hidden states, pooler and logits, and export back unchanged."""

from __future__ import annotations

import pytest
import torch
from helpers import randomize

import plait
from plait.cli.main import main
from plait.hf import load
from plait.models.vit import ViT, ViTConfig

transformers = pytest.importorskip("transformers")

ATOL = 1e-4



def hf_vit(tmp_path, cls="ViTModel", seed=0, **kw):
    torch.manual_seed(seed)
    cfg = transformers.ViTConfig(**{"hidden_size": 32, "num_hidden_layers": 2,
                                    "num_attention_heads": 4, "intermediate_size": 48,
                                    "image_size": 32, "patch_size": 8, **kw})
    model = randomize(getattr(transformers, cls)(cfg).eval())
    model.save_pretrained(tmp_path)
    return model


@pytest.mark.parametrize("kw", [
    {},
    {"hidden_size": 48, "num_attention_heads": 3, "patch_size": 16, "hidden_act": "gelu_new"},
    {"qkv_bias": False, "num_channels": 1, "layer_norm_eps": 1e-6, "num_hidden_layers": 3},
])
def test_vit_model_matches(tmp_path, kw):
    ref = hf_vit(tmp_path, **kw)
    model = load(tmp_path)
    assert isinstance(model, ViT) and model.config.head == "tanh"
    pixels = torch.randn(3, model.config.num_channels, 32, 32)
    with torch.no_grad():
        want = ref(pixel_values=pixels)
        torch.testing.assert_close(model(pixels), want.last_hidden_state, atol=ATOL, rtol=0)
        torch.testing.assert_close(model.logits(pixels), want.pooler_output, atol=ATOL, rtol=0)


def test_vit_classifier_matches_and_exports(tmp_path):
    ref = hf_vit(tmp_path / "hf", "ViTForImageClassification", num_labels=7)
    model = load(tmp_path / "hf")
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.logits(pixels), ref(pixel_values=pixels).logits,
                                   atol=ATOL, rtol=0)
    plait.save_model(model, tmp_path / "plait")
    assert main(["convert", "--to-hf", str(tmp_path / "plait"), str(tmp_path / "back")]) == 0
    back = transformers.ViTForImageClassification.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(pixel_values=pixels).logits, model.logits(pixels),
                                   atol=ATOL, rtol=0)


def test_vit_without_pooler_loads_headless(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=40, image_size=16, patch_size=8)
    ref = randomize(transformers.ViTModel(cfg, add_pooling_layer=False).eval())
    ref.save_pretrained(tmp_path)
    model = load(tmp_path)
    assert model.config.head == "none"
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(pixels), ref(pixel_values=pixels).last_hidden_state,
                                   atol=ATOL, rtol=0)


def test_plait_only_variants_run_and_refuse_export(tmp_path, capsys):
    cfg = ViTConfig(image_size=32, patch_size=8, n_layer=2, n_head=2, n_embd=32,
                    pooling="mean", pos_embedding="sincos2d")
    model = ViT(cfg).eval()
    pixels = torch.randn(2, 3, 32, 32)
    assert model(pixels).shape == (2, 16, 32)  # no class token with mean pooling
    torch.testing.assert_close(model.pooled(pixels), model(pixels).mean(1))
    plait.save_model(model, tmp_path / "p")
    assert main(["convert", "--to-hf", str(tmp_path / "p"), str(tmp_path / "h")]) == 2
    assert "pooling" in capsys.readouterr().err
    with pytest.raises(ValueError, match="resize"):
        model(torch.randn(1, 3, 16, 16))
