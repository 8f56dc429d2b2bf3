"""The small-batch deferral of the weight gradients (kernels/autograd.py DEFER_BATCH): at batch <= 4 and a
partial dU of 64-768 KiB, deferred torch GEMMs after the loop against the in-loop sums (gathered over steps,
fused.cpp WeightBlock), forward + backward of the fused path, interleaved in one process.

    python benchmarks/bench_defer_batch.py --threads 2 --out benchmarks/results/defer-batch-t2-20261203b.json
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from pathlib import Path

import torch

from gatedrnn.kernels import autograd
from gatedrnn.nn import dispatch, make_unit
from gatedrnn.nn.bench import machine_info, time_round_robin

CELLS = [("lstm", 1, 64), ("lstm", 1, 128), ("lstm", 4, 128), ("gru", 1, 128), ("gru", 4, 128), ("tanh", 1, 256)]


def _step(u, x, params, deferred: bool):
    real = autograd.defers

    def defers(GH, H, B, element_size, threads=1):   # both modes forced: the batch rule on or off
        return real(GH, H, B, element_size, 1 if deferred else 2)

    def step():
        autograd.defers, dispatch.FORCE = defers, "fused"
        try:
            for p in params:
                p.grad = None
            out, _ = u(x)
            out.sum().backward()
        finally:
            autograd.defers, dispatch.FORCE = real, None
    return step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    res = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(), "threads": a.threads,
           "settings": {"repeats": a.repeats, "steps": 100, "inputs": "I = H", "timed": "zero grads + forward + "
                        "out.sum() + backward, the fused path", "interleaved": True}, "cells": []}
    for unit, B, H in CELLS:
        torch.manual_seed(0)
        u = make_unit(unit, input_size=H, hidden_size=H, batch_first=False)
        x = torch.randn(100, B, H)
        params = list(u.parameters())
        fns = {"deferred": _step(u, x, params, True), "in-loop": _step(u, x, params, False)}
        load0 = os.getloadavg()[0]
        t = time_round_robin(fns, {k: a.repeats for k in fns}, warmup=2)
        res["cells"].append({"unit": unit, "batch": B, "hidden": H, "times": t,
                             "load": [round(load0, 2), round(os.getloadavg()[0], 2)]})
        print(f"{unit:5s} B={B} H={H:4d}  " + "  ".join(
            f"{k}: cpu {v['cpu_median_ms']:.2f} ms (fastest {v['cpu_min_ms']:.2f})" for k, v in t.items()), flush=True)
    res["machine"]["loadavg_end"] = os.getloadavg()
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
