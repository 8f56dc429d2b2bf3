"""Output distributions. A head maps the recurrent layer's h_t to the parameters of p(y_t | x_≤t)
and scores targets with a per-step negative log-likelihood in nats.

Every head has `forward(h) -> params`, `nll(params, target) -> (B, T)` per-step NLL (summed over the
output dimensions), and `sample(params, generator, temperature) -> target-shaped draw`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BernoulliHead(nn.Module):
    """One sigmoid per pitch: p(y_t | x_≤t) = Π_k σ(a_k)^{y_k} (1 − σ(a_k))^{1−y_k}, a = V h_t + c.
    Music uses this (independent Bernoulli per note, Boulanger-Lewandowski et al. 2012)."""

    def __init__(self, hidden_size: int, output_size: int, fused: bool | None = None):
        super().__init__()
        self.output_size = output_size
        # None: read-out + NLL as one fused C++ pass where it applies (gatedrnn.kernels.readout);
        # False: always the torch ops below (the reference)
        self.fused = fused
        self.linear = nn.Linear(hidden_size, output_size)
        with torch.no_grad():  # released code: output layer U(-0.1, 0.1), bias 0
            nn.init.uniform_(self.linear.weight, -0.1, 0.1)
            self.linear.bias.zero_()

    def forward(self, h: Tensor) -> Tensor:
        return self.linear(h)  # logits

    def nll(self, logits: Tensor, target: Tensor) -> Tensor:
        # −log p = Σ_k softplus(a_k) − y_k a_k, computed stably by BCE-with-logits.
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)

    def nll_hidden(self, h: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """Per-step NLL (B, T) straight from the hidden states h (B, T, H), 0 where mask is False:
        `nll(forward(h), target) * mask`, fused into one C++ pass on the CPU (to float rounding)."""
        t = type(self)
        if self.fused is not False and t.forward is BernoulliHead.forward and t.nll is BernoulliHead.nll:
            from .kernels.readout import bernoulli_nll
            out = bernoulli_nll(h, self.linear.weight, self.linear.bias, target, mask)
            if out is not None:
                return out
        nll = self.nll(self(h), target)
        return nll * mask.to(nll.dtype) if mask is not None else nll

    @torch.no_grad()
    def sample(self, logits: Tensor, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor:
        p = torch.sigmoid(logits / temperature)
        return torch.bernoulli(p, generator=generator)


def make_head(kind: str, hidden_size: int, output_size: int, **kw) -> nn.Module:
    if kind == "bernoulli":
        return BernoulliHead(hidden_size, output_size)
    if kind == "mdn":
        from .mdn import MixtureHead  # speech: mixture of Gaussians
        return MixtureHead(hidden_size, output_size, **kw)
    raise ValueError(f"unknown head {kind!r}; expected 'bernoulli' or 'mdn'")
