"""The torch.nn contract: `gatedrnn.LSTM`, `gatedrnn.GRU`, `gatedrnn.TanhRNN` (and `gatedrnn.RNN`) take
torch.nn's arguments in torch.nn's order with its defaults, and take and give what torch.nn does:

    lstm = gatedrnn.LSTM(88, 36, 2, dropout=0.1, bidirectional=True)    # the paper's peephole LSTM
    out, (h, c) = lstm(x)          # x (T, B, I) | (B, T, I) with batch_first | (T, I) | PackedSequence
    h.shape == (2 * 2, B, 36)      # (num_layers · directions, B, H)
    ours = gatedrnn.from_torch(torch_lstm)                               # the same outputs as torch_lstm

Each layer and direction is one of the project's single-layer units (gatedrnn.nn: `make_unit`, the
paper's equations, the fused kernel / GEMM path chosen by `dispatch.route`), held as attributes
`l0`, `l0_reverse`, `l1`, ... (`module.layer(l, reverse)`; each has `paper_weights()`). Our options are
keyword-only: `peepholes`, `forget_bias` (LSTM), `reset_after`, `inner_bias` (GRU), `weight_noise`,
`fused` (False: the readable reference loop), `device`, `dtype`. Unlike torch.nn, forward also takes
`lengths=` for a padded batch (padding then never reaches the state, as with a PackedSequence).

Initialisation is the paper's released code's (input matrices U(−0.1, 0.1), orthogonal recurrent blocks,
biases 0), not torch.nn's U(−1/√H, 1/√H); `from_torch` copies torch.nn's weights.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .gru import GRU as GRUUnit
from .registry import make_unit

__all__ = ["LSTM", "GRU", "TanhRNN", "RNN", "TorchFormGRU", "from_torch"]


class TorchFormGRU(GRUUnit):
    """The GRU torch.nn.GRU computes: reset after U, and a second candidate bias inside the reset,
    h̃_t = tanh(W x_t + b + r_t ⊙ (U h_{t−1} + b_n)). One unit (a layer and direction) of
    `gatedrnn.GRU(..., reset_after=True, inner_bias=True)`, which `from_torch` builds. No fused kernel
    computes b_n: it runs the GEMM path (gemm.py; the reference loop with `fused=False`)."""

    def __init__(self, input_size: int, hidden_size: int, batch_first: bool = True, **kw):
        if not kw.pop("reset_after", True):
            raise ValueError("the inner candidate bias belongs to the reset_after=True form")
        super().__init__(input_size, hidden_size, batch_first, reset_after=True, **kw)
        self.bias_hn = nn.Parameter(torch.zeros(hidden_size))

    def cell(self, wx_t: Tensor, h: Tensor, p: dict[str, Tensor]) -> Tensor:
        H = self.hidden_size
        Wx_z, Wx_r, Wx = wx_t[..., :H], wx_t[..., H:2 * H], wx_t[..., 2 * H:]
        z = torch.sigmoid(Wx_z + h @ p["U_z"].mT)
        r = torch.sigmoid(Wx_r + h @ p["U_r"].mT)
        h_tilde = torch.tanh(Wx + r * (h @ p["U"].mT + self.bias_hn))   # torch.nn.GRU's n
        self.observe(z=z, r=r)
        return (1 - z) * h + z * h_tilde

    def gemm_spec(self):
        return "gru", {"reset_after": True}, self.bias_hn.unsqueeze(0)

    def paper_weights(self) -> dict[str, Tensor]:
        return {**super().paper_weights(), "b_n": self.bias_hn.detach()}


def _reverse(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Each sequence of a time-major batch reversed within its length (padding stays where it is)."""
    if lengths is None:
        return x.flip(0)
    T, B = x.shape[:2]
    t = torch.arange(T).unsqueeze(1)
    L = lengths.view(1, B)
    idx = torch.where(t < L, L - 1 - t, t).to(x.device)
    return x.gather(0, idx.unsqueeze(-1).expand_as(x))


