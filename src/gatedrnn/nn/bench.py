"""`gatedrnn bench`: forward+backward time of the paper's units (fused kernels and the reference loop)
against torch.nn.LSTM / GRU / RNN(tanh) of the same hidden size, at the paper's sizes.

`run()` measures and returns the result (machine, torch version, threads, load, compile time, the
large-GEMM rate, the arithmetic floor = FLOPs / that rate, every median); `markdown()` renders its table.
The command line — flags, the JSON file, the printed table — is gatedrnn/cli/bench.py (also
`python benchmarks/bench.py`); benchmarks/bench_*.py reuse the timing helpers here.

Suites (batch-first input, random data, input not requiring grad):
  music:   batch 64 x 200 steps x 88 inputs; LSTM 36 / GRU 46 / tanh 100 (Table 1, music); both without a
           read-out (loss = sum of the outputs) and with one (Linear(H, 88) + BCE-with-logits).
  speech:  batch 64 x 50 steps x 20 inputs; LSTM 195 / GRU 227 / tanh 400 (Table 1, speech), no read-out.
  stacked: K=10 models as one (gatedrnn.nn.StackedUnit) against one fused model, per model, for each unit
           at the music sizes (one kernel call for all K models; the issue's target: per model <= 1.0x).

It lives in gatedrnn.nn (not in kernels/, which must not import the units it would time).
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

SUITES = {
    "music": dict(batch=64, steps=200, inputs=88, hidden={"lstm": 36, "gru": 46, "tanh": 100}, readout=(False, True)),
    "speech": dict(batch=64, steps=50, inputs=20, hidden={"lstm": 195, "gru": 227, "tanh": 400}, readout=(False,)),
}
GATES = {"lstm": 4, "gru": 3, "tanh": 1}
NN = {"lstm": nn.LSTM, "gru": nn.GRU, "tanh": nn.RNN}
OUT_FEATURES = 88


# ------------------------------------------------------------------------------------------ machine
def machine_info() -> dict:
    from ..utils import environment     # the cpu model as every run records it
    model = environment()["cpu"] or platform.machine()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"hostname": socket.gethostname(), "cpu": model, "logical_cpus": os.cpu_count(),
            "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "mkldnn_enabled": bool(torch.backends.mkldnn.enabled), "mkldnn_available": torch.backends.mkldnn.is_available(),
            "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
            "loadavg_start": load}


def gemm_rate(n: int = 1536, repeats: int = 5) -> float:
    """Measured large-GEMM rate (GFLOP/s, float32, torch.mm on n x n, current thread setting)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(ts) / 1e9


def flops(unit: str, B: int, T: int, I: int, H: int, readout: bool) -> float:
    """Arithmetic of one forward+backward (GEMMs only; the input needs no gradient):
    forward 2TB(I+H)GH; backward dh 2TB·GH·H, dU 2TB·GH·H, dW 2TB·GH·I; read-out 3·2TB·H·88."""
    GH = GATES[unit] * H
    f = 2 * T * B * (I + H) * GH + 2 * T * B * GH * H * 2 + 2 * T * B * GH * I
    if readout:
        f += 3 * 2 * T * B * H * OUT_FEATURES
    return float(f)


# ------------------------------------------------------------------------------------------ timing
def _step_fn(rnn, head, x, target, is_nn: bool):
    params = list(rnn.parameters()) + (list(head.parameters()) if head is not None else [])

    def step():
        for p in params:
            p.grad = None
        out, _ = rnn(x)
        if head is None:
            loss = out.sum()
        else:
            loss = F.binary_cross_entropy_with_logits(head(out), target)
        loss.backward()
    return step


def time_round_robin(fns: dict, repeats: dict, warmup: int = 2) -> dict:
    """Median and fastest wall-clock ms per call, and the same of the process's CPU time (on a shared
    machine the CPU time of a one-thread run is what the run itself costs; the wall clock adds the
    time other processes held the core). The candidates are interleaved so that a change in machine
    load hits all of them alike."""
    for name, f in fns.items():
        for _ in range(warmup if repeats[name] > 2 else 1):
            f()
    times = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for r in range(max(repeats.values())):
        for name, f in fns.items():
            if r < repeats[name]:
                c, t = time.process_time(), time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
    return {k: {"median_ms": statistics.median(v) * 1e3, "min_ms": min(v) * 1e3, "n": len(v),
                "cpu_median_ms": statistics.median(cpu[k]) * 1e3, "cpu_min_ms": min(cpu[k]) * 1e3}
            for k, v in times.items()}


