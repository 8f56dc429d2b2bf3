"""One epoch of each paper unit on each music set, as a study's run trains it (one thread, the training
split evaluated every 10th epoch as a halving study does, so an epoch = training pass + validation split):
the per-epoch cost a study's estimate multiplies by its epochs (docs/STUDY.md). Median of epochs 1..E.

    python benchmarks/epoch_cost.py [--epochs 4] [--units tanh,gru,lstm] [--datasets jsb,nottingham,musedata,piano]
                                    [--out benchmarks/results/epoch_cost-DATE.json]

The units of one dataset are timed one after the other; compare units by their ratio within one file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import torch

from gatedrnn.train import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--units", default="tanh,gru,lstm")
    ap.add_argument("--datasets", default="jsb,nottingham,musedata,piano")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    rows = {}
    for ds in args.datasets.split(","):
        for unit in args.units.split(","):
            d = tempfile.mkdtemp()
            cfg = TrainConfig(dataset=ds, unit=unit, epochs=args.epochs, patience=0, eval_train_every=10, lr=3e-3)
            train(cfg, d, log=lambda m: None)
            h = [json.loads(line) for line in open(f"{d}/metrics.jsonl")]
            ep = [b["seconds"] - a["seconds"] + b["eval_seconds"] for a, b in zip(h, h[1:])]
            rows[f"{ds}/{unit}"] = {"median_s": statistics.median(ep), "min_s": min(ep), "epochs": ep}
            print(f"{ds:10s} {unit:5s} median {statistics.median(ep):.3f} s  min {min(ep):.3f} s", flush=True)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("cpu family")), "?")
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.processor() or platform.machine(),
            "cpu_family": cpu, "avx512": "avx512f" in open("/proc/cpuinfo").read(), "cores": os.cpu_count(),
            "load_at_end": os.getloadavg(), "torch": torch.__version__, "threads": 1, "epochs": args.epochs,
            "load_at_start": load0}
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
