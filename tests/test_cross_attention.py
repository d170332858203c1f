"""Cross-attention, proven: ``CrossAttention`` against naive maths and ``nn.MultiheadAttention``,
blocks and stacks with a memory against ``transformers``' GPT-2 decoder (``add_cross_attention``),
the cached decoder against the uncached one, and generation from an encoder's output token for
token against ``transformers``' ``generate``. Source padding throughout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from transformers import GPT2Config, GPT2LMHeadModel

import plait
from plait.generation import generate
from plait.models import GPT, GPTConfig
from plait.nn import (
    AttnInputs,
    CrossAttention,
    PostNormBlock,
    PreNormBlock,
    SelfAttention,
    Stack,
    make_attn_mask,
    make_mlp,
)

ATOL = 1e-4  # fp32 parity with the reference, max abs


def source_padding(B: int = 3, S: int = 6) -> torch.Tensor:
    """(B, S) memory mask: row 0 full, the others right-padded by 2 and 4 positions."""
    mask = torch.ones(B, S, dtype=torch.long)
    for b in range(1, B):
        mask[b, S - 2 * b:] = 0
    return mask


def naive_cross_attention(attn: CrossAttention, x, memory, memory_mask):
    """Head by head, row by row: softmax over the real memory positions only."""
    B, T, _ = x.shape
    nh, hs = attn.n_head, attn.head_dim
    q = attn.q(x).view(B, T, nh, hs)
    k, v = attn.kv(memory).view(B, -1, 2, nh, hs).unbind(2)
    out = torch.zeros(B, T, nh, hs)
    for b in range(B):
        real = memory_mask[b].bool()
        for h in range(nh):
            scores = q[b, :, h] @ k[b, real, h].T / math.sqrt(hs)  # (T, S_real)
            out[b, :, h] = scores.softmax(-1) @ v[b, real, h]
    return attn.proj(out.reshape(B, T, nh * hs))


def test_cross_attention_equals_naive_maths_with_source_padding():
    torch.manual_seed(0)
    attn = CrossAttention(32, 4, memory_dim=24).eval()
    x, memory, mask = torch.randn(3, 5, 32), torch.randn(3, 6, 24), source_padding()
    got = attn(x, memory, mask)
    torch.testing.assert_close(got, naive_cross_attention(attn, x, memory, mask),
                               atol=1e-5, rtol=1e-5)
    # padding is what the mask hides: changing padded memory rows changes nothing
    noisy = memory.clone()
    noisy[mask == 0] = 100.0
    torch.testing.assert_close(attn(x, noisy, mask), got, atol=1e-6, rtol=0)
    assert not torch.allclose(attn(x, noisy, None), got, atol=1e-3)  # the test can fail


def test_cross_attention_equals_torch_multihead_attention():
    """The reference: nn.MultiheadAttention with separate key/value widths, same weights."""
    torch.manual_seed(1)
    E, D = 32, 24
    ours = CrossAttention(E, 4, memory_dim=D).eval()
    ref = nn.MultiheadAttention(E, 4, kdim=D, vdim=D, batch_first=True).eval()
    with torch.no_grad():
        ref.q_proj_weight.copy_(ours.q.weight)
        ref.k_proj_weight.copy_(ours.kv.weight[:E])
        ref.v_proj_weight.copy_(ours.kv.weight[E:])
        ref.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.kv.bias]))
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x, memory, mask = torch.randn(3, 5, E), torch.randn(3, 6, D), source_padding()
    want, _ = ref(x, memory, memory, key_padding_mask=mask == 0, need_weights=False)
    torch.testing.assert_close(ours(x, memory, mask), want, atol=1e-5, rtol=1e-5)


def test_grouped_query_cross_attention_equals_repeated_kv_heads():
    torch.manual_seed(2)
    gqa = CrossAttention(32, 4, n_kv_head=2, memory_dim=16).eval()
    full = CrossAttention(32, 4, memory_dim=16).eval()
    hs = 8
    with torch.no_grad():
        full.q.load_state_dict(gqa.q.state_dict())
        full.proj.load_state_dict(gqa.proj.state_dict())
        k_w, v_w = gqa.kv.weight.view(2, 2, hs, 16).unbind(0)  # (nkv, hs, D) each
        k_b, v_b = gqa.kv.bias.view(2, 2, hs).unbind(0)
        full.kv.weight.copy_(torch.cat([k_w.repeat_interleave(2, 0).reshape(-1, 16),
                                        v_w.repeat_interleave(2, 0).reshape(-1, 16)]))
        full.kv.bias.copy_(torch.cat([k_b.repeat_interleave(2, 0).reshape(-1),
                                      v_b.repeat_interleave(2, 0).reshape(-1)]))
    x, memory, mask = torch.randn(3, 4, 32), torch.randn(3, 6, 16), source_padding()
    torch.testing.assert_close(gqa(x, memory, mask), full(x, memory, mask), atol=1e-6, rtol=0)


@pytest.mark.parametrize("block_cls", [PreNormBlock, PostNormBlock])
def test_block_with_memory_composes_its_sublayers(block_cls):
    """Self-attention, then cross-attention over the memory, then the MLP, each with its
    residual and norm in the block's order (pre-norm: x + f(norm(x)); post: norm(x + f(x)))."""
    torch.manual_seed(3)
    C = 32
    block = block_cls(SelfAttention(C, 4), make_mlp("gelu", C, 64), nn.LayerNorm(C),
                      nn.LayerNorm(C), cross_attn=CrossAttention(C, 4, memory_dim=16),
                      norm_cross=nn.LayerNorm(C)).eval()
    x, memory, mask = torch.randn(3, 5, C), torch.randn(3, 6, 16), source_padding()
    ctx = AttnInputs(is_causal=True)
    got = block(x, ctx, memory, mask)
    b = block
    if block_cls is PreNormBlock:
        h = x + b.attn(b.norm_attn(x), ctx)
        h = h + naive_cross_attention(b.cross_attn, b.norm_cross(h), memory, mask)
        want = h + b.mlp(b.norm_mlp(h))
    else:
        h = b.norm_attn(x + b.attn(x, ctx))
        h = b.norm_cross(h + naive_cross_attention(b.cross_attn, h, memory, mask))
        want = b.norm_mlp(h + b.mlp(h))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_stack_without_a_memory_for_its_cross_attention_is_a_clear_error():
    stack = Stack([PreNormBlock(SelfAttention(16, 2), make_mlp("gelu", 16, 32), nn.LayerNorm(16),
                                nn.LayerNorm(16), CrossAttention(16, 2), nn.LayerNorm(16))])
    with pytest.raises(ValueError, match="cross-attention needs the encoder output"):
        stack(torch.randn(1, 3, 16), AttnInputs(is_causal=True))


