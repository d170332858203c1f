"""Image preprocessing against transformers' CLIPImageProcessor and by hand; safe decoding;
synthetic data; the ResNet tower; the ViT is not a bag of patches."""

from __future__ import annotations

import json
import random
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from plait.data.digits import TRAIN_TEMPLATES, ZERO_SHOT_TEMPLATES, load_digits_split
from plait.data.scenes import HELDOUT_PAIRS, distinct_scenes, scene_at, scenes
from plait.models.resnet import ResNet, ResNetConfig
from plait.models.vit import ViT, ViTConfig
from plait.vision import (
    CLIP_MEAN,
    CLIP_STD,
    ImageConfig,
    ImageError,
    ImageProcessor,
    open_image,
    read_preprocessor_config,
    write_preprocessor_config,
)


def random_image(h: int, w: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    return Image.fromarray(rng.integers(0, 256, (h, w, channels), dtype=np.uint8), mode)


@pytest.mark.parametrize("hw", [(37, 53), (64, 30), (20, 20), (9, 15)])
def test_matches_transformers_clip_image_processor(hw):
    from transformers import CLIPImageProcessorPil

    img = random_image(*hw, seed=hw[0])
    hf = CLIPImageProcessorPil(size={"shortest_edge": 24}, crop_size={"height": 20, "width": 20})
    want = hf(img, return_tensors="pt")["pixel_values"][0]
    got = ImageProcessor(ImageConfig(size=24, crop_size=20))(img)
    # both resize the uint8 image with Pillow's bicubic, so only the float maths may differ
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_transparency_composited_on_white_like_transformers():
    from transformers import CLIPImageProcessorPil

    img = random_image(30, 40, seed=3, mode="RGBA")
    hf = CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    want = hf(img, return_tensors="pt")["pixel_values"][0]
    got = ImageProcessor(ImageConfig(size=16, crop_size=16))(img)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_hand_computed_pixels():
    # 2x4 image, shortest side already 2: no resize; crop 2 keeps columns 1..2 ((4 - 2) // 2 = 1)
    arr = np.zeros((2, 4, 3), dtype=np.uint8)
    arr[:, 1] = (255, 0, 0)
    arr[:, 2] = (0, 255, 51)
    x = ImageProcessor(ImageConfig(size=2, crop_size=2))(Image.fromarray(arr))
    assert x.shape == (3, 2, 2)
    m, s = CLIP_MEAN, CLIP_STD
    assert x[0, 0, 0].item() == pytest.approx((1.0 - m[0]) / s[0], abs=1e-6)  # red column
    assert x[1, 0, 0].item() == pytest.approx((0.0 - m[1]) / s[1], abs=1e-6)
    assert x[2, 1, 1].item() == pytest.approx((0.2 - m[2]) / s[2], abs=1e-6)  # 51 / 255


def test_training_crop_keeps_size_and_never_flips():
    img = Image.new("RGB", (48, 48), "white")
    img.paste((255, 0, 0), (0, 0, 12, 48))  # a red band on the LEFT
    p = ImageProcessor(ImageConfig(size=48, crop_size=48, crop_scale=(0.8, 1.0)))
    rng = random.Random(0)
    for _ in range(20):
        x = p(img, train=True, rng=rng)
        assert x.shape == (3, 48, 48)
        assert x[1, :, :4].mean() < x[1, :, -4:].mean()  # red (no green) stays left


def test_preprocessor_config_round_trip(tmp_path):
    cfg = ImageConfig(size=40, crop_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    write_preprocessor_config(tmp_path, cfg)
    back = read_preprocessor_config(tmp_path)
    assert (back.size, back.crop_size, back.mean, back.std) == (40, 32, cfg.mean, cfg.std)
    from transformers import CLIPImageProcessorPil  # transformers reads our file too

    hf = CLIPImageProcessorPil.from_pretrained(tmp_path)
    img = random_image(50, 60, seed=5)
    torch.testing.assert_close(ImageProcessor(back)(img),
                               hf(img, return_tensors="pt")["pixel_values"][0], atol=1e-5, rtol=0)


# -- safe decoding ---------------------------------------------------------------------------
def png_claiming(path, w: int, h: int) -> None:
    """A tiny valid PNG whose header then claims w x h (a decompression bomb's header)."""
    Image.new("RGB", (1, 1)).save(path, format="PNG")
    data = bytearray(path.read_bytes())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", w, h)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))


def test_bad_files_raise_one_line_image_errors(tmp_path):
    good = tmp_path / "good.jpg"
    random_image(32, 32).save(good, format="JPEG")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image at all")
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)  # a JPEG signature, then nothing
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    bomb = tmp_path / "bomb.png"
    png_claiming(bomb, 10_000, 10_000)  # 100 megapixels
    assert open_image(good).size == (32, 32)
    for path, why in [(empty, "empty"), (text, "not a readable image"),
                      (fake, "not a readable image"), (trunc, "not a readable image"),
                      (bomb, "100.0 megapixels")]:
        with pytest.raises(ImageError, match=why) as e:
            open_image(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), "white")  # wide
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the upright image is tall
    path = tmp_path / "rot.jpg"
    img.save(path, format="JPEG", exif=exif)
    assert open_image(path).size == (20, 40)