class _Layers(nn.Module):
    """num_layers × directions of one unit kind, run as torch.nn's RNN modules run theirs."""

    unit = ""          # the registry name of each layer's unit
    has_cell = False   # (h, c) state

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 weight_noise: float = 0.0, fused: bool | None = None, device=None, dtype=None, **options):
        super().__init__()
        if not (isinstance(num_layers, int) and not isinstance(num_layers, bool) and num_layers >= 1):
            raise ValueError(f"num_layers must be an integer >= 1, got {num_layers!r}")
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        for name, v in (("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional)):
            if not isinstance(v, bool):
                raise TypeError(f"{name} must be a bool, got {v!r} (torch.nn's order: input_size, hidden_size, "
                                "num_layers, bias, batch_first, dropout, bidirectional)")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout={dropout} acts between layers; with num_layers=1 it does nothing "
                          "(as in torch.nn)", UserWarning, stacklevel=2)
        if not bias and options.get("forget_bias"):
            raise ValueError("forget_bias initialises the forget gate's bias: it needs bias=True")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional = bidirectional
        self.weight_noise, self.options = float(weight_noise), dict(options)
        D = 2 if bidirectional else 1
        self._names = []
        for layer in range(num_layers):
            for d in range(D):
                name = f"l{layer}" + ("_reverse" if d else "")
                I = input_size if layer == 0 else hidden_size * D
                u = self._make(I, hidden_size, weight_noise=weight_noise, fused=fused, **options)
                if not bias:   # no bias: the unit's b is a constant zero, not a parameter
                    G = u.bias.numel()
                    del u.bias
                    u.register_buffer("bias", torch.zeros(G), persistent=False)
                self.add_module(name, u)
                self._names.append(name)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def _make(self, I: int, H: int, **kw):
        return make_unit(self.unit, input_size=I, hidden_size=H, batch_first=False, **kw)

    # ----------------------------------------------------------------------------------------- access
    @property
    def cells(self) -> list:
        """The units, layer by layer, forward direction before reverse (torch.nn's order of h_n)."""
        return [getattr(self, n) for n in self._names]

    def layer(self, layer: int, reverse: bool = False):
        """The unit of one layer and direction (its `paper_weights()` name its parameters)."""
        return getattr(self, f"l{layer}" + ("_reverse" if reverse else ""))

    def paper_weights(self) -> dict[str, Tensor]:
        """A one-layer, one-direction module's parameters by the paper's symbols (views, as the unit's);
        with more layers or directions, ask a layer: `module.layer(l, reverse).paper_weights()`."""
        if len(self._names) != 1:
            raise ValueError(f"{type(self).__name__} has {len(self._names)} layers/directions: use "
                             "module.layer(l, reverse).paper_weights()")
        return self.cells[0].paper_weights()

    def flatten_parameters(self) -> None:
        """torch.nn's cuDNN hint; nothing to do here."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for k, default in (("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False)):
            if getattr(self, k) != default:
                s += f", {k}={getattr(self, k)}"
        return s + "".join(f", {k}={v!r}" for k, v in self.options.items())

    # ---------------------------------------------------------------------------------------- forward
    def forward(self, input, hx=None, *, lengths: Tensor | None = None):
        """torch.nn's forward. input: (T, B, I), (B, T, I) with batch_first, (T, I) unbatched, or a
        PackedSequence; hx: (num_layers · directions, B, H) — (h0, c0) for the LSTM — or None (zeros).
        `lengths` (B,): valid lengths of a padded batch (ours; a PackedSequence carries its own).
        Returns (output, h_n) — (output, (h_n, c_n)) for the LSTM — as torch.nn does."""
        dt = self.cells[0].weight_hh.dtype
        packed = isinstance(input, PackedSequence)
        unbatched = False
        if packed:
            x, lengths = pad_packed_sequence(input)           # time-major, the caller's batch order
        else:
            if not isinstance(input, Tensor):
                raise TypeError(f"input must be a Tensor or a PackedSequence, got {type(input).__name__}")
            if input.dim() == 2:
                unbatched, x = True, input.unsqueeze(1)
            elif input.dim() == 3:
                x = input.transpose(0, 1) if self.batch_first else input
            else:
                raise ValueError(f"{type(self).__name__}: expected a 2-d (unbatched) or 3-d input, "
                                 f"got {input.dim()}-d of shape {tuple(input.shape)}")
        if x.dtype != dt:
            raise TypeError(f"{type(self).__name__}: input is {x.dtype} but the module's parameters are {dt}; "
                            f"convert one (input.to({dt}) or module.to({x.dtype}))")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: input has {x.shape[-1]} features, expected "
                             f"input_size={self.input_size}")
        T, B = x.shape[:2]
        if lengths is not None and not packed:
            lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
            if lengths.shape != (B,):
                raise ValueError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
        D = 2 if self.bidirectional else 1
        h0, c0 = self._initial(hx, B, unbatched, dt)
        hs, cs = [], []
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                u = self.cells[k]
                s0 = None if h0 is None else ((h0[k], c0[k]) if self.has_cell else h0[k])
                inp = layer_in if d == 0 else _reverse(layer_in, lengths)
                o, s = u(inp, s0, lengths=lengths)
                outs.append(o if d == 0 else _reverse(o, lengths))
                if self.has_cell:
                    hs.append(s[0])
                    cs.append(s[1])
                else:
                    hs.append(s)
            layer_in = torch.cat(outs, -1) if D == 2 else outs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, training=True)
        out = layer_in
        h_n = torch.stack(hs)
        state = (h_n, torch.stack(cs)) if self.has_cell else h_n
        if packed:
            idx = input.sorted_indices
            srt = out if idx is None else out.index_select(1, idx)
            ls = lengths if idx is None else lengths.index_select(0, idx.cpu())
            data = pack_padded_sequence(srt, ls, enforce_sorted=True).data
            out = PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices)
        elif unbatched:
            out = out.squeeze(1)
            state = tuple(s.squeeze(1) for s in state) if self.has_cell else state.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, state

    def _initial(self, hx, B: int, unbatched: bool, dt):
        if hx is None:
            return None, None
        D = 2 if self.bidirectional else 1
        parts = hx if self.has_cell else (hx,)
        if self.has_cell and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"{type(self).__name__}: hx must be a tuple (h0, c0)")
        want = (self.num_layers * D, self.hidden_size) if unbatched else (self.num_layers * D, B, self.hidden_size)
        out = []
        for p in parts:
            if not isinstance(p, Tensor) or tuple(p.shape) != want:
                got = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
                raise ValueError(f"{type(self).__name__}: expected hidden state of shape {want}, got {got}")
            if p.dtype != dt:
                raise TypeError(f"{type(self).__name__}: hidden state is {p.dtype} but the module's parameters "
                                f"are {dt}")
            out.append(p.unsqueeze(1) if unbatched else p)
        return (out[0], out[1]) if self.has_cell else (out[0], None)


class LSTM(_Layers):
    """torch.nn.LSTM's signature and shapes, computing the paper's LSTM (peepholes on by default:
    `peepholes=False` is torch.nn.LSTM's form). `proj_size` is torch.nn's; only 0 is supported."""

    unit, has_cell = "lstm", True

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 *, peepholes: bool = True, forget_bias: float = 0.0, weight_noise: float = 0.0,
                 fused: bool | None = None, device=None, dtype=None):
        if proj_size:
            raise ValueError(f"gatedrnn.LSTM has no projection (proj_size={proj_size}); only proj_size=0")
        self.proj_size = 0
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         weight_noise=weight_noise, fused=fused, device=device, dtype=dtype, peepholes=peepholes,
                         forget_bias=forget_bias)


class GRU(_Layers):
    """torch.nn.GRU's signature and shapes, computing the paper's GRU (reset before U) by default.
    `reset_after=True` is the Cho et al. / torch.nn.GRU form; with `inner_bias=True` it also has
    torch.nn.GRU's second candidate bias b_n (h̃ = tanh(W x + b + r ⊙ (U h + b_n)); what `from_torch`
    builds; no fused kernel computes it, so it runs the GEMM path)."""

    unit = "gru"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 reset_after: bool = False, inner_bias: bool = False, weight_noise: float = 0.0,
                 fused: bool | None = None, device=None, dtype=None):
        if inner_bias and not (reset_after and bias):
            raise ValueError("inner_bias=True needs reset_after=True and bias=True (torch.nn.GRU's form)")
        self.inner_bias = bool(inner_bias)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         weight_noise=weight_noise, fused=fused, device=device, dtype=dtype, reset_after=reset_after)

    def _make(self, I: int, H: int, **kw):
        if self.inner_bias:
            return TorchFormGRU(input_size=I, hidden_size=H, batch_first=False, **kw)
        return super()._make(I, H, **kw)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", inner_bias=True" if self.inner_bias else "")


class TanhRNN(_Layers):
    """The tanh RNN with torch.nn.LSTM/GRU's argument order (no nonlinearity argument: it is tanh)."""

    unit = "tanh"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 weight_noise: float = 0.0, fused: bool | None = None, device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         weight_noise=weight_noise, fused=fused, device=device, dtype=dtype)


