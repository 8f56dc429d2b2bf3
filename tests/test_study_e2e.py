"""Study layer end to end (real training on tiny JSB slices): the smoke budget producing every output,
`report` from an existing store, the Dask path on a local cluster (the uninterrupted reference), a real
SIGKILL mid-sweep then a rerun, and two concurrent invocations on one store — each ending with the same
tables as the uninterrupted run."""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _paths import data_dir

pytestmark = pytest.mark.slow

TABLES = ("table1.md", "table1.csv", "table2.md", "table2.csv", "table2_tests.csv", "lr_search.csv")
OUTPUTS = TABLES + ("curves_epochs.png", "curves_epochs.svg", "curves_seconds.png", "curves_seconds.svg",
                    "report.html")
# A small study whose runs last long enough (a second or two) to be killed mid-training.
SMALL = ["--datasets", "jsb", "--units", "tanh,gru", "--lr-candidates", "2", "--seeds", "2", "--epochs", "12",
         "--patience", "12", "--limit-sequences", "12", "--crop-length", "48", "--batch-size", "3"]


def _env():
    return {**os.environ, "GATEDRNN_DATA_DIR": str(data_dir()), "PYTHONUNBUFFERED": "1"}


def _cli(*args, check=True, timeout=300):
    r = subprocess.run([sys.executable, "-m", "gatedrnn.cli", *map(str, args)], capture_output=True, text=True,
                       env=_env(), timeout=timeout)
    if check:
        assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr[-3000:]}"
    return r


def _tables(d: Path) -> dict[str, str]:
    return {name: (d / name).read_text() for name in TABLES}


def _store_rows(d: Path) -> list[dict]:
    from gatedrnn.study.store import Store
    with Store(d, create=False) as st:
        return st.all()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The SMALL study, uninterrupted, one invocation — executed on a local Dask cluster through
    `--scheduler` (so the other tests also check that Dask and local processes give the same tables).
    Without dask[distributed] the same study runs on local worker processes instead, so the SIGKILL
    and concurrency tests (which do not need Dask) still run; only the Dask test is skipped."""
    d = tmp_path_factory.mktemp("reference")
    try:
        import distributed
    except ImportError:
        _cli("reproduce", "--out", d, "--no-progress", "--jobs", "2", *SMALL)
        return d
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        # the CLI connects to the cluster's scheduler like to any remote one; run_one executes in its worker
        _cli("reproduce", "--out", d, "--no-progress", "--scheduler", cluster.scheduler_address, *SMALL)
    return d


# ------------------------------------------------------------------------- process trees (/proc)
def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process, None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rfind(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[19])


def _descendants(pid: int) -> dict[int, int]:
    """{pid: start time} of every live descendant of pid."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _proc_stat(int(name))
            if st is not None and st[0] != "Z":
                children.setdefault(st[1], []).append(int(name))
    out, stack = {}, [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            st = _proc_stat(c)
            if st is not None:
                out[c] = st[2]
                stack.append(c)
    return out


def _alive(procs: dict[int, int]) -> list[int]:
    """The processes of {pid: start time} still running (a zombie or a reused pid does not count)."""
    return [p for p, start in procs.items()
            if (st := _proc_stat(p)) is not None and st[0] != "Z" and st[2] == start]


def _wait_gone(procs: dict[int, int], seconds: float) -> list[int]:
    deadline = time.time() + seconds
    while _alive(procs) and time.time() < deadline:
        time.sleep(0.05)
    return _alive(procs)


def _kill_leftovers(procs: dict[int, int]) -> None:
    """Clean-up after a failed assertion: the processes this test started, one by one, by pid."""
    for p in _alive(procs):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_smoke_budget_end_to_end_and_report_from_store(tmp_path):
    out = tmp_path / "smoke"
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    _cli("reproduce", "--budget", "smoke", "--out", out)
    elapsed = time.time() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)  # the command and its workers
    # CPU seconds, not wall-clock: on the shared 2-core machine the wall-clock follows other people's load
    # (~30 s wall on idle cores, ~20-30 s CPU; 150 s wall seen at load average 9)
    assert cpu < 120, f"smoke budget used {cpu:.0f} CPU seconds ({elapsed:.0f} s wall-clock)"
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not (out / "ablation.md").exists()      # the paper's units only: no ablation
    page = (out / "report.html").read_text()
    assert page.count("<svg") >= 2 and "src=\"http" not in page and "<script src" not in page
    assert "href='runs/" in page and "Holm" in page and "Machine and versions" in page
    rows = _store_rows(out)
    assert rows and all(r["status"] in ("completed", "early_stopped", "diverged") for r in rows)
    for r in rows:
        assert (out / "runs" / r["run_id"] / "result.json").is_file()
        assert r["config"]["dataset"] and r["data_files"] and r["environment"]["torch"] and r["history"]
    t2 = (out / "table2.md").read_text()
    for unit in ("tanh", "GRU", "LSTM"):
        assert f"| JSB Chorales | {unit} |" in t2
    assert "reference: per-note marginal" in t2 and "repeat the previous frame" in t2
    assert "8.54" in t2  # the paper's GRU test NLL on JSB, beside ours
    # the smoke budget's slices are named, with which sequences they keep
    assert "Data slices for JSB Chorales: limit_sequences=8 (first: the first ones of each split)" in t2
    assert "finished runs" in t2 and "stopped by patience" in t2

    # `report` rebuilds the same tables from the store alone; `status` reads it
    before = _tables(out)
    for name in OUTPUTS:
        (out / name).unlink()
    _cli("report", out)
    assert _tables(out) == before
    assert all((out / n).is_file() for n in OUTPUTS)
    s = _cli("status", out).stdout
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    # exactly one line of counts, matching the store: e.g. "completed: 9  early_stopped: 3"
    assert "  ".join(f"{k}: {v}" for k, v in sorted(counts.items())) in s.splitlines(), s
    assert f"{len(rows)} runs recorded" in s.splitlines()[0]
    assert not any(w in s for w in ("running", "interrupted", "failed"))


