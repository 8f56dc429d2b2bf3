"""Statistics for the study: means with Student-t confidence intervals over seeds, paired t-tests
(paired by seed) and the Holm–Bonferroni step-down correction. Plain numbers in, plain numbers out."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st


@dataclass(frozen=True)
class MeanCI:
    mean: float
    half_width: float      # the interval is mean ± half_width (nan when n < 2)
    n: int
    sd: float              # sample standard deviation (ddof=1); nan when n < 2
    level: float = 0.95

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def fmt(self, digits: int = 2) -> str:
        if self.n == 0:
            return "–"
        if self.n < 2 or not math.isfinite(self.half_width):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def mean_ci(values, level: float = 0.95) -> MeanCI:
    """Mean and the half-width of its two-sided Student-t confidence interval:
    t_{(1+level)/2, n−1} · s / √n with s the sample standard deviation (ddof = 1)."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, 0, math.nan, level)
    mean = float(x.mean())
    if n < 2:
        return MeanCI(mean, math.nan, 1, math.nan, level)
    sd = float(x.std(ddof=1))
    t = float(_st.t.ppf((1 + level) / 2, n - 1))
    return MeanCI(mean, t * sd / math.sqrt(n), n, sd, level)


def paired_t(a, b) -> tuple[float, float, int]:
    """Two-sided paired t-test of a − b (pairs = same seed). Returns (t, p, number of pairs);
    p is nan with fewer than 2 pairs, and 1.0 (t = 0) when every difference is the same zero."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.shape} and {b.shape}")
    n = int(a.size)
    if n < 2:
        return math.nan, math.nan, n
    d = a - b
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        if float(d.mean()) == 0.0:
            return 0.0, 1.0, n
        return math.copysign(math.inf, float(d.mean())), 0.0, n
    t = float(d.mean() / (sd / math.sqrt(n)))
    p = float(2 * _st.t.sf(abs(t), n - 1))
    return t, p, n


def holm(pvalues, alpha: float = 0.05) -> tuple[list[float], list[bool]]:
    """Holm–Bonferroni step-down correction over m hypotheses.

    Sort p ascending; adjusted p_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j)) (1-based j).
    A hypothesis is rejected when its adjusted p ≤ alpha (equivalently: step down while
    p_(i) ≤ alpha / (m − i + 1)). nan p-values (untestable) are left out of m and stay nan/False."""
    p = [float(v) if v is not None else math.nan for v in pvalues]
    idx = [i for i, v in enumerate(p) if not math.isnan(v)]
    m = len(idx)
    adj = [math.nan] * len(p)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: (p[i], i))):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj, [(not math.isnan(a)) and a <= alpha for a in adj]
