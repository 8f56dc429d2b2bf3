"""gatedrnn: a faithful, fast reproduction of Chung et al. 2014, "Empirical Evaluation of Gated
Recurrent Neural Networks on Sequence Modeling" (tanh-RNN vs LSTM vs GRU)."""
from .nn import GRU, LSTM, TanhRNN, make_unit
from .nn.counting import count_parameters, match_hidden_size

__version__ = "0.1.0"
__all__ = ["TanhRNN", "GRU", "LSTM", "make_unit", "count_parameters", "match_hidden_size", "__version__"]
