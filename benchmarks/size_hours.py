"""Core-hours of a study with the size axis, before it runs: the epochs each cell trains (its search, by
successive halving or in full, then its fresh seeds) times the measured per-epoch cost of that unit at that
budget (benchmarks/epoch_cost.py --budgets, one thread). Exact in epochs for a study without early stopping
(patience 0, as the `size` preset): every run trains all its epochs; a diverged run would cost less.

    python benchmarks/size_hours.py benchmarks/results/epoch_cost_size-DATE.json [--budget size] [--datasets jsb]

Not counted: each run's setup and final evaluation of the three splits (seconds per run).
"""
from __future__ import annotations

import argparse
import json
import math

from gatedrnn.study.grid import Grid, budget_config


def search_epochs(n: int, rungs: list[int], eta: int, epochs: int) -> int:
    """Epochs a halving search of n candidates trains: all to the first rung, the better ceil(alive/eta) on
    to the next, the survivors to the end (grid.halving_decide; no rungs: every candidate to the end)."""
    total, alive, prev = 0, n, 0
    for r in rungs:
        total += alive * (r - prev)
        prev, alive = r, math.ceil(alive / eta)
    return total + alive * (epochs - prev)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cost", help="JSON of benchmarks/epoch_cost.py --budgets")
    ap.add_argument("--budget", default="size", help="the study preset (default size)")
    ap.add_argument("--datasets", help="comma-separated, over the preset's")
    args = ap.parse_args()
    cost = json.load(open(args.cost))
    over = {"datasets": args.datasets.split(",")} if args.datasets else {}
    study = budget_config(args.budget, **over)
    g = Grid(study)
    total, lines = 0.0, []
    for d, u, b in g.sized_cells():
        E = int(study.train_fields(d).get("epochs", 500))
        search = search_epochs(len(g.lrs), g.rungs(d), study.halving_eta, E)
        seeds = study.new_seed_runs() * E
        s = cost["rows"][f"{d}/{u}@{b}" if b is not None else f"{d}/{u}"]["median_s"]
        hours = (search + seeds) * s / 3600
        total += hours
        lines.append(f"| {d} | {u} | {b:,} | {search} | {seeds} | {s:.3f} | {hours:.2f} |")
    print(f"# Core-hours of `{args.budget}` from {args.cost} (load during the measurement: "
          f"{cost['meta'].get('load_before')} before, {cost['meta'].get('load_at_end')} after)\n")
    print("| dataset | unit | budget | search epochs | seed epochs | s / epoch (median) | core-hours |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    print(f"\ntotal: {total:.1f} core-hours ({g.n_runs()} runs)")


if __name__ == "__main__":
    main()
