"""One epoch of each paper unit on each music set, as a study's run trains it (one thread, the training
split evaluated every 10th epoch as a halving study does, so an epoch = training pass + validation split):
the per-epoch cost a study's estimate multiplies by its epochs (docs/STUDY.md). Median of epochs 1..E.

    python benchmarks/epoch_cost.py [--epochs 4] [--out benchmarks/results/epoch_cost-DATE.json]
    python benchmarks/epoch_cost.py --epochs 3 --units gru,mingru,minlstm --out benchmarks/results/epoch_cost_min-DATE.json
    python benchmarks/epoch_cost.py --datasets jsb --units tanh,gru,lstm,mingru,minlstm \
        --budgets 5000,20000,80000,320000 --out benchmarks/results/epoch_cost_size-DATE.json

--budgets: each unit at each recurrent-parameter budget (TrainConfig.budget, the size axis of a study:
`reproduce --param-budgets`), rows "dataset/unit@budget" with the hidden size and parameters that ran;
without it, Table 1's sizes (rows "dataset/unit"). The machine's load average is recorded before and after:
on a loaded machine the medians are upper bounds of the idle cost. The units of one dataset are timed one
after the other; compare units by their ratio within one file.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time

import torch

from gatedrnn.train import TrainConfig, train


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def one(ds: str, unit: str, budget: int | None, epochs: int, lr: float = 3e-3) -> dict:
    d = tempfile.mkdtemp()
    cfg = TrainConfig(dataset=ds, unit=unit, budget=budget, epochs=epochs, patience=0, eval_train_every=10, lr=lr)
    train(cfg, d, log=lambda m: None)
    h = [json.loads(line) for line in open(f"{d}/metrics.jsonl")]
    # an epoch that diverged records no evaluation: it is not a whole epoch's cost
    ep = [b["seconds"] - a["seconds"] + b["eval_seconds"] for a, b in zip(h, h[1:]) if "eval_seconds" in b]
    res = json.loads(open(f"{d}/result.json").read())
    return {"median_s": statistics.median(ep) if ep else None, "min_s": min(ep) if ep else None, "epochs": ep,
            "status": res.get("status"), "hidden_size": res.get("hidden_size"),
            "parameters": res.get("recurrent_parameters")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--datasets", type=_csv, default=["jsb", "nottingham", "musedata", "piano"])
    ap.add_argument("--units", type=_csv, default=["tanh", "gru", "lstm"])
    ap.add_argument("--budgets", type=lambda s: [int(x) for x in _csv(s)],
                    help="recurrent-parameter budgets, e.g. 5000,20000,80000,320000 (default: Table 1's sizes)")
    ap.add_argument("--lr", type=float, default=3e-3, help="the runs' learning rate (no effect on the cost "
                    "unless a run diverges: then its epochs after divergence are not measured)")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    rows = {}
    for ds in args.datasets:
        for budget in args.budgets or [None]:
            for unit in args.units:
                r = one(ds, unit, budget, args.epochs, args.lr)
                key = f"{ds}/{unit}" if budget is None else f"{ds}/{unit}@{budget}"
                rows[key] = {**r, "load_after": os.getloadavg()[0]}
                print(f"{key:24s} hidden {r['hidden_size']:5d}  parameters {r['parameters']:7d}  median "
                      f"{r['median_s'] or math.nan:.3f} s  min {r['min_s'] or math.nan:.3f} s  {r['status']}  "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("cpu family")), "?")
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.processor() or platform.machine(),
            "cpu_family": cpu, "avx512": "avx512f" in open("/proc/cpuinfo").read(), "cores": os.cpu_count(),
            "load_before": load_before, "load_at_end": os.getloadavg(), "torch": torch.__version__, "threads": 1,
            "epochs": args.epochs, "lr": args.lr, "niceness": os.nice(0)}
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
