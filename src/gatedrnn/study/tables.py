"""The study's numbers, read from the results store alone (no training, no plotting): what every
cell ran and selected, the statistics over seeds, and the tables as rows, Markdown and CSV.

    table1.md / table1.csv     parameter-matched sizes: the paper's, Table 1's convention, and the runs'
    table2.md / table2.csv     train/test NLL, mean ± 95 % CI over seeds, beside the paper's and the
                               difference; reference rows (trivial models on the same splits)
    table2_tests.csv           best unit per dataset vs the runner-up: paired t-test by seed, Holm–Bonferroni
    lr_search.csv              every learning-rate candidate's validation NLL; the selected one marked
    ablation.md / ablation.csv only for a study with ablation variants (gatedrnn.nn): each variant's test NLL
                               beside its full unit's, the difference paired by seed, Holm-corrected tests
    size.md / size.csv         only for a study with the size axis (param_budgets): test NLL against
                               parameters, the units' order per budget (study/size.py)

Deterministic: the same store gives byte-identical files (no timings, no dates). The figures and the HTML
page that show these tables are study/report.py.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from ..status import RunStatus
from ..units import unit_family
from .grid import ENDED, OK_STATUSES, Grid, StudyConfig
from .stats import holm, mean_ci, paired_t
from .store import Store

# Table 2 of the paper: (train, test) average NLL. Speech: Ubisoft A/B, whose stand-ins here are FSDD sets.
PAPER_TABLE2 = {
    "nottingham": {"tanh": (3.22, 3.13), "gru": (2.79, 3.23), "lstm": (3.08, 3.20)},
    "jsb": {"tanh": (8.82, 9.10), "gru": (6.94, 8.54), "lstm": (8.15, 8.67)},
    "musedata": {"tanh": (5.64, 6.23), "gru": (5.06, 5.99), "lstm": (5.18, 6.23)},
    "piano": {"tanh": (5.64, 9.03), "gru": (4.93, 8.82), "lstm": (6.49, 9.03)},
    "fsdd-a": {"tanh": (6.29, 6.44), "gru": (2.31, 3.59), "lstm": (1.44, 2.70)},
    "fsdd-b": {"tanh": (7.61, 7.62), "gru": (0.38, 0.88), "lstm": (0.80, 1.26)},
}
PAPER_NAMES = {"nottingham": "Nottingham", "jsb": "JSB Chorales", "musedata": "MuseData", "piano": "Piano-midi",
               "fsdd-a": "FSDD A (paper: Ubisoft A)", "fsdd-b": "FSDD B (paper: Ubisoft B)"}
UNIT_NAMES = {"tanh": "tanh", "gru": "GRU", "lstm": "LSTM"}   # the paper's spelling; variants go by their own name
ALPHA = 0.05
# The status shown for a run the study needs but the store has no row of (not a RunStatus: nothing ran).
MISSING = "missing"


def _key(dataset: str) -> str:
    """Registry name → our table key ('fsdd_a', 'FSDD-A' → 'fsdd-a')."""
    n = "".join(ch for ch in dataset.lower() if ch.isalnum())
    return {"fsdda": "fsdd-a", "fsddb": "fsdd-b"}.get(n, dataset)


def _name(dataset: str) -> str:
    return PAPER_NAMES.get(_key(dataset), dataset)


def unit_name(unit: str) -> str:
    return UNIT_NAMES.get(unit, unit)


def group_name(dataset: str, budget: int | None) -> str:
    """A dataset's name, with the size axis its budget too: 'JSB Chorales, 20,000 parameters'."""
    return _name(dataset) if budget is None else f"{_name(dataset)}, {budget:,} parameters"


def cell_name(c: dict) -> str:
    """'JSB Chorales/GRU', with the size axis 'JSB Chorales/GRU (20,000)'."""
    return f"{_name(c['dataset'])}/{unit_name(c['unit'])}" + (
        "" if c.get("budget") is None else f" ({c['budget']:,})")


def groups(data: dict) -> list[tuple[str, int | None]]:
    """What the tests and figures compare units within: (dataset, budget), budget None without the size axis."""
    return [(d, b) for d in data["grid"].datasets for b in data["grid"].budgets]


def _sized(data: dict, budget: int | None) -> dict:
    """{"budget": budget} for a row of a study with the size axis, {} otherwise (its files keep their columns)."""
    return {"budget": budget} if data["grid"].sized else {}


