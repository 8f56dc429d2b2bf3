"""What the trained units do with time: the paper's "shortcut path" argument measured (issue 11).

    gatedrnn analyze results/paper --out results/paper/analysis        # the Table-2 runs of a study
    gatedrnn analyze runs/jsb-gru runs/jsb-lstm --out analysis/         # or any run directories

Three measures, on the test split, every unit side by side (CSV + PNG + SVG):

- gradient_flow: ‖∂ℓ_t/∂h_{t−k}‖ against the distance k. The paper explains the gated units' advantage by
  additive paths that carry the error back many steps without vanishing; this is that claim as a curve.
  From a window start s (state h_s reached by running the model over x_1..x_s), the unit runs on from
  h_s as a leaf and ℓ_{s+k} (the NLL of step s+k) is differentiated with respect to it, for k = 0..K.
  The LSTM's cell state c_s is held fixed: the derivative is the partial one along h, as the paper's
  argument is stated. Median and quartiles over windows (several starts per test sequence).
- context: test NLL when the state is reset to zero every k steps (k = 1, 2, 4, …, full length): how much
  of each unit's NLL comes from context longer than k steps (k = 1 is a unit that uses no context).
- gates: the distribution of each gate's activations over the test steps (GRU z, r; LSTM i, f, o; also
  the ablation variants' gates), the fraction saturated (< 0.05 or > 0.95), and each hidden unit's
  effective time scale from its mean retention a (LSTM: a = mean f_t; GRU: a = 1 − mean z_t;
  τ = −1 / ln a steps: the decay time of what the state keeps per step).
"""
from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from .model import SequenceModel

SATURATION = 0.05          # a gate below this or above 1 − this counts as saturated
MAX_DISTANCE = 100         # k of the gradient-flow curve: 0..MAX_DISTANCE
WINDOW_STARTS = (10, 60, 110, 160)


# ------------------------------------------------------------------------------------ measures
def gradient_flow(model: SequenceModel, pairs: Sequence[tuple[np.ndarray, np.ndarray]], *,
                  max_distance: int = MAX_DISTANCE, starts: Iterable[int] = WINDOW_STARTS,
                  max_windows: int = 256) -> np.ndarray:
    """‖∂ℓ_{s+k}/∂h_s‖ for k = 0..max_distance: an array (windows, max_distance + 1), one row per window
    (sequence, start s) whose sequence has at least s + max_distance steps; h_s is the state after the
    first s inputs and ℓ_{s+k} the NLL scored from the state k steps later. float64 throughout. Rows are
    independent sequences, so one backward of the batch's summed ℓ gives every row's own gradient."""
    model = copy.deepcopy(model).double().eval()   # float64 on a copy: the caller's model is left as it is
    rnn, head = model.rnn, model.head
    rows = []
    K = max_distance
    for s in starts:
        if s < 1:
            raise ValueError(f"window starts must be >= 1 (a state after at least one step), got {s}")
        idx = [i for i, (x, _) in enumerate(pairs) if len(x) >= s + K]
        idx = idx[: max(0, max_windows - sum(len(r) for r in rows))]
        if not idx:
            continue
        x = torch.as_tensor(np.stack([pairs[i][0][: s + K] for i in idx]), dtype=torch.float64)
        y = torch.as_tensor(np.stack([pairs[i][1][: s + K] for i in idx]), dtype=torch.float64)
        with torch.no_grad():                       # h_s: the state after the first s inputs
            _, state = rnn(x[:, :s])
        h_s = (state[0] if isinstance(state, tuple) else state).detach().requires_grad_(True)
        # the rest of the state (the LSTM's c; lstm-fgr's c, i, f, o) is held fixed
        start = (h_s, *(z.detach() for z in state[1:])) if isinstance(state, tuple) else h_s
        out, _ = rnn(x[:, s:], start)               # the K states after inputs s+1 .. s+K
        h_all = torch.cat([h_s.unsqueeze(1), out], dim=1)   # K+1 states; state j scores target s−1+j
        nll = head.nll(head(h_all), y[:, s - 1:])   # (B, K+1): ℓ at distance k = 0..K from h_s
        g = np.empty((len(idx), K + 1))
        for k in range(K + 1):
            (grad,) = torch.autograd.grad(nll[:, k].sum(), h_s, retain_graph=k < K)
            g[:, k] = grad.norm(dim=1).numpy()
        rows.append(g)
    return np.concatenate(rows) if rows else np.empty((0, max_distance + 1))


