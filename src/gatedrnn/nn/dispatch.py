"""Which loop runs a unit's recurrence — decided here, once, for every caller of `gatedrnn.nn.recurrence`
(the single units, `StackedUnit`, the torch.nn-shaped layers of layers.py):

    "fused"      the unit's fused C++ kernel (gatedrnn.kernels; `kernels.fused_path` says whether it applies)
    "gemm"       the GEMM path (gemm.py): torch's GEMM per step, the input projection and the weight
                 gradients as large GEMMs over all steps — where a large product dominates, the platform's
                 GEMM (what torch.nn calls) beats the kernel's own micro-kernel
    "reference"  the unit's cell() step by step (`fused=False`, or no kernel and no GEMM form)

`route` takes the fused kernel wherever it applies unless `gemm_wins` says the GEMM path is faster for this
shape; `gemm_wins` is the rule measured by benchmarks/bench_torch.py (docs/KERNELS.md, "Two paths").
`FORCE` ("fused" / "gemm") overrides the rule where both apply (benchmarks, tests).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import kernels
from . import gemm

__all__ = ["route", "gemm_wins", "gemm_spec", "FORCE"]

FORCE: str | None = None

_OWN_FLAGS = ("reset_after", "peepholes")   # the paper units' own forms; an ablation flag has no GEMM form


def gemm_spec(unit) -> tuple[str, dict, Tensor | None] | None:
    """(kind, flags, inner candidate bias or None) of the GEMM path computing this unit's equations, or None.
    The paper's three units in every form they take (and variants that change only an initialisation),
    read from the unit's kernel declaration; a unit with no kernel may give its own (`unit.gemm_spec()`,
    the torch.nn-form GRU with its second candidate bias, layers.py)."""
    own = getattr(unit, "gemm_spec", None)
    if own is not None:
        return own()
    spec = unit.kernel_spec()
    if spec is None or spec[0] not in gemm.KINDS or any(v for k, v in spec[1].items() if k not in _OWN_FLAGS):
        return None
    return spec[0], spec[1], None


# The crossover, measured (benchmarks/bench_torch.py; docs/KERNELS.md, "Two paths"). Single layer, I = H,
# B 1/16/64, T 100. Until 2026-12-03 (results/torch-t{1,2}.json) the fused kernel streamed W and U from L3
# at every step once they outgrew the L2 and the GEMM path won from 2^19 values in W and U (G·H·(I + H)),
# the LSTM's at two threads from 2^22. Since its large operands are packed into panels (fused.cpp,
# 2026-12-03: results/torch-t1-packed-20261203.json, CPU-time medians) the fused kernel is the faster of our two
# paths in every one-thread cell of the peephole LSTM (H 32-1024; at H = 1024 0.71/0.90/0.95x torch.nn
# against the GEMM path's 0.87/1.17/1.14x) and the tanh unit, and of the GRU except at batch >= WIDE_BATCH
# from 2^20 values (H = 512: fused 1.22x, GEMM 1.00x; H = 1024: 1.16x / 0.90x; at B = 16 they tie at 1024).
# Since the paper GRU's U_c (r ⊙ h) product is packed too (results/torch-gru-uc-t1-20261203.json, one cell,
# B = 64, H = 512: fused 0.70x, GEMM 0.91x) the GEMM path from 2^22 values (H = 1024, not re-measured then);
# re-measured 2026-12-03b (results/torch-gru1024-t1-20261203b.json, B = 64, H = 1024, one repeat, load 4.0):
# fused 0.75x, GEMM 0.84x torch.nn by CPU time (wall 0.73x / 0.74x), so the fused kernel there too.
# Two threads (results/torch-lstm-t2-packed-20261203.json, H <= 512; results/torch-t2-packed-20261203.json: GRU
# and tanh H 32-1024, LSTM H = 1024): the fused kernel in every cell of the peephole LSTM (H = 1024: 0.41/0.68/
# 0.90x against GEMM 1.45/1.63/1.41x) and the GRU (H = 1024: 0.17/0.35/0.51x against 0.42/0.73/0.88x; H = 512
# 0.11/0.16/0.34x against 0.53/0.95/0.86x), and of the tanh unit but at batch <= NARROW_BATCH from 2^21 values
# (H = 1024, B = 1: fused 0.52x, GEMM 0.23x — the fused kernel's one row block runs on one thread; H = 512,
# B = 1: fused 0.26x, GEMM 0.36x; batch 2-15 not measured). One repeat at H = 1024, load 4-8.
# torch.nn.LSTM's form (no peepholes) at one thread keeps the earlier rule, GEMM from 2^19 values (batch >= 2
# not re-measured), but at batch 1 the fused kernel: since the per-call overheads were cut (2026-12-03b,
# results/torch-np-b1-t1-20261203b.json, H 32-512 and the paper's 36, CPU-time medians, load 3.2) it is
# 0.77-0.91x the GEMM path — there torch's own LSTM primitive — but at H = 32 (1.02x); before, the primitive
# won at batch 1 at every size measured. At two threads (results/torch-np-ra-t2-20261203b.json, H 32-1024,
# B 1/16/64, load 2.8-4.1) the fused kernel beat our GEMM path in every cell, torch's primitive at batch 1
# too (fused / GEMM 0.08-0.80; H = 1024: 0.29/0.64/0.91): fused everywhere there, as for the peephole LSTM.
# (The peephole LSTM's earlier batch <= 4 rule, fused below 2^22 values, is covered: fused everywhere.)
NEVER = 1 << 62
GEMM_FROM_VALUES = {1: {"tanh": NEVER, "gru": NEVER, "lstm": NEVER},
                    2: {"tanh": NEVER, "gru": NEVER, "lstm": NEVER}}
WIDE_BATCH, GEMM_FROM_VALUES_WIDE = 64, {1: {}, 2: {}}   # (the GRU at one thread had 2^22 until 2026-12-03b)
NARROW_BATCH, GEMM_FROM_VALUES_NARROW = 1, {1: {}, 2: {"tanh": 1 << 21}}
OLD_LSTM_FROM = {1: 1 << 19}   # torch.nn.LSTM's form (peepholes=False) at one thread: the earlier rule


def gemm_wins(kind: str, flags, K: int, B: int, I: int, H: int, threads: int | None = None,
              masked: bool = False) -> bool:
    """The measured rule: is the GEMM path faster than the fused kernel for K models of this kind, batch B,
    input I, hidden H (at `threads`, default torch's; `masked`: padded steps)? docs/KERNELS.md, "Two paths".
    - W and U together hold at least GEMM_FROM_VALUES[threads][kind] values (more than 2 threads: as 2,
      the largest count measured), at batch >= WIDE_BATCH GEMM_FROM_VALUES_WIDE's and at batch <=
      NARROW_BATCH GEMM_FROM_VALUES_NARROW's where they have one;
    - torch.nn.LSTM's form (no peepholes) at one thread: the fused kernel at batch 1, else the earlier rule
      (OLD_LSTM_FROM; the GEMM path runs torch's LSTM primitive for one unpadded model); at two threads as the
      peephole LSTM (fused everywhere)."""
    threads = min(max(threads or torch.get_num_threads(), 1), 2)
    G = {"tanh": 1, "gru": 3, "lstm": 4}[kind]
    values = G * H * (I + H)
    if kind == "lstm" and not flags.get("peepholes", False) and threads in OLD_LSTM_FROM:
        return B > 1 and values >= OLD_LSTM_FROM[threads]
    if B >= WIDE_BATCH and kind in GEMM_FROM_VALUES_WIDE[threads]:
        return values >= GEMM_FROM_VALUES_WIDE[threads][kind]
    if B <= NARROW_BATCH and kind in GEMM_FROM_VALUES_NARROW[threads]:
        return values >= GEMM_FROM_VALUES_NARROW[threads][kind]
    return values >= GEMM_FROM_VALUES[threads][kind]


def route(unit, xt: Tensor, W: Tensor, U: Tensor, b: Tensor, v: Tensor | None, mask: Tensor | None,
          fused: bool | None) -> str:
    """"fused", "gemm" or "reference" for this unit on these operands (K-leading, as `recurrence`, or one
    model's without K)."""
    if fused is False or torch.jit.is_tracing():   # a trace records torch ops: the reference loop's
        return "reference"
    spec = unit.kernel_spec()
    g = gemm_spec(unit)
    if not kernels.fused_path(spec and spec[0], xt, W, U, b, v, mask=mask, fused=fused):
        # no kernel for this unit (the torch-form GRU with its inner bias), or not for these tensors
        return "gemm" if g is not None and spec is None and _floats(xt, W, U) else "reference"
    if g is None:
        return "fused"
    if FORCE is not None:
        return FORCE
    K, T, B, I = xt.shape if xt.dim() == 4 else (1, *xt.shape)   # (one model may come without K)
    return "gemm" if gemm_wins(g[0], g[1], K, B, I, U.shape[-1], masked=mask is not None) else "fused"


def _floats(*ts: Tensor) -> bool:
    return all(t.dtype in (torch.float32, torch.float64) and t.dtype == ts[0].dtype for t in ts)
