"""Successive halving replayed on a finished full search from its committed files alone (lr_search.csv and
each run's metrics.jsonl) — for studies whose store.sqlite is not committed (benchmarks/halving_agreement.py
reads the store). The decisions are grid.halving_decide's, the function the study driver calls.

    git worktree add /tmp/speech-30 1dce943        # the 30-epoch speech study, before its re-run
    python benchmarks/halving_replay_runs.py /tmp/speech-30/results/speech --schedules "5,10;10,20;10;20" \\
        --eta-list 2,5 --out benchmarks/results/speech_halving_replay.md

For each schedule and η: in how many (dataset, unit) cells the halving selects the full search's rate, and
the search epochs it trains (a candidate cut at rung r trains min(r, its own last epoch)) against the full
search's.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from gatedrnn.study.grid import halving_decide


def cells_of(results_dir: Path) -> dict[tuple[str, str], list[dict]]:
    cells: dict[tuple[str, str], list[dict]] = {}
    with open(results_dir / "lr_search.csv") as f:
        for row in csv.DictReader(f):
            hist = [json.loads(line) for line in (results_dir / "runs" / row["run_id"] / "metrics.jsonl")
                    .read_text().splitlines() if line.strip()]
            hist = [h for h in hist if h.get("epoch", 0) >= 1]
            cells.setdefault((row["dataset"], row["unit"]), []).append(
                {"lr": float(row["lr"]), "selected": row["selected"] == "True",
                 "row": {"status": row["status"], "epochs": hist[-1]["epoch"], "history": hist,
                         "valid_nll": float(row["valid_nll"])}})
    return cells


def replay(cells, rungs: list[int], eta: int) -> tuple[int, int, int, list[str]]:
    agree = epochs = full = 0
    marks = []
    for (ds, unit), cands in cells.items():
        lrs = [c["lr"] for c in cands]
        d = halving_decide([c["row"] for c in cands], lrs, rungs, eta)
        picked = d["selected"]["lr"] if d["selected"] else None
        same = picked == next(c["lr"] for c in cands if c["selected"])
        agree += same
        full += sum(c["row"]["epochs"] for c in cands)
        epochs += sum(cands[i]["row"]["epochs"] if t is None else min(t, cands[i]["row"]["epochs"])
                      for i, t in d["trained_to"].items())
        marks.append(f"{ds}/{unit} {'same' if same else f'{picked:.4g}'}")
    return agree, epochs, full, marks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results_dir", type=Path)
    ap.add_argument("--schedules", default="10,20", help="rung schedules, ';'-separated")
    ap.add_argument("--eta-list", default="2")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    cells = cells_of(a.results_dir)
    lines = [f"# Successive halving replayed on {a.results_dir} ({len(cells)} cells)", "",
             "| rungs | η | same rate as the full search | search epochs (halving / full) | per cell |",
             "|---|---|---|---|---|"]
    for eta in (int(e) for e in a.eta_list.split(",")):
        for sched in a.schedules.split(";"):
            rungs = [int(r) for r in sched.split(",")]
            agree, ep, full, marks = replay(cells, rungs, eta)
            lines.append(f"| {sched} | {eta} | {agree} of {len(cells)} | {ep} / {full} ({ep / full:.2f}×) | "
                         f"{'; '.join(marks)} |")
    text = "\n".join(lines) + "\n"
    if a.out:
        a.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
