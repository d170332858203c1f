"""The vision–language model: where image tokens land, pixel shuffle, the projector's shapes,
cached generation against the uncached forward, and the errors a prompt can raise."""

from __future__ import annotations

import pytest
import torch

from plait.models.gpt import GPT, GPTConfig
from plait.models.vlm import VLM, VLMConfig, pixel_shuffle
from plait.nn import AttnInputs

IMG = 3  # the placeholder id in these tests


def tiny(**kw) -> VLM:
    torch.manual_seed(0)
    vision = dict(image_size=32, patch_size=8, n_layer=2, n_head=2, n_embd=24)
    text = dict(vocab_size=40, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=64,
                pos_encoding="rope", norm="rmsnorm", mlp="swiglu", bias=False,
                tie_embeddings=False)
    return VLM(VLMConfig(vision=vision, text=text, image_token_id=IMG, **kw)).eval()


def prompt(n_img_tokens: int, before: list[int], after: list[int]) -> list[int]:
    return before + [IMG] * n_img_tokens + after


def test_image_rows_land_exactly_on_the_placeholders():
    m = tiny()
    n = m.config.tokens_per_image  # 16 patches, class token dropped
    assert n == 16
    ids = torch.tensor([prompt(n, [5, 6], [7]), prompt(n, [], [8, 9, 10])])
    px = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        x = m.embed(ids, px)
        feats = m.image_features(px)
        words = m.decoder.wte(ids)
    for b in range(2):
        slots = (ids[b] == IMG).nonzero().squeeze(1)
        assert torch.equal(x[b, slots], feats[b])  # the b-th image, its tokens in order
        others = (ids[b] != IMG).nonzero().squeeze(1)
        assert torch.equal(x[b, others], words[b, others])
    # two images in one prompt: the first fills the first n slots
    two = torch.tensor([prompt(n, [5], [6] + [IMG] * n + [7])])
    with torch.no_grad():
        y = m.embed(two, px[None])  # (1, K=2, 3, H, W)
    slots = (two[0] == IMG).nonzero().squeeze(1)
    assert torch.equal(y[0, slots[:n]], feats[0]) and torch.equal(y[0, slots[n:]], feats[1])


def test_pixel_shuffle_groups_neighbouring_patches():
    g, C = 4, 2
    grid = torch.arange(g * g * C, dtype=torch.float32).reshape(1, g * g, C)
    out = pixel_shuffle(grid, 2)
    assert out.shape == (1, 4, 8)
    # the first token is the top-left 2 x 2 block: patches 0, 1 (row 0) then 4, 5 (row 1)
    expect = torch.cat([grid[0, i] for i in (0, 1, 4, 5)])
    assert torch.equal(out[0, 0], expect)
    assert torch.equal(out[0, 3], torch.cat([grid[0, i] for i in (10, 11, 14, 15)]))
    with pytest.raises(ValueError, match="divisible"):
        pixel_shuffle(torch.zeros(1, 9, 2), 2)


@pytest.mark.parametrize("r, tokens, width", [(1, 16, 24), (2, 4, 96), (4, 1, 384)])
def test_projector_shape_follows_the_pixel_shuffle_factor(r, tokens, width):
    m = tiny(pixel_shuffle=r)
    assert m.config.tokens_per_image == tokens
    assert m.projector.fc1.in_features == width
    with torch.no_grad():
        assert m.image_features(torch.randn(3, 3, 32, 32)).shape == (3, tokens, 32)


def test_feature_layer_reads_that_blocks_states():
    m = tiny(feature_layer=-2, features="all")
    px = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        x = m.vision.embed(px)
        x = m.vision.encoder.blocks[0](x, AttnInputs())
        assert torch.allclose(m.vision.features(px, -2), x, atol=1e-6)
        assert torch.allclose(m.vision.features(px, 1), x, atol=1e-6)
        assert torch.equal(m.vision.features(px, 0), m.vision.embed(px))
        # the last block without the final norm; the forward adds the norm
        last = m.vision.features(px, -1)
        assert torch.allclose(m.vision.encoder.norm(last), m.vision(px), atol=1e-6)
    assert m.config.tokens_per_image == 17  # class token kept
    with pytest.raises(ValueError, match="feature layer 5 out of range"):
        m.vision.features(px, 5)


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_cached_generation_with_an_image_equals_the_uncached_forward(attention):
    m = tiny(pixel_shuffle=2, image_attention=attention)
    n = m.config.tokens_per_image
    rows = [prompt(n, [5, 6, 7], [8]), prompt(n, [9], [10])]
    T = max(map(len, rows))
    ids = torch.tensor([[0] * (T - len(r)) + r for r in rows])  # left padding
    mask = torch.tensor([[0] * (T - len(r)) + [1] * len(r) for r in rows])
    px = torch.randn(2, 3, 32, 32)
    out = m.generate(ids, mask, pixel_values=px, max_new_tokens=6, do_sample=False)
    full_mask = torch.cat([mask, torch.ones(2, 6, dtype=mask.dtype)], dim=1)
    with torch.no_grad():
        logits = m(out[:, :-1], px, full_mask[:, :-1])
    assert torch.equal(logits[:, T - 1:].argmax(-1), out[:, T:])
    # each prompt alone gives the same tokens: padding changes nothing
    for b, r in enumerate(rows):
        alone = m.generate(torch.tensor([r]), pixel_values=px[b:b + 1], max_new_tokens=6)
        assert torch.equal(alone[0, len(r):], out[b, T:])
    beams = m.generate(ids, mask, pixel_values=px, max_new_tokens=6, num_beams=3)
    assert beams.shape == (2, T + 6)


