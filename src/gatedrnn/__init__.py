"""gatedrnn: a faithful, fast reproduction of Chung et al. 2014, "Empirical Evaluation of Gated
Recurrent Neural Networks on Sequence Modeling" (tanh-RNN vs LSTM vs GRU)."""
from .nn import make_unit
from .nn.counting import count_parameters, match_hidden_size
# torch.nn's contract (torch.nn's arguments, order, defaults and shapes; layers, directions; nn/layers.py).
# The project's own single-layer units (batch_first=True, state (B, H)) are gatedrnn.nn.TanhRNN / GRU / LSTM
# and gatedrnn.nn.make_unit.
from .nn.layers import GRU, LSTM, RNN, TanhRNN, from_torch

__version__ = "0.1.0"
__all__ = ["TanhRNN", "RNN", "GRU", "LSTM", "from_torch", "make_unit", "count_parameters", "match_hidden_size",
           "__version__"]
