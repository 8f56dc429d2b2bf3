"""The answer at every tuning budget (Dodge et al. 2019, "Show Your Work"): for each (dataset, unit) of a
study, the expected best validation NLL after n of its learning-rate candidates, n = 1..N — the expected
minimum of n draws (with replacement) from the candidates' empirical distribution, computed by opda
(`EmpiricalDistribution.average_tuning_curve`, with its simultaneous confidence bands on the CDF) — and the
test NLL that choice implies: the expected test NLL of the candidate with the lowest validation NLL among
the n drawn, Σ_k P(the k-th best of N is the best of n draws) · test_(k), where that probability is
((N−k+1)/N)^n − ((N−k)/N)^n (the same weights the average tuning curve puts on the k-th best validation NLL).

What a candidate contributes is its seed-0 search run: its best-validation model's NLL (a run that diverged
contributes the best model it kept before diverging; a failed one, nothing). In a successive-halving study a
candidate cut at a rung contributes the best validation NLL it reached by then: worse than the same
candidate trained to the end, so the curve is pessimistic at small n (a draw of cut candidates only) and
exact at n = N only if halving kept the best; such a candidate has no test NLL, so the implied test NLL is
left out where a cut candidate could be the chosen one.
"""
from __future__ import annotations

import math

import numpy as np

CONFIDENCE = 0.80     # the band: simultaneous 80 % confidence bands on the CDF (opda's ld_equal_tailed)


def _support(cell, rows: dict, kind: str | None) -> tuple[float, float]:
    """[a, b] of the cell's candidates' NLL: 0 below for music (a Bernoulli NLL), unbounded for speech (a
    density); above, the worst untrained (epoch-0) validation NLL of its candidates."""
    untrained = [float(h[0]["valid_nll"]) for x in cell["search"]
                 for h in [(rows.get(x["run_id"]) or {}).get("history") or []]
                 if h and h[0].get("epoch") == 0 and h[0].get("valid_nll") is not None
                 and math.isfinite(float(h[0]["valid_nll"]))]
    return (0.0 if kind == "music" else -math.inf), (max(untrained) if untrained else math.inf)


def _candidates(cell, rows: dict) -> list[tuple[float, float | None]]:
    """(valid NLL, test NLL or None) of every search candidate with a finite validation NLL."""
    out = []
    for x in cell["search"]:
        r = rows.get(x["run_id"]) or {}
        v = r.get("valid_nll")
        if v is None or not math.isfinite(float(v)) or r.get("status") == "failed":
            continue
        t = r.get("test_nll")
        out.append((float(v), None if t is None or not math.isfinite(float(t)) else float(t)))
    return out


def best_of_n_weights(N: int, n: int) -> np.ndarray:
    """P(the k-th smallest of N values is the minimum of n uniform draws with replacement), k = 1..N."""
    k = np.arange(1, N + 1)
    return ((N - k + 1) / N) ** n - ((N - k) / N) ** n


def tuning_curve(valid: list[float], test: list[float | None], a: float = -math.inf,
                 b: float = math.inf) -> list[dict]:
    """Rows n = 1..N: expected best validation NLL (opda) with its band, and the implied test NLL.
    [a, b]: the support of a candidate's NLL, which bounds the band (unbounded, the band of an expected
    value is infinite): a = 0 for a Bernoulli NLL, b = the untrained model's NLL (a run's best-validation
    model is never worse than its epoch 0, and every candidate of a cell starts from the same weights)."""
    from opda.nonparametric import EmpiricalDistribution
    ys = np.asarray(valid, dtype=np.float64)
    N = len(ys)
    ns = np.arange(1, N + 1)
    point = EmpiricalDistribution(ys, a=a, b=b).average_tuning_curve(ns, minimize=True)
    if N > 1:
        lo_cdf, _, hi_cdf = EmpiricalDistribution.confidence_bands(ys, CONFIDENCE, a=a, b=b,
                                                                  method="ld_equal_tailed",
                                                                  generator=np.random.default_rng(0))
        a, b = lo_cdf.average_tuning_curve(ns, minimize=True), hi_cdf.average_tuning_curve(ns, minimize=True)
        band_lo, band_hi = np.minimum(a, b), np.maximum(a, b)
    else:
        band_lo = band_hi = np.full(N, np.nan)
    order = np.argsort(ys, kind="stable")
    tests = [test[i] for i in order]
    rows = []
    for n, p, lo, hi in zip(ns, point, band_lo, band_hi):
        w = best_of_n_weights(N, int(n))
        known = all(t is not None for t, wk in zip(tests, w) if wk > 0)
        implied = float(sum(wk * t for t, wk in zip(tests, w) if wk > 0)) if known else None
        rows.append({"n": int(n), "expected_best_valid": float(p), "band_low": float(lo), "band_high": float(hi),
                     "implied_test": implied})
    return rows


