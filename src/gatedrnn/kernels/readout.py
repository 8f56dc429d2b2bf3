"""The music head (Linear + independent Bernoulli per output) and its per-step NLL as one C++ pass.

    nll[b, t] = Σ_o softplus(a_o) − y_o a_o,   a = V h[b, t] + c,   0 on padded steps

is what `BernoulliHead.nll(BernoulliHead(h), y) * mask` computes (BCE-with-logits summed over the
outputs), to float rounding. torch spends most of that read-out in elementwise passes over (B, T, O)
temporaries (BCE, sum, mask); readout.cpp (`gr_bernoulli`) instead runs blocks of 48 valid steps through
the micro-kernel GEMM and one elementwise pass, never materialising the logits, and skips padded steps.
Backward recomputes a and gives dh = da V, dV = Σ daᵀ h, dc = Σ da with da = g_t (σ(a) − y).

`bernoulli_nll(h, V, c, y, mask)` returns the (B, T) NLL, or None when the kernel does not apply
(`gatedrnn.kernels.fused_path` decides: non-CPU tensors, dtypes other than float32/float64, mixed dtypes,
no kernel library; or operands it does not take, `fits`); under torch.no_grad it runs the forward only,
without an autograd Function.
"""
from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from . import loader
from .autograd import mask_bytes, num_threads

_p = ctypes.c_void_p
_i64 = ctypes.c_int64
_i32 = ctypes.c_int32


class _Bern(ctypes.Structure):   # = BernArgs in readout.cpp
    _fields_ = [("B", _i64), ("T", _i64), ("H", _i64), ("O", _i64), ("nthreads", _i32), ("backward", _i32),
                ("y_u8", _i32), ("pad_", _i32), ("h", _p), ("hsB", _i64), ("hsT", _i64), ("V", _p), ("c", _p), ("y", _p), ("ysB", _i64),
                ("ysT", _i64), ("mask", _p), ("msB", _i64), ("msT", _i64), ("nll", _p), ("P", _p),
                ("g", _p), ("gsB", _i64), ("gsT", _i64), ("dh", _p), ("dsB", _i64), ("dsT", _i64),
                ("dV", _p), ("dc", _p),
                ("VT", _p), ("cp", _p), ("ldo", _i64), ("Vp", _p), ("ldh", _i64), ("dVp", _p), ("dcp", _p)]


def _unit_inner(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def _ptr(t: Tensor | None):
    return None if t is None else t.data_ptr()


def _args(h: Tensor, V: Tensor, c: Tensor, y: Tensor, mask: Tensor | None, backward: bool) -> _Bern:
    B, T, H = h.shape
    a = _Bern()
    a.B, a.T, a.H, a.O, a.nthreads, a.backward = B, T, H, V.shape[0], num_threads(), int(backward)
    a.h, a.hsB, a.hsT = h.data_ptr(), h.stride(0), h.stride(1)
    a.V, a.c = V.data_ptr(), c.data_ptr()
    a.y, a.ysB, a.ysT, a.y_u8 = y.data_ptr(), y.stride(0), y.stride(1), int(y.dtype == torch.uint8)
    if mask is not None:
        a.mask, a.msB, a.msT = mask.data_ptr(), mask.stride(0), mask.stride(1)
    return a


def run_forward(h: Tensor, V: Tensor, c: Tensor, y: Tensor, mask: Tensor | None, keep: bool = False):
    """nll (B, T); with keep=True also P = σ(a) − y (B·T, O) for the backward (valid rows only).
    h, y with unit inner stride; V, c contiguous; mask (B, T) bool/uint8 or None."""
    lib = loader.load()
    B, T, H = h.shape
    nll = h.new_empty(B, T)
    P = h.new_empty(B * T, V.shape[0]) if keep else None
    a = _args(h, V, c, y, mask, False)
    a.nll, a.P = nll.data_ptr(), _ptr(P)
    lib.gr_bernoulli(ctypes.byref(a), int(h.dtype == torch.float64))
    return (nll, P) if keep else nll


def run_backward(h: Tensor, V: Tensor, c: Tensor, y: Tensor, mask: Tensor | None, g: Tensor,
                 P: Tensor | None = None):
    """dh (laid out like h), dV (O, H), dc (O,). P: the forward's σ(a) − y (else a is recomputed)."""
    lib = loader.load()
    O, H = V.shape
    dV, dc = h.new_empty(O, H), h.new_empty(O)
    # dh with h's memory layout (h is usually a batch-first view of the recurrence's time-major output, so
    # its gradient then reaches the recurrence's backward without a copy)
    dh = torch.empty_like(h)   # (preserve_format keeps a dense h's strides)
    a = _args(h, V, c, y, mask, True)
    a.P = _ptr(P)
    a.g, a.gsB, a.gsT = g.data_ptr(), g.stride(0), g.stride(1)
    a.dh, a.dsB, a.dsT = dh.data_ptr(), dh.stride(0), dh.stride(1)
    a.dV, a.dc = dV.data_ptr(), dc.data_ptr()
    lib.gr_bernoulli(ctypes.byref(a), int(h.dtype == torch.float64))
    return dh, dV, dc


class BernoulliNLL(torch.autograd.Function):
    """h (B,T,H), V (O,H), c (O,), y (B,T,O), mask_u8 (B,T) bool/uint8 or None -> nll (B,T)."""

    @staticmethod
    def forward(ctx, h, V, c, y, mask_u8):
        h, y, V, c = _unit_inner(h), _unit_inner(y), V.contiguous(), c.contiguous()
        nll, P = run_forward(h, V, c, y, mask_u8, keep=True)
        ctx.save_for_backward(h, V, c, y, mask_u8, P)
        return nll

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        h, V, c, y, mask_u8, P = ctx.saved_tensors
        dh, dV, dc = run_backward(h, V, c, y, mask_u8, g, P)
        need = ctx.needs_input_grad
        return dh if need[0] else None, dV if need[1] else None, dc if need[2] else None, None, None


def fits(h: Tensor, V: Tensor, c: Tensor, y: Tensor, mask: Tensor | None) -> bool:
    """The operands this kernel takes: h (B, T, H), V (O, H), c (O,), y (B, T, O) wanting no gradient, mask
    (B, T) or None. (Device, dtype and the build: `gatedrnn.kernels.fused_path`, which decides.)"""
    return (h.dim() == 3 and y.dim() == 3 and h.shape[:2] == y.shape[:2] and V.shape == (y.shape[2], h.shape[2])
            and c.shape == (V.shape[0],) and not y.requires_grad
            and (mask is None or mask.shape == h.shape[:2]))


def bernoulli_nll(h: Tensor, V: Tensor, c: Tensor, y: Tensor, mask: Tensor | None) -> Tensor | None:
    """Per-step NLL (B, T) of the Bernoulli head (0 where mask is False), or None if the kernel does not apply."""
    from . import fused_path, needs_grad
    if not fits(h, V, c, y, mask) or not fused_path("bernoulli", h, V, c, y, mask=mask):
        return None
    mask_u8 = mask_bytes(mask)
    if not needs_grad([h, V, c]):
        with torch.no_grad():
            return run_forward(_unit_inner(h), V.detach().contiguous(), c.detach().contiguous(), _unit_inner(y),
                               mask_u8)
    return BernoulliNLL.apply(h, V, c, y, mask_u8)
