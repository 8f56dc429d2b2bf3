"""How successive halving (`gatedrnn reproduce --search halving`) agrees with the paper's full learning-rate
search — measured without training anything.

Training is deterministic and a run paused at a rung then continued equals the uninterrupted run (train()'s
stop_after), so a halving search's decisions are a function of the full search's per-epoch histories: each
search run's metrics.jsonl (epoch, valid_nll) up to a rung is exactly what the halted run would have seen.
For every (dataset, unit) whose full search is finished in RESULTS_DIR this replays grid.halving_decide
(the function the driver itself calls) and reports:

  - the selected learning rate: full search vs halving;
  - the selected configuration's test NLL (seed 0 = the search run; mean over the seed runs when they exist);
  - the cost: epochs trained by the search runs (full vs halving; a candidate cut at rung r trains
    min(r, its own last epoch)), and the measured seconds of those epochs (training + per-epoch evaluation,
    from metrics.jsonl), with and without the seed runs.

    python benchmarks/halving_agreement.py results/paper --datasets jsb,nottingham \\
        --out benchmarks/results/halving_agreement
    python benchmarks/halving_agreement.py results/paper --compare /tmp/halving-jsb   # a real halving study
    python benchmarks/halving_agreement.py results/paper --sensitivity "25,50,100,200;10,20,40,80" --eta-list 2,3

--compare DIR also checks a halving study that really ran: its recorded decisions (store meta 'halving')
against the replay on its own histories and on RESULTS_DIR's, and its halted runs' histories against the
full runs' histories epoch by epoch (bit-identical NLLs expected).

Read-only on every directory it reads (the stores are opened with SQLite's mode=ro).
"""
from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
from pathlib import Path

from gatedrnn.study.grid import HALVING_EVAL_TRAIN_EVERY, OK_STATUSES, Grid, StudyConfig, halving_decide, select_lr


# ------------------------------------------------------------------------------------------ reading
def read_meta(results_dir: Path) -> dict:
    """The store's meta table, read-only (no write transaction, unlike Store())."""
    path = Path(results_dir) / "store.sqlite"
    if not path.exists():
        raise FileNotFoundError(f"no results store at {path}")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60.0)
    try:
        return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
    finally:
        db.close()


def read_history(run_dir: Path) -> list[dict]:
    p = run_dir / "metrics.jsonl"
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def read_run(run_dir: Path) -> dict | None:
    """A finished run as the store would hold it: status, epochs, valid/test NLL (result.json), history."""
    p = run_dir / "result.json"
    if not p.exists():
        return None
    r = json.loads(p.read_text())
    return {"status": r["status"], "epochs": r["epochs"], "best_epoch": r.get("best_epoch"),
            "valid_nll": r.get("valid_nll"), "test_nll": r.get("test_nll"), "history": read_history(run_dir)}


def seconds_upto(history: list[dict], epoch: int | None) -> float:
    """Measured cost of a run's epochs 0..epoch: training seconds + per-epoch evaluation seconds."""
    rows = [r for r in history if epoch is None or int(r["epoch"]) <= epoch]
    if not rows:
        return 0.0
    return float(rows[-1].get("seconds") or 0.0) + sum(float(r.get("eval_seconds") or 0.0) for r in rows)


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


# ------------------------------------------------------------------------------------------ replay
def study_of(results_dir: Path) -> StudyConfig:
    meta = read_meta(results_dir)
    if "study" not in meta:
        raise ValueError(f"{results_dir}: the store holds no study")
    return StudyConfig(**meta["study"]), meta


def halving_study(study: StudyConfig, rungs: list[int] | None = None, eta: int = 2) -> StudyConfig:
    return study.model_copy(update={"search": "halving", "halving_rungs": rungs, "halving_eta": eta})


