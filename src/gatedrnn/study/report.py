"""Figures and the HTML page of a study, rebuilt from the results store alone (no training); the
tables they show are computed and written by study/tables.py.

    table*.md, table*.csv, lr_search.csv    study/tables.py
    curves_epochs.{png,svg}    train/valid NLL against epochs, one row per dataset, mean curve + seed band
    curves_seconds.{png,svg}   the same against cumulative training seconds
    size.{png,svg}             a study with the size axis: test NLL against parameters (study/size.py)
    ablation_forest.{png,svg}  a study with ablation variants: each variant's test NLL minus its full unit's
                               (paired by seed) ± 95 % CI, one panel per dataset
    report.html                all of the above in one self-contained page
"""
from __future__ import annotations

import html
import json
import math
import platform
import time
from pathlib import Path

from ..analysis import OTHER_COLORS, UNIT_COLORS, unit_color
from ..status import FINISHED, RunStatus
from .grid import Grid, StudyConfig
from .store import Store
from .tables import ALPHA, _f, _name, cell_name, collect, extended_candidates, group_name, groups, unit_name, write_tables

# ------------------------------------------------------------------------------------ figures
def _curves(cell) -> list[list[dict]]:
    return [s["row"]["history"] for s in cell["seeds"]
            if s["row"] is not None and s["status"] in FINISHED and s["row"].get("history")]


def _aggregate(histories, key: str, xkey: str):
    """Per epoch: x (mean over seeds), mean, min, max of `key` over the seeds that reached that epoch.
    An epoch is drawn only where every seed whose curve spans it has a value: seeds that recorded the
    training split at different cadences (--eval-train-every) share the epochs they all evaluated."""
    import numpy as np
    by_epoch: dict[int, list[tuple[float, float]]] = {}
    spans = []
    for h in histories:
        keyed = [int(r["epoch"]) for r in h if key in r and r.get(key) is not None and math.isfinite(r[key])]
        if keyed:
            spans.append((min(keyed), max(keyed), set(keyed)))
        for r in h:
            if key in r and r.get(key) is not None and math.isfinite(r[key]):
                by_epoch.setdefault(int(r["epoch"]), []).append((float(r[xkey]), float(r[key])))
    ep = sorted(e for e in by_epoch if all(e in have for lo, hi, have in spans if lo <= e <= hi))
    x = np.array([np.mean([a for a, _ in by_epoch[e]]) for e in ep])
    ys = [np.array([b for _, b in by_epoch[e]]) for e in ep]
    return x, np.array([y.mean() for y in ys]), np.array([y.min() for y in ys]), np.array([y.max() for y in ys])


