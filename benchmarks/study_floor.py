"""How far the paper study's cost is from what the arithmetic allows on this machine: an arithmetic floor.

    GATEDRNN_DATA_DIR=/work/shared/data python benchmarks/study_floor.py [--out benchmarks/results/study_floor]

Per (music dataset, unit at Table 1's size), the GEMM arithmetic of one epoch as train.py runs it:
  training   per frame: U h_{t-1} forward 2·H·GH, backward dh 2·GH·H and dU 2·GH·H; the read-out
             forward 2·H·88, backward dh and dV 2·2·H·88; the input projection counted at its nonzeros
             (music piano rolls: the measured mean number of keys on per frame), forward and dW
  evaluation per frame of the train and valid splits (forward only): 2·H·GH + 2·H·88 (+ input nonzeros)
divided by the machine's measured one-thread GEMM rate (torch.mm, 1536², float32): the time the epoch
would take if every flop ran at large-GEMM speed. Set beside the measured per-epoch core-seconds
(benchmarks/results/study_cost.json, code "after", medians) and multiplied by the paper study's epochs
(results/paper/runs/*/metrics.jsonl) for the study's floor in core-hours.

The recurrence is a chain of small GEMMs (batch 16 rows, K = H = 36..100), which cannot run at large-GEMM
speed; the floor says how much any kernel work could still win, not what it will.
"""
from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import torch

from gatedrnn.data import load_dataset
from gatedrnn.nn.bench import GATES, gemm_rate, machine_info

SIZES = {"tanh": 100, "gru": 46, "lstm": 36}   # Table 1, music
OUT = 88


def frames_and_density(name: str) -> tuple[dict, float]:
    ds = load_dataset(name)
    frames = {k: ds.num_steps(k) for k in ds.splits}
    on = n = 0
    for x, _ in ds.splits["train"]:
        on += float((x != 0).sum())
        n += x.shape[0]
    return frames, on / n


def epochs_of_paper_study(results: Path) -> dict:
    ep = collections.Counter()
    for run in sorted((results / "runs").glob("*/")):
        res, met = run / "result.json", run / "metrics.jsonl"
        if res.exists() and met.exists():
            r = json.loads(res.read_text())
            lines = [s for s in met.read_text().splitlines() if s.strip()]
            ep[(r["dataset"], r["unit"])] += len(lines) - 1   # epoch 0 is the untrained evaluation
    return ep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/study_floor")
    ap.add_argument("--cost", default="benchmarks/results/study_cost.json")
    ap.add_argument("--paper", default="results/paper")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    rate = gemm_rate() * 1e9   # flop/s
    measured = {}
    cost = json.loads(Path(a.cost).read_text())
    for r in cost["rows"]:
        if r["code"] == "after":
            measured.setdefault((r["dataset"], r["unit"]), []).append(
                (r["per_epoch"]["epoch_total"], r["eval_steady"]))
    epochs = epochs_of_paper_study(Path(a.paper))
    rows, tot = [], {"floor_h": 0.0, "measured_h": 0.0}
    for ds in ("jsb", "nottingham", "musedata", "piano"):
        frames, nnz = frames_and_density(ds)
        for unit, H in SIZES.items():
            GH = GATES[unit] * H
            inp = 2 * nnz * GH                        # sparse input projection (forward; dW the same)
            train_f = frames["train"] * (2 * H * GH + 4 * GH * H + 2 * H * OUT + 4 * H * OUT + 2 * inp)
            eval_f = (frames["train"] + frames["valid"]) * (2 * H * GH + 2 * H * OUT + inp)
            floor = (train_f + eval_f) / rate
            m = measured.get((ds, unit))
            med = sorted(t + e for t, e in m)[len(m) // 2] if m else None
            e = epochs.get((ds, unit), 0)
            tot["floor_h"] += floor * e / 3600
            tot["measured_h"] += (med or 0) * e / 3600
            rows.append({"dataset": ds, "unit": unit, "H": H, "train_frames": frames["train"],
                         "keys_on_per_frame": round(nnz, 2), "gflop_train": train_f / 1e9,
                         "gflop_eval": eval_f / 1e9, "floor_s": floor, "measured_s": med,
                         "ratio": (med / floor) if med else None, "paper_epochs": e})
    info = machine_info()
    res = {"machine": info, "gemm_gflops_1thread": rate / 1e9, "rows": rows, "totals": tot}
    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    md = ["# The paper study's arithmetic floor", "",
          f"{info['cpu']}, torch {info['torch']}, one thread: measured GEMM rate {rate / 1e9:.1f} GFLOP/s "
          f"(torch.mm 1536², float32; load {info['loadavg_start'][0]:.2f}). Measured epoch: "
          f"`{a.cost}` (code 'after', median of training + evaluation). "
          f"Command: `python benchmarks/study_floor.py`.", "",
          "| dataset | unit | H | train frames | keys on / frame | GFLOP train | GFLOP eval | floor s / epoch | "
          "measured s / epoch | measured / floor | paper-study epochs |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['dataset']} | {r['unit']} | {r['H']} | {r['train_frames']:,} | {r['keys_on_per_frame']} | "
                  f"{r['gflop_train']:.2f} | {r['gflop_eval']:.2f} | {r['floor_s']:.3f} | "
                  f"{r['measured_s']:.3f} | {r['ratio']:.1f}x | {r['paper_epochs']:,} |")
    md += ["", f"Paper study (its {sum(r['paper_epochs'] for r in rows):,} epochs): floor "
           f"**{tot['floor_h']:.2f} core-hours** at large-GEMM speed; at the measured per-epoch cost (process CPU time, one thread) "
           f"{tot['measured_h']:.2f} core-hours."]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
