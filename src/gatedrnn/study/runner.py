"""The sweep driver: walks the grid, claims runs in the store, submits them to an executor, records
the outcomes, selects each (dataset, unit)'s learning rate on validation NLL, then runs the seeds.

Restartable at any moment: finished runs are read back from the store (never repeated), interrupted
runs resume from their checkpoint (run_one → train(resume=True)), and a run held by another live
invocation is waited for, not duplicated.

With study.search == "halving" a cell's search is successive halving (grid.halving_decide): its runs
are submitted with stop_after = the current rung, recorded as 'halted' there, and the better half goes
on to the next rung; the survivor trains to the end. A halted run is the full search's run paused, so a
later full study (or a halving study with later rungs) continues it from its checkpoint.
"""
from __future__ import annotations

import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ..status import RunStatus
from .grid import Grid, RunSpec, StudyConfig, halving_decide, reached, select_lr
from .store import Store, new_owner


class _Cell:
    """One (dataset, unit): its search runs (all at once, or rung by rung for halving), then (after
    selection) its seed runs."""

    def __init__(self, grid: Grid, dataset: str, unit: str):
        self.dataset, self.unit = dataset, unit
        self.grid = grid
        self.search = grid.search_specs(dataset, unit)
        self.halving = grid.study.search == "halving"
        self.rungs = grid.rungs(dataset) if self.halving else []
        self.seeds: list[RunSpec] | None = None
        self.selected: dict | None = None
        self.no_selection = False
        self.decision: dict | None = None   # the last halving_decide outcome (its trace)

    def search_needs(self, results: dict) -> tuple[list[tuple[RunSpec, int | None]], bool, dict | None]:
        """(runs still needed as (spec, stop_after), search finished, selected result)."""
        if self.halving:
            d = halving_decide([results.get(s.run_id) for s in self.search], [s.lr for s in self.search],
                               self.rungs, self.grid.study.halving_eta)
            self.decision = d
            return [(self.search[i], stop) for i, stop in d["need"]], d["done"], d["selected"]
        if self.grid.study.lr_extend:   # edge extension: the candidates grow with the outcomes
            self.search = self.grid.search_specs(self.dataset, self.unit, results)
        if all(s.run_id in results for s in self.search):
            return [], True, select_lr([results[s.run_id] for s in self.search])
        return [(s, None) for s in self.search], False, None

    def needed(self, results: dict) -> list[tuple[RunSpec, int | None]]:
        if self.seeds is None:
            return self.search_needs(results)[0]
        return [(s, None) for s in self.seeds]

    def halving_record(self) -> dict | None:
        if not self.halving or self.decision is None:
            return None
        d = self.decision
        return {"rungs": self.rungs, "eta": self.grid.study.halving_eta, "trace": d["trace"], "done": d["done"],
                "selected_lr": d["selected"]["lr"] if d.get("selected") else None,
                "finalists": d.get("finalists"),
                "trained_to": {str(self.search[i].lr): stop for i, stop in sorted(d["trained_to"].items())}}


class _Lines:
    """The bar's bookkeeping (n of total) without a bar: without a terminal (logs, CI, nohup) or with
    progress off, the runner logs one line per run instead (see `_run_line`)."""

    def __init__(self, total: int):
        self.n, self.total = 0, total

    def set_postfix(self, **_):
        pass

    def refresh(self):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    """A tqdm bar on a terminal; otherwise _Lines (a bar's carriage returns would fill a log file)."""
    if not (enabled and sys.stderr.isatty()):
        return _Lines(total)
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="run", desc="study", dynamic_ncols=True, file=sys.stderr)


def _run_line(run_id: str, row: dict, done: int, total: int) -> str:
    """'run <id>: completed, test NLL 8.4123, 25 epochs (3 of 90 done)' — a halted (halving) run has no
    test NLL yet: its best validation NLL instead."""
    status, nll = str(row.get("status")), row.get("test_nll")
    what = f"test NLL {nll:.4f}" if nll is not None else \
        f"valid NLL {row['valid_nll']:.4f}" if row.get("valid_nll") is not None else "no NLL"
    epochs = f", {row['epochs']} epochs" if row.get("epochs") is not None else ""
    return f"run {run_id}: {status}, {what}{epochs} ({done} of {total} done)"


