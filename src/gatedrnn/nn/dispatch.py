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


# The crossover, measured (benchmarks/bench_torch.py, results/torch-t{1,2}.json; docs/KERNELS.md, "Two
# paths"): the fused kernel streams W and U through its micro-kernel once per step and row block; once they
# outgrow the cache the platform's GEMM is faster. Single-layer grid, I = H, B 1/16/64, T 100. One thread:
# fused faster at H <= 128 for all three units; at H = 256 the LSTM's GEMM path wins (1 MiB of U), the GRU's
# ties, the tanh unit's fused kernel wins; at H >= 512 the GEMM path wins for all three -> the GEMM path from
# 2^19 values in W and U (G·H·(I + H); 2 MiB in float32). Two threads: the same for the GRU and the tanh
# unit (fused at H = 256, GEMM from 512); the LSTM's fused kernel won up to H = 512 (2^21 values) and lost at
# 1024 (2^23) -> from 2^22 for the LSTM.
GEMM_FROM_VALUES = {1: {"tanh": 1 << 19, "gru": 1 << 19, "lstm": 1 << 19},
                    2: {"tanh": 1 << 19, "gru": 1 << 19, "lstm": 1 << 22}}
# The peephole LSTM at batch <= SMALL_BATCH (results/torch-lstm-cross-t1-20261203.json, after the kernels'
# small-batch work: matrix-vector tiles, the input projection ahead, deferred weight gradients): the fused
# kernel 0.95x torch.nn at H = 256 and 1.14x at 512, batch 1 (CPU time), its GEMM path (a Python loop of
# torch ops per step, having no torch primitive) 3.2x and 2.0x; at batch 4 fused 1.13x / GEMM 2.3x (H = 256)
# and a tie at 512 -> fused below 2^22 values at any thread count (H = 1024, 2^23: the GEMM path).
SMALL_BATCH, PEEP_SMALL_BATCH_GEMM_FROM = 4, 1 << 22


def gemm_wins(kind: str, flags, K: int, B: int, I: int, H: int, threads: int | None = None,
              masked: bool = False) -> bool:
    """The measured rule: is the GEMM path faster than the fused kernel for K models of this kind, batch B,
    input I, hidden H (at `threads`, default torch's; `masked`: padded steps)? docs/KERNELS.md, "Two paths".
    - W and U together hold at least GEMM_FROM_VALUES[threads][kind] values (more than 2 threads: as 2,
      the largest count measured): the GEMM path; the peephole LSTM at batch <= SMALL_BATCH: from
      PEEP_SMALL_BATCH_GEMM_FROM values;
    - torch.nn.LSTM's own form (no peepholes), one model, one sequence, no padding: torch's LSTM primitive
      (oneDNN) beat the fused kernel at batch 1 at every size measured."""
    threads = min(max(threads or torch.get_num_threads(), 1), 2)
    G = {"tanh": 1, "gru": 3, "lstm": 4}[kind]
    peep = kind == "lstm" and bool(flags.get("peepholes", False))
    if peep and B <= SMALL_BATCH:
        return G * H * (I + H) >= PEEP_SMALL_BATCH_GEMM_FROM
    if G * H * (I + H) >= GEMM_FROM_VALUES[threads][kind]:
        return True
    return kind == "lstm" and not flags.get("peepholes", False) and K == 1 and B == 1 and not masked


def route(unit, xt: Tensor, W: Tensor, U: Tensor, b: Tensor, v: Tensor | None, mask: Tensor | None,
          fused: bool | None) -> str:
    """"fused", "gemm" or "reference" for this unit on these operands (K-leading, as `recurrence`)."""
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
    K, T, B, I = xt.shape
    return "gemm" if gemm_wins(g[0], g[1], K, B, I, U.shape[-1], masked=mask is not None) else "fused"


def _floats(*ts: Tensor) -> bool:
    return all(t.dtype in (torch.float32, torch.float64) and t.dtype == ts[0].dtype for t in ts)
