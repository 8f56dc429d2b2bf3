"""The machinery every recurrent unit shares: parameters, initialisation, weight noise,
variable-length batches, and the loop over time.

Each unit declares what it is made of once, on its class (`declares`, declaration.py), and this file
builds it from that declaration. It stores its weights as a few concatenated tensors —
`weight_ih` (G·H, I) holding W for every gate, `weight_hh` (G·H, H) holding U, `bias` (G·H,)
holding b — because that is the layout a fast kernel wants (one GEMM for the input projection
over all time steps, one per step for the recurrence). The paper's symbols are slices of these
tensors: `paper_weights()` hands them out by name, as views, so writing into `W_z` changes the
module. The readable equations live in each unit's `cell()`; this file only runs them.

`recurrence()` below is THE loop over time, for one unit or for K models of one kind stacked on a
leading model dimension (`StackedUnit`, stacked.py): the fused C++ kernel (gatedrnn.kernels) when the
unit declares one and `kernels.fused_path` says it applies; for a unit that declares `scan=True` (a linear
recurrence without a recurrent matrix: minGRU, minLSTM) one matrix product over all steps and a parallel
scan (`RecurrentUnit.scan`, nn/scan.py); else `RecurrentUnit.reference`, the unit's `cell()` step by step.
A unit that declares `recurrent=False` holds no `weight_hh` (None, like `peephole` without peepholes).
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence, pack_padded_sequence

from .. import kernels
from ..units import registered_name
from . import dispatch, gemm
from .declaration import Declaration, check_sizes


class RecurrentUnit(nn.Module):
    """Base class: a single recurrent layer run over a whole sequence.

    Subclasses declare themselves once, `declares = Declaration(...)` (declaration.py: gate blocks,
    peepholes, extra matrices, options, kernel and flags) and implement `cell(wx_t, state, p)`. A built-in
    unit's `name` and `family` (the paper unit a variant modifies) are its entry in gatedrnn.units; a unit
    of one's own sets `name` (and `family`) itself. Every unit has the same API:
    `Unit(input_size, hidden_size, batch_first=True, *, weight_noise=0.0, fused=None, **its options)`.
    """

    name: str = ""
    family: str = ""
    declares: Declaration | None = None

    def __init_subclass__(cls, **kw):
        # a built-in unit is named once, in gatedrnn.units (torch-free, so configs and studies read the names)
        super().__init_subclass__(**kw)
        entry = registered_name(cls.__module__, cls.__qualname__)
        if entry is not None:
            cls.name, cls.family = entry

    def __init__(self, input_size: int, hidden_size: int, batch_first: bool = True, *,
                 weight_noise: float = 0.0, fused: bool | None = None, **options):
        super().__init__()
        input_size, hidden_size = check_sizes(input_size, hidden_size, weight_noise)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.batch_first = batch_first
        self.weight_noise = float(weight_noise)
        # None = use the fused kernel when one applies; False = always the reference loop.
        self.fused = fused
        self.options = type(self).resolve_options(**options)      # every option it takes, with its value
        self.declared = type(self).declares.with_options(self.options)   # the declaration as built
        self.gates, self.peepholes = self.declared.gates, self.declared.peepholes
        for k, v in self.options.items():   # reset_after, forget_bias: read by cell() / reset_parameters()
            if k != "peepholes":            # (that one is the tuple above: which gates have one)
                setattr(self, k, v)
        G, H = len(self.gates), hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G * H, input_size))
        if self.declared.recurrent:
            self.weight_hh = nn.Parameter(torch.empty(G * H, H))
        else:                                   # no recurrent matrix (minGRU, minLSTM)
            self.register_parameter("weight_hh", None)
        self.bias = nn.Parameter(torch.empty(G * H))
        if self.peepholes:
            self.peephole = nn.Parameter(torch.empty(len(self.peepholes), H))
        else:
            self.register_parameter("peephole", None)
        for k, (r, c) in self.declared.extra.items():
            self.register_parameter(k, nn.Parameter(torch.empty(r * H, c * H)))
        self.reset_parameters()

    @classmethod
    def resolve_options(cls, **given) -> dict:
        """Every option this unit takes, with its value: the declared defaults updated by `given`. An
        option it does not take is refused (OptionError: a TypeError and a ValueError); a unit that
        refuses some values too (gru-ra: reset_after=False) checks them here."""
        if cls.declares is None:
            raise TypeError(f"{cls.__name__} declares nothing: set `declares = Declaration(...)`")
        return cls.declares.resolve(cls.name or cls.__name__, given)

    # ------------------------------------------------------------------ init
    def reset_parameters(self) -> None:
        """Initialisation of the authors' released code: input matrices U(-0.1, 0.1),
        each recurrent block (one H x H matrix per gate, and each block of the extra matrices) orthogonal,
        biases 0. Peepholes (not specified there) start at 0."""
        H = self.hidden_size
        with torch.no_grad():
            nn.init.uniform_(self.weight_ih, -0.1, 0.1)
            for g in range(len(self.gates) if self.weight_hh is not None else 0):
                nn.init.orthogonal_(self.weight_hh[g * H:(g + 1) * H])
            for k, (rows, cols) in self.declared.extra.items():   # like U: one orthogonal H×H block at a time
                M = getattr(self, k)
                for r in range(rows):
                    for c in range(cols):
                        nn.init.orthogonal_(M[r * H:(r + 1) * H, c * H:(c + 1) * H])
            self.bias.zero_()
            if self.peephole is not None:
                self.peephole.zero_()

    # ------------------------------------------------------------ paper view
    def _symbols(self, W: Tensor, U: Tensor | None, b: Tensor, v: Tensor | None) -> dict[str, Tensor]:
        H = self.hidden_size
        out: dict[str, Tensor] = {}
        # Slices on the trailing dims, so the same code serves stacked weights with a leading model
        # dimension (StackedUnit, stacked.py): W (..., G·H, I), U (..., G·H, H), b (..., G·H), v (..., 3, H).
        for g, name in enumerate(self.gates):
            sfx = f"_{name}" if name else ""
            out["W" + sfx] = W[..., g * H:(g + 1) * H, :]
            if U is not None:                   # (a unit without a recurrent matrix has no U_g)
                out["U" + sfx] = U[..., g * H:(g + 1) * H, :]
            if v is not None and name in self.peepholes:
                out["v" + sfx] = v.select(-2, self.peepholes.index(name))
            out["b" + sfx] = b[..., g * H:(g + 1) * H]
        return out

    def paper_weights(self) -> dict[str, Tensor]:
        """The parameters named by the paper's symbols (W_z, U_z, b_z, ..., v_o), as views:
        `W: (hidden, input)`, `U: (hidden, hidden)`, `v, b: (hidden,)`. They share storage with
        the module (detached from autograd), so `unit.paper_weights()["U_r"].copy_(M)` changes
        the unit."""
        v = self.peephole.detach() if self.peephole is not None else None
        U = self.weight_hh.detach() if self.weight_hh is not None else None
        return self._symbols(self.weight_ih.detach(), U, self.bias.detach(), v)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, batch_first={self.batch_first}"
        if self.weight_noise:
            s += f", weight_noise={self.weight_noise}"
        defaults = type(self).declares.options
        return s + "".join(f", {k}={v}" for k, v in self.options.items() if v != defaults[k])

    # ------------------------------------------------------------- contract
    def init_state(self, batch: int, like: Tensor):
        return like.new_zeros(batch, self.hidden_size)

    def cell(self, wx_t: Tensor, state, p: dict[str, Tensor]):
        """One time step. `wx_t` holds W_g x_t + b_g for every gate g (shape (B, G·H)),
        computed for all steps at once; `p` holds the paper's symbols. Returns the new state."""
        raise NotImplementedError

    @staticmethod
    def state_h(state) -> Tensor:
        return state

    # --------------------------------------------------------------- tracing
    _trace: list | None = None

    @contextlib.contextmanager
    def trace(self):
        """Record the gate activations of every step (gatedrnn.analysis): `with unit.trace() as steps:
        unit(x)` gives steps[t] = {gate: (K, B, H)} (K = 1: the loop's model dimension), reported by the
        cells themselves (`observe`). Runs the reference loop while tracing: the kernels keep no gates."""
        steps, fused = [], self.fused
        self._trace, self.fused = steps, False
        try:
            yield steps
        finally:
            self._trace, self.fused = None, fused

    def observe(self, **gates: Tensor) -> None:
        """Called by cell() with its gates; records them while tracing, else does nothing."""
        if self._trace is not None:
            self._trace.append({k: v.detach() for k, v in gates.items()})

    # ---------------------------------------------------------------- kernel
    def kernel_spec(self) -> tuple[str, dict[str, bool]] | None:
        """(kind, flags) of the fused kernel computing this unit's equations, or None (reference loop): the
        declaration's. Only the class that declares it and the subclasses that keep its equations get it: a
        subclass overriding cell(), reference(), state_h(), init_state(), kernel_inputs() or
        kernel_state() computes something the kernel does not know, so it runs its own reference loop. So
        does a unit whose flags, with its options, ask for a combination the kernel does not compute
        (`kernels.supports`; e.g. a GRU ablation with reset_after=True)."""
        kind = _declared_kernel(type(self))
        if kind is None:
            return None
        flags = self.declared.kernel_flags()
        return (kind, flags) if kernels.supports(kind, flags) else None

    def kernel_flags(self) -> dict[str, bool]:
        """The flags of the declared kernel for this unit (`Declaration.kernel_flags`); {} without one."""
        return self.declared.kernel_flags() if self.declared.kernel else {}

    def path(self) -> str:
        """"fused", "scan" or "reference": the path a forward of this unit takes on inputs like its weights
        (what `recurrence` runs; `gatedrnn.kernels.fused_path` decides whether a kernel runs, the unit's
        declaration `scan` whether the parallel scan does)."""
        if _declared_scan(type(self)) and self.fused is not False:
            return "scan"
        spec = self.kernel_spec()
        fused = kernels.fused_path(spec and spec[0], self.weight_ih, self.weight_hh, self.bias, self.peephole,
                                   fused=self.fused)
        return "fused" if fused else "reference"

    def kernel_inputs(self, state) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
        """The loop's state (leading model dim K) as operands of `gatedrnn.kernels.recurrence`: (h0, c0 or
        None, extra keyword tensors). The paper units: h or (h, c), no extras; a unit whose kernel takes
        more (lstm-fgr: the gate recurrence R and the gate state) overrides this and `kernel_state`."""
        h0, c0 = state if isinstance(state, tuple) else (state, None)
        return h0, c0, {}

    def kernel_state(self, final: tuple):
        """The kernel's final state (hT, cT or None, *extra results) as the loop's state."""
        hT, cT = final[0], final[1]
        return hT if cT is None else (hT, cT)

    # ----------------------------------------------------------- weight noise
    def noisy_weights(self) -> tuple[Tensor, Tensor]:
        """W and U for this forward pass. In training with weight_noise > 0, additive Gaussian
        noise (Graves 2011; std 0.075 in the paper) is drawn afresh for the input and recurrent
        matrices — not the biases or peepholes, as in the released code. The gradient flows to the
        clean weights (d(W+eps)/dW = I)."""
        W, U = self.weight_ih, self.weight_hh
        if self.training and self.weight_noise > 0:
            W = W + self.weight_noise * torch.randn_like(W)
            if U is not None:                   # (None: a unit without a recurrent matrix)
                U = U + self.weight_noise * torch.randn_like(U)
        return W, U

    # ---------------------------------------------------------------- forward
    def forward(self, x, state=None, lengths: Tensor | None = None):
        """Run the unit over a batch of sequences.

        x: (B, T, I) if batch_first else (T, B, I), or a PackedSequence.
        state: initial state, h (B, H) — or (h, c) for the LSTM; zeros if None.
        lengths: (B,) valid lengths for a padded batch. Steps t >= lengths[b] leave the state of
            sequence b untouched and output zeros there, so padding never leaks into the state.
        Returns (output, state): output holds every h_t, shaped like x (or a PackedSequence);
        state is the state after each sequence's last valid step.
        """
        packed = isinstance(x, PackedSequence)
        if packed:
            x, lengths = pad_packed_sequence(x, batch_first=False)
            xt = x
        else:
            if x.dim() != 3:
                raise ValueError(f"expected a 3-d input (batch, time, features), got shape {tuple(x.shape)}")
            xt = x.transpose(0, 1) if self.batch_first else x
        T, B, I = xt.shape
        if I != self.input_size:
            raise ValueError(f"input has {I} features, the unit expects input_size={self.input_size}")
        if state is None:
            state = self.init_state(B, xt)
        mask = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
            if lengths.shape != (B,):
                raise ValueError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
            if int(lengths.max()) > T or int(lengths.min()) < 0:
                raise ValueError(f"lengths must lie in [0, {T}], got {lengths.tolist()}")
            if int(lengths.min()) < T:
                mask = (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).to(xt.device)  # (T, B)

        W, U = self.noisy_weights()
        out, state = recurrence(self, xt, state, mask, W, U, fused=self.fused)

        if packed:
            return pack_padded_sequence(out, lengths, enforce_sorted=False), state
        return (out.transpose(0, 1) if self.batch_first else out), state

    def reference(self, xt: Tensor, state, mask: Tensor | None, W: Tensor, U: Tensor, b: Tensor,
                  v: Tensor | None):
        """The readable path, on a leading model dimension K (K = 1 for a single unit): the input
        projection W x_t + b is done once for all steps (one batched GEMM), then `cell()` runs the
        paper's equations step by step (its matmuls batched over the K models). Shapes as in
        `recurrence`'s stacked form; returns (out (K, T, B, H), final state)."""
        K, T, B, I = xt.shape
        # v_g (K, 1, H): one peephole vector per model, broadcast over the batch rows
        p = self._symbols(W, U, b, None if v is None else v.unsqueeze(1))
        wx = torch.baddbmm(b.unsqueeze(1), xt.reshape(K, T * B, I), W.mT).view(K, T, B, -1)
        outs = []
        for t in range(T):
            new = self.cell(wx[:, t], state, p)
            if mask is not None:
                new = _where_state(mask[:, t].unsqueeze(-1), new, state)
            state = new
            outs.append(self.state_h(state))
        out = torch.stack(outs, 1) if outs else xt.new_zeros(K, 0, B, self.hidden_size)
        if mask is not None:
            out = out * mask.unsqueeze(-1).to(out.dtype)
        return out, state

    # ------------------------------------------------------------------ scan
    def coefficients(self, gates: tuple[Tensor, ...], p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """A unit that declares `scan=True`: (a, b) of h_t = a_t ⊙ h_{t−1} + b_t for every step at once;
        `gates[g]` = W_g x_t + b_g of declared gate g for every step, (…, T, H) (its cell() regrouped; the
        tests hold the two equal)."""
        raise NotImplementedError

    def scan(self, xt: Tensor, state: Tensor, mask: Tensor | None, W: Tensor, b: Tensor):
        """The fast path of a unit that declares `scan=True`, on a leading model dimension K like `reference`:
        ONE matrix product W x_t + b for every step (time-major, as `reference`'s), then the gates and the
        scan in one C++ pass where the declaration names a `scan_kernel` and the kernels apply, else
        `coefficients()` on all steps at once and the linear scan (nn/scan.py; a padded step carries the
        state and outputs 0).
        Returns (out (K, T, B, H), final state (K, B, H))."""
        from .scan import linear_scan
        K, T, B, I = xt.shape
        H = self.hidden_size
        wx = torch.baddbmm(b.unsqueeze(1), xt.reshape(K, T * B, I), W.mT).view(K, T, B, -1)
        kind = self.declares.scan_kernel
        if kind is not None and not torch.jit.is_tracing() and kernels.fused_path(kind, wx, state, mask=mask):
            return kernels.gated_scan(kind, wx, state, mask)   # the gates and the scan in one C++ pass
        a, c = self.coefficients(wx.split(H, dim=-1), self._symbols(W, None, b, None))   # (K, T, B, H) each
        return linear_scan(a, c, state, mask)


def recurrence(unit: RecurrentUnit, xt: Tensor, state, mask: Tensor | None = None, W: Tensor | None = None,
               U: Tensor | None = None, b: Tensor | None = None, v: Tensor | None = None, *,
               fused: bool | None = None):
    """Run `unit`'s equations over time — the one loop of the package — for one model or K at once.

    One model: xt (T, B, I) time-major, state (B, H) (a tuple such as (h, c) for the LSTM family; lstm-fgr:
    (h, c, i, f, o)),
    mask (T, B) bool (False = padded step: state carried, output 0) or None, W (G·H, I), U (G·H, H),
    b (G·H), v (P, H) or None. K models (`StackedUnit`): the same with a leading K on every tensor.
    W, U, b, v default to the unit's own parameters (one model; a forward pass passes W, U with noise).
    fused: False forces the reference loop; None takes the unit's fused kernel (`kernel_spec`; the state
    goes to it and back through `unit.kernel_inputs` / `kernel_state`) where `kernels.fused_path` says
    the kernels apply to these tensors (CPU, float32/float64, ...), else `unit.reference`.
    Returns (out (…, T, B, H), final state), model k of a stack computing exactly what the single unit
    with model k's tensors computes."""
    W = unit.weight_ih if W is None else W
    U = unit.weight_hh if U is None else U
    b = unit.bias if b is None else b
    v = unit.peephole if v is None else v
    single = xt.dim() == 3
    path = dispatch.route(unit, xt, W, U, b, v, mask, fused)
    if single and path == "fused" and _plain_kernel_state(type(unit)):
        # one model on the fused kernel as it is, without the K dim: a K view of each parameter was a node of
        # the autograd graph (with the output's squeeze ~40 % of the Python side of a batch-1 call)
        h0, c0, _ = unit.kernel_inputs(state)
        res = kernels.recurrence(*unit.kernel_spec(), xt, h0, c0, W, U, b, v, mask)
        if res is not None:
            return res[0], unit.kernel_state(res[1:])
    if single:   # a stack of K = 1
        xt, W, b = xt[None], W[None], b[None]
        U = None if U is None else U[None]
        state = _map(lambda s: s[None], state)
        mask = None if mask is None else mask[None]
        v = None if v is None else v[None]
    out, state = _stacked(unit, xt, state, mask, W, U, b, v, fused, path)
    if single:   # (squeeze, not [0]: its backward is a view, where indexing's writes a zero-filled copy)
        out, state = out.squeeze(0), _map(lambda s: s.squeeze(0), state)
    return out, state


def _plain_kernel_state(cls: type) -> bool:
    """Does the unit hand the kernel its state as the plain (h0, c0) (RecurrentUnit's kernel_inputs and
    kernel_state; lstm-fgr adds the gate recurrence's operands, which take the K dim)?"""
    return cls.kernel_inputs is RecurrentUnit.kernel_inputs and cls.kernel_state is RecurrentUnit.kernel_state


def _stacked(unit, xt, state, mask, W, U, b, v, fused, path):
    if path == "gemm":
        kind, flags, bn = dispatch.gemm_spec(unit)
        h0, c0, _ = unit.kernel_inputs(state)
        if c0 is None or c0.dtype == xt.dtype:
            res = gemm.recurrence(kind, flags, xt, h0, c0, W, U, b, v, mask, bn=bn)
            return res[0], unit.kernel_state(res[1:])
    elif path == "fused":
        spec = unit.kernel_spec()
        h0, c0, extra = unit.kernel_inputs(state)
        res = kernels.recurrence(*spec, xt, h0, c0, W, U, b, v, mask, **extra)
        if res is not None:   # (None: the state's operands do not fit, e.g. another dtype)
            return res[0], unit.kernel_state(res[1:])
    if fused is not False and _declared_scan(type(unit)):
        return unit.scan(xt, state, mask, W, b)
    return unit.reference(xt, state, mask, W, U, b, v)


_kernel_of: dict[type, str | None] = {}   # unit class -> its kernel kind (the checks below, once per class)


def _declared_kernel(cls: type) -> str | None:
    if cls not in _kernel_of:
        owner = next(c for c in cls.__mro__ if "declares" in c.__dict__)   # RecurrentUnit declares None
        kind = owner.declares and owner.declares.kernel
        if kind is not None and any(getattr(cls, m) is not getattr(owner, m)
                                    for m in ("cell", "reference", "state_h", "init_state", "kernel_inputs",
                                              "kernel_state")):
            kind = None
        _kernel_of[cls] = kind
    return _kernel_of[cls]


_scan_of: dict[type, bool] = {}   # unit class -> whether it runs the parallel scan


def _declared_scan(cls: type) -> bool:
    """The declaration's `scan`, for the class that declares it and subclasses that keep its equations (as
    for a kernel: a subclass overriding cell(), coefficients(), ... computes something else, and runs its
    own reference loop)."""
    if cls not in _scan_of:
        owner = next(c for c in cls.__mro__ if "declares" in c.__dict__)
        _scan_of[cls] = bool(owner.declares and owner.declares.scan) and all(
            getattr(cls, m) is getattr(owner, m) for m in ("cell", "coefficients", "scan", "reference", "state_h",
                                                           "init_state"))
    return _scan_of[cls]


def _map(f, state):
    return tuple(f(s) for s in state) if isinstance(state, tuple) else f(state)


def _where_state(m: Tensor, new, old):
    if isinstance(new, tuple):
        return tuple(torch.where(m, a, b) for a, b in zip(new, old))
    return torch.where(m, new, old)