def test_sigkill_mid_sweep_then_rerun_gives_identical_tables(tmp_path, reference):
    from gatedrnn.status import FINISHED
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "gatedrnn.cli", "reproduce", "--out", str(out), "--no-progress",
                             "--jobs", "1", *SMALL], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    victim = None
    workers: dict[int, int] = {}
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
            if not (out / "store.sqlite").exists():
                continue
            try:
                rows = _store_rows(out)
            except Exception:
                continue
            if sum(r["status"] in FINISHED for r in rows) < 2:
                continue
            # a run in the middle of its training: checkpointed epochs, no result yet
            for r in rows:
                run = out / "runs" / r["run_id"]
                m = run / "metrics.jsonl"
                if r["status"] == "running" and not (run / "result.json").exists() and m.exists() \
                        and len(m.read_text().splitlines()) >= 3:
                    victim = r["run_id"]
                    break
            if victim:
                workers = _descendants(proc.pid)     # the worker training the victim (and any helper)
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=30)
        assert victim, f"never caught a run mid-training (exit {proc.returncode}): {proc.stderr.read()[-2000:]}"
        assert proc.returncode == -signal.SIGKILL
        assert workers, "the sweep had no worker process"
        # the workers die with the sweep process (PR_SET_PDEATHSIG): none may train on as an orphan
        left = _wait_gone(workers, 10)
        assert not left, f"worker process(es) {left} outlived the SIGKILLed sweep"
    finally:
        if proc.poll() is None:
            workers.update(_descendants(proc.pid))
            proc.kill()
            proc.wait()
        _kill_leftovers(workers)
    done_before = {r["run_id"] for r in _store_rows(out) if r["status"] in FINISHED}
    assert victim not in done_before and len(done_before) >= 2

    st = _cli("status", out).stdout
    assert "interrupted" in st

    _cli("reproduce", "--out", out, "--no-progress", "--jobs", "2", *SMALL)
    rows = {r["run_id"]: r for r in _store_rows(out)}
    # finished runs were not repeated; the interrupted one resumed from its checkpoint
    for rid in done_before:
        assert rows[rid]["attempts"] == 1
        assert (out / "runs" / rid / "train.log").read_text().count("start on") == 1
    assert "resuming" in (out / "runs" / victim / "train.log").read_text()
    assert _tables(out) == _tables(reference)