def context_curve(model: SequenceModel, pairs, ks: Sequence[int] | None = None, batch_size: int = 64,
                  device="cpu") -> list[tuple[int, float]]:
    """[(k, NLL per step with the state reset to zero every k steps)]; the last k is the longest
    sequence (no reset: the ordinary test NLL)."""
    from .train import evaluate
    longest = max(len(x) for x, _ in pairs)
    if ks is None:
        ks = [2 ** j for j in range(int(math.log2(max(longest, 1))) + 1) if 2 ** j < longest] + [longest]
    out = []
    for k in ks:
        chunks = [(x[i: i + k], y[i: i + k]) for x, y in pairs for i in range(0, len(x), k)]
        out.append((int(k), float(evaluate(model, chunks, batch_size, device)["nll"])))
    return out


@torch.no_grad()
def gate_activations(model: SequenceModel, pairs, batch_size: int = 64) -> dict[str, np.ndarray]:
    """{gate name: activations (valid steps, H)} over the split, from the units' own cell() (traced)."""
    from .data.batching import eval_batches
    model = model.eval()
    rnn = model.rnn
    acc: dict[str, list[np.ndarray]] = {}
    for b in eval_batches(pairs, batch_size):
        x = b.inputs.to(model.head.linear.weight.dtype)
        with rnn.trace() as steps:
            rnn(x, lengths=b.lengths)
        mask = b.mask.numpy().astype(bool)                   # (B, T)
        for t, gates in enumerate(steps):
            for name, a in gates.items():
                acc.setdefault(name, []).append(a[0].numpy()[mask[:, t]])   # K = 1
    return {k: np.concatenate(v) for k, v in acc.items()}


def retention(name: str, gates: dict[str, np.ndarray]) -> np.ndarray | None:
    """Per hidden unit, the mean fraction of the state kept per step: LSTM-family f (1 where a variant
    has no forget gate is not traced: None), GRU-family and minGRU 1 − z, MGU 1 − f, minLSTM
    f' = f / (f + i)."""
    if name == "minlstm" and "f" in gates and "i" in gates:   # h_t = f'_t h_{t−1} + i'_t h̃_t
        return (gates["f"] / (gates["f"] + gates["i"])).mean(axis=0)
    if "f" in gates and not name.startswith("mgu"):
        return gates["f"].mean(axis=0)
    if "z" in gates:
        return 1.0 - gates["z"].mean(axis=0)
    if "f" in gates:                                    # mgu: h_t = (1 − f) h_{t−1} + f h̃_t
        return 1.0 - gates["f"].mean(axis=0)
    return None


def time_scale(a: np.ndarray) -> np.ndarray:
    """τ = −1 / ln a (steps): after τ steps a state component keeps 1/e of itself (a = retention)."""
    a = np.clip(a, 1e-12, 1 - 1e-12)
    return -1.0 / np.log(a)


# ------------------------------------------------------------------------------------ runs
def table2_runs(results: Path) -> list[Path]:
    """The run directories behind a study's Table 2 — each cell's seed runs and its selecting run — as the
    study lists them by run id in `reported_runs.txt`; those with a model (best.pt) and a result."""
    listing = results / "reported_runs.txt"
    if not listing.exists():
        raise FileNotFoundError(f"{listing} is missing (expected a results directory built by `gatedrnn reproduce`; "
                                f"`gatedrnn report {results}` writes it)")
    runs = []
    for line in listing.read_text().splitlines():
        d = results / line.strip()
        if line.strip() and (d / "best.pt").exists() and (d / "result.json").exists():
            runs.append(d)
    return runs


