"""The sweep driver: walks the grid, claims runs in the store, submits them to an executor, records
the outcomes, selects each (dataset, unit)'s learning rate on validation NLL, then runs the seeds.

Restartable at any moment: finished runs are read back from the store (never repeated), interrupted
runs resume from their checkpoint (run_one → train(resume=True)), and a run held by another live
invocation is waited for, not duplicated.
"""
from __future__ import annotations

import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from .grid import Grid, RunSpec, StudyConfig, select_lr
from .store import DONE, Store, new_owner


class _Cell:
    """One (dataset, unit): its search runs, then (after selection) its seed runs."""

    def __init__(self, grid: Grid, dataset: str, unit: str):
        self.dataset, self.unit = dataset, unit
        self.grid = grid
        self.search = grid.search_specs(dataset, unit)
        self.seeds: list[RunSpec] | None = None
        self.selected: dict | None = None
        self.no_selection = False

    def needed(self) -> list[RunSpec]:
        return self.search if self.seeds is None else self.seeds


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="run", desc="study", dynamic_ncols=True, file=sys.stderr)


def run_study(study: StudyConfig, out_dir: str | Path, executor=None, *, jobs: int | None = None,
              scheduler: str | None = None, threads: int = 1, progress: bool = True, log=print,
              lease_seconds: float = 600.0, poll_seconds: float = 1.0, build_report: bool = True) -> dict:
    """Run (or continue) the whole study into out_dir; returns {"runs", "failed", "notes", ...}."""
    from .executor import make_executor
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(out, lease_seconds=lease_seconds)
    grid = Grid(study)
    for note in grid.notes:
        log(f"note: {note}")
    if not grid.datasets:
        raise ValueError("no dataset of the study is available (see the notes above)")
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

    def record(spec: RunSpec, row_or_summary: dict) -> None:
        results[spec.run_id] = {**row_or_summary, "lr": spec.lr, "seed": spec.seed}
        if row_or_summary.get("status") == "failed":
            failed_ids.add(spec.run_id)
        if bar is not None:
            bar.n = len(results)
            bar.set_postfix(running=len(inflight), failed=len(failed_ids), refresh=False)
            bar.refresh()

    try:
        while True:
            # 1. advance cells: selection after the search, seeds after selection
            waiting = False
            for cell in cells:
                if cell.seeds is None and all(s.run_id in results for s in cell.search):
                    cell.selected = select_lr([results[s.run_id] for s in cell.search])
                    if cell.selected is None:
                        cell.no_selection = True
                        cell.seeds = []
                        log(f"{cell.dataset}/{cell.unit}: no learning rate gave a finite validation NLL; "
                            f"no seed runs")
                        if bar is not None:
                            bar.total -= len(study.seed_list()) - 1
                    else:
                        cell.seeds = grid.seed_specs(cell.dataset, cell.unit, cell.selected["lr"])
                for spec in cell.needed():
                    if spec.run_id in results or any(s.run_id == spec.run_id for s in inflight.values()):
                        continue
                    waiting = True
                    if len(inflight) >= executor.capacity:
                        continue
                    row = store.get(spec.run_id)
                    if row is not None and row["status"] in DONE:
                        record(spec, row)
                        continue
                    if row is not None and row["status"] == "failed" and spec.run_id in tried:
                        record(spec, row)
                        continue
                    got = store.claim(spec.to_dict(), owner)
                    if got == "done":
                        record(spec, store.get(spec.run_id))
                    elif got == "claimed":
                        tried.add(spec.run_id)
                        task = {"run_id": spec.run_id, "config": spec.config, "runs_root": runs_root,
                                "threads": threads}
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
                    summary = {"run_id": spec.run_id, "status": "failed", "error": f"worker process died: {e}"}
                except Exception as e:  # a dask worker lost, a pickling error, ...
                    summary = {"run_id": spec.run_id, "status": "failed", "error": f"{type(e).__name__}: {e}"}
                store.finish(summary)
                ran_here += 1
                if summary["status"] == "failed":
                    log(f"run {spec.run_id} failed: {summary.get('error')}")
                elif summary["status"] == "diverged":
                    log(f"run {spec.run_id} diverged (recorded; its best model before divergence is kept)")
                record(spec, store.get(spec.run_id))
            if broken and own_executor:
                for fut, spec in list(inflight.items()):
                    store.finish({"run_id": spec.run_id, "status": "failed", "error": "worker pool broke"})
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
               "notes": grid.notes, "seconds": elapsed, "out_dir": str(out)}
    if build_report:
        from .report import build_report as _build
        summary["outputs"] = _build(out, log=log)
    return summary
