"""The fused forward/backward as one torch.autograd.Function per call, for K >= 1 models at once.

Everything runs in C++ (the loops over time of fused.cpp, the unit's step of tanh.cpp, gru.cpp or
lstm.cpp), in one thread-parallel region per pass: the work items are (model, chunk of batch rows),
each running the whole time loop. Per step, forward computes b + W x_t
and U h_{t-1} with a register-blocked micro-kernel and one fused elementwise pass; backward computes
the gate gradients, dh_{t-1}, and accumulates dW, dU, db (and dx) as per-chunk partial sums. The C++
side also makes the zero-padded weight copies the micro-kernel wants and adds up the partial sums:
Python only allocates the outputs and fills one argument block per model (per-call overhead matters
for small batches: each torch op here costs microseconds).

Tensors carry a leading model dimension K: x (K, T, B, I) (any T and B strides, unit inner stride),
h0/c0 (K, B, H), W (K, G·H, I), U (K, G·H, H), b (K, G·H), v (K, 3, H), mask (K, T, B); with the LSTM's
gate recurrence (lvar & GREC) also R (K, 3H, 3H) and the gate state g0/gT (K, B, 3H) = [i | f | o].
A single unit is K = 1 (see `gatedrnn.kernels.recurrence`).
"""
from __future__ import annotations

import ctypes
import math
import sys
import threading

import numpy as np
import torch
from torch import Tensor

from . import loader

NB = 16  # must equal NB in common.h
# Weight gradients: accumulated inside the backward loop (per-chunk partial sums, rank-n updates per
# step) unless a partial dU holds at least DEFER_BYTES; then the loop stores the gate gradients of every
# step and dW, dU, db, dx are a few large torch GEMMs after it. A rank-n update reads and writes all of
# dU and dW every step: in-loop measured faster at the paper's sizes (up to 4·195 x 195 and 400 x 400,
# ~650 KB, batch 64) on the 2-core machine; deferred faster from 768 KiB (2026-12-03, one thread, with
# the packed operands of fused.cpp: LSTM H = 256 batch 16 / 64 0.88x / 0.78x the in-loop time, H = 512
# 0.61x / 0.86x; GRU H = 256-512 0.77-0.92x; tanh H = 512 0.77-0.93x; at H = 128 about even).
# At batch <= DEFER_BATCH, from 1/12 of it (64 KiB: the LSTM from H = 64, GRU 69, tanh 128): a
# rank-1..4 update is a handful of FMAs per element of dU, and the deferred GEMMs were 1.6-2.4x faster
# for the whole backward at H = 128-256, batch 1-4 (LSTM and GRU, one thread; about even at H = 64 and
# at batch 8; the in-loop sparse dW of the paper's music inputs kept at H = 36). One thread only: since the
# loop gathers the rows of several steps into one product (fused.cpp WeightBlock, 2026-12-03b) the two are
# about even there, and at two threads the deferred GEMMs — torch's parallel ops, whose OpenMP workers then
# spin and wait for each other on a loaded machine — made a batch-1 call 4-6x slower than the in-loop sums
# (per-call CPU time, 200-300 calls, load 3.1: LSTM H = 64 9.0 / 1.4 ms, H = 128 15.5 / 3.6 ms; GRU H = 128
# 16.1 / 3.1 ms; tanh H = 256 11.1 / 2.9 ms; GRU H = 128, batch 4 26.6 / 19.4 ms).
DEFER_BYTES = 768 * 1024
DEFER_BATCH = 4


