"""CLIP interop: a random tiny CLIPModel loads into plait's CLIP with equal image embeddings,
text embeddings (padded batches, both pooling rules) and logits, and exports back."""

from __future__ import annotations

import pytest
import torch

import plait
from plait.cli.main import main
from plait.hf import load
from plait.models.clip import CLIP, CLIPConfig

transformers = pytest.importorskip("transformers")

ATOL = 1e-4
VOCAB = 99


def randomize(model, std=0.3):
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, std) if name != "logit_scale" else p.fill_(2.0)
    return model


def hf_clip(tmp_path, eos=VOCAB - 1, text=None, vision=None, seed=0):
    torch.manual_seed(seed)
    tc = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 40,
          "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 16,
          "eos_token_id": eos, "bos_token_id": 0, "pad_token_id": 1, **(text or {})}
    vc = {"hidden_size": 48, "intermediate_size": 56, "num_hidden_layers": 3,
          "num_attention_heads": 4, "image_size": 32, "patch_size": 8, **(vision or {})}
    cfg = transformers.CLIPConfig(text_config=tc, vision_config=vc, projection_dim=24)
    model = randomize(transformers.CLIPModel(cfg).eval())
    model.save_pretrained(tmp_path)
    return model


def texts(eos, B=4, T=10, seed=1):
    """Right-padded token rows, each ending in eos; pad id 1 (HF's default pad)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB - 2, (B, T), generator=g)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b in range(B):
        n = T - 2 * b
        mask[b, :n] = 1
        ids[b, n - 1] = eos
        ids[b, n:] = 1
    return ids, mask


def hf_features(out):  # transformers 5 returns a model output from get_*_features
    return out.pooler_output if hasattr(out, "pooler_output") else out


@pytest.mark.parametrize("eos, text, vision", [
    (VOCAB - 1, None, None),  # the original rule: eos is the highest id (argmax)
    (2, None, {"hidden_act": "gelu"}),  # eos_token_id == 2: transformers keeps argmax
    (5, {"hidden_act": "gelu_new", "num_hidden_layers": 1}, {"patch_size": 16}),  # first eos
])
def test_clip_embeddings_and_logits_match(tmp_path, eos, text, vision):
    ref = hf_clip(tmp_path, eos=eos if eos != 2 else VOCAB - 1, text=text, vision=vision)
    if eos == 2:  # rewrite the config as an old checkpoint would have it
        import json

        cfg = json.loads((tmp_path / "config.json").read_text())
        cfg["text_config"]["eos_token_id"] = 2
        (tmp_path / "config.json").write_text(json.dumps(cfg))
    model = load(tmp_path)
    assert isinstance(model, CLIP)
    ids, mask = texts(VOCAB - 1 if eos == 2 else eos)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        img = hf_features(ref.get_image_features(pixel_values=pixels))
        txt = hf_features(ref.get_text_features(input_ids=ids, attention_mask=mask))
        out = ref(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        torch.testing.assert_close(model.encode_image(pixels), img, atol=ATOL, rtol=0)
        torch.testing.assert_close(model.encode_text(ids, mask), txt, atol=ATOL, rtol=0)
        per_image, per_text = model.logits(pixels, ids, mask)
        feats = model(pixels, ids, mask)  # what the model computes: embeddings and scale
    torch.testing.assert_close(feats.image_embeds, img, atol=ATOL, rtol=0)
    torch.testing.assert_close(feats.text_embeds, txt, atol=ATOL, rtol=0)
    torch.testing.assert_close(feats.logit_scale.exp(), ref.logit_scale.exp())
    torch.testing.assert_close(per_image, out.logits_per_image, atol=ATOL, rtol=0)
    torch.testing.assert_close(per_text, out.logits_per_text, atol=ATOL, rtol=0)


def test_clip_export_round_trip(tmp_path):
    hf_clip(tmp_path / "hf", eos=7)
    model = load(tmp_path / "hf")
    plait.save_model(model, tmp_path / "plait")
    again = plait.load(tmp_path / "plait")
    assert main(["convert", "--to-hf", str(tmp_path / "plait"), str(tmp_path / "back")]) == 0
    ref = transformers.CLIPModel.from_pretrained(tmp_path / "back").eval()
    ids, mask = texts(7)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = ref(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        torch.testing.assert_close(again.logits(pixels, ids, mask)[0], out.logits_per_image,
                                   atol=ATOL, rtol=0)


def test_towers_by_kind_and_bert_text_tower():
    cfg = CLIPConfig(
        vision={"kind": "vit", "image_size": 16, "patch_size": 8, "n_layer": 1, "n_head": 2,
                "n_embd": 32, "pooling": "mean"},
        text={"kind": "bert", "vocab_size": 50, "n_layer": 1, "n_head": 2, "n_embd": 32,
              "n_inner": 40, "block_size": 12},
        embed_dim=16)
    model = CLIP(cfg)
    ids = torch.randint(0, 50, (3, 7))
    per_image, per_text = model.logits(torch.randn(2, 3, 16, 16), ids, torch.ones_like(ids))
    assert per_image.shape == (2, 3) and per_text.shape == (3, 2)
    with pytest.raises(ValueError, match="vision.kind"):
        CLIPConfig(vision={"kind": "vgg"})
    with pytest.raises(ValueError, match="n_layr"):
        CLIPConfig(text={"kind": "transformer", "n_layr": 2})


def test_resnet_tower_saves_and_loads(tmp_path):
    cfg = CLIPConfig(vision={"kind": "resnet", "widths": [8, 16], "depths": [1, 1]},
                     text={"kind": "transformer", "vocab_size": 30, "n_layer": 1, "n_head": 2,
                           "n_embd": 16, "block_size": 8, "pool": "last"},
                     embed_dim=12)
    model = CLIP(cfg).eval()
    plait.save_model(model, tmp_path)
    again = plait.load(tmp_path)
    pixels, ids = torch.randn(2, 3, 32, 32), torch.randint(0, 30, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(again(pixels, ids)[0], model(pixels, ids)[0])
    assert again.config.vision["kind"] == "resnet" and again.encode_image(pixels).shape == (2, 12)
