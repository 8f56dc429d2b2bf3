"""What every ablation variant (lstm_variants.py, gru_variants.py) shares.

A variant is a small subclass of a paper unit (or of RecurrentUnit) with its own `gates`, `peepholes`
and `cell()`; it keeps base.py's storage layout (`weight_ih` (G·H, I), `weight_hh` (G·H, H), `bias`
(G·H,), `peephole` (P, H)) and runs on base.py's reference loop.

The fused kernels (gatedrnn.kernels) compute the three paper units' exact equations and recognise a unit
by class AND method identity (`kernels._unit_code`: `cell`, `reference` and `state_h` must be the
parent's own functions). `Variant.reference` is a function of its own, so a variant never runs its
parent's fused kernel — not even the option-only variants (lstm-np, lstm-fb1, gru-ra), whose equations
the kernel could compute: their results and gradients would be right, but code that stacks models by
unit name (kernels/multi.py) treats only the name "lstm" as carrying (h, c), so the safe default is the
reference loop. To give them a fast path, the kernel owner maps them explicitly in `_unit_code`.
"""
from __future__ import annotations

from torch import Tensor

from .base import RecurrentUnit


class Variant:
    """Mixin (first base) of every ablation variant. `name`: its registry name (gatedrnn.nn.UNITS);
    `family`: the paper unit it modifies ("lstm" or "gru")."""

    name: str = ""
    family: str = ""

    def reference(self, xt: Tensor, state, mask: Tensor | None, W: Tensor, U: Tensor):
        # the base reference loop, under a distinct function object: never the parent's fused kernel
        return RecurrentUnit.reference(self, xt, state, mask, W, U)

    def blocks(self, wx_t: Tensor) -> tuple[Tensor, ...]:
        """Split `wx_t` (W_g x_t + b_g for every gate, concatenated) into one (…, H) block per gate,
        in the order of `gates`."""
        H = self.hidden_size
        return tuple(wx_t[..., k * H:(k + 1) * H] for k in range(len(self.gates)))
