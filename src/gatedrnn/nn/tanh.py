"""The plain tanh unit (Chung et al. 2014, eq. 1):

    h_t = tanh(W x_t + U h_{t-1} + b),   h_0 = 0
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import RecurrentUnit
from .declaration import Declaration


class TanhRNN(RecurrentUnit):
    """tanh-RNN. API: `TanhRNN(input_size, hidden_size, batch_first=True, weight_noise=0.0)`,
    `forward(x, state=None, lengths=None) -> (output, h)`. Paper symbols: W, U, b."""

    declares = Declaration(gates=("",), kernel="tanh")   # kernels/tanh.cpp computes cell() below exactly

    def cell(self, wx_t: Tensor, h: Tensor, p: dict[str, Tensor]) -> Tensor:
        # wx_t = W x_t + b (for all t at once, see RecurrentUnit.reference)
        return torch.tanh(wx_t + h @ p["U"].mT)          # h_t = tanh(W x_t + U h_{t-1} + b)
