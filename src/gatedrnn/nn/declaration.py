"""What a unit says about itself, once, on its class: `declares = Declaration(...)`.

    class GRU(RecurrentUnit):
        name = "gru"
        declares = Declaration(gates=("z", "r", ""), options={"reset_after": False}, kernel="gru")

Everything else is derived from it, never restated: the parameters the module holds (base.py), Table 1's
parameter count and the size matching (counting.py), the fused kernel and its flags
(`RecurrentUnit.kernel_spec`), which options the unit takes (the constructor, `registry.unit_options`,
and so `gatedrnn train`'s refusal of an option a unit does not take). The registry lists units by their
class's `name` (registry.py).

A unit without a recurrent matrix (minGRU, minLSTM: gates that read only x_t) declares `recurrent=False`
and holds no U; one whose state is a linear recurrence h_t = a_t ⊙ h_{t−1} + b_t with (a_t, b_t) computed
from the input alone also declares `scan=True` and runs as a parallel scan (nn/scan.py) instead of a loop.

A unit without a declaration (issue 20's units named by import path, any torch module) can still be
counted: counting.py then counts an instance's parameters.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field, replace
from typing import Mapping

from .. import kernels


class OptionError(TypeError, ValueError):
    """An option a unit does not take, or a value it refuses. A TypeError, as Python's own for an
    unexpected keyword argument, and a ValueError, so that a config validator (pydantic) reports it as
    the field's error and the command line prints one line."""


def check_sizes(input_size, hidden_size, weight_noise: float = 0.0) -> tuple[int, int]:
    """The one check of a recurrent layer's sizes (and weight-noise std): every unit class (base.py), a unit
    of one's own (imported.py) and the parameter count (counting.py) ask it. Returns the sizes as ints
    (an integer of any kind, e.g. numpy's, is accepted; a float is not)."""
    sizes = []
    for name, v in (("input_size", input_size), ("hidden_size", hidden_size)):
        try:
            n = operator.index(v)
        except TypeError:
            n = 0
        if n <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
        sizes.append(n)
    if weight_noise < 0 or not math.isfinite(weight_noise):
        raise ValueError(f"weight_noise must be a finite std >= 0, got {weight_noise!r}")
    return sizes[0], sizes[1]


