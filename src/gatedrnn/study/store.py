"""The results store: one SQLite file (stdlib sqlite3, WAL journal, busy timeout) per results directory.

    RESULTS/store.sqlite     runs (one row per run id: config, seed, status, owner lease, metrics,
                             data checksums, versions, per-epoch history) and meta (the study config)
    RESULTS/runs/<run-id>/   the run directory written by gatedrnn.train (checkpoint, best model, ...)

Why SQLite: claiming a run must be atomic across processes (two `reproduce` invocations on one store),
and a transaction (BEGIN IMMEDIATE) gives that with no extra service; WAL lets `status`/`report` read
while a sweep writes. Only the driver process (the one that runs `gatedrnn reproduce`) touches the
database — workers, local or on a Dask cluster, write nothing but their run directory — so the
database never sits behind a network file system lock.

Leases: a claimed run records its owner (host, pid, a random token) and a heartbeat that the owner
refreshes. Another invocation may take the run over when the owner is gone: on the same host when
the pid no longer exists, on any host when the heartbeat is older than the lease timeout.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
import uuid
from pathlib import Path

from ..status import FINISHED, RunStatus

# What a row's status can be: every RunStatus but `paused`, which is train()'s answer only (the store
# records a run paused at a successive-halving rung as `halted`: checkpointed, no result.json, `epochs` =
# the epoch it stopped at; a halving study counts it as trained up to that rung, a full study continues
# it). FINISHED runs are never run again; `failed` ones are retried by a later invocation.
STATUSES = tuple(s for s in RunStatus if s is not RunStatus.PAUSED)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    dataset     TEXT NOT NULL,
    unit        TEXT NOT NULL,
    lr          REAL NOT NULL,
    seed        INTEGER NOT NULL,
    config      TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT '{RunStatus.PENDING}',
    owner       TEXT,
    owner_host  TEXT,
    owner_pid   INTEGER,
    heartbeat   REAL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    started_at  REAL,
    finished_at REAL,
    train_nll   REAL,
    valid_nll   REAL,
    test_nll    REAL,
    epochs      INTEGER,
    best_epoch  INTEGER,
    train_seconds REAL,
    summary     TEXT,
    history     TEXT,
    data_files  TEXT,
    environment TEXT,
    error       TEXT
);
CREATE INDEX IF NOT EXISTS runs_cell ON runs(dataset, unit);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

STORE_NAME = "store.sqlite"


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, ValueError, TypeError):
        return False
    return True


class Store:
    def __init__(self, path: str | Path, *, lease_seconds: float = 600.0, create: bool = True):
        path = Path(path)
        if path.is_dir() or path.suffix != ".sqlite":
            path = path / STORE_NAME
        if not create and not path.exists():
            raise FileNotFoundError(f"no results store at {path} (run `gatedrnn reproduce --out {path.parent}` first)")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.root = path.parent
        self.lease_seconds = float(lease_seconds)
        self.host = socket.gethostname()
        self.db = sqlite3.connect(str(path), timeout=60.0, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA busy_timeout = 60000")
        # Switching to WAL needs an exclusive lock, and SQLite answers SQLITE_BUSY at once (no busy handler)
        # when two processes open a new store at the same moment: retry with back-off. WAL is persistent,
        # so only the first opening of a store can race.
        self._retry_locked(lambda: self.db.execute("PRAGMA journal_mode = WAL"), "set WAL mode on")
        self.db.execute("PRAGMA synchronous = NORMAL")
        with self._tx():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)

    # ------------------------------------------------------------------------- plumbing
    def _retry_locked(self, fn, what: str, attempts: int = 50):
        for attempt in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                time.sleep(min(0.05 * (attempt + 1), 1.0))
        raise sqlite3.OperationalError(f"could not {what} results store {self.path}: it stayed locked")

    @contextlib.contextmanager
    def _tx(self):
        """BEGIN IMMEDIATE: takes the write lock up front, so a read-then-write is atomic."""
        for attempt in range(20):
            try:
                self.db.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as e:  # busy beyond the timeout: back off and retry
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                time.sleep(0.1 * (attempt + 1))
        else:
            raise sqlite3.OperationalError(f"results store {self.path} stayed locked")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    # ------------------------------------------------------------------------------ meta
    def set_meta(self, key: str, value) -> None:
        with self._tx():
            self.db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                            "value = excluded.value", (key, json.dumps(value, sort_keys=True)))

    def get_meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default

    # ---------------------------------------------------------------------------- leases
    def _owner_alive(self, row) -> bool:
        if row["owner"] is None:
            return False
        fresh = row["heartbeat"] is not None and time.time() - row["heartbeat"] < self.lease_seconds
        if row["owner_host"] == self.host:
            return fresh and _pid_alive(row["owner_pid"])
        return fresh

    def claim(self, spec: dict, owner: str, *, retry_failed: bool = True) -> str:
        """Atomically take a run: 'claimed' (it is ours to run), 'done' (finished before: never run
        again), 'busy' (a live owner has it), or 'failed' (failed before and retry_failed is False)."""
        now = time.time()
        host, pid = owner.split(":")[0], int(owner.split(":")[1])
        with self._tx():
            row = self.db.execute("SELECT * FROM runs WHERE run_id = ?", (spec["run_id"],)).fetchone()
            if row is None:
                self.db.execute(
                    "INSERT INTO runs(run_id, dataset, unit, lr, seed, config, status, owner, owner_host, "
                    "owner_pid, heartbeat, attempts, started_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,1,?)",
                    (spec["run_id"], spec["dataset"], spec["unit"], spec["lr"], spec["seed"],
                     json.dumps(spec["config"], sort_keys=True), RunStatus.RUNNING, owner, host, pid, now, now))
                return "claimed"
            if row["status"] in FINISHED:
                return "done"
            if row["status"] == RunStatus.RUNNING and row["owner"] != owner and self._owner_alive(row):
                return "busy"
            if row["status"] == RunStatus.FAILED and not retry_failed:
                return "failed"
            self.db.execute("UPDATE runs SET status=?, owner=?, owner_host=?, owner_pid=?, heartbeat=?, "
                            "attempts=attempts+1, started_at=?, error=NULL WHERE run_id=?",
                            (RunStatus.RUNNING, owner, host, pid, now, now, spec["run_id"]))
            return "claimed"

    def heartbeat(self, owner: str) -> None:
        with self._tx():
            self.db.execute("UPDATE runs SET heartbeat=? WHERE owner=? AND status=?",
                            (time.time(), owner, RunStatus.RUNNING))

    def release(self, owner: str) -> int:
        """Give back every run this owner still holds (status back to 'pending')."""
        with self._tx():
            cur = self.db.execute("UPDATE runs SET status=?, owner=NULL, heartbeat=NULL WHERE owner=? AND status=?",
                                  (RunStatus.PENDING, owner, RunStatus.RUNNING))
            return cur.rowcount

    def finish(self, summary: dict) -> None:
        """Record a run's outcome (from executor.run_one): final, failed, or halted at a rung."""
        status = summary["status"]
        if status not in (*FINISHED, RunStatus.HALTED, RunStatus.FAILED):
            raise ValueError(f"not a final status: {status!r}")
        with self._tx():
            self.db.execute(
                "UPDATE runs SET status=?, owner=NULL, heartbeat=NULL, finished_at=?, train_nll=?, valid_nll=?, "
                "test_nll=?, epochs=?, best_epoch=?, train_seconds=?, summary=?, history=?, data_files=?, "
                "environment=?, error=? WHERE run_id=?",
                (status, time.time(), summary.get("train_nll"), summary.get("valid_nll"), summary.get("test_nll"),
                 summary.get("epochs"), summary.get("best_epoch"), summary.get("train_seconds"),
                 json.dumps({k: v for k, v in summary.items()
                             if k not in ("history", "data_files", "environment")}, default=str),
                 json.dumps(summary.get("history", [])), json.dumps(summary.get("data_files", {})),
                 json.dumps(summary.get("environment", {})), summary.get("error"), summary["run_id"]))

    # ----------------------------------------------------------------------------- reads
    def get(self, run_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return self._row(row) if row else None

    def all(self) -> list[dict]:
        return [self._row(r) for r in self.db.execute("SELECT * FROM runs ORDER BY dataset, unit, lr, seed")]

    def counts(self) -> dict[str, int]:
        return {r["status"]: r["n"] for r in self.db.execute("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")}

    def live_owner(self, run: dict) -> bool:
        return run["status"] == RunStatus.RUNNING and self._owner_alive(run)

    @staticmethod
    def _row(row) -> dict:
        d = dict(row)
        for k in ("config", "summary", "history", "data_files", "environment"):
            if d.get(k) is not None:
                d[k] = json.loads(d[k])
        return d

    def check(self) -> list[str]:
        """Consistency problems (empty when the store is sound)."""
        problems = [f"sqlite integrity_check: {r[0]}" for r in self.db.execute("PRAGMA integrity_check")
                    if r[0] != "ok"]
        for r in self.all():
            if r["status"] not in STATUSES:
                problems.append(f"{r['run_id']}: unknown status {r['status']!r}")
            if r["status"] in FINISHED and r["valid_nll"] is None:
                problems.append(f"{r['run_id']}: status {r['status']} without metrics")
        return problems