def test_bidirectional_image_tokens_read_each_other_and_nothing_else():
    m = tiny(pixel_shuffle=2, image_attention="bidirectional")
    n = m.config.tokens_per_image  # 4
    ids = torch.tensor([[5] + [IMG] * n + [6] + [IMG] * n + [7, 8]])
    groups = m.image_groups(ids)
    assert groups.tolist() == [[0] + [1] * n + [0] + [2] * n + [0, 0]]
    x = torch.randn(1, ids.shape[1], 32)

    def changed(where: int, attend_within) -> list[bool]:
        """Which positions' logits move when the input at ``where`` does."""
        y = x.clone()
        y[0, where] += 1.0
        with torch.no_grad():
            a, b = (m.decoder(None, inputs_embeds=z, attend_within=attend_within) for z in (x, y))
        return ((a - b).abs().amax(-1) > 1e-6)[0].tolist()

    first, last = 1, n  # the first image's tokens
    moved = changed(last, groups)
    assert moved[first:last] == [True] * (n - 1)  # earlier tokens of the image see its last
    assert moved[0] is False  # the text before the image does not
    assert changed(n + 2 + n - 1, groups)[first:n + 1] == [False] * n  # nor the second image's
    assert changed(n + 1, groups)[:n + 1] == [False] * (n + 1)  # text after an image: causal
    assert changed(last, None)[first:last] == [False] * (n - 1)  # and causal without groups
    with pytest.raises(ValueError, match="attend_within"):
        m.decoder(None, inputs_embeds=x, attend_within=groups[:, :-1])
    # LLaVA's way (causal) is the default
    assert tiny().image_groups(ids) is None


def test_a_model_that_generated_can_still_train():
    """generate runs under inference_mode; the decode layout it prepares must not leave
    inference tensors behind."""
    torch.manual_seed(0)
    g = GPT(GPTConfig(vocab_size=50, n_layer=1, n_head=2, n_embd=256, block_size=32)).eval()
    ids = torch.tensor([[5, 3, 3]])
    g.generate(ids, max_new_tokens=2)
    g(ids).sum().backward()
    assert g.wte.weight.grad is not None and g.wte.weight.grad.abs().sum() > 0


def test_placeholders_and_images_must_agree():
    m = tiny()
    n = m.config.tokens_per_image
    px = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="no image was given"):
        m(torch.tensor([prompt(n, [5], [6])]))
    with pytest.raises(ValueError, match=r"1 image\(s\) need 16 placeholder tokens .* holds 17"):
        m(torch.tensor([prompt(n + 1, [5], [6])]), px)
    with pytest.raises(ValueError, match=r"2 image\(s\) need 32 .* holds 16"):
        m(torch.tensor([prompt(n, [5], [6])]), torch.randn(1, 2, 3, 32, 32))
    with pytest.raises(ValueError, match="pixel_values must be"):
        m(torch.tensor([prompt(n, [5], [6])]), torch.randn(1, 3, 16, 16))
    # a text-only prompt needs no image
    with torch.no_grad():
        assert m(torch.tensor([[5, 6, 7]])).shape == (1, 3, 40)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="image_token_id"):
        VLMConfig(text=dict(vocab_size=10, n_layer=1, n_head=1, n_embd=8),
                  vision=dict(image_size=16, patch_size=8, n_layer=1, n_head=1, n_embd=8),
                  image_token_id=10)
    with pytest.raises(ValueError, match="pixel_shuffle"):
        VLMConfig(text=dict(vocab_size=10, n_layer=1, n_head=1, n_embd=8),
                  vision=dict(image_size=24, patch_size=8, n_layer=1, n_head=1, n_embd=8),
                  pixel_shuffle=2)
    with pytest.raises(ValueError, match="image_attention"):
        VLMConfig(text=dict(vocab_size=10, n_layer=1, n_head=1, n_embd=8),
                  vision=dict(image_size=16, patch_size=8, n_layer=1, n_head=1, n_embd=8),
                  image_attention="full")
    with pytest.raises(ValueError, match="model.vision"):
        VLMConfig(vision=dict(image_size=20, patch_size=8))


