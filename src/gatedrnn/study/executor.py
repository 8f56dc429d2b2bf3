"""Where runs execute. ONE function, `run_one(task) -> summary`, is submitted to an executor:

    LocalExecutor(jobs)        processes on this machine (concurrent.futures, spawn start method)
    DaskExecutor(address)      an existing Dask cluster (`tcp://host:8786`), or a Client/LocalCluster
    InlineExecutor()           in this process, one at a time (tests, debugging)

All three offer submit(task) -> future, wait(futures, timeout) -> done set, capacity, shutdown(); the
sweep driver (study.runner) does not know which one it has.

A worker trains with one torch thread per run by default: on a small shared machine several
multi-threaded runs slow each other down by orders of magnitude (thread oversubscription).
A run directory is guarded by an fcntl lock held while training, which the kernel drops when the
process dies, so an orphaned worker and a new one can never train the same run at the same time.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import socket
import time
import traceback
from pathlib import Path

from ..status import RunStatus


# ----------------------------------------------------------------------------------- the task
def _limit_threads(n: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    os.environ.setdefault("MKL_NUM_THREADS", str(n))
    import torch
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _die_with_parent() -> None:
    """Linux: a local worker gets SIGKILL when the sweep process dies (no orphans training on)."""
    try:
        import ctypes
        import signal
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _worker_init(threads: int) -> None:
    _die_with_parent()
    _limit_threads(threads)


class _RunLock:
    """Exclusive fcntl lock on <run_dir>/.lock for the duration of the training."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"

    def __enter__(self):
        import fcntl
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)  # blocks while another live process trains this run
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # closing drops the lock


