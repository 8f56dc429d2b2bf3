"""GRU ablations and the minimal gated unit, on the paper's GRU (gru.py: Chung et al. 2014 eqs. 5-8):

    z_t = σ(W_z x_t + U_z h_{t-1} + b_z)                 update gate
    r_t = σ(W_r x_t + U_r h_{t-1} + b_r)                 reset gate
    h̃_t = tanh(W x_t + U (r_t ⊙ h_{t-1}) + b)            candidate (reset BEFORE the product)
    h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

    gru-nrg  no reset gate:  h̃_t = tanh(W x_t + U h_{t-1} + b)              (no W_r, U_r, b_r)
    gru-nug  no update gate: h_t = h̃_t                                      (no W_z, U_z, b_z)
    gru-ra   reset after the product (Cho et al. 2014; cuDNN, torch.nn.GRU with one bias per block):
             h̃_t = tanh(W x_t + r_t ⊙ (U h_{t-1}) + b)  — the GRU with reset_after=True
    mgu      minimal gated unit (Zhou et al. 2016), one gate f doing both jobs:
             f_t = σ(W_f x_t + U_f h_{t-1} + b_f)
             h̃_t = tanh(W x_t + U (f_t ⊙ h_{t-1}) + b)
             h_t = (1 − f_t) ⊙ h_{t-1} + f_t ⊙ h̃_t

Each class declares itself once (`declares`, declaration.py). Storage: base.py's layout, one block per
entry of `gates` ("" = the candidate). gru-ra runs the GRU kernel (reset_after=True), gru-nrg the GRU
kernel with r_t = 1 (flag no_reset_gate), gru-nug and mgu the paper GRU kernel's two stages with one gate
block (flags no_update_gate, minimal). Parameter counts follow from the declarations (nn/counting.py).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import RecurrentUnit
from .declaration import Declaration, OptionError
from .gru import GRU
from .variant import Variant

σ, tanh = torch.sigmoid, torch.tanh


class GRUVariant(Variant, RecurrentUnit):
    """Base of gru-nrg, gru-nug and mgu. API: `Cls(input_size, hidden_size, batch_first=True,
    weight_noise=0.0, fused=None)`, `forward(x, state=None, lengths=None) -> (output, h)`."""


class GRUNoResetGate(GRUVariant):
    """gru-nrg: no reset gate. Paper symbols: W_z, U_z, b_z, W, U, b."""
    declares = Declaration(gates=("z", ""), kernel="gru", flags={"no_reset_gate": True})   # the GRU kernel, r_t = 1

    def cell(self, wx_t: Tensor, h: Tensor, p: dict[str, Tensor]) -> Tensor:
        Wx_z, Wx = self.blocks(wx_t)                        # W_z x_t + b_z, W x_t + b, for all t at once
        z = σ(Wx_z + h @ p["U_z"].mT)                       # z_t = σ(W_z x_t + U_z h_{t-1} + b_z)
        h_tilde = tanh(Wx + h @ p["U"].mT)                  # h̃_t = tanh(W x_t + U h_{t-1} + b)   (r_t = 1)
        self.observe(z=z)
        return (1 - z) * h + z * h_tilde                    # h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t


class GRUNoUpdateGate(GRUVariant):
    """gru-nug: no update gate. Paper symbols: W_r, U_r, b_r, W, U, b."""
    # fused: the paper GRU's two stages with z_t = 1
    declares = Declaration(gates=("r", ""), kernel="gru", flags={"no_update_gate": True})

    def cell(self, wx_t: Tensor, h: Tensor, p: dict[str, Tensor]) -> Tensor:
        Wx_r, Wx = self.blocks(wx_t)
        r = σ(Wx_r + h @ p["U_r"].mT)                       # r_t = σ(W_r x_t + U_r h_{t-1} + b_r)
        h_tilde = tanh(Wx + (r * h) @ p["U"].mT)            # h̃_t = tanh(W x_t + U (r_t ⊙ h_{t-1}) + b)
        self.observe(r=r)
        return h_tilde                                      # h_t = h̃_t                          (z_t = 1)


class GRUResetAfter(Variant, GRU):
    """gru-ra: the GRU with reset_after=True, h̃_t = tanh(W x_t + r_t ⊙ (U h_{t-1}) + b); its cell() is
    gru.py's, and so is its kernel (reset_after=True). Paper symbols: those of the GRU."""
    # the GRU kernel with its flag reset_after on; the option is accepted (True) so that code copying a
    # GRU's options can rebuild it
    declares = Declaration(gates=GRU.declares.gates, options={"reset_after": True}, kernel="gru")

    @classmethod
    def resolve_options(cls, **given) -> dict:
        options = super().resolve_options(**given)
        if not options["reset_after"]:
            raise OptionError("gru-ra is the GRU with reset_after=True; use 'gru' for reset_after=False")
        return options


class MGU(GRUVariant):
    """mgu: the minimal gated unit (Zhou et al. 2016). Symbols: W_f, U_f, b_f, W, U, b."""
    # fused: the paper GRU's two stages with r_t = z_t = f_t
    declares = Declaration(gates=("f", ""), kernel="gru", flags={"minimal": True})

    def cell(self, wx_t: Tensor, h: Tensor, p: dict[str, Tensor]) -> Tensor:
        Wx_f, Wx = self.blocks(wx_t)
        f = σ(Wx_f + h @ p["U_f"].mT)                       # f_t = σ(W_f x_t + U_f h_{t-1} + b_f)
        h_tilde = tanh(Wx + (f * h) @ p["U"].mT)            # h̃_t = tanh(W x_t + U (f_t ⊙ h_{t-1}) + b)
        self.observe(f=f)
        return (1 - f) * h + f * h_tilde                    # h_t = (1 − f_t) ⊙ h_{t-1} + f_t ⊙ h̃_t


GRU_VARIANTS: dict[str, type[RecurrentUnit]] = {c.name: c for c in (
    GRUNoResetGate, GRUNoUpdateGate, GRUResetAfter, MGU)}
