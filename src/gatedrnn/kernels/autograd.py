"""The fused forward/backward as one torch.autograd.Function per call, for K >= 1 models at once.

Everything runs in C++ (fused.cpp), in one thread-parallel region per pass: the work items are
(model, chunk of batch rows), each running the whole time loop. Per step, forward computes b + W x_t
and U h_{t-1} with a register-blocked micro-kernel and one fused elementwise pass; backward computes
the gate gradients, dh_{t-1}, and accumulates dW, dU, db (and dx) as per-chunk partial sums, added up
here. Python only prepares zero-padded copies of the weights (tiny) and allocates the outputs.

Tensors carry a leading model dimension K: x (K, T, B, I) (any T and B strides, unit inner stride),
h0/c0 (K, B, H), W (K, G·H, I), U (K, G·H, H), b (K, G·H), v (K, 3, H), mask (K, T, B).
A single unit is K = 1 (see `gatedrnn.kernels.fused_run`).
"""
from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from . import loader

NB = 16  # must equal NB in fused.cpp
# Weight gradients: accumulated inside the backward loop (per-chunk partial sums, rank-n updates per
# step) unless a partial dU is larger than this; then the loop stores the gate gradients of every step
# and dW, dU, db, dx are a few large torch GEMMs after it. In-loop measured faster at all the paper's
# sizes (up to 4·195 x 195 and 400 x 400) on the 2-core machine.
DEFER_BYTES = 4 * 1024 * 1024
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
                ("dh0", _p), ("dc0", _p), ("dv", _p), ("dG", _p), ("dGx", _p)]


def _ptrs(t: Tensor | None, K: int) -> list:
    """data pointers of t[0], ..., t[K-1] (None for a missing tensor)."""
    if t is None:
        return [None] * K
    base, step = t.data_ptr(), t.stride(0) * t.element_size()
    return [base + k * step for k in range(K)]


def num_threads() -> int:
    return max(1, torch.get_num_threads())


def row_strided(x: Tensor) -> Tensor:
    """x (K, T, B, I) with unit stride in the last dim (the kernels take any T and B strides)."""
    if x.stride(3) != 1 and x.shape[3] > 1:
        x = x.contiguous()
    return x


def _padded_cols(M: Tensor, ld: int) -> Tensor:
    out = M.new_zeros(*M.shape[:-1], ld)
    out[..., :M.shape[-1]] = M
    return out


def forward_operands(unit: int, reset_after: bool, W: Tensor, U: Tensor, b: Tensor):
    """Zero-padded W^T (K, I, ldx), bias (K, ldx), U^T (K, H, ldu) and the column offset of U_c^T for
    the paper GRU (whose step needs a separate GEMM for U_c (r ⊙ h))."""
    K, GH, H = U.shape
    ldx = _pad(GH)
    WT = _padded_cols(W.mT, ldx)
    bx = _padded_cols(b, ldx)
    if unit == GRU and not reset_after:
        n1 = _pad(2 * H)
        UT = U.new_zeros(K, H, n1 + _pad(H))
        UT[:, :, :2 * H] = U[:, :2 * H].mT
        UT[:, :, n1:n1 + H] = U[:, 2 * H:].mT
        return WT, bx, UT, n1
    return WT, bx, _padded_cols(U.mT, _pad(GH)), 0


def run_forward(unit: int, reset_after: bool, peep: bool, x: Tensor, h0: Tensor, c0: Tensor | None,
                W: Tensor, U: Tensor, b: Tensor, v: Tensor | None, mask_u8: Tensor | None):
    lib = loader.load()
    K, T, B, I = x.shape
    GH, H = U.shape[1:]
    WT, bx, UT, off2 = forward_operands(unit, reset_after, W, U, b)
    Hs = x.new_empty(K, T + 1, B, H)
    Hs[:, 0] = h0
    Cs = None
    if unit == LSTM:
        Cs = x.new_empty(K, T + 1, B, H)
        Cs[:, 0] = c0
    out = x.new_empty(K, T, B, H)
    act = x.new_empty(K, T, B, GH) if unit != TANH else None
    aux = x.new_empty(K, T, B, H) if unit != TANH else None
    v = v.contiguous() if (v is not None and peep) else None
    args = (_Fwd * K)()
    P = [_ptrs(t, K) for t in (x, WT, bx, UT, v, mask_u8, Hs, Cs, out, act, aux)]
    for k in range(K):
        px, pWT, pbx, pUT, pv, pm, pHs, pCs, pout, pact, paux = (p[k] for p in P)
        args[k] = _Fwd(T, B, H, I, unit, int(reset_after), int(peep), num_threads(),
                       px, x.stride(1), x.stride(2), pWT, pbx, WT.shape[2], pUT, UT.shape[2], off2,
                       pv, pm, pHs, pCs, pout, pact, paux)
    lib.gr_forward(args, K, int(x.dtype == torch.float64))
    return out, Hs, Cs, act, aux


