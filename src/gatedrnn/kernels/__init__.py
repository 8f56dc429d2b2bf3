"""Fused forward/backward kernels behind one small interface, for K >= 1 models of one kind at once.

The kernels know nothing about unit classes: they receive tensors and a unit code. A unit (gatedrnn.nn)
declares which kernel computes its equations — a kind ("tanh", "gru", "lstm") and flags (e.g.
reset_after, peepholes) — and `gatedrnn.nn.recurrence` hands its tensors here:

    recurrence(kind, flags, x, h0, c0, W, U, b, v, mask) -> (out, hT, cT) or None

with a leading model dimension K on every tensor: x (K, T, B, I), h0/c0 (K, B, H), W (K, G·H, I),
U (K, G·H, H), b (K, G·H), v (K, P, H) or None, mask (K, T, B) or None. The LSTM's gate recurrence
(flag `gate_recurrence`, lstm-fgr: i, f, o also receive R [i;f;o]_{t−1}) takes two more tensors, by keyword,
and returns one more, the final gate state:

    recurrence("lstm", {..., "gate_recurrence": True}, x, h0, c0, W, U, b, v, mask, R=R, g0=g0)
        -> (out, hT, cT, gT) or None

R (K, 3H, 3H): row blocks the receiving gate, column blocks the source gate, both (i, f, o); g0, gT
(K, B, 3H) = [i | f | o] of the step before the first / of the last step (g0 None: zeros). A padded step
carries the gate state like h and c. The kernels stay ignorant of unit classes: the unit turns its state
into these operands and back (`RecurrentUnit.kernel_inputs` / `kernel_state` in gatedrnn.nn.base).

Either form computes exactly what the
unit's reference loop computes (outputs, final state, every gradient), or returns None when the kernels
do not apply to these tensors — non-CPU tensors, dtypes other than float32/float64, mixed dtypes,
zero-length sequences or an empty batch, no kernel library — and the caller runs the reference loop.
When no gradient is wanted (torch.no_grad, or no input requires one) it runs the forward-only kernel
(`autograd.inference`): the same arithmetic, no autograd Function, no activations kept for backward.

Whether a fused kernel runs at all is decided in ONE place, `fused_path(kernel, *tensors, fused=...)`,
which every caller asks: the loop over time (gatedrnn.nn), the music head's read-out (heads.py and
readout.py), the model's forward-only evaluation (model.py) and the run's record of the path it took
(train.py, result.json "path"). The caller says which kernel computes its equations (None: none) and
passes its own switch (`fused=False`: always the reference); the kernels say whether they apply.

The fast path is C++ (fused.cpp: the loops over time; tanh.cpp, gru.cpp, lstm.cpp: each unit's step;
readout.cpp), built lazily on first use with the system compiler and cached once per machine (see
loader.py). If it cannot be built or loaded, ONE warning says so and every unit
falls back to the reference loop. Set `GATEDRNN_NO_KERNELS=1` to disable it altogether.
"""
from __future__ import annotations

import os
import threading
import warnings
from typing import Mapping

import torch
from torch import Tensor

from . import autograd, loader
from .autograd import GRU, LSTM, TANH, FusedRecurrence, mask_bytes, row_strided
from .scan import GATED, gated_scan, linear_scan

__all__ = ["KINDS", "OPTIONS", "FLAGS", "READOUTS", "fused_path", "recurrence", "inference", "available",
           "build_error", "reset", "needs_grad", "check_flags", "supports"]

KINDS = {"tanh": TANH, "gru": GRU, "lstm": LSTM}
# the flags each kind understands (all default False). The ablations (nn/*_variants.py) are flags of a
# kernel's elementwise pass. LSTM: a removed gate is the constant 1 (its block absent from W, U, b and
# its row from the peepholes, the rest keeping the order i, f, c, o), coupled: i = 1 − f (no i block),
# no input / output activation: c̃ resp. h = o ⊙ c without the tanh.
# GRU: without reset gate (r = 1): blocks (z, candidate), h̃ = tanh(W x + U h_{t−1} + b); without update
# gate (z = 1): blocks (r, candidate), h = h̃; minimal: blocks (f, candidate), f both the reset and the
# update gate (h̃ = tanh(W x + U (f ⊙ h_{t−1}) + b), h = (1 − f) ⊙ h_{t−1} + f ⊙ h̃). One at a time, and
# only in the paper's reset placement (reset_after off): `check_flags`.
# LSTM gate recurrence (not an elementwise change: one more GEMM per step, a gate state carried like c):
# the pre-activations of i, f, o gain R [i;f;o]_{t−1}; needs all three gates (with peepholes or not, and
# the activation flags), R and the gate state pass as keyword tensors of `recurrence` (see above).
VARIANT_BITS = {"lstm": {"no_input_gate": 1, "no_forget_gate": 2, "no_output_gate": 4, "no_input_activation": 8,
                         "no_output_activation": 16, "coupled_input_forget": 32,
                         "gate_recurrence": 64},                                     # = LVar in lstm.cpp
                "gru": {"no_reset_gate": 1, "no_update_gate": 2, "minimal": 4},      # = GVar in gru.cpp
                "tanh": {}}
