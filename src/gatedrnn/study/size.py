"""Does the answer depend on the size? (issue 20; the paper tested one size, ~20k parameters.) For a study
with the size axis (StudyConfig.param_budgets): per dataset, each unit's test NLL (mean and the 95 % interval
over its reported seeds) against its recurrent parameters, the order of the units at each budget and the
gap between tanh and the best gated unit — as size.md / size.csv and the figure size.png / size.svg (log x,
one line per unit, a panel per dataset), with the published points where there are some.

Read from Table 2's rows (tables.table2_rows) alone: no training, deterministic.
"""
from __future__ import annotations

import math

from ..nn.counting import TABLE1, count_parameters

# The music sets' input size (88 piano keys): the paper's models counted as ours are (recurrent parameters
# of Table 1's sizes at 88 inputs, not Table 1's nominal 100).
MUSIC_INPUT = 88
# Published test NLL on JSB Chorales to compare with: (label, {unit: (parameters, test NLL)}, how counted)
REFERENCE_POINTS = {
    "jsb": [
        ("Chung et al. 2014", {u: (count_parameters(u, MUSIC_INPUT, TABLE1[("music", u)][0]), nll)
                               for u, nll in (("tanh", 9.10), ("gru", 8.54), ("lstm", 8.67))},
         "Table 1's sizes, recurrent parameters at 88 inputs"),
        ("Bai et al. 2018", {"tanh": (300_000, 8.91), "gru": (300_000, 8.43), "lstm": (300_000, 8.45)},
         "~300k parameters, their count of the whole model"),
    ],
}
GATED_PAPER = ("gru", "lstm")


def size_rows(t2: list[dict]) -> list[dict]:
    """One row per (dataset, budget, unit) of a study with the size axis: parameters and hidden size as the
    runs built them, seeds, test NLL mean ± 95 % CI (the study's Table 2 numbers)."""
    return [{"dataset": r["dataset"], "budget": r["budget"], "unit": r["unit"], "hidden_size": r["hidden_size"],
             "parameters": r["parameters"], "seeds_ok": r["seeds_ok"], "test_mean": r["test_mean"],
             "test_ci": r["test_ci"], "valid_mean": r["valid_mean"]}
            for r in t2 if "budget" in r]


def _order(rows: list[dict]) -> list[str]:
    """The units of one (dataset, budget) with a test NLL, best (lowest mean) first."""
    got = [r for r in rows if r["test_mean"] is not None and math.isfinite(r["test_mean"])]
    return [r["unit"] for r in sorted(got, key=lambda r: (r["test_mean"], r["unit"]))]


def order_rows(rows: list[dict]) -> list[dict]:
    """Per (dataset, budget): the order of the units by mean test NLL and tanh's gap to the better of the
    paper's gated units (tanh − min(GRU, LSTM); > 0: the gated unit is better), where both have results."""
    out = []
    for d, b in dict.fromkeys((r["dataset"], r["budget"]) for r in rows):
        mine = [r for r in rows if r["dataset"] == d and r["budget"] == b]
        by_unit = {r["unit"]: r["test_mean"] for r in mine if r["test_mean"] is not None}
        gated = [by_unit[u] for u in GATED_PAPER if u in by_unit]
        gap = by_unit["tanh"] - min(gated) if "tanh" in by_unit and gated else None
        out.append({"dataset": d, "budget": b, "order": _order(mine), "tanh_gap": gap,
                    "complete": len(by_unit) == len(mine)})
    return out


def answer(orders: list[dict], name=lambda d: d, unit_name=lambda u: u) -> str:
    """The one sentence per dataset: whether the order of the units and the tanh-vs-gated gap hold across
    the budgets (only budgets where every unit has a result count)."""
    out = []
    for d in dict.fromkeys(o["dataset"] for o in orders):
        done = [o for o in orders if o["dataset"] == d and o["complete"] and o["order"]]
        if len(done) < 2:
            out.append(f"{name(d)}: fewer than two budgets with results for every unit yet — no answer.")
            continue
        same = all(o["order"] == done[0]["order"] for o in done)
        gaps = [o["tanh_gap"] for o in done if o["tanh_gap"] is not None]
        order = " < ".join(unit_name(u) for u in done[0]["order"])
        s = (f"{name(d)}: the order of the units ({order}, test NLL) is the same at every budget"
             if same else f"{name(d)}: the order of the units changes with the size ("
             + "; ".join(f"{o['budget']:,}: " + " < ".join(unit_name(u) for u in o["order"]) for o in done) + ")")
        if gaps:
            held = "holds" if all(g > 0 for g in gaps) else "does not hold" if all(g <= 0 for g in gaps) else \
                "holds at some budgets only"
            s += (f"; tanh's gap to the better gated unit {held} (" +
                  ", ".join(f"{o['budget']:,}: {o['tanh_gap']:+.3f}" for o in done if o["tanh_gap"] is not None)
                  + " nats)")
        out.append(s + ".")
    return " ".join(out)


