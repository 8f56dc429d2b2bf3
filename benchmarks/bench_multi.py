"""Per-model epoch time: K models trained as one (gatedrnn.multi) vs the same K trained one by one.

    GATEDRNN_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_multi.py --k 10 --epochs 2
"""
import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from gatedrnn.multi import train_many
from gatedrnn.train import TrainConfig, train
from gatedrnn.utils import environment

ap = argparse.ArgumentParser()
ap.add_argument("--k", type=int, default=10)
ap.add_argument("--epochs", type=int, default=2)
ap.add_argument("--unit", default="gru")
ap.add_argument("--dataset", default="jsb")
ap.add_argument("--out", default="benchmarks/results/multi.json")
a = ap.parse_args()
cfgs = [TrainConfig(dataset=a.dataset, unit=a.unit, epochs=a.epochs, lr=10 ** (-4 + 2 * k / max(a.k - 1, 1)),
                    seed=k, patience=100) for k in range(a.k)]
tmp = Path(tempfile.mkdtemp())
t0 = time.perf_counter()
for k, c in enumerate(cfgs):
    train(c, tmp / f"s{k}", log=lambda m: None)
single = time.perf_counter() - t0
t0 = time.perf_counter()
train_many(cfgs, [tmp / f"m{k}" for k in range(a.k)], log=lambda m: None)
many = time.perf_counter() - t0
shutil.rmtree(tmp)
res = {"k": a.k, "unit": a.unit, "dataset": a.dataset, "epochs": a.epochs, "one_by_one_s": single,
       "as_one_s": many, "per_model_ratio": many / single, "environment": environment(),
       "note": "wall-clock of whole runs incl. data loading and per-epoch evaluation; reference (unfused) cells"}
Path(a.out).parent.mkdir(parents=True, exist_ok=True)
Path(a.out).write_text(json.dumps(res, indent=2))
print(f"K={a.k} {a.unit} on {a.dataset}, {a.epochs} epochs: one by one {single:.1f} s, as one {many:.1f} s "
      f"-> ratio {many / single:.2f} (per-model time {many / a.k:.2f} s vs {single / a.k:.2f} s)")
