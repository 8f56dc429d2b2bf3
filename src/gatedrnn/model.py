"""The model: one recurrent layer (a paper unit) followed by an output head.

    h_t = unit(x_t, h_{t-1})          the recurrent layer, gatedrnn.nn
    p(y_t | x_≤t) = head(h_t)         Bernoulli per pitch (music) or a Gaussian mixture (speech)
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from . import kernels
from .heads import make_head
from .nn import make_unit


class SequenceModel(nn.Module):
    def __init__(self, unit: str, input_size: int, hidden_size: int, output_size: int, *,
                 head: str = "bernoulli", weight_noise: float = 0.0, head_kwargs: dict | None = None,
                 **unit_kwargs):
        super().__init__()
        self.unit_name = unit
        self.rnn = make_unit(unit, input_size=input_size, hidden_size=hidden_size, batch_first=True,
                             weight_noise=weight_noise, **unit_kwargs)
        self.head = make_head(head, hidden_size, output_size, **(head_kwargs or {}))

    def forward(self, x: Tensor, lengths: Tensor | None = None, state=None):
        h, state = self.rnn(x, state, lengths=lengths)
        return self.head(h), state

    def nll(self, x: Tensor, y: Tensor, mask: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Per-step NLL (B, T) in nats, zero at padded steps. A head with `nll_hidden` (the Bernoulli
        head: read-out and loss as one fused pass) scores the hidden states directly (`nll_of_hidden`)."""
        if type(self).forward is SequenceModel.forward:
            h, _ = self.rnn(x, None, lengths=lengths)
            return self.nll_of_hidden(h, y, mask)
        params, _ = self(x, lengths)
        return self.head.nll(params, y) * mask.to(x.dtype)

    def nll_of_hidden(self, h: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        """Per-step NLL (B, T) of the head on hidden states h (B, T, H), zero at padded steps (training
        several models with one stacked recurrence scores each model's slice here)."""
        fused = getattr(self.head, "nll_hidden", None)
        if fused is not None:
            return fused(h, y, mask)
        return self.head.nll(self.head(h), y) * mask.to(h.dtype)

    @torch.no_grad()
    def step_nll(self, x: Tensor, y: Tensor, mask: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Per-step NLL (B, T) in float64 on the CPU, zero at padded steps, without a gradient — what
        evaluation needs (the total per step and the per-sequence means are both read from it). x, y may be
        compact (uint8, see `data.batching.eval_batches`). Where the fused kernels apply (CPU, a unit that
        declares a kernel, the Bernoulli head, no weight noise in this pass) this runs the forward-only
        recurrence on x as it is and the fused read-out: no autograd, no activations kept, no (B, T, O)
        logits; otherwise `nll` on float tensors."""
        fast = self._fused_step_nll(x, y, mask)
        if fast is not None:
            return fast.to("cpu", torch.float64)
        dt = self.head.linear.weight.dtype
        return self.nll(x.to(dt), y.to(dt), mask, lengths).to("cpu", torch.float64)

    @torch.no_grad()
    def total_nll(self, x: Tensor, y: Tensor, mask: Tensor, lengths: Tensor | None = None) -> float:
        """Σ of the per-step NLL over the valid steps (accumulated in float64)."""
        return float(self.step_nll(x, y, mask, lengths).sum())

    def _fused_step_nll(self, x: Tensor, y: Tensor, mask: Tensor) -> Tensor | None:
        """`step_nll` by the forward-only kernels, or None where they do not apply (`kernels.fused_path`
        decides, for the recurrence and for the head's read-out) or this pass is not the plain one (a
        subclass's forward, weight noise in training, a time-major unit)."""
        rnn, head = self.rnn, self.head
        spec = rnn.kernel_spec()
        if spec is None:      # no kernel computes this unit (the scan units, a unit named by import path)
            return None
        if (type(self).forward is not SequenceModel.forward or (rnn.training and rnn.weight_noise > 0)
                or not rnn.batch_first or x.dim() != 3
                or not kernels.fused_path(spec and spec[0], x, rnn.weight_ih, rnn.weight_hh, rnn.bias,
                                          rnn.peephole, mask=mask, fused=rnn.fused)
                or not kernels.fused_path(head.kernel(), head.linear.weight, head.linear.bias, y, mask=mask,
                                          fused=head.fused)):
            return None
        kind, flags = spec
        B, T, _ = x.shape
        z = rnn.init_state(B, rnn.weight_hh.detach())      # the zero state, on a model dim of 1
        h0, c0, extra = rnn.kernel_inputs(tuple(s[None] for s in z) if isinstance(z, tuple) else z[None])
        full = bool(mask.all())
        m = None if full else mask.t().unsqueeze(0)        # (1, T, B)
        v = rnn.peephole
        out = kernels.inference(kind, flags, x.transpose(0, 1)[None], h0, c0, rnn.weight_ih[None],
                                rnn.weight_hh[None], rnn.bias[None], None if v is None else v[None], m,
                                **extra)[0]
        h = out[0].transpose(0, 1)                          # (B, T, H) view of the time-major output
        return head.nll_hidden(h, y, None if full else mask)
