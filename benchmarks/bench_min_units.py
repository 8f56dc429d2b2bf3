"""What minGRU and minLSTM cost against our fused GRU and LSTM (issue 20, section 1): forward+backward at the
music budget's matched sizes (Table 1's convention: ~20.1k recurrent parameters at the nominal input size 100,
so mingru 100, minlstm 66, gru 46, lstm 36 hidden units), batch 16, T in {50, 200, 800, 1600} steps, one
thread, every candidate interleaved repeat by repeat.

    GATEDRNN_DATA_DIR=... nice .venv/bin/python benchmarks/bench_min_units.py --repeats 9

Input: 88 binary inputs (10 % on, like a piano roll), loss = sum of the outputs (no read-out). Candidates:
  mingru, minlstm          their training path: one matrix product over all steps + the chunked scan
  gru, lstm                the fused C++ kernels (gatedrnn.kernels), the paper units' training path
  mingru GEMMs             only the two matrix products minGRU cannot avoid — W x_t + b for every step and
                           dW = (∂L/∂(Wx))ᵀ x — on its sizes: the floor of any minGRU implementation
  mingru step loop         minGRU's cell() step by step (`fused=False`; T <= 200 only), what the scan replaces
Times: ms per call, median and minimum over the repeats, wall clock and process CPU time. Writes
benchmarks/results/min_units.json and .md (or --out). Not a test: a measurement, committed with its machine.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
from pathlib import Path

import torch

from gatedrnn.nn import make_unit
from gatedrnn.nn.bench import _step_fn, machine_info, time_round_robin
from gatedrnn.nn.counting import BUDGET, TABLE1_INPUT, count_parameters, match_hidden_size

B, I, DENSITY = 16, 88, 0.1
UNITS = ("mingru", "minlstm", "gru", "lstm")


def _gemm_floor(H2: int, x: torch.Tensor):
    """The two GEMMs of minGRU's training step: wx = x Wᵀ + b (all steps) and dW = gᵀ x."""
    W = torch.empty(H2, I).uniform_(-0.1, 0.1)
    b = torch.zeros(H2)
    g = torch.randn(x.shape[0] * x.shape[1], H2)
    x2 = x.reshape(-1, I)

    def step():
        torch.addmm(b, x2, W.t())
        g.t() @ x2
    return step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=9, help="timed repeats per candidate (median, min)")
    ap.add_argument("--steps", type=int, nargs="*", default=[50, 200, 800, 1600])
    ap.add_argument("--out", default="benchmarks/results/min_units")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    sizes = {u: match_hidden_size(u, TABLE1_INPUT["music"], BUDGET["music"]) for u in UNITS}
    info = machine_info()
    rows = {}
    for T in a.steps:
        torch.manual_seed(0)
        x = (torch.rand(B, T, I) < DENSITY).float()
        fns, reps = {}, {}
        for u in UNITS:
            unit = make_unit(u, I, sizes[u])
            fns[u], reps[u] = _step_fn(unit, None, x, None, False), a.repeats
            assert unit.kernel_spec() is not None if u in ("gru", "lstm") else unit.kernel_spec() is None
            assert unit.kernel_spec() is None or unit.weight_ih.is_cpu   # (the fused path: kernels.available())
        fns["mingru GEMMs"], reps["mingru GEMMs"] = _gemm_floor(2 * sizes["mingru"], x), a.repeats
        if T <= 200:
            loop = make_unit("mingru", I, sizes["mingru"], fused=False)
            fns["mingru step loop"], reps["mingru step loop"] = _step_fn(loop, None, x, None, False), max(3, a.repeats // 3)
        times = time_round_robin(fns, reps)
        rows[T] = times
        gru = times["gru"]
        print(f"T={T}: " + ", ".join(f"{k} {v['median_ms']:.1f} ms ({v['median_ms'] / gru['median_ms']:.2f}x gru)"
                                      for k, v in times.items()), flush=True)
    info["loadavg_end"] = list(os.getloadavg())
    from gatedrnn import kernels
    res = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "machine": info,
           "kernels": {"available": kernels.available(), "error": kernels.build_error()},
           "settings": {"batch": B, "inputs": I, "input_density": DENSITY, "threads": 1, "repeats": a.repeats,
                        "loss": "sum of the outputs", "steps": a.steps},
           "hidden_size": sizes,
           "recurrent_parameters": {u: count_parameters(u, TABLE1_INPUT["music"], sizes[u]) for u in UNITS},
           "times": {str(T): r for T, r in rows.items()}}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    names = ["mingru", "minlstm", "gru", "lstm", "mingru GEMMs", "mingru step loop"]
    head = (f"{info['cpu']}, {info['logical_cpus']} logical CPUs, torch {info['torch']}, Python {info['python']}, "
            f"one thread; load average {info['loadavg_start'][0]:.2f} at the start, {info['loadavg_end'][0]:.2f} at "
            f"the end (a shared machine: the wall clock includes the time other processes held the core; the "
            f"process CPU time does not). Batch {B}, {I} inputs ({DENSITY:.0%} on), loss = sum of the outputs. "
            f"Hidden sizes matched to the music budget (Table 1, input 100): "
            + ", ".join(f"{u} {sizes[u]} ({res['recurrent_parameters'][u]:,} parameters)" for u in UNITS)
            + f". ms per call, median (min) of {a.repeats} repeats, every candidate interleaved.")
    lines = [f"# minGRU and minLSTM against the fused GRU and LSTM: forward+backward ({res['date']})", "", head,
             "", f"Command: `python benchmarks/bench_min_units.py --repeats {a.repeats}`", ""]
    for title, key in (("Process CPU time", "cpu_"), ("Wall clock", "")):
        lines += [f"## {title}", "",
                  "| T | " + " | ".join(names) + " | mingru / gru | minlstm / gru | minlstm / lstm | GEMMs / gru |",
                  "|---|" + "---|" * (len(names) + 4)]
        for T, r in rows.items():
            med = lambda k: r[k][f"{key}median_ms"]                                         # noqa: E731
            cell = lambda k: f"{med(k):.1f} ({r[k][f'{key}min_ms']:.1f})" if k in r else "—"  # noqa: E731
            ratio = lambda a_, b_: f"{med(a_) / med(b_):.2f}"                               # noqa: E731
            lines.append(f"| {T} | " + " | ".join(cell(k) for k in names) + f" | {ratio('mingru', 'gru')} | "
                         f"{ratio('minlstm', 'gru')} | {ratio('minlstm', 'lstm')} | {ratio('mingru GEMMs', 'gru')} |")
        lines.append("")
    per_step = {u: [rows[T][u]["cpu_median_ms"] / T * 1e3 for T in rows] for u in ("mingru", "minlstm", "gru", "lstm")}
    lines += ["Ratios: of the medians. CPU µs per step (median / T) at T = " + ", ".join(map(str, rows)) + ": "
              + "; ".join(f"{u} " + " / ".join(f"{v:.0f}" for v in vs) for u, vs in per_step.items()) + "."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
