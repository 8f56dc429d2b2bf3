"""The paper's three recurrent units. Each has the same small API (haste-style):
`Unit(input_size, hidden_size, batch_first=True, ...)`, `forward(x, state=None, lengths=None)
-> (output, state)`, and `paper_weights()` naming its parameters by the paper's symbols."""
from .base import RecurrentUnit
from .gru import GRU
from .lstm import LSTM
from .tanh import TanhRNN

UNITS: dict[str, type[RecurrentUnit]] = {"tanh": TanhRNN, "gru": GRU, "lstm": LSTM}


def make_unit(name: str, input_size: int, hidden_size: int, **kw) -> RecurrentUnit:
    key = name.lower()
    if key not in UNITS:
        raise ValueError(f"unknown unit {name!r}; expected one of {sorted(UNITS)}")
    return UNITS[key](input_size, hidden_size, **kw)


__all__ = ["RecurrentUnit", "TanhRNN", "GRU", "LSTM", "UNITS", "make_unit"]