def test_two_concurrent_invocations_share_one_store(tmp_path, reference):
    from gatedrnn.study.store import Store
    out = tmp_path / "shared"
    cmd = [sys.executable, "-m", "gatedrnn.cli", "reproduce", "--out", str(out), "--no-progress", "--jobs", "1",
           *SMALL]
    procs = [subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (so, se) in zip(procs, outs):
        assert p.returncode == 0, se[-3000:]
    rows = _store_rows(out)
    assert len(rows) == 2 * (2 + 2 - 1)
    for r in rows:  # no run trained twice
        assert r["status"] in ("completed", "early_stopped") and r["attempts"] == 1, r["run_id"]
        log = (out / "runs" / r["run_id"] / "train.log").read_text()
        assert log.count("start on") == 1 and "resuming" not in log
    with Store(out, create=False) as st:
        assert st.check() == []
    assert _tables(out) == _tables(reference)


def test_dask_scheduler_on_a_local_cluster(reference):
    out = reference
    rows = _store_rows(out)
    assert len(rows) == 6 and all(r["status"] in ("completed", "early_stopped") for r in rows)
    # the runs executed in the cluster's worker (this test process), not in the CLI process
    for r in rows:
        assert f"pid {os.getpid()}" in (out / "runs" / r["run_id"] / "train.log").read_text()
    assert "Dask cluster" in (out / "report.html").read_text()
    assert all((out / n).is_file() for n in OUTPUTS)


# A study whose two runs train for a long time (300 epochs, no early stop): killed a few epochs in, a
# worker that outlived the sweep would go on writing epochs for tens of seconds.
LONG = ["--datasets", "jsb", "--units", "tanh,gru", "--lr-candidates", "1", "--seeds", "1", "--epochs", "300",
        "--patience", "300", "--limit-sequences", "12", "--crop-length", "48", "--batch-size", "3"]


def _epochs_written(out: Path) -> dict[str, int]:
    return {m.parent.name: len(m.read_text().splitlines()) for m in (out / "runs").glob("*/metrics.jsonl")}


def test_sigterm_on_the_sweep_takes_its_workers_down(tmp_path):
    """SIGTERM to the `reproduce` process while both its worker processes train: the sweep exits, and
    every worker is gone within seconds (no orphan trains on: no epoch is written after the kill)."""
    out = tmp_path / "term"
    proc = subprocess.Popen([sys.executable, "-m", "gatedrnn.cli", "reproduce", "--out", str(out), "--no-progress",
                             "--no-report", "--jobs", "2", *LONG], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    workers: dict[int, int] = {}
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
            ep = _epochs_written(out) if (out / "runs").is_dir() else {}
            if len(ep) == 2 and min(ep.values()) >= 2:      # both runs into their training (epoch 1 written)
                workers = _descendants(proc.pid)
                os.kill(proc.pid, signal.SIGTERM)
                break
        assert workers, f"never caught both runs mid-training (exit {proc.poll()}): {proc.stderr.read()[-2000:]}"
        assert len(workers) >= 2
        proc.wait(timeout=30)
        assert proc.returncode != 0
        left = _wait_gone(workers, 5)
        assert not left, f"worker process(es) {left} outlived the SIGTERMed sweep"
        at_kill = _epochs_written(out)
        time.sleep(1.5)
        assert _epochs_written(out) == at_kill, "an orphaned worker went on training"
        assert all(n < 300 for n in at_kill.values())
        assert not list((out / "runs").glob("*/result.json"))
        from gatedrnn.study.report import status_text
        st = status_text(out)
        assert "interrupted: 2" in st.splitlines(), st     # both runs: owner gone, resumable
    finally:
        if proc.poll() is None:
            workers.update(_descendants(proc.pid))
            proc.kill()
            proc.wait()
        _kill_leftovers(workers)


# One run only: the search run of tanh on a JSB slice.
TINY = ["--datasets", "jsb", "--units", "tanh", "--lr-candidates", "1", "--seeds", "1", "--epochs", "2",
        "--patience", "2", "--limit-sequences", "4", "--crop-length", "16", "--batch-size", "2"]


def _run_ids(*args) -> list[str]:
    """The run ids `gatedrnn reproduce <args>` works on (the CLI's own parser and study construction)."""
    from gatedrnn.cli import build_parser
    from gatedrnn.cli.study import study_from_args
    from gatedrnn.study.grid import Grid
    study = study_from_args(build_parser().parse_args(["reproduce", *args]))
    g = Grid(study)
    return [s.run_id for d, u in g.cells() for s in g.search_specs(d, u)]


def test_failed_run_is_recorded_then_retried_by_the_next_invocation(tmp_path):
    """An exception inside a run's training (a damaged checkpoint.pt in the run directory) becomes, through
    executor.run_one, a store row with status 'failed' and the error; the sweep goes on and exits 1. The
    next invocation retries the failed run (attempt 2) and, the damage gone, completes it. Real `reproduce`
    processes (runs in-process, --jobs 0: the worker path is the SIGKILL/SIGTERM tests')."""
    out = tmp_path / "retry"
    rid, = _run_ids(*TINY)
    run = out / "runs" / rid
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"this is not a checkpoint")
    r = _cli("reproduce", "--out", out, "--no-progress", "--no-report", "--jobs", "0", *TINY, check=False)
    assert r.returncode == 1, r.stderr[-3000:]
    assert f"run {rid} failed" in r.stderr and "1 failed" in r.stdout
    row, = _store_rows(out)
    assert row["status"] == "failed" and row["attempts"] == 1 and row["owner"] is None
    assert row["error"] and "Traceback" in row["summary"]["traceback"] and "checkpoint" in row["summary"]["traceback"]
    assert row["valid_nll"] is None and not (run / "result.json").exists()
    from gatedrnn.study.report import status_text
    st = status_text(out)
    assert "failed: 1" in st.splitlines() and f"failed      {rid}" in st

    (run / "checkpoint.pt").unlink()
    r = _cli("reproduce", "--out", out, "--no-progress", "--no-report", "--jobs", "0", *TINY)
    assert "0 failed" in r.stdout and "1 trained or resumed by this invocation" in r.stdout
    row, = _store_rows(out)
    assert row["status"] in ("completed", "early_stopped") and row["attempts"] == 2 and row["error"] is None
    assert (run / "result.json").is_file()


def test_ablation_smoke_study_writes_ablation_tables_and_forest_plot(tmp_path):
    """`reproduce --units lstm,lstm-nig` (a variant beside its full unit) writes ablation.md/.csv, the forest
    plot and the report section; a study of the paper's units writes none of them (the smoke test above)."""
    out = tmp_path / "ablation"
    _cli("reproduce", "--out", out, "--no-progress", "--jobs", "0", "--datasets", "jsb", "--units", "lstm,lstm-nig",
         "--lr-candidates", "1", "--seeds", "2", "--epochs", "2", "--patience", "2", "--limit-sequences", "8",
         "--crop-length", "32", "--batch-size", "4")
    for name in ("ablation.md", "ablation.csv", "ablation_forest.png", "ablation_forest.svg", *OUTPUTS):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    import csv
    with open(out / "ablation.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["dataset"], r["unit"], r["role"]) for r in rows] == [("jsb", "lstm", "full"),
                                                                     ("jsb", "lstm-nig", "variant")]
    assert {r["unit"] for r in _store_rows(out)} == {"lstm", "lstm-nig"}
    v = rows[1]
    assert int(v["pairs"]) == 2 and v["p"] and v["p_holm"] == v["p"]        # one test: Holm leaves it as it is
    md = (out / "ablation.md").read_text()
    assert "| JSB Chorales | LSTM (full) |" in md and "| JSB Chorales | lstm-nig |" in md
    page = (out / "report.html").read_text()
    assert "href='ablation_forest.svg'" in page and "Ablation: what each component is worth" in page



def test_size_axis_tiny_study_trains_each_budget_and_writes_the_size_table_and_figure(tmp_path):
    """`reproduce --param-budgets A,B` (issue 20): every (unit, budget) trains at its matched hidden size (as
    its runs record it), Table 2 has a row per budget with the parameters, the tests are per budget, and
    size.md/.csv and the figure size.png/.svg are written and shown in the report."""
    out = tmp_path / "size"
    _cli("reproduce", "--out", out, "--no-progress", "--jobs", "0", "--datasets", "jsb", "--units", "tanh,gru",
         "--param-budgets", "2000,6000", "--lr-candidates", "1", "--seeds", "2", "--epochs", "2", "--patience", "2",
         "--limit-sequences", "8", "--crop-length", "32", "--batch-size", "4")
    for name in ("size.md", "size.csv", "size.png", "size.svg", *OUTPUTS):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    from gatedrnn.nn.counting import count_parameters, match_hidden_size
    rows = _store_rows(out)
    assert {(r["unit"], r["config"]["budget"]) for r in rows} == {(u, b) for u in ("tanh", "gru") for b in (2000, 6000)}
    for r in rows:
        # matched as Table 1 matches (at music's nominal input size 100), built at the data's 88 inputs
        assert r["summary"]["hidden_size"] == match_hidden_size(r["unit"], 100, r["config"]["budget"]), r["run_id"]
    import csv
    with open(out / "size.csv") as f:
        size = list(csv.DictReader(f))
    assert [(r["budget"], r["unit"]) for r in size] == [("2000", "tanh"), ("2000", "gru"), ("6000", "tanh"),
                                                        ("6000", "gru")]
    assert all(int(r["parameters"]) == count_parameters(r["unit"], 88, match_hidden_size(r["unit"], 100, int(r["budget"])))
               for r in size)
    with open(out / "table2_tests.csv") as f:
        assert [r["budget"] for r in csv.DictReader(f)] == ["2000", "6000"]
    assert "Test NLL against size" in (out / "report.html").read_text()