def bench_config(unit: str, B: int, T: int, I: int, H: int, readout: bool, repeats: int, ref_repeats: int,
                 seed: int = 0) -> dict:
    from gatedrnn.nn import make_unit
    torch.manual_seed(seed)
    x = (torch.rand(B, T, I) < 0.1).float()
    target = (torch.rand(B, T, OUT_FEATURES) < 0.1).float()
    fused = make_unit(unit, input_size=I, hidden_size=H)
    ref = make_unit(unit, input_size=I, hidden_size=H, fused=False)
    ref.load_state_dict(fused.state_dict())
    tnn = NN[unit](I, H, batch_first=True) if unit != "tanh" else nn.RNN(I, H, nonlinearity="tanh", batch_first=True)
    head = nn.Linear(H, OUT_FEATURES) if readout else None
    fns = {"fused": _step_fn(fused, head, x, target, False),
           "torch.nn": _step_fn(tnn, head, x, target, True),
           "reference": _step_fn(ref, head, x, target, False)}
    reps = {"fused": repeats, "torch.nn": repeats, "reference": ref_repeats}
    return time_round_robin(fns, reps)


# ------------------------------------------------------------------------------------------ stacked
def bench_stacked(K: int, unit: str, B: int, T: int, I: int, H: int, repeats: int) -> dict:
    """One fused model against K stacked ones (forward+backward, loss = sum of the outputs), interleaved:
    per repeat, K calls of the one model timed as one sample, then one call of the stack — equal work and
    equally many samples per candidate (so the fastest repeats compare fairly too)."""
    from gatedrnn.nn import StackedUnit, make_unit
    torch.manual_seed(0)
    units = [make_unit(unit, input_size=I, hidden_size=H) for _ in range(K)]
    stacked = StackedUnit.from_units(units)
    xs = (torch.rand(K, B, T, I) < 0.1).float()
    one = units[0]

    def run_one():
        for _ in range(K):
            for p in one.parameters():
                p.grad = None
            out, _ = one(xs[0])
            out.sum().backward()

    def run_stacked():
        for p in stacked.parameters():
            p.grad = None
        out, _ = stacked(xs)
        out.sum().backward()

    r = time_round_robin({f"{K} x one fused model": run_one, f"K={K} stacked": run_stacked},
                         {f"{K} x one fused model": repeats, f"K={K} stacked": repeats})
    one = {k: v / K if k != "n" else v for k, v in r.pop(f"{K} x one fused model").items()}
    r["one fused model"] = one        # per call (a sample is K calls)
    k_ = r[f"K={K} stacked"]
    return {"unit": unit, "K": K, "batch": B, "steps": T, "inputs": I, "hidden": H, "times": r,
            "stacked_per_model_ms": k_["median_ms"] / K,
            "ratio_per_model_vs_one": k_["median_ms"] / K / one["median_ms"],
            "ratio_per_model_vs_one_min": k_["min_ms"] / K / one["min_ms"],
            "cpu_ratio_per_model_vs_one": k_["cpu_median_ms"] / K / one["cpu_median_ms"],
            "cpu_ratio_per_model_vs_one_min": k_["cpu_min_ms"] / K / one["cpu_min_ms"]}


