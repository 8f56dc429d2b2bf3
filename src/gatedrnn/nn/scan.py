"""The linear recurrence h_t = a_t ⊙ h_{t−1} + b_t over every step at once: what a unit without a
recurrent matrix runs instead of a loop over its cell() (minGRU, minLSTM: `Declaration(scan=True)`).

    out, hT = linear_scan(a, b, h0, mask)       a, b (M, T, *S); h0 (M, *S); mask (M, T, ...) or None

Time is dim 1 (the units pass (K, T, B, H): K models, time-major, so each step is one contiguous slab). A
masked (padded) step carries the state (a = 1, b = 0) and outputs 0, as base.py's loop does, so hT is each
sequence's state after its last valid step; the mask is bool, (M, T) followed by any leading dims of S
(the units: (K, T, B)), broadcast over the rest.

Exact: each h_t is the step-by-step recurrence up to floating-point rounding — the same products and sums,
regrouped only at chunk boundaries; no division and no logarithm, so nothing overflows, underflows or
loses sign that the step loop would not (the log-space forms need b_t > 0; these take any b_t). How: time
is cut into chunks of C ≈ √(T/2) steps, and
  1. a loop over the C positions of a chunk runs every chunk at once from a zero start: each chunk is then
     the affine map  h_end = P ⊙ h_start + s_end  (P: the product of its a_t, s_end: its zero-start end);
  2. a loop over the chunks carries each chunk's true start through those maps;
  3. the loop of 1 again, from the true starts, writes every h_t (within a chunk: the sequential
     recurrence itself);
about 2C + T/C small operations on slabs of T/C steps instead of T operations on one step each (T = 1,600:
~120 instead of 1,600). Sequences shorter than SEQUENTIAL_BELOW steps run the plain loop.

Where the fused kernels apply (CPU, float32/float64, `kernels.fused_path`) the recurrence runs as a C++ loop
instead (kernels/scan.cpp: the step-by-step recurrence itself, forward and adjoint); the chunked form is the
path for other devices and dtypes, and under torch.jit.trace.

Gradient (a custom autograd.Function, checked by gradcheck in float64): the adjoint of a linear scan is a
linear scan backwards in time. With g_t = ∂L/∂out_t (0 at masked steps) and λ_t = ∂L/∂h_t,
    λ_{T−1} = g_{T−1} + ∂L/∂h_T,   λ_t = a_{t+1} ⊙ λ_{t+1} + g_t,
    ∂L/∂b_t = λ_t,   ∂L/∂a_t = λ_t ⊙ h_{t−1},   ∂L/∂h_0 = a_0 ⊙ λ_0
(masked steps: no gradient to a_t, b_t). The same chunked scan computes λ, reading a shifted by one step
as a view (no copy).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import kernels

SEQUENTIAL_BELOW = 32   # shorter sequences: the plain loop (the chunked form saves nothing)


def chunk_size(T: int) -> int:
    """C minimising the loop count 2C + T/C of the chunked scan."""
    return max(2, math.isqrt(T // 2))


def _scan_into(a: Tensor, b: Tensor, h0: Tensor, out: Tensor, reverse: bool = False) -> Tensor:
    """out[:, t] = a[:, t] ⊙ out[:, t∓1] + b[:, t], starting from h0 before the first step (the last one when
    `reverse`). a, b, out (M, T, *S) — any strides (views of a larger tensor are fine) —, h0 (M, *S). No
    autograd: the callers are the Function below."""
    T = a.shape[1]
    if T == 0:
        return out
    if T < SEQUENTIAL_BELOW:
        order = range(T - 1, -1, -1) if reverse else range(T)
        prev = h0
        for t in order:
            prev = torch.addcmul(b[:, t], a[:, t], prev, out=out[:, t])
        return out
    C = chunk_size(T)
    nc, tail = T // C, T % C
    body = slice(tail, T) if reverse else slice(0, nc * C)
    av, bv, ov = (x[:, body].unflatten(1, (nc, C)) for x in (a, b, out))     # (M, nc, C, *S) views
    pos = list(range(C - 1, -1, -1) if reverse else range(C))                # positions within a chunk
    chunks = list(range(nc - 1, -1, -1) if reverse else range(nc))

    def within(start: Tensor | None) -> None:
        first = pos[0]
        if start is None:
            ov[:, :, first].copy_(bv[:, :, first])
        else:
            torch.addcmul(bv[:, :, first], av[:, :, first], start, out=ov[:, :, first])
        for p, j in zip(pos, pos[1:]):
            torch.addcmul(bv[:, :, j], av[:, :, j], ov[:, :, p], out=ov[:, :, j])

    within(None)                                     # 1. every chunk from a zero start
    P = av.prod(dim=2)                               #    (M, nc, *S): h_end = P ⊙ h_start + s_end
    s_end = ov[:, :, pos[-1]].clone()
    starts = torch.empty_like(s_end)                 # 2. each chunk's true start, chunk by chunk
    starts[:, chunks[0]] = h0
    for k, n in zip(chunks, chunks[1:]):
        torch.addcmul(s_end[:, k], P[:, k], starts[:, k], out=starts[:, n])
    within(starts)                                   # 3. every h_t from its chunk's true start
    # the steps that fill no whole chunk (the last ones; reversed: the first ones), one by one
    if reverse:
        prev = out[:, tail]
        for t in range(tail - 1, -1, -1):
            prev = torch.addcmul(b[:, t], a[:, t], prev, out=out[:, t])
    else:
        prev = out[:, nc * C - 1]
        for t in range(nc * C, T):
            prev = torch.addcmul(b[:, t], a[:, t], prev, out=out[:, t])
    return out


class LinearScan(torch.autograd.Function):
    """(a, b, h0, mask) -> (out, hT); see the module doc. a, b (M, T, *S) with T >= 1, h0 (M, *S), mask of a's
    dtype (1 valid, 0 padded) broadcastable to a, or None."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor, mask: Tensor | None):
        if mask is not None:                          # a padded step carries the state: a = 1, b = 0
            a = torch.where(mask > 0, a, torch.ones((), dtype=a.dtype, device=a.device))
            b = b * mask
        h = _scan_into(a, b, h0, torch.empty_like(b))
        ctx.save_for_backward(a, h, h0, mask)
        hT = h[:, -1].clone()                         # the state after each row's last valid step
        return (h * mask if mask is not None else h), hT

    @staticmethod
    def backward(ctx, g_out: Tensor | None, g_T: Tensor | None):
        a, h, h0, mask = ctx.saved_tensors
        T = a.shape[1]
        g = torch.zeros_like(h) if g_out is None else (g_out * mask if mask is not None else g_out)
        lam = torch.empty_like(h)                     # λ_t = ∂L/∂h_t
        if g_T is None:
            lam[:, T - 1] = g[:, T - 1]
        else:
            torch.add(g[:, T - 1], g_T, out=lam[:, T - 1])
        if T > 1:                                     # λ_t = a_{t+1} ⊙ λ_{t+1} + g_t, backwards in time
            _scan_into(a[:, 1:], g[:, :T - 1], lam[:, T - 1], lam[:, :T - 1], reverse=True)
        da = torch.empty_like(h)                      # ∂L/∂a_t = λ_t ⊙ h_{t−1}
        torch.mul(lam[:, 1:], h[:, :-1], out=da[:, 1:])
        torch.mul(lam[:, 0], h0, out=da[:, 0])
        dh0 = a[:, 0] * lam[:, 0]
        db = lam
        if mask is not None:
            da, db = da * mask, db * mask
        return da, db, dh0, None