def replay_cell(results_dir: Path, study: StudyConfig, grid: Grid, dataset: str, unit: str,
                rungs: list[int] | None = None, eta: int = 2) -> dict | None:
    """Full search vs halving replayed on the full search's histories; None while the search is unfinished."""
    runs = Path(results_dir) / "runs"
    specs = grid.search_specs(dataset, unit)
    rows = [read_run(runs / s.run_id) for s in specs]
    if any(r is None for r in rows):
        return None
    lrs = [s.lr for s in specs]
    epochs = int(specs[0].config["epochs"])
    hs = halving_study(study, rungs, eta)
    cell_rungs = hs.rungs(epochs)
    full = select_lr([{**r, "lr": lr} for r, lr in zip(rows, lrs)])
    d = halving_decide(rows, lrs, cell_rungs, eta)
    assert d["done"], "a finished full search must let halving finish"
    halv = d["selected"]

    def trained(i: int) -> int:
        last = int(rows[i]["epochs"])
        if i not in d["trained_to"]:
            return last                       # no rung at all: the full search
        stop = d["trained_to"][i]
        return last if stop is None else min(stop, last)

    full_epochs = sum(int(r["epochs"]) for r in rows)
    halv_epochs = sum(trained(i) for i in range(len(rows)))
    full_sec = sum(seconds_upto(r["history"], None) for r in rows)
    halv_sec = sum(seconds_upto(rows[i]["history"], trained(i)) for i in range(len(rows)))

    def seeds(sel: dict | None) -> dict:
        """The selected configuration's seed runs: test NLL over the seeds present, and their cost."""
        if sel is None:
            return {"lr": None, "test_seed0": None, "test_mean": None, "n_seeds": 0, "extra_epochs": None,
                    "extra_seconds": None, "extra_measured": False}
        sspecs = grid.seed_specs(dataset, unit, sel["lr"])
        srows = [read_run(runs / s.run_id) for s in sspecs]
        ok = [r for r in srows if r is not None and r["status"] in OK_STATUSES]
        extra = srows[1:]
        measured = all(r is not None for r in extra)
        if measured:
            e_ep = sum(int(r["epochs"]) for r in extra)
            e_sec = sum(seconds_upto(r["history"], None) for r in extra)
        else:  # not run: estimated as (seeds - 1) times seed 0's cost
            e_ep = len(extra) * int(srows[0]["epochs"])
            e_sec = len(extra) * seconds_upto(srows[0]["history"], None)
        return {"lr": sel["lr"], "test_seed0": srows[0]["test_nll"], "valid_seed0": srows[0]["valid_nll"],
                "test_mean": _mean([r["test_nll"] for r in ok]) if measured else None, "n_seeds": len(ok),
                "extra_epochs": e_ep, "extra_seconds": e_sec, "extra_measured": measured}

    fs, hsd = seeds(full), seeds(halv)
    return {
        "dataset": dataset, "unit": unit, "rungs": cell_rungs, "eta": eta, "candidates": lrs,
        "trace": [{"rung": t["rung"], "kept": t["kept"], "cut": t["cut"],
                   "scores": {f"{lr:.4g}": (None if not math.isfinite(v) else v) for lr, v in t["scores"].items()}}
                  for t in d["trace"]],
        "full": {**fs, "search_epochs": full_epochs, "search_seconds": full_sec},
        "halving": {**hsd, "search_epochs": halv_epochs, "search_seconds": halv_sec},
        "same_lr": fs["lr"] == hsd["lr"],
        "search_epoch_ratio": halv_epochs / full_epochs if full_epochs else None,
        "search_seconds_ratio": halv_sec / full_sec if full_sec else None,
    }


def replay(results_dir: Path, datasets: list[str] | None = None, rungs: list[int] | None = None,
           eta: int = 2) -> tuple[list[dict], list[str]]:
    """Every (dataset, unit) of RESULTS_DIR's study whose full search is finished; notes for the rest."""
    results_dir = Path(results_dir)
    study, meta = study_of(results_dir)
    grid = Grid(study, datasets=meta.get("datasets") or list(study.datasets))
    rows, notes = [], []
    for dataset, unit in grid.cells():
        if datasets and dataset not in datasets:
            continue
        r = replay_cell(results_dir, study, grid, dataset, unit, rungs, eta)
        if r is None:
            notes.append(f"{dataset}/{unit}: full search not finished in {results_dir}; not measured")
        else:
            rows.append(r)
    return rows, notes


