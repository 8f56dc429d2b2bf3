"""What the paper's study costs on this machine: core-seconds per epoch, with a breakdown, for every
(music dataset x unit at the Table 1 sizes), "before" and "after" measured in the same run, interleaved.

    GATEDRNN_DATA_DIR=/work/shared/data nice -n 5 .venv/bin/python benchmarks/study_cost.py \\
        [--before /tmp/before/src] --repeats 3            # (git worktree add /tmp/before <commit>)

Each worker trains a run with train.train itself — the real loop (batch 16, weight noise 0.075, RMSProp,
gradient norm clipped to 1, both splits evaluated after every epoch, a checkpoint every epoch) — and reads
where its time went from the loop's timing hooks (gatedrnn.train.LoopTimer, process CPU clock), one torch
thread per process. Epoch 1 is the warm-up; the run is paused after it and resumed for as many epochs as
--min-cpu CPU seconds need (at most --max-epochs). Per epoch, mean over those epochs:
  batching       the epoch's length-bucketed batches (collation), moved to the device
  forward        forward passes and losses (weight noise, recurrence, read-out, the finiteness check)
  backward       backward passes
  optimiser      zero_grad, gradient clipping, the RMSProp step
  evaluation     the training and validation splits (eval_train_steady, eval_valid_steady)
  I/O            best.pt when improved, checkpoint.pt, metrics.jsonl, and the loop's bookkeeping ("other")
Times are process CPU seconds (core-seconds: what a study pays), so other load on the machine inflates
them less than wall-clock; each worker is a fresh process (PYTHONPATH selects the code: --before / --after),
and (dataset, unit, code) are interleaved repeat by repeat; the result keeps every repeat, the median
and the minimum.

Since the loop has its timing hooks (2026-12), the workers time the loop itself instead of a copy of it timed
in parts: the columns are the loop's phases (results before then split recurrence and read-out instead of
forward and backward, and timed evaluation and I/O outside the loop), and --before must name code that has
the hooks (a worker refuses older code; the default is the 'after' code alone).

--epoch-cost E (the measurement of the former benchmarks/epoch_cost.py, which still runs it with its own
command line): a study run's per-epoch wall time (training split evaluated every 10th epoch, lr 3e-3) for
E epochs of each unit on each music set, in this process, written to --out in epoch_cost's format
({"meta", "rows": {"dataset/unit": {"median_s", "min_s", "epochs", ...}}}).

Layout (--layout): K runs of one (dataset, unit) trained as ONE program (train.train_many with its
recurrences stacked, K models in each kernel call, forced here; one thread) against K separate one-thread
processes started together — per-model core-seconds per epoch (training + evaluation) and the wall-clock of the
whole group.

Extrapolation: the epoch counts of the running/finished paper study (results/paper/runs/*/metrics.jsonl,
read only) times the measured per-epoch cost give core-hours per (dataset, unit).

Writes <out>.json and <out>.md (default benchmarks/results/study_cost).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("jsb", "nottingham", "musedata", "piano")
UNITS = ("tanh", "gru", "lstm")
# the loop's training phases (gatedrnn.train.LoopTimer) -> the table's columns
PHASES = ("batches", "forward", "backward", "optimiser")
PARTS = {"batching": ("batches",), "forward": ("forward",), "backward": ("backward",), "optimiser": ("optimiser",)}


# ============================================================================ workers (one process each)
def _setup():
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    torch.set_num_threads(1)
    return torch


def _timed_loop(T, cfgs: list, min_cpu: float, max_epochs: int, clock) -> tuple[list[dict], float]:
    """Train cfgs (one run, or several as train_many trains them) with the loop's timing hooks: epoch 1 is
    the warm-up (first calls, caches) and is paused after; then, resuming, as many more epochs as `min_cpu`
    CPU seconds need by epoch 1's cost (at least 1, at most max_epochs). Returns the timed epochs'
    {phase: seconds} and the wall seconds of the timed call per epoch."""
    quiet = lambda m: None
    with tempfile.TemporaryDirectory() as d:
        dirs = [Path(d) / str(k) for k in range(len(cfgs))]
        warm = T.LoopTimer(time.process_time)
        T.train_many(cfgs, dirs, log=quiet, stop_after=1, timer=warm)
        n = max(1, min(max_epochs, math.ceil(min_cpu / max(sum(warm.epochs[0][p] for p in T.LoopTimer.PHASES),
                                                          1e-9))))
        timer = T.LoopTimer(clock)
        w = time.perf_counter()
        T.train_many(cfgs, dirs, log=quiet, stop_after=1 + n, timer=timer)
        return timer.epochs, (time.perf_counter() - w) / n


def _per_epoch(epochs: list[dict], K: int = 1) -> dict:
    """Mean seconds per epoch (and per model: /K) of each phase of the loop."""
    from gatedrnn.train import LoopTimer
    return {p: statistics.mean(e[p] for e in epochs) / K for p in LoopTimer.PHASES}


def _loop_module():
    """gatedrnn.train of the code under PYTHONPATH, which must have the loop's timing hooks."""
    import gatedrnn
    import gatedrnn.train as T
    if not hasattr(T, "LoopTimer"):
        raise SystemExit(f"{gatedrnn.__file__}: this code predates the training loop's timing hooks "
                         "(gatedrnn.train.LoopTimer), which study_cost.py times; compare code from then on")
    return T


