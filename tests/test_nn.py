"""The Transformer blocks against naive maths and against their defining properties."""

import math

import pytest
import torch
import torch.nn.functional as F

from plait.models import GPT, GPTConfig
from plait.nn import (
    ALiBi,
    AttnInputs,
    PostNormBlock,
    PreNormBlock,
    RelativeBias,
    Rotary,
    SelfAttention,
    Sinusoidal,
    Stack,
    apply_rope,
    make_attn_mask,
    make_mlp,
    make_norm,
)
from plait.nn.layers import ACTIVATIONS, activate
from plait.nn.positions import alibi_slopes

POS = ["learned", "sinusoidal", "rope", "alibi", "relative"]


def tiny_gpt(pos="learned", **kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=37, n_layer=2, n_head=4, n_embd=32, block_size=64, pos_encoding=pos)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


def naive_attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d) + mask) v, written out (Vaswani 2017, Eq. 1)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else (
            scores + mask)
    return scores.softmax(-1) @ v


def test_sdpa_path_equals_naive_multihead_attention():
    torch.manual_seed(0)
    attn = SelfAttention(n_embd=32, n_head=4).eval()
    x = torch.randn(2, 7, 32)
    out = attn(x, AttnInputs(is_causal=True))
    q, k, v = attn.qkv(x).split(32, dim=-1)
    heads = [t.view(2, 7, 4, 8).transpose(1, 2) for t in (q, k, v)]
    causal = torch.ones(7, 7, dtype=torch.bool).tril()
    y = naive_attention(*heads, causal).transpose(1, 2).reshape(2, 7, 32)
    torch.testing.assert_close(out, attn.proj(y), atol=1e-6, rtol=1e-5)


def test_grouped_query_attention_equals_repeated_kv_heads():
    torch.manual_seed(0)
    attn = SelfAttention(n_embd=32, n_head=4, n_kv_head=2).eval()
    x = torch.randn(1, 5, 32)
    q, k, v = attn.qkv(x).split([32, 16, 16], dim=-1)
    q = q.view(1, 5, 4, 8).transpose(1, 2)
    # query heads 0,1 share kv head 0; 2,3 share kv head 1
    k = k.view(1, 5, 2, 8).transpose(1, 2)[:, [0, 0, 1, 1]]
    v = v.view(1, 5, 2, 8).transpose(1, 2)[:, [0, 0, 1, 1]]
    y = naive_attention(q, k, v).transpose(1, 2).reshape(1, 5, 32)
    torch.testing.assert_close(attn(x, AttnInputs()), attn.proj(y), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("pos", POS)
def test_future_tokens_never_change_past_logits(pos):
    model = tiny_gpt(pos)
    x = torch.randint(0, 37, (2, 16))
    y = x.clone()
    y[:, 9:] = torch.randint(0, 37, (2, 7))
    a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :9], b[:, :9], atol=1e-6, rtol=0)
    assert (a[:, 9:] - b[:, 9:]).abs().max() > 1e-3  # and the change is visible after


@pytest.mark.parametrize("pos", POS)
@pytest.mark.parametrize("n_kv_head", [None, 2, 1])
def test_kv_cache_decoding_equals_full_forward(pos, n_kv_head):
    model = tiny_gpt(pos, n_kv_head=n_kv_head)
    x = torch.randint(0, 37, (3, 14))
    full = model(x)
    model.setup_cache(3, 20)
    chunks = [model(x[:, :6], input_pos=0)]  # prefill, then a 3-token chunk, then single steps
    chunks.append(model(x[:, 6:9], input_pos=6))
    chunks += [model(x[:, t:t + 1], input_pos=t) for t in range(9, 14)]
    model.clear_cache()
    torch.testing.assert_close(torch.cat(chunks, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pos", POS)
def test_left_padding_does_not_change_a_rows_logits(pos):
    model = tiny_gpt(pos)
    x = torch.randint(0, 37, (1, 9))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), x], 1)
    mask = torch.cat([torch.zeros(1, 4), torch.ones(1, 9)], 1).long()
    torch.testing.assert_close(model(padded, mask)[:, 4:], model(x), atol=1e-5, rtol=1e-5)