# ------------------------------------------------------------------------ a real halving study vs replay
def compare_study(halving_dir: Path, full_dir: Path | None = None) -> list[dict]:
    """A halving study that really ran: its recorded decisions vs the replay on its own histories and
    (when full_dir is given) on the full study's; and its runs' histories vs the full study's runs."""
    halving_dir = Path(halving_dir)
    study, meta = study_of(halving_dir)
    if study.search != "halving":
        raise ValueError(f"{halving_dir} is not a halving study (search={study.search})")
    recorded = meta.get("halving") or {}
    grid = Grid(study, datasets=meta.get("datasets") or list(study.datasets))
    out = []
    for dataset, unit in grid.cells():
        rec = recorded.get(f"{dataset}/{unit}")
        if rec is None or not rec.get("done"):
            continue
        specs = grid.search_specs(dataset, unit)
        lrs = [s.lr for s in specs]
        epochs = int(specs[0].config["epochs"])
        cell_rungs = rec.get("rungs", study.rungs(epochs))   # as the driver resolved them

        def own(run_dir: Path) -> dict | None:
            r = read_run(run_dir)
            if r is not None:
                return r
            h = read_history(run_dir)   # halted: no result.json; its history ends at the rung it stopped at
            return {"status": "halted", "epochs": int(h[-1]["epoch"]) if h else 0, "history": h} if h else None

        mine = [own(halving_dir / "runs" / s.run_id) for s in specs]
        d_own = halving_decide(mine, lrs, cell_rungs, study.halving_eta)
        row = {"study": str(halving_dir), "rungs": cell_rungs, "dataset": dataset, "unit": unit,
               "recorded_lr": rec.get("selected_lr"),
               "recorded_kept": [t["kept"] for t in rec["trace"]],
               "replay_own_lr": (d_own["selected"] or {}).get("lr") if d_own["done"] else "unfinished",
               "replay_own_kept": [t["kept"] for t in d_own["trace"]]}
        row["own_agrees"] = (row["recorded_lr"] == row["replay_own_lr"]
                             and row["recorded_kept"] == row["replay_own_kept"])
        if full_dir is not None:
            full_rows = [read_run(Path(full_dir) / "runs" / s.run_id) for s in specs]
            if all(r is not None for r in full_rows):
                d_full = halving_decide(full_rows, lrs, cell_rungs, study.halving_eta)
                row["replay_full_lr"] = (d_full["selected"] or {}).get("lr")
                row["replay_full_kept"] = [t["kept"] for t in d_full["trace"]]
                row["full_agrees"] = (row["recorded_lr"] == row["replay_full_lr"]
                                      and row["recorded_kept"] == row["replay_full_kept"])
            # epoch-by-epoch: the halted/finished runs here vs the same run ids in the full study
            same, differ, compared = 0, 0, 0
            for s in specs:
                a = read_history(halving_dir / "runs" / s.run_id)
                b = {int(r["epoch"]): r for r in read_history(Path(full_dir) / "runs" / s.run_id)}
                for r in a:
                    o = b.get(int(r["epoch"]))
                    if o is None:
                        continue
                    compared += 1
                    # the training split where both evaluated it (a halving study: every 10th epoch)
                    both = "train_nll" in r and "train_nll" in o
                    if r.get("valid_nll") == o.get("valid_nll") and (not both or r["train_nll"] == o["train_nll"]):
                        same += 1
                    else:
                        differ += 1
            row["history_epochs_compared"], row["history_epochs_identical"] = compared, same
        out.append(row)
    return out