def run_study(study: StudyConfig, out_dir: str | Path, executor=None, *, jobs: int | None = None,
              scheduler: str | None = None, threads: int = 1, progress: bool = True, log=print,
              lease_seconds: float = 600.0, poll_seconds: float = 1.0, build_report: bool = True) -> dict:
    """Run (or continue) the whole study into out_dir; returns {"runs", "failed", "notes", ...}."""
    from .executor import make_executor
    out = Path(out_dir)
    grid = Grid(study)          # an unknown dataset name raises here, before anything is created or run
    for note in grid.notes:
        log(f"note: {note}")
    if not grid.datasets:
        raise ValueError("the study names no dataset")
    out.mkdir(parents=True, exist_ok=True)
    store = Store(out, lease_seconds=lease_seconds)
    previous = store.get_meta("study")
    if previous is not None and StudyConfig(**previous).key() != study.key():
        log(f"note: {out} held a different study (budget {previous.get('budget')}); its finished runs are reused "
            f"where configs coincide, and the tables now describe this one (budget {study.budget})")
    store.set_meta("study", study.model_dump())
    store.set_meta("datasets", grid.datasets)
    store.set_meta("notes", grid.notes)
    store.set_meta("lr_candidates", grid.lrs)

    own_executor = executor is None
    if executor is None:
        executor = make_executor(jobs, scheduler, threads)
    store.set_meta("executor", executor.describe())
    owner = new_owner()
    runs_root = str(store.runs_dir.resolve())
    cells = [_Cell(grid, d, u) for d, u in grid.cells()]
    inflight: dict = {}        # future -> RunSpec
    tried: set[str] = set()    # run ids this invocation attempted (failed ones are not retried now)
    results: dict[str, dict] = {}
    ran_here = 0
    t_start = time.time()
    bar = _progress(grid.n_runs(), progress)
    last_beat = 0.0
    failed_ids: set[str] = set()
    halving_meta: dict = {}

    def record(spec: RunSpec, row_or_summary: dict, ran: bool = False) -> None:
        results[spec.run_id] = {**row_or_summary, "lr": spec.lr, "seed": spec.seed}
        if row_or_summary.get("status") == RunStatus.FAILED:
            failed_ids.add(spec.run_id)
        if bar is not None:
            bar.n = len(results)
            bar.set_postfix(running=len(inflight), failed=len(failed_ids), refresh=False)
            bar.refresh()
        if ran and isinstance(bar, _Lines):     # a run this invocation trained (finished or halted)
            log(_run_line(spec.run_id, row_or_summary, len(results), bar.total))

    try:
        while True:
            # 1. advance cells: selection after the search, seeds after selection
            waiting = False
            for cell in cells:
                finished = False
                if cell.seeds is None:
                    before = {s.lr for s in cell.search}
                    _, finished, selected = cell.search_needs(results)
                    for s in cell.search:
                        if s.lr not in before:     # edge extension (study.lr_extend)
                            log(f"{cell.dataset}/{cell.unit}: the selected rate is an edge of the candidates; "
                                f"adding lr {s.lr:.4g}")
                            if bar is not None:
                                bar.total += 1
                if finished:
                    cell.selected = selected
                    if cell.halving:
                        trace = " → ".join(f"{len(t['kept']) + len(t['cut'])} at epoch {t['rung']}"
                                           for t in cell.decision["trace"])
                        log(f"{cell.dataset}/{cell.unit}: halving {trace} → "
                            f"{'lr %.4g' % selected['lr'] if selected else 'no selection'}")
                        halving_meta[f"{cell.dataset}/{cell.unit}"] = cell.halving_record()
                        store.set_meta("halving", halving_meta)
                    if cell.selected is None:
                        cell.no_selection = True
                        cell.seeds = []
                        log(f"{cell.dataset}/{cell.unit}: no learning rate gave a finite validation NLL; "
                            f"no seed runs")
                        if bar is not None:
                            bar.total -= study.new_seed_runs()
                    else:
                        cell.seeds = grid.seed_specs(cell.dataset, cell.unit, cell.selected["lr"])
                for spec, stop_after in cell.needed(results):
                    if reached(results.get(spec.run_id), stop_after) or \
                            any(s.run_id == spec.run_id for s in inflight.values()):
                        continue
                    waiting = True
                    if len(inflight) >= executor.capacity:
                        continue
                    row = store.get(spec.run_id)
                    # finished (or, for a halving rung, trained at least that far): use it as it is
                    if row is not None and row["status"] != RunStatus.FAILED and reached(row, stop_after):
                        record(spec, row)
                        continue
                    if row is not None and row["status"] == RunStatus.FAILED and spec.run_id in tried:
                        record(spec, row)
                        continue
                    got = store.claim(spec.to_dict(), owner)
                    if got == "done":
                        record(spec, store.get(spec.run_id))
                    elif got == "claimed":
                        tried.add(spec.run_id)
                        task = {"run_id": spec.run_id, "config": spec.config, "runs_root": runs_root,
                                "threads": threads}
                        if stop_after is not None:
                            task["stop_after"] = int(stop_after)
                        inflight[executor.submit(task)] = spec
                    # 'busy': another live invocation runs it; look again next round
            if not waiting and not inflight:
                break

            if bar is not None:
                bar.set_postfix(running=len(inflight), failed=len(failed_ids), refresh=False)
            # 2. collect finished runs
            done = executor.wait(list(inflight), timeout=poll_seconds) if inflight else set()
            if not inflight:
                time.sleep(poll_seconds)  # only runs held by another invocation are left: wait for them
            broken = False
            for fut in done:
                spec = inflight.pop(fut)
                try:
                    summary = fut.result()
                except BrokenProcessPool as e:
                    broken = True
                    summary = {"run_id": spec.run_id, "status": RunStatus.FAILED, "error": f"worker process died: {e}"}
                except Exception as e:  # a dask worker lost, a pickling error, ...
                    summary = {"run_id": spec.run_id, "status": RunStatus.FAILED, "error": f"{type(e).__name__}: {e}"}
                store.finish(summary)
                ran_here += 1
                if summary["status"] == RunStatus.FAILED:
                    log(f"run {spec.run_id} failed: {summary.get('error')}")
                elif summary["status"] == RunStatus.DIVERGED:
                    log(f"run {spec.run_id} diverged (recorded; its best model before divergence is kept)")
                record(spec, store.get(spec.run_id), ran=True)
            if broken and own_executor:
                for fut, spec in list(inflight.items()):
                    store.finish({"run_id": spec.run_id, "status": RunStatus.FAILED, "error": "worker pool broke"})
                    record(spec, store.get(spec.run_id))
                inflight.clear()
                executor.shutdown(cancel=True)
                executor = make_executor(jobs, scheduler, threads)
            if time.time() - last_beat > min(30.0, lease_seconds / 4):
                store.heartbeat(owner)
                last_beat = time.time()
    except BaseException:
        # Ctrl-C or an error: give the runs back (their checkpoints stay; the next invocation resumes)
        try:
            if own_executor:
                executor.shutdown(cancel=True)
        finally:
            store.release(owner)
            store.close()
            if bar is not None:
                bar.close()
        raise
    if bar is not None:
        bar.close()
    if own_executor:
        executor.shutdown()
    elapsed = time.time() - t_start
    store.set_meta("last_sweep", {"seconds": elapsed, "ran_here": ran_here, "executor": executor.describe(),
                                  "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")})
    store.close()
    summary = {"runs": len(results), "ran_here": ran_here, "failed": sorted(failed_ids),
               "notes": grid.notes, "seconds": elapsed, "out_dir": str(out),
               "selected": {f"{c.dataset}/{c.unit}": (c.selected or {}).get("lr") for c in cells}}
    if study.search == "halving":
        summary["halving"] = {f"{c.dataset}/{c.unit}": c.halving_record() for c in cells}
    if build_report:
        from .report import build_report as _build
        summary["outputs"] = _build(out, log=log)
    return summary
