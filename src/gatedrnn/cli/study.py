"""`gatedrnn reproduce | report | status`: the study from the command line (thin: parse, then call).
reproduce's flags are generated: one per StudyConfig field (but those of role "no_flag") and one per TrainConfig
field a study shares (grid.TRAIN_FIELDS), each over the budget's preset."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from ..data import load_dataset
from ..study.grid import ABLATIONS, BUDGETS, TRAIN_FIELDS, Grid, StudyConfig, budget_config
from ..train import TrainConfig, name_units
from ..utils import fields_with
from .options import TRAIN_RENAME, add_config_flags, config_from_args, csv_of, finite_float, nonneg_int, positive_int
from .train import add_import_unit_flag

# The StudyConfig fields that are flags of `gatedrnn reproduce` (all but those of role "no_flag")
STUDY_FLAGS = tuple(f for f in StudyConfig.model_fields if f not in fields_with(StudyConfig, "no_flag"))


def add_study_commands(sub) -> None:
    p = sub.add_parser(
        "reproduce", help="the whole study: lr search, seeds, Table 1/2, learning curves, report.html",
        description="Run (or continue) the study into --out: per (dataset, unit), one run per learning-rate "
                    "candidate, the best on validation NLL re-run with N seeds; then tables, figures and "
                    "report.html. Kill it at any time and run the same command again to continue.")
    p.add_argument("--budget", choices=list(BUDGETS), default="smoke",
                   help="preset: smoke (a minute or two), laptop (make reproduce: JSB, a few minutes), quick (hours on 2 cores), speech (the FSDD sets, a few "
                        "core-hours), paper (the full protocol, early stopping), paper-faithful (the released "
                        "code's stopping rule: the best of 500 epochs, halving search; docs/STUDY.md), size "
                        "(it at 5k..320k parameters on JSB); flags below override single fields (default smoke)")
    p.add_argument("--out", type=Path, help="results directory (default results/<budget>)")
    add_config_flags(p, StudyConfig, STUDY_FLAGS, default_from="the budget",
                     types={"halving_rungs": csv_of(positive_int, "epochs, e.g. 25,50,100,200"),
                            "param_budgets": csv_of(positive_int, "positive numbers of parameters, e.g. "
                                                                  "5000,20000,80000,320000")},
                     metavars={"halving_rungs": "E1,E2,...", "param_budgets": "N1,N2,...", "data_dir": "DIR"})
    p.add_argument("--ablation", choices=list(ABLATIONS), action="append",
                   help="the full unit and every component ablation of it (" +
                        "; ".join(f"{k}: {','.join(v)}" for k, v in ABLATIONS.items()) +
                        "); repeat for both; added to --units")
    add_config_flags(p, TrainConfig, TRAIN_FIELDS, rename=TRAIN_RENAME, default_from="the budget")
    p.add_argument("--jobs", type=nonneg_int,
                   help="local worker processes (default: CPU count; 0 = in this process)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://host:8786 "
                                       "(needs dask[distributed]; the workers must see --out and the data)")
    p.add_argument("--lease-seconds", type=finite_float, default=600.0,
                   help="a run held by an invocation on another host that stopped heart-beating this long is "
                        "taken over (default 600)")
    p.add_argument("--dry-run", action="store_true", help="print the grid and exit")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar: one line per finished run instead (the default without a terminal)")
    p.add_argument("--no-report", action="store_true", help="do not build the outputs at the end")
    p.set_defaults(func=cmd_reproduce)

    r = sub.add_parser("report", help="rebuild tables, figures and report.html of a results directory (no training)")
    r.add_argument("results_dir", type=Path)
    r.add_argument("--no-figures", action="store_true")
    r.set_defaults(func=cmd_report)

    a = sub.add_parser("analyze", help="gradient flow, context and gates of trained models, on test data",
                       description="For a results directory: every seed of each (dataset, unit)'s selected "
                                   "configuration (Table 2); or the run directories given. Writes "
                                   "gradient_flow, context, gates and time_scales (.csv; figures .png/.svg).")
    a.add_argument("paths", type=Path, nargs="+", metavar="RESULTS_DIR|RUN_DIR")
    a.add_argument("--out", type=Path, help="output folder (default RESULTS_DIR/analysis, or ./analysis)")
    a.add_argument("--max-distance", type=positive_int, default=100, help="largest k of the gradient flow (100)")
    a.add_argument("--max-sequences", type=positive_int, help="only the first N test sequences of each run")
    add_import_unit_flag(a)
    a.set_defaults(func=cmd_analyze)

    s = sub.add_parser("status", help="what is done, running and failed in a results directory")
    s.add_argument("results_dir", type=Path)
    s.set_defaults(func=cmd_status)


def study_from_args(args):
    """The StudyConfig of a `reproduce` command line: the budget's preset, the flags given over it."""
    over = config_from_args(args, StudyConfig, STUDY_FLAGS)
    if getattr(args, "ablation", None):
        over["units"] = list(dict.fromkeys([*over.get("units", []),
                                            *(u for fam in args.ablation for u in ABLATIONS[fam])]))
    # 0 given for a field whose default is None (limit_sequences, crop_length, tbptt): none, over the budget
    train = config_from_args(args, TrainConfig, TRAIN_FIELDS, zero_is_none=True)
    return budget_config(args.budget, train=train, **over)


