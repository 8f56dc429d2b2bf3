"""What every ablation variant (lstm_variants.py, gru_variants.py) shares.

A variant is a small subclass of a paper unit (or of RecurrentUnit) with its own declaration
(`declares = Declaration(...)`: gates, peepholes, options, kernel; declaration.py) and `cell()`; it keeps
base.py's storage layout (`weight_ih` (G·H, I), `weight_hh` (G·H, H), `bias` (G·H,), `peephole` (P, H))
and runs base.py's loop (`recurrence`).

A fused kernel runs only for the class that declares it and subclasses that keep its equations (see
`RecurrentUnit.kernel_spec`), so a variant never inherits its parent's kernel: it gets a fused path only
by declaring, in its own class, the kernel and flags whose equations are exactly its cell() (every
variant does; docs/VARIANTS.md lists them).
"""
from __future__ import annotations

from torch import Tensor


class Variant:
    """Mixin (first base) of every ablation variant. `name`: its registry name; `family`: the paper unit it
    modifies ("lstm" or "gru") — a built-in variant's are its entry in gatedrnn.units (set when the class is
    defined), a variant of one's own sets both."""

    name: str = ""
    family: str = ""

    def blocks(self, wx_t: Tensor) -> tuple[Tensor, ...]:
        """Split `wx_t` (W_g x_t + b_g for every gate, concatenated) into one (…, H) block per gate,
        in the order of `gates`."""
        H = self.hidden_size
        return tuple(wx_t[..., k * H:(k + 1) * H] for k in range(len(self.gates)))