@dataclass(frozen=True)
class Declaration:
    """A unit's parameters, options and kernel.

    gates      one H-wide block of W (H, I), U (H, H) and b (H) per entry, in storage order: the paper's
               subscripts, "" for the candidate of the tanh unit and the GRU
    peepholes  the gates with a diagonal peephole v_g (one H-vector each, the LSTM's); the option
               `peepholes=False` (the LSTM's) drops them — no other option changes the layout
    extra      further parameters made of H×H blocks, by name: (row blocks, column blocks); initialised
               like U, one orthogonal block at a time (lstm-fgr: "weight_gate": (3, 3), its nine R_gk)
    options    the keyword options the unit takes -> their defaults (the LSTM: peepholes, forget_bias)
    kernel     the fused kernel that computes the class's cell() exactly (a kind of gatedrnn.kernels.KINDS),
               or None: the reference loop only
    flags      that kernel's ablation flags (gatedrnn.kernels.VARIANT_BITS), e.g. {"no_input_gate": True}
    recurrent  whether the gates read h_{t−1} through a recurrent matrix U (every paper unit); False: no U
               (`weight_hh` is None, no U_g symbols, Table 1's count loses its n² terms) — minGRU, minLSTM
    scan       the state is a linear recurrence h_t = a_t ⊙ h_{t−1} + b_t whose (a_t, b_t) the class's
               `coefficients(wx, p)` computes from the input alone, for all steps at once (needs
               recurrent=False, no peepholes, extra matrices or kernel): the unit then trains and evaluates
               as one matrix product over all steps and a parallel scan (nn/scan.py) instead of cell() step
               by step (which stays the reference, and what tracing runs)
    scan_kernel the fused kernel that computes the class's coefficients() and the scan together, exactly
               (a kind of gatedrnn.kernels.GATED: "mingru", "minlstm"), or None: coefficients() in torch and
               the generic scan kernel (needs scan=True)
    """
    gates: tuple[str, ...]
    peepholes: tuple[str, ...] = ()
    extra: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    options: Mapping[str, bool | float] = field(default_factory=dict)
    kernel: str | None = None
    flags: Mapping[str, bool] = field(default_factory=dict)
    recurrent: bool = True
    scan: bool = False
    scan_kernel: str | None = None

    def __post_init__(self):
        # checked when the class is defined, so a wrong declaration never reaches a run
        if not self.gates or not all(isinstance(g, str) for g in self.gates):
            raise TypeError(f"gates must be a non-empty tuple of names, got {self.gates!r}")
        if not set(self.peepholes) <= set(self.gates):
            raise TypeError(f"peepholes {self.peepholes} must be gates of {self.gates}")
        if any(not (int(r) > 0 and int(c) > 0) for r, c in self.extra.values()):
            raise TypeError(f"extra matrices need positive block counts, got {dict(self.extra)}")
        if self.kernel is None and self.flags:
            raise TypeError(f"flags {dict(self.flags)} without a kernel")
        if not self.recurrent and (self.kernel is not None or self.peepholes or self.extra):
            raise TypeError("a unit without a recurrent matrix (recurrent=False) declares no kernel, peepholes "
                            "or extra matrices (the kernels and those parameters act on the recurrence)")
        if self.scan and self.recurrent:
            raise TypeError("scan=True needs recurrent=False: a linear scan's coefficients read only the input")
        if self.scan_kernel is not None and (not self.scan or self.scan_kernel not in kernels.GATED):
            raise TypeError(f"scan_kernel {self.scan_kernel!r} needs scan=True and one of {sorted(kernels.GATED)}")
        if self.kernel is not None:
            if self.kernel not in kernels.KINDS:
                raise TypeError(f"unknown kernel {self.kernel!r}; expected one of {sorted(kernels.KINDS)}")
            unknown = set(self.flags) - set(kernels.VARIANT_BITS[self.kernel])
            if unknown:
                raise TypeError(f"kernel {self.kernel!r} has no ablation flag(s) {sorted(unknown)}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(G blocks of W, U (if `recurrent`), b; P peephole vectors; S extra H×H blocks): Table 1's
        convention."""
        return len(self.gates), len(self.peepholes), sum(r * c for r, c in self.extra.values())

    def count(self, input_size: int, hidden_size: int) -> int:
        """Recurrent-layer parameters: G(I·n + n²) + G·n + P·n + S·n², without the G·n² of U for a unit
        that declares none (the module holds exactly these)."""
        G, P, S = self.shape
        I, n = input_size, hidden_size
        return G * (I * n + (n * n if self.recurrent else 0)) + G * n + P * n + S * n * n

    def with_options(self, options: Mapping[str, bool | float]) -> "Declaration":
        """This declaration for a unit built with `options` (resolved: every option the unit takes)."""
        peepholes = self.peepholes if options.get("peepholes", True) else ()
        return replace(self, peepholes=peepholes, options=dict(options))

    def kernel_flags(self) -> dict[str, bool]:
        """The flags of `kernel` for this unit: the kind's own options (gatedrnn.kernels.OPTIONS) — the LSTM
        kernel's `peepholes` is whether this unit has peepholes, the GRU kernel's `reset_after` the unit's
        option of that name (off where it takes none) — and the declared ablation flags."""
        own = {f: bool(self.peepholes) if f == "peepholes" else bool(self.options.get(f, False))
               for f in kernels.OPTIONS[self.kernel]}
        return {**own, **self.flags}

    def resolve(self, unit: str, given: Mapping[str, object]) -> dict[str, bool | float]:
        """Every option the unit takes: the declared defaults, updated by `given` (each cast to its
        default's type). An option it does not take is refused (OptionError naming `unit`)."""
        for k in given:
            if k not in self.options:
                takes = ", ".join(self.options) or "none"
                raise OptionError(f"unit {unit!r} takes no option {k!r} (its options: {takes})")
        out = {}
        for k, default in self.options.items():
            v = type(default)(given.get(k, default))
            if isinstance(v, float) and not math.isfinite(v):
                raise OptionError(f"unit {unit!r}: option {k} must be finite, got {given[k]!r}")
            out[k] = v
        return out