# -- against transformers' GPT-2 with cross-attention --------------------------------------------
SHAPES = [(61, 2, 2, 32), (97, 3, 4, 48)]  # vocab, n_layer, n_head, n_embd


def hf_decoder(folder, vocab: int, n_layer: int, n_head: int, n_embd: int, std: float = 0.15):
    torch.manual_seed(vocab)
    cfg = GPT2Config(vocab_size=vocab, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                     n_positions=40, add_cross_attention=True, bos_token_id=None,
                     eos_token_id=None)
    hf = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 2:
                p.normal_(0.0, std)
    hf.save_pretrained(folder)
    return hf, plait.load(folder)


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: "v{}-l{}-h{}-c{}".format(*s))
def pair(request, tmp_path_factory):
    return hf_decoder(tmp_path_factory.mktemp("gpt2x"), *request.param)


def encoder_output(B: int, S: int, C: int, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, S, C, generator=g), source_padding(B, S)


def test_loads_as_a_gpt_with_cross_attention(pair):
    _, ours = pair
    assert isinstance(ours, GPT) and ours.config.add_cross_attention
    assert all(b.cross_attn is not None for b in ours.transformer.blocks)


def test_logits_equal_transformers_with_padded_source_and_left_padded_target(pair):
    hf, ours = pair
    C, V = ours.config.n_embd, ours.config.vocab_size
    memory, memory_mask = encoder_output(3, 6, C)
    ids = torch.randint(0, V, (3, 7), generator=torch.Generator().manual_seed(8))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, :2] = 0  # left padding in the decoder's prompt
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        want = hf(ids, attention_mask=mask, position_ids=pos, encoder_hidden_states=memory,
                  encoder_attention_mask=memory_mask).logits
        got = ours(ids, mask, encoder_hidden_states=memory, encoder_attention_mask=memory_mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=ATOL, rtol=0)


