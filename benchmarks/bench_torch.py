"""Ours against torch.nn, forward+backward, on the same shapes (issue 21, section 2).

    python benchmarks/bench_torch.py --suite paper single --threads 1 --out benchmarks/results/torch-t1.json
    python benchmarks/bench_torch.py --suite layers --threads 2 --out benchmarks/results/torch-layers-t2.json
    python benchmarks/bench_torch.py --report benchmarks/results/torch-t1.json [more.json ...]   # Markdown

Suites (time-major input (T, B, I) without grad, T = 100, loss = sum of the outputs, float32):
  paper   the paper's music sizes, I = 88: LSTM 36, GRU 46, tanh 100; batch 1, 16, 64
  single  one layer, one direction, I = H: H 32 ... 1024, batch 1, 16, 64 (at H = 1024 one repeat after the
          warm-up; before the packed operands of 2026-12-03 the GEMM path only: the fused kernel took 2.6-4.9x
          its time there in the first pass)
  big     H = I = 1024, all three paths (--batch), one repeat after the warm-up
  layers  the torch.nn-shaped modules (gatedrnn.LSTM / GRU / TanhRNN, through the dispatch) against
          torch.nn's: 1 layer bidirectional, 2 layers uni- and bidirectional, I = H, --hidden, --batch

Units (paper, single): the defaults `gatedrnn.LSTM` / `GRU` / `TanhRNN` compute — the peephole LSTM
("lstm") and the paper's GRU ("gru", reset before U) — and the forms torch.nn computes: "lstm-np"
(no peepholes) and "gru-ra" (reset after, one bias per gate). torch.nn.LSTM has no peepholes and
torch.nn.GRU is the reset-after form, so those two rows compare like with like.

Paper / single cells time both of our paths, the fused kernel and the GEMM path (the dispatch forced:
`gatedrnn.nn.dispatch.FORCE`), and torch.nn, interleaved; the report takes "ours" as the path
`dispatch.gemm_wins` picks for the cell — the rule set from these figures. Layers cells time the public
module as it dispatches. Every time: median and fastest of the repeats, wall clock and process CPU time;
the machine, versions and the load average at the start and end of each cell are recorded.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path

import torch

import gatedrnn
from gatedrnn import kernels
from gatedrnn.nn import dispatch, make_unit
from gatedrnn.nn.bench import gemm_rate, machine_info, time_round_robin

T = 100
NN = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "tanh": torch.nn.RNN}
OURS = {"lstm": gatedrnn.LSTM, "gru": gatedrnn.GRU, "tanh": gatedrnn.TanhRNN}
KIND = {"lstm": "lstm", "lstm-np": "lstm", "gru": "gru", "gru-ra": "gru", "tanh": "tanh"}
PAPER_H = {"lstm": 36, "lstm-np": 36, "gru": 46, "gru-ra": 46, "tanh": 100}


def _load():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _fb(module, x, params):
    def step():
        for p in params:
            p.grad = None
        out, _ = module(x)
        out.sum().backward()
    return step


def _forced(path, fn):
    def step():
        dispatch.FORCE = path
        try:
            fn()
        finally:
            dispatch.FORCE = None
    return step


def cell_single(unit: str, B: int, I: int, H: int, repeats: int, skip_fused: bool = False) -> dict:
    torch.manual_seed(0)
    u = make_unit(unit, input_size=I, hidden_size=H, batch_first=False)
    tn = NN[KIND[unit]](I, H)
    x = torch.randn(T, B, I)
    fns = {}
    if not skip_fused:
        fns["fused"] = _forced("fused", _fb(u, x, list(u.parameters())))
    fns["gemm"] = _forced("gemm", _fb(u, x, list(u.parameters())))
    fns["torch.nn"] = _fb(tn, x, list(tn.parameters()))
    l0 = _load()
    t = time_round_robin(fns, {k: repeats for k in fns}, warmup=1)
    return {"unit": unit, "kind": KIND[unit], "batch": B, "inputs": I, "hidden": H, "steps": T, "layers": 1,
            "bidirectional": False, "times": t, "load": [l0, _load()]}


def cell_layers(kind: str, B: int, H: int, layers: int, bidir: bool, repeats: int) -> dict:
    torch.manual_seed(0)
    ours = OURS[kind](H, H, layers, bidirectional=bidir)
    tn = NN[kind](H, H, layers, bidirectional=bidir)
    x = torch.randn(T, B, H)
    fns = {"ours": _fb(ours, x, list(ours.parameters())), "torch.nn": _fb(tn, x, list(tn.parameters()))}
    l0 = _load()
    t = time_round_robin(fns, {k: repeats for k in fns}, warmup=1)
    return {"unit": kind, "kind": kind, "batch": B, "inputs": H, "hidden": H, "steps": T, "layers": layers,
            "bidirectional": bidir, "times": t, "load": [l0, _load()],
            "paths": _paths(ours, x)}


def _paths(module, x) -> list[str]:
    """The paths the module's layers take on x (the dispatch's answer, recorded with the cell)."""
    seen = []
    orig = dispatch.route

    def spy(*a, **k):
        seen.append(orig(*a, **k))
        return seen[-1]
    dispatch.route = spy
    try:
        with torch.no_grad():
            module(x)
    finally:
        dispatch.route = orig
    return seen


def run(suites, threads: int, repeats: int, units, hidden, batches, out: Path, log=print) -> dict:
    """Every cell of the suites; the result file is rewritten after each cell, and cells already in it
    (same suite, unit, shape, threads) are kept, not re-measured (a run cut short resumes)."""
    torch.set_num_threads(threads)
    ok = kernels.available()
    res = json.loads(out.read_text()) if out.exists() else None
    if res is None:
        info = machine_info()
        info["kernel_available"] = ok
        info["gemm_gflops"] = gemm_rate()
        info["gatedrnn"] = gatedrnn.__version__
        res = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "machine": info, "threads": threads,
               "settings": {"repeats": repeats, "repeats_h1024": 1, "steps": T, "dtype": "float32",
                            "timed": "zero grads + forward + out.sum() + backward; time-major input without grad",
                            "interleaved": True, "warmup": 1,
                            "repeats_h1024_paths": "fused, gemm and torch.nn (before 2026-12-03: the GEMM path only)"},
               "cells": []}
    info = res["machine"]
    log(f"# bench_torch — {info['cpu']}, torch {info['torch']}, {threads} threads, load {_load()}, "
        f"large-GEMM {info['gemm_gflops']:.0f} GFLOP/s")
    key = lambda c: (c["suite"], c["unit"], c["batch"], c["inputs"], c["hidden"], c["layers"], c["bidirectional"])
    have = {key(c) for c in res["cells"]}

    def todo(suite, unit, B, I, H, layers=1, bidir=False):
        return (suite, unit, B, I, H, layers, bidir) not in have

    def done(suite, c):
        c["suite"] = suite
        res["cells"].append(c)
        try:
            res["machine"]["loadavg_end"] = os.getloadavg()
        except OSError:
            pass
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
        t = c["times"]
        ours = {k: v["median_ms"] for k, v in t.items() if k != "torch.nn"}
        log(f"  {c['unit']:7s} L{c['layers']}{'bi' if c['bidirectional'] else '  '} I={c['inputs']:4d} "
            f"H={c['hidden']:4d} B={c['batch']:2d}  " + "  ".join(f"{k} {v:9.1f}" for k, v in ours.items())
            + f"  torch.nn {t['torch.nn']['median_ms']:9.1f} ms  load {c['load']}", flush=True)

    for suite in suites:
        if suite == "paper":
            for unit in units:
                for B in batches:
                    if todo(suite, unit, B, 88, PAPER_H[unit]):
                        done(suite, cell_single(unit, B, 88, PAPER_H[unit], repeats))
        elif suite == "single":
            for unit in units:
                for H in hidden:
                    for B in batches:
                        if todo(suite, unit, B, H, H):
                            done(suite, cell_single(unit, B, H, H, 1 if H >= 1024 else repeats))
        elif suite == "big":       # the fused kernel at H = 1024 too (one batch size)
            for unit in units:
                for B in batches:
                    if todo(suite, unit, B, 1024, 1024):
                        done(suite, cell_single(unit, B, 1024, 1024, 1))
        elif suite == "layers":
            for kind in [k for k in ("lstm", "gru", "tanh") if k in units]:   # (--unit: the kinds to time)
                for H in hidden:
                    for B in batches:
                        for layers, bidir in ((1, True), (2, False), (2, True)):
                            if todo(suite, kind, B, H, H, layers, bidir):
                                done(suite, cell_layers(kind, B, H, layers, bidir, repeats))
    return res


# ---------------------------------------------------------------------------------------------- report
def ours_path(c: dict, threads: int) -> str:
    """The path the dispatch rule picks for a single-layer cell (what gatedrnn runs there)."""
    t = c["times"]
    if "ours" in t:
        return "ours"
    if "fused" not in t:
        return "gemm"
    fl = {"lstm": {"peepholes": c["unit"] == "lstm"}, "gru": {"reset_after": c["unit"] == "gru-ra"}, "tanh": {}}
    return "gemm" if dispatch.gemm_wins(c["kind"], fl[c["kind"]], 1, c["batch"], c["inputs"], c["hidden"],
                                        threads) else "fused"


def report(paths) -> str:
    lines = []
    for p in paths:
        res = json.loads(Path(p).read_text())
        m, th = res["machine"], res["threads"]
        lines += [f"### {Path(p).name}: {th} thread(s)", "",
                  f"{m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']}, gatedrnn {m.get('gatedrnn')}; "
                  f"large-GEMM {m['gemm_gflops']:.0f} GFLOP/s; load average {m['loadavg_start']} at the start, "
                  f"{m.get('loadavg_end')} at the end; {res['settings']['repeats']} interleaved repeats, T = "
                  f"{res['settings']['steps']}.", "",
                  "ratio = ours / torch.nn: of the medians (of the fastest repeats) [of the median CPU times]; "
                  "ms: median (fastest).", "",
                  "| unit | layers | I | H | B | fused ms | GEMM ms | torch.nn ms | ours = | ratio |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for c in res["cells"]:
            t = c["times"]
            mm = lambda k: f"{t[k]['median_ms']:.1f} ({t[k]['min_ms']:.1f})" if k in t else "—"
            path = ours_path(c, th)
            o, n = t[path], t["torch.nn"]
            lay = f"{c['layers']}{' bi' if c['bidirectional'] else ''}"
            lines.append(f"| {c['unit']} | {lay} | {c['inputs']} | {c['hidden']} | {c['batch']} | "
                         f"{mm('fused') if path != 'ours' else mm('ours')} | {mm('gemm')} | {mm('torch.nn')} | "
                         f"{path} | **{o['median_ms'] / n['median_ms']:.2f}** ({o['min_ms'] / n['min_ms']:.2f}) "
                         f"[{o['cpu_median_ms'] / n['cpu_median_ms']:.2f}] |")
        lines.append("")
    return "\n".join(lines)


def summary(paths) -> str:
    """One matrix per result file: ours / torch.nn per unit and size (rows) and batch (columns), as
    "median wall ratio / fastest-repeat ratio / median CPU-time ratio", and the path ours takes."""
    lines = []
    for p in paths:
        res = json.loads(Path(p).read_text())
        th = res["threads"]
        cells = res["cells"]
        batches = sorted({c["batch"] for c in cells})
        lines += [f"**{th} thread(s)** ({Path(p).name}; load average {res['machine']['loadavg_start']} → "
                  f"{res['machine'].get('loadavg_end')}): ours / torch.nn, median wall / fastest / median CPU time",
                  "", "| unit | layers | I | H | " + " | ".join(f"B = {b}" for b in batches) + " |",
                  "|---|---|---|---|" + "---|" * len(batches)]
        rows = {}
        for c in cells:
            k = (c["unit"], f"{c['layers']}{' bi' if c['bidirectional'] else ''}", c["inputs"], c["hidden"])
            rows.setdefault(k, {})[c["batch"]] = c
        for (unit, lay, I, H), by in rows.items():
            out = []
            for b in batches:
                c = by.get(b)
                if c is None:
                    out.append("—")
                    continue
                t = c["times"]
                path = ours_path(c, th)
                o, n = t[path], t["torch.nn"]
                tag = {"fused": "f", "gemm": "g", "ours": ""}[path]
                if path == "ours" and c.get("paths"):
                    tag = "".join(sorted({x[0] for x in c["paths"]}))
                out.append(f"{o['median_ms'] / n['median_ms']:.2f} / {o['min_ms'] / n['min_ms']:.2f} / "
                           f"{o['cpu_median_ms'] / n['cpu_median_ms']:.2f} {tag}")
            lines.append(f"| {unit} | {lay} | {I} | {H} | " + " | ".join(out) + " |")
        lines.append("")
    lines.append("f: the fused kernel, g: the GEMM path (as the dispatch rule picks), r: the reference loop.")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", nargs="+", choices=["paper", "single", "big", "layers"], default=["paper", "single"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--unit", nargs="+", default=["lstm", "lstm-np", "gru", "gru-ra", "tanh"])
    ap.add_argument("--hidden", nargs="+", type=int, default=[32, 64, 128, 256, 512, 1024])
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 16, 64])
    ap.add_argument("--out", default=None)
    ap.add_argument("--report", nargs="+", default=None, help="print the Markdown table of these result files")
    ap.add_argument("--summary", nargs="+", default=None, help="print the ratio matrix of these result files")
    a = ap.parse_args(argv)
    if a.report:
        print(report(a.report))
        return 0
    if a.summary:
        print(summary(a.summary))
        return 0
    out = Path(a.out or f"benchmarks/results/torch-t{a.threads}-{_dt.date.today().isoformat()}.json")
    run(a.suite, a.threads, a.repeats, a.unit, a.hidden, a.batch, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