def _y_range(curves) -> tuple[float, float] | None:
    """A y-range where the units differ: the untrained epoch-0 value (and the first few epochs) would
    flatten every curve, so the top is each curve's value 5 % of the way into training (at least
    epoch 1), the bottom the lowest point of any band."""
    tops, bottoms = [], []
    for x, m, lo, hi in curves:
        k = min(len(m) - 1, max(1, len(m) // 20))
        tops.append(float(m[k]))
        bottoms.append(float(lo.min()))
    if not tops:
        return None
    top, bottom = max(tops), min(bottoms)
    pad = 0.04 * (top - bottom) if top > bottom else 0.5
    return bottom - pad, top + pad


def _save(fig, out: Path, name: str) -> dict[str, Path]:
    """`name`.png and `name`.svg (no date and fixed element ids in the SVG, so a rebuild changes it only
    where the data does)."""
    import matplotlib
    import matplotlib.pyplot as plt
    fig.tight_layout()
    files = {}
    for ext in ("png", "svg"):
        p = out / f"{name}.{ext}"
        with matplotlib.rc_context({"svg.hashsalt": name}):   # clip-path ids from the name, not at random
            fig.savefig(p, dpi=110, metadata={"Date": None} if ext == "svg" else None)
        files[f"{name}.{ext}"] = p
    plt.close(fig)
    return files


def _extension_html(data: dict) -> str:
    """The edge extension of the study's cells (candidates added beyond a selected edge), if any."""
    study = data["study"]
    if not study.lr_extend:
        return ""
    added = [f"{html.escape(cell_name(c))}: "
             + ", ".join(f"{lr:.3g}" for lr in lrs) for c, lrs in extended_candidates(data)]
    return (f"; edge extension, at most {study.lr_extend} per side: "
            + ("; ".join(added) if added else "none needed"))


def make_figures(data: dict, out: Path) -> dict[str, Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = groups(data)        # (dataset, budget): one row of panels each (budget None without the size axis)
    files = {}
    for xkey, xlabel, name in (("epoch", "epoch", "curves_epochs"), ("seconds", "training seconds (cumulative)",
                                                                      "curves_seconds")):
        fig, axes = plt.subplots(len(panels), 2, figsize=(10, 3.2 * len(panels)), squeeze=False)
        for i, (dataset, budget) in enumerate(panels):
            for j, (key, title) in enumerate((("train_nll", "train"), ("valid_nll", "validation"))):
                ax = axes[i][j]
                drawn = []
                for c in data["cells"]:
                    if c["dataset"] != dataset or c["budget"] != budget:
                        continue
                    hist = _curves(c)
                    if not hist:
                        continue
                    x, m, lo, hi = _aggregate(hist, key, xkey)
                    if len(x) == 0:
                        continue
                    drawn.append((x, m, lo, hi))
                    col = unit_color(c["unit"], data["study"].units)
                    ax.plot(x, m, color=col, label=f"{unit_name(c['unit'])} (n={len(hist)})")
                    ax.fill_between(x, lo, hi, color=col, alpha=0.2, linewidth=0)
                yr = _y_range(drawn)
                if yr is not None:
                    ax.set_ylim(*yr)
                ax.set_title(f"{group_name(dataset, budget)}: {title}", fontsize=10)
                ax.set_xlabel(xlabel)
                ax.set_ylabel("NLL (nats/step)")
                ax.grid(True, which="both", alpha=0.3)
                if ax.has_data():
                    ax.legend(fontsize=8)
        fig.suptitle(f"Learning curves against {xlabel}\nmean over seeds; band = min..max over seeds; "
                     "y-range from 5 % into training (epoch 0 lies above it)",
                     fontsize=11)
        files.update(_save(fig, out, name))
    return files


def ablation_figure(rows: list[dict], datasets: list, out: Path) -> dict[str, Path]:
    """The forest plot of tables.ablation_rows: per dataset (a panel; with the size axis, per (dataset,
    budget) of `datasets`) and variant (a row), the mean paired difference to the full unit ± its 95 % CI;
    filled markers are significant after Holm."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    variants = list(dict.fromkeys(r["unit"] for r in rows if r["role"] == "variant"))
    fig, axes = plt.subplots(1, len(datasets), figsize=(1.5 + 4.2 * len(datasets), 1.8 + 0.42 * len(variants)),
                             squeeze=False, sharey=True)
    for ax, dataset in zip(axes[0], datasets):
        dataset, budget = dataset if isinstance(dataset, tuple) else (dataset, None)
        for r in rows:
            if r["dataset"] != dataset or r.get("budget") != budget or r["role"] != "variant":
                continue
            y = variants.index(r["unit"])
            if r["diff_mean"] is None:
                why = f" {r['note']}" if r["lr"] is None and r["note"] else " no pairs"   # e.g. all diverged
                ax.text(0, y, why, va="center", fontsize=7, color="#777")
                continue
            col = UNIT_COLORS.get(r["family"], OTHER_COLORS[4])
            ci = r["diff_ci"] if r["diff_ci"] is not None and math.isfinite(r["diff_ci"]) else None
            ax.errorbar(r["diff_mean"], y, xerr=ci, fmt="o", color=col, capsize=3,
                        markerfacecolor=col if r["significant"] else "white")
        ax.axvline(0.0, color="#444", linewidth=0.8)
        ax.set_title(group_name(dataset, budget), fontsize=10)
        ax.set_xlabel("Δ test NLL: variant − full unit (nats/step)")
        ax.grid(True, axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(variants)), variants)
    axes[0][0].set_ylim(len(variants) - 0.5, -0.5)   # the study's order, top to bottom
    fig.suptitle("Ablation: each variant against its full unit, paired by seed\nmean difference ± 95 % CI; "
                 f"filled: significant after Holm (α = {ALPHA})\n> 0: the variant is worse", fontsize=10)   # 3 lines: one panel is narrow
    return _save(fig, out, "ablation_forest")


# --------------------------------------------------------------------------------------- html
def _html_table(header, body) -> str:
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in header)
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{rows}</tbody></table>"


def _md_to_html_tables(md: str) -> str:
    """The Markdown produced here → HTML (headings, pipe tables, bullet lists, *emphasis*)."""
    out, table, items = [], [], []

    def inline(s: str) -> str:
        s = html.escape(s)
        import re
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", s)

    def flush():
        nonlocal table, items
        if table:
            cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table]
            out.append(_html_table(cells[0], [[inline(c) for c in r] for r in cells[2:]]))
            table = []
        if items:
            out.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>")
            items = []

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        if line.startswith("- "):
            items.append(line[2:])
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h3>{inline(line[3:])}</h3>")
        elif line.startswith("# "):
            out.append(f"<h2>{inline(line[2:])}</h2>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush()
    return "\n".join(out)


def _svg_inline(path: Path) -> str:
    s = path.read_text()
    i = s.find("<svg")
    return s[i:] if i >= 0 else s


ANALYSIS = (("gradient_flow", "Gradient flow: ‖∂ℓ_t/∂h_{t−k}‖ against the distance k"),
            ("context", "Context: test NLL with the state reset every k steps"),
            ("time_scales", "Effective time scales of the hidden units (from the mean forget / update gate)"))


def _analysis_section(out: Path) -> str:
    """The section of `gatedrnn analyze RESULTS_DIR` (written into RESULTS_DIR/analysis), when it has run."""
    a = out / "analysis"
    figs = [(name, title) for name, title in ANALYSIS if (a / f"{name}.svg").exists()]
    if not figs:
        return ""
    parts = ["<h2>Analysis (gatedrnn analyze)</h2>",
             "<p>On the test split, for the runs listed in the CSV files (columns run, seed): " +
             ", ".join(f"<a href='analysis/{p.name}'>{p.name}</a>" for p in sorted(a.glob("*.csv"))) + "</p>"]
    for name, title in figs:
        parts.append(f"<h3>{html.escape(title)}</h3><div class='fig'>{_svg_inline(a / f'{name}.svg')}</div>")
    return "".join(parts)


def _protocol_html(data) -> list[str]:
    """The page's 'Protocol actually used' section and the study config."""
    study = data["study"]
    parts: list[str] = []
    proto = study.model_dump()
    halving = ""
    if study.search == "halving":
        rungs = "; ".join(f"{d}: {', '.join(map(str, data['grid'].rungs(d))) or 'none'}"
                          for d in data["grid"].datasets)
        halving = (f", by successive halving: every candidate starts, the better 1/{study.halving_eta} by the best "
                   f"validation NLL so far go on at each rung (epochs {rungs}), the survivor trains to the end")
    parts.append("<h2>Protocol actually used</h2>")
    parts.append("<ul>"
                 f"<li>datasets: {', '.join(data['grid'].datasets)}; units: {', '.join(study.units)}</li>"
                 f"<li>learning-rate candidates ({study.lr_candidates}, log base {study.lr_base} of "
                 f"U({study.lr_low:g}, {study.lr_high:g}), {study.lr_draw} draw, seed {study.lr_seed}): "
                 f"{', '.join(f'{x:.3g}' for x in data['grid'].lrs)}{_extension_html(data)}</li>"
                 f"<li>selection: lowest validation NLL of the seed-{study.search_seed} run{halving}; then seeds "
                 f"{study.seed_list()}</li>"
                 + (f"<li>size axis: every (dataset, unit) at {', '.join(f'{b:,}' for b in study.param_budgets)} "
                    "recurrent parameters, each its own cell (hidden size matched to the budget at the data's "
                    "input size)</li>" if study.param_budgets else "")
                 + f"<li>training fields shared by every run: <code>{html.escape(json.dumps(study.train, sort_keys=True))}</code>; "
                 "everything else: the defaults of <code>gatedrnn.train.TrainConfig</code> (each run's full config "
                 "is its <code>config.json</code>)</li>"
                 f"<li>executor: {html.escape(str(data['executor']))}</li>"
                 + (f"<li>last sweep: {html.escape(json.dumps(data['sweep']))}</li>" if data["sweep"] else "")
                 + "</ul>")
    parts.append(f"<details><summary>study config (JSON)</summary><pre>{html.escape(json.dumps(proto, indent=2))}"
                 "</pre></details>")
    return parts


def write_html(data, out: Path, t1_md: str, t2_md: str, figs: dict, lr_rows: list[dict],
               ablation_md: str | None = None, progress_md: str | None = None, tuning_md: str | None = None,
               size_md: str | None = None) -> Path:
    from ..utils import environment
    study = data["study"]
    env_runs = next((r["environment"] for r in data["rows"].values() if r.get("environment")), None)
    parts = [f"<h1>gatedrnn study: Chung et al. 2014 reproduced (budget <code>{html.escape(study.budget)}</code>)</h1>",
             f"<p>Built {time.strftime('%Y-%m-%d %H:%M:%S')} from <code>store.sqlite</code> "
             f"({len(data['rows'])} runs recorded).</p>",
             _md_to_html_tables(t2_md)]
    if size_md:                  # the size axis: the answer across budgets, beside Table 2
        parts.append(_md_to_html_tables(size_md))
        if "size.svg" in figs:
            parts.append(f"<div class='fig'>{_svg_inline(figs['size.svg'])}</div>")
    for name, title in (("curves_epochs.svg", "Learning curves against epochs"),
                        ("curves_seconds.svg", "Learning curves against training seconds")):
        if name in figs:
            parts.append(f"<h2>{title}</h2><div class='fig'>{_svg_inline(figs[name])}</div>")
    if progress_md:
        parts.append(_md_to_html_tables(progress_md))
    if tuning_md:
        parts.append(_md_to_html_tables(tuning_md))
        for name in sorted(n for n in figs if n.startswith("tuning_curves_") and n.endswith(".svg")):
            parts.append(f"<div class='fig'>{_svg_inline(figs[name])}</div>")
    if ablation_md:
        parts.append(_md_to_html_tables(ablation_md))
        links = [f"<a href='{n}'>{n}</a>" for n in ("ablation.md", "ablation.csv", "ablation_forest.png",
                                                    "ablation_forest.svg") if n.endswith(("md", "csv")) or n in figs]
        parts.append(f"<p>Files: {', '.join(links)}</p>")
        if "ablation_forest.svg" in figs:
            parts.append(f"<div class='fig'>{_svg_inline(figs['ablation_forest.svg'])}</div>")
    parts.append(_analysis_section(out))
    parts.append(_md_to_html_tables(t1_md))
    parts.extend(_protocol_html(data))
    # lr search
    parts.append("<h2>Learning-rate search (validation NLL)</h2>")
    parts.append(_html_table(["dataset", "unit", "lr", "status", "valid NLL", "selected", "run"],
                             [[r["dataset"], unit_name(r["unit"]), f"{r['lr']:.3g}", r["status"], _f(r["valid_nll"]),
                               "✔" if r["selected"] else "",
                               f"<a href='runs/{html.escape(r['run_id'])}/'>{html.escape(r['run_id'])}</a>"]
                              for r in lr_rows]))
    # every run
    parts.append("<h2>Every run</h2>")
    body = []
    for rid, r in sorted(data["rows"].items()):
        body.append([f"<a href='runs/{html.escape(rid)}/'>{html.escape(rid)}</a>", r["dataset"], unit_name(r["unit"]),
                     f"{r['lr']:.3g}", r["seed"], html.escape(r["status"]), _f(r["train_nll"]), _f(r["valid_nll"]),
                     _f(r["test_nll"]), r["epochs"] if r["epochs"] is not None else "–",
                     _f(r["train_seconds"], 1), html.escape(r["error"] or "")])
    parts.append(_html_table(["run", "dataset", "unit", "lr", "seed", "status", "train", "valid", "test",
                              "epochs", "train s", "error"], body))
    # machine
    parts.append("<h2>Machine and versions</h2>")
    parts.append(f"<p>Runs (first recorded):</p><pre>{html.escape(json.dumps(env_runs, indent=2, sort_keys=True))}</pre>")
    parts.append(f"<p>This report:</p><pre>{html.escape(json.dumps(environment(), indent=2, sort_keys=True))}\n"
                 f"matplotlib backend Agg, python {platform.python_version()}</pre>")
    css = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
           "table{border-collapse:collapse;margin:1em 0;font-size:0.85em}td,th{border:1px solid #ccc;"
           "padding:3px 6px;text-align:left}th{background:#f3f3f3}.fig svg{max-width:100%;height:auto}"
           "pre{background:#f7f7f7;padding:0.5em;overflow:auto;font-size:0.8em}")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>gatedrnn study report</title>"
            f"<style>{css}</style></head><body>{''.join(parts)}</body></html>\n")
    p = out / "report.html"
    p.write_text(page)
    return p


# ------------------------------------------------------------------------------------ entry
def build_report(out_dir: str | Path, *, figures: bool = True, log=print) -> dict[str, Path]:
    """(Re)build every output of a results directory from its store; returns {name: path}."""
    out = Path(out_dir)
    data = collect(out)
    written = write_tables(data, out)
    files = dict(written["files"])
    figs = {}
    if figures:
        try:
            figs = make_figures(data, out)
            if written["ablation_rows"]:
                figs.update(ablation_figure(written["ablation_rows"],
                                            groups(data) if data["grid"].sized else data["grid"].datasets, out))
            if written["size_rows"]:
                from .size import size_figure
                figs.update(size_figure(written["size_rows"], out, lambda u: unit_color(u, data["study"].units),
                                        _save, _name, unit_name))
            if written["tuning_rows"]:
                from .tuning import tuning_figures
                figs.update(tuning_figures(written["tuning_rows"], out,
                                           lambda u: unit_color(u, data["study"].units), _save, _name, unit_name))
        except ImportError as e:   # never lose the tables to a missing plotting library
            log(f"figures skipped ({e}); every table and report.html are written — pip install matplotlib "
                f"and run `gatedrnn report {out}` for the figures")
    files.update(figs)
    files["report.html"] = write_html(data, out, written["table1_md"], written["table2_md"], figs,
                                      written["lr_rows"], written["ablation_md"], written["progress_md"],
                                      written["tuning_md"], written["size_md"])
    log(f"wrote {', '.join(sorted(files))} in {out}")
    return files


def status_text(out_dir: str | Path) -> str:
    """What is done, running and failed in a results directory (reads the store only)."""
    out = Path(out_dir)
    store = Store(out, create=False)
    try:
        runs = store.all()
        study = store.get_meta("study")
        lines = [f"results: {out}  ({store.path.name}, {len(runs)} runs recorded)"]
        if study:
            s = StudyConfig(**study)
            grid = Grid(s, datasets=store.get_meta("datasets"))
            lines.append(f"study: budget {s.budget}, datasets {', '.join(grid.datasets)}, "
                         f"{len(grid.lrs)} lr candidates, {s.seeds} seeds; {grid.n_runs()} runs in all")
        counts = {}
        for r in runs:
            st = r["status"]
            if st == RunStatus.RUNNING and not store.live_owner(r):
                st = "interrupted"   # shown only: its owner is gone, the next reproduce resumes it
            counts[st] = counts.get(st, 0) + 1
        lines.append("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "no runs yet")
        for r in runs:
            if r["status"] == RunStatus.RUNNING:
                live = store.live_owner(r)
                lines.append(f"  {'running    ' if live else 'interrupted'} {r['run_id']}  "
                             f"(owner {r['owner']}{'' if live else ', gone: resumes on the next reproduce'})")
            elif r["status"] in (RunStatus.FAILED, RunStatus.DIVERGED):
                lines.append(f"  {r['status']:11s} {r['run_id']}  {r['error'] or ''}")
        return "\n".join(lines)
    finally:
        store.close()
