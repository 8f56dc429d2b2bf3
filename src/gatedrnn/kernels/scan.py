"""The linear recurrence h_t = a_t ⊙ h_{t−1} + b_t in C++ (scan.cpp), forward and adjoint, behind an
autograd Function: the loop over time of the units without a recurrent matrix, whose coefficients a_t, b_t
torch computes for every step at once (gatedrnn.nn.scan). Tensors in, tensors out; knows no unit.

    linear_scan(a, b, h0, mask) -> (out, hT)
    a, b (M, T, R, C), h0 (M, R, C), mask (M, T, R) bool or None (False: a padded step, state carried,
    output 0); out (M, T, R, C), hT (M, R, C)

The gated forms compute the coefficients from the pre-activations in the same pass (scan.cpp says how),
for the units whose equations they are (GATED: minGRU, minLSTM):

    gated_scan(kind, wx, h0, mask) -> (out, hT)
    wx (M, T, R, G·C) = W x_t + b for every step, the gate blocks in the unit's order; h0 (M, R, C)

Whether one runs is `kernels.fused_path(name, ...)` ("linear_scan" or the kind), as for every kernel.
"""
from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from . import loader

_DTYPE = {torch.float32: 0, torch.float64: 1}
GATED = {"mingru": (0, 2), "minlstm": (1, 3)}     # kind -> (its code in scan.cpp, gate blocks G)


def _p(t: Tensor | None):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


class FusedLinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor, mask: Tensor | None):
        a, b, h0 = a.contiguous(), b.contiguous(), h0.contiguous()
        M, T, R, C = a.shape
        mk = None if mask is None else mask.to(torch.uint8).contiguous()
        Hs = a.new_empty(M, T + 1, R, C)
        out = torch.empty_like(a)
        rc = loader.load().gr_scan_forward(_DTYPE[a.dtype], M, T, R, C, _p(a), _p(b), _p(h0), _p(mk), _p(Hs),
                                           _p(out))
        if rc != 0:
            raise RuntimeError(f"gr_scan_forward failed ({rc})")
        ctx.save_for_backward(a, Hs, mk)
        return out, Hs[:, T].clone()

    @staticmethod
    def backward(ctx, g_out: Tensor | None, g_T: Tensor | None):
        a, Hs, mk = ctx.saved_tensors
        M, T, R, C = a.shape
        g_out = None if g_out is None else g_out.contiguous()
        g_T = None if g_T is None else g_T.contiguous()
        da, db = torch.empty_like(a), torch.empty_like(a)
        dh0 = a.new_empty(M, R, C)
        rc = loader.load().gr_scan_backward(_DTYPE[a.dtype], M, T, R, C, _p(a), _p(Hs), _p(g_out), _p(g_T),
                                            _p(mk), _p(da), _p(db), _p(dh0))
        if rc != 0:
            raise RuntimeError(f"gr_scan_backward failed ({rc})")
        return da, db, dh0, None


def linear_scan(a: Tensor, b: Tensor, h0: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(out, hT) of h_t = a_t ⊙ h_{t−1} + b_t; the shapes of the module doc (checked by the caller)."""
    if a.shape[1] == 0:
        return torch.zeros_like(b), h0
    return FusedLinearScan.apply(a, b, h0, mask)


class FusedGatedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, code: int, wx: Tensor, h0: Tensor, mask: Tensor | None):
        wx, h0 = wx.contiguous(), h0.contiguous()
        M, T, R, C = h0.shape[0], wx.shape[1], h0.shape[1], h0.shape[2]
        mk = None if mask is None else mask.to(torch.uint8).contiguous()
        Hs = wx.new_empty(M, T + 1, R, C)
        out = wx.new_empty(M, T, R, C)
        rc = loader.load().gr_gated_scan_forward(code, _DTYPE[wx.dtype], M, T, R, C, _p(wx), _p(h0), _p(mk),
                                                 _p(Hs), _p(out))
        if rc != 0:
            raise RuntimeError(f"gr_gated_scan_forward failed ({rc})")
        ctx.code = code
        ctx.save_for_backward(wx, Hs, mk)
        return out, Hs[:, T].clone()

    @staticmethod
    def backward(ctx, g_out: Tensor | None, g_T: Tensor | None):
        wx, Hs, mk = ctx.saved_tensors
        M, T, R, C = Hs.shape[0], wx.shape[1], Hs.shape[2], Hs.shape[3]
        g_out = None if g_out is None else g_out.contiguous()
        g_T = None if g_T is None else g_T.contiguous()
        dwx = torch.empty_like(wx)
        dh0 = wx.new_empty(M, R, C)
        rc = loader.load().gr_gated_scan_backward(ctx.code, _DTYPE[wx.dtype], M, T, R, C, _p(wx), _p(Hs),
                                                  _p(g_out), _p(g_T), _p(mk), _p(dwx), _p(dh0))
        if rc != 0:
            raise RuntimeError(f"gr_gated_scan_backward failed ({rc})")
        return None, dwx, dh0, None


def gated_scan(kind: str, wx: Tensor, h0: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(out (M, T, R, C), hT (M, R, C)) of the unit `kind` (GATED) from its pre-activations wx (M, T, R, G·C)."""
    code, G = GATED[kind]
    M, T, R, GC = wx.shape
    if GC != G * h0.shape[-1] or tuple(h0.shape) != (M, R, GC // G):
        raise ValueError(f"gated_scan({kind!r}): wx (M, T, R, {G}·C) and h0 (M, R, C), got {tuple(wx.shape)}, "
                         f"{tuple(h0.shape)}")
    if T == 0:
        return wx.new_zeros(M, 0, R, GC // G), h0
    return FusedGatedScan.apply(code, wx, h0, mask)
