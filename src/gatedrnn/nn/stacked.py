"""Many models as one: K units of the same kind and shape (differing in weights — learning rate, seed,
weight-noise draw) run as ONE program with a leading model dimension.

    stacked = StackedUnit("gru", K=10, input_size=88, hidden_size=46)      # or StackedUnit.from_units(units)
    out, h = stacked(x, lengths=lengths)     # x (K, B, T, I), lengths (K, B) or (B,) -> out (K, B, T, H)
    units = stacked.to_units()               # back to K independent gatedrnn.nn units

Parameters are stacked: weight_ih (K, G·H, I), weight_hh (K, G·H, H), bias (K, G·H), peephole (K, P, H);
`weight_noise` is a (K,) buffer of per-model stds. Model k computes exactly what the single unit
`to_units()[k]` computes on x[k] (outputs, final state, gradients), including weight noise: in training
mode, with no explicit `noise`, the noise is drawn from the global RNG model by model (W then U, models
with std 0 draw nothing) — the same draws K single units make when run one after the other.

The time loop is base.py's `recurrence` with K leading: on CPU the unit's fused kernel for all K models
in one call, elsewhere (CUDA, other dtypes, no compiler) the unit's own `cell()` on stacked tensors.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .base import RecurrentUnit, _map, recurrence
from .registry import UNITS, make_unit

_STACKABLE = {"weight_ih", "weight_hh", "bias", "peephole"}


class StackedUnit(nn.Module):
    """K recurrent units of one kind as stacked parameters. API:
    `StackedUnit(unit_name, K, input_size, hidden_size, batch_first=True, weight_noise=0.0 (float or K
    floats), fused=None, **the unit's options (its declaration's: reset_after, peepholes, forget_bias, ...))`,
    `forward(x, state=None, lengths=None, noise=None) -> (output, state)`, `from_units(list)`,
    `to_units()`."""

    @staticmethod
    def stackable(unit: RecurrentUnit) -> bool:
        """Can K units like this one be stacked? Only if every parameter is a stackable one (lstm-fgr's
        gate-recurrence matrix R is not: train_many trains such models one by one)."""
        return {n for n, _ in unit.named_parameters()} <= _STACKABLE

    def __init__(self, unit_name: str, K: int, input_size: int, hidden_size: int, batch_first: bool = True, *,
                 weight_noise: float | Sequence[float] = 0.0, fused: bool | None = None,
                 _units: list[RecurrentUnit] | None = None, **unit_kw):
        super().__init__()
        if not (isinstance(K, int) and K > 0):
            raise ValueError(f"K must be a positive integer, got {K!r}")
        if _units is None:
            # each model initialised exactly as a single unit would be (same RNG sequence)
            _units = [make_unit(unit_name, input_size=input_size, hidden_size=hidden_size, batch_first=batch_first,
                                **unit_kw)
                      for _ in range(K)]
        t = _units[0]
        if not StackedUnit.stackable(t):
            extra = {n for n, _ in t.named_parameters()} - _STACKABLE
            raise ValueError(f"StackedUnit stacks {sorted(_STACKABLE)}; {unit_name!r} also has {sorted(extra)}")
        self.unit_name = unit_name.lower()
        self.K, self.input_size, self.hidden_size, self.batch_first = K, input_size, hidden_size, batch_first
        self.unit_kw = dict(unit_kw)
        self.fused = fused
        # the template lends cell(), its kernel and the options; kept out of the module tree (its own
        # parameters are never used here)
        object.__setattr__(self, "template", t)
        st = lambda get: nn.Parameter(torch.stack([get(u).detach().clone() for u in _units]))
        self.weight_ih = st(lambda u: u.weight_ih)
        self.weight_hh = st(lambda u: u.weight_hh) if t.weight_hh is not None else None   # (minGRU: no U)
        self.bias = st(lambda u: u.bias)
        self.peephole = st(lambda u: u.peephole) if t.peephole is not None else None
        wn = [float(weight_noise)] * K if isinstance(weight_noise, (int, float)) else [float(w) for w in weight_noise]
        if len(wn) != K or any(w < 0 for w in wn):
            raise ValueError(f"weight_noise must be one std >= 0 or K={K} of them, got {weight_noise!r}")
        self.register_buffer("weight_noise", torch.tensor(wn, dtype=torch.float64))

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_units(cls, units: Sequence[RecurrentUnit], fused: bool | None = None) -> "StackedUnit":
        units = list(units)
        if not units:
            raise ValueError("from_units needs at least one unit")
        u0 = units[0]
        name = next(n for n, c in UNITS.items() if type(u0) is c)
        opts = cls._options(u0)
        for u in units[1:]:
            if type(u) is not type(u0) or (u.input_size, u.hidden_size, u.batch_first) != \
                    (u0.input_size, u0.hidden_size, u0.batch_first) or cls._options(u) != opts:
                raise ValueError("from_units: all units must have the same kind, sizes and options")
        obj = cls(name, K=len(units), input_size=u0.input_size, hidden_size=u0.hidden_size,
                  batch_first=u0.batch_first, weight_noise=[u.weight_noise for u in units], fused=fused,
                  _units=units, **opts)
        return obj.to(device=u0.weight_ih.device, dtype=u0.weight_ih.dtype)

    @staticmethod
    def _options(u: RecurrentUnit) -> dict:
        return dict(u.options)   # every option the unit's declaration gives it, with its value

    def to_units(self) -> list[RecurrentUnit]:
        """K independent single units holding copies of the stacked weights."""
        out = []
        for k in range(self.K):
            u = make_unit(self.unit_name, input_size=self.input_size, hidden_size=self.hidden_size,
                          batch_first=self.batch_first, weight_noise=float(self.weight_noise[k]), **self.unit_kw)
            u = u.to(device=self.weight_ih.device, dtype=self.weight_ih.dtype)
            with torch.no_grad():
                u.weight_ih.copy_(self.weight_ih[k])
                if self.weight_hh is not None:
                    u.weight_hh.copy_(self.weight_hh[k])
                u.bias.copy_(self.bias[k])
                if self.peephole is not None:
                    u.peephole.copy_(self.peephole[k])
            u.train(self.training)
            out.append(u)
        return out

    def extra_repr(self) -> str:
        return (f"{self.unit_name}, K={self.K}, {self.input_size}, {self.hidden_size}, "
                f"batch_first={self.batch_first}" + "".join(f", {k}={v}" for k, v in self.unit_kw.items()))

    # ------------------------------------------------------------------ forward
    def init_state(self, B: int, like: Tensor):
        return _map(lambda s: s.new_zeros(self.K, *s.shape), self.template.init_state(B, like))

    def noisy_weights(self, noise=None) -> tuple[Tensor, Tensor]:
        """W (K,G·H,I), U (K,G·H,H) for this pass. `noise`: None (training: draw per model, see the module
        doc), a list of K items (eps_W, eps_U) or None (additive, already scaled), or a pair of stacked
        additive tensors."""
        W, U = self.weight_ih, self.weight_hh
        if noise is None:
            if not self.training or not bool((self.weight_noise > 0).any()):
                return W, U
            noise = []
            for k in range(self.K):
                s = float(self.weight_noise[k])
                noise.append((s * torch.randn_like(W[k]), None if U is None else s * torch.randn_like(U[k]))
                             if s > 0 else None)
        if isinstance(noise, tuple) and len(noise) == 2 and isinstance(noise[0], Tensor):
            return W + noise[0], (U if U is None else U + noise[1])
        if any(n is not None for n in noise):
            zW = torch.zeros_like(W[0])
            W = W + torch.stack([n[0] if n is not None else zW for n in noise])
            if U is not None:                # (a unit without a recurrent matrix has no U and draws none)
                zU = torch.zeros_like(U[0])
                U = U + torch.stack([n[1] if n is not None else zU for n in noise])
        return W, U

    def forward(self, x: Tensor, state=None, lengths: Tensor | None = None, noise=None):
        """x: (K, B, T, I) if batch_first else (K, T, B, I). lengths: (K, B) or (B,) valid lengths.
        state: (K, B, H) — (h, c) for the LSTM — or None (zeros). Returns (output like x with H
        features, final state); model k equals the single unit k on x[k]."""
        if x.dim() != 4 or x.shape[0] != self.K or x.shape[3] != self.input_size:
            raise ValueError(f"expected x of shape (K={self.K}, ., ., {self.input_size}), got {tuple(x.shape)}")
        xt = x.transpose(1, 2) if self.batch_first else x          # (K, T, B, I)
        K, T, B, _ = xt.shape
        if state is None:
            state = self.init_state(B, xt)
        mask = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
            if lengths.dim() == 1:
                lengths = lengths.expand(K, B)
            if lengths.shape != (K, B) or int(lengths.max()) > T or int(lengths.min()) < 0:
                raise ValueError(f"lengths must have shape ({K}, {B}) or ({B},) with values in [0, {T}]")
            if int(lengths.min()) < T:
                mask = (torch.arange(T).view(1, T, 1) < lengths.unsqueeze(1)).to(xt.device)   # (K, T, B)
        W, U = self.noisy_weights(noise)
        out, state = recurrence(self.template, xt, state, mask, W, U, self.bias, self.peephole, fused=self.fused)
        return (out.transpose(1, 2) if self.batch_first else out), state


__all__ = ["StackedUnit"]
