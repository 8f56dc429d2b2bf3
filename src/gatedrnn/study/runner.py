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
from .grid import Grid, RunSpec, StudyConfig, cell_label, halving_decide, reached, select_lr
from .store import Store, new_owner


class _Cell:
    """One (dataset, unit[, budget]): its search runs (all at once, or rung by rung for halving), then
    (after selection) its seed runs."""

    def __init__(self, grid: Grid, dataset: str, unit: str, budget: int | None = None):
        self.dataset, self.unit, self.budget = dataset, unit, budget
        self.label = cell_label(dataset, unit, budget)
        self.grid = grid
        self.search = grid.search_specs(dataset, unit, budget=budget)
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
            self.search = self.grid.search_specs(self.dataset, self.unit, results, self.budget)
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
    """Run (or continue) the whole study into out_dir; returns {"runs", "failed", "notes", ...}.

    The sweep, step by step (each a method of _Sweep): advance every cell (selection after its search,
    seeds after selection), claim and submit what it needs, collect finished runs (mapping failures),
    rebuild a broken worker pool, send the store's heartbeat — until nothing is needed or in flight."""
    grid = Grid(study)          # an unknown dataset name raises here, before anything is created or run
    for note in grid.notes:
        log(f"note: {note}")
    if not grid.datasets:
        raise ValueError("the study names no dataset")
    sweep = _Sweep(study, grid, Path(out_dir), executor, jobs=jobs, scheduler=scheduler, threads=threads,
                   progress=progress, log=log, lease_seconds=lease_seconds, poll_seconds=poll_seconds)
    try:
        while sweep.step():
            pass
    except BaseException:
        sweep.abort()          # Ctrl-C or an error: the runs are given back (their checkpoints stay)
        raise
    summary = sweep.close()
    if build_report:
        from .report import build_report as _build
        summary["outputs"] = _build(sweep.out, log=log)
    return summary


