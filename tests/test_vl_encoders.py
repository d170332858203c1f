"""VisualBERT and ViLBERT: shapes, padding, that each stream really reads the other, and their
recipes (CLIP first, then the classifier around its frozen tower) on a tiny scale."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from plait.config import read_toml
from plait.models.vl_encoders import ViLBert, ViLBertConfig, VisualBert, VisualBertConfig
from plait.training import recipe_from_dict, train

VISION = dict(image_size=32, patch_size=8, n_layer=2, n_head=2, n_embd=24, pre_norm=True)
TEXT = dict(vocab_size=30, n_layer=2, n_head=2, n_embd=32, block_size=16,
            labels=("a", "b", "c"))


@pytest.mark.parametrize("cls, cfg", [(VisualBert, VisualBertConfig), (ViLBert, ViLBertConfig)])
def test_answers_ignore_padding_and_depend_on_image_and_text(cls, cfg):
    torch.manual_seed(0)
    m = cls(cfg(vision=VISION, **TEXT)).eval()
    ids = torch.tensor([[1, 5, 6, 7], [1, 8, 9, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    px = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = m(ids, mask, px)
        assert out.shape == (2, 3)
        alone = m(ids[1:, :3], None, px[1:])
        assert torch.allclose(out[1], alone[0], atol=1e-5)  # padding changes nothing
        assert not torch.allclose(m(ids, mask, px.flip(0)), out, atol=1e-4)  # reads the image
        other = ids.clone()
        other[:, 1] = 11
        assert not torch.allclose(m(other, mask, px), out, atol=1e-4)  # reads the text
    with pytest.raises(ValueError, match="question of 20 tokens exceeds the model's 16"):
        m(torch.ones(1, 20, dtype=torch.long), None, px[:1])


def test_vilbert_co_attention_crosses_both_ways():
    """Each text block attends to the image stream and each image block to the text stream:
    the blocks hold cross-attention, and cutting it (zero output projection) changes the
    answer."""
    torch.manual_seed(0)
    m = ViLBert(ViLBertConfig(vision=VISION, **TEXT)).eval()
    assert all(b.cross_attn is not None for b in m.text_stream.blocks)
    assert all(b.cross_attn is not None for b in m.image_stream.blocks)
    ids, px = torch.tensor([[1, 5, 6]]), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = m(ids, None, px)
        for b in m.image_stream.blocks:
            b.cross_attn.proj.weight.zero_()
            b.cross_attn.proj.bias.zero_()
        assert not torch.allclose(m(ids, None, px), before, atol=1e-5)


@pytest.mark.parametrize("arch", ["visualbert", "vilbert"])
def test_recipe_trains_around_the_clip_tower_and_evaluates_per_kind(arch, tmp_path, capsys):
    from plait.cli.main import main
    from plait.loading import load

    tree = read_toml(Path(__file__).parents[1] / "configs" / f"{arch}_scenes.toml")
    tree["model"].update(n_layer=1, n_embd=32, n_head=2)
    tree["data"].update(n_train=32, n_eval=4, batch_size=4)
    tree["train"].update(max_steps=3, warmup_steps=1, out_dir=str(tmp_path), progress=False,
                         threads=1, max_minutes=0.0)
    (clip,) = tree["stages"]
    clip["model"]["vision"].update(n_layer=2, n_embd=32, n_head=2)
    clip["model"]["text"].update(n_layer=1, n_embd=32, n_head=2)
    clip["data"].update(n_train=32, n_gallery=8, batch_size=8)
    clip["train"].update(max_steps=2, warmup_steps=1, max_minutes=0.0)
    for run in recipe_from_dict(tree).runs():
        train(run)
    tower, model = load(tmp_path / "clip").vision.state_dict(), load(tmp_path)
    assert type(model).__name__ == {"visualbert": "VisualBert", "vilbert": "ViLBert"}[arch]
    assert all(torch.equal(model.vision.state_dict()[k], v) for k, v in tower.items())
    assert "yes" in model.config.labels and "three" in model.config.labels
    capsys.readouterr()
    assert main(["eval", "--model", str(tmp_path), "--task", "scenes-vqa-classify"]) == 0
    out = capsys.readouterr().out
    assert "vqa_accuracy" in out and "vqa_presence" in out