def test_cached_decoder_with_cross_attention_equals_uncached(pair):
    _, ours = pair
    C, V = ours.config.n_embd, ours.config.vocab_size
    memory, memory_mask = encoder_output(3, 6, C, seed=9)
    ids = torch.randint(0, V, (3, 9), generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        full = ours(ids, encoder_hidden_states=memory, encoder_attention_mask=memory_mask)
        ours.setup_cache(3, 9)
        try:
            steps = [ours.prefill(ids[:, :4], None, encoder_hidden_states=memory,
                                  encoder_attention_mask=memory_mask)]
            for t in range(4, 9):  # the memory is never passed again: its K/V are cached
                steps.append(ours.step(ids[:, t:t + 1], None, t))
        finally:
            ours.clear_cache()
    torch.testing.assert_close(torch.stack(steps[:-1], 1), full[:, 3:8], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kw", [
    dict(max_new_tokens=8),
    dict(max_new_tokens=8, num_beams=3, num_return_sequences=2, length_penalty=0.5),
    dict(max_new_tokens=6, repetition_penalty=1.3, no_repeat_ngram_size=2),
], ids=["greedy", "beams", "penalties"])
def test_generation_from_an_encoder_output_equals_transformers(pair, kw):
    hf, ours = pair
    memory, memory_mask = encoder_output(3, 6, ours.config.n_embd, seed=11)
    ids = torch.randint(0, ours.config.vocab_size, (3, 4),
                        generator=torch.Generator().manual_seed(12))
    kw = dict(pad_token_id=1, **kw)
    with torch.no_grad():
        want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                           encoder_hidden_states=memory, encoder_attention_mask=memory_mask, **kw)
    got = generate(ours, ids, encoder_hidden_states=memory, encoder_attention_mask=memory_mask,
                   **kw)
    assert torch.equal(got, want)


def test_cross_attention_keys_and_values_are_computed_once_per_encoder_output(pair):
    _, ours = pair
    memory, memory_mask = encoder_output(2, 5, ours.config.n_embd)
    calls = []
    hooks = [b.cross_attn.kv.register_forward_hook(lambda *_: calls.append(1))
             for b in ours.transformer.blocks]
    try:
        for beams in (1, 3):  # 10 steps each; beam search reorders the cached K/V instead
            calls.clear()
            generate(ours, torch.ones(2, 3, dtype=torch.long), max_new_tokens=10,
                     num_beams=beams, encoder_hidden_states=memory,
                     encoder_attention_mask=memory_mask)
            assert len(calls) == ours.config.n_layer  # once per layer, at the prefill
    finally:
        for h in hooks:
            h.remove()


def test_export_round_trip_keeps_cross_attention(pair, tmp_path):
    hf, ours = pair
    plait.hf.export(ours, tmp_path)
    back = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    memory, memory_mask = encoder_output(2, 6, ours.config.n_embd)
    ids = torch.randint(0, ours.config.vocab_size, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(
            back(ids, encoder_hidden_states=memory, encoder_attention_mask=memory_mask).logits,
            hf(ids, encoder_hidden_states=memory, encoder_attention_mask=memory_mask).logits,
            atol=ATOL, rtol=0)


def test_memory_for_a_gpt_without_cross_attention_is_refused():
    model = GPT(GPTConfig(vocab_size=11, n_layer=1, n_head=2, n_embd=16, block_size=8))
    with pytest.raises(ValueError, match="no cross-attention"):
        model(torch.ones(1, 3, dtype=torch.long), encoder_hidden_states=torch.randn(1, 4, 16))
    mask, _ = make_attn_mask(1, 4, causal=False, key_padding=torch.tensor([[1, 1, 0, 0]]))
    assert mask.shape == (1, 1, 1, 4)