# -- synthetic data --------------------------------------------------------------------------
def test_scenes_are_deterministic_and_heldout_pairs_never_train():
    a, b = scene_at(7, "train", seed=3), scene_at(7, "train", seed=3)
    assert a.shapes == b.shapes and a.captions == b.captions
    assert np.array_equal(np.asarray(a.render(48)), np.asarray(b.render(48)))
    for s in scenes(300, "train"):
        assert not any(sh.pair in HELDOUT_PAIRS for sh in s.shapes)
        assert 1 <= len(s.shapes) <= 3 and len(s.captions) >= 2 and s.qa
    for s in scenes(100, "heldout"):
        assert any(sh.pair in HELDOUT_PAIRS for sh in s.shapes)
        for c in s.captions:  # every caption names every shape
            assert all(f"{sh.colour} {sh.kind}" in c for sh in s.shapes)
    gallery = distinct_scenes(50)
    assert len({s.key for s in gallery}) == 50


def test_digits_split_and_unseen_templates():
    train, held = load_digits_split("train"), load_digits_split("heldout")
    assert len(train) + len(held) == 1797 and len(held) == 539
    assert not set(ZERO_SHOT_TEMPLATES) & set(TRAIN_TEMPLATES)
    words = {c for d in train for c in d.captions}
    assert all(t.format("seven") not in words for t in ZERO_SHOT_TEMPLATES)
    assert train[0].render(32).size == (32, 32)


# -- towers ----------------------------------------------------------------------------------
def test_resnet_shapes_and_registry():
    from plait.models import model_classes

    assert model_classes("resnet") == (ResNetConfig, ResNet)
    m = ResNet(ResNetConfig(widths=(8, 16), depths=(1, 2))).eval()
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 16)
    c = ResNet(ResNetConfig(widths=(8, 16), depths=(1, 1), num_classes=5)).eval()
    assert c(torch.randn(2, 3, 24, 24)).shape == (2, 5)
    with pytest.raises(ValueError, match="one entry per stage"):
        ResNetConfig(widths=(8, 16), depths=(1,))


def test_resnet_block_matches_its_equation():
    from plait.models.resnet import BasicBlock

    torch.manual_seed(0)
    b = BasicBlock(4, 8, stride=2).eval()
    for bn in (b.bn1, b.bn2, b.shortcut[1]):
        torch.nn.init.normal_(bn.weight)
        torch.nn.init.normal_(bn.bias)
    x = torch.randn(1, 4, 8, 8)
    f = b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(x)))))
    torch.testing.assert_close(b(x), torch.relu(b.shortcut(x) + f))


def test_vit_is_not_a_bag_of_patches():
    torch.manual_seed(0)
    vit = ViT(ViTConfig(image_size=16, patch_size=4, n_layer=2, n_head=2, n_embd=32)).eval()
    x = torch.randn(1, 3, 16, 16)
    # swap two 4x4 patches: the same multiset of patches in a different arrangement
    y = x.clone()
    y[..., 0:4, 0:4], y[..., 8:12, 4:8] = x[..., 8:12, 4:8], x[..., 0:4, 0:4]
    assert not torch.allclose(vit.pooled(x), vit.pooled(y), atol=1e-4)
    # ...whereas without position embeddings it would be (a sanity check of the test itself)
    with torch.no_grad():
        vit.pos.zero_()
    torch.testing.assert_close(vit.pooled(x), vit.pooled(y), atol=1e-5, rtol=1e-5)


def test_preprocessor_json_is_plain_json(tmp_path):
    write_preprocessor_config(tmp_path, ImageConfig(size=48, crop_size=48))
    raw = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert raw["size"] == {"shortest_edge": 48} and raw["resample"] == 3
