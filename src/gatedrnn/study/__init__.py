"""The study: the paper's experiment as one command (`gatedrnn reproduce`).

    grid      what runs: budgets, learning-rate candidates, run ids, validation-only selection
    executor  where runs execute: local processes, a Dask cluster, or inline — one `run_one`
    store     the results store (SQLite, WAL): run claims/leases, metrics, versions
    runner    the resumable sweep driver
    stats     confidence intervals, paired t-tests, Holm–Bonferroni
    baselines trivial reference models on the same splits
    tables    the numbers: selections, statistics over seeds, Table 1/2, tests, lr search (Markdown, CSV)
    report    figures, report.html, status — from the store alone

Python API:  run_study(budget_config("smoke"), "results/smoke");  build_report("results/smoke")
"""
from .grid import BUDGETS, Grid, StudyConfig, budget_config, lr_candidates, select_lr

__all__ = ["BUDGETS", "Grid", "StudyConfig", "budget_config", "lr_candidates", "select_lr", "run_study",
           "build_report"]


def run_study(*args, **kwargs):
    from .runner import run_study as _run
    return _run(*args, **kwargs)


def build_report(*args, **kwargs):
    from .report import build_report as _build
    return _build(*args, **kwargs)