def _f(x, digits=3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _p(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.3g}" if x >= 1e-3 else f"{x:.1e}"


# ------------------------------------------------------------------------------------ collect
def _run_kind(row: dict | None) -> str | None:
    """"music" or "speech" as the run recorded it (result.json's `kind`, kept in its store row's summary);
    None for a run with no result yet."""
    return ((row or {}).get("summary") or {}).get("kind")


def collect(out_dir: str | Path) -> dict:
    """Everything the outputs show, read from the store (deterministic: no timings in the tables)."""
    out = Path(out_dir)
    store = Store(out, create=False)
    try:
        meta_study = store.get_meta("study")
        if meta_study is None:
            raise ValueError(f"{store.path} holds no study (was `gatedrnn reproduce` run on it?)")
        study = StudyConfig(**meta_study)
        grid = Grid(study, datasets=store.get_meta("datasets"))
        notes = list(store.get_meta("notes", []))
        rows = {r["run_id"]: r for r in store.all()}
        sweep = store.get_meta("last_sweep")
        executor = store.get_meta("executor")
    finally:
        store.close()

    cells = []
    for dataset, unit, budget in grid.sized_cells():
        search = []
        for spec in grid.search_specs(dataset, unit, rows, budget):
            r = rows.get(spec.run_id)
            search.append({"run_id": spec.run_id, "lr": spec.lr, "seed": spec.seed,
                           "status": r["status"] if r else MISSING,
                           "valid_nll": r["valid_nll"] if r else None, "test_nll": r["test_nll"] if r else None,
                           "train_nll": r["train_nll"] if r else None})
        # full: every candidate finished, the lowest validation NLL; halving: the survivor of the rungs
        complete, chosen = grid.search_outcome(dataset, unit, rows, budget)
        seeds = []
        if chosen is not None:
            for spec in grid.seed_specs(dataset, unit, chosen["lr"], budget):
                r = rows.get(spec.run_id)
                seeds.append({"run_id": spec.run_id, "seed": spec.seed, "lr": spec.lr,
                              "status": r["status"] if r else MISSING, "row": r})
        cells.append({"dataset": dataset, "unit": unit, "budget": budget, "search": search, "search_complete": complete,
                      "selected_lr": chosen["lr"] if chosen else None, "seeds": seeds,
                      "selected_run": chosen.get("run_id") if chosen else None,
                      # the selecting run's own numbers (optimistic: it won the search on validation)
                      "selecting_test": chosen.get("test_nll") if chosen else None,
                      "selecting_test_seqavg": _seqavg(chosen, "test") if chosen else None})
    # each dataset's kind as its runs recorded it (a dataset none of whose runs has a result has none yet)
    kinds = {}
    for r in rows.values():
        if _run_kind(r):
            kinds.setdefault(r["dataset"], _run_kind(r))
    return {"study": study, "grid": grid, "cells": cells, "rows": rows, "notes": notes, "sweep": sweep,
            "executor": executor, "out": out, "kinds": kinds}


def _seqavg(row: dict | None, split: str) -> float | None:
    """A run's `<split>_nll_seqavg` (per-sequence mean, first step not scored; train.evaluate), None for runs
    recorded before it existed."""
    v = ((row or {}).get("summary") or {}).get(f"{split}_nll_seqavg")
    return None if v is None or not math.isfinite(float(v)) else float(v)


def extended_candidates(data: dict) -> list[tuple[dict, list[float]]]:
    """(cell, the rates edge extension added to it) for every cell it extended."""
    drawn = set(data["grid"].lrs)
    out = [(c, [x["lr"] for x in c["search"] if x["lr"] not in drawn]) for c in data["cells"]]
    return [(c, added) for c, added in out if added]


def edge_selections(data: dict) -> list[str]:
    """Cells whose selected rate is the smallest or largest of the candidates that cell trained."""
    out = []
    for c in data["cells"]:
        lrs = sorted(x["lr"] for x in c["search"])
        if c["selected_lr"] is not None and len(lrs) > 1 and c["selected_lr"] in (lrs[0], lrs[-1]):
            out.append(cell_name(c))
    return out


def _ok_seed_rows(cell) -> list[dict]:
    return [s["row"] for s in cell["seeds"] if s["row"] is not None and s["status"] in OK_STATUSES]


def _test_nll_by_seed(cell) -> dict[int, float]:
    """{seed: test NLL} of the cell's seed runs that finished with a model (what tests pair by seed)."""
    return {r["seed"]: r["test_nll"] for r in _ok_seed_rows(cell)}


def reported_run_ids(data: dict) -> list[str]:
    """Run ids of every cell's seed runs and selecting search run (sorted, each once)."""
    ids = set()
    for c in data["cells"]:
        ids.update(s["run_id"] for s in c["seeds"] if s["status"] != MISSING)
        if c["selected_run"] is not None:
            ids.add(c["selected_run"])
    return sorted(ids)


# ------------------------------------------------------------------------------------- tables
def _paper_size(budget: int | None, kind: str | None) -> bool:
    """Whether a cell's budget is the paper's size for its kind (within 10 % of Table 1's budget; no budget:
    Table 1's sizes) — where the paper's numbers stand beside ours."""
    from ..nn.counting import BUDGET
    return budget is None or (kind in BUDGET and abs(budget - BUDGET[kind]) <= 0.1 * BUDGET[kind])


def table2_rows(data: dict) -> list[dict]:
    rows = []
    for c in data["cells"]:
        ok = _ok_seed_rows(c)
        tr, va, te = (mean_ci([r[k] for r in ok]) for k in ("train_nll", "valid_nll", "test_nll"))
        sa = [_seqavg(r, "test") for r in ok]
        te_sa = mean_ci([v for v in sa if v is not None] if all(v is not None for v in sa) else [])
        paper = PAPER_TABLE2.get(_key(c["dataset"]), {}).get(c["unit"])
        if not _paper_size(c["budget"], data["kinds"].get(c["dataset"])):
            paper = None        # the size axis: the paper's numbers are of its one size (~20k music, ~168k speech)
        # the speech sets here are open stand-ins for the paper's private ones: only music compares
        comparable = paper is not None and data["kinds"].get(c["dataset"]) == "music"
        n_div = sum(s["status"] == RunStatus.DIVERGED for s in c["seeds"])
        n_fail = sum(s["status"] == RunStatus.FAILED for s in c["seeds"])
        n_missing = sum(s["status"] not in ENDED for s in c["seeds"])
        summary = (ok[0].get("summary") or {}) if ok else {}
        hidden = summary.get("hidden_size")
        # a finished search with nothing selected: every candidate diverged or failed (said, not left blank)
        if c["selected_lr"] is not None:
            search = "selected"
        elif not c["search_complete"]:
            search = "incomplete"
        else:
            n_sd = sum(x["status"] == RunStatus.DIVERGED for x in c["search"])
            n_sf = sum(x["status"] == RunStatus.FAILED for x in c["search"])
            search = f"no candidate trained: {n_sd} diverged, {n_sf} failed"
        rows.append({
            "dataset": c["dataset"], "unit": c["unit"], **_sized(data, c["budget"]), "hidden_size": hidden,
            **({"parameters": summary.get("recurrent_parameters")} if data["grid"].sized else {}),
            "lr": c["selected_lr"], "search": search,
            "seeds_ok": tr.n, "seeds_diverged": n_div, "seeds_failed": n_fail, "seeds_missing": n_missing,
            "train_mean": tr.mean, "train_ci": tr.half_width, "valid_mean": va.mean, "valid_ci": va.half_width,
            "test_mean": te.mean, "test_ci": te.half_width,
            "test_seqavg_mean": te_sa.mean if te_sa.n else None, "test_seqavg_ci": te_sa.half_width if te_sa.n else None,
            "selecting_seed": data["study"].search_seed, "selecting_test": c["selecting_test"],
            "selecting_test_seqavg": c["selecting_test_seqavg"],
            "paper_train": paper[0] if paper else None, "paper_test": paper[1] if paper else None,
            "diff_train": (tr.mean - paper[0]) if comparable and tr.n else None,
            "diff_test": (te.mean - paper[1]) if comparable and te.n else None,
        })
    return rows


def significance_rows(data: dict) -> list[dict]:
    """Per dataset (with the size axis: per dataset and budget): the unit with the lowest mean test NLL vs
    the runner-up, paired by seed; Holm–Bonferroni over the datasets (and budgets) that could be tested."""
    out = []
    for dataset, budget in groups(data):
        per_unit = {}
        for c in data["cells"]:
            if c["dataset"] == dataset and c["budget"] == budget:
                by_seed = _test_nll_by_seed(c)
                if by_seed:
                    per_unit[c["unit"]] = by_seed
        ranked = sorted(per_unit, key=lambda u: (sum(per_unit[u].values()) / len(per_unit[u]), u))
        complete = len(ranked) == len(data["study"].units)
        row = {"dataset": dataset, **_sized(data, budget), "best": ranked[0] if complete else None,
               "runner_up": ranked[1] if complete and len(ranked) > 1 else None, "pairs": 0, "mean_diff": None,
               "t": None, "p": None,
               "note": "" if complete else (f"incomplete: results for {', '.join(ranked)} only" if ranked
                                             else "incomplete: no results yet")}
        if complete and len(ranked) > 1:
            common = sorted(set(per_unit[ranked[0]]) & set(per_unit[ranked[1]]))
            a = [per_unit[ranked[1]][s] for s in common]
            b = [per_unit[ranked[0]][s] for s in common]
            t, p, n = paired_t(a, b)
            row.update(pairs=n, mean_diff=(sum(a) - sum(b)) / n if n else None,
                       t=None if math.isnan(t) else t, p=None if math.isnan(p) else p)
        out.append(row)
    adj, rej = holm([r["p"] if r["p"] is not None else math.nan for r in out], ALPHA)
    for r, a, j in zip(out, adj, rej):
        r["p_holm"] = None if math.isnan(a) else a
        r["significant"] = bool(j)
    return out


def _recorded_data_dir(out: Path, dataset: str) -> str | None:
    """Where this study's runs read `dataset` (their model.json), for a shell without GATEDRNN_DATA_DIR."""
    from ..data import resolve_data_dir
    if resolve_data_dir(None) is not None:
        return None
    for spec in sorted((Path(out) / "runs").glob("*/model.json")):
        try:
            m = json.loads(spec.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if m.get("dataset") == dataset and m.get("data_dir_resolved") and Path(m["data_dir_resolved"]).is_dir():
            return m["data_dir_resolved"]
    return None


def baseline_rows(data: dict) -> list[dict]:
    from .baselines import BASELINE_NAMES, dataset_baselines
    rows = []
    for dataset in data["grid"].datasets:
        try:
            b = dataset_baselines(data["study"].train_fields(dataset), dataset,
                                  data["study"].data_dir or _recorded_data_dir(data["out"], dataset))
        except Exception as e:  # data not readable here: say so, keep the report
            rows.append({"dataset": dataset, "model": "(reference rows unavailable)", "error": str(e)})
            continue
        for name, vals in b.items():
            if name.startswith("_"):
                continue
            rows.append({"dataset": dataset, "model": name, "description": BASELINE_NAMES[name],
                         "train": vals.get("train"), "valid": vals.get("valid"), "test": vals.get("test")})
    return rows


def table1_rows(data: dict) -> list[dict]:
    from ..nn.counting import table1_rows as paper_rows
    used = {}
    for c in data["cells"]:
        for s in c["seeds"] or []:
            r = s["row"]
            if r and r.get("summary") and r["summary"].get("hidden_size") and _run_kind(r):
                used.setdefault((_run_kind(r), c["unit"]), set()).add(
                    (r["summary"]["hidden_size"], r["summary"].get("input_size"),
                     r["summary"].get("recurrent_parameters")))
    rows = []
    for p in paper_rows():
        u = sorted(used.get((p["task"], p["unit"]), set()), key=str)
        rows.append({"task": p["task"], "unit": p["unit"], "units_paper": p["units_paper"],
                     "params_paper_k": p["paper_k"], "units_table1_convention": p["units"],
                     "params_table1_convention": p["parameters"], "agrees": p["agrees"],
                     "runs_units": "; ".join(str(h) for h, _, _ in u) or "–",
                     "runs_input_size": "; ".join(str(i) for _, i, _ in u) or "–",
                     "runs_recurrent_params": "; ".join(f"{n:,}" for _, _, n in u if n) or "–"})
    return rows


def lr_search_rows(data: dict) -> list[dict]:
    return [{"dataset": c["dataset"], "unit": c["unit"], **_sized(data, c["budget"]), "lr": s["lr"], "seed": s["seed"],
             "status": s["status"],
             "valid_nll": s["valid_nll"], "selected": c["selected_lr"] == s["lr"], "run_id": s["run_id"]}
            for c in data["cells"] for s in c["search"]]


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        path.write_text("")
        return
    keys = list(rows[0])
    for r in rows[1:]:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    path.write_text(buf.getvalue())


def _md_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _ci(mean, ci) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if ci is None or (isinstance(ci, float) and math.isnan(ci)):
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {ci:.3f}"


def _diff(x) -> str:
    return "–" if x is None else f"{x:+.2f}"


def stopping_summary(data: dict) -> dict:
    """How the study's finished runs (search and seed runs, each once) ended: stopped by patience, ran to
    the epoch cap, diverged — and the cells where a run reached the cap. A budget whose runs mostly reach
    the cap is truncated (its selection says little); `quick` is designed for >= 80 % stopped by patience."""
    seen, n = set(), {"patience": 0, "cap": 0, "diverged": 0}
    cap_cells = []
    for c in data["cells"]:
        for r in c["search"] + c["seeds"]:
            if r["run_id"] in seen:
                continue
            seen.add(r["run_id"])
            status = r["status"]
            if status == RunStatus.EARLY_STOPPED:
                n["patience"] += 1
            elif status == RunStatus.COMPLETED:
                n["cap"] += 1
                cell = cell_name(c)
                if cell not in cap_cells:
                    cap_cells.append(cell)
            elif status == RunStatus.DIVERGED:
                n["diverged"] += 1
    return {**n, "finished": sum(n.values()), "cap_cells": cap_cells}


def _no_early_stopping(data) -> bool:
    """Every dataset of the study trains with patience 0 (the released code's rule: all epochs, best kept)."""
    from ..config import TrainConfig
    default = TrainConfig.model_fields["patience"].default
    ds = data["grid"].datasets
    return bool(ds) and all(data["study"].train_fields(d).get("patience", default) == 0 for d in ds)


def _protocol_notes(data, kinds) -> list[str]:
    """Table 2's notes on what the numbers are: the metric, selection, seeds, intervals, tests, references."""
    study = data["study"]
    return [
        "\n## Notes\n",
        "- NLL: nats per time step ("
        + "; ".join(t for k, t in (("music", "music: per frame, summed over the 88 note outputs"),
                                   ("speech", "speech: per step, summed over its 10 predicted samples"))
                    if k in kinds) + "), averaged over all "
        "steps of a split (Σ NLL / Σ steps, the first step scored from a zero input); the model reported is "
        "each run's best-validation model"
        + (" (no early termination: the best of all epochs)" if _no_early_stopping(data) else " (early stopping)")
        + ".\n",
        "- Per-sequence mean: the authors' convention — each sequence's NLL per scored step, its first step not "
        "scored (inputs seq[:-1], targets seq[1:]), averaged over the split's sequences; mean ± CI over seeds. "
        "'–': runs recorded before this metric existed.\n",
        "- Learning rate: per (dataset, unit), the candidate with the lowest validation NLL of its seed-"
        f"{study.search_seed} run (test NLL is never used for a choice); that configuration is re-run with "
        f"seeds {study.seed_list()}. Diverged or failed runs are counted, not averaged.\n",
        (f"- Selecting run: the seed-{study.search_seed} run that won the search, shown apart (in brackets: "
         "per-sequence mean); it is not one of the reported seeds, so the means are not biased by the "
         "selection.\n" if study.search_seed not in study.seed_list() else
         f"- Selecting run: the seed-{study.search_seed} run that won the search is also reported seed "
         f"{study.search_seed}, so the means include a run chosen for its validation NLL (optimistic; "
         "`--report-seeds fresh` reports other seeds).\n"),
        "- ±: half-width of the two-sided 95 % confidence interval of the mean, t_{0.975, n−1} · s / √n "
        "(Student t, s the sample standard deviation over seeds); no interval with fewer than 2 seeds.\n",
        "- Best unit: lowest mean test NLL. Its difference to the runner-up is tested with a two-sided "
        "paired t-test across seeds (pairs = same seed), and the p-values are corrected for the number of "
        f"datasets with the Holm–Bonferroni step-down method (family-wise error {ALPHA}).\n",
        "- Δ: ours minus the paper's" + (" (music only: the speech sets here are open FSDD stand-ins for the "
        "paper's private Ubisoft sets, so their numbers are not comparable).\n"
        if any(data["kinds"].get(d) == "speech" for d in data["grid"].datasets) else ".\n"),
        "- Reference rows: fitted on the train split, scored on the same splits as the networks:"
        + (" per-note marginal frequencies (Bernoulli, add-one smoothing; no context) and 'repeat the "
           "previous frame' (p(on) = 1 − ε if the note was on in the previous frame, else ε'; ε, ε' fitted "
           "on train)" if kinds & {"music"} else "")
        + (";" if kinds == {"music", "speech"} else "")
        + (" one Gaussian per predicted sample (the train split's mean and variance of each of the 10 "
           "samples; no context)" if "speech" in kinds else "") + ".\n"
    ]


def table2_markdown(data, t2, sig, base) -> str:
    study = data["study"]
    kinds = {data["kinds"].get(d) for d in data["grid"].datasets} - {None}
    sized = data["grid"].sized      # the size axis: each row's budget, hidden units and parameters
    head = ["dataset", "unit", *(["parameters (budget)", "hidden units"] if sized else []),
            "lr (selected on valid)", "seeds ok / diverged / failed",
            "train NLL (ours)", "train (paper)", "Δ train", "test NLL (ours)", "test (paper)", "Δ test",
            "test NLL, per-sequence mean", f"selecting run (seed {study.search_seed}): test NLL"]
    body = []
    for r in t2:
        size = [f"{r['parameters']:,} ({r['budget']:,})" if r["parameters"] else f"– ({r['budget']:,})",
                r["hidden_size"] or "–"] if sized else []
        body.append([_name(r["dataset"]), unit_name(r["unit"]), *size,
                     (f"– ({r['search']})" if r["search"].startswith("no candidate") else "–")
                     if r["lr"] is None else f"{r['lr']:.3g}",
                     f"{r['seeds_ok']} / {r['seeds_diverged']} / {r['seeds_failed']}"
                     + (f" ({r['seeds_missing']} not run yet)" if r["seeds_missing"] else ""),
                     _ci(r["train_mean"], r["train_ci"]), _f(r["paper_train"], 2), _diff(r["diff_train"]),
                     _ci(r["test_mean"], r["test_ci"]), _f(r["paper_test"], 2), _diff(r["diff_test"]),
                     "–" if r["test_seqavg_mean"] is None else _ci(r["test_seqavg_mean"], r["test_seqavg_ci"]),
                     _f(r["selecting_test"]) + ("" if r["selecting_test_seqavg"] is None
                                                else f" ({r['selecting_test_seqavg']:.3f})")])
    for b in base:
        if "error" in b:
            body.append([_name(b["dataset"]), b["model"], *[""] * (len(head) - 2)])
            continue
        body.append([_name(b["dataset"]), f"*reference: {b['description']}*", *([""] * (2 if sized else 0)), "", "",
                     _f(b["train"]), "", "", _f(b["test"]), "", "", "", ""])
    md = ["# Table 2: average negative log-likelihood (nats per step), train / test\n",
          f"Budget `{study.budget}`: {len(data['grid'].lrs)} learning-rate candidates"
          + (f" (+ up to {study.lr_extend} per side where the selection was an edge: edge extension)"
             if study.lr_extend else "") + ", "
          f"{study.seeds} seeds; mean ± half-width of the 95 % Student-t confidence interval over seeds.\n",
          (f"\nThe size axis: every (dataset, unit) at {len(data['grid'].budgets)} budgets of recurrent parameters "
           f"({', '.join(f'{b:,}' for b in data['grid'].budgets)}), each its own cell (search, selection, seeds); "
           "a cell's hidden size is the one whose count (Table 1's convention: recurrent layer, one bias per "
           "gate, LSTM peepholes) at the data's input size is closest to its budget. Test NLL against "
           "parameters: size.md, size.csv, size.png.\n" if sized else ""),
          _md_table(head, body),
          "\n## Best unit per dataset" + (" and budget" if sized else "") + "\n",
          _md_table(["dataset", "best (lowest mean test NLL)", "runner-up", "pairs (seeds)",
                     "mean test-NLL gap", "paired t", "p", "p (Holm)", f"significant at {ALPHA}", "note"],
                    [[group_name(s["dataset"], s.get("budget")), unit_name(s["best"]) if s["best"] else "–",
                      unit_name(s["runner_up"]) if s["runner_up"] else "–", s["pairs"], _f(s["mean_diff"]),
                      _f(s["t"], 2), _p(s["p"]), _p(s["p_holm"]), "yes" if s["significant"] else "no",
                      s["note"]] for s in sig]),
          *_protocol_notes(data, kinds)]
    edge = edge_selections(data)
    if edge:
        md.append(f"- The selected learning rate is the smallest or largest candidate for: {', '.join(edge)} — "
                  "the optimum may lie outside the candidates (widen --lr-range, add candidates, or "
                  "--lr-extend).\n")
    extended = [f"{cell_name(c)} ({len(added)})"
                for c, added in extended_candidates(data)]
    if extended:
        md.append(f"- Edge extension added candidates (count in brackets) for: {', '.join(extended)}.\n")
    stop = stopping_summary(data)
    if stop["finished"] and _no_early_stopping(data):
        md.append(f"- Stopping: none — every run trains all its epochs and reports its best-validation model "
                  f"(the released code's rule); {stop['cap']} of {stop['finished']} finished runs ran to the end, "
                  f"{stop['diverged']} diverged.\n")
    elif stop["finished"]:
        md.append(f"- Stopping: {stop['patience']} of {stop['finished']} finished runs "
                  f"({100 * stop['patience'] / stop['finished']:.0f} %) stopped by patience (early stopping), "
                  f"{stop['cap']} ran to the epoch cap, {stop['diverged']} diverged"
                  + (f"; the cap was reached in {', '.join(stop['cap_cells'])} — a run still improving there "
                     "was cut short" if stop["cap_cells"] else "") + ".\n")
    for dataset in data["grid"].datasets:
        f = study.train_fields(dataset)
        if f.get("limit_sequences") or f.get("crop_length"):
            md.append(f"- Data slices for {_name(dataset)}: limit_sequences={f.get('limit_sequences')} "
                      f"({f.get('subset', 'first')}: "
                      + ("spread evenly over each split" if f.get("subset") == "spread" else "the first ones of each split")
                      + f"), crop_length={f.get('crop_length')} (its numbers are NOT comparable to the paper's).\n")
    per = _per_dataset_here(data)
    if per:
        md.append(f"- Per-dataset training fields: `{json.dumps(per, sort_keys=True)}`.\n")
    for n in data["notes"]:
        md.append(f"- {n}\n")
    return "".join(md)


def _per_dataset_here(data) -> dict:
    """The study's per-dataset fields for the datasets it actually has (a JSB-only study shows no speech)."""
    from ..data import DataError, canonical_name
    here = set(data["grid"].datasets)
    out = {}
    for name, fields in data["study"].per_dataset.items():
        try:
            key = canonical_name(name)
        except DataError:
            key = name
        if key in here:
            out[name] = fields
    return out


def table1_markdown(t1) -> str:
    head = ["task", "unit", "units (paper)", "parameters (paper, k)", "units (Table 1 convention)",
            "parameters (Table 1 convention)", "agrees", "units in our runs", "input size in our runs",
            "recurrent parameters in our runs"]
    body = [[r["task"], unit_name(r["unit"]), r["units_paper"], f"{r['params_paper_k']:.1f}",
             r["units_table1_convention"], f"{r['params_table1_convention']:,}", "yes" if r["agrees"] else "NO",
             r["runs_units"], r["runs_input_size"], r["runs_recurrent_params"]] for r in t1]
    return ("# Table 1: parameter-matched sizes\n\n" + _md_table(head, body) +
            "\nTable 1 convention: recurrent layer only, one bias per gate, diagonal LSTM peepholes; input size "
            "100 (music, nominal) and 20 (speech). Our runs use the same hidden sizes with the data's real "
            "input size (88 piano keys for music), hence slightly different counts.\n")


# ------------------------------------------------------------------------------------ ablation
def ablation_variants(study: StudyConfig) -> list[str]:
    """The study's units that modify a paper unit (gatedrnn.nn: lstm-*, gru-*, mgu), in its order."""
    return [u for u in study.units if unit_family(u) != u]


def ablation_rows(data: dict, t2: list[dict] | None = None) -> list[dict]:
    """Per dataset and family with a variant in the study: the full unit, then each variant — test NLL
    mean ± 95 % CI over seeds, seeds ok/diverged/failed, and for a variant the difference to the full unit
    paired by seed (variant − full: > 0, the variant is worse), the 95 % CI of that mean difference, the
    paired t-test, and its p Holm-corrected across every (variant, dataset) pair tested. [] without variants."""
    study = data["study"]
    variants = ablation_variants(study)
    if not variants:
        return []
    by_cell = {(r["dataset"], r["unit"], r.get("budget")): r for r in (t2 if t2 is not None else table2_rows(data))}
    cells = {(c["dataset"], c["unit"], c["budget"]): c for c in data["cells"]}
    families = list(dict.fromkeys(unit_family(u) for u in variants))
    out = []
    for dataset, budget in groups(data):
        for family in families:
            has_full = family in study.units
            full = _test_nll_by_seed(cells[(dataset, family, budget)]) if has_full else {}
            for unit in ([family] if has_full else []) + [u for u in variants if unit_family(u) == family]:
                t = by_cell[(dataset, unit, budget)]
                row = {"dataset": dataset, **_sized(data, budget), "unit": unit, "family": family,
                       "role": "full" if unit == family else "variant", "lr": t["lr"],
                       "seeds_ok": t["seeds_ok"], "seeds_diverged": t["seeds_diverged"],
                       "seeds_failed": t["seeds_failed"], "seeds_missing": t["seeds_missing"],
                       "test_mean": t["test_mean"], "test_ci": t["test_ci"],
                       "test_seqavg_mean": t["test_seqavg_mean"], "test_seqavg_ci": t["test_seqavg_ci"],
                       "pairs": 0, "diff_mean": None,
                       "diff_ci": None, "t": None, "p": None, "p_holm": None, "significant": None, "note": ""}
                if t["search"] != "selected":   # e.g. every candidate diverged: said, not left blank
                    row["note"] = "learning-rate search incomplete" if t["search"] == "incomplete" else t["search"]
                if unit != family:
                    mine = _test_nll_by_seed(cells[(dataset, unit, budget)])
                    common = sorted(set(mine) & set(full))
                    a, b = [mine[s] for s in common], [full[s] for s in common]
                    tt, p, n = paired_t(a, b)
                    diff = mean_ci([x - y for x, y in zip(a, b)])
                    row.update(pairs=n, diff_mean=diff.mean if n else None,
                               diff_ci=diff.half_width if n >= 2 else None,
                               t=None if math.isnan(tt) else tt, p=None if math.isnan(p) else p)
                    if row["note"]:
                        pass
                    elif not has_full:
                        row["note"] = f"the full unit ({family}) is not in the study: nothing to compare"
                    elif n < 2:
                        row["note"] = f"{n} seed(s) finished for both: no test"
                out.append(row)
    tested = [r for r in out if r["role"] == "variant"]
    adj, rej = holm([r["p"] if r["p"] is not None else math.nan for r in tested], ALPHA)
    for r, a, j in zip(tested, adj, rej):
        r["p_holm"] = None if math.isnan(a) else a
        r["significant"] = bool(j)
    return out


def _delta(mean, ci) -> str:
    if mean is None:
        return "–"
    return f"{mean:+.3f}" if ci is None or math.isnan(ci) else f"{mean:+.3f} ± {ci:.3f}"


def ablation_markdown(data: dict, rows: list[dict]) -> str:
    study = data["study"]
    m = sum(r["p"] is not None for r in rows)
    head = ["dataset", "unit", "lr (selected on valid)", "seeds ok / diverged / failed", "test NLL",
            "test NLL, per-sequence mean", "Δ test NLL vs full unit", "pairs (seeds)", "paired t", "p", "p (Holm)", f"significant at {ALPHA}",
            "note"]
    body = []
    for r in rows:
        full = r["role"] == "full"
        body.append([group_name(r["dataset"], r.get("budget")), f"{unit_name(r['unit'])} (full)" if full else r["unit"],
                     "–" if r["lr"] is None else f"{r['lr']:.3g}",
                     f"{r['seeds_ok']} / {r['seeds_diverged']} / {r['seeds_failed']}"
                     + (f" ({r['seeds_missing']} not run yet)" if r["seeds_missing"] else ""),
                     _ci(r["test_mean"], r["test_ci"]),
                     "–" if r["test_seqavg_mean"] is None else _ci(r["test_seqavg_mean"], r["test_seqavg_ci"]),
                     *([""] * 6 if full else
                       [_delta(r["diff_mean"], r["diff_ci"]), r["pairs"], _f(r["t"], 2), _p(r["p"]),
                        _p(r["p_holm"]), "–" if r["p_holm"] is None else "yes" if r["significant"] else "no"]),
                     r["note"]])
    return "".join([
        "# Ablation: what each component is worth (test NLL, nats per step)\n\n",
        f"Budget `{study.budget}`: every unit, variant or not, gets the same {len(data['grid'].lrs)} "
        f"learning-rate candidate(s) (selected on validation NLL) and the same {study.seeds} seeds. Variants: "
        "docs/VARIANTS.md (lstm-* modify the paper's LSTM, gru-* and mgu its GRU).\n\n",
        _md_table(head, body),
        "\n## Notes\n",
        "- Test NLL: mean ± half-width of the 95 % Student-t confidence interval over the seeds that finished; "
        "diverged or failed seeds are counted, not averaged. Per-sequence mean: each test sequence's NLL per "
        "scored step (first step not scored), averaged over sequences (the authors' convention; '–': runs "
        "recorded before it existed).\n",
        "- Δ: variant minus its full unit, seed by seed (pairs: the seeds both finished), mean ± half-width of "
        "the 95 % confidence interval of the paired differences. Δ > 0: the variant is worse, so the component "
        "it removes or changes helps.\n",
        "- Two-sided paired t-test on the differences; p-values Holm–Bonferroni-corrected over all "
        f"{m} (variant, dataset) pairs tested (family-wise error {ALPHA}).\n",
        "- Forest plot: ablation_forest.png / ablation_forest.svg (Δ ± its 95 % CI per variant and dataset).\n"])


# ------------------------------------------------------------------------------------ writers
def write_tables(data: dict, out: Path) -> dict:
    """Write table1/table2 (Markdown, CSV), table2_tests.csv and lr_search.csv into `out`; returns
    {"files": {name: path}, "table1_md", "table2_md", "lr_rows", "ablation_rows", "ablation_md", ...} for the
    page that shows them. A study with ablation variants also gets ablation.md and ablation.csv; one with the
    size axis size.md and size.csv."""
    t2, sig, base = table2_rows(data), significance_rows(data), baseline_rows(data)
    t1 = table1_rows(data)
    lr_rows = lr_search_rows(data)
    files = {}
    t2_md, t1_md = table2_markdown(data, t2, sig, base), table1_markdown(t1)
    for name, text in (("table2.md", t2_md), ("table1.md", t1_md)):
        (out / name).write_text(text)
        files[name] = out / name
    base_csv = [{"dataset": b["dataset"], "unit": f"reference:{b['model']}", "train_mean": b.get("train"),
                 "valid_mean": b.get("valid"), "test_mean": b.get("test")} for b in base]
    for name, rows in (("table2.csv", t2 + base_csv), ("table2_tests.csv", sig), ("table1.csv", t1),
                       ("lr_search.csv", lr_rows)):
        _write_csv(out / name, rows)
        files[name] = out / name
    # the runs whose numbers the tables show (each cell's seed runs and its selecting run): their best.pt
    # is what a committed study keeps, so `gatedrnn evaluate`/`analyze` re-read it without training
    (out / "reported_runs.txt").write_text("".join(f"runs/{r}\n" for r in reported_run_ids(data)))
    files["reported_runs.txt"] = out / "reported_runs.txt"
    from . import progress
    prog = progress.progress_rows(data)
    prog_md = progress.progress_markdown(prog, _name, unit_name) if prog else None
    if prog:
        (out / "progress.md").write_text(prog_md)
        _write_csv(out / "progress.csv", progress.flat(prog))
        files.update({"progress.md": out / "progress.md", "progress.csv": out / "progress.csv"})
    from . import tuning
    tune = tuning.tuning_rows(data)
    tune_md = tuning.tuning_markdown(tune, _name, unit_name, data["study"].search == "halving") if tune else None
    if tune:
        (out / "tuning.md").write_text(tune_md)
        _write_csv(out / "tuning_curves.csv", tune)
        files.update({"tuning.md": out / "tuning.md", "tuning_curves.csv": out / "tuning_curves.csv"})
    size_rows, size_md = [], None
    if data["grid"].sized:      # the size axis: test NLL against parameters (study/size.py)
        from . import size
        size_rows = size.size_rows(t2)
        size_md = size.size_markdown(size_rows, _name, unit_name)
        (out / "size.md").write_text(size_md)
        _write_csv(out / "size.csv", size_rows)
        files.update({"size.md": out / "size.md", "size.csv": out / "size.csv"})
    abl = ablation_rows(data, t2)
    abl_md = ablation_markdown(data, abl) if abl else None
    if abl:
        (out / "ablation.md").write_text(abl_md)
        _write_csv(out / "ablation.csv", abl)
        files.update({"ablation.md": out / "ablation.md", "ablation.csv": out / "ablation.csv"})
    return {"files": files, "table1_md": t1_md, "table2_md": t2_md, "lr_rows": lr_rows, "ablation_rows": abl,
            "ablation_md": abl_md, "progress_md": prog_md, "tuning_rows": tune, "tuning_md": tune_md,
            "size_rows": size_rows, "size_md": size_md}
