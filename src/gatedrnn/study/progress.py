"""How fast each unit makes progress (the paper's Figures 2–3): from the reported seeds' per-epoch records,
the best validation NLL a unit has reached after a fixed number of updates and of training seconds, and the
updates and seconds it needs to reach a target every unit reaches. Read from the store alone (histories),
deterministic; written as progress.md / progress.csv beside Table 2.

Marks, per dataset: updates after 10, 50 and 200 epochs' worth of updates (every unit of a dataset takes the
same updates per epoch: same batch size, same data), and seconds after the same numbers of the dataset's
median epoch (over every reported run of every unit). The target is the worst unit's median best validation
NLL, so that every unit's median seed reaches it. Each cell: median over seeds [min, max]; a seed whose run
stopped before a mark counts with the best it had reached (an early-stopped run's best is its result).
"""
from __future__ import annotations

import math
import statistics

from .grid import OK_STATUSES

EPOCH_MARKS = (10, 50, 200)


def _best_by(history: list[dict], key: str, mark: float) -> float | None:
    """Best validation NLL over the epochs whose `key` (updates or seconds) is <= mark; None when the run
    has no epoch by then (not even epoch 0 for an empty history)."""
    vals = [float(r["valid_nll"]) for r in history
            if r.get(key) is not None and float(r[key]) <= mark and r.get("valid_nll") is not None
            and math.isfinite(float(r["valid_nll"]))]
    return min(vals) if vals else None


def _first_reaching(history: list[dict], key: str, target: float) -> float | None:
    """`key` (updates or seconds) of the first epoch whose validation NLL is <= target; None if never."""
    for r in history:
        v = r.get("valid_nll")
        if v is not None and math.isfinite(float(v)) and float(v) <= target:
            return float(r[key])
    return None


def _spread(xs: list[float | None]) -> dict:
    got = [x for x in xs if x is not None]
    return {"median": statistics.median(got) if got else None, "min": min(got) if got else None,
            "max": max(got) if got else None, "n": len(got), "of": len(xs)}


def _histories(cell) -> list[list[dict]]:
    return [s["row"]["history"] for s in cell["seeds"]
            if s["row"] is not None and s["status"] in OK_STATUSES and s["row"].get("history")]


def _epoch_seconds(history: list[dict]) -> list[float]:
    return [b["seconds"] - a["seconds"] for a, b in zip(history, history[1:])
            if b.get("seconds") is not None and a.get("seconds") is not None]


def progress_rows(data: dict) -> list[dict]:
    """One row per (dataset, unit) with reported seeds: NLL at the update and second marks, and updates and
    seconds to the dataset's target. With the size axis: per (dataset, budget), rows with a "budget"."""
    out = []
    grid = data["grid"]
    for dataset, budget in [(d, b) for d in grid.datasets for b in grid.budgets]:
        cells = [c for c in data["cells"] if c["dataset"] == dataset and c.get("budget") == budget
                 and _histories(c)]
        if not cells:
            continue
        hists = {c["unit"]: _histories(c) for c in cells}
        every = [h for hs in hists.values() for h in hs if len(h) > 1]
        if not every:                  # nothing trained yet (or records without epochs): nothing to say
            continue
        per_epoch = statistics.median(h[1]["updates"] for h in every)
        sec_epoch = statistics.median(s for h in every for s in _epoch_seconds(h))
        finals = {u: statistics.median(min(float(r["valid_nll"]) for r in h if r.get("valid_nll") is not None
                                           and math.isfinite(float(r["valid_nll"]))) for h in hs)
                  for u, hs in hists.items()}
        target = max(finals.values())
        for unit, hs in hists.items():
            row = {"dataset": dataset, "unit": unit, **({"budget": budget} if grid.sized else {}),
                   "seeds": len(hs), "updates_per_epoch": per_epoch,
                   "median_epoch_seconds": sec_epoch, "target_valid_nll": target}
            for e in EPOCH_MARKS:
                row[f"valid_at_{e}_epochs_of_updates"] = _spread([_best_by(h, "updates", e * per_epoch) for h in hs])
                row[f"valid_at_{e}_epochs_of_seconds"] = _spread([_best_by(h, "seconds", e * sec_epoch) for h in hs])
            row["updates_to_target"] = _spread([_first_reaching(h, "updates", target) for h in hs])
            row["seconds_to_target"] = _spread([_first_reaching(h, "seconds", target) for h in hs])
            out.append(row)
    return out


def _cell(s: dict, digits: int = 3) -> str:
    if s["median"] is None:
        return "–"
    f = (lambda x: f"{x:.{digits}f}") if digits else (lambda x: f"{x:,.0f}")
    miss = f" ({s['of'] - s['n']} of {s['of']} never)" if s["n"] < s["of"] else ""
    return f"{f(s['median'])} [{f(s['min'])}, {f(s['max'])}]{miss}"


def progress_markdown(rows: list[dict], name=lambda d: d, unit_name=lambda u: u) -> str:
    """The progress table: per update, per second, and to the target."""
    head = ["dataset", "unit", "seeds"] + [f"valid after {e} epochs of updates" for e in EPOCH_MARKS] + \
           [f"valid after {e} median epochs of seconds" for e in EPOCH_MARKS] + \
           ["target (worst unit's median best)", "updates to target", "seconds to target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [name(r["dataset"]), unit_name(r["unit"]) + (f" ({r['budget']:,})" if r.get("budget") else ""),
                 str(r["seeds"])]
        cells += [_cell(r[f"valid_at_{e}_epochs_of_updates"]) for e in EPOCH_MARKS]
        cells += [_cell(r[f"valid_at_{e}_epochs_of_seconds"]) for e in EPOCH_MARKS]
        cells += [f"{r['target_valid_nll']:.3f}", _cell(r["updates_to_target"], 0), _cell(r["seconds_to_target"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    marks = "; ".join(f"{name(d)}: {u:g} updates and {s:.2f} s per epoch" for d, u, s in dict.fromkeys(
        (r["dataset"], r["updates_per_epoch"], r["median_epoch_seconds"]) for r in rows))
    return ("# Progress per update and per second (the paper's Figures 2–3)\n\n"
            "Best validation NLL (nats per step) reached by the reported seeds after a fixed number of updates and "
            "of training seconds; median [min, max] over seeds. Marks per dataset — " + marks + ". Target: the "
            "worst unit's median best validation NLL, so every unit's median seed reaches it. Seconds are the "
            "runs' own recorded training time (one thread per run, on a shared machine).\n\n" + "\n".join(lines) + "\n")


def flat(rows: list[dict]) -> list[dict]:
    """CSV rows: every spread as median/min/max columns."""
    out = []
    for r in rows:
        f = {}
        for k, v in r.items():
            if isinstance(v, dict):
                f.update({f"{k}_median": v["median"], f"{k}_min": v["min"], f"{k}_max": v["max"],
                          f"{k}_seeds": v["n"]})
            else:
                f[k] = v
        out.append(f)
    return out