def test_cached_decoding_with_left_padding_equals_full_forward():
    model = tiny_gpt("rope")
    x = torch.randint(1, 37, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[0, :3] = 0
    full = model(x, mask)
    model.setup_cache(2, 10)
    steps = [model(x[:, :5], mask[:, :5], input_pos=0)]
    steps += [model(x[:, t:t + 1], mask[:, :t + 1], input_pos=t) for t in range(5, 10)]
    model.clear_cache()
    got = torch.cat(steps, 1)
    torch.testing.assert_close(got[0, 3:], full[0, 3:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], full[1], atol=1e-5, rtol=1e-5)


def test_rope_scores_depend_only_on_relative_offset():
    torch.manual_seed(0)
    rope = Rotary(head_dim=16)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(m, n):
        cq, sq = rope.rotary(torch.tensor([[m]]))
        ck, sk = rope.rotary(torch.tensor([[n]]))
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum()

    for m, n, shift in [(5, 2, 11), (0, 7, 30), (40, 40, 3)]:
        torch.testing.assert_close(score(m, n), score(m + shift, n + shift), atol=1e-5, rtol=1e-5)
    assert (score(5, 2) - score(5, 3)).abs() > 1e-4  # but the offset itself matters


def test_rope_preserves_norm_and_is_identity_at_zero():
    q = torch.randn(2, 3, 4, 8)
    cos, sin = Rotary(8).rotary(torch.arange(4)[None].expand(2, 4))
    torch.testing.assert_close(apply_rope(q, cos, sin).norm(dim=-1), q.norm(dim=-1))
    c0, s0 = Rotary(8).rotary(torch.zeros(2, 4, dtype=torch.long))
    torch.testing.assert_close(apply_rope(q, c0, s0), q)


def test_sinusoidal_matches_the_paper_formula():
    pe = Sinusoidal(8).embed(torch.arange(5)[None])[0]
    for p in range(5):
        for i in range(4):
            angle = p / 10000 ** (2 * i / 8)
            assert pe[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_alibi_slopes_and_bias():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    # non-power-of-two: the 4 slopes of n=4, then every other slope of n=8 (Press 2021)
    expected6 = [2.0 ** -(2 * (i + 1)) for i in range(4)] + [2.0 ** -1, 2.0 ** -3]
    torch.testing.assert_close(alibi_slopes(6), torch.tensor(expected6))
    bias = ALiBi(2).bias(torch.arange(4)[None], torch.arange(4)[None])  # (1, 2, 4, 4)
    assert bias.shape == (1, 2, 4, 4)
    assert bias[0, 0, 3, 1].item() == pytest.approx(-0.0625 * 2)


def test_relative_buckets_match_t5_rules():
    rb = RelativeBias(n_head=2, num_buckets=32, max_distance=128, bidirectional=False)
    rel = torch.tensor([0, -1, -7, -8, -15, -16, -127, -128, -1000, 5])
    # a decoder puts all 32 buckets in the past: exact below 16, log-spaced up to 128
    got = rb.bucket(rel).tolist()
    assert got[:3] == [0, 1, 7] and got[3] == 8
    assert got[5] == 16 and got[7] == 31 and got[8] == 31  # far distances share the last bucket
    assert got[9] == 0  # future offsets fall in bucket 0 for a decoder
    bi = RelativeBias(n_head=2, bidirectional=True).bucket(torch.tensor([-3, 3, 0]))
    assert bi.tolist() == [3, 19, 0]  # positive offsets use the upper half


@pytest.mark.parametrize("bidirectional", [False, True])
def test_relative_buckets_equal_transformers_t5(bidirectional):
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    rel = torch.arange(-300, 300)[None, :]
    ours = RelativeBias(2, 32, 128, bidirectional=bidirectional).bucket(rel)
    ref = t5.T5Attention._relative_position_bucket(rel, bidirectional, 32, 128)
    assert torch.equal(ours, ref)


def test_mask_builder_uses_fast_paths_and_never_nans():
    assert make_attn_mask(5, 5, causal=True) == (None, True)
    assert make_attn_mask(1, 9, causal=True) == (None, False)
    pad = torch.tensor([[0, 0, 1, 1]])
    mask, causal = make_attn_mask(4, 4, causal=True, key_padding=pad)
    assert not causal and mask.shape == (1, 1, 4, 4)
    assert mask[0, 0, 0].all()  # a padding query with nothing to see sees everything
    assert mask[0, 0, 3].tolist() == [False, False, True, True]
    q = torch.randn(1, 1, 4, 8)
    out = F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
def test_norms_match_formula(kind):
    x = torch.randn(3, 10)
    out = make_norm(kind, 10, eps=1e-5)(x)
    if kind == "layernorm":
        ref = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False,
                                                               keepdim=True) + 1e-5)
    else:
        ref = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