# ------------------------------------------------------------------------------------------ output
def read_cost(path: Path | None) -> dict | None:
    """Per (dataset, unit) from a study_cost.py result (its 'after' code): (core-seconds per epoch, of which
    evaluating the training split — None in results that did not time the splits apart)."""
    if path is None:
        return None
    ex = json.loads(Path(path).read_text())["extrapolation"]
    return {(v["dataset"], v["unit"]): (v["per_epoch_core_s"], v.get("per_epoch_core_s_halving")) for k, v in ex.items()
            if k.startswith("after/") and v.get("per_epoch_core_s")}


def study_core_hours(rows: list[dict], cost: dict | None) -> tuple[float, float, float | None] | None:
    """(full, halving, halving with the training split evaluated every HALVING_EVAL_TRAIN_EVERY-th epoch)
    core-hours of the cells' studies (search + the selected configuration's other seeds) at the measured
    per-epoch cost of each (dataset, unit) (median epoch; median epoch at a halving study's cadence); the
    last is None when the cost file does not split evaluation. None without a cost or for a cell it lacks."""
    if not cost or any((r["dataset"], r["unit"]) not in cost for r in rows):
        return None
    tot, sparse = [0.0, 0.0], 0.0
    split = all(cost[(r["dataset"], r["unit"])][1] is not None for r in rows)
    for r in rows:
        epoch, epoch_halving = cost[(r["dataset"], r["unit"])]
        for i, k in enumerate(("full", "halving")):
            tot[i] += (r[k]["search_epochs"] + (r[k]["extra_epochs"] or 0)) * epoch / 3600
        if split:
            sparse += (r["halving"]["search_epochs"] + (r["halving"]["extra_epochs"] or 0)) * epoch_halving / 3600
    return tot[0], tot[1], sparse if split else None


def _f(x, d=3):
    return "–" if x is None else f"{x:.{d}f}"


def _hours(ch) -> str:
    if not ch:
        return "–"
    return f"{ch[0]:.2f} → {ch[1]:.2f}" + (f" ({ch[2]:.2f})" if ch[2] is not None else "")


def sensitivity(results_dir: Path, schedules: list[list[int] | None], etas: list[int],
                datasets: list[str] | None = None, cost: dict | None = None) -> list[dict]:
    """Agreement and cost of other rung schedules on the same histories (one row per schedule and eta)."""
    out = []
    for rungs in schedules:
        for eta in etas:
            rows, _ = replay(results_dir, datasets, rungs, eta)
            if not rows:
                continue
            fe = sum(r["full"]["search_epochs"] for r in rows)
            he = sum(r["halving"]["search_epochs"] for r in rows)
            tot_f = sum(r["full"]["search_epochs"] + (r["full"]["extra_epochs"] or 0) for r in rows)
            tot_h = sum(r["halving"]["search_epochs"] + (r["halving"]["extra_epochs"] or 0) for r in rows)
            dv = [r["halving"]["valid_seed0"] - r["full"]["valid_seed0"] for r in rows]
            dt = [r["halving"]["test_seed0"] - r["full"]["test_seed0"] for r in rows]
            out.append({"rungs": "default" if rungs is None else ",".join(map(str, rungs)),
                        "resolved": sorted({tuple(r["rungs"]) for r in rows}), "eta": eta, "cells": len(rows),
                        "same_lr": sum(r["same_lr"] for r in rows), "search_epoch_ratio": he / fe,
                        "study_epoch_ratio": tot_h / tot_f, "max_valid_loss": max(dv), "max_test_loss": max(dt),
                        "mean_test_diff": sum(dt) / len(dt), "study_core_hours": study_core_hours(rows, cost)})
    return out