def read_history(run_dir: Path) -> list[dict]:
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def run_one(task: dict) -> dict:
    """Train one run of the study (resuming its checkpoint if any) and return its summary.

    task: {"run_id", "config" (TrainConfig fields), "runs_root", "threads", optional "stop_after"}.
    Never raises: an exception becomes status 'failed' with the error; divergence is status 'diverged'.
    With stop_after=E (a successive-halving rung) a run that gets past epoch E is paused there
    (checkpointed, no result.json) and reported with status 'halted', epochs = the epoch it stopped
    at and valid_nll = the best validation NLL so far; the same task without stop_after continues it."""
    run_dir = Path(task["runs_root"]) / task["run_id"]
    base = {"run_id": task["run_id"], "host": socket.gethostname(), "pid": os.getpid(),
            "run_dir": str(run_dir)}
    t0 = time.time()
    try:
        _limit_threads(int(task.get("threads", 1)))
        from ..train import TrainConfig, train
        fields = dict(task["config"])
        # where the data lives and which device runs it are this invocation's: train() resumes a run whose
        # config differs only in those (train.same_run), so a run that failed for a wrong --data-dir
        # succeeds when retried with the right one
        with _RunLock(run_dir):
            cfg = TrainConfig(**fields)
            with open(run_dir / "train.log", "a") as logf:
                def log(msg: str) -> None:
                    logf.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")
                    logf.flush()
                log(f"start on {base['host']} pid {base['pid']}")
                stop_after = task.get("stop_after")
                res = train(cfg, run_dir, progress=False, resume=True, log=log,
                            stop_after=None if stop_after is None else int(stop_after))
                log(f"end: {res['status']}" + (f" at epoch {res.get('epoch')} (halving rung {stop_after})"
                                               if res["status"] == RunStatus.PAUSED else ""))
        history = read_history(run_dir)
        if res["status"] == RunStatus.PAUSED:
            return {**base, "status": RunStatus.HALTED, "epochs": res["epoch"], "best_epoch": res["best_epoch"],
                    "valid_nll": res["best_valid"], "stop_after": stop_after,
                    "train_seconds": history[-1].get("seconds") if history else None,
                    "dataset": cfg.dataset, "unit": cfg.unit, "history": history,
                    "wall_seconds": time.time() - t0}
        keep = ("status", "train_nll", "valid_nll", "test_nll", "train_nll_seq", "valid_nll_seq", "test_nll_seq",
                "train_nll_seqavg", "valid_nll_seqavg", "test_nll_seqavg",
                "epochs", "best_epoch", "updates", "train_seconds", "hidden_size", "input_size",
                "recurrent_parameters", "total_parameters", "kind", "dataset", "unit", "data_files",
                "environment", "unit_of_nll")
        out = {**base, **{k: res.get(k) for k in keep}}
        out["history"] = history
        out["wall_seconds"] = time.time() - t0
        return out
    except BaseException as e:  # noqa: BLE001 — a failed run is recorded, never fatal to the sweep
        if isinstance(e, KeyboardInterrupt):
            raise
        return {**base, "status": RunStatus.FAILED, "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(), "wall_seconds": time.time() - t0}


# ---------------------------------------------------------------------------------- executors
class InlineExecutor:
    """Runs each task at submit time, in this process (no parallelism)."""
    name = "inline"
    capacity = 1

    def submit(self, task: dict):
        f: cf.Future = cf.Future()
        f.set_result(run_one(task))
        return f

    @staticmethod
    def wait(futures, timeout: float):
        return {f for f in futures if f.done()}

    def shutdown(self, cancel: bool = False) -> None:
        pass

    def describe(self) -> str:
        return "in-process, one run at a time"


class LocalExecutor:
    """`jobs` worker processes on this machine (spawn: no fork of a process holding torch threads)."""
    name = "local"

    def __init__(self, jobs: int | None = None, threads: int = 1):
        self.capacity = int(jobs or os.cpu_count() or 1)
        self.threads = threads
        self.pool = cf.ProcessPoolExecutor(max_workers=self.capacity,
                                           mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_worker_init, initargs=(threads,))

    def submit(self, task: dict):
        return self.pool.submit(run_one, task)

    @staticmethod
    def wait(futures, timeout: float):
        done, _ = cf.wait(list(futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return set(done)

    def shutdown(self, cancel: bool = False) -> None:
        if cancel:
            # interrupted: stop the runs in flight too (each resumes from its last checkpoint next time) —
            # a worker left running would keep writing into a run directory nobody owns any more
            for p in list((getattr(self.pool, "_processes", None) or {}).values()):
                if p.is_alive():
                    p.terminate()
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)

    def describe(self) -> str:
        return f"{self.capacity} local worker process(es), {self.threads} torch thread(s) each"


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise ImportError("the Dask executor needs dask[distributed]: pip install 'gatedrnn[dask]' "
                          "(or run without --scheduler for local processes)") from None
    return distributed


class DaskExecutor:
    """An existing Dask cluster: `address` ('tcp://host:8786') or a ready `client`.
    Workers must import gatedrnn and see the data and the results directory (shared file system)."""
    name = "dask"

    def __init__(self, address: str | None = None, client=None, threads: int = 1):
        distributed = _import_distributed()
        self._own = client is None
        try:
            self.client = client or distributed.Client(address, timeout="30s")
        except OSError as e:
            raise OSError(f"cannot reach the Dask scheduler at {address}: {e}") from None
        self.threads = threads
        self.address = address or getattr(self.client.scheduler, "address", "?")

    @property
    def capacity(self) -> int:
        try:
            return max(1, sum(self.client.nthreads().values()))
        except Exception:
            return 1

    def submit(self, task: dict):
        task = {**task, "threads": self.threads}
        return self.client.submit(run_one, task, pure=False, key=f"gatedrnn-{task['run_id']}-{os.getpid()}-"
                                                               f"{time.monotonic_ns()}")

    @staticmethod
    def wait(futures, timeout: float):
        from distributed import wait as dwait
        futures = list(futures)
        try:
            dwait(futures, timeout=timeout, return_when="FIRST_COMPLETED")
        except Exception:  # timeout: nothing finished yet
            pass
        return {f for f in futures if f.done()}

    def shutdown(self, cancel: bool = False) -> None:
        if self._own:
            self.client.close()

    def describe(self) -> str:
        return f"Dask cluster at {self.address} ({self.capacity} worker thread(s))"


def make_executor(jobs: int | None = None, scheduler: str | None = None, threads: int = 1):
    if scheduler:
        return DaskExecutor(scheduler, threads=threads)
    if jobs == 0:
        return InlineExecutor()
    return LocalExecutor(jobs, threads=threads)