def tuning_rows(data: dict) -> list[dict]:
    """tuning_curves.csv: one row per (dataset, unit, n) for every cell with at least one candidate (with the
    size axis: per (dataset, unit, budget, n), rows with a "budget")."""
    out = []
    for c in data["cells"]:
        cand = _candidates(c, data["rows"])
        if not cand:
            continue
        a, b = _support(c, data["rows"], data.get("kinds", {}).get(c["dataset"]))
        b = max(b, max(v for v, _ in cand))
        for r in tuning_curve([v for v, _ in cand], [t for _, t in cand], a, b):
            out.append({"dataset": c["dataset"], "unit": c["unit"],
                        **({"budget": c["budget"]} if data["grid"].sized else {}), "candidates": len(cand), **r})
    return out


def tuning_markdown(rows: list[dict], name=lambda d: d, unit_name=lambda u: u, halving: bool = False) -> str:
    """Per dataset and unit: the expected best validation NLL (implied test NLL) at n = 1, 2, 3, 5 and N."""
    cells = {}
    for r in rows:
        cells.setdefault((r["dataset"], r["unit"], r.get("budget")), []).append(r)
    marks = sorted({1, 2, 3, 5} | {len(v) for v in cells.values()})
    head = ["dataset", "unit", "candidates"] + [f"n = {m}" for m in marks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (d, u, b), rs in cells.items():
        by_n = {r["n"]: r for r in rs}
        cols = []
        for m in marks:
            r = by_n.get(m)
            cols.append("–" if r is None else f"{r['expected_best_valid']:.3f}"
                        + ("" if r["implied_test"] is None else f" ({r['implied_test']:.3f})"))
        lines.append("| " + " | ".join([name(d), unit_name(u) + ("" if b is None else f" ({b:,})"), str(len(rs)),
                                        *cols]) + " |")
    note = ("\nA successive-halving study: a candidate cut at a rung counts with the best validation NLL it "
            "reached by then (worse than trained to the end), so the curve is pessimistic at small n; a cut "
            "candidate has no test NLL, so the implied test NLL is shown only where no cut candidate can be "
            "chosen.\n" if halving else "")
    return ("# Tuning curves: the answer at every tuning budget (Dodge et al. 2019)\n\n"
            "Expected best validation NLL after n learning-rate candidates drawn from the study's (the average "
            "tuning curve of their empirical distribution, opda), and in brackets the expected test NLL of the "
            "candidate so chosen. Every n and the 80 % confidence band: tuning_curves.csv; figures "
            "tuning_curves_<dataset>.png. The band is opda's simultaneous 80 % confidence band on the CDF of a "
            "candidate's NLL, carried to the curve: with ~10 candidates its lower edge is bounded only by the "
            "support (0 for music), i.e. the data cannot exclude an unseen much better rate — the point curve "
            "is the estimate.\n\n" + "\n".join(lines) + "\n" + note)


def tuning_figures(rows: list[dict], out, colour, save, name=lambda d: d, unit_name=lambda u: u) -> dict:
    """tuning_curves_<dataset>.{png,svg}: one line per unit (expected best validation NLL against n), band;
    `save(fig, out, name)` writes a figure (the report's, so every figure of a study is saved alike)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    files = {}
    # one figure per dataset (with the size axis per dataset and budget: tuning_curves_<dataset>_<budget>)
    for d, b in dict.fromkeys((r["dataset"], r.get("budget")) for r in rows):
        mine = [r for r in rows if r["dataset"] == d and r.get("budget") == b]
        fig, ax = plt.subplots(figsize=(6, 4))
        for u in dict.fromkeys(r["unit"] for r in mine):
            rs = [r for r in mine if r["unit"] == u]
            n = [r["n"] for r in rs]
            ax.plot(n, [r["expected_best_valid"] for r in rs], marker="o", ms=3, color=colour(u), label=unit_name(u))
            ax.fill_between(n, [r["band_low"] for r in rs], [r["band_high"] for r in rs], color=colour(u),
                            alpha=0.15, linewidth=0)
        pts = [r["expected_best_valid"] for r in mine]
        span = max(pts) - min(pts) or 0.5
        ax.set_ylim(min(pts) - 0.3 * span, max(pts) + 0.3 * span)    # the band's lower edge is near a: clipped
        ax.set_xlabel("learning-rate candidates tried (n)")
        ax.set_ylabel("expected best validation NLL")
        ax.set_title(f"{name(d)}{'' if b is None else f', {b:,} parameters'}: tuning curves (band: 80 % "
                     "confidence)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        files.update(save(fig, out, f"tuning_curves_{d}" + ("" if b is None else f"_{b}")))
    return files