# each kind's own options (the paper units' forms): the GRU's reset placement, the LSTM's peepholes
OPTIONS: dict[str, tuple[str, ...]] = {"tanh": (), "gru": ("reset_after",), "lstm": ("peepholes",)}
FLAGS: dict[str, tuple[str, ...]] = {k: (*OPTIONS[k], *VARIANT_BITS[k]) for k in KINDS}
# the linear recurrence h_t = a_t ⊙ h_{t−1} + b_t (scan.py): any coefficients, or minGRU's / minLSTM's from
# their pre-activations
SCANS = ("linear_scan", *GATED)
READOUTS = ("bernoulli",)   # the fused read-out + loss of the music head (readout.py)

_state_lock = threading.Lock()
_status: bool | None = None      # None: not tried yet; True: loaded; False: failed (warned)
_error: str | None = None


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


def needs_grad(tensors) -> bool:
    """Will autograd want a backward through these? (no: under torch.no_grad / inference_mode, or when no
    input requires a gradient)"""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


_DTYPES = (torch.float32, torch.float64)


def fused_path(kernel: str | None, *tensors: Tensor | None, mask: Tensor | None = None,
               fused: bool | None = None) -> bool:
    """THE decision whether a fused kernel runs; every caller asks here. True when
    - the caller allows it: `fused` (a unit's or head's own switch) is not False;
    - the caller declares a kernel that computes exactly its equations: `kernel` is a kind of KINDS or a
      read-out of READOUTS or the linear scan of SCANS (None: it declares none, its own code runs);
    - the tensors (None entries skipped) and the mask are on the CPU, and none is empty; the tensors
      share one float dtype, float32 or float64, except compact (uint8) inputs or targets, which are
      taken only where no gradient is wanted;
    - the kernel library is built (`available()`; a failed build warns once).
    Operand shapes are the kernel function's own business (`recurrence`, `readout.bernoulli_nll`)."""
    if fused is False or kernel is None:
        return False
    if kernel not in KINDS and kernel not in READOUTS and kernel not in SCANS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {sorted(KINDS) + list(READOUTS + SCANS)}")
    ts = [t for t in tensors if t is not None]
    floats = [t for t in ts if t.dtype != torch.uint8]
    if not floats or floats[0].dtype not in _DTYPES or any(t.dtype != floats[0].dtype for t in floats):
        return False
    if len(floats) < len(ts) and needs_grad(floats):
        return False
    if mask is not None and not mask.is_cpu:
        return False
    return all(t.is_cpu and t.numel() > 0 for t in ts) and available()


def check_flags(kind: str, flags: Mapping[str, bool]) -> None:
    """Raise ValueError unless the kernel `kind` computes these flags: a known kind, flags it understands,
    and a combination its step structures implement. Refused combinations:
    - LSTM: gate_recurrence with a removed or coupled gate (it needs i, f, o);
    - GRU: more than one of its ablation flags, or one with reset_after. Each GRU ablation is its own step
      structure (gru.cpp): no_reset_gate the one-GEMM form, no_update_gate / minimal the paper form's two
      stages with one gate block; the Cho form (reset_after) has three blocks and a W-side gradient of its
      own. Combined, the kernel would run one structure on another's layout: reset_after with
      no_reset_gate never writes the W-side gradients, with no_update_gate or minimal it reads a third
      block that is not there."""
    if kind not in KINDS:
        raise ValueError(f"unknown kernel kind {kind!r}; expected one of {sorted(KINDS)}")
    extra = set(flags) - set(FLAGS[kind])
    if extra:
        raise ValueError(f"kernel {kind!r} has no flag(s) {sorted(extra)}; it understands {list(FLAGS[kind])}")
    on = [name for name in VARIANT_BITS[kind] if flags.get(name, False)]
    if kind == "lstm" and "gate_recurrence" in on:
        clash = [n for n in ("no_input_gate", "no_forget_gate", "no_output_gate", "coupled_input_forget")
                 if n in on]
        if clash:
            raise ValueError(f"gate_recurrence needs the gates i, f, o; it cannot be combined with {clash}")
    if kind == "gru" and (len(on) > 1 or (on and flags.get("reset_after", False))):
        given = (["reset_after"] if flags.get("reset_after", False) else []) + on
        raise ValueError(f"the GRU kernel computes at most one of {list(VARIANT_BITS['gru'])}, and none of "
                         f"them with reset_after; got {given}")


# (kind, flags) -> check_flags' verdict (None: passes) — asked several times in every forward pass
_verdicts: dict[tuple, str | None] = {}


def _verdict(kind: str, flags: Mapping[str, bool]) -> str | None:
    key = (kind, tuple(sorted(flags.items())))
    if key not in _verdicts:
        try:
            check_flags(kind, flags)
            _verdicts[key] = None
        except ValueError as e:
            _verdicts[key] = str(e)
    return _verdicts[key]


def supports(kind: str, flags: Mapping[str, bool]) -> bool:
    """Does the kernel `kind` compute these flags (`check_flags` passes)? A unit whose declaration asks for
    a refused combination runs its reference loop (`gatedrnn.nn.RecurrentUnit.kernel_spec`)."""
    return _verdict(kind, flags) is None


