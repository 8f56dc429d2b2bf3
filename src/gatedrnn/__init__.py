"""gatedrnn: a faithful, fast reproduction of Chung et al. 2014, "Empirical Evaluation of Gated
Recurrent Neural Networks on Sequence Modeling" (tanh-RNN vs LSTM vs GRU).

gatedrnn.LSTM / GRU / TanhRNN (also RNN) keep torch.nn's contract: its arguments, order, defaults and shapes,
layers and directions (nn/layers.py); from_torch builds one from a torch.nn module. The project's own
single-layer units (batch_first=True, state (B, H)) are gatedrnn.nn.TanhRNN / GRU / LSTM and make_unit.

The names below are imported on first use (PEP 562), so that `import gatedrnn` — and with it the
command line's `gatedrnn --help` — does not import torch (~3 s)."""
from __future__ import annotations

import importlib

__version__ = "0.1.0"
# public name -> the module that defines it
_LAZY = {"TanhRNN": ".nn.layers", "RNN": ".nn.layers", "GRU": ".nn.layers", "LSTM": ".nn.layers",
         "from_torch": ".nn.layers", "make_unit": ".nn",
         "count_parameters": ".nn.counting", "match_hidden_size": ".nn.counting"}
__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value          # imported once; later lookups do not come here
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
