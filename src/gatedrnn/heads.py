"""Output distributions. A head maps the recurrent layer's h_t to the parameters of p(y_t | x_≤t)
and scores targets with a per-step negative log-likelihood in nats.

Every head has `forward(h) -> params`, `nll(params, target) -> (B, T)` per-step NLL (summed over the
output dimensions), `sample(params, generator, temperature) -> target-shaped draw`, and `kernel()`: the
fused read-out that computes its forward + nll exactly (gatedrnn.kernels.READOUTS), or None.

BernoulliHead (music): one sigmoid per pitch (its class doc).

MixtureHead (speech, mixture density): p(y_t | x_≤t) is a mixture of K Gaussians with diagonal
covariances over the D samples predicted at a step (paper: K = 20 components, D = 10 samples).

One linear layer maps h_t to K·(1 + 2D) numbers, laid out along the last axis as

    [ a_1 .. a_K | m_{1,1} .. m_{K,D} | s_{1,1} .. s_{K,D} ]      (K=20, D=10: 420 outputs)

    log π_k   = log_softmax(a)_k                       mixture weights, computed in log space
    μ_{k,d}   = m_{k,d}
    σ_{k,d}   = min_scale + softplus(s_{k,d})          a floor keeps every density bounded

    −log p(y) = −logsumexp_k [ log π_k + Σ_d log N(y_d; μ_{k,d}, σ_{k,d}) ]            (nats per step)
    log N(y; μ, σ) = −½ log 2π − log σ − ½ ((y − μ)/σ)²

The per-step NLL is summed over the D samples; divide by D for nats per sample. With the floor the
NLL of one sample is never below ½ log 2π + log(min_scale) and the loss stays finite for any input
(softplus and log-sum-exp do not overflow). Output layer initialised U(−0.1, 0.1), bias 0, as the
released code.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import kernels
from .kernels import readout

__all__ = ["BernoulliHead", "MixtureHead", "make_head", "mixture_nll", "split_params"]


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

    def kernel(self) -> str | None:
        """"bernoulli": the fused read-out computes forward + nll, unless a subclass changed either."""
        t = type(self)
        return "bernoulli" if t.forward is BernoulliHead.forward and t.nll is BernoulliHead.nll else None

    def nll_hidden(self, h: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """Per-step NLL (B, T) straight from the hidden states h (B, T, H), 0 where mask is False:
        `nll(forward(h), target) * mask`, fused into one C++ pass on the CPU (to float rounding) where
        `gatedrnn.kernels.fused_path` says so."""
        V, c = self.linear.weight, self.linear.bias
        if kernels.fused_path(self.kernel(), h, V, c, target, mask=mask, fused=self.fused):
            out = readout.bernoulli_nll(h, V, c, target, mask)
            if out is not None:   # (None: operands the kernel does not take)
                return out
        nll = self.nll(self(h), target)
        return nll * mask.to(nll.dtype) if mask is not None else nll

    @torch.no_grad()
    def sample(self, logits: Tensor, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor:
        p = torch.sigmoid(logits / temperature)
        return torch.bernoulli(p, generator=generator)


# ------------------------------------------------------------------ speech: mixture of Gaussians
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def split_params(params: Tensor, n_components: int, output_size: int, min_scale: float):
    """Raw head outputs (..., K(1+2D)) -> (log π (..., K), μ (..., K, D), σ (..., K, D))."""
    K, D = n_components, output_size
    if params.shape[-1] != K * (1 + 2 * D):
        raise ValueError(f"expected {K * (1 + 2 * D)} mixture parameters on the last axis, got {params.shape[-1]}")
    lead = params.shape[:-1]
    a = params[..., :K]
    mu = params[..., K:K + K * D].reshape(*lead, K, D)
    s = params[..., K + K * D:].reshape(*lead, K, D)
    return F.log_softmax(a, dim=-1), mu, min_scale + F.softplus(s)


def mixture_nll(log_pi: Tensor, mu: Tensor, sigma: Tensor, target: Tensor) -> Tensor:
    """−log Σ_k π_k Π_d N(y_d; μ_kd, σ_kd) for target (..., D); returns (...)."""
    z = (target.unsqueeze(-2) - mu) / sigma                                  # (..., K, D)
    comp = -(0.5 * z * z + torch.log(sigma) + _HALF_LOG_2PI).sum(-1)      # (..., K) log N per component
    return -torch.logsumexp(log_pi + comp, dim=-1)


class MixtureHead(nn.Module):
    """Gaussian mixture with diagonal covariances over ``output_size`` values per step (see the module doc)."""

    fused: bool | None = None   # every head's switch; this head declares no kernel, so it switches nothing

    def __init__(self, hidden_size: int, output_size: int = 10, n_components: int = 20, min_scale: float = 1e-3):
        super().__init__()
        if n_components < 1 or output_size < 1:
            raise ValueError(f"need n_components >= 1 and output_size >= 1, got {n_components}, {output_size}")
        if not min_scale > 0:
            raise ValueError(f"min_scale must be > 0, got {min_scale}")
        self.output_size, self.n_components, self.min_scale = int(output_size), int(n_components), float(min_scale)
        self.linear = nn.Linear(hidden_size, n_components * (1 + 2 * output_size))
        with torch.no_grad():  # released code: output layer U(-0.1, 0.1), bias 0
            nn.init.uniform_(self.linear.weight, -0.1, 0.1)
            self.linear.bias.zero_()

    def kernel(self) -> None:
        return None   # no fused read-out: the torch ops below

    @property
    def num_outputs(self) -> int:
        return self.n_components * (1 + 2 * self.output_size)

    def forward(self, h: Tensor) -> Tensor:
        return self.linear(h)  # raw parameters (..., K(1+2D)); see split()

    def split(self, params: Tensor):
        """(log π, μ, σ) from forward()'s output."""
        return split_params(params, self.n_components, self.output_size, self.min_scale)

    def nll(self, params: Tensor, target: Tensor) -> Tensor:
        """Per-step NLL (...) in nats, summed over the output_size samples of the step."""
        return mixture_nll(*self.split(params), target.to(params.dtype))

    @torch.no_grad()
    def sample(self, params: Tensor, generator: torch.Generator | None = None, temperature: float = 1.0) -> Tensor:
        """One draw (..., D). Temperature T: weights ∝ π_k^{1/T}, scales σ·√T (T = 1: the model's
        distribution; T → 0: the mean of the most probable component)."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        log_pi, mu, sigma = self.split(params)
        lead = log_pi.shape[:-1]
        w = torch.softmax(log_pi / temperature, dim=-1).reshape(-1, self.n_components)
        k = torch.multinomial(w, 1, generator=generator).reshape(*lead, 1, 1)      # (..., 1, 1)
        idx = k.expand(*lead, 1, self.output_size)
        m = torch.gather(mu, -2, idx).squeeze(-2)
        s = torch.gather(sigma, -2, idx).squeeze(-2) * math.sqrt(temperature)
        eps = torch.randn(m.shape, generator=generator, dtype=m.dtype, device=m.device)
        return m + s * eps


def make_head(kind: str, hidden_size: int, output_size: int, **kw) -> nn.Module:
    if kind == "bernoulli":
        return BernoulliHead(hidden_size, output_size)
    if kind == "mdn":
        return MixtureHead(hidden_size, output_size, **kw)
    raise ValueError(f"unknown head {kind!r}; expected 'bernoulli' or 'mdn'")