class _Sweep:
    """One invocation's walk over the grid: its store, executor, runs in flight and results so far."""

    def __init__(self, study: StudyConfig, grid: Grid, out: Path, executor, *, jobs, scheduler, threads,
                 progress, log, lease_seconds, poll_seconds):
        from .executor import make_executor
        self.study, self.grid, self.out, self.log = study, grid, out, log
        self.jobs, self.scheduler, self.threads = jobs, scheduler, threads
        self.lease_seconds, self.poll_seconds = lease_seconds, poll_seconds
        out.mkdir(parents=True, exist_ok=True)
        self.store = Store(out, lease_seconds=lease_seconds)
        self._write_meta()
        self.own_executor = executor is None
        self.executor = executor if executor is not None else make_executor(jobs, scheduler, threads)
        self.store.set_meta("executor", self.executor.describe())
        self.owner = new_owner()
        self.runs_root = str(self.store.runs_dir.resolve())
        self.cells = [_Cell(grid, d, u, b) for d, u, b in grid.sized_cells()]
        self.inflight: dict = {}          # future -> RunSpec
        self.tried: set[str] = set()      # run ids this invocation attempted (failed ones are not retried now)
        self.results: dict[str, dict] = {}
        self.failed: set[str] = set()
        self.halving_meta: dict = {}
        self.ran_here, self.t_start, self.last_beat = 0, time.time(), 0.0
        self.bar = _progress(grid.n_runs(), progress)

    def _write_meta(self) -> None:
        previous = self.store.get_meta("study")
        if previous is not None and StudyConfig(**previous).key() != self.study.key():
            self.log(f"note: {self.out} held a different study (budget {previous.get('budget')}); its finished "
                     f"runs are reused where configs coincide, and the tables now describe this one (budget "
                     f"{self.study.budget})")
        self.store.set_meta("study", self.study.model_dump())
        self.store.set_meta("datasets", self.grid.datasets)
        self.store.set_meta("notes", self.grid.notes)
        self.store.set_meta("lr_candidates", self.grid.lrs)

    # ------------------------------------------------------------------------------ the steps
    def step(self) -> bool:
        """One round: advance and submit, then collect; False when the study is done."""
        waiting = False
        for cell in self.cells:
            self.advance(cell)
            waiting |= self.submit_needed(cell)
        if not waiting and not self.inflight:
            return False
        self.bar.set_postfix(running=len(self.inflight), failed=len(self.failed), refresh=False)
        if self.collect() and self.own_executor:
            self.rebuild_pool()
        self.heartbeat()
        return True

    def advance(self, cell: _Cell) -> None:
        """Selection once a cell's search has finished, then its seed runs; logged as it happens."""
        if cell.seeds is not None:
            return
        before = {s.lr for s in cell.search}
        _, finished, selected = cell.search_needs(self.results)
        for s in cell.search:
            if s.lr not in before:     # edge extension (study.lr_extend)
                self.log(f"{cell.label}: the selected rate is an edge of the candidates; "
                         f"adding lr {s.lr:.4g}")
                self.bar.total += 1
        if not finished:
            return
        cell.selected = selected
        if cell.halving:
            trace = " → ".join(f"{len(t['kept']) + len(t['cut'])} at epoch {t['rung']}" for t in cell.decision["trace"])
            self.log(f"{cell.label}: halving {trace} → "
                     f"{'lr %.4g' % selected['lr'] if selected else 'no selection'}")
            self.halving_meta[cell.label] = cell.halving_record()
            self.store.set_meta("halving", self.halving_meta)
        if selected is None:
            cell.no_selection, cell.seeds = True, []
            self.log(f"{cell.label}: no learning rate gave a finite validation NLL; no seed runs")
            self.bar.total -= self.study.new_seed_runs()
        else:
            cell.seeds = self.grid.seed_specs(cell.dataset, cell.unit, selected["lr"], cell.budget)

    def submit_needed(self, cell: _Cell) -> bool:
        """Claim and submit the runs the cell needs, as capacity allows; True if it still needs any."""
        waiting = False
        busy = {s.run_id for s in self.inflight.values()}
        for spec, stop_after in cell.needed(self.results):
            if reached(self.results.get(spec.run_id), stop_after) or spec.run_id in busy:
                continue
            waiting = True
            if len(self.inflight) >= self.executor.capacity:
                continue
            row = self.store.get(spec.run_id)
            # finished (or, for a halving rung, trained at least that far): use it as it is
            if row is not None and row["status"] != RunStatus.FAILED and reached(row, stop_after):
                self.record(spec, row)
                continue
            if row is not None and row["status"] == RunStatus.FAILED and spec.run_id in self.tried:
                self.record(spec, row)
                continue
            got = self.store.claim(spec.to_dict(), self.owner)
            if got == "done":
                self.record(spec, self.store.get(spec.run_id))
            elif got == "claimed":
                self.tried.add(spec.run_id)
                task = {"run_id": spec.run_id, "config": spec.config, "runs_root": self.runs_root,
                        "threads": self.threads}
                if stop_after is not None:
                    task["stop_after"] = int(stop_after)
                self.inflight[self.executor.submit(task)] = spec
                busy.add(spec.run_id)
            # 'busy': another live invocation runs it; look again next round
        return waiting

    def collect(self) -> bool:
        """Record the runs that finished within a poll; a failure is a recorded run, not an exception.
        Returns whether the worker pool broke."""
        done = self.executor.wait(list(self.inflight), timeout=self.poll_seconds) if self.inflight else set()
        if not self.inflight:
            time.sleep(self.poll_seconds)  # only runs held by another invocation are left: wait for them
        broken = False
        for fut in done:
            spec = self.inflight.pop(fut)
            try:
                summary = fut.result()
            except BrokenProcessPool as e:
                broken = True
                summary = {"run_id": spec.run_id, "status": RunStatus.FAILED, "error": f"worker process died: {e}"}
            except Exception as e:  # a dask worker lost, a pickling error, ...
                summary = {"run_id": spec.run_id, "status": RunStatus.FAILED, "error": f"{type(e).__name__}: {e}"}
            self.store.finish(summary)
            self.ran_here += 1
            if summary["status"] == RunStatus.FAILED:
                self.log(f"run {spec.run_id} failed: {summary.get('error')}")
            elif summary["status"] == RunStatus.DIVERGED:
                self.log(f"run {spec.run_id} diverged (recorded; its best model before divergence is kept)")
            self.record(spec, self.store.get(spec.run_id), ran=True)
        return broken

    def rebuild_pool(self) -> None:
        """A worker died and took the pool with it: the runs still in flight are failed (retried by a later
        invocation), and a new pool takes over."""
        from .executor import make_executor
        for fut, spec in list(self.inflight.items()):
            self.store.finish({"run_id": spec.run_id, "status": RunStatus.FAILED, "error": "worker pool broke"})
            self.record(spec, self.store.get(spec.run_id))
        self.inflight.clear()
        self.executor.shutdown(cancel=True)
        self.executor = make_executor(self.jobs, self.scheduler, self.threads)

    def heartbeat(self) -> None:
        if time.time() - self.last_beat > min(30.0, self.lease_seconds / 4):
            self.store.heartbeat(self.owner)
            self.last_beat = time.time()

    def record(self, spec: RunSpec, row: dict, ran: bool = False) -> None:
        self.results[spec.run_id] = {**row, "lr": spec.lr, "seed": spec.seed}
        if row.get("status") == RunStatus.FAILED:
            self.failed.add(spec.run_id)
        self.bar.n = len(self.results)
        self.bar.set_postfix(running=len(self.inflight), failed=len(self.failed), refresh=False)
        self.bar.refresh()
        if ran and isinstance(self.bar, _Lines):     # a run this invocation trained (finished or halted)
            self.log(_run_line(spec.run_id, row, len(self.results), self.bar.total))

    # ------------------------------------------------------------------------------ the end
    def abort(self) -> None:
        try:
            if self.own_executor:
                self.executor.shutdown(cancel=True)
        finally:
            self.store.release(self.owner)
            self.store.close()
            self.bar.close()

    def close(self) -> dict:
        self.bar.close()
        if self.own_executor:
            self.executor.shutdown()
        elapsed = time.time() - self.t_start
        self.store.set_meta("last_sweep", {"seconds": elapsed, "ran_here": self.ran_here,
                                           "executor": self.executor.describe(),
                                           "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")})
        self.store.close()
        summary = {"runs": len(self.results), "ran_here": self.ran_here, "failed": sorted(self.failed),
                   "notes": self.grid.notes, "seconds": elapsed, "out_dir": str(self.out),
                   "selected": {c.label: (c.selected or {}).get("lr") for c in self.cells}}
        if self.study.search == "halving":
            summary["halving"] = {c.label: c.halving_record() for c in self.cells}
        return summary
