"""The fused forward/backward as one torch.autograd.Function per call.

Everything runs in C++ (fused.cpp), in one thread-parallel region per pass with the batch split across
threads: per step, forward computes b + W x_t and U h_{t-1} with a register-blocked micro-kernel and
one fused elementwise pass; backward computes the gate gradients, dh_{t-1}, and accumulates dW, dU, db
(and dx) as per-thread partial sums, which are added up here. Python only prepares zero-padded copies
of the weights (tiny) and allocates the outputs.
"""
from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from . import loader

NB = 16  # must equal NB in fused.cpp
TANH, GRU, LSTM = 0, 1, 2


def _pad(n: int) -> int:
    return (n + NB - 1) // NB * NB


_p = ctypes.c_void_p
_i64 = ctypes.c_int64
_i32 = ctypes.c_int32


class _Fwd(ctypes.Structure):
    _fields_ = [("T", _i64), ("B", _i64), ("H", _i64), ("I", _i64),
                ("unit", _i32), ("reset_after", _i32), ("peep", _i32), ("nthreads", _i32),
                ("x", _p), ("sT", _i64), ("sB", _i64), ("WT", _p), ("bx", _p), ("ldx", _i64),
                ("UT", _p), ("ldu", _i64), ("off2", _i64), ("v", _p), ("mask", _p),
                ("Hs", _p), ("Cs", _p), ("out", _p), ("act", _p), ("aux", _p)]


class _Bwd(ctypes.Structure):
    _fields_ = [("T", _i64), ("B", _i64), ("H", _i64), ("I", _i64),
                ("unit", _i32), ("reset_after", _i32), ("peep", _i32), ("nthreads", _i32),
                ("x", _p), ("sT", _i64), ("sB", _i64), ("Wp", _p), ("ldi", _i64), ("Up", _p), ("ldh", _i64),
                ("v", _p), ("mask", _p), ("Hs", _p), ("Cs", _p), ("act", _p), ("aux", _p),
                ("gout", _p), ("ghT", _p), ("gcT", _p), ("dx", _p), ("dWp", _p), ("dUp", _p), ("dbp", _p),
                ("dh0", _p), ("dc0", _p), ("dv", _p)]


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def num_threads() -> int:
    return max(1, torch.get_num_threads())


def row_strided(x: Tensor) -> Tensor:
    """x (T, B, I) with unit stride in the last dim (the kernels take any T and B strides)."""
    if x.stride(2) != 1 and x.shape[2] > 1:
        x = x.contiguous()
    return x


def _padded_cols(M: Tensor, ld: int) -> Tensor:
    out = M.new_zeros(M.shape[0], ld)
    out[:, :M.shape[1]] = M
    return out


def forward_operands(unit: int, reset_after: bool, W: Tensor, U: Tensor, b: Tensor):
    """Zero-padded W^T (I, ldx), bias (ldx), U^T (H, ldu) and the column offset of U_c^T for the paper
    GRU (whose step needs a separate GEMM for U_c (r ⊙ h))."""
    GH, H = U.shape
    ldx = _pad(GH)
    WT = _padded_cols(W.t(), ldx)
    bx = b.new_zeros(ldx)
    bx[:GH] = b
    if unit == GRU and not reset_after:
        n1 = _pad(2 * H)
        UT = U.new_zeros(H, n1 + _pad(H))
        UT[:, :2 * H] = U[:2 * H].t()
        UT[:, n1:n1 + H] = U[2 * H:].t()
        return WT, bx, UT, n1
    return WT, bx, _padded_cols(U.t(), _pad(GH)), 0


def run_forward(unit: int, reset_after: bool, peep: bool, x: Tensor, h0: Tensor, c0: Tensor | None,
                W: Tensor, U: Tensor, b: Tensor, v: Tensor | None, mask_u8: Tensor | None):
    lib = loader.load()
    T, B, I = x.shape
    GH, H = U.shape
    WT, bx, UT, off2 = forward_operands(unit, reset_after, W, U, b)
    Hs = x.new_empty(T + 1, B, H)
    Hs[0] = h0
    Cs = None
    if unit == LSTM:
        Cs = x.new_empty(T + 1, B, H)
        Cs[0] = c0
    out = x.new_empty(T, B, H)
    act = x.new_empty(T, B, GH) if unit != TANH else None
    aux = x.new_empty(T, B, H) if unit != TANH else None
    v = v.contiguous() if (v is not None and peep) else None
    a = _Fwd(T, B, H, I, unit, int(reset_after), int(peep), num_threads(),
             _ptr(x), x.stride(0), x.stride(1), _ptr(WT), _ptr(bx), WT.shape[1], _ptr(UT), UT.shape[1], off2,
             _ptr(v), _ptr(mask_u8), _ptr(Hs), _ptr(Cs), _ptr(out), _ptr(act), _ptr(aux))
    lib.gr_forward(ctypes.byref(a), int(x.dtype == torch.float64))
    return out, Hs, Cs, act, aux


