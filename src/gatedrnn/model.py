"""The model: one recurrent layer (a paper unit) followed by an output head.

    h_t = unit(x_t, h_{t-1})          the recurrent layer, gatedrnn.nn
    p(y_t | x_≤t) = head(h_t)         Bernoulli per pitch (music) or a Gaussian mixture (speech)
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .heads import make_head
from .nn import make_unit


class SequenceModel(nn.Module):
    def __init__(self, unit: str, input_size: int, hidden_size: int, output_size: int, *,
                 head: str = "bernoulli", weight_noise: float = 0.0, head_kwargs: dict | None = None,
                 **unit_kwargs):
        super().__init__()
        self.unit_name = unit
        self.rnn = make_unit(unit, input_size, hidden_size, batch_first=True,
                             weight_noise=weight_noise, **unit_kwargs)
        self.head = make_head(head, hidden_size, output_size, **(head_kwargs or {}))

    def forward(self, x: Tensor, lengths: Tensor | None = None, state=None):
        h, state = self.rnn(x, state, lengths=lengths)
        return self.head(h), state

    def nll(self, x: Tensor, y: Tensor, mask: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Per-step NLL (B, T) in nats, zero at padded steps."""
        params, _ = self(x, lengths)
        return self.head.nll(params, y) * mask.to(x.dtype)
