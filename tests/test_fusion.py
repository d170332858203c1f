"""Fusion of text, image and audio: each mode against its formula, absent modalities as
documented, and the data's balance (no one or two modalities can answer)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest
import torch

from plait.data.fusion import (
    FAMILIES,
    NUMBER_WORDS,
    WORDS,
    example,
    example_at,
    word_utterances,
)
from plait.data.scenes import HELDOUT_PAIRS
from plait.models.fusion import MODES, Fusion, FusionConfig, _mean

VISION = {"image_size": 16, "patch_size": 4, "n_layer": 1, "n_head": 2, "n_embd": 8}
AUDIO = {"n_mels": 8, "n_frames": 12, "n_layer": 1, "n_head": 2, "n_embd": 8}


def model(mode: str, modalities=("text", "image", "audio"), **kw) -> Fusion:
    torch.manual_seed(0)
    c = FusionConfig(mode=mode, modalities=modalities, vocab_size=20, block_size=8, n_embd=16,
                     n_head=2, vision=VISION, audio=AUDIO, **kw)
    return Fusion(c).eval()


def inputs(B: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 20, (B, 5), generator=g)
    mask = torch.ones(B, 5, dtype=torch.long)
    mask[0, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask,
            "pixel_values": torch.randn(B, 3, 16, 16, generator=g),
            "input_features": torch.randn(B, 8, 12, generator=g)}


def pooled(m: Fusion, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: _mean(s, keep) for k, (s, keep) in m.encode(**x).items()}


@torch.no_grad()
def test_pooled_modes_follow_their_formulas():
    x = inputs()
    for mode in ("add", "concat", "gated", "gmu"):
        m = model(mode)
        p = pooled(m, x)
        xt, xi, xa = p["text"], p["image"], p["audio"]
        cat = torch.cat([xt, xi, xa], dim=-1)
        if mode == "add":
            want = xt + xi + xa
        elif mode == "concat":
            want = cat @ m.fuse.weight.T + m.fuse.bias
        else:
            a = (cat @ m.gate.weight.T + m.gate.bias).view(-1, 3, 16)
            if mode == "gated":
                alpha = torch.exp(a) / torch.exp(a).sum(dim=1, keepdim=True)
                want = (alpha * torch.stack([xt, xi, xa], 1)).sum(1)
            else:
                h = [torch.tanh(v @ m.transform[k].weight.T + m.transform[k].bias)
                     for k, v in (("text", xt), ("image", xi), ("audio", xa))]
                want = sum(torch.sigmoid(a[:, j]) * h[j] for j in range(3))
        torch.testing.assert_close(m.fuse_pooled(p), want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m(**x), m.head(want), rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_two_modality_gate_is_the_sigmoid_of_a_sum():
    m = model("gated", ("text", "image"))
    p = pooled(m, {k: v for k, v in inputs().items() if k != "input_features"})
    alpha = m.gates(p)  # (B, 2, d)
    a = (torch.cat([p["text"], p["image"]], -1) @ m.gate.weight.T + m.gate.bias).view(-1, 2, 16)
    # softmax over two is sigmoid(a_t - a_i): sigma(W_t x_t + W_i x_i + b), W = rows' difference
    torch.testing.assert_close(alpha[:, 0], torch.sigmoid(a[:, 0] - a[:, 1]))
    torch.testing.assert_close(alpha.sum(1), torch.ones_like(alpha[:, 0]))


@torch.no_grad()
def test_gates_lie_in_zero_one():
    x = inputs()
    for mode in ("gated", "gmu"):
        m = model(mode)
        for w in m.gate.parameters():
            w.mul_(50.0)  # large arguments: still strictly inside (0, 1) in float64
        p = {k: v.double() for k, v in pooled(m, x).items()}
        g = m.double().gates(p)
        assert bool(((g > 0) & (g < 1)).all()), mode


@torch.no_grad()
def test_an_absent_modality_is_left_out_of_set_modes():
    x = inputs()
    no_audio = {k: v for k, v in x.items() if k != "input_features"}
    for mode in ("add", "gated", "gmu"):
        m = model(mode)
        p = pooled(m, no_audio)
        assert set(p) == {"text", "image"}
        h = m.fuse_pooled(p)
        if mode == "add":
            torch.testing.assert_close(h, p["text"] + p["image"])
        if mode == "gated":  # the softmax runs over the two present
            alpha = m.gates(p)
            assert torch.equal(alpha[:, 2], torch.zeros_like(alpha[:, 2]))
            torch.testing.assert_close(h, alpha[:, 0] * p["text"] + alpha[:, 1] * p["image"])
        if mode == "gmu":  # the absent term is gone; its input is zeros in every gate
            full = pooled(m, x) | {"audio": torch.zeros_like(p["text"])}
            with_zero = m.fuse_pooled(full)
            h_a = torch.tanh(m.transform["audio"].bias)
            z_a = m.gates(full)[:, 2]
            torch.testing.assert_close(h, with_zero - z_a * h_a, rtol=1e-5, atol=1e-6)
        assert m(**no_audio).shape == (3, 2)


@torch.no_grad()
def test_cross_attention_without_a_modality_and_padding():
    m = model("cross-attention")
    x = inputs()
    out = m(**x)
    assert out.shape == (3, 2)
    assert m(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).shape == (3, 2)
    assert m(pixel_values=x["pixel_values"], input_features=x["input_features"]).shape == (3, 2)
    # padding the text further changes nothing
    ids = torch.cat([x["input_ids"], torch.zeros(3, 2, dtype=torch.long)], 1)
    mask = torch.cat([x["attention_mask"], torch.zeros(3, 2, dtype=torch.long)], 1)
    torch.testing.assert_close(m(**(x | {"input_ids": ids, "attention_mask": mask})), out)
    # and the memory matters: another picture, another answer
    other = m(**(x | {"pixel_values": x["pixel_values"].flip(0)}))
    assert not torch.allclose(other, out)


def test_concat_refuses_an_absent_modality_and_models_refuse_unknown_ones():
    x = inputs()
    with pytest.raises(ValueError, match="concat fusion needs every modality.*audio missing"):
        model("concat")(**{k: v for k, v in x.items() if k != "input_features"})
    with pytest.raises(ValueError, match="built without audio"):
        model("add", ("text", "image"))(**x)
    with pytest.raises(ValueError, match="no input"):
        model("add")()
    with pytest.raises(ValueError, match="model.mode must be one of"):
        FusionConfig(mode="sum")
    with pytest.raises(ValueError, match="modalities"):
        FusionConfig(modalities=("text", "smell"))
    with pytest.raises(ValueError, match="exceeds the model's 8"):
        model("add")(input_ids=torch.ones(1, 9, dtype=torch.long))


def test_every_mode_trains_every_part():
    x = inputs()
    for mode in MODES:
        m = model(mode, feature_layer=-1).train()  # every tower block runs
        m(**x).sum().backward()
        dead = [n for n, p in m.named_parameters() if (p.grad is None or not p.grad.any())
                and not n.startswith("vision.encoder.norm")]  # features are read before it
        assert not dead, (mode, dead)


# -- the data ----------------------------------------------------------------------------------
def test_examples_are_balanced_so_no_single_input_answers():
    yes_by: dict[str, list[bool]] = defaultdict(list)
    families = Counter()
    for i in range(6000):
        e = example_at(i, "train")
        yes = e.answer == "yes"
        families[e.family] += 1
        yes_by[f"family {e.family}"].append(yes)
        yes_by[f"word {e.word}"].append(yes)  # the audio alone
        yes_by[f"question {e.family} {e.slot}"].append(yes)  # the text alone
    assert set(families) == set(FAMILIES) and min(families.values()) > 1800
    for key, v in yes_by.items():
        if len(v) >= 150:  # every frequent word and question: half yes (within noise)
            assert abs(sum(v) / len(v) - 0.5) < 0.12, (key, sum(v) / len(v), len(v))


def test_picture_and_word_alone_do_not_answer_a_count():
    """Given the picture and the number said (no question), "yes" stays at half: the number
    said is uniform over the picture's counts whatever the answer."""
    said: dict[bool, Counter] = {True: Counter(), False: Counter()}
    for i in range(4000):
        e = example_at(i, "train")
        if e.family == "count-colour":
            counts = sorted({sum(s.colour == c for s in e.shapes) for c in
                             {"red", "orange", "yellow", "green", "blue", "purple"}})
            said[e.answer == "yes"][(tuple(counts), e.word)] += 1
    for key in set(said[True]) | set(said[False]):
        n = said[True][key] + said[False][key]
        if n >= 60:
            assert abs(said[True][key] / n - 0.5) < 0.15, (key, said[True][key], n)


