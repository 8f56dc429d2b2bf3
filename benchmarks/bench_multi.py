"""Per-model time: K models trained together (gatedrnn.train.train_many: one loop, stacked recurrence)
vs the same K trained one by one (gatedrnn.train.train), whole runs (data, epoch-0 and per-epoch
evaluation, checkpoints), interleaved repeats at one thread.

    OMP_NUM_THREADS=1 GATEDRNN_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_multi.py --k 5 --epochs 3 --unit gru
"""
import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from gatedrnn.train import TrainConfig, train, train_many
from gatedrnn.utils import environment

ap = argparse.ArgumentParser()
ap.add_argument("--k", type=int, default=5)
ap.add_argument("--epochs", type=int, default=3)
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--unit", default="gru")
ap.add_argument("--dataset", default="jsb")
ap.add_argument("--out", default=None, help="default: benchmarks/results/multi-UNIT.json")
a = ap.parse_args()
a.out = a.out or f"benchmarks/results/multi-{a.unit}.json"
torch.set_num_threads(1)
cfgs = [TrainConfig(dataset=a.dataset, unit=a.unit, epochs=a.epochs, lr=10 ** (-4 + 2 * k / max(a.k - 1, 1)),
                    seed=k, patience=100) for k in range(a.k)]


def training_seconds(dirs):
    """Σ over the models of their training-loop seconds (metrics.jsonl; shared wall-clock split evenly)."""
    return sum(json.loads((Path(d) / "metrics.jsonl").read_text().splitlines()[-1])["seconds"] for d in dirs)


def one_by_one(tmp):
    dirs = [tmp / f"s{k}" for k in range(a.k)]
    t0, c0 = time.perf_counter(), time.process_time()
    for c, d in zip(cfgs, dirs):
        train(c, d, log=lambda m: None)
    return time.perf_counter() - t0, time.process_time() - c0, training_seconds(dirs)


def together(tmp):
    dirs = [tmp / f"m{k}" for k in range(a.k)]
    t0, c0 = time.perf_counter(), time.process_time()
    train_many(cfgs, dirs, log=lambda m: None)
    return time.perf_counter() - t0, time.process_time() - c0, training_seconds(dirs)


warm = Path(tempfile.mkdtemp())      # load the kernels and the data once, outside the timings
train(cfgs[0].model_copy(update={"epochs": 1}), warm, log=lambda m: None)
shutil.rmtree(warm)
rows = []
for rep in range(a.repeats):           # interleaved, the order alternating: load drifts hit both alike
    for name, fn in ((("single", one_by_one), ("together", together))[::1 if rep % 2 == 0 else -1]):
        tmp = Path(tempfile.mkdtemp())
        wall, cpu, train_s = fn(tmp)
        shutil.rmtree(tmp)
        rows.append({"repeat": rep, "mode": name, "wall_s": wall, "cpu_s": cpu, "train_s": train_s})
        print(f"repeat {rep} {name:9s} wall {wall:7.2f} s  cpu {cpu:7.2f} s  training loops {train_s:7.2f} s",
              flush=True)


def summary(mode, key):
    v = [r[key] for r in rows if r["mode"] == mode]
    return {"median": statistics.median(v), "min": min(v)}


res = {"k": a.k, "unit": a.unit, "dataset": a.dataset, "epochs": a.epochs, "repeats": a.repeats, "threads": 1,
       "single": {k: summary("single", k) for k in ("wall_s", "cpu_s", "train_s")},
       "together": {k: summary("together", k) for k in ("wall_s", "cpu_s", "train_s")}, "rows": rows,
       "environment": environment(),
       "note": "whole runs: data loading, epoch-0 and per-epoch evaluation, checkpoints; cpu_s = process CPU "
               "time of the same; train_s = the training loops only (metrics.jsonl seconds)"}
for key in ("wall_s", "cpu_s", "train_s"):
    for stat in ("median", "min"):
        res[f"ratio_{key}_{stat}"] = res["together"][key][stat] / res["single"][key][stat]
    # each repeat's two neighbouring measurements share the machine's load of the moment
    by = {(r["repeat"], r["mode"]): r[key] for r in rows}
    res[f"paired_ratio_{key}_median"] = statistics.median(by[i, "together"] / by[i, "single"]
                                                          for i in range(a.repeats))
Path(a.out).parent.mkdir(parents=True, exist_ok=True)
Path(a.out).write_text(json.dumps(res, indent=2))
print(f"K={a.k} {a.unit} on {a.dataset}, {a.epochs} epochs, {a.repeats} interleaved repeats, 1 thread: paired "
      f"ratios (median) wall {res['paired_ratio_wall_s_median']:.2f}, CPU {res['paired_ratio_cpu_s_median']:.2f}; "
      f"per-model wall time together/alone = {res['ratio_wall_s_median']:.2f} (median), "
      f"{res['ratio_wall_s_min']:.2f} (min); CPU time {res['ratio_cpu_s_median']:.2f} / "
      f"{res['ratio_cpu_s_min']:.2f}; training loops only {res['ratio_train_s_median']:.2f} / "
      f"{res['ratio_train_s_min']:.2f}")
