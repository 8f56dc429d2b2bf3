"""What the paper's study costs on this machine: core-seconds per epoch, with a breakdown, for every
(music dataset x unit at the Table 1 sizes), "before" and "after" measured in the same run, interleaved.

    GATEDRNN_DATA_DIR=/work/shared/data nice -n 5 .venv/bin/python benchmarks/study_cost.py \\
        --before /tmp/before/src --repeats 3            # (git worktree add /tmp/before ab66720)

One training epoch, as train.train runs it (batch 16, weight noise 0.075, RMSProp, gradient norm clipped to
1), is replicated with CPU timers around its parts, one torch thread per process:
  recurrence     the unit's forward and backward (+ drawing the weight noise)
  read-out+loss  Linear(H, 88) + Bernoulli NLL, forward and backward, the loss and its finiteness check
  optimiser      zero_grad, clip_grad_norm_, RMSProp step
  batching       length-bucketed batches (collate) of the epoch
  evaluation     evaluate() on train and valid, as the loop calls it after every epoch (steady state:
                 the second call; the first, which also collates/caches, is recorded as eval_first)
  I/O            best.pt + checkpoint.pt + metrics.jsonl (100 rows), as written after an epoch
Times are process CPU seconds (core-seconds: what a study pays), so other load on the machine inflates
them less than wall-clock; each worker is a fresh process (PYTHONPATH selects the code: --before / --after),
and (dataset, unit, code) are interleaved repeat by repeat; the result keeps every repeat, the median
and the minimum.

Layout (--layout): K runs of one (dataset, unit) trained as ONE program (gatedrnn.nn.StackedUnit, K
models in each kernel call, a stacked optimiser, one thread) against K separate one-thread processes
started together — per-model core-seconds per epoch (training + evaluation) and the wall-clock of the
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
PARTS = {   # table column -> fields of the per-epoch breakdown
    "recurrence": ("rec_fwd", "rec_bwd", "noise"),
    "read-out+loss": ("readout_fwd", "readout_bwd", "loss"),
    "optimiser": ("zero_grad", "clip", "step"),
    "batching": ("batching",),
}


# ============================================================================ workers (one process each)
def _setup():
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    torch.set_num_threads(1)
    return torch


def worker_epoch(dataset: str, unit: str, min_cpu: float, max_epochs: int, eval_calls: int, seed: int = 0) -> dict:
    """Per-epoch CPU breakdown of one training run (the loop of train.train, timed in parts)."""
    torch = _setup()
    import gatedrnn
    import gatedrnn.train as T
    from gatedrnn.data.batching import iterate_batches

    cpu = time.process_time
    cfg = T.TrainConfig(dataset=dataset, unit=unit, lr=1e-3, seed=seed)
    ds = T.prepare_data(cfg)
    spec = T.model_spec(cfg, ds)
    torch.manual_seed(cfg.seed)
    model = T.build_model(spec, cfg.weight_noise)
    opt = T.make_optimizer(cfg, model.parameters())
    tp, vp = ds.splits["train"], ds.splits["valid"]
    rnn = model.rnn
    acc = dict.fromkeys(("batching", "noise", "rec_fwd", "readout_fwd", "loss", "readout_bwd", "rec_bwd",
                         "zero_grad", "clip", "step", "epoch_total"), 0.0)
    mark = {}
    orig_fwd, orig_noise = rnn.forward, rnn.noisy_weights

    def noisy():
        t = cpu()
        r = orig_noise()
        acc["noise"] += cpu() - t
        return r

    def fwd(*a, **k):   # the recurrence's forward; a hook on its output marks where its backward starts
        t = cpu()
        h, s = orig_fwd(*a, **k)
        mark["rnn"] = cpu() - t
        if h.requires_grad:
            h.register_hook(lambda g: mark.__setitem__("hook", cpu()))
        return h, s

    rnn.noisy_weights, rnn.forward = noisy, fwd
    model.train()
    for i, b in enumerate(iterate_batches(tp, cfg.batch_size, shuffle=True, seed=99, epoch=0)):   # warm-up
        model.nll(b.inputs, b.targets, b.mask, b.lengths).sum().backward()
        if i >= 2:
            break
    opt.zero_grad(set_to_none=True)
    acc = dict.fromkeys(acc, 0.0)
    epochs = frames = batches = 0
    w0 = time.perf_counter()
    while epochs < max_epochs and (epochs == 0 or acc["epoch_total"] < min_cpu):
        epochs += 1
        e0 = cpu()
        it = iter(iterate_batches(tp, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epochs))
        while True:
            t = cpu()
            b = next(it, None)
            if b is None:
                acc["batching"] += cpu() - t
                break
            b = b.to("cpu")
            t1 = cpu()
            acc["batching"] += t1 - t
            n = int(b.lengths.sum())
            opt.zero_grad(set_to_none=True)
            t2 = cpu()
            acc["zero_grad"] += t2 - t1
            n0 = acc["noise"]
            nll = model.nll(b.inputs, b.targets, b.mask, b.lengths)
            t3 = cpu()
            acc["rec_fwd"] += mark["rnn"] - (acc["noise"] - n0)
            acc["readout_fwd"] += (t3 - t2) - mark["rnn"]
            loss = nll.sum() / n
            finite = bool(torch.isfinite(loss))
            t4 = cpu()
            acc["loss"] += t4 - t3
            loss.backward()
            t5 = cpu()
            acc["readout_bwd"] += mark["hook"] - t4
            acc["rec_bwd"] += t5 - mark["hook"]
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            finite = finite and bool(torch.isfinite(gnorm))
            t6 = cpu()
            acc["clip"] += t6 - t5
            opt.step()
            t7 = cpu()
            acc["step"] += t7 - t6
            _ = float(loss.detach()) * n
            acc["loss"] += cpu() - t7
            frames += n
            batches += 1
        acc["epoch_total"] += cpu() - e0
    wall_train = time.perf_counter() - w0
    per = {k: v / epochs for k, v in acc.items()}
    per["other"] = per["epoch_total"] - sum(v for k, v in per.items() if k != "epoch_total")
    rnn.forward, rnn.noisy_weights = orig_fwd, orig_noise
    ev, ev_wall, ev_train = [], [], []
    for _ in range(eval_calls):
        t, w = cpu(), time.perf_counter()
        T.evaluate(model, tp, cfg.eval_batch_size, "cpu")
        ev_train.append(cpu() - t)
        T.evaluate(model, vp, cfg.eval_batch_size, "cpu")
        ev.append(cpu() - t)
        ev_wall.append(time.perf_counter() - w)
    steady = min(range(1, len(ev)), key=ev.__getitem__) if len(ev) > 1 else 0
    model.train()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        hist = [{"epoch": e, "updates": 15 * e, "seconds": 0.5 * e, "eval_seconds": 0.1, "train_nll": 8.0,
                 "train_nll_running": 8.1, "valid_nll": 8.2, "lr": 1e-3} for e in range(100)]
        state = {"epoch": 100, "updates": 1500, "seconds": 50.0, "best_valid": 8.0, "best_epoch": 90,
                 "bad_epochs": 10, "skipped": 0, "history": hist, "status": "running"}
        ios = []
        for _ in range(3):
            t = cpu()
            T.atomic_torch_save(model.state_dict(), d / "best.pt")
            T._save_checkpoint(d / "checkpoint.pt", cfg.model_dump(), model, opt, state)
            T._write_metrics(d, hist)
            ios.append(cpu() - t)
    return {"dataset": dataset, "unit": unit, "hidden": spec["hidden_size"], "gatedrnn_file": gatedrnn.__file__,
            "epochs_timed": epochs, "train_frames": frames // epochs, "batches": batches // epochs,
            "per_epoch": per, "eval_first": ev[0], "eval_steady": ev[steady],
            "eval_train_steady": ev_train[steady], "eval_valid_steady": ev[steady] - ev_train[steady],
            "eval_calls": ev, "eval_wall": ev_wall, "io": min(ios), "wall_train_per_epoch": wall_train / epochs,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def worker_stacked(dataset: str, unit: str, K: int, same_seed: bool, min_cpu: float, max_epochs: int) -> dict:
    """K models of one (dataset, unit) trained as one program: StackedUnit (one kernel call for all K per
    batch), the fused read-out per model, per-model gradient clipping and a stacked RMSProp (the update
    of torch.optim.RMSprop). Per-model CPU seconds per epoch, training and evaluation."""
    torch = _setup()
    import gatedrnn.train as T
    from gatedrnn.data.batching import eval_batches, iterate_batches
    from gatedrnn.kernels import readout
    from gatedrnn.nn import StackedUnit

    cpu = time.process_time
    cfg = T.TrainConfig(dataset=dataset, unit=unit)
    ds = T.prepare_data(cfg)
    spec = T.model_spec(cfg, ds)
    models = []
    for k in range(K):
        torch.manual_seed(k)
        models.append(T.build_model(spec, cfg.weight_noise))
    st = StackedUnit.from_units([m.rnn for m in models])
    V = torch.nn.Parameter(torch.stack([m.head.linear.weight.detach() for m in models]))
    c = torch.nn.Parameter(torch.stack([m.head.linear.bias.detach() for m in models]))
    params = list(st.parameters()) + [V, c]
    sq = [torch.zeros_like(p) for p in params]
    lr = torch.tensor([1e-3 * (1.3 ** k) for k in range(K)])
    seeds = [0] * K if same_seed else list(range(K))
    tp, vp = ds.splits["train"], ds.splits["valid"]
    I, O = ds.input_size, ds.target_size

    def stack(batches):
        B = max(b.inputs.shape[0] for b in batches)
        Tn = max(b.inputs.shape[1] for b in batches)
        x, y = torch.zeros(K, B, Tn, I), torch.zeros(K, B, Tn, O)
        L = torch.zeros(K, B, dtype=torch.long)
        for k, b in enumerate(batches):
            n, t = b.inputs.shape[:2]
            x[k, :n, :t], y[k, :n, :t], L[k, :n] = b.inputs, b.targets, b.lengths
        return x, y, L

    def step(batches):
        x, y, L = stack(batches)
        Tn = x.shape[2]
        mask = torch.arange(Tn).view(1, 1, Tn) < L.unsqueeze(-1)
        out, _ = st(x, lengths=L)
        n = L.sum(1).clamp_min(1)
        loss = sum(readout.bernoulli_nll(out[k], V[k], c[k], y[k], mask[k]).sum() / n[k] for k in range(K))
        for p in params:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            norms = torch.sqrt(sum(p.grad.pow(2).flatten(1).sum(1) for p in params))
            coef = (1.0 / (norms + 1e-6)).clamp(max=1.0)
            for p, s in zip(params, sq):
                shape = (K,) + (1,) * (p.dim() - 1)
                g = p.grad * coef.view(shape)
                s.mul_(0.95).addcmul_(g, g, value=0.05)
                p.addcdiv_(g * lr.view(shape), s.sqrt().add_(1e-6), value=-1.0)

    def evaluate(pairs):
        tot = torch.zeros(K, dtype=torch.float64)
        st.eval()
        with torch.no_grad():
            for b in eval_batches(pairs, cfg.eval_batch_size):
                x = b.inputs.unsqueeze(0).expand(K, *b.inputs.shape)       # the same batch for every model
                out, _ = st(x.float() if x.dtype != torch.uint8 else x.float(), lengths=b.lengths)
                for k in range(K):
                    tot[k] += float(readout.bernoulli_nll(out[k], V[k], c[k], b.targets.float(), b.mask).sum(
                        dtype=torch.float64))
        st.train()
        return tot

    st.train()
    for i, bs in enumerate(zip(*[iterate_batches(tp, cfg.batch_size, shuffle=True, seed=s + 99, epoch=0)
                                 for s in seeds])):
        step(bs)
        if i >= 2:
            break
    epochs, train_cpu = 0, 0.0
    w0 = time.perf_counter()
    while epochs < max_epochs and (epochs == 0 or train_cpu < min_cpu):
        epochs += 1
        t = cpu()
        for bs in zip(*[iterate_batches(tp, cfg.batch_size, shuffle=True, seed=s, epoch=epochs) for s in seeds]):
            step(bs)
        train_cpu += cpu() - t
    wall_train = time.perf_counter() - w0
    ev = []
    for _ in range(2):
        t = cpu()
        evaluate(tp)
        evaluate(vp)
        ev.append(cpu() - t)
    return {"dataset": dataset, "unit": unit, "K": K, "same_seed": same_seed, "epochs_timed": epochs,
            "train_per_epoch": train_cpu / epochs, "eval_first": ev[0], "eval_steady": ev[1],
            "train_per_model": train_cpu / epochs / K, "eval_per_model": ev[1] / K,
            "wall_train_per_epoch": wall_train / epochs,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


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
        cols["io"] = r["io"]
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
                procs = [_start(["--worker", "epoch", ds, unit, str(args.min_cpu), "1", "2", str(k)], src)
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
    cols = ["recurrence", "read-out+loss", "optimiser", "batching", "training", "evaluation", "io", "epoch"]
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
        L += ["", "Layout: K runs as one program (StackedUnit) vs K separate one-thread processes started together "
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
    ap.add_argument("--before", default="/tmp/before/src",
                    help="src/ of the 'before' code (a git worktree); '' = measure the 'after' code only")
    ap.add_argument("--after", default=str(REPO / "src"), help="src/ of the 'after' code")
    ap.add_argument("--before-label", default="ab66720 (before the micro-kernel tile fix)")
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
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "study_cost"))
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        kind, rest = a.worker[0], a.worker[1:]
        if kind == "epoch":
            ds, unit, min_cpu, max_epochs, eval_calls = rest[:5]
            seed = int(rest[5]) if len(rest) > 5 else 0
            r = worker_epoch(ds, unit, float(min_cpu), int(max_epochs), int(eval_calls), seed)
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
                        "eval_calls": 2, "batch_size": 16, "eval_batch_size": 64, "weight_noise": 0.075,
                        "command": "GATEDRNN_DATA_DIR=... nice -n 5 python " + shlex.join(
                            [str(Path(__file__).relative_to(REPO))] + (argv if argv is not None else sys.argv[1:]))},
           "rows": [], "loadavg": []}
    cells = [(d, u) for d in a.datasets.split(",") for u in a.units.split(",")]
    print(f"study cost: {len(cells)} cells x {a.repeats} repeats x {'/'.join(codes)}; load {os.getloadavg()}", flush=True)
    for rep in range(a.repeats):
        order = tuple(codes) if rep % 2 == 0 else tuple(codes)[::-1]
        for i, (ds, unit) in enumerate(cells):
            for code in (order if i % 2 == 0 else order[::-1]):
                r = _run(["--worker", "epoch", ds, unit, str(a.min_cpu), str(a.max_epochs), "2"], codes[code])
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
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    md = markdown(res)
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
