"""minLSTM (Feng et al. 2024, "Were RNNs All We Needed?", arXiv:2410.01201), the vanilla form — not the
log-space one:

    f_t = σ(W_f x_t + b_f)                              forget gate: reads only the input
    i_t = σ(W_i x_t + b_i)                              input gate: reads only the input
    h̃_t = W_h x_t + b_h                                 candidate: linear
    f'_t = f_t / (f_t + i_t)                            the gates normalised to sum to one,
    i'_t = i_t / (f_t + i_t)                            so the state's scale does not depend on time
    h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t

No cell state, no output gate, no recurrent matrix (`recurrent=False`): the state is the linear recurrence
h_t = a_t ⊙ h_{t−1} + b_t with a_t = f'_t, b_t = i'_t ⊙ h̃_t, computed for all steps at once (`coefficients`)
and run as a parallel scan (`scan=True`, nn/scan.py); `cell()` is the step the scan must equal (and what
tracing runs). Parameters by Table 1's convention: 3(I·n) + 3n.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import RecurrentUnit
from .declaration import Declaration

σ = torch.sigmoid


class MinLSTM(RecurrentUnit):
    """minLSTM. API: `MinLSTM(input_size, hidden_size, batch_first=True, weight_noise=0.0, fused=None)`,
    `forward(x, state=None, lengths=None) -> (output, h)` (the state is h alone). Paper symbols: W_f, b_f,
    W_i, b_i, W_h, b_h. `fused=False` runs cell() step by step instead of the scan."""

    declares = Declaration(gates=("f", "i", "h"), recurrent=False, scan=True, scan_kernel="minlstm")

    def cell(self, wx_t: Tensor, h: Tensor, p: dict[str, Tensor]) -> Tensor:
        Wx_f, Wx_i, Wx_h = wx_t.split(self.hidden_size, dim=-1)   # W_g x_t + b_g, for all t at once
        f = σ(Wx_f)                                         # f_t = σ(W_f x_t + b_f)
        i = σ(Wx_i)                                         # i_t = σ(W_i x_t + b_i)
        h_tilde = Wx_h                                      # h̃_t = W_h x_t + b_h
        f_n = f / (f + i)                                   # f'_t = f_t / (f_t + i_t)
        i_n = i / (f + i)                                   # i'_t = i_t / (f_t + i_t)
        self.observe(f=f, i=i)
        return f_n * h + i_n * h_tilde                      # h_t = f'_t ⊙ h_{t−1} + i'_t ⊙ h̃_t

    def coefficients(self, gates: tuple[Tensor, Tensor, Tensor], p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        Wx_f, Wx_i, Wx_h = gates                            # W_g x_t + b_g: every step at once
        f, i = σ(Wx_f), σ(Wx_i)
        return f / (f + i), i / (f + i) * Wx_h              # a_t = f'_t, b_t = i'_t ⊙ h̃_t