def _code(kind: str, flags: Mapping[str, bool]) -> tuple[int, bool, bool, int]:
    """(unit code, reset_after, peepholes, ablation bits) for the C ABI; unknown kinds or flags, or a
    combination the kernel does not compute, are a programming error (`check_flags`)."""
    err = _verdict(kind, flags)
    if err is not None:
        raise ValueError(err)
    lvar = sum(bit for name, bit in VARIANT_BITS[kind].items() if flags.get(name, False))
    return KINDS[kind], bool(flags.get("reset_after", False)), bool(flags.get("peepholes", False)), lvar


def _gate_operands(kind: str, lvar: int, h0: Tensor, R: Tensor | None, g0: Tensor | None) -> bool:
    """Checks R, g0 against the flags and shapes; True if the gate recurrence is on. A missing or
    unexpected R, or a wrong shape, is a programming error: it raises."""
    grec = kind == "lstm" and bool(lvar & autograd.GREC)
    if not grec:
        if R is not None or g0 is not None:
            raise ValueError("R and g0 are operands of the LSTM's gate_recurrence flag only")
        return False
    if R is None:
        raise ValueError("the flag gate_recurrence needs R (K, 3H, 3H)")
    K, B, H = h0.shape
    if tuple(R.shape) != (K, 3 * H, 3 * H):
        raise ValueError(f"R must have shape {(K, 3 * H, 3 * H)}, got {tuple(R.shape)}")
    if g0 is not None and tuple(g0.shape) != (K, B, 3 * H):
        raise ValueError(f"g0 must have shape {(K, B, 3 * H)}, got {tuple(g0.shape)}")
    return True


def recurrence(kind: str, flags: Mapping[str, bool], x: Tensor, h0: Tensor, c0: Tensor | None, W: Tensor,
               U: Tensor, b: Tensor, v: Tensor | None, mask: Tensor | None, *, R: Tensor | None = None,
               g0: Tensor | None = None):
    """The fused loop over time for K models (shapes in the module doc), or None where it does not apply.
    Returns (out (K, T, B, H), hT (K, B, H), cT (K, B, H) or None), and gT (K, B, 3H) after them with the
    flag gate_recurrence (then R is required, g0 optional).
    One model may also come without the K dim — x (T, B, I), h0, c0 (B, H), W (G·H, I), U (G·H, H), b (G·H),
    v (P, H), mask (T, B) — and then its results come without it (not the gate recurrence's operands): no
    view of a parameter enters the autograd graph (see `autograd.FusedRecurrence`)."""
    code, reset_after, peep, lvar = _code(kind, flags)
    if x.dim() == 3 and (R is not None or g0 is not None or lvar & autograd.GREC):
        raise ValueError("the gate recurrence's operands take the leading model dim K")
    grec = _gate_operands(kind, lvar, h0, R, g0)
    is_lstm = code == LSTM
    v = v if peep else None
    tensors = (x, h0, c0, W, U, b, v, R, g0)
    if (is_lstm and c0 is None) or x.dtype == torch.uint8 or not fused_path(kind, *tensors, mask=mask):
        return None
    args = (code, reset_after, peep, x, h0, c0, W, U, b, v, mask, lvar, R, g0)
    if not needs_grad(tensors):   # evaluation: forward only, nothing kept for a backward
        return _inference(*args)
    out, hT, cT, gT = FusedRecurrence.apply(*args)
    res = (out, hT, (cT if is_lstm else None))
    return res + (gT,) if grec else res


def inference(kind: str, flags: Mapping[str, bool], x: Tensor, h0: Tensor, c0: Tensor | None, W: Tensor,
              U: Tensor, b: Tensor, v: Tensor | None, mask: Tensor | None, *, R: Tensor | None = None,
              g0: Tensor | None = None):
    """Forward only, no autograd: what `recurrence` returns (same arithmetic, so the same values) without
    the activations backward would need. x may also be uint8 (compact evaluation batches; the kernel
    converts exactly). Returns out (K,T,B,H), hT (K,B,H), cT (K,B,H) or None, and gT (K,B,3H) with the
    flag gate_recurrence (R required)."""
    code, reset_after, peep, lvar = _code(kind, flags)
    _gate_operands(kind, lvar, h0, R, g0)
    return _inference(code, reset_after, peep, x, h0, c0, W, U, b, v if peep else None, mask, lvar, R, g0)


def _inference(code, reset_after, peep, x, h0, c0, W, U, b, v, mask, lvar, R=None, g0=None):
    d = lambda t: t.detach() if t is not None else None
    single = x.dim() == 3   # one model without the K dim (`recurrence`)
    with torch.no_grad():
        if single:
            x, h0, c0, W, U, b, v, mask = autograd.k1(x, h0, c0, W, U, b, v, mask)
        return autograd.run_forward(code, reset_after, peep, row_strided(x), h0, c0, W.detach(), U.detach(),
                                    b.detach(), d(v), mask_bytes(mask), inference=True, lvar=lvar, R=d(R),
                                    g0=d(g0), single=single)