def test_heldout_pairs_stay_out_of_training():
    for i in range(2000):
        e = example_at(i, "train")
        assert not any(s.pair in HELDOUT_PAIRS for s in e.shapes)
        assert not e.about_heldout_pair
    held = [example_at(i, "heldout") for i in range(300)]
    assert all(any(s.pair in HELDOUT_PAIRS for s in e.shapes) for e in held)
    assert any(e.about_heldout_pair and e.answer == "yes" for e in held)


def test_examples_are_pure_and_words_are_the_ones_said():
    assert example_at(7, "heldout", seed=3) == example_at(7, "heldout", seed=3)
    assert example_at(7, "train") != example_at(8, "train")
    e = example(random.Random(0), n_words=22)
    assert 0 <= e.utterance < 22 and WORDS[e.utterance % len(WORDS)] == e.word
    utts = word_utterances(len(WORDS), "heldout")
    assert [u.text for u in utts] == list(WORDS)
    assert all(u.voice == "en-gb-scotland" or u.variant in ("f4", "m4", "klatt4", "iven3",
                                                            "steph3") for u in utts)
    counts = [e for e in (example_at(i) for i in range(300)) if e.family != "colour-kind"]
    assert all(e.word in NUMBER_WORDS for e in counts)
    with pytest.raises(ValueError, match="split"):
        example_at(0, "test")


