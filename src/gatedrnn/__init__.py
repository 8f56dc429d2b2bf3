"""gatedrnn: a faithful, fast reproduction of Chung et al. 2014, "Empirical Evaluation of Gated
Recurrent Neural Networks on Sequence Modeling" (tanh-RNN vs LSTM vs GRU).

The names below are imported on first use (PEP 562), so that `import gatedrnn` — and with it the
command line's `gatedrnn --help` — does not import torch (~3 s); `gatedrnn.LSTM` works as before."""
from __future__ import annotations

import importlib

__version__ = "0.1.0"
# public name -> the module that defines it
_LAZY = {"TanhRNN": ".nn", "GRU": ".nn", "LSTM": ".nn", "make_unit": ".nn",
         "count_parameters": ".nn.counting", "match_hidden_size": ".nn.counting"}
__all__ = ["TanhRNN", "GRU", "LSTM", "make_unit", "count_parameters", "match_hidden_size", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value          # imported once; later lookups do not come here
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
