"""The gap to the paper's Table 2, deviation by deviation (issue 19), read from committed run files only.

Per (dataset, unit), test NLL (nats per frame):
  paper            the paper's Table 2
  ours             results/paper: our protocol as first run — early stopping (patience 20), seeds 0–4 with the
                   selecting seed 0 among them, total NLL / total frames
  fresh seeds      results/paper, seeds 1–5 of the same selected rate (the selecting run left out); change =
                   fresh − ours
  stopping rule    results/paper-faithful: every run 500 epochs, best-validation model (patience 0), the rate
                   chosen by halving, seeds 1–5; change = faithful − fresh (same metric, same fresh seeds)
  metric           the same faithful runs scored the authors' way (per-sequence mean, first frame not
                   scored); change = faithful per-sequence − faithful
  released opt.    results/paper-released-full (GRU, Nottingham and MuseData): batch 1, rmsprop-momentum,
                   decay to 1 %, 500 epochs, best kept, seeds 0–2; change = released − faithful
  left             paper − (the faithful per-sequence number): what our evidence does not explain
Every mean is over the runs that finished with a model; cells without runs yet say so.

    python benchmarks/protocol_gap.py [--out benchmarks/results/protocol_gap] [--readme README.md]

--readme rewrites the block between README's `<!-- protocol_gap: begin -->` and `<!-- protocol_gap: end -->`
markers with the same two tables, so the README's gap numbers are this script's output and nothing else.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "results"
PAPER = {"jsb": {"tanh": 9.10, "gru": 8.54, "lstm": 8.67}, "nottingham": {"tanh": 3.13, "gru": 3.23, "lstm": 3.20},
         "musedata": {"tanh": 6.23, "gru": 5.99, "lstm": 6.23}, "piano": {"tanh": 9.03, "gru": 8.82, "lstm": 9.03}}
NAMES = {"jsb": "JSB Chorales", "nottingham": "Nottingham", "musedata": "MuseData", "piano": "Piano-midi"}
OK = ("completed", "early_stopped")


def _results(study: str) -> list[dict]:
    """The finished runs a study reports — its seed runs and each cell's selecting run, listed by run id in
    its reported_runs.txt (a study without the listing: every finished run, as for paper-released-full, whose
    only cells are its three seeds)."""
    listing = ROOT / study / "reported_runs.txt"
    names = ([line.strip() for line in listing.read_text().splitlines() if line.strip()] if listing.exists()
             else [f"runs/{f.parent.name}" for f in sorted((ROOT / study / "runs").glob("*/result.json"))])
    out = []
    for name in names:
        f = ROOT / study / name / "result.json"
        if f.exists() and (r := json.loads(f.read_text())).get("status") in OK:
            out.append(r)
    return out


def _mean(runs: list[dict], key: str, seeds) -> tuple[float | None, int]:
    vals = [r[key] for r in runs if r["config"]["seed"] in seeds and r.get(key) is not None]
    return (statistics.fmean(vals) if vals else None), len(vals)


def _cell_runs(runs, dataset, unit):
    return [r for r in runs if r["config"]["dataset"] == dataset and r["config"]["unit"] == unit]


def _lr(runs) -> float | None:
    return runs[0]["config"]["lr"] if runs else None


def rows() -> list[dict]:
    paper_runs, faithful_runs, released = _results("paper"), _results("paper-faithful"), _results("paper-released-full")
    out = []
    for d, units in PAPER.items():
        for u, paper in units.items():
            pr, fr, rr = (_cell_runs(runs, d, u) for runs in (paper_runs, faithful_runs, released))
            ours, n_ours = _mean(pr, "test_nll", range(0, 5))
            fresh, n_fresh = _mean(pr, "test_nll", range(1, 6))
            faith, n_faith = _mean(fr, "test_nll", range(1, 6))
            faith_sa, _ = _mean(fr, "test_nll_seqavg", range(1, 6))
            rel, n_rel = _mean(rr, "test_nll", range(0, 3))
            diff = lambda a, b: None if a is None or b is None else a - b   # noqa: E731
            out.append({"dataset": d, "unit": u, "paper": paper, "ours": ours, "n_ours": n_ours,
                        "fresh": fresh, "n_fresh": n_fresh, "d_fresh": diff(fresh, ours),
                        "faithful": faith, "n_faithful": n_faith, "d_stopping": diff(faith, fresh),
                        "faithful_seqavg": faith_sa, "d_metric": diff(faith_sa, faith),
                        "released": rel, "n_released": n_rel, "d_released": diff(rel, faith),
                        "left": diff(paper, faith_sa), "lr_paper": _lr(pr), "lr_faithful": _lr(fr)})
    return out


def _f(x, sign=False) -> str:
    return "–" if x is None else (f"{x:+.3f}" if sign else f"{x:.3f}")


def markdown(rs: list[dict]) -> str:
    head = ["dataset", "unit", "paper", "ours (seeds 0–4)", "Δ fresh seeds (1–5)", "Δ stopping rule (faithful)",
            "Δ metric (per-sequence)", "Δ released optimiser", "left unexplained (paper − faithful per-seq.)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rs:
        lines.append("| " + " | ".join([
            NAMES[r["dataset"]], r["unit"], f"{r['paper']:.2f}", f"{_f(r['ours'])} (n={r['n_ours']})",
            f"{_f(r['d_fresh'], True)} (n={r['n_fresh']})",
            f"{_f(r['d_stopping'], True)} (n={r['n_faithful']})" if r["n_faithful"] else "not run yet",
            _f(r["d_metric"], True) if r["n_faithful"] else "not run yet",
            (f"{_f(r['d_released'], True)} (n={r['n_released']})" if r["n_released"] and r["n_faithful"]
             else f"{_f(r['released'])} (n={r['n_released']}; faithful not run yet)" if r["n_released"] else "–"),
            _f(r["left"], True)]) + " |")
    orders = []
    for d in PAPER:
        cell = [r for r in rs if r["dataset"] == d]
        def order(key):
            vals = {r["unit"]: r[key] for r in cell}
            if any(v is None for v in vals.values()):
                return None
            units = sorted(vals, key=vals.get)       # equal numbers (the paper's 6.23 and 9.03 pairs) as ties
            return "".join((" = " if i and round(vals[u], 3) == round(vals[units[i - 1]], 3) else " < " if i else "")
                           + u for i, u in enumerate(units))
        orders.append(f"| {NAMES[d]} | {order('paper')} | {order('ours') or '–'} | {order('fresh') or '–'} | "
                      f"{order('faithful') or 'not run yet'} | {order('faithful_seqavg') or 'not run yet'} |")
    return ("# The gap to the paper, deviation by deviation\n\nTest NLL, nats per frame; each Δ is the change "
            "one deviation makes, measured on committed runs (benchmarks/protocol_gap.py, which says how each "
            "is computed). n: runs averaged.\n\n" + "\n".join(lines) +
            "\n\n## The order of the units under each protocol (lowest test NLL first)\n\n"
            "| dataset | paper | ours | fresh seeds | faithful | faithful, per-sequence |\n|---|---|---|---|---|---|\n"
            + "\n".join(orders) + "\n")


BEGIN, END = "<!-- protocol_gap: begin -->", "<!-- protocol_gap: end -->"


def readme_block(md: str) -> str:
    """The two tables of `md` (its title and preamble left out), the order table under a bold lead."""
    body = md.split("\n\n", 2)[2]
    return body.replace("## The order of the units under each protocol (lowest test NLL first)",
                        "**The order of the units under each protocol** (lowest test NLL first):")


def write_readme(path: Path, md: str) -> None:
    text = path.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise SystemExit(f"{path}: expected one {BEGIN} and one {END} marker")
    head, rest = text.split(BEGIN)
    path.write_text(head + BEGIN + "\n" + readme_block(md) + END + rest.split(END, 1)[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "protocol_gap"))
    ap.add_argument("--readme", type=Path, help="rewrite this file's protocol_gap block with the tables")
    args = ap.parse_args()
    rs = rows()
    md = markdown(rs)
    Path(args.out + ".md").write_text(md)
    Path(args.out + ".json").write_text(json.dumps(rs, indent=2))
    if args.readme:
        write_readme(args.readme, md)
    print(md)


if __name__ == "__main__":
    main()
