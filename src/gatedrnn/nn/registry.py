"""The unit registry: every unit name -> its class (the paper's three, then the ablation variants).
See the package doc (gatedrnn/nn/__init__.py)."""
from __future__ import annotations

from .base import RecurrentUnit
from .gru import GRU
from .gru_variants import GRU_VARIANTS
from .lstm import LSTM
from .lstm_variants import LSTM_VARIANTS
from .tanh import TanhRNN

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
