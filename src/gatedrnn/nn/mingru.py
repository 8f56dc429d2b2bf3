"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?", arXiv:2410.01201), the vanilla form — not the
log-space one:

    z_t = σ(W_z x_t + b_z)                              update gate: reads only the input
    h̃_t = W_h x_t + b_h                                 candidate: linear, no tanh, no reset gate
    h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

Neither the gate nor the candidate reads h_{t−1}: there is no recurrent matrix (`recurrent=False`), and the
state is the linear recurrence h_t = a_t ⊙ h_{t−1} + b_t with a_t = 1 − z_t, b_t = z_t ⊙ h̃_t, computed for all
steps at once (`coefficients`) and run as a parallel scan (`scan=True`, nn/scan.py). `cell()` is the step
the scan must equal (and what tracing runs). Parameters by Table 1's convention: 2(I·n) + 2n.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import RecurrentUnit
from .declaration import Declaration

σ = torch.sigmoid


class MinGRU(RecurrentUnit):
    """minGRU. API: `MinGRU(input_size, hidden_size, batch_first=True, weight_noise=0.0, fused=None)`,
    `forward(x, state=None, lengths=None) -> (output, h)`. Paper symbols: W_z, b_z, W_h, b_h.
    `fused=False` runs cell() step by step instead of the scan."""

    declares = Declaration(gates=("z", "h"), recurrent=False, scan=True, scan_kernel="mingru")

    def cell(self, wx_t: Tensor, h: Tensor, p: dict[str, Tensor]) -> Tensor:
        Wx_z, Wx_h = wx_t.split(self.hidden_size, dim=-1)   # W_z x_t + b_z, W_h x_t + b_h, for all t at once
        z = σ(Wx_z)                                         # z_t = σ(W_z x_t + b_z)
        h_tilde = Wx_h                                      # h̃_t = W_h x_t + b_h
        self.observe(z=z)
        return (1 - z) * h + z * h_tilde                    # h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t

    def coefficients(self, gates: tuple[Tensor, Tensor], p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        Wx_z, Wx_h = gates                                  # W_z x_t + b_z, W_h x_t + b_h: every step at once
        z = σ(Wx_z)
        return 1 - z, z * Wx_h                              # h_t = a_t ⊙ h_{t−1} + b_t: a_t = 1 − z_t, b_t = z_t ⊙ h̃_t