def worker_epoch(dataset: str, unit: str, min_cpu: float, max_epochs: int, seed: int = 0) -> dict:
    """Per-epoch CPU seconds of one run of train.train, by the loop's phases (train.LoopTimer)."""
    _setup()
    import gatedrnn
    T = _loop_module()
    cfg = T.TrainConfig(dataset=dataset, unit=unit, lr=1e-3, seed=seed, epochs=max_epochs + 1, patience=0)
    epochs, wall = _timed_loop(T, [cfg], min_cpu, max_epochs, time.process_time)
    ph = _per_epoch(epochs)
    per = {p: ph[p] for p in PHASES}
    per["epoch_total"] = sum(per.values())
    ds = T.prepare_data(cfg)
    return {"dataset": dataset, "unit": unit, "hidden": T.model_spec(cfg, ds)["hidden_size"],
            "gatedrnn_file": gatedrnn.__file__, "epochs_timed": len(epochs),
            "train_frames": sum(len(x) for x, _ in ds.splits["train"]),
            "batches": math.ceil(len(ds.splits["train"]) / cfg.batch_size), "per_epoch": per,
            "eval_steady": ph["eval_train"] + ph["eval_valid"], "eval_train_steady": ph["eval_train"],
            "eval_valid_steady": ph["eval_valid"], "io": ph["checkpoint"], "other": ph["other"],
            "epochs": epochs, "wall_per_epoch": wall,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def worker_stacked(dataset: str, unit: str, K: int, same_seed: bool, min_cpu: float, max_epochs: int) -> dict:
    """K runs of one (dataset, unit) trained as ONE program by train.train_many, their recurrences stacked
    (one K-model kernel call per batch; forced here even where train.stacking_wins would not stack): the
    learning-rate search's K learning rates of one seed (same_seed), or K seeds. Per-model CPU seconds per
    epoch, training and evaluation."""
    _setup()
    T = _loop_module()
    from gatedrnn.nn import unit_family
    T.STACK_WINS_UP_TO = {unit_family(unit): 1 << 30}
    cfgs = [T.TrainConfig(dataset=dataset, unit=unit, lr=1e-3 * (1.3 ** k if same_seed else 1),
                          seed=0 if same_seed else k, epochs=max_epochs + 1, patience=0) for k in range(K)]
    epochs, wall = _timed_loop(T, cfgs, min_cpu, max_epochs, time.process_time)
    ph = _per_epoch(epochs, K)
    train = sum(ph[p] for p in PHASES)
    return {"dataset": dataset, "unit": unit, "K": K, "same_seed": same_seed, "epochs_timed": len(epochs),
            "train_per_epoch": train * K, "eval_steady": (ph["eval_train"] + ph["eval_valid"]) * K,
            "train_per_model": train, "eval_per_model": ph["eval_train"] + ph["eval_valid"],
            "phases_per_model": ph, "wall_per_epoch": wall,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def epoch_cost(epochs: int, out: str | None, datasets=DATASETS, units=UNITS, budgets=None, lr: float = 3e-3) -> dict:
    """benchmarks/epoch_cost.py's measurement (its command line and result file): one run of each unit on
    each dataset (at each recurrent-parameter budget of `budgets`, else Table 1's sizes) as a study's run
    trains it — one thread, lr 3e-3, the training split evaluated every 10th epoch as a halving study does —
    for `epochs` epochs in this process; an epoch = its training pass + its evaluation (wall seconds, the
    loop's own phases; checkpoint I/O apart, as `io_s`). Median of epochs 1..E; an epoch after a
    divergence is not measured."""
    torch = _setup()
    T = _loop_module()
    load_before = os.getloadavg()
    rows = {}
    for ds in datasets:
        for budget in budgets or [None]:
            for unit in units:
                cfg = T.TrainConfig(dataset=ds, unit=unit, budget=budget, epochs=epochs, patience=0,
                                    eval_train_every=10, lr=lr)
                timer = T.LoopTimer(time.perf_counter)
                with tempfile.TemporaryDirectory() as d:
                    T.train(cfg, d, log=lambda m: None, timer=timer)
                    res = json.loads((Path(d) / "result.json").read_text())
                ep = [sum(e[p] for p in (*PHASES, "eval_train", "eval_valid")) for e in timer.epochs
                      if e["eval_valid"] > 0]
                key = f"{ds}/{unit}" if budget is None else f"{ds}/{unit}@{budget}"
                med = statistics.median(ep) if ep else None
                rows[key] = {"median_s": med, "min_s": min(ep) if ep else None, "epochs": ep,
                             "io_s": [e["checkpoint"] for e in timer.epochs],
                             "phases": [{p: e[p] for p in T.LoopTimer.PHASES} for e in timer.epochs],
                             "status": res.get("status"), "hidden_size": res.get("hidden_size"),
                             "parameters": res.get("recurrent_parameters"), "load_after": os.getloadavg()[0]}
                print(f"{key:24s} hidden {res.get('hidden_size')}  median "
                      f"{med if med is not None else float('nan'):.3f} s  min "
                      f"{min(ep) if ep else float('nan'):.3f} s  {res.get('status')}  (load {os.getloadavg()[0]:.1f})",
                      flush=True)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    family = next((x.split(":", 1)[1].strip() for x in cpuinfo.splitlines() if x.startswith("cpu family")), "?")
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.processor() or platform.machine(),
            "cpu_family": family, "avx512": "avx512f" in cpuinfo, "cores": os.cpu_count(),
            "load_before": load_before, "load_at_end": os.getloadavg(), "torch": torch.__version__, "threads": 1,
            "epochs": epochs, "lr": lr, "niceness": os.nice(0),
            "timed_by": "gatedrnn.train.LoopTimer (benchmarks/study_cost.py --epoch-cost)"}
    res = {"meta": meta, "rows": rows}
    if out:
        Path(out).write_text(json.dumps(res, indent=2))
    return res


# ============================================================================ orchestration
def _run(args: list[str], src: str, timeout: float = 3600) -> dict:
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-B", __file__, *args], capture_output=True, text=True, env=env,
                       timeout=timeout, cwd=tempfile.gettempdir())
    if r.returncode != 0:
        raise RuntimeError(f"worker {args} ({src}) failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _start(args: list[str], src: str):
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-B", __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tempfile.gettempdir())


def _git(*a, cwd=REPO) -> str:
    try:
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=cwd, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _stats(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "n": len(xs), "all": xs}


def summarise(rows: list[dict]) -> dict:
    """Per (code, dataset, unit): median and minimum over the repeats of every column."""
    from gatedrnn.study.grid import HALVING_EVAL_TRAIN_EVERY
    out = {}
    for r in rows:
        key = f"{r['code']}/{r['dataset']}/{r['unit']}"
        cols = {name: sum(r["per_epoch"][f] for f in fields) for name, fields in PARTS.items()}
        cols["training"] = r["per_epoch"]["epoch_total"]
        cols["evaluation"] = r["eval_steady"]
        cols["io"] = r["io"] + r.get("other", 0.0)     # checkpoint, metrics, and the loop's bookkeeping
        cols["epoch"] = cols["training"] + cols["evaluation"] + cols["io"]
        cols["eval_over_training"] = cols["evaluation"] / cols["training"]
        if "eval_train_steady" in r:   # the two splits apart (results from 2026-12-02 on)
            cols["eval_train"], cols["eval_valid"] = r["eval_train_steady"], r["eval_valid_steady"]
            # a halving study's epoch: the training split evaluated after every HALVING_EVAL_TRAIN_EVERY-th
            cols["epoch_halving"] = cols["epoch"] - cols["eval_train"] * (1 - 1 / HALVING_EVAL_TRAIN_EVERY)
        e = out.setdefault(key, {"code": r["code"], "dataset": r["dataset"], "unit": r["unit"], "hidden": r["hidden"],
                                 "train_frames": r["train_frames"], "batches": r["batches"], "cols": {}})
        for k, v in cols.items():
            e["cols"].setdefault(k, []).append(v)
    for e in out.values():
        e["cols"] = {k: _stats(v) for k, v in e["cols"].items()}
    return out


def paper_epochs(runs_dir: Path) -> dict:
    """Epoch counts of the paper study's runs (read only): per (dataset, unit) the epochs of each run,
    whether it finished, and how many runs the protocol has (10 learning-rate candidates + 4 more seeds)."""
    out = {}
    if not runs_dir.is_dir():
        return out
    for d in sorted(runs_dir.iterdir()):
        m = re.match(r"([a-z0-9]+)-(tanh|gru|lstm)-lr([0-9.e-]+)-s(\d+)-", d.name)
        f = d / "metrics.jsonl"
        if not m or not f.exists():
            continue
        rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        epochs = max((r.get("epoch", 0) for r in rows), default=0)
        res = d / "result.json"
        status = json.loads(res.read_text()).get("status") if res.exists() else "running"
        out.setdefault(f"{m.group(1)}/{m.group(2)}", []).append({"run": d.name, "epochs": epochs, "status": status})
    return out


RUNS_PER_CELL = 14        # paper budget: 10 learning-rate candidates (seed 0) + seeds 1..4 of the selected one
MAX_EPOCHS = 500


def extrapolate(summary: dict, epochs: dict) -> dict:
    """Core-hours of the paper budget per (dataset, unit): Σ over its 14 runs of epochs x measured per-epoch
    cost (training + evaluation + I/O, median). Finished cells use their runs' epoch counts; cells with
    unfinished or missing runs get the mean epochs of the finished runs of the same unit on any dataset
    (stated per cell), and every cell also the 500-epochs-per-run upper bound."""
    finished_by_unit = {}
    for key, runs in epochs.items():
        for r in runs:
            if r["status"] != "running":
                finished_by_unit.setdefault(key.split("/")[1], []).append(r["epochs"])
    cells = {}
    for code in sorted({e["code"] for e in summary.values()}):
        for ds in DATASETS:
            for unit in UNITS:
                s = summary.get(f"{code}/{ds}/{unit}")
                if s is None:
                    continue
                cost = s["cols"]["epoch"]["median"]
                runs = epochs.get(f"{ds}/{unit}", [])
                done = [r["epochs"] for r in runs if r["status"] != "running"]
                fill = finished_by_unit.get(unit) or [MAX_EPOCHS]
                mean_fill = sum(fill) / len(fill)
                counted = done + [max(r["epochs"], mean_fill) for r in runs if r["status"] == "running"]
                missing = max(0, RUNS_PER_CELL - len(counted))
                total_epochs = sum(counted) + missing * mean_fill
                cells[f"{code}/{ds}/{unit}"] = {
                    "code": code, "dataset": ds, "unit": unit, "per_epoch_core_s": cost,
                    "eval_train_core_s": s["cols"]["eval_train"]["median"] if "eval_train" in s["cols"] else None,
                    "per_epoch_core_s_halving": (s["cols"]["epoch_halving"]["median"]
                                                 if "epoch_halving" in s["cols"] else None),
                    "runs_finished": len(done), "runs_running": len(runs) - len(done), "runs_assumed": missing,
                    "assumed_epochs_per_run": mean_fill, "epochs": total_epochs,
                    "core_hours": total_epochs * cost / 3600,
                    "core_hours_upper": RUNS_PER_CELL * MAX_EPOCHS * cost / 3600}
    return cells


def layout(args, src: str) -> list[dict]:
    out = []
    for ds, unit in args.layout_cells:
        for K in args.layout_k:
            for rep in range(args.layout_repeats):
                for same in (True, False):
                    r = _run(["--worker", "stacked", ds, unit, str(K), str(int(same)), str(args.min_cpu),
                              str(args.max_epochs)], src)
                    r["repeat"] = rep
                    out.append({"layout": "stacked", **r})
                    print(f"  stacked K={K} {ds}/{unit} same_seed={same}: {r['train_per_model']:.3f} s train + "
                          f"{r['eval_per_model']:.3f} s eval per model-epoch", flush=True)
                # K separate one-thread processes, started together
                w = time.perf_counter()
                procs = [_start(["--worker", "epoch", ds, unit, str(args.min_cpu), "1", str(k)], src)
                         for k in range(K)]
                res = []
                for p in procs:
                    so, se = p.communicate(timeout=7200)
                    if p.returncode != 0:
                        raise RuntimeError(se[-3000:])
                    res.append(json.loads(so.strip().splitlines()[-1]))
                wall = time.perf_counter() - w
                tr = [r["per_epoch"]["epoch_total"] for r in res]
                ev = [r["eval_steady"] for r in res]
                out.append({"layout": "separate", "dataset": ds, "unit": unit, "K": K, "repeat": rep,
                            "train_per_model": statistics.mean(tr), "eval_per_model": statistics.mean(ev),
                            "group_wall_s": wall, "maxrss_mb": [r["maxrss_mb"] for r in res]})
                print(f"  separate K={K} {ds}/{unit}: {statistics.mean(tr):.3f} s train + {statistics.mean(ev):.3f}"
                      f" s eval per model-epoch (group wall {wall:.0f} s)", flush=True)
    return out


def _h(x: float, d: int) -> str:
    return "–" if math.isnan(x) else f"{x:.{d}f}"


def markdown(res: dict) -> str:
    m = res["machine"]
    L = [f"# Study cost ({res['date']})", "",
         f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['isa']}), torch {m['torch']}, Python "
         f"{m['python']}, one torch thread per process, nice {m['nice']}. Load average at start "
         f"{tuple(m['loadavg_start'])}, at end {tuple(res['loadavg_end'])}.",
         (f"Before: {res['before']['label']}; after: {res['after']['label']}. " if res.get("before") else
          f"Code: {res['after']['label']}. ") + f"{res['settings']['repeats']} repeats, "
         "interleaved; core-seconds (process CPU time) per epoch, median (minimum).", ""]
    S = res["summary"]
    cols = [*PARTS, "training", "evaluation", "io", "epoch"]
    L.append("| dataset | unit | H | code | " + " | ".join(cols) + " | eval / training |")
    L.append("|---|---|---|---|" + "---|" * (len(cols) + 1))
    f = lambda s: f"{s['median']:.3f} ({s['min']:.3f})"
    for ds in DATASETS:
        for unit in UNITS:
            for code in ("before", "after"):
                s = S.get(f"{code}/{ds}/{unit}")
                if s is None:
                    continue
                c = s["cols"]
                L.append(f"| {ds} | {unit} | {s['hidden']} | {code} | " + " | ".join(f(c[k]) for k in cols)
                         + f" | {c['eval_over_training']['median']:.2f} |")
    split = [(ds, unit, S[f"after/{ds}/{unit}"]) for ds in DATASETS for unit in UNITS
             if f"after/{ds}/{unit}" in S and "eval_train" in S[f"after/{ds}/{unit}"]["cols"]]
    if split:
        from gatedrnn.study.grid import HALVING_EVAL_TRAIN_EVERY as K
        L += ["", f"Evaluation by split ({res['after']['label']}): the training split's NLL after every epoch is "
              f"a learning curve only; a halving study (`--search halving`) evaluates it after every {K}th epoch "
              "(`--eval-train-every`), the validation split after every epoch. Core-seconds per epoch, median (min):",
              "", f"| dataset | unit | eval: train split | eval: valid split | epoch (train split every epoch) | "
              f"epoch (train split every {K}th) | ratio |", "|---|---|---|---|---|---|---|"]
        for ds, unit, s_ in split:
            c = s_["cols"]
            L.append(f"| {ds} | {unit} | {f(c['eval_train'])} | {f(c['eval_valid'])} | {f(c['epoch'])} | "
                     f"{f(c['epoch_halving'])} | {c['epoch_halving']['median'] / c['epoch']['median']:.2f} |")
    if res.get("before"):
        L += ["", "Speed-up (before / after, medians of the epoch incl. evaluation and I/O; training only; "
              "evaluation only):", "", "| dataset | unit | epoch | training | evaluation |", "|---|---|---|---|---|"]
    for ds in DATASETS if res.get("before") else ():
        for unit in UNITS:
            b, a = S.get(f"before/{ds}/{unit}"), S.get(f"after/{ds}/{unit}")
            if b and a:
                r = lambda k: b["cols"][k]["median"] / a["cols"][k]["median"]
                L.append(f"| {ds} | {unit} | {r('epoch'):.1f}x | {r('training'):.1f}x | {r('evaluation'):.1f}x |")
    if res.get("layout"):
        L += ["", "Layout: K runs as one program (train_many, recurrences stacked) vs K separate one-thread processes started together "
              "(per model-epoch core-seconds, median (min) over repeats; 'same seed' = identical batch order, as "
              "the learning-rate search; else one seed per model, as the seed repeats):", "",
              "| dataset/unit | K | layout | training | evaluation | total | group wall s |", "|---|---|---|---|---|---|---|"]
        groups = {}
        for r in res["layout"]:
            name = r["layout"] if r["layout"] == "separate" else f"one program ({'same seed' if r['same_seed'] else 'K seeds'})"
            groups.setdefault((f"{r['dataset']}/{r['unit']}", r["K"], name), []).append(r)
        for (cell, K, name), rs in groups.items():
            tr = [r["train_per_model"] for r in rs]
            ev = [r["eval_per_model"] for r in rs]
            tot = [a + b for a, b in zip(tr, ev)]
            wall = [r["group_wall_s"] for r in rs if "group_wall_s" in r]
            g = lambda xs: f"{statistics.median(xs):.3f} ({min(xs):.3f})"
            L.append(f"| {cell} | {K} | {name} | {g(tr)} | {g(ev)} | {g(tot)} | "
                     f"{statistics.median(wall):.0f} |" if wall else f"| {cell} | {K} | {name} | {g(tr)} | {g(ev)} | "
                     f"{g(tot)} | |")
    if res.get("extrapolation"):
        L += ["", "Paper budget (4 music sets x 3 units x 14 runs: 10 learning-rate candidates + 4 more seeds), "
              "core-hours = epochs x measured per-epoch cost (median). Epochs from results/paper/runs (finished "
              "runs as recorded; running or missing runs: the mean epochs of the finished runs of that unit); "
              "upper = every run 500 epochs:", "",
              "| dataset | unit | runs finished/running/assumed | epochs | before core-h | after core-h | "
              "before upper | after upper |", "|---|---|---|---|---|---|---|---|"]
        X = res["extrapolation"]
        tot = {"before": 0.0, "after": 0.0, "before_u": 0.0, "after_u": 0.0}
        for ds in DATASETS:
            for unit in UNITS:
                b, a = X.get(f"before/{ds}/{unit}"), X.get(f"after/{ds}/{unit}")
                if not a:
                    continue
                b = b or {"core_hours": math.nan, "core_hours_upper": math.nan}   # after only (--before '')
                tot["before"] += b["core_hours"]
                tot["after"] += a["core_hours"]
                tot["before_u"] += b["core_hours_upper"]
                tot["after_u"] += a["core_hours_upper"]
                L.append(f"| {ds} | {unit} | {a['runs_finished']}/{a['runs_running']}/{a['runs_assumed']} | "
                         f"{a['epochs']:.0f} | {_h(b['core_hours'], 2)} | {a['core_hours']:.2f} | "
                         f"{_h(b['core_hours_upper'], 1)} | {a['core_hours_upper']:.1f} |")
        L.append(f"| **all** | | | | **{_h(tot['before'], 1)}** | **{tot['after']:.1f}** | {_h(tot['before_u'], 0)} | "
                 f"{tot['after_u']:.0f} |")
    L += ["", f"Reproduce: `{res['settings']['command']}`", ""]
    return "\n".join(L)


