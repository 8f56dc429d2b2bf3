"""The LSTM ablations of Greff et al. 2015 ("LSTM: A Search Space Odyssey"), applied to the paper's
peephole LSTM (lstm.py: Chung et al. 2014 eqs. 2-4, Graves 2013):

    i_t = σ(W_i x_t + U_i h_{t-1} + v_i ⊙ c_{t-1} + b_i)      input gate
    f_t = σ(W_f x_t + U_f h_{t-1} + v_f ⊙ c_{t-1} + b_f)      forget gate
    c̃_t = tanh(W_c x_t + U_c h_{t-1} + b_c)                   new memory content (input activation)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ c̃_t
    o_t = σ(W_o x_t + U_o h_{t-1} + v_o ⊙ c_t + b_o)          output gate (peeks at the current cell)
    h_t = o_t ⊙ tanh(c_t)                                     (output activation)

    lstm-nig   no input gate:        i_t = 1                       (no W_i, U_i, v_i, b_i)
    lstm-nfg   no forget gate:       f_t = 1                       (no W_f, U_f, v_f, b_f)
    lstm-nog   no output gate:       o_t = 1, h_t = tanh(c_t)      (no W_o, U_o, v_o, b_o)
    lstm-niaf  no input activation:  c̃_t = W_c x_t + U_c h_{t-1} + b_c
    lstm-noaf  no output activation: h_t = o_t ⊙ c_t
    lstm-np    no peepholes (the torch.nn.LSTM form, one bias per gate)
    lstm-cifg  coupled input and forget gate: i_t = 1 − f_t        (no W_i, U_i, v_i, b_i)
    lstm-fgr   full gate recurrence: each gate g ∈ {i, f, o} also receives i_{t-1}, f_{t-1}, o_{t-1}:
                   g_t = σ(… + R_{gi} i_{t-1} + R_{gf} f_{t-1} + R_{go} o_{t-1})
               nine n×n matrices R_{gk} (paper_weights keys "R_ii", "R_if", …, "R_oo": first subscript the
               RECEIVING gate, like U_g, second the previous step's SOURCE gate); i_0 = f_0 = o_0 = 0
    lstm-fb1   the full unit with the forget-gate bias initialised to 1 (Gers et al. 2000, Jozefowicz
               et al. 2015) instead of the released code's 0

Each class declares itself once (`declares`, declaration.py): its gates, peepholes, options and kernel.
Fused kernels: every variant declares the LSTM kernel (lstm-np and lstm-fb1: the LSTM's equations
without / with peepholes; the others: a change of the elementwise pass, the declaration's `flags`;
lstm-fgr: the flag `gate_recurrence`, one more GEMM per step on the previous gates, with R and the gate
state passed through `kernel_inputs` / `kernel_state`; docs/VARIANTS.md).

Storage (base.py's layout): `weight_ih`/`weight_hh`/`bias` hold one block per entry of `gates` (in that
order), `peephole` one row per entry of `peepholes`; lstm-fgr declares one more matrix, `weight_gate`
(3n, 3n) = [R_{gk}] with row blocks g and column blocks k both in the order (i, f, o). Parameter counts
follow from the declarations (nn/counting.py).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .declaration import Declaration, OptionError
from .lstm import LSTM
from .variant import Variant

σ, tanh = torch.sigmoid, torch.tanh


# The option of every LSTM variant with a forget gate: b_f's initial value (lstm-fb1's default is 1).
FORGET_BIAS = {"forget_bias": 0.0}
GATES, PEEPHOLES = LSTM.declares.gates, LSTM.declares.peepholes   # the full unit's: i, f, c, o; i, f, o


class LSTMVariant(Variant, LSTM):
    """Base of the LSTM ablations. API: `Cls(input_size, hidden_size, batch_first=True, forget_bias=…,
    weight_noise=0.0, fused=None)`, `forward(x, state=None, lengths=None) -> (output, (h, c))`.
    The gates and peepholes are fixed by the class's declaration (no `peepholes=` option); `forget_bias`
    initialises b_f (default: the class's, 0 except lstm-fb1; lstm-nfg, without a forget gate, takes none)."""

    @classmethod
    def resolve_options(cls, **given) -> dict:
        if "forget_bias" in given and "f" not in cls.declares.gates:   # say why, not only that
            raise OptionError(f"{cls.name} has no forget gate, so it takes no forget_bias")
        return super().resolve_options(**given)


class LSTMNoInputGate(LSTMVariant):
    """lstm-nig: i_t = 1. Paper symbols: W_f, U_f, v_f, b_f, W_c, U_c, b_c, W_o, U_o, v_o, b_o."""
    declares = Declaration(gates=("f", "c", "o"), peepholes=("f", "o"), options=FORGET_BIAS,
                           kernel="lstm", flags={"no_input_gate": True})   # fused (kernels.VARIANT_BITS)

    def cell(self, wx_t: Tensor, state, p: dict[str, Tensor]):
        h, c = state
        Wx_f, Wx_c, Wx_o = self.blocks(wx_t)                         # W_g x_t + b_g, for all t at once
        f = σ(Wx_f + h @ p["U_f"].mT + p["v_f"] * c)                 # f_t = σ(W_f x_t + U_f h_{t-1} + v_f ⊙ c_{t-1} + b_f)
        c_tilde = tanh(Wx_c + h @ p["U_c"].mT)                       # c̃_t = tanh(W_c x_t + U_c h_{t-1} + b_c)
        c = f * c + c_tilde                                          # c_t = f_t ⊙ c_{t-1} + c̃_t      (i_t = 1)
        o = σ(Wx_o + h @ p["U_o"].mT + p["v_o"] * c)                 # o_t = σ(W_o x_t + U_o h_{t-1} + v_o ⊙ c_t + b_o)
        h = o * tanh(c)                                              # h_t = o_t ⊙ tanh(c_t)
        self.observe(f=f, o=o)
        return (h, c)


class LSTMNoForgetGate(LSTMVariant):
    """lstm-nfg: f_t = 1. Paper symbols: W_i, U_i, v_i, b_i, W_c, U_c, b_c, W_o, U_o, v_o, b_o."""
    declares = Declaration(gates=("i", "c", "o"), peepholes=("i", "o"),
                           kernel="lstm", flags={"no_forget_gate": True})   # fused (kernels.VARIANT_BITS)

    def cell(self, wx_t: Tensor, state, p: dict[str, Tensor]):
        h, c = state
        Wx_i, Wx_c, Wx_o = self.blocks(wx_t)
        i = σ(Wx_i + h @ p["U_i"].mT + p["v_i"] * c)                 # i_t = σ(W_i x_t + U_i h_{t-1} + v_i ⊙ c_{t-1} + b_i)
        c_tilde = tanh(Wx_c + h @ p["U_c"].mT)                       # c̃_t = tanh(W_c x_t + U_c h_{t-1} + b_c)
        c = c + i * c_tilde                                          # c_t = c_{t-1} + i_t ⊙ c̃_t      (f_t = 1)
        o = σ(Wx_o + h @ p["U_o"].mT + p["v_o"] * c)                 # o_t = σ(W_o x_t + U_o h_{t-1} + v_o ⊙ c_t + b_o)
        h = o * tanh(c)                                              # h_t = o_t ⊙ tanh(c_t)
        self.observe(i=i, o=o)
        return (h, c)


class LSTMNoOutputGate(LSTMVariant):
    """lstm-nog: o_t = 1. Paper symbols: W_i, U_i, v_i, b_i, W_f, U_f, v_f, b_f, W_c, U_c, b_c."""
    declares = Declaration(gates=("i", "f", "c"), peepholes=("i", "f"), options=FORGET_BIAS,
                           kernel="lstm", flags={"no_output_gate": True})   # fused (kernels.VARIANT_BITS)

    def cell(self, wx_t: Tensor, state, p: dict[str, Tensor]):
        h, c = state
        Wx_i, Wx_f, Wx_c = self.blocks(wx_t)
        i = σ(Wx_i + h @ p["U_i"].mT + p["v_i"] * c)                 # i_t = σ(W_i x_t + U_i h_{t-1} + v_i ⊙ c_{t-1} + b_i)
        f = σ(Wx_f + h @ p["U_f"].mT + p["v_f"] * c)                 # f_t = σ(W_f x_t + U_f h_{t-1} + v_f ⊙ c_{t-1} + b_f)
        c_tilde = tanh(Wx_c + h @ p["U_c"].mT)                       # c̃_t = tanh(W_c x_t + U_c h_{t-1} + b_c)
        c = f * c + i * c_tilde                                      # c_t = f_t ⊙ c_{t-1} + i_t ⊙ c̃_t
        h = tanh(c)                                                  # h_t = tanh(c_t)               (o_t = 1)
        self.observe(i=i, f=f)
        return (h, c)


class LSTMNoInputActivation(LSTMVariant):
    """lstm-niaf: c̃_t is linear. Paper symbols: those of the LSTM."""
    declares = Declaration(gates=GATES, peepholes=PEEPHOLES, options=FORGET_BIAS,
                           kernel="lstm", flags={"no_input_activation": True})   # fused (kernels.VARIANT_BITS)

    def cell(self, wx_t: Tensor, state, p: dict[str, Tensor]):
        h, c = state
        Wx_i, Wx_f, Wx_c, Wx_o = self.blocks(wx_t)
        i = σ(Wx_i + h @ p["U_i"].mT + p["v_i"] * c)                 # i_t = σ(W_i x_t + U_i h_{t-1} + v_i ⊙ c_{t-1} + b_i)
        f = σ(Wx_f + h @ p["U_f"].mT + p["v_f"] * c)                 # f_t = σ(W_f x_t + U_f h_{t-1} + v_f ⊙ c_{t-1} + b_f)
        c_tilde = Wx_c + h @ p["U_c"].mT                             # c̃_t = W_c x_t + U_c h_{t-1} + b_c   (no tanh)
        c = f * c + i * c_tilde                                      # c_t = f_t ⊙ c_{t-1} + i_t ⊙ c̃_t
        o = σ(Wx_o + h @ p["U_o"].mT + p["v_o"] * c)                 # o_t = σ(W_o x_t + U_o h_{t-1} + v_o ⊙ c_t + b_o)
        h = o * tanh(c)                                              # h_t = o_t ⊙ tanh(c_t)
        self.observe(i=i, f=f, o=o)
        return (h, c)


class LSTMNoOutputActivation(LSTMVariant):
    """lstm-noaf: h_t = o_t ⊙ c_t. Paper symbols: those of the LSTM."""
    declares = Declaration(gates=GATES, peepholes=PEEPHOLES, options=FORGET_BIAS,
                           kernel="lstm", flags={"no_output_activation": True})   # fused (kernels.VARIANT_BITS)

    def cell(self, wx_t: Tensor, state, p: dict[str, Tensor]):
        h, c = state
        Wx_i, Wx_f, Wx_c, Wx_o = self.blocks(wx_t)
        i = σ(Wx_i + h @ p["U_i"].mT + p["v_i"] * c)                 # i_t = σ(W_i x_t + U_i h_{t-1} + v_i ⊙ c_{t-1} + b_i)
        f = σ(Wx_f + h @ p["U_f"].mT + p["v_f"] * c)                 # f_t = σ(W_f x_t + U_f h_{t-1} + v_f ⊙ c_{t-1} + b_f)
        c_tilde = tanh(Wx_c + h @ p["U_c"].mT)                       # c̃_t = tanh(W_c x_t + U_c h_{t-1} + b_c)
        c = f * c + i * c_tilde                                      # c_t = f_t ⊙ c_{t-1} + i_t ⊙ c̃_t
        o = σ(Wx_o + h @ p["U_o"].mT + p["v_o"] * c)                 # o_t = σ(W_o x_t + U_o h_{t-1} + v_o ⊙ c_t + b_o)
        h = o * c                                                    # h_t = o_t ⊙ c_t               (no tanh)
        self.observe(i=i, f=f, o=o)
        return (h, c)


class LSTMNoPeepholes(LSTMVariant):
    """lstm-np: no v_i, v_f, v_o. Paper symbols: W_i, U_i, b_i, W_f, U_f, b_f, W_c, U_c, b_c, W_o, U_o, b_o.
    Fused: the LSTM kernel without peepholes computes cell() below."""
    declares = Declaration(gates=GATES, options=FORGET_BIAS, kernel="lstm")   # kernel flag peepholes=False

    def cell(self, wx_t: Tensor, state, p: dict[str, Tensor]):
        h, c = state
        Wx_i, Wx_f, Wx_c, Wx_o = self.blocks(wx_t)
        i = σ(Wx_i + h @ p["U_i"].mT)                                # i_t = σ(W_i x_t + U_i h_{t-1} + b_i)
        f = σ(Wx_f + h @ p["U_f"].mT)                                # f_t = σ(W_f x_t + U_f h_{t-1} + b_f)
        c_tilde = tanh(Wx_c + h @ p["U_c"].mT)                       # c̃_t = tanh(W_c x_t + U_c h_{t-1} + b_c)
        c = f * c + i * c_tilde                                      # c_t = f_t ⊙ c_{t-1} + i_t ⊙ c̃_t
        o = σ(Wx_o + h @ p["U_o"].mT)                                # o_t = σ(W_o x_t + U_o h_{t-1} + b_o)
        h = o * tanh(c)                                              # h_t = o_t ⊙ tanh(c_t)
        self.observe(i=i, f=f, o=o)
        return (h, c)


class LSTMCoupledGates(LSTMVariant):
    """lstm-cifg: i_t = 1 − f_t. Paper symbols: W_f, U_f, v_f, b_f, W_c, U_c, b_c, W_o, U_o, v_o, b_o."""
    declares = Declaration(gates=("f", "c", "o"), peepholes=("f", "o"), options=FORGET_BIAS,
                           kernel="lstm", flags={"coupled_input_forget": True})   # fused (kernels.VARIANT_BITS)

    def cell(self, wx_t: Tensor, state, p: dict[str, Tensor]):
        h, c = state
        Wx_f, Wx_c, Wx_o = self.blocks(wx_t)
        f = σ(Wx_f + h @ p["U_f"].mT + p["v_f"] * c)                 # f_t = σ(W_f x_t + U_f h_{t-1} + v_f ⊙ c_{t-1} + b_f)
        i = 1 - f                                                    # i_t = 1 − f_t
        c_tilde = tanh(Wx_c + h @ p["U_c"].mT)                       # c̃_t = tanh(W_c x_t + U_c h_{t-1} + b_c)
        c = f * c + i * c_tilde                                      # c_t = f_t ⊙ c_{t-1} + i_t ⊙ c̃_t
        o = σ(Wx_o + h @ p["U_o"].mT + p["v_o"] * c)                 # o_t = σ(W_o x_t + U_o h_{t-1} + v_o ⊙ c_t + b_o)
        h = o * tanh(c)                                              # h_t = o_t ⊙ tanh(c_t)
        self.observe(f=f, i=i, o=o)
        return (h, c)


class LSTMFullGateRecurrence(LSTMVariant):
    """lstm-fgr: every gate also sees the previous step's gates. State: (h, c, i, f, o) — the previous
    gate activations are carried (zeros at t = 0; a padded step carries them like h and c); `state_h` is
    h. Paper symbols: those of the LSTM plus R_ii, R_if, R_io, R_fi, R_ff, R_fo, R_oi, R_of, R_oo (R_gk:
    k_{t-1} into gate g), stored as `weight_gate` (3n, 3n), initialised like every recurrent block
    (orthogonal per n×n block) and given the same weight noise as U.

    Fused: the LSTM kernel with the flag `gate_recurrence` (gatedrnn.kernels) computes cell() below: after
    U h_{t-1} it adds R [i;f;o]_{t-1} to the pre-activations of i, f, o (one more GEMM per step), and
    backward carries dL/d[i;f;o] to the previous step through Rᵀ. `kernel_inputs` hands the kernel R (this
    pass's, with its weight noise) and the gate state [i | f | o]; `kernel_state` splits the final one."""
    declares = Declaration(gates=GATES, peepholes=PEEPHOLES, extra={"weight_gate": (3, 3)},   # R_gk, below
                           options=FORGET_BIAS, kernel="lstm", flags={"gate_recurrence": True})
    sources = ("i", "f", "o")
    _pass_R: Tensor | None = None   # this forward's R (with its weight noise), between noisy_weights and the end

    def _gate_symbols(self, R: Tensor) -> dict[str, Tensor]:
        H = self.hidden_size
        return {f"R_{g}{k}": R[..., a * H:(a + 1) * H, b * H:(b + 1) * H]
                for a, g in enumerate(self.sources) for b, k in enumerate(self.sources)}

    def _symbols(self, W, U, b, v):
        R = self._pass_R if self._pass_R is not None else self.weight_gate
        return {**super()._symbols(W, U, b, v), **self._gate_symbols(R)}

    def paper_weights(self) -> dict[str, Tensor]:
        return {**super().paper_weights(), **self._gate_symbols(self.weight_gate.detach())}

    def noisy_weights(self) -> tuple[Tensor, Tensor]:
        W, U = super().noisy_weights()                       # draws W's noise, then U's
        R = self.weight_gate
        if self.training and self.weight_noise > 0:
            R = R + self.weight_noise * torch.randn_like(R)  # then R's: a recurrent matrix like U
        object.__setattr__(self, "_pass_R", R)               # used by _symbols during this forward
        return W, U

    def forward(self, x, state=None, lengths=None):
        try:
            return super().forward(x, state, lengths)
        finally:
            object.__setattr__(self, "_pass_R", None)

    def init_state(self, batch: int, like: Tensor):
        z = like.new_zeros(batch, self.hidden_size)
        return (z, z.clone(), z.clone(), z.clone(), z.clone())   # h_0, c_0, i_0, f_0, o_0

    def kernel_inputs(self, state):
        """(h, c, i, f, o) (leading model dim K) -> h0, c0 and the gate recurrence's R (K, 3n, 3n) and
        g0 = [i | f | o] (K, B, 3n). R is this pass's (`_pass_R`: with weight noise) or the parameter; one
        (3n, 3n) R serves all K models (as cell() broadcasts it)."""
        h, c, i, f, o = state
        R = self._pass_R if self._pass_R is not None else self.weight_gate
        if R.dim() == 2:
            R = R.expand(h.shape[0], -1, -1)
        return h, c, {"R": R, "g0": torch.cat((i, f, o), -1)}

    def kernel_state(self, final):
        hT, cT, gT = final
        i, f, o = gT.split(self.hidden_size, -1)
        return (hT, cT, i, f, o)

    def cell(self, wx_t: Tensor, state, p: dict[str, Tensor]):
        h, c, i_, f_, o_ = state                                     # i_, f_, o_ = i_{t-1}, f_{t-1}, o_{t-1}
        Wx_i, Wx_f, Wx_c, Wx_o = self.blocks(wx_t)
        i = σ(Wx_i + h @ p["U_i"].mT + p["v_i"] * c + i_ @ p["R_ii"].mT + f_ @ p["R_if"].mT + o_ @ p["R_io"].mT)  # i_t
        f = σ(Wx_f + h @ p["U_f"].mT + p["v_f"] * c + i_ @ p["R_fi"].mT + f_ @ p["R_ff"].mT + o_ @ p["R_fo"].mT)  # f_t
        c_tilde = tanh(Wx_c + h @ p["U_c"].mT)                       # c̃_t = tanh(W_c x_t + U_c h_{t-1} + b_c)
        c = f * c + i * c_tilde                                      # c_t = f_t ⊙ c_{t-1} + i_t ⊙ c̃_t
        o = σ(Wx_o + h @ p["U_o"].mT + p["v_o"] * c + i_ @ p["R_oi"].mT + f_ @ p["R_of"].mT + o_ @ p["R_oo"].mT)  # o_t
        h = o * tanh(c)                                              # h_t = o_t ⊙ tanh(c_t)
        self.observe(i=i, f=f, o=o)
        return (h, c, i, f, o)


class LSTMForgetBias1(LSTMVariant):
    """lstm-fb1: the paper's LSTM with b_f initialised to 1 (its equations unchanged, so the LSTM kernel
    with peepholes runs it). Paper symbols: those of the LSTM."""
    declares = Declaration(gates=GATES, peepholes=PEEPHOLES, options={"forget_bias": 1.0},
                           kernel="lstm")   # the LSTM kernel with peepholes
    cell = LSTM.cell


LSTM_VARIANTS: dict[str, type[LSTMVariant]] = {c.name: c for c in (
    LSTMNoInputGate, LSTMNoForgetGate, LSTMNoOutputGate, LSTMNoInputActivation, LSTMNoOutputActivation,
    LSTMNoPeepholes, LSTMCoupledGates, LSTMFullGateRecurrence, LSTMForgetBias1)}