def linear_scan(a: Tensor, b: Tensor, h0: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """h_t = a_t ⊙ h_{t−1} + b_t for t = 0..T−1 from h_{−1} = h0: (out (M, T, *S), hT (M, *S)). mask: bool,
    (M, T) or (M, T, leading dims of S) (False: a padded step — state carried, output 0), or None.
    Differentiable in a, b and h0."""
    if a.dim() < 3 or a.shape != b.shape or h0.shape != (a.shape[0], *a.shape[2:]):
        raise ValueError(f"linear_scan: a, b (M, T, *S) and h0 (M, *S), got {tuple(a.shape)}, {tuple(b.shape)}, "
                         f"{tuple(h0.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(a.shape[:mask.dim()]):
        raise ValueError(f"linear_scan: mask {tuple(mask.shape)} is not a leading part of {tuple(a.shape)}")
    if a.shape[1] == 0:
        return b.new_zeros(b.shape), h0
    if not torch.jit.is_tracing() and kernels.fused_path("linear_scan", a, b, h0, mask=mask):
        # the C++ loop (kernels/scan.cpp): the sequential recurrence itself, a few hundred times fewer
        # operations than the chunked torch form below, which runs where the kernels do not apply
        M, T = a.shape[:2]
        R = 1 if mask is None else math.prod(mask.shape[2:])
        S = tuple(a.shape[2:])
        out, hT = kernels.linear_scan(a.reshape(M, T, R, -1), b.reshape(M, T, R, -1), h0.reshape(M, R, -1),
                                      None if mask is None else mask.reshape(M, T, R))
        return out.view(M, T, *S), hT.view(M, *S)
    m = None if mask is None else mask.to(device=a.device, dtype=a.dtype)
    if m is not None:
        m = m.reshape(*m.shape, *(1,) * (a.dim() - m.dim()))
    return LinearScan.apply(a, b, h0, m)


def sequential_scan(a: Tensor, b: Tensor, h0: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The same recurrence one step at a time with plain autograd ops (the tests' second reference)."""
    outs, h = [], h0
    m = None if mask is None else mask.reshape(*mask.shape, *(1,) * (a.dim() - mask.dim()))
    for t in range(a.shape[1]):
        new = a[:, t] * h + b[:, t]
        h = new if m is None else torch.where(m[:, t], new, h)
        outs.append(h if m is None else h * m[:, t].to(h.dtype))
    return (torch.stack(outs, 1) if outs else b.new_zeros(b.shape)), h