def size_markdown(rows: list[dict], name=lambda d: d, unit_name=lambda u: u) -> str:
    orders = order_rows(rows)
    head = ["dataset", "budget", "unit", "hidden units", "parameters", "seeds ok", "test NLL"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        nll = "–" if r["test_mean"] is None else f"{r['test_mean']:.3f}" + (
            "" if r["test_ci"] is None or not math.isfinite(r["test_ci"]) else f" ± {r['test_ci']:.3f}")
        lines.append(f"| {name(r['dataset'])} | {r['budget']:,} | {unit_name(r['unit'])} | {r['hidden_size'] or '–'} "
                     f"| {'–' if not r['parameters'] else format(r['parameters'], ',')} | {r['seeds_ok']} | {nll} |")
    olines = ["| dataset | budget | units, best first | tanh − better of GRU, LSTM |", "|---|---|---|---|"]
    olines += [f"| {name(o['dataset'])} | {o['budget']:,} | {' < '.join(unit_name(u) for u in o['order']) or '–'} | "
               f"{'–' if o['tanh_gap'] is None else format(o['tanh_gap'], '+.3f')} |" for o in orders]
    refs = [f"- {label} ({how}): " + ", ".join(f"{unit_name(u)} {nll:.2f}" for u, (_, nll) in pts.items())
            + f" ({name(d)})" for d, entries in REFERENCE_POINTS.items() if any(r["dataset"] == d for r in rows)
            for label, pts, how in entries]
    return ("# Test NLL against size\n\n"
            f"Answer: {answer(orders, name, unit_name)}\n\n"
            "Each (unit, budget) is a cell of its own: its learning rate selected on validation, its reported "
            "seeds' test NLL (nats per step) as mean ± half-width of the 95 % Student-t interval. Parameters: "
            "the recurrent layer's, as the runs built it (at the data's input size; each budget is matched by Table 1's "
            "convention, at the nominal input size, so 20,000 on music gives the paper's sizes). "
            "Figure: size.png / size.svg; numbers: size.csv.\n\n" + "\n".join(lines) + "\n\n## Order and gap per "
            "budget\n\n" + "\n".join(olines) + "\n"
            + ("\n## Published points (markers in the figure)\n\n" + "\n".join(refs) + "\n" if refs else ""))


def size_figure(rows: list[dict], out, colour, save, name=lambda d: d, unit_name=lambda u: u) -> dict:
    """size.{png,svg}: per dataset a panel, per unit a line of mean test NLL against parameters (log x) with
    the seeds' 95 % interval as error bars; published points as open markers."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        for u in dict.fromkeys(r["unit"] for r in rows if r["dataset"] == d):
            pts = [r for r in rows if r["dataset"] == d and r["unit"] == u and r["test_mean"] is not None]
            if not pts:
                continue
            x = [r["parameters"] or r["budget"] for r in pts]
            err = [r["test_ci"] if r["test_ci"] is not None and math.isfinite(r["test_ci"]) else 0.0 for r in pts]
            ax.errorbar(x, [r["test_mean"] for r in pts], yerr=err, marker="o", ms=4, capsize=3, color=colour(u),
                        label=unit_name(u))
        for k, (label, refs, _) in enumerate(REFERENCE_POINTS.get(d, [])):
            for u, (n, nll) in refs.items():
                ax.plot([n], [nll], marker="sD"[k % 2], ms=6, markerfacecolor="none", color=colour(u), linestyle="none",
                        label=f"{unit_name(u)}, {label}")
        ax.set_xscale("log")
        ax.set_xlabel("recurrent parameters")
        ax.set_ylabel("test NLL (nats/step)")
        ax.set_title(f"{name(d)}: test NLL against size", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7, ncol=2)
    fig.suptitle("mean over the reported seeds, bars: 95 % confidence interval; open markers: published", fontsize=9)
    return save(fig, out, "size")