def run_backward(unit: int, reset_after: bool, peep: bool, x: Tensor, W: Tensor, U: Tensor, v: Tensor | None,
                 mask_u8: Tensor | None, Hs: Tensor, Cs: Tensor | None, act: Tensor | None,
                 aux: Tensor | None, gout: Tensor | None, ghT: Tensor | None, gcT: Tensor | None,
                 need_dx: bool):
    """Returns dx (or None), dW, dU, db, dh0, dc0 (LSTM), dv (LSTM with peepholes)."""
    lib = loader.load()
    T, B, I = x.shape
    GH, H = U.shape
    ldi, ldh = _pad(I), _pad(H)
    nth = num_threads()
    P = int(lib.gr_num_parts(B, nth))
    Wp = _padded_cols(W, ldi)
    Up = _padded_cols(U, ldh)
    dx = torch.empty_like(x) if need_dx else None
    if dx is not None and dx.stride() != x.stride():   # the kernel writes dx with x's strides
        x = x.contiguous()
        dx = torch.empty_like(x)
    dWp = x.new_zeros(P, GH, ldi)
    dUp = x.new_zeros(P, GH, ldh)
    dbp = x.new_zeros(P, GH)
    dh0 = x.new_empty(B, H)
    dc0 = x.new_empty(B, H) if unit == LSTM else None
    dv = x.new_zeros(B, 3 * H) if (unit == LSTM and peep) else None
    v = v.contiguous() if (v is not None and peep) else None
    c = lambda t: None if t is None else t.contiguous()
    gout, ghT, gcT = c(gout), c(ghT), c(gcT)
    a = _Bwd(T, B, H, I, unit, int(reset_after), int(peep), nth,
             _ptr(x), x.stride(0), x.stride(1), _ptr(Wp), ldi, _ptr(Up), ldh,
             _ptr(v), _ptr(mask_u8), _ptr(Hs), _ptr(Cs), _ptr(act), _ptr(aux),
             _ptr(gout), _ptr(ghT), _ptr(gcT), _ptr(dx), _ptr(dWp), _ptr(dUp), _ptr(dbp),
             _ptr(dh0), _ptr(dc0), _ptr(dv))
    lib.gr_backward(ctypes.byref(a), int(x.dtype == torch.float64))
    sum0 = lambda t: t[0] if t.shape[0] == 1 else t.sum(0)
    dW = sum0(dWp)[:, :I]
    dU = sum0(dUp)[:, :H]
    db = sum0(dbp)
    dvv = dv.sum(0).view(3, H) if dv is not None else None
    return dx, dW, dU, db, dh0, dc0, dvv


class FusedRecurrence(torch.autograd.Function):
    """inputs: x (T,B,I), h0 (B,H), c0 (B,H) or None, W (G·H,I), U (G·H,H), b (G·H,), v (3,H) or None,
    mask (T,B) bool or None. outputs: out (T,B,H), hT (B,H), cT (B,H) (LSTM only; else a 0-size dummy)."""

    @staticmethod
    def forward(ctx, unit: int, reset_after: bool, peep: bool, x: Tensor, h0: Tensor, c0, W: Tensor,
                U: Tensor, b: Tensor, v, mask):
        ctx.set_materialize_grads(False)
        T = x.shape[0]
        xs = row_strided(x)
        mask_u8 = mask.to(torch.uint8).contiguous() if mask is not None else None
        out, Hs, Cs, act, aux = run_forward(unit, reset_after, peep, xs, h0.contiguous(),
                                            c0.contiguous() if c0 is not None else None,
                                            W, U, b, v, mask_u8)
        ctx.meta = (unit, reset_after, peep)
        ctx.save_for_backward(xs, W, U, v, mask_u8, Hs, Cs, act, aux)
        hT = Hs[T].clone()
        cT = Cs[T].clone() if Cs is not None else x.new_zeros(0)
        return out, hT, cT

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout, ghT, gcT):
        unit, reset_after, peep = ctx.meta
        xs, W, U, v, mask_u8, Hs, Cs, act, aux = ctx.saved_tensors
        need = ctx.needs_input_grad  # (unit, reset_after, peep, x, h0, c0, W, U, b, v, mask)
        dx, dW, dU, db, dh0, dc0, dv = run_backward(
            unit, reset_after, peep, xs, W, U, v, mask_u8, Hs, Cs, act, aux, gout, ghT,
            gcT if unit == LSTM else None, need_dx=need[3])
        return (None, None, None, dx, dh0 if need[4] else None, dc0 if need[5] else None,
                dW if need[6] else None, dU if need[7] else None, db if need[8] else None,
                dv if need[9] else None, None)