def test_a_resnet_tower_gives_one_token_per_cell_of_its_map_and_stays_frozen_in_eval():
    from plait.models.resnet import ResNet

    torch.manual_seed(0)
    vision = {"kind": "resnet", "widths": [4, 8], "depths": [1, 1], "stem_stride": 2}
    c = FusionConfig(mode="cross-attention", vocab_size=20, block_size=8, n_embd=16, n_head=2,
                     vision=vision, image_size=16, feature_layer=-1, pixel_shuffle=2,
                     audio=AUDIO)
    assert c.image_grid == (4, 8)  # 16 px -> 8 (stem) -> 4 (second stage)
    assert c.to_dict()["vision"]["kind"] == "resnet"
    m = Fusion(c)
    assert isinstance(m.vision, ResNet)
    x = inputs()
    states = m.encode(pixel_values=x["pixel_values"])
    assert states["image"][0].shape == (3, 4, 16)  # (4 / 2)^2 tokens
    maps = m.vision.features(x["pixel_values"], -1)
    want = m.image_proj(torch.cat([maps[:, [0, 1, 4, 5]].flatten(1)], -1)) + m.image_pos[0, 0]
    torch.testing.assert_close(states["image"][0][:, 0], want)  # the top-left 2 x 2 of the map
    for p in m.vision.parameters():
        p.requires_grad_(False)
    m.train()
    assert m.training and not m.vision.training  # batch norm keeps its running statistics
    assert m(**x).shape == (3, 2)
    with pytest.raises(ValueError, match="model.vision.kind"):
        FusionConfig(vision={"kind": "swin"}, audio=AUDIO)