def markdown(rows: list[dict], notes: list[str], source: str, comparisons: list[dict] | None = None,
             sens: list[dict] | None = None, remarks: list[str] | None = None, cost: dict | None = None,
             cost_file: str | None = None) -> str:
    lines = [f"# Successive halving vs the full learning-rate search ({source})", "",
             "Replayed exactly from the full search's per-epoch validation NLLs (`benchmarks/halving_agreement.py`; "
             "training is deterministic and a halted run is the full run paused, so no retraining is needed). "
             "Test NLL: the selected configuration's; *mean* over its seed runs where they exist (n), else seed 0. "
             "Cost: epochs (and measured seconds) of the search runs; 'with seeds' adds the selected "
             "configuration's other seeds (measured where they ran, else estimated as seed 0's).", "",
             "| dataset | unit | rungs | full: lr | halving: lr | same | full: test NLL | halving: test NLL | "
             "full: valid (s0) | halving: valid (s0) | search epochs full → halving | epoch ratio | "
             "seconds ratio | ratio with seeds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f, h = r["full"], r["halving"]

        def test(x):
            if x["test_mean"] is not None and x["n_seeds"] > 1:
                return f"{x['test_mean']:.3f} (mean, n={x['n_seeds']})"
            return f"{_f(x['test_seed0'])} (s0)"
        with_seeds = None
        if f["extra_seconds"] is not None and h["extra_seconds"] is not None:
            with_seeds = (h["search_seconds"] + h["extra_seconds"]) / (f["search_seconds"] + f["extra_seconds"])
        lines.append(
            f"| {r['dataset']} | {r['unit']} | {','.join(map(str, r['rungs']))} | {f['lr']:.4g} | "
            f"{h['lr']:.4g} | {'yes' if r['same_lr'] else 'no'} | {test(f)} | {test(h)} | "
            f"{_f(f.get('valid_seed0'))} | {_f(h.get('valid_seed0'))} | "
            f"{f['search_epochs']} → {h['search_epochs']} | {_f(r['search_epoch_ratio'], 2)} | "
            f"{_f(r['search_seconds_ratio'], 2)} | {_f(with_seeds, 2)} |")
    if rows:
        fe = sum(r["full"]["search_epochs"] for r in rows)
        he = sum(r["halving"]["search_epochs"] for r in rows)
        fs = sum(r["full"]["search_seconds"] for r in rows)
        hs = sum(r["halving"]["search_seconds"] for r in rows)
        same = sum(r["same_lr"] for r in rows)
        lines += ["", f"Same selected lr in {same} of {len(rows)} cells. Search cost, all cells: {fe} → {he} epochs "
                      f"(× {he / fe:.2f}), {fs / 3600:.2f} → {hs / 3600:.2f} core-hours measured (× {hs / fs:.2f})."]
        ch = study_core_hours(rows, cost)
        if ch:
            lines += ["", f"Study (search + the selected configuration's other seeds) at the per-epoch core-seconds "
                          f"measured in `{cost_file}`: {ch[0]:.2f} → {ch[1]:.2f} core-hours (× {ch[1] / ch[0]:.2f})"
                      + (f"; with the training split evaluated after every {HALVING_EVAL_TRAIN_EVERY}th epoch, as "
                         f"a halving study does: **{ch[2]:.2f} core-hours** (× {ch[2] / ch[0]:.2f})."
                         if ch[2] is not None else ".")]
    lines += ["", "Halving trace (kept after each rung, scored by the best validation NLL up to the rung):", ""]
    for r in rows:
        steps = "; ".join(f"epoch {t['rung']}: keep {', '.join(f'{x:.4g}' for x in t['kept'])}" for t in r["trace"])
        lines.append(f"- {r['dataset']}/{r['unit']}: {steps}")
    if sens:
        lines += ["", "Other rung schedules on the same histories (seed-0 numbers; 'study' = search + the selected "
                      "configuration's other seeds):", "",
                  "| rungs | eta | same lr | search epochs ratio | study epochs ratio | worst valid loss (s0) | "
                  "worst test loss (s0) | mean test diff (s0) | study core-hours full → halving |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for t in sens:
            ch = t.get("study_core_hours")
            lines.append(f"| {t['rungs']} ({'; '.join(','.join(map(str, r)) for r in t['resolved'])}) | {t['eta']} | "
                         f"{t['same_lr']}/{t['cells']} | {t['search_epoch_ratio']:.2f} | {t['study_epoch_ratio']:.2f} | "
                         f"{t['max_valid_loss']:+.3f} | {t['max_test_loss']:+.3f} | {t['mean_test_diff']:+.3f} | "
                         f"{_hours(ch)} |")
        if cost_file and any(t.get("study_core_hours") for t in sens):
            lines += ["", f"Core-hours: each cell's epochs times its per-epoch core-seconds measured in `{cost_file}`"
                      + (f"; in brackets, with the training split evaluated after every {HALVING_EVAL_TRAIN_EVERY}th "
                         "epoch (a halving study's default)." if any((t.get("study_core_hours") or (0, 0, None))[2]
                                                                      is not None for t in sens) else ".")]
    if comparisons:
        lines += ["", "Real halving studies against the replay (decisions = the rungs' kept sets and the selected lr; "
                      "histories: the runs' per-epoch train and valid NLL against the same run ids in the full study):",
                  "", "| study | rungs | dataset | unit | recorded lr | replay on its own histories | "
                  "replay on the full study's | decisions equal | history epochs identical / compared |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for c in comparisons:
            lines.append(f"| {c.get('study', '')} | {','.join(map(str, c.get('rungs', [])))} | "
                         f"{c['dataset']} | {c['unit']} | {c['recorded_lr']:.4g} | {c['replay_own_lr']} | "
                         f"{c.get('replay_full_lr', '–')} | own: {'yes' if c['own_agrees'] else 'NO'}, full: "
                         f"{ {True: 'yes', False: 'NO', None: '–'}[c.get('full_agrees')] } | "
                         f"{c.get('history_epochs_identical', '–')} / {c.get('history_epochs_compared', '–')} |")
    if notes or remarks:
        lines += ["", "Notes:", "", *[f"- {n}" for n in [*(remarks or []), *notes]]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results_dir", type=Path, help="a results directory holding a finished full search")
    ap.add_argument("--datasets", help="comma-separated subset")
    ap.add_argument("--rungs", help="comma-separated rung epochs (default: the study's default for its epochs)")
    ap.add_argument("--eta", type=int, default=2)
    ap.add_argument("--compare", type=Path, action="append",
                    help="a halving study's results directory to check against the replay (repeatable)")
    ap.add_argument("--sensitivity", help="other rung schedules to replay, ';'-separated (e.g. '25,50,100,200;50,100')")
    ap.add_argument("--eta-list", default="2", help="etas for --sensitivity (comma-separated)")
    ap.add_argument("--note", action="append", default=[], help="a remark for the Notes of the markdown (repeatable)")
    ap.add_argument("--cost", type=Path, help="a study_cost.py result (.json): convert the studies' epochs to core-hours "
                    "at its measured per-epoch costs")
    ap.add_argument("--out", type=Path, help="write OUT.md and OUT.json (else print the markdown)")
    a = ap.parse_args(argv)
    rungs = [int(x) for x in a.rungs.split(",")] if a.rungs else None
    datasets = a.datasets.split(",") if a.datasets else None
    rows, notes = replay(a.results_dir, datasets, rungs, a.eta)
    cost = read_cost(a.cost)
    comparisons = [c for d in a.compare for c in compare_study(d, a.results_dir)] if a.compare else None
    sens = None
    if a.sensitivity:
        schedules = [None, *[[int(x) for x in sch.split(",")] for sch in a.sensitivity.split(";") if sch.strip()]]
        sens = sensitivity(a.results_dir, schedules, [int(e) for e in a.eta_list.split(",")], datasets, cost)
    md = markdown(rows, notes, str(a.results_dir), comparisons, sens, a.note, cost, str(a.cost) if a.cost else None)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.with_suffix(".md").write_text(md)
        a.out.with_suffix(".json").write_text(json.dumps({"source": str(a.results_dir), "cells": rows,
                                                          "notes": notes, "comparisons": comparisons,
                                                          "sensitivity": sens, "remarks": a.note,
                                                          "cost_file": str(a.cost) if a.cost else None},
                                                         indent=2, default=str) + "\n")
        print(f"wrote {a.out.with_suffix('.md')} and .json", file=sys.stderr)
    else:
        print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