ACTIVATION_FORMULAS = {
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "gelu_tanh": lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi)
                                                     * (x + 0.044715 * x**3))),
    "relu": lambda x: x.clamp(min=0),
    "silu": lambda x: x / (1 + torch.exp(-x)),
    "quick_gelu": lambda x: x / (1 + torch.exp(-1.702 * x)),
    "relu2": lambda x: x.clamp(min=0) ** 2,
}


@pytest.mark.parametrize("kind", [*ACTIVATION_FORMULAS, "swiglu"])
def test_feed_forward_matches_formula(kind):
    torch.manual_seed(0)
    mlp = make_mlp(kind, 6, 10, bias=True)
    x = torch.randn(2, 3, 6)
    if kind == "swiglu":
        gate, up = (x @ mlp.fc.weight.T + mlp.fc.bias).split(10, dim=-1)
        hidden = gate * torch.sigmoid(gate) * up
    else:
        hidden = ACTIVATION_FORMULAS[kind](x @ mlp.fc.weight.T + mlp.fc.bias)
    ref = hidden @ mlp.proj.weight.T + mlp.proj.bias
    torch.testing.assert_close(mlp(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_in_place_activation_equals_the_module(name):
    act = ACTIVATIONS[name]()
    h = torch.randn(3, 5, 8)
    ref = act(h.clone())
    out = activate(act, h)
    assert out.data_ptr() == h.data_ptr()  # written over its input...
    assert torch.equal(out, ref)  # ...bit for bit what the module gives
    g = torch.randn(3, 5, 8, requires_grad=True)
    before = g.detach().clone()
    out = activate(act, g)  # autograd needs g: a new tensor, g untouched
    assert out.data_ptr() != g.data_ptr() and torch.equal(g.detach(), before)
    out.sum().backward()
    assert g.grad is not None


@pytest.mark.parametrize("block_cls", [PreNormBlock, PostNormBlock])
def test_blocks_add_residuals_in_place_without_writing_their_input(block_cls):
    torch.manual_seed(0)
    block = block_cls(SelfAttention(16, 4), make_mlp("gelu", 16, 32), make_norm("layernorm", 16),
                      make_norm("layernorm", 16)).eval()
    x = torch.randn(2, 5, 16)
    before = x.clone()
    with torch.inference_mode():
        out = block(x, AttnInputs())
        a, m = block.attn, block.mlp
        if block_cls is PreNormBlock:
            h = x + a(block.norm_attn(x), AttnInputs())
            ref = h + m(block.norm_mlp(h))
        else:
            h = block.norm_attn(x + a(x, AttnInputs()))
            ref = block.norm_mlp(h + m(h))
    assert torch.equal(x, before)
    assert torch.equal(out, ref)


def test_residuals_stay_fp32_under_bf16_autocast():
    """Under autocast a Linear's output is bf16 while the residual stream is fp32: the sum
    must be promoted (x + f), not rounded into the bf16 output."""
    torch.manual_seed(0)
    block = PreNormBlock(SelfAttention(16, 4), make_mlp("gelu", 16, 32),
                         make_norm("layernorm", 16), make_norm("layernorm", 16)).eval()
    x = torch.randn(2, 5, 16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(x, AttnInputs())
        h = x + block.attn(block.norm_attn(x), AttnInputs())
        ref = h + block.mlp(block.norm_mlp(h))
    assert out.dtype == ref.dtype == torch.float32
    assert torch.equal(out, ref)


def _rows_cases():
    T, pad = 7, torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 6 + [0]])
    alibi = ALiBi(4).bias(torch.arange(T)[None], torch.arange(T)[None])
    return {
        "bidirectional": (PostNormBlock, AttnInputs()),
        "key padding": (PostNormBlock, AttnInputs(make_attn_mask(T, T, causal=False,
                                                                 key_padding=pad)[0])),
        "causal": (PreNormBlock, AttnInputs(*make_attn_mask(T, T, causal=True))),
        "causal + padding": (PreNormBlock, AttnInputs(make_attn_mask(T, T, causal=True,
                                                                     key_padding=pad)[0])),
        "alibi bias": (PreNormBlock, AttnInputs(make_attn_mask(T, T, causal=True,
                                                               bias=alibi)[0])),
    }


@pytest.mark.parametrize("case", list(_rows_cases()))
def test_stack_rows_equal_the_full_forward_at_those_rows(case):
    block_cls, ctx = _rows_cases()[case]
    torch.manual_seed(0)
    stack = Stack([block_cls(SelfAttention(16, 4), make_mlp("gelu", 16, 32),
                             make_norm("layernorm", 16), make_norm("layernorm", 16))
                   for _ in range(3)], make_norm("layernorm", 16)).eval()
    x, rows = torch.randn(3, 7, 16), torch.tensor([6, 3, 0])
    seen = []
    stack.blocks[-1].mlp.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    with torch.inference_mode():
        full = stack(x, ctx)
        picked = stack(x, ctx, rows=rows)
        first = stack(x, ctx, rows=0)  # an int: the same position in every sequence
    assert seen == [(3, 7, 16), (3, 1, 16), (3, 1, 16)]  # the last MLP ran for one row each
    torch.testing.assert_close(picked[:, 0], full[torch.arange(3), rows], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(first[:, 0], full[:, 0], atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="one position per sequence"):
        stack(x, ctx, rows=torch.tensor([1, 2]))


def test_relu2_gradient_equals_autograd_of_its_formula():
    x = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(make_mlp("relu2", 7, 3).act, (x,))
    g = torch.randn(4, 7, dtype=torch.float64)
    (ours,) = torch.autograd.grad(make_mlp("relu2", 7, 3).act(x), x, g)
    (ref,) = torch.autograd.grad(x.clamp(min=0) ** 2, x, g)
    torch.testing.assert_close(ours, ref)


def test_unknown_activation_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="relu2"):
        make_mlp("swish", 6, 10)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="n_embd"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="n_kv_head"):
        GPTConfig(n_embd=32, n_head=4, n_kv_head=3)
    with pytest.raises(ValueError, match="d_head"):
        GPTConfig(n_embd=32, n_head=4, d_head=-8)
    GPTConfig(n_embd=30, n_head=4, d_head=8)  # with d_head, n_embd need not divide