def segmenter_vlm(**kw) -> VLM:
    torch.manual_seed(0)
    vision = dict(kind="segmenter", image_size=32, n_embd=8,
                  vision=dict(patch_size=8, n_layer=1, n_head=2, n_embd=16))
    text = dict(vocab_size=40, n_layer=1, n_head=2, n_embd=32, block_size=64)
    return VLM(VLMConfig(vision=vision, text=text, image_token_id=IMG, **kw)).eval()


def test_a_segmenter_tower_gives_each_patch_its_colour_and_kind_shares():
    m = segmenter_vlm(pixel_shuffle=2, projector="linear")
    seg, c = m.vision, m.config
    assert c.tower == "segmenter" and c.feature_width == 1 + 6 + 4
    assert c.tokens_per_image == 4  # a 4 x 4 patch grid, 2 x 2 patches a token
    assert VLMConfig.from_dict(c.to_dict()) == c
    px = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        shares = seg.features(px)  # (2, 16, 11)
        out = seg(px)
    colour = out["colour"].softmax(1)
    kind = out["kind"].softmax(1) * (1 - colour[:, :1])
    # patch (row 1, column 2) by hand: the mean over its 8 x 8 pixels
    patch = torch.cat([colour, kind], 1)[:, :, 8:16, 16:24].mean((2, 3))
    torch.testing.assert_close(shares[:, 1 * 4 + 2], patch)
    torch.testing.assert_close(shares[..., :7].sum(-1), torch.ones(2, 16))
    torch.testing.assert_close(shares[..., 7:].sum(-1), 1 - shares[..., 0])
    with torch.no_grad():
        tokens = m.image_features(px)
    torch.testing.assert_close(tokens, m.projector(pixel_shuffle(shares, 2)))
    assert tokens.shape == (2, 4, 32)


def test_an_unknown_tower_kind_is_named():
    with pytest.raises(ValueError, match="model.vision.kind 'resnet'"):
        VLMConfig(vision=dict(kind="resnet"), text=dict(vocab_size=10, n_layer=1, n_head=1,
                                                        n_embd=8))


def test_a_segmenter_tower_has_no_llava_form(tmp_path):
    from plait.hf import export

    with pytest.raises(ValueError, match="tower='segmenter'") as e:
        export(segmenter_vlm(projector="mlp"), tmp_path)
    assert len(str(e.value).splitlines()) == 1


def test_learned_image_positions_add_one_vector_per_image_token():
    m = segmenter_vlm(pixel_shuffle=2, projector="linear", image_positions="learned")
    assert m.image_pos.shape == (4, 32)  # a 2 x 2 token grid
    px = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = m.image_features(px)
        plain = m.projector(pixel_shuffle(m.vision.features(px), 2))
    torch.testing.assert_close(got - plain, m.image_pos.detach().expand(2, 4, 32))
    with pytest.raises(ValueError, match="image_positions"):
        tiny(features="all", image_positions="learned")  # the class token has no cell


def test_feature_groups_give_each_group_its_own_tokens_sharing_their_cells_positions():
    m = segmenter_vlm(pixel_shuffle=2, projector="linear", image_positions="learned",
                      feature_groups=[7, 4], image_attention="bidirectional")
    c = m.config
    assert (c.image_cells, c.tokens_per_image) == (4, 8)  # 2 x 2 cells, colour then kind
    assert VLMConfig.from_dict(c.to_dict()) == c and c.feature_groups == (7, 4)
    px = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        shares = m.vision.features(px)
        got = m.image_features(px)
        colour = m.projectors[0](pixel_shuffle(shares[..., :7], 2))
        kind = m.projectors[1](pixel_shuffle(shares[..., 7:], 2))
        pos = m.image_pos.detach()
        want = torch.cat([colour + pos + m.group_emb[0], kind + pos + m.group_emb[1]], 1)
    torch.testing.assert_close(got, want)
    # a kind token is blind to colour: other colour shares move only the colour tokens
    recoloured = torch.cat([shares[..., :7].flip(-1), shares[..., 7:]], -1)
    with torch.no_grad():
        m.vision.features = lambda *_: recoloured  # noqa: E731  instance attribute
        moved = m.image_features(px)
    del m.vision.features
    torch.testing.assert_close(moved[:, 4:], got[:, 4:])
    assert not torch.allclose(moved[:, :4], got[:, :4])
    ids = torch.tensor([[1] + [IMG] * 8 + [5, 6]])  # a prompt takes every group's tokens
    assert m(ids, px[:1]).shape == (1, 11, 40)
    with pytest.raises(ValueError, match=r"feature_groups \[7, 3\] must add up to .* \(11\)"):
        segmenter_vlm(feature_groups=[7, 3])
    with pytest.raises(ValueError, match="feature_groups needs features = 'patches'"):
        tiny(features="all", feature_groups=[12, 12])  # the class token has no cell
    from plait.hf import export

    with pytest.raises(ValueError, match=r"feature_groups=\(12, 12\) \(LLaVA needs \(\)\)"):
        export(tiny(feature_groups=[12, 12]), "/nonexistent")