def _sized_cells(study, grid) -> dict:
    """The size axis in a dry run: {"jsb/gru@20000": [hidden size, recurrent parameters]} as the runs will
    build them (the data's input size read here; a dataset not readable here is left out)."""
    from ..nn.counting import count_parameters
    from ..train import TrainConfig, given_options, resolve_hidden_size
    out = {}
    for dataset, unit, budget in grid.sized_cells():
        try:
            ds = load_dataset(dataset, study.data_dir)
        except Exception:   # noqa: BLE001 — a dry run shows what it can
            continue
        cfg = TrainConfig(**grid.search_specs(dataset, unit, budget=budget)[0].config)
        n = resolve_hidden_size(cfg, ds.kind, ds.input_size)
        out[f"{dataset}/{unit}@{budget}"] = [n, count_parameters(unit, ds.input_size, n, **given_options(cfg))]
    return out


def cmd_reproduce(args) -> int:
    from ..study.runner import run_study
    study = study_from_args(args)
    out = args.out or Path("results") / study.budget
    if args.dry_run:
        g = Grid(study)
        plan = {"study": study.model_dump(), "datasets": g.datasets, "notes": g.notes,
                "lr_candidates": g.lrs, "runs": g.n_runs()}
        if study.search == "halving":
            plan["halving_rungs"] = {d: g.rungs(d) for d in g.datasets}
        if g.sized:
            plan["hidden_sizes"] = _sized_cells(study, g)
        print(json.dumps(plan, indent=2))
        return 0
    if args.scheduler and importlib.util.find_spec("distributed") is None:
        print("gatedrnn: error: --scheduler needs dask[distributed]: pip install 'gatedrnn[dask]' (or drop "
              "--scheduler to use local processes)", file=sys.stderr)
        return 2
    if not args.scheduler:
        # Every dataset readable here before any run starts: a missing file is one line (exit 2), not a
        # sweep of failed runs. (With --scheduler the workers read the data, possibly from their own disks.)
        # (the runs' format and width: with --jobs 0 the runs then take the dataset from load_dataset's cache)
        sizes = set()
        for dataset in Grid(study).datasets:
            fields = study.train_fields(dataset)
            ds = load_dataset(dataset, study.data_dir, fmt=fields.get("data_format", "auto"),
                              width=fields.get("width", "88"))
            sizes.add((ds.kind, ds.input_size))
        # units named by import path: imported (named here; the workers inherit the name) and checked at each
        # dataset's input size and Table 1 budget before any run starts (one line, exit 2)
        name_units(study.units, sorted(sizes))
    else:
        name_units(study.units)
    res = run_study(study, out, jobs=args.jobs, scheduler=args.scheduler, threads=args.threads,
                    progress=not args.no_progress, lease_seconds=args.lease_seconds,
                    build_report=not args.no_report, log=lambda m: print(m, file=sys.stderr))
    table2 = out / "table2.md"
    if "outputs" in res and table2.exists():     # the answer, where it is read: the table before the notes
        print(table2.read_text().split("\n## Notes")[0].rstrip() + "\n")
    print(f"study {study.budget}: {res['runs']} runs ({res['ran_here']} trained or resumed by this invocation), "
          f"{len(res['failed'])} failed, {res['seconds']:.0f} s; results in {out}"
          + (f"; open {out / 'report.html'}" if "outputs" in res else ""))
    return 1 if res["failed"] else 0


def cmd_report(args) -> int:
    from ..study.report import build_report
    build_report(args.results_dir, figures=not args.no_figures, log=lambda m: print(m, file=sys.stderr))
    print(f"open {args.results_dir / 'report.html'}")
    return 0


def cmd_status(args) -> int:
    from ..study.report import status_text
    print(status_text(args.results_dir))
    return 0


def cmd_analyze(args) -> int:
    from ..analysis import analyze_runs, table2_runs
    name_units(args.import_unit)
    runs = []
    for path in args.paths:
        if (path / "table2.csv").exists():
            runs += table2_runs(path)
        elif (path / "best.pt").exists():
            runs.append(path)
        else:
            print(f"gatedrnn: error: {path} is neither a results directory (table2.csv) nor a run directory "
                  f"(best.pt)", file=sys.stderr)
            return 2
    if not runs:
        print(f"gatedrnn: error: no finished runs with a best model under {', '.join(map(str, args.paths))}",
              file=sys.stderr)
        return 2
    out = args.out or (args.paths[0] / "analysis" if (args.paths[0] / "table2.csv").exists() else Path("analysis"))
    files = analyze_runs(runs, out, max_distance=args.max_distance, max_sequences=args.max_sequences,
                         log=lambda m: print(m, file=sys.stderr))
    print(f"analyzed {len(runs)} runs: {', '.join(sorted(p.name for p in files.values()))} in {out}")
    return 0
