"""The gated recurrent unit as Chung et al. 2014 write it (eqs. 5-8, the Bahdanau et al. form):

    z_t = σ(W_z x_t + U_z h_{t-1} + b_z)                 update gate
    r_t = σ(W_r x_t + U_r h_{t-1} + b_r)                 reset gate
    h̃_t = tanh(W x_t + U (r_t ⊙ h_{t-1}) + b)            candidate: reset BEFORE the product
    h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

`reset_after=True` gives the original Cho et al. form h̃_t = tanh(W x_t + r_t ⊙ (U h_{t-1}) + b),
which is what cuDNN and torch.nn.GRU compute (they also carry a second bias; this unit has one
bias per gate, as the paper's parameter counts require).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import RecurrentUnit
from .declaration import Declaration


class GRU(RecurrentUnit):
    """GRU. API: `GRU(input_size, hidden_size, batch_first=True, reset_after=False,
    weight_noise=0.0)`, `forward(x, state=None, lengths=None) -> (output, h)`.
    Paper symbols: W_z, U_z, b_z, W_r, U_r, b_r, W, U, b."""

    # the GRU kernel (kernels/gru.cpp) computes cell() below exactly, either reset placement (the kernel's flag reset_after)
    declares = Declaration(gates=("z", "r", ""), options={"reset_after": False}, kernel="gru")

    def cell(self, wx_t: Tensor, h: Tensor, p: dict[str, Tensor]) -> Tensor:
        H = self.hidden_size
        # wx_t = [W_z x_t + b_z | W_r x_t + b_r | W x_t + b], computed for all t at once
        Wx_z, Wx_r, Wx = wx_t[..., :H], wx_t[..., H:2 * H], wx_t[..., 2 * H:]
        z = torch.sigmoid(Wx_z + h @ p["U_z"].mT)          # z_t = σ(W_z x_t + U_z h_{t-1} + b_z)
        r = torch.sigmoid(Wx_r + h @ p["U_r"].mT)          # r_t = σ(W_r x_t + U_r h_{t-1} + b_r)
        if self.reset_after:
            h_tilde = torch.tanh(Wx + r * (h @ p["U"].mT))  # Cho et al.: tanh(W x_t + r_t ⊙ (U h_{t-1}) + b)
        else:
            h_tilde = torch.tanh(Wx + (r * h) @ p["U"].mT)  # h̃_t = tanh(W x_t + U (r_t ⊙ h_{t-1}) + b)
        self.observe(z=z, r=r)
        return (1 - z) * h + z * h_tilde                     # h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t
