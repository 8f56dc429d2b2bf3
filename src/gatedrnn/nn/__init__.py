"""The paper's three recurrent units and the component-ablation variants. Each has the same small API
(haste-style): `Unit(input_size, hidden_size, batch_first=True, ...)`, `forward(x, state=None,
lengths=None) -> (output, state)`, and `paper_weights()` naming its parameters by the paper's symbols.

Registry: `UNITS` maps every name to its class, `unit_names()` lists them (the paper's three first),
`unit_family(name)` gives the paper unit a name modifies ("tanh", "gru", "lstm"; mgu counts as "gru"),
`make_unit(name, ...)` builds one. Variants: lstm_variants.py, gru_variants.py, docs/VARIANTS.md.
"""
from .base import RecurrentUnit
from .gru import GRU
from .gru_variants import GRU_VARIANTS, MGU
from .lstm import LSTM
from .lstm_variants import LSTM_VARIANTS
from .tanh import TanhRNN
from .variant import Variant

PAPER_UNITS: tuple[str, ...] = ("tanh", "gru", "lstm")
UNITS: dict[str, type[RecurrentUnit]] = {"tanh": TanhRNN, "gru": GRU, "lstm": LSTM,
                                         **LSTM_VARIANTS, **GRU_VARIANTS}


def unit_names() -> list[str]:
    """Every valid unit name: the paper's three, then the LSTM variants, then the GRU variants."""
    return list(UNITS)


def unit_family(name: str) -> str:
    """The paper unit `name` is (or modifies): "tanh", "gru" or "lstm". LSTM-family units carry an
    (h, c, …) state and accept `forget_bias`; only "lstm" itself accepts `peepholes`, only "gru"
    `reset_after`."""
    cls = UNITS[_check(name)]
    return getattr(cls, "family", "") or name.lower()


def _check(name: str) -> str:
    key = name.lower() if isinstance(name, str) else None
    if key not in UNITS:
        raise ValueError(f"unknown unit {name!r}; expected one of: {', '.join(UNITS)}")
    return key


def make_unit(name: str, input_size: int, hidden_size: int, **kw) -> RecurrentUnit:
    """Build the unit called `name` (case-insensitive; see `unit_names()`). `kw`: batch_first,
    weight_noise, fused, and the unit's own options (e.g. forget_bias for the LSTM family)."""
    return UNITS[_check(name)](input_size, hidden_size, **kw)


__all__ = ["RecurrentUnit", "TanhRNN", "GRU", "LSTM", "MGU", "Variant", "UNITS", "PAPER_UNITS",
           "unit_names", "unit_family", "make_unit"]