def defers(GH: int, H: int, B: int, element_size: int, threads: int = 1) -> bool:
    """Does the backward leave the weight gradients to GEMMs after the loop (see DEFER_BYTES)?"""
    nbytes = GH * _pad(H) * element_size
    return nbytes >= DEFER_BYTES or (threads <= 1 and B <= DEFER_BATCH and nbytes >= DEFER_BYTES // 12)


TANH, GRU, LSTM = 0, 1, 2
GREC = 64   # the LSTM's gate-recurrence bit (LV_GREC in lstm.cpp; kernels.VARIANT_BITS["lstm"]["gate_recurrence"])
# Sparse input projection: music inputs are piano rolls (~4 of 88 keys on per step), so b + W x_t (forward)
# and dW += dgxᵀ x_t (backward) run over the nonzero entries of x only, in the same order as the dense
# micro-kernel, whose skipped terms are exact zeros: the same sums (tests check equality). Used when at
# most SPARSE_DENSITY of x is nonzero; SPARSE = True/False forces it on/off (tests), None decides.
SPARSE_DENSITY = 0.25
SPARSE: bool | None = None
HUGE_BYTES = 4 << 20   # buffers at least this large are given transparent huge pages (advise_huge)


def use_sparse(x: Tensor) -> bool:
    """x (K, T, B, I): sparse enough for the sparse input projection? Estimated on at most ~64 of the T
    steps (evenly spaced): the choice changes only the speed, never a result."""
    if SPARSE is not None:
        return SPARSE
    if x.numel() == 0:
        return False
    step = max(1, x.shape[1] // 64)
    s = x[:, ::step] if step > 1 else x
    return int(torch.count_nonzero(s)) <= SPARSE_DENSITY * s.numel()


def _pad(n: int) -> int:
    return (n + NB - 1) // NB * NB


_p = ctypes.c_void_p
_i64 = ctypes.c_int64
_i32 = ctypes.c_int32


class _Fwd(ctypes.Structure):   # = FwdArgs in abi.h
    _fields_ = [("T", _i64), ("B", _i64), ("H", _i64), ("I", _i64),
                ("unit", _i32), ("reset_after", _i32), ("peep", _i32), ("nthreads", _i32),
                ("x", _p), ("sT", _i64), ("sB", _i64), ("W", _p), ("U", _p), ("b", _p), ("v", _p), ("mask", _p),
                ("h0", _p), ("c0", _p), ("Hs", _p), ("Cs", _p), ("act", _p), ("aux", _p),
                ("out", _p), ("hT", _p), ("cT", _p), ("flags", _i64), ("lvar", _i64),
                ("R", _p), ("g0", _p), ("Gs", _p), ("gT", _p),
                ("WT", _p), ("bx", _p), ("ldx", _i64), ("UT", _p), ("ldu", _i64), ("off2", _i64), ("RT", _p)]


class _Bwd(ctypes.Structure):   # = BwdArgs in abi.h
    _fields_ = [("T", _i64), ("B", _i64), ("H", _i64), ("I", _i64),
                ("unit", _i32), ("reset_after", _i32), ("peep", _i32), ("nthreads", _i32),
                ("x", _p), ("sT", _i64), ("sB", _i64), ("W", _p), ("U", _p), ("v", _p), ("mask", _p),
                ("Hs", _p), ("Cs", _p), ("act", _p), ("aux", _p), ("gout", _p), ("gsT", _i64), ("gsB", _i64),
                ("ghT", _p), ("gcT", _p),
                ("dx", _p), ("dh0", _p), ("dc0", _p), ("dW", _p), ("dU", _p), ("db", _p), ("dv", _p),
                ("dG", _p), ("dGx", _p), ("flags", _i64), ("lvar", _i64),
                ("R", _p), ("Gs", _p), ("ggT", _p), ("dg0", _p), ("dR", _p),
                ("Wp", _p), ("ldi", _i64), ("Up", _p), ("ldh", _i64), ("dWp", _p), ("dUp", _p), ("dbp", _p),
                ("dWTp", _p), ("dvr", _p), ("Rp", _p), ("ldg", _i64), ("dRp", _p)]


def _ptrs(t: Tensor | None, K: int) -> list:
    """data pointers of t[0], ..., t[K-1] (None for a missing tensor)."""
    if t is None:
        return [None] * K
    if K == 1:
        return [t.data_ptr()]
    base, step = t.data_ptr(), t.stride(0) * t.element_size()
    return [base + k * step for k in range(K)]


def _c(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()


def unit_inner(g: Tensor | None) -> Tensor | None:
    """A (K, T, B, H) gradient with unit stride in H — the kernels take any K, T and B strides, so a
    transposed (batch-first) gradient is used as it is, and a broadcast one (e.g. of `out.sum()`: stride
    0 everywhere) is materialised only along the dimensions that vary, not as K·T·B·H values."""
    if g is None or g.stride(3) == 1 or g.shape[3] == 1:
        return g
    idx = tuple(slice(0, 1) if g.stride(d) == 0 else slice(None) for d in range(3))
    return g[idx].contiguous().expand(g.shape)


def _grad_rows(g: Tensor | None) -> tuple[Tensor | None, int, int]:
    """(tensor, T stride, B stride) of a (K, T, B, H) gradient for the kernels (rows of unit stride in H), as
    `unit_inner`; a gradient broadcast over K, T and B (e.g. of `out.sum()`) as its one row with T and B
    strides 0 — two torch ops where `unit_inner` takes five (each some microseconds of a batch-1 call). One
    model only (the pointers of models k > 0 are taken along dim 0)."""
    if g is None:
        return None, 0, 0
    if g.shape[0] == 1 and g.stride(3) != 1 and g.shape[3] > 1 and g.stride()[1:3] == (0, 0):
        return g[0, 0, 0].contiguous(), 0, 0
    g = unit_inner(g)
    return g, g.stride(1), g.stride(2)


def advise_huge(lib, t: Tensor | None) -> None:
    """Transparent huge pages for a fresh buffer the kernels are about to fill (see advise_huge in
    fused.cpp: with K models stacked, 4 KiB page faults were most of the K path's extra cost)."""
    if t is not None and t.numel() * t.element_size() >= HUGE_BYTES:
        lib.gr_advise_huge(t.data_ptr(), t.numel() * t.element_size())


def num_threads() -> int:
    return max(1, torch.get_num_threads())


def row_strided(x: Tensor) -> Tensor:
    """x (K, T, B, I) with unit stride in the last dim (the kernels take any T and B strides)."""
    if x.stride(3) != 1 and x.shape[3] > 1:
        x = x.contiguous()
    return x


def mask_bytes(mask: Tensor | None) -> Tensor | None:
    """The (K, T, B) mask as contiguous bytes (a bool tensor already is: 1 byte, 0 or 1)."""
    if mask is None:
        return None
    return mask.contiguous() if mask.dtype in (torch.bool, torch.uint8) else (mask != 0).contiguous()


# Tests set POISON = nan: every buffer the kernels are meant to fill starts as NaN, so a value a kernel
# leaves unwritten reaches a result visibly (uninitialised or recycled memory is otherwise whatever the
# allocator had: a NaN there surfaced only now and then, in the deferred weight gradients).
POISON: float | None = None


def _poisoned(*tensors):
    if POISON is not None:
        for t in tensors:
            if t is not None:
                t.fill_(POISON)


class BufferPool:
    """Recycled memory for a training forward's output and the activations it keeps for its backward
    (out, Hs, Cs, act, aux).

    A fresh multi-MB buffer costs a page fault and the kernel's zeroing per page on first touch; one
    model's buffers come back from glibc's heap, but K stacked models' are K times larger than glibc
    ever recycles (32 MiB), so each call paid for all of them anew. The pool hands out tensors that
    share memory with numpy arrays it keeps; an array is free again when nothing but the pool refers to
    it — no tensor, view or saved activation of any live autograd graph (the tensor holds a reference to
    its array), so a graph kept for a second backward (retain_graph) keeps its buffers. At most
    `MAX_ARRAYS` arrays are kept; beyond that buffers are ordinary torch allocations."""

    MAX_ARRAYS = 16

    def __init__(self):
        self._arrays: list[np.ndarray] = []
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        # (math.prod, not np.prod: ~12 us a call here, five calls in every training forward)
        n = math.prod(shape)
        if dtype not in (torch.float32, torch.float64) or n * dtype.itemsize < HUGE_BYTES:
            return torch.empty(shape, dtype=dtype)
        npd = np.float64 if dtype == torch.float64 else np.float32
        with self._lock:
            for a in self._arrays:
                # references: the list, the loop variable, getrefcount's argument: no user left
                if a.dtype == npd and a.size == n and sys.getrefcount(a) == 3:
                    return torch.from_numpy(a).view(shape)
            if len(self._arrays) >= self.MAX_ARRAYS:
                return torch.empty(shape, dtype=dtype)
            a = np.empty(n, dtype=npd)
            self._arrays.append(a)
        t = torch.from_numpy(a).view(shape)
        advise_huge(loader.load(), t)
        return t

    def clear(self) -> None:
        with self._lock:
            self._arrays.clear()


pool = BufferPool()


def run_forward(unit: int, reset_after: bool, peep: bool, x: Tensor, h0: Tensor, c0: Tensor | None,
                W: Tensor, U: Tensor, b: Tensor, v: Tensor | None, mask_u8: Tensor | None, *,
                inference: bool = False, sparse: bool | None = None, lvar: int = 0, R: Tensor | None = None,
                g0: Tensor | None = None, single: bool = False):
    """Training mode: returns out, hT, cT, Hs, Cs, act, aux (what backward needs). inference=True: keeps
    nothing for backward (returns out, hT, cT). cT is None but for the LSTM. lvar: the LSTM ablation bits
    (LV_* in lstm.cpp; 0 = the paper's LSTM). With the gate recurrence (LSTM, lvar & GREC; R (K, 3H, 3H)
    required, g0 (K, B, 3H) or None = zeros) the final gate state gT follows cT, and in training mode the
    gate-state sequence Gs (K, T+1, B, 3H) follows aux.
    single (K = 1): out, hT, cT, gT are allocated without the K dim (not as views: see FusedRecurrence)."""
    lib = loader.load()
    K, T, B, I = x.shape
    GH, H = U.shape[1:]
    is_lstm = unit == LSTM
    grec = is_lstm and bool(lvar & GREC)
    if grec and R is None:
        raise ValueError("the gate recurrence needs R")
    R = R.contiguous() if grec else None
    g0 = g0.contiguous() if (grec and g0 is not None) else None
    W, U, b, h0 = W.contiguous(), U.contiguous(), b.contiguous(), h0.contiguous()
    c0 = c0.contiguous() if is_lstm else None
    v = v.contiguous() if (v is not None and peep) else None
    if sparse is None:
        sparse = use_sparse(x)
    x_u8 = x.dtype == torch.uint8   # byte inputs (inference only): exact, and 4x less memory than float
    if x_u8 and not inference:
        raise ValueError("uint8 inputs are for inference only")
    new = lambda *shape: W.new_empty(shape)
    keep = lambda *shape: pool.empty(shape, W.dtype)   # training: recycled memory (BufferPool)
    Ko = () if single else (K,)   # the results' leading dims
    out = new(*Ko, T, B, H) if inference else keep(*Ko, T, B, H)
    hT = new(*Ko, B, H)
    cT = new(*Ko, B, H) if is_lstm else None
    gT = new(*Ko, B, 3 * H) if grec else None
    Hs = Cs = act = aux = Gs = None
    if not inference:
        Hs = keep(K, T + 1, B, H)
        Cs = keep(K, T + 1, B, H) if is_lstm else None
        act = keep(K, T, B, GH) if unit != TANH else None
        aux = keep(K, T, B, H) if unit != TANH else None
        Gs = keep(K, T + 1, B, 3 * H) if grec else None
    for t in (out, Hs, Cs, act, aux, Gs):
        advise_huge(lib, t)
    _poisoned(out, hT, cT, Hs, Cs, act, aux, gT, Gs)
    args = (_Fwd * K)()
    P = [_ptrs(t, K) for t in (x, W, U, b, v, mask_u8, h0, c0, Hs, Cs, act, aux, out, hT, cT, R, g0, Gs, gT)]
    nth, sT, sB = num_threads(), x.stride(1), x.stride(2)
    for k in range(K):
        px, pW, pU, pb, pv, pm, ph0, pc0, pHs, pCs, pact, paux, pout, phT, pcT, pR, pg0, pGs, pgT = (p[k] for p in P)
        args[k] = _Fwd(T, B, H, I, unit, int(reset_after), int(peep), nth, px, sT, sB, pW, pU, pb, pv, pm,
                       ph0, pc0, pHs, pCs, pact, paux, pout, phT, pcT, int(sparse) | (2 * int(x_u8)), lvar,
                       pR, pg0, pGs, pgT)
    lib.gr_forward(args, K, int(W.dtype == torch.float64))
    if inference:
        return (out, hT, cT, gT) if grec else (out, hT, cT)
    if grec:
        return out, hT, cT, gT, Hs, Cs, act, aux, Gs
    return out, hT, cT, Hs, Cs, act, aux


def run_backward(unit: int, reset_after: bool, peep: bool, x: Tensor, W: Tensor, U: Tensor, v: Tensor | None,
                 mask_u8: Tensor | None, Hs: Tensor, Cs: Tensor | None, act: Tensor | None,
                 aux: Tensor | None, gout: Tensor | None, ghT: Tensor | None, gcT: Tensor | None,
                 need_dx: bool, sparse: bool = False, lvar: int = 0, R: Tensor | None = None,
                 Gs: Tensor | None = None, ggT: Tensor | None = None):
    """Returns dx (or None), dW, dU, db, dh0, dc0 (LSTM), dv (LSTM with peepholes); all with the K dim.
    sparse: accumulate dW over the nonzeros of x (as the forward's sparse input projection).
    Gate recurrence (LSTM, lvar & GREC): R and the forward's Gs required, ggT = dL/dgT or None; then dg0
    (K, B, 3H) and dR (K, 3H, 3H) follow dv."""
    lib = loader.load()
    K, T, B, I = x.shape
    GH, H = U.shape[1:]
    grec = unit == LSTM and bool(lvar & GREC)
    W, U = W.contiguous(), U.contiguous()
    R = R.contiguous() if grec else None
    ggT = _c(ggT) if grec else None
    dg0 = x.new_empty(K, B, 3 * H) if grec else None
    defer = defers(GH, H, B, x.element_size(), num_threads())
    sep_x = unit == GRU and reset_after
    sparse = sparse and not defer
    dx = None
    if need_dx and not defer:
        dx = torch.empty_like(x)
        if dx.stride() != x.stride():   # the kernel writes dx with x's strides
            x = x.contiguous()
            dx = torch.empty_like(x)
    dG = dGx = dW = dU = db = None
    if defer:
        dG = x.new_empty(K, T, B, GH)
        dGx = x.new_empty(K, T, B, GH) if sep_x else None
    else:
        dW, dU, db = x.new_empty(K, GH, I), x.new_empty(K, GH, H), x.new_empty(K, GH)
    dh0 = x.new_empty(K, B, H)
    dc0 = x.new_empty(K, B, H) if unit == LSTM else None
    dv = torch.empty_like(v) if (unit == LSTM and peep) else None      # (K, P, H)
    v = v.contiguous() if (v is not None and peep) else None
    (gout, gsT, gsB), ghT, gcT = _grad_rows(gout), _c(ghT), _c(gcT)
    dR = x.new_empty(K, 3 * H, 3 * H) if (grec and not defer) else None
    for t in (dx, dG, dGx):
        advise_huge(lib, t)
    _poisoned(dx, dG, dGx, dW, dU, db, dh0, dc0, dv, dg0, dR)
    args = (_Bwd * K)()
    P = [_ptrs(t, K) for t in (x, W, U, v, mask_u8, Hs, Cs, act, aux, gout, ghT, gcT, dx, dh0, dc0, dW, dU, db,
                               dv, dG, dGx, R, Gs, ggT, dg0, dR)]
    nth, sT, sB = num_threads(), x.stride(1), x.stride(2)
    for k in range(K):
        (px, pW, pU, pv, pm, pHs, pCs, pact, paux, pgo, pgh, pgc, pdx, pdh0, pdc0, pdW, pdU, pdb, pdv, pdG,
         pdGx, pR, pGs, pggT, pdg0, pdR) = (p[k] for p in P)
        args[k] = _Bwd(T, B, H, I, unit, int(reset_after), int(peep), nth, px, sT, sB, pW, pU, pv, pm,
                       pHs, pCs, pact, paux, pgo, gsT, gsB, pgh, pgc, pdx, pdh0, pdc0, pdW, pdU, pdb, pdv, pdG, pdGx,
                       int(sparse), lvar, pR, pGs, pggT, pdg0, pdR)
    lib.gr_backward(args, K, int(x.dtype == torch.float64))
    if defer:
        TB = T * B
        d = dG.view(K, TB, GH)
        dgx = dGx.view(K, TB, GH) if sep_x else d
        X = x.reshape(K, TB, I)
        Hp = Hs[:, :T].reshape(K, TB, H)
        dW = torch.bmm(dgx.mT, X)
        if unit == GRU and not reset_after and not lvar & 1:   # the candidate block multiplies r ⊙ h_{t-1}
            NG = GH - H   # the gate rows before the candidate (2H; one gate block: H)
            dU = torch.cat([torch.bmm(d[..., :NG].mT, Hp), torch.bmm(d[..., NG:].mT, aux.view(K, TB, H))], 1)
        else:
            dU = torch.bmm(d.mT, Hp)
        db = dgx.sum(1)
        if need_dx:
            dx = torch.bmm(dgx, W).view(K, T, B, I)
        if grec:   # dR = d_{i,f,o}ᵀ [i;f;o]_{t-1} (the LSTM layout with every gate: blocks i, f, c̃, o)
            d_ifo = torch.cat([d[..., :2 * H], d[..., 3 * H:]], -1)
            dR = torch.bmm(d_ifo.mT, Gs[:, :T].reshape(K, TB, 3 * H))
    if grec:
        return dx, dW, dU, db, dh0, dc0, dv, dg0, dR
    return dx, dW, dU, db, dh0, dc0, dv


def k1(*ts: Tensor | None) -> list[Tensor | None]:
    """One model's operands given without the K dim, as K = 1 (views; None stays None)."""
    return [None if t is None else t[None] for t in ts]


class FusedRecurrence(torch.autograd.Function):
    """inputs (leading model dim K): x (K,T,B,I), h0 (K,B,H), c0 (K,B,H) or None, W (K,G·H,I), U (K,G·H,H),
    b (K,G·H), v (K,P,H) or None, mask (K,T,B) bool or None, lvar (LSTM ablation bits), R (K,3H,3H) and
    g0 (K,B,3H) or None (the LSTM's gate recurrence, lvar & GREC; else None).
    outputs: out (K,T,B,H), hT (K,B,H), cT (K,B,H) (LSTM only; else a 0-size dummy), gT (K,B,3H) (gate
    recurrence only; else a 0-size dummy).
    One model may come without the K dim (x (T,B,I), ..., no gate recurrence): its results and gradients come
    without it too. Then no view of a parameter with a K dim enters the autograd graph: each was a node of
    the backward, and with the output's squeeze they took ~40 % of the Python side of a batch-1 call."""

    @staticmethod
    def forward(ctx, unit: int, reset_after: bool, peep: bool, x: Tensor, h0: Tensor, c0, W: Tensor,
                U: Tensor, b: Tensor, v, mask, lvar: int = 0, R=None, g0=None):
        ctx.set_materialize_grads(False)
        single = x.dim() == 3
        xs = row_strided(x[None] if single else x)
        if single:
            h0, c0, W, U, b, v, mask = k1(h0, c0, W, U, b, v, mask)
        mask_u8 = mask_bytes(mask)
        sparse = use_sparse(xs)
        grec = unit == LSTM and bool(lvar & GREC)
        res = run_forward(unit, reset_after, peep, xs, h0, c0, W, U, b, v, mask_u8, sparse=sparse, lvar=lvar,
                          R=R, g0=g0, single=single)
        if grec:
            out, hT, cT, gT, Hs, Cs, act, aux, Gs = res
        else:
            (out, hT, cT, Hs, Cs, act, aux), gT, Gs = res, None, None
        ctx.meta = (unit, reset_after, peep, sparse, lvar, single)
        ctx.save_for_backward(xs, W, U, v, mask_u8, Hs, Cs, act, aux, R if grec else None, Gs)
        dummy = lambda t: t if t is not None else x.new_zeros(0)
        return out, hT, dummy(cT), dummy(gT)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout, ghT, gcT, ggT):
        unit, reset_after, peep, sparse, lvar, single = ctx.meta
        xs, W, U, v, mask_u8, Hs, Cs, act, aux, R, Gs = ctx.saved_tensors
        need = ctx.needs_input_grad  # (unit, reset_after, peep, x, h0, c0, W, U, b, v, mask, lvar, R, g0)
        grec = R is not None
        if single:
            gout, ghT, gcT = k1(gout, ghT, gcT if unit == LSTM else None)
        res = run_backward(
            unit, reset_after, peep, xs, W, U, v, mask_u8, Hs, Cs, act, aux, gout, ghT,
            gcT if unit == LSTM else None, need_dx=need[3], sparse=sparse, lvar=lvar, R=R, Gs=Gs,
            ggT=ggT if grec else None)
        dx, dW, dU, db, dh0, dc0, dv = res[:7]
        dg0, dR = res[7:] if grec else (None, None)
        if single:
            dx, dW, dU, db, dh0, dc0, dv = (None if t is None else t[0] for t in (dx, dW, dU, db, dh0, dc0, dv))
        return (None, None, None, dx, dh0 if need[4] else None, dc0 if need[5] else None,
                dW if need[6] else None, dU if need[7] else None, db if need[8] else None,
                dv if need[9] else None, None, None, dR if need[12] else None, dg0 if need[13] else None)