def analyze_runs(run_dirs: Sequence[Path], out: Path, *, max_distance: int = MAX_DISTANCE,
                 max_sequences: int | None = None, log=print) -> dict[str, Path]:
    """Run the three measures on every run, write CSVs and figures into `out`; returns the files."""
    from .train import load_run, prepare_data
    out.mkdir(parents=True, exist_ok=True)
    flow_rows, ctx_rows, gate_rows, tau_rows = [], [], [], []
    data_cache: dict = {}
    for run in run_dirs:
        cfg, spec, model = load_run(run)
        key = (cfg.dataset, cfg.data_dir, cfg.limit_sequences, cfg.crop_length)
        if key not in data_cache:
            data_cache[key] = prepare_data(cfg).splits["test"]
        test = data_cache[key][:max_sequences] if max_sequences else data_cache[key]
        tag = dict(dataset=cfg.dataset, unit=cfg.unit, seed=cfg.seed, run=Path(run).name)
        log(f"analyze {tag['run']}: gradient flow, context, gates")
        g = gradient_flow(model, test, max_distance=max_distance)
        if len(g):
            q = np.quantile(g, [0.25, 0.5, 0.75], axis=0)
            flow_rows += [{**tag, "k": k, "q25": q[0, k], "median": q[1, k], "q75": q[2, k], "windows": len(g)}
                          for k in range(g.shape[1])]
        ctx_rows += [{**tag, "k": k, "nll": v} for k, v in context_curve(model, test)]
        acts = gate_activations(model, test)
        for name, a in acts.items():
            gate_rows.append({**tag, "gate": name, "mean": float(a.mean()), "q25": float(np.quantile(a, 0.25)),
                              "median": float(np.median(a)), "q75": float(np.quantile(a, 0.75)),
                              "saturated_low": float((a < SATURATION).mean()),
                              "saturated_high": float((a > 1 - SATURATION).mean()), "steps": int(a.shape[0])})
        r = retention(cfg.unit, acts)
        if r is not None:
            tau_rows += [{**tag, "hidden": j, "retention": float(r[j]), "time_scale": float(time_scale(r[j:j + 1])[0])}
                         for j in range(len(r))]
    files = {}
    for name, rows in (("gradient_flow", flow_rows), ("context", ctx_rows), ("gates", gate_rows),
                       ("time_scales", tau_rows)):
        if rows:
            p = out / f"{name}.csv"
            with open(p, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
            files[name] = p
    files.update(_figures(out, flow_rows, ctx_rows, tau_rows))
    return files


# ------------------------------------------------------------------------------------ figures
UNIT_COLORS = {"tanh": "#d62728", "gru": "#1f77b4", "lstm": "#2ca02c"}
# the rest of matplotlib's tab10 cycle, for units beyond the paper's three (ablation variants)
OTHER_COLORS = ("#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def unit_color(unit: str, units: Sequence[str]) -> str:
    """The paper's units keep their colours; any other unit takes the next colour of OTHER_COLORS in the
    order of `units` (the study's, or a figure's), so no two units of a figure share one."""
    if unit in UNIT_COLORS:
        return UNIT_COLORS[unit]
    others = [u for u in units if u not in UNIT_COLORS]
    return OTHER_COLORS[others.index(unit) % len(OTHER_COLORS)] if unit in others else OTHER_COLORS[4]


def _by(rows, *keys):
    groups: dict = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


def _figures(out: Path, flow_rows, ctx_rows, tau_rows) -> dict[str, Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    files = {}
    datasets = sorted({r["dataset"] for r in flow_rows + ctx_rows + tau_rows})
    units = sorted({r["unit"] for r in flow_rows + ctx_rows + tau_rows})
    _color = lambda unit: unit_color(unit, units)
    specs = [("gradient_flow", flow_rows, "distance k (steps)", "‖∂ℓ_t / ∂h_{t−k}‖ (median)"),
             ("context", ctx_rows, "state reset every k steps", "test NLL (nats/step)"),
             ("time_scales", tau_rows, "effective time scale τ (steps, log)", "hidden units (fraction)")]
    for name, rows, xlabel, ylabel in specs:
        if not rows:
            continue
        fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 3.8), squeeze=False)
        for ax, ds in zip(axes[0], datasets):
            for (unit,), rs in sorted(_by([r for r in rows if r["dataset"] == ds], "unit").items()):
                if name == "time_scales":
                    tau = np.array([r["time_scale"] for r in rs])
                    bins = np.logspace(0, max(1.0, np.log10(max(tau.max(), 10))), 30)
                    ax.hist(np.clip(tau, 1, None), bins=bins, histtype="step", color=_color(unit), label=unit,
                            weights=np.full(len(tau), 1 / len(tau)))
                    ax.set_xscale("log")
                    continue
                field = "median" if name == "gradient_flow" else "nll"
                by_k = _by(rs, "k")
                ks = sorted(k for (k,) in by_k)
                # seeds pooled: the median of the per-seed medians (gradient flow), the mean NLL (context)
                agg = [np.median([r[field] for r in by_k[(k,)]]) if name == "gradient_flow"
                       else np.mean([r[field] for r in by_k[(k,)]]) for k in ks]
                ax.plot(ks, agg, color=_color(unit), label=unit, marker="o" if name == "context" else None, ms=3)
                if name == "gradient_flow":
                    lo = [np.median([r["q25"] for r in by_k[(k,)]]) for k in ks]
                    hi = [np.median([r["q75"] for r in by_k[(k,)]]) for k in ks]
                    ax.fill_between(ks, lo, hi, color=_color(unit), alpha=0.15, lw=0)
            if name == "gradient_flow":
                ax.set_yscale("log")
            if name == "context":
                ax.set_xscale("log", base=2)
            ax.set_title(ds)
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        axes[0][0].set_ylabel(ylabel)
        fig.tight_layout()
        for ext in ("png", "svg"):
            p = out / f"{name}.{ext}"
            with matplotlib.rc_context({"svg.hashsalt": name}):   # a rebuild changes only what the data does
                fig.savefig(p, dpi=110, metadata={"Date": None} if ext == "svg" else None)
            files[f"{name}.{ext}"] = p
        plt.close(fig)
    return files
