"""What each unit of the ablation study costs: forward+backward of every unit name (the paper's three and
every component ablation, docs/VARIANTS.md) at the music budget's matched size, its fused path (where the
unit declares a kernel) against the reference loop, one thread, all interleaved repeat by repeat.

    GATEDRNN_DATA_DIR=... nice .venv/bin/python benchmarks/bench_variants.py --repeats 7 --reference-repeats 3

Shape: batch 64 x 200 steps x 88 sparse inputs (10 % on), loss = sum of the outputs (no read-out), the
hidden size of the music budget as train.py sets it (Table 1: ~20.1k parameters at input size 100). Times are
milliseconds per call, wall-clock and process CPU (the median and the minimum over the repeats).
Writes benchmarks/results/variants.json and .md (or --out).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
from pathlib import Path

import torch

from gatedrnn.nn import make_unit, unit_names
from gatedrnn.nn.counting import BUDGET, TABLE1_INPUT, match_hidden_size
from gatedrnn.nn.bench import _step_fn, machine_info, time_round_robin

B, T, I = 64, 200, 88


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats of the fused paths (median, min)")
    ap.add_argument("--reference-repeats", type=int, default=3, help="timed repeats of the reference loops")
    ap.add_argument("--units", nargs="*", default=None, help="unit names (default: all)")
    ap.add_argument("--out", default="benchmarks/results/variants")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = (torch.rand(B, T, I) < 0.1).float()
    names = a.units or unit_names()
    fns, reps, meta = {}, {}, {}
    for name in names:
        H = match_hidden_size(name, TABLE1_INPUT["music"], BUDGET["music"])   # as train.py sizes it
        u = make_unit(name, input_size=I, hidden_size=H)
        fused = u.kernel_spec() is not None
        meta[name] = {"hidden_size": H, "kernel": u.kernel_spec()[0] if fused else None,
                      "kernel_flags": u.kernel_spec()[1] if fused else None}
        if fused:
            fns[f"{name}|fused"], reps[f"{name}|fused"] = _step_fn(u, None, x, None, False), a.repeats
        ref = make_unit(name, input_size=I, hidden_size=H, fused=False)
        ref.load_state_dict(u.state_dict())
        fns[f"{name}|reference"], reps[f"{name}|reference"] = _step_fn(ref, None, x, None, False), a.reference_repeats
    info = machine_info()
    times = time_round_robin(fns, reps)
    info["loadavg_end"] = list(__import__("os").getloadavg())
    res = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "machine": info,
           "settings": {"batch": B, "steps": T, "inputs": I, "input_density": 0.1, "threads": 1,
                        "repeats": a.repeats, "reference_repeats": a.reference_repeats,
                        "loss": "sum of the outputs"},
           "units": {n: {**meta[n], **{path: times[f"{n}|{path}"] for path in ("fused", "reference")
                                        if f"{n}|{path}" in times}} for n in names}}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    lines = [f"# Forward+backward per unit, fused vs reference ({res['date']})", "",
             f"{info['cpu']}, {info['logical_cpus']} logical CPUs, torch {info['torch']}, one thread; load "
             f"{info['loadavg_start'][0]:.2f} at start, {info['loadavg_end'][0]:.2f} at the end. Batch {B} x {T} "
             f"steps x {I} inputs (10 % on), loss = sum of the outputs. ms per call: median (min) of "
             f"{a.repeats} fused / {a.reference_repeats} reference repeats, interleaved; CPU = process time.",
             f"Command: `python benchmarks/bench_variants.py --repeats {a.repeats} --reference-repeats "
             f"{a.reference_repeats}`", "",
             "| unit | H | fused wall ms | fused CPU ms | reference wall ms | reference / fused |",
             "|---|---|---|---|---|---|"]
    for n in names:
        r = res["units"][n]
        f, ref = r.get("fused"), r["reference"]
        fw = f"{f['median_ms']:.0f} ({f['min_ms']:.0f})" if f else "—"
        fc = f"{f['cpu_median_ms']:.0f}" if f else "—"
        ratio = f"{ref['median_ms'] / f['median_ms']:.1f}x" if f else "no kernel"
        lines.append(f"| {n} | {r['hidden_size']} | {fw} | {fc} | {ref['median_ms']:.0f} ({ref['min_ms']:.0f}) | "
                     f"{ratio} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
