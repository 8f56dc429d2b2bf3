"""heads.py: the Bernoulli head (music) and the mixture-density head (speech) — NLL against independent
float64 numpy/scipy computations, the fused read-out equal to the reference, stability, sampling."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, logsumexp, softplus
from scipy.stats import norm

from gatedrnn.heads import BernoulliHead, MixtureHead, make_head


def _reference_nll(raw: np.ndarray, y: np.ndarray, K: int, D: int, min_scale: float) -> np.ndarray:
    """float64 re-derivation with scipy: −log Σ_k π_k Π_d N(y_d; μ_kd, σ_kd)."""
    raw = raw.astype(np.float64)
    lead = raw.shape[:-1]
    log_pi = log_softmax(raw[..., :K], axis=-1)
    mu = raw[..., K:K + K * D].reshape(*lead, K, D)
    sigma = min_scale + softplus(raw[..., K + K * D:].reshape(*lead, K, D))
    logpdf = norm.logpdf(y.astype(np.float64)[..., None, :], loc=mu, scale=sigma).sum(-1)
    return -logsumexp(log_pi + logpdf, axis=-1)


def test_layout_and_init():
    head = MixtureHead(7, 10, 20)
    assert head.num_outputs == 420 and head.linear.out_features == 420
    w = head.linear.weight.detach()
    assert float(w.abs().max()) <= 0.1 and float(head.linear.bias.detach().abs().max()) == 0.0
    assert isinstance(make_head("mdn", 7, 10), MixtureHead)
    out = head(torch.zeros(2, 3, 7))
    assert out.shape == (2, 3, 420)


@pytest.mark.parametrize("K,D", [(20, 10), (3, 2)])
def test_nll_matches_float64_scipy(K, D):
    torch.manual_seed(0)
    head = MixtureHead(5, D, K, min_scale=1e-3).double()
    raw = torch.randn(4, 6, K * (1 + 2 * D), dtype=torch.float64) * 2
    y = torch.randn(4, 6, D, dtype=torch.float64)
    got = head.nll(raw, y)
    assert got.shape == (4, 6)
    ref = _reference_nll(raw.numpy(), y.numpy(), K, D, 1e-3)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-10)
    # float32 path agrees to float32 precision
    got32 = MixtureHead(5, D, K, min_scale=1e-3).nll(raw.float(), y.float())
    np.testing.assert_allclose(got32.numpy(), ref, rtol=1e-4, atol=1e-4)


def test_one_component_is_closed_form_gaussian():
    D, min_scale = 10, 1e-3
    rng = np.random.default_rng(1)
    raw = rng.normal(size=(8, 1 + 2 * D))
    y = rng.normal(size=(8, D))
    mu = raw[:, 1:1 + D]
    sigma = min_scale + np.log1p(np.exp(raw[:, 1 + D:]))
    closed = (0.5 * np.log(2 * math.pi) + np.log(sigma) + 0.5 * ((y - mu) / sigma) ** 2).sum(-1)
    got = MixtureHead(3, D, 1, min_scale=min_scale).nll(torch.from_numpy(raw), torch.from_numpy(y))
    np.testing.assert_allclose(got.numpy(), closed, rtol=1e-12, atol=1e-12)


def test_scale_floor_keeps_nll_finite_for_extreme_inputs():
    K, D, min_scale = 20, 10, 1e-3
    head = MixtureHead(3, D, K, min_scale=min_scale)
    n = K * (1 + 2 * D)
    for fill in (-1e4, 1e4, -80.0, 80.0):
        raw = torch.full((2, 3, n), fill, requires_grad=True)
        y = torch.full((2, 3, D), 3.0)
        nll = head.nll(raw, y)
        assert torch.isfinite(nll).all(), fill
        nll.sum().backward()
        assert torch.isfinite(raw.grad).all(), fill
    # exact fit with collapsed scales: bounded below by D (½ log 2π + log min_scale)
    raw = torch.zeros(1, n)
    raw[:, K + K * D:] = -1e4
    nll = head.nll(raw, torch.zeros(1, D))
    bound = D * (0.5 * math.log(2 * math.pi) + math.log(min_scale))
    assert float(nll) == pytest.approx(bound, rel=1e-4)


def test_sample_shapes_statistics_and_temperature():
    K, D = 2, 3
    head = MixtureHead(1, D, K, min_scale=1e-3)
    raw = torch.zeros(K * (1 + 2 * D))
    raw[0], raw[1] = 0.0, -1e3                        # component 0 only
    raw[K:K + D] = torch.tensor([1.0, -2.0, 0.5])     # its mean
    raw[K + K * D:K + K * D + D] = math.log(math.e - 1)  # softplus -> 1.0: σ ≈ 1.001
    params = raw.expand(20000, -1)
    g = torch.Generator().manual_seed(0)
    s = head.sample(params, g, 1.0)
    assert s.shape == (20000, D)
    np.testing.assert_allclose(s.mean(0).numpy(), [1.0, -2.0, 0.5], atol=0.05)
    np.testing.assert_allclose(s.std(0).numpy(), [1.001] * 3, atol=0.05)
    cold = head.sample(params, torch.Generator().manual_seed(0), 1e-6)
    np.testing.assert_allclose(cold.numpy(), np.broadcast_to([1.0, -2.0, 0.5], cold.shape), atol=0.01)
    a = head.sample(params[:5], torch.Generator().manual_seed(3))
    b = head.sample(params[:5], torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_sample_component_frequencies_follow_pi_to_the_1_over_T(temperature):
    """Several active components: which component a draw comes from must be distributed as
    π_k^{1/T} / Σ_j π_j^{1/T}, per position (two positions with different weights, in a (2, N) batch).
    Components sit at means 0, 10, 20 (σ ≈ 1e-3), so each draw names its component. Chi-square test
    against the expected counts with a fixed generator (p ≥ 1e-3), and a 5-sd binomial bound per
    component."""
    from scipy.stats import chisquare
    K, D, N = 3, 2, 6000
    pis = np.array([[0.5, 0.3, 0.2], [0.1, 0.15, 0.75]])
    head = MixtureHead(1, D, K, min_scale=1e-3).double()
    raw = torch.zeros(2, N, K * (1 + 2 * D), dtype=torch.float64)
    raw[..., :K] = torch.from_numpy(np.log(pis))[:, None, :] + 3.0      # logits: any shift gives the same π
    for k in range(K):
        raw[..., K + k * D:K + (k + 1) * D] = 10.0 * k
    raw[..., K + K * D:] = -30.0                                         # softplus → 0: σ = min_scale
    s = head.sample(raw, torch.Generator().manual_seed(1234), temperature)
    assert s.shape == (2, N, D)
    comp = np.rint(s.numpy() / 10.0).astype(int)
    assert np.all(comp[..., 0] == comp[..., 1]) and comp.min() >= 0 and comp.max() < K
    for row in range(2):
        w = pis[row] ** (1.0 / temperature)
        w = w / w.sum()
        counts = np.bincount(comp[row, :, 0], minlength=K)
        assert chisquare(counts, N * w).pvalue > 1e-3, (row, counts, N * w)
        sd = np.sqrt(N * w * (1 - w))
        assert np.all(np.abs(counts - N * w) < 5 * sd), (row, counts, N * w)
        # the draw's scale is σ·√T around the chosen mean
        resid = s.numpy()[row] - 10.0 * comp[row]
        assert resid.std() == pytest.approx(1e-3 * math.sqrt(temperature), rel=0.1)


# ------------------------------------------------------------------------------ the Bernoulli head
def test_bernoulli_nll_hidden_fused_equals_float64_by_hand():
    """nll_hidden (fused where the kernels apply) = Σ_k softplus(a_k) − y_k a_k with a = V h + c, by numpy in
    float64; 0 at masked steps; the reference path (fused=False) gives the same."""
    torch.manual_seed(0)
    head = BernoulliHead(5, 7)
    h = torch.randn(3, 4, 5)
    y = (torch.rand(3, 4, 7) < 0.3).float()
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    a = h.double().numpy() @ head.linear.weight.detach().double().numpy().T + head.linear.bias.detach().double().numpy()
    ref = (np.logaddexp(0, a) - y.double().numpy() * a).sum(-1) * mask.numpy()
    got = head.nll_hidden(h, y, mask)
    assert got.shape == (3, 4) and np.allclose(got.detach().double().numpy(), ref, rtol=1e-5, atol=1e-6)
    head.fused = False
    assert np.allclose(head.nll_hidden(h, y, mask).detach().double().numpy(), ref, rtol=1e-5, atol=1e-6)


def test_bernoulli_init_and_sampling_temperature():
    head = BernoulliHead(4, 88)
    w = head.linear.weight.detach()
    assert float(w.abs().max()) <= 0.1 and float(head.linear.bias.abs().max()) == 0.0   # released code's init
    g = torch.Generator().manual_seed(1)
    logits = torch.full((20000, 1), math.log(3.0))                                 # p = 3/4
    assert float(head.sample(logits, g).mean()) == pytest.approx(0.75, abs=0.01)
    # temperature T: p = σ(a / T); T = 2 gives σ(log 3 / 2) = √3 / (1 + √3)
    assert float(head.sample(logits, g, temperature=2.0).mean()) == pytest.approx(3 ** 0.5 / (1 + 3 ** 0.5), abs=0.01)


def test_make_head_names_the_kinds():
    assert isinstance(make_head("bernoulli", 3, 4), BernoulliHead)
    assert isinstance(make_head("mdn", 3, 10), MixtureHead)
    with pytest.raises(ValueError, match="unknown head 'gauss'"):
        make_head("gauss", 3, 4)