def run_backward(unit: int, reset_after: bool, peep: bool, x: Tensor, W: Tensor, U: Tensor, v: Tensor | None,
                 mask_u8: Tensor | None, Hs: Tensor, Cs: Tensor | None, act: Tensor | None,
                 aux: Tensor | None, gout: Tensor | None, ghT: Tensor | None, gcT: Tensor | None,
                 need_dx: bool):
    """Returns dx (or None), dW, dU, db, dh0, dc0 (LSTM), dv (LSTM with peepholes); all with the K dim."""
    lib = loader.load()
    K, T, B, I = x.shape
    GH, H = U.shape[1:]
    ldi, ldh = _pad(I), _pad(H)
    nth = num_threads()
    nparts = int(lib.gr_num_parts(B, nth))
    Wp = _padded_cols(W, ldi)
    Up = _padded_cols(U, ldh)
    defer = GH * ldh * x.element_size() > DEFER_BYTES
    sep_x = unit == GRU and reset_after
    dx = None
    if need_dx and not defer:
        dx = torch.empty_like(x)
        if dx.stride() != x.stride():   # the kernel writes dx with x's strides
            x = x.contiguous()
            dx = torch.empty_like(x)
    if defer:
        dG = x.new_empty(K, T, B, GH)
        dGx = x.new_empty(K, T, B, GH) if sep_x else None
        dWp = dUp = dbp = None
    else:
        dG = dGx = None
        dWp = x.new_zeros(K, nparts, GH, ldi)
        dUp = x.new_zeros(K, nparts, GH, ldh)
        dbp = x.new_zeros(K, nparts, GH)
    dh0 = x.new_empty(K, B, H)
    dc0 = x.new_empty(K, B, H) if unit == LSTM else None
    dv = x.new_zeros(K, B, 3 * H) if (unit == LSTM and peep) else None
    v = v.contiguous() if (v is not None and peep) else None
    c = lambda t: None if t is None else t.contiguous()
    gout, ghT, gcT = c(gout), c(ghT), c(gcT)
    args = (_Bwd * K)()
    P = [_ptrs(t, K) for t in (x, Wp, Up, v, mask_u8, Hs, Cs, act, aux, gout, ghT, gcT, dx, dWp, dUp, dbp,
                               dh0, dc0, dv, dG, dGx)]
    for k in range(K):
        (px, pWp, pUp, pv, pm, pHs, pCs, pact, paux, pgo, pgh, pgc, pdx, pdW, pdU, pdb, pdh0, pdc0,
         pdv, pdG, pdGx) = (p[k] for p in P)
        args[k] = _Bwd(T, B, H, I, unit, int(reset_after), int(peep), nth,
                       px, x.stride(1), x.stride(2), pWp, ldi, pUp, ldh, pv, pm, pHs, pCs, pact, paux,
                       pgo, pgh, pgc, pdx, pdW, pdU, pdb, pdh0, pdc0, pdv, pdG, pdGx)
    lib.gr_backward(args, K, int(x.dtype == torch.float64))
    dvv = dv.sum(1).view(K, 3, H) if dv is not None else None
    if defer:
        TB = T * B
        d = dG.view(K, TB, GH)
        dgx = dGx.view(K, TB, GH) if sep_x else d
        X = x.reshape(K, TB, I)
        Hp = Hs[:, :T].reshape(K, TB, H)
        dW = torch.bmm(dgx.mT, X)
        if unit == GRU and not reset_after:   # the candidate block multiplies r ⊙ h_{t-1}
            dU = torch.cat([torch.bmm(d[..., :2 * H].mT, Hp), torch.bmm(d[..., 2 * H:].mT, aux.view(K, TB, H))], 1)
        else:
            dU = torch.bmm(d.mT, Hp)
        db = dgx.sum(1)
        if need_dx:
            dx = torch.bmm(dgx, W).view(K, T, B, I)
        return dx, dW, dU, db, dh0, dc0, dvv
    sum1 = lambda t: t[:, 0] if t.shape[1] == 1 else t.sum(1)
    dW = sum1(dWp)[..., :I]
    dU = sum1(dUp)[..., :H]
    db = sum1(dbp)
    return dx, dW, dU, db, dh0, dc0, dvv


class FusedRecurrence(torch.autograd.Function):
    """inputs (leading model dim K): x (K,T,B,I), h0 (K,B,H), c0 (K,B,H) or None, W (K,G·H,I), U (K,G·H,H),
    b (K,G·H), v (K,3,H) or None, mask (K,T,B) bool or None.
    outputs: out (K,T,B,H), hT (K,B,H), cT (K,B,H) (LSTM only; else a 0-size dummy)."""

    @staticmethod
    def forward(ctx, unit: int, reset_after: bool, peep: bool, x: Tensor, h0: Tensor, c0, W: Tensor,
                U: Tensor, b: Tensor, v, mask):
        ctx.set_materialize_grads(False)
        T = x.shape[1]
        xs = row_strided(x)
        mask_u8 = mask.to(torch.uint8).contiguous() if mask is not None else None
        out, Hs, Cs, act, aux = run_forward(unit, reset_after, peep, xs, h0.contiguous(),
                                            c0.contiguous() if c0 is not None else None,
                                            W, U, b, v, mask_u8)
        ctx.meta = (unit, reset_after, peep)
        ctx.save_for_backward(xs, W, U, v, mask_u8, Hs, Cs, act, aux)
        hT = Hs[:, T].clone()
        cT = Cs[:, T].clone() if Cs is not None else x.new_zeros(0)
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