class RNN(TanhRNN):
    """torch.nn.RNN's signature, `nonlinearity` fourth as there; only 'tanh' (the paper's unit)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 weight_noise: float = 0.0, fused: bool | None = None, device=None, dtype=None):
        if nonlinearity != "tanh":
            raise ValueError(f"gatedrnn.RNN computes the tanh RNN only, not nonlinearity={nonlinearity!r}")
        self.nonlinearity = "tanh"
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         weight_noise=weight_noise, fused=fused, device=device, dtype=dtype)


def from_torch(module: nn.Module) -> _Layers:
    """Ours from a torch.nn.LSTM / GRU / RNN (tanh): every layer and direction, its weights copied, so that
    outputs and states equal torch.nn's (to float rounding). LSTM: `peepholes=False`, b = b_ih + b_hh;
    GRU: `reset_after=True, inner_bias=True` (z, r: b_i + b_h; candidate: b_in, and b_hn kept as the inner
    bias; torch.nn's z keeps the old state where the paper's takes the new one, so z's block changes sign);
    RNN: tanh only (relu is refused). Same dtype, device, batch_first, dropout and train/eval mode."""
    if isinstance(module, nn.LSTM):
        if module.proj_size:
            raise ValueError(f"from_torch: an LSTM with proj_size={module.proj_size} has no gatedrnn equivalent")
        kind, extra = LSTM, {"peepholes": False}
    elif isinstance(module, nn.GRU):
        kind, extra = GRU, {"reset_after": True, "inner_bias": module.bias}
    elif isinstance(module, nn.RNN):
        if module.nonlinearity != "tanh":
            raise ValueError(f"from_torch: torch.nn.RNN(nonlinearity={module.nonlinearity!r}) has no gatedrnn "
                             "equivalent; only the tanh RNN")
        kind, extra = TanhRNN, {}
    else:
        raise TypeError(f"from_torch takes a torch.nn.LSTM, GRU or RNN, not {type(module).__name__}")
    p0 = module.weight_hh_l0
    ours = kind(module.input_size, module.hidden_size, module.num_layers, module.bias, module.batch_first,
                float(module.dropout), module.bidirectional, device=p0.device, dtype=p0.dtype, **extra)
    H = module.hidden_size
    for layer in range(module.num_layers):
        for rev in ((False, True) if module.bidirectional else (False,)):
            sfx = f"_l{layer}" + ("_reverse" if rev else "")
            u = ours.layer(layer, rev)
            w_ih, w_hh = getattr(module, "weight_ih" + sfx), getattr(module, "weight_hh" + sfx)
            b_ih = getattr(module, "bias_ih" + sfx) if module.bias else None
            b_hh = getattr(module, "bias_hh" + sfx) if module.bias else None
            with torch.no_grad():
                if kind is GRU:
                    # torch.nn's blocks r, z, n -> ours z, r, candidate; torch.nn keeps the OLD state with its
                    # z (h' = (1 − z) n + z h) where the paper's z takes the new one: ours = 1 − torch's
                    # = σ(−a), so the z block's weights and biases change sign
                    order = torch.cat([torch.arange(H, 2 * H), torch.arange(0, H), torch.arange(2 * H, 3 * H)])
                    order = order.to(p0.device)
                    sign = torch.ones(3 * H, 1, dtype=p0.dtype, device=p0.device)
                    sign[:H] = -1
                    u.weight_ih.copy_(w_ih[order] * sign)
                    u.weight_hh.copy_(w_hh[order] * sign)
                    if module.bias:
                        b = b_ih[order].clone()
                        b[:2 * H] += b_hh[order][:2 * H]
                        u.bias.copy_(b * sign[:, 0])
                        u.bias_hn.copy_(b_hh[2 * H:])
                else:             # LSTM i, f, g, o = ours i, f, c, o; tanh: W, U
                    u.weight_ih.copy_(w_ih)
                    u.weight_hh.copy_(w_hh)
                    if module.bias:
                        u.bias.copy_(b_ih + b_hh)
    ours.train(module.training)
    return ours