def machine() -> dict:
    import torch
    cpu, flags = platform.processor(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    except OSError:
        pass
    isa = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "SSE")
    cxx = subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    return {"cpu": cpu, "isa": isa, "logical_cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(), "compiler": cxx[0] if cxx else None,
            "nice": os.nice(0), "loadavg_start": os.getloadavg()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="",
                    help="src/ of the 'before' code (a git worktree of a commit with train.LoopTimer); '' (default) = "
                         "measure the 'after' code only")
    ap.add_argument("--after", default=str(REPO / "src"), help="src/ of the 'after' code")
    ap.add_argument("--before-label", default="before")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--units", default=",".join(UNITS))
    ap.add_argument("--min-cpu", type=float, default=2.0, help="time whole epochs until this many CPU seconds")
    ap.add_argument("--max-epochs", type=int, default=20)
    ap.add_argument("--layout", default="nottingham/gru,jsb/gru", help="cells for the layout comparison ('' = none)")
    ap.add_argument("--layout-k", default="5,10")
    ap.add_argument("--layout-repeats", type=int, default=2)
    ap.add_argument("--runs", default=str(REPO / "results" / "paper" / "runs"),
                    help="the paper study's run directories (read only), for the epoch counts")
    ap.add_argument("--out", help="<out>.json and <out>.md (default benchmarks/results/study_cost); with "
                    "--epoch-cost the .json (default: none written)")
    ap.add_argument("--epoch-cost", type=int, metavar="E",
                    help="only the per-epoch wall time of a study's run, E epochs of each unit on each music set in "
                         "this process (benchmarks/epoch_cost.py's measurement and file); --out is then the .json")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.epoch_cost:
        epoch_cost(a.epoch_cost, a.out, datasets=a.datasets.split(","), units=a.units.split(","))
        return 0
    if a.worker:
        kind, rest = a.worker[0], a.worker[1:]
        if kind == "epoch":
            ds, unit, min_cpu, max_epochs = rest[:4]
            seed = int(rest[4]) if len(rest) > 4 else 0
            r = worker_epoch(ds, unit, float(min_cpu), int(max_epochs), seed)
        else:
            ds, unit, K, same, min_cpu, max_epochs = rest
            r = worker_stacked(ds, unit, int(K), bool(int(same)), float(min_cpu), int(max_epochs))
        print(json.dumps(r))
        return 0

    a.layout_cells = [tuple(c.split("/")) for c in a.layout.split(",") if c]
    a.layout_k = [int(k) for k in a.layout_k.split(",") if k]
    codes = {"before": a.before, "after": a.after} if a.before else {"after": a.after}
    res = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
           "before": {"src": a.before, "label": a.before_label,
                      "commit": _git("rev-parse", "HEAD", cwd=a.before) if a.before else None} if a.before else None,
           "after": {"src": a.after, "label": f"{_git('rev-parse', '--short', 'HEAD')} (working tree)",
                     "commit": _git("rev-parse", "HEAD"), "dirty": bool(_git("status", "--porcelain", "--", "src"))},
           "settings": {"repeats": a.repeats, "min_cpu": a.min_cpu, "max_epochs": a.max_epochs, "threads": 1,
                        "timed_by": "gatedrnn.train.LoopTimer", "batch_size": 16, "eval_batch_size": 64, "weight_noise": 0.075,
                        "command": "GATEDRNN_DATA_DIR=... nice -n 5 python " + shlex.join(
                            [str(Path(__file__).relative_to(REPO))] + (argv if argv is not None else sys.argv[1:]))},
           "rows": [], "loadavg": []}
    cells = [(d, u) for d in a.datasets.split(",") for u in a.units.split(",")]
    print(f"study cost: {len(cells)} cells x {a.repeats} repeats x {'/'.join(codes)}; load {os.getloadavg()}", flush=True)
    for rep in range(a.repeats):
        order = tuple(codes) if rep % 2 == 0 else tuple(codes)[::-1]
        for i, (ds, unit) in enumerate(cells):
            for code in (order if i % 2 == 0 else order[::-1]):
                r = _run(["--worker", "epoch", ds, unit, str(a.min_cpu), str(a.max_epochs)], codes[code])
                r.update(code=code, repeat=rep, loadavg=os.getloadavg())
                res["rows"].append(r)
                p = r["per_epoch"]
                print(f"[{rep}] {code:6s} {ds:10s} {unit:4s} train {p['epoch_total']:7.3f}  eval {r['eval_steady']:7.3f}"
                      f"  io {r['io']:.3f}  (load {r['loadavg'][0]:.1f})", flush=True)
        res["loadavg"].append(os.getloadavg())
    res["summary"] = summarise(res["rows"])
    if a.layout_cells:
        print("layout:", flush=True)
        res["layout"] = layout(a, a.after)
    res["paper_epochs"] = paper_epochs(Path(a.runs))
    res["extrapolation"] = extrapolate(res["summary"], res["paper_epochs"])
    res["loadavg_end"] = os.getloadavg()
    out = Path(a.out or REPO / "benchmarks" / "results" / "study_cost")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    md = markdown(res)
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