# ------------------------------------------------------------------------------------------ main
def run(suites=("music", "speech"), repeats: int = 15, ref_repeats: int = 3, threads: int | None = None,
        units=("lstm", "gru", "tanh"), stacked_K: int = 10, log=print) -> dict:
    if threads:
        torch.set_num_threads(threads)
    from gatedrnn import kernels
    from gatedrnn.kernels import loader
    info = machine_info()
    t0 = time.perf_counter()
    ok = kernels.available()
    info["kernel_available"] = ok
    info["kernel_first_load_s"] = time.perf_counter() - t0
    info["kernel_compile_s"] = loader.build_seconds          # None: it came from the cache
    info["kernel_compile_s_fresh"] = loader.time_fresh_compile() if ok else None
    info["kernel_library"] = str(loader.library_path) if ok else kernels.build_error()
    rate = gemm_rate()
    info["gemm_gflops"] = rate
    log(f"# gatedrnn bench — {info['cpu']}, {info['logical_cpus']} CPUs, torch {info['torch']}, "
        f"{info['torch_threads']} threads, large-GEMM {rate:.0f} GFLOP/s, kernel compile "
        f"{info['kernel_compile_s_fresh'] or 0:.1f} s")
    rows = []
    for suite in suites:
        cfg = SUITES[suite]
        B, T, I = cfg["batch"], cfg["steps"], cfg["inputs"]
        for readout in cfg["readout"]:
            for unit in units:
                H = cfg["hidden"][unit]
                r = bench_config(unit, B, T, I, H, readout, repeats, ref_repeats)
                fl = flops(unit, B, T, I, H, readout)
                floor_ms = fl / (rate * 1e9) * 1e3
                row = {"suite": suite, "unit": unit, "readout": readout, "batch": B, "steps": T, "inputs": I,
                       "hidden": H, "times": r, "gflop": fl / 1e9, "floor_ms": floor_ms,
                       "fused_over_nn": r["fused"]["median_ms"] / r["torch.nn"]["median_ms"],
                       "reference_over_nn": r["reference"]["median_ms"] / r["torch.nn"]["median_ms"],
                       "fused_over_floor": r["fused"]["median_ms"] / floor_ms,
                       # the fastest repeat: the best estimate of the unloaded time on a shared machine
                       "fused_over_nn_min": r["fused"]["min_ms"] / r["torch.nn"]["min_ms"],
                       "fused_over_floor_min": r["fused"]["min_ms"] / floor_ms}
                rows.append(row)
                log(f"  {suite:6s} {unit:4s} H={H:3d} readout={str(readout):5s} fused {r['fused']['median_ms']:7.1f} ms"
                    f"  torch.nn {r['torch.nn']['median_ms']:7.1f} ms  reference {r['reference']['median_ms']:7.1f} ms"
                    f"  floor {floor_ms:5.1f} ms")
    stacked = []
    if stacked_K and stacked_K > 1:
        cfg = SUITES["music"]
        for unit in units:
            s = bench_stacked(stacked_K, unit, cfg["batch"], cfg["steps"], cfg["inputs"], cfg["hidden"][unit],
                              max(3, repeats * 2 // 3))
            stacked.append(s)
            log(f"  stacked {unit:4s} K={stacked_K}: {s['stacked_per_model_ms']:.1f} ms per model, "
                f"{s['ratio_per_model_vs_one']:.2f}x one model (fastest repeats {s['ratio_per_model_vs_one_min']:.2f}x; "
                f"CPU time {s['cpu_ratio_per_model_vs_one']:.2f}x, {s['cpu_ratio_per_model_vs_one_min']:.2f}x)")
    try:
        info["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    return {"date": _dt.datetime.now().isoformat(timespec="seconds"), "machine": info,
            "settings": {"repeats": repeats, "reference_repeats": ref_repeats, "statistic": "median",
                         "timed": "zero grads + forward + loss + backward, batch-first input without grad",
                         "floor": "GEMM FLOPs of forward+backward / measured large-GEMM rate"},
            "results": rows, "stacked": stacked}


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']}, "
             f"{m['torch_threads']} threads; large-GEMM rate {m['gemm_gflops']:.0f} GFLOP/s; "
             f"load average at start {tuple(round(x, 2) for x in m['loadavg_start'] or ())}.",
             "",
             "Times in ms, median (fastest) over the repeats; ratios of medians (of the fastest repeats).",
             "",
             "| suite | unit | H | read-out | fused | torch.nn | reference | fused / torch.nn "
             "| reference / torch.nn | floor | fused / floor |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["results"]:
        t = r["times"]
        mm = lambda k: f"{t[k]['median_ms']:.1f} ({t[k]['min_ms']:.1f})"
        fo_min = r.get("fused_over_nn_min", r["fused_over_nn"])
        ff_min = r.get("fused_over_floor_min", r["fused_over_floor"])
        lines.append(f"| {r['suite']} | {r['unit']} | {r['hidden']} | {'yes' if r['readout'] else 'no'} | "
                     f"{mm('fused')} | {mm('torch.nn')} | {t['reference']['median_ms']:.0f} | "
                     f"**{r['fused_over_nn']:.2f}** ({fo_min:.2f}) | {r['reference_over_nn']:.2f} | "
                     f"{r['floor_ms']:.1f} | {r['fused_over_floor']:.1f} ({ff_min:.1f}) |")
    stacked = res.get("stacked") or []
    if isinstance(stacked, dict):   # result files written before every unit had a stacked line
        stacked = [stacked]
    if stacked:
        lines += ["", "Many models as one (gatedrnn.nn.StackedUnit, music sizes, forward+backward): per model "
                      "against one fused model, median (fastest repeats); wall clock, and the process's CPU time.",
                  "",
                  "| unit | H | K | one model ms | K stacked ms | per model ms | per model / one | CPU time: per model / one |",
                  "|---|---|---|---|---|---|---|---|"]
        for s in stacked:
            t1, tk = s["times"]["one fused model"], s["times"][f"K={s['K']} stacked"]
            lines.append(f"| {s['unit']} | {s['hidden']} | {s['K']} | {t1['median_ms']:.1f} ({t1['min_ms']:.1f}) | "
                         f"{tk['median_ms']:.0f} ({tk['min_ms']:.0f}) | {s['stacked_per_model_ms']:.1f} | "
                         f"**{s['ratio_per_model_vs_one']:.2f}** "
                         f"({s.get('ratio_per_model_vs_one_min', s['ratio_per_model_vs_one']):.2f}) | "
                         + (f"**{s['cpu_ratio_per_model_vs_one']:.2f}** ({s['cpu_ratio_per_model_vs_one_min']:.2f}) |"
                            if "cpu_ratio_per_model_vs_one" in s else "— |"))
    return "\n".join(lines)
