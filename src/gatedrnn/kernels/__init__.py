"""Fused forward/backward kernels behind one small interface.

`lookup(unit)` returns a callable `fn(unit, xt, state, mask, W, U) -> (out, state)` computing exactly
what `unit.reference(...)` computes (outputs, final state, and every gradient), or None when no fast
path applies (then the reference loop runs).

The fast path is a C++ loop (fused.cpp) built lazily on first use with the system compiler and cached
once per machine (see loader.py). If it cannot be built or loaded, ONE warning says so and every
unit falls back to the reference loop. Set `GATEDRNN_NO_KERNELS=1` to disable it altogether.

The callable itself falls back to `unit.reference` for inputs it does not handle: non-CPU tensors,
dtypes other than float32/float64, mixed dtypes, zero-length sequences or an empty batch. When no
gradient is wanted (torch.no_grad, or no input requires one) it runs the forward-only kernel
(`autograd.inference`): the same arithmetic, no autograd Function, no activations kept for backward.
"""
from __future__ import annotations

import os
import threading
import warnings

import torch
from torch import Tensor

from . import loader
from .autograd import GRU, LSTM, TANH, FusedRecurrence, inference

__all__ = ["lookup", "available", "fused_run", "build_error", "reset", "needs_grad"]

_state_lock = threading.Lock()
_status: bool | None = None      # None: not tried yet; True: loaded; False: failed (warned)
_error: str | None = None


_codes: dict[type, int | None] = {}   # unit class -> kernel code (the checks below, once per class)


def _class_code(t: type) -> int | None:
    from gatedrnn.nn.gru import GRU as _GRU
    from gatedrnn.nn.lstm import LSTM as _LSTM
    from gatedrnn.nn.tanh import TanhRNN as _Tanh
    # exact equations only: a subclass that overrides cell() or reference() gets the reference loop
    for cls, code in ((_LSTM, LSTM), (_GRU, GRU), (_Tanh, TANH)):
        if issubclass(t, cls):
            if t.cell is not cls.cell or t.reference is not cls.reference or t.state_h is not cls.state_h:
                return None
            return code
    return None


def _unit_code(unit) -> int | None:
    t = type(unit)
    code = _codes[t] if t in _codes else _codes.setdefault(t, _class_code(t))
    if code == LSTM and tuple(unit.peepholes) not in ((), ("i", "f", "o")):
        return None
    return code


def available() -> bool:
    """Build/load the kernel library if not done yet; True if the fast path can run.
    On failure warns once (RuntimeWarning) and returns False from then on."""
    global _status, _error
    if _status is not None:
        return _status
    with _state_lock:
        if _status is None:
            if os.environ.get("GATEDRNN_NO_KERNELS", "") not in ("", "0"):
                _status, _error = False, "disabled by GATEDRNN_NO_KERNELS"
                return False
            try:
                loader.load()
                _status = True
            except Exception as e:  # noqa: BLE001 — any build/load failure means: reference loop
                _status, _error = False, f"{type(e).__name__}: {e}"
                warnings.warn("gatedrnn: the fused C++ kernels could not be built or loaded, so the "
                              f"(slower) reference loop is used instead. Reason: {_error}",
                              RuntimeWarning, stacklevel=3)
    return _status


def build_error() -> str | None:
    return _error


def reset() -> None:
    """Forget the build/load outcome (tests use this to simulate a fresh process)."""
    global _status, _error
    with _state_lock:
        _status, _error = None, None
        loader._lib = None


def lookup(unit):
    if _unit_code(unit) is None:
        return None
    if unit.weight_hh.device.type != "cpu":
        return None            # CPU kernels only; CUDA runs the reference loop
    if not available():
        return None
    return fused_run


def needs_grad(tensors) -> bool:
    """Will autograd want a backward through these? (no: under torch.no_grad / inference_mode, or when no
    input requires a gradient)"""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


_DTYPES = (torch.float32, torch.float64)


def fused_run(unit, xt: Tensor, state, mask: Tensor | None, W: Tensor, U: Tensor):
    code = _unit_code(unit)
    is_lstm = code == LSTM
    h0, c0 = (state if is_lstm else (state, None))
    v = unit.peephole
    tensors = (xt, h0, W, U, unit.bias, c0, v)
    T, B, _ = xt.shape
    dt = xt.dtype
    if (code is None or T == 0 or B == 0 or dt not in _DTYPES
            or not all(t is None or (t.is_cpu and t.dtype == dt) for t in tensors)
            or (is_lstm and c0 is None) or (mask is not None and not mask.is_cpu)):
        return unit.reference(xt, state, mask, W, U)
    peep = bool(is_lstm and unit.peepholes)
    reset_after = bool(getattr(unit, "reset_after", False)) if code == GRU else False
    u = lambda t: None if t is None else t.unsqueeze(0)   # one model = a stack of K=1
    args = (code, reset_after, peep, u(xt), u(h0), u(c0), u(W), u(U), u(unit.bias), u(v) if peep else None, u(mask))
    if not needs_grad(tensors):   # evaluation: forward only, nothing kept for a backward
        out, hT, cT = inference(*args)
    else:
        out, hT, cT = FusedRecurrence.apply(*args)
    return out[0], ((hT[0], cT[0]) if is_lstm else hT[0])
