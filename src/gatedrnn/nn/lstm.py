"""The LSTM as Chung et al. 2014 write it (eqs. 2-4; Graves 2013 with diagonal peepholes):

    i_t = σ(W_i x_t + U_i h_{t-1} + v_i ⊙ c_{t-1} + b_i)     input gate
    f_t = σ(W_f x_t + U_f h_{t-1} + v_f ⊙ c_{t-1} + b_f)     forget gate
    c̃_t = tanh(W_c x_t + U_c h_{t-1} + b_c)                  new memory content
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ c̃_t
    o_t = σ(W_o x_t + U_o h_{t-1} + v_o ⊙ c_t + b_o)         output gate: peeks at the CURRENT cell
    h_t = o_t ⊙ tanh(c_t)

The peepholes v_i, v_f, v_o are vectors (diagonal matrices). `peepholes=False` drops them (the
torch.nn.LSTM form, with one bias per gate). `forget_bias` initialises b_f (0 in the released code;
Jozefowicz et al. 2015 recommend 1).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import RecurrentUnit
from .declaration import Declaration


class LSTM(RecurrentUnit):
    """LSTM. API: `LSTM(input_size, hidden_size, batch_first=True, peepholes=True,
    forget_bias=0.0, weight_noise=0.0)`, `forward(x, state=None, lengths=None) -> (output, (h, c))`.
    Paper symbols: W_i, U_i, v_i, b_i, W_f, U_f, v_f, b_f, W_c, U_c, b_c, W_o, U_o, v_o, b_o."""

    # the LSTM kernel (kernels/lstm.cpp) computes cell() below exactly, with or without peepholes (the kernel's flag peepholes)
    declares = Declaration(gates=("i", "f", "c", "o"), peepholes=("i", "f", "o"),
                           options={"peepholes": True, "forget_bias": 0.0}, kernel="lstm")

    def reset_parameters(self) -> None:
        super().reset_parameters()
        fb = self.options.get("forget_bias", 0.0)   # (lstm-nfg has no forget gate, and takes no forget_bias)
        if fb:                                       # b_f starts at forget_bias, wherever f's block is
            H, k = self.hidden_size, self.gates.index("f")
            with torch.no_grad():
                self.bias[k * H:(k + 1) * H].fill_(fb)

    def init_state(self, batch: int, like: Tensor):
        z = like.new_zeros(batch, self.hidden_size)
        return (z, z.clone())

    @staticmethod
    def state_h(state) -> Tensor:
        return state[0]

    def cell(self, wx_t: Tensor, state, p: dict[str, Tensor]):
        h, c = state
        H = self.hidden_size
        # wx_t = [W_i x_t + b_i | W_f x_t + b_f | W_c x_t + b_c | W_o x_t + b_o], for all t at once
        Wx_i, Wx_f, Wx_c, Wx_o = (wx_t[..., k * H:(k + 1) * H] for k in range(4))
        peep = bool(self.peepholes)
        i = torch.sigmoid(Wx_i + h @ p["U_i"].mT + (p["v_i"] * c if peep else 0))  # i_t
        f = torch.sigmoid(Wx_f + h @ p["U_f"].mT + (p["v_f"] * c if peep else 0))  # f_t
        c_tilde = torch.tanh(Wx_c + h @ p["U_c"].mT)                                # c̃_t
        c = f * c + i * c_tilde                                                      # c_t
        o = torch.sigmoid(Wx_o + h @ p["U_o"].mT + (p["v_o"] * c if peep else 0))  # o_t peeks at c_t
        h = o * torch.tanh(c)                                                        # h_t
        self.observe(i=i, f=f, o=o)
        return (h, c)
