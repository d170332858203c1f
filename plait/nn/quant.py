"""Weight-only int8 and int4 quantisation: Linear layers that store and read fewer bytes.

Decoding one token at batch 1 reads every weight once and does one multiply-add with it, so on a
CPU its speed is memory bandwidth over weight bytes (BENCHMARKS.md, "Roofline"). Storing weights
in 8 or 5 bits (int4 in groups of 32, scales included) instead of 32 reads 4x or 6.4x fewer
bytes; activations stay fp32.

Formats (docs/efficiency.md §2):

- **int8**, per output channel, symmetric: ``W[n, k] ~= s_n q[n, k]``, ``q`` in [-127, 127]
  (int8, (out, in) as ``nn.Linear``), ``s_n = max_k |W[n, k]| / 127`` (fp32, (out,)). Round to
  nearest (Jacob et al. 2018, arXiv:1712.05877, Eq. 1 with zero point 0).
- **int4**, in groups of G consecutive inputs (32 by default; 64, 128 or 256), asymmetric:
  ``W[n, k] ~= d_g q[n, k] + c_g``, ``q`` in [0, 15], ``c_g = min`` and
  ``d_g = (max - min) / 15`` over the group (fp16 each, (out, in / G)). A minimum rather than a
  symmetric scale uses all 16 levels on a group's actual range (llama.cpp's Q4_1); fp16 keeps
  the two numbers to 4 bytes a group, 1 bit per weight at G = 32 (fp32 would cost 2).
  Two values a byte, 32 inputs in 16 bytes: byte ``i`` of half block ``h`` holds input
  ``32 h + i`` in its low nibble and ``32 h + 16 + i`` in its high one (:func:`pack_int4`), so
  a mask and a shift of 16 bytes give two runs of 16 consecutive inputs. Inputs are padded to a
  multiple of 64 (and of G).

The products run in a C++ kernel (``quant_kernel.cpp``, built at first use by
:mod:`plait.nn.quant_kernel`) for up to ``kernel_rows`` rows of fp32 CPU input; otherwise (more
rows, another device or dtype, autograd, or no compiler) the weight is dequantised for the call
and ``F.linear`` runs: the same results up to float rounding. For its few rows the int4 kernel
multiplies in integers, with x rounded to 16 bits per 32 inputs (:func:`round_int16`, a
relative error of at most 2^-16 of the largest |x| of the 32); the dequantising path rounds x
the same way for as many rows, so both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from plait.nn import quant_kernel

GROUP_SIZES = (32, 64, 128, 256)
FP16_MAX = 65504.0


# -- int8 -------------------------------------------------------------------------------------
def quantize_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """(out, in) float weight -> (int8 q (out, in), fp32 scale (out,))."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row: q = 0
    q = (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(q: Tensor, scale: Tensor) -> Tensor:
    return q * scale[:, None]  # one pass: int8 promotes to fp32 exactly


# -- int4 -------------------------------------------------------------------------------------
def padded_inputs(in_features: int, group_size: int) -> int:
    """Inputs rounded up to whole 64-input blocks and whole groups."""
    step = max(64, group_size)
    return -(-in_features // step) * step


def pack_int4(q: Tensor) -> Tensor:
    """(out, Kp) values 0..15, Kp a multiple of 64 -> (out, Kp / 2) uint8: byte i of half block
    h holds input 32 h + i (low nibble) and 32 h + 16 + i (high nibble)."""
    n, kp = q.shape
    q = q.to(torch.uint8).view(n, kp // 32, 2, 16)  # (n, half block, low / high, i)
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(n, kp // 2)


def unpack_int4(packed: Tensor) -> Tensor:
    """Inverse of :func:`pack_int4`: (out, Kp / 2) uint8 -> (out, Kp) uint8 values 0..15."""
    n, kp = packed.shape[0], packed.shape[1] * 2
    b = packed.view(n, kp // 32, 1, 16)
    return torch.cat((b & 15, b >> 4), dim=2).reshape(n, kp)


def round_int16(x: Tensor) -> Tensor:
    """x (fp32, (..., K)) rounded as the int4 kernel rounds it: per run of 32 inputs along the
    last dimension, ``e = max |x| / 32767`` and ``x ~= e round(x / e)`` (ties to even)."""
    k = x.shape[-1]
    runs = F.pad(x, (0, -k % 32)).unflatten(-1, (-1, 32))
    e = runs.abs().amax(dim=-1, keepdim=True) / 32767
    r = torch.where(e > 0, torch.round(runs / e), torch.zeros_like(runs))
    return (r * e).flatten(-2)[..., :k]


def quantize_int4(weight: Tensor, group_size: int = 32) -> tuple[Tensor, Tensor, Tensor]:
    """(out, in) float weight -> (packed uint8 (out, Kp / 2), fp16 scale d and fp16 minimum c,
    each (out, Kp / G)). The padding repeats a row's last input, so no group's range grows."""
    if group_size not in GROUP_SIZES:
        raise ValueError(f"int4 group size must be one of {GROUP_SIZES}, got {group_size}")
    w = weight.detach().float()
    n, k = w.shape
    if w.abs().max() > FP16_MAX / 2:  # max - min must fit fp16 too
        raise ValueError(f"int4 keeps group minima and scales in fp16, but this weight reaches"
                         f" |w| = {w.abs().max().item():.3g} (> {FP16_MAX / 2:g}); use int8")
    kp = padded_inputs(k, group_size)
    w = torch.cat((w, w[:, -1:].expand(n, kp - k)), dim=1).view(n, kp // group_size, group_size)
    lo, hi = w.amin(dim=-1), w.amax(dim=-1)
    scale, mins = ((hi - lo) / 15).half(), lo.half()
    d, c = scale.float()[..., None], mins.float()[..., None]
    # q from the fp16 values actually stored, so d q + c is as close as they allow
    q = torch.where(d > 0, ((w - c) / d).round().clamp(0, 15), torch.zeros_like(w))
    return pack_int4(q.view(n, kp)), scale, mins


def dequantize_int4(packed: Tensor, scale: Tensor, mins: Tensor, in_features: int) -> Tensor:
    """fp32 (out, in) weight ``d q + c`` from the packed form."""
    n, groups = scale.shape
    q = unpack_int4(packed).float().view(n, groups, -1)
    w = q * scale.float()[..., None] + mins.float()[..., None]
    return w.view(n, -1)[:, :in_features]


# -- the layers -------------------------------------------------------------------------------
class QuantLinear(nn.Module):
    """A Linear whose weight is stored quantised (buffers), and its bias in fp32; for
    inference. Subclasses say how the weight is stored (:class:`Int8Linear`,
    :class:`Int4Linear`)."""

    method: ClassVar[str]
    kernel_rows: ClassVar[int]  # more rows of input (prefill, encoders): dequantise, then GEMM

    def __init__(self, in_features: int, out_features: int, bias: Tensor | None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        b = None if bias is None else bias.detach().float().clone()
        self.bias = None if b is None else nn.Parameter(b, requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **options: Any) -> QuantLinear:
        raise NotImplementedError

    def dequantize(self) -> Tensor:
        """The fp32 (out, in) weight the stored one stands for."""
        raise NotImplementedError

    def kernel(self, ops: Any, rows: Tensor) -> Tensor:
        """(M, in) fp32 CPU rows -> (M, out) with the C++ kernel."""
        raise NotImplementedError

    def dequantize_fast(self, ops: Any) -> Tensor:
        return self.dequantize()

    def kernel_input(self, x: Tensor) -> Tensor:
        """x as the kernel would multiply it, for the dequantising path to multiply the same."""
        return x

    def forward(self, x: Tensor) -> Tensor:
        ops = self._kernel_ops(x)
        if ops is None:  # the plain way: any device, dtype, shape error or autograd
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return F.linear(self.kernel_input(x), self.dequantize().to(x.dtype), bias)
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] > self.kernel_rows:
            return F.linear(x, self.dequantize_fast(ops), self.bias)
        return self.kernel(ops, rows).view(*x.shape[:-1], self.out_features)

    def _kernel_ops(self, x: Tensor) -> Any:
        """The kernels, when they can take this input; else None."""
        if (x.device.type != "cpu" or x.dtype != torch.float32 or x.shape[-1] != self.in_features
                or (x.requires_grad and torch.is_grad_enabled())
                or (self.bias is not None and self.bias.dtype != torch.float32)):
            return None
        return quant_kernel.ops()

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> QuantLinear:
        # .to(device) moves the stored weight; .half() / .to(dtype) must not recast it (its
        # dtypes are the format), so a cast is redone as a move of the original
        stored = {id(t) for t in self._buffers.values() if t is not None}

        def keep_format(t: Tensor) -> Tensor:
            out = fn(t)
            return t.to(out.device) if id(t) in stored and out.dtype != t.dtype else out

        return super()._apply(keep_format, recurse)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features},"
                f" bias={self.bias is not None}, method={self.method}")


class Int8Linear(QuantLinear):
    """int8 weight, one fp32 scale per output channel (module docstring)."""

    method = "int8"
    kernel_rows = 128  # the kernel is as fast as fp32 GEMM up to here (docs/efficiency.md)

    def __init__(self, q: Tensor, scale: Tensor, bias: Tensor | None = None):
        super().__init__(q.shape[1], q.shape[0], bias)
        self.register_buffer("qweight", q.contiguous())
        self.register_buffer("scale", scale.contiguous())

    @classmethod
    def from_linear(cls, linear: nn.Linear, **options: Any) -> Int8Linear:
        if options.get("group_size") is not None:
            raise ValueError("int8 has one scale per output channel; group_size is for int4")
        return cls(*quantize_int8(linear.weight), linear.bias)

    def dequantize(self) -> Tensor:
        return dequantize_int8(self.qweight, self.scale)

    def kernel(self, ops: Any, rows: Tensor) -> Tensor:
        return ops.int8_linear(rows, self.qweight, self.scale, self.bias)


class Int4Linear(QuantLinear):
    """int4 weight in groups along the inputs, fp16 scale and minimum per group (module
    docstring)."""

    method = "int4"
    kernel_rows = 48

    def __init__(self, packed: Tensor, scale: Tensor, mins: Tensor, in_features: int,
                 bias: Tensor | None = None):
        super().__init__(in_features, packed.shape[0], bias)
        self.group_size = packed.shape[1] * 2 // scale.shape[1]
        self.register_buffer("qweight", packed.contiguous())
        self.register_buffer("scale", scale.contiguous())
        self.register_buffer("mins", mins.contiguous())

    @classmethod
    def from_linear(cls, linear: nn.Linear, **options: Any) -> Int4Linear:
        group = options.get("group_size") or 32
        return cls(*quantize_int4(linear.weight, group), linear.in_features, linear.bias)

    def dequantize(self) -> Tensor:
        return dequantize_int4(self.qweight, self.scale, self.mins, self.in_features)

    def dequantize_fast(self, ops: Any) -> Tensor:
        return ops.int4_dequant(self.qweight, self.scale, self.mins, self.group_size,
                                self.in_features)

    def kernel_input(self, x: Tensor) -> Tensor:
        few = x.shape[-1] == self.in_features and x.numel() <= self.kernel_rows * x.shape[-1]
        if x.dtype != torch.float32 or not few or (x.requires_grad and torch.is_grad_enabled()):
            return x  # the kernel would not take it: no rounding
        return round_int16(x)

    def kernel(self, ops: Any, rows: Tensor) -> Tensor:
        return ops.int4_linear(rows, self.qweight, self.scale, self.mins, self.bias,
                               self.group_size)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group_size={self.group_size}"


METHODS: dict[str, type[QuantLinear]] = {"int8": Int8Linear, "int4": Int4Linear}


def check_method(method: str, group_size: int | None = None) -> type[QuantLinear]:
    """The layer class of a quantisation name; a ValueError names the allowed ones."""
    if method not in METHODS:
        raise ValueError(f"unknown quantisation {method!r} (choose {' or '.join(METHODS)})")
    if group_size is not None and method != "int4":
        raise ValueError(f"{method} has one scale per output channel; group_size is for int4")
    if group_size is not None and group_size not in GROUP_SIZES:
        raise ValueError(f"int4 group size must be one of {GROUP_SIZES}, got {group_size}")
    return METHODS[method]


def quantize(model: nn.Module, method: str, group_size: int | None = None) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place) by its ``method`` ("int8" or "int4")
    :class:`QuantLinear`; returns the model. Embeddings, norms and convolutions stay fp32.

    A Linear whose weight is tied to an embedding (GPT-2's LM head) gets its own quantised
    copy: the product reads it at every step (it is a third of GPT-2's bytes), while the
    embedding lookup reads only a few rows and keeps its fp32 table. A Linear reached by two
    names stays one layer. On CPU the kernel is built now (once per machine), not at the first
    token. Inference only: gradients flow to the input (dequantised path), never to weights.
    """
    cls = check_method(method, group_size)
    done: dict[int, QuantLinear] = {}
    for prefix, parent in list(model.named_modules()):
        if isinstance(parent, nn.MultiheadAttention):  # it reads out_proj.weight itself
            continue
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            if id(child) not in done:
                try:
                    done[id(child)] = cls.from_linear(child, group_size=group_size)
                except ValueError as e:
                    raise ValueError(f"{prefix + '.' if prefix else ''}{name}: {e}") from None
            setattr(parent, name, done[id(child)])
    if any(m.qweight.device.type == "cpu" for m in done.values()):
        quant_kernel.ops()
    return model