def test_learned_positions_refuse_too_long_input():
    model = tiny_gpt("learned", block_size=8)
    with pytest.raises(ValueError, match="block_size 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_tied_embeddings_and_gpt2_init():
    model = tiny_gpt()
    assert model.lm_head.weight is model.wte.weight
    proj = model.transformer.blocks[0].attn.proj.weight
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(4), rel=0.15)


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_split_linear_equals_f_linear(threads, monkeypatch):
    """Decoding's thread-split product (plait.nn.linear) against F.linear, and its fallbacks."""
    from plait.nn import Linear, gemv_layout

    torch.manual_seed(threads)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for bias in (True, False):
            layer = gemv_layout(Linear(384, 500, bias=bias))
            assert layer.split_weight is not None and layer.split_weight.shape[0] == threads
            for rows in (1, 5, 16):
                x = torch.randn(rows, 384)
                want = F.linear(x, layer.weight, layer.bias)
                with torch.no_grad(), monkeypatch.context() as m:
                    m.setattr("plait.nn.linear.F.linear", None)  # the split path, or a TypeError
                    got = layer(x.view(1, rows, 384))
                assert got.shape == (1, rows, 500)
                torch.testing.assert_close(got[0], want, atol=1e-5, rtol=1e-5)
            x = torch.randn(2, 9, 384)  # 18 rows: more than a GEMV, plain F.linear
            with torch.no_grad():
                assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
            with torch.no_grad():  # in-place updates reach the split view ...
                layer.weight.mul_(2.0)
                torch.testing.assert_close(layer(x[:, :1]), F.linear(x[:, :1], layer.weight,
                                                                     layer.bias))
            layer.weight.data = layer.weight.data.contiguous()  # ... new memory is not used
            with torch.no_grad(), monkeypatch.context() as m:
                m.setattr("plait.nn.linear.torch.bmm", None)
                m.setattr("plait.nn.linear.torch.baddbmm", None)
                assert torch.equal(layer(x[:, :1]), F.linear(x[:, :1], layer.weight, layer.bias))
        layer = gemv_layout(Linear(384, 500))
        x = torch.randn(1, 384, requires_grad=True)
        with monkeypatch.context() as m:  # with autograd on: never split
            m.setattr("plait.nn.linear.torch.baddbmm", None)
            layer(x).sum().backward()
        torch.testing.assert_close(x.grad[0], layer.weight.sum(0))
    finally:
        torch.set_num_threads(before)
