"""Measured cost of a finished study, from what its runs recorded (no timing of our own).

    python benchmarks/study_hours.py results/paper [--out benchmarks/results/paper_hours]

Per (dataset, unit): runs, epochs, and the time the runs spent training (the last `seconds` of each
run's metrics.jsonl: wall time of the training passes) and evaluating (the sum of its per-epoch
`eval_seconds`: the train and valid splits after every epoch). Every run used one torch thread, so wall
seconds are core-seconds, inflated by whatever else ran on the machine (the load is not recorded per run:
read the totals as upper bounds of the cost on an idle machine). Setup (data loading, the final test
evaluation) is not included: seconds per run. A halving study's cut candidates (no result.json; paused.json)
count with the epochs they trained.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path


def study_hours(results: Path) -> list[dict]:
    cells: dict[tuple[str, str], dict] = collections.defaultdict(
        lambda: {"runs": 0, "epochs": 0, "train_s": 0.0, "eval_s": 0.0, "status": collections.Counter()})
    for run in sorted((results / "runs").glob("*/")):
        res_path, met_path = run / "result.json", run / "metrics.jsonl"
        if not met_path.exists():
            continue
        lines = [json.loads(s) for s in met_path.read_text().splitlines() if s.strip()]
        if res_path.exists():
            res = json.loads(res_path.read_text())
        elif (run / "paused.json").exists():
            # paused at a successive-halving rung (a halving study's cut candidate): its epochs were paid for
            paused = json.loads((run / "paused.json").read_text())
            res = {"dataset": paused["config"]["dataset"], "unit": paused["config"]["unit"], "status": "halted",
                   "epochs": int(paused["epoch"])}
        else:
            continue  # unfinished: no cost claimed
        c = cells[(res["dataset"], res["unit"])]
        c["runs"] += 1
        c["epochs"] += int(res.get("epochs") or 0)
        c["train_s"] += float(lines[-1].get("seconds") or 0.0)
        c["eval_s"] += sum(float(m.get("eval_seconds") or 0.0) for m in lines)
        c["status"][res["status"]] += 1
    return [{"dataset": d, "unit": u, **{k: (dict(v) if k == "status" else v) for k, v in c.items()}}
            for (d, u), c in cells.items()]


def markdown(rows: list[dict], results: Path) -> str:
    out = [f"# Measured cost of `{results}` (from the runs' own records)", "",
           "| dataset | unit | runs | epochs | training h | evaluation h | total h | s / epoch |",
           "|---|---|---|---|---|---|---|---|"]
    tot = {"runs": 0, "epochs": 0, "train_s": 0.0, "eval_s": 0.0}
    for r in rows:
        t = r["train_s"] + r["eval_s"]
        out.append(f"| {r['dataset']} | {r['unit']} | {r['runs']} | {r['epochs']} | {r['train_s'] / 3600:.2f} | "
                   f"{r['eval_s'] / 3600:.2f} | {t / 3600:.2f} | {t / max(r['epochs'], 1):.2f} |")
        for k in tot:
            tot[k] += r[k]
    t = tot["train_s"] + tot["eval_s"]
    out.append(f"| **all** | | {tot['runs']} | {tot['epochs']} | {tot['train_s'] / 3600:.2f} | "
               f"{tot['eval_s'] / 3600:.2f} | **{t / 3600:.2f}** | {t / max(tot['epochs'], 1):.2f} |")
    out += ["", "Hours are core-hours (one thread per run) as recorded by each run: training passes (wall) and the "
            "per-epoch evaluation (the validation split after every epoch, the training split after every epoch "
            "or every N-th with --eval-train-every N, as a halving study does); a halving study's cut candidates "
            "count with the epochs they trained. Data loading and the final test evaluation are "
            "not included. Recorded on a shared machine: upper bounds of an idle machine's cost.",
            "", f"Reproduce: `python benchmarks/study_hours.py {results}`"]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--out", type=Path, help="write OUT.md and OUT.json")
    a = ap.parse_args(argv)
    if not (a.results / "runs").is_dir():
        print(f"study_hours: error: {a.results} has no runs/ folder (expected a results directory)", file=sys.stderr)
        return 2
    rows = study_hours(a.results)
    md = markdown(rows, a.results)
    print(md, end="")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.with_suffix(".md").write_text(md)
        a.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
