"""Study layer, fast unit tests: statistics by hand, validation-only selection, the grid, the store's
claims and leases, the reference models, and the sweep driver on a fake executor (no training)."""
from __future__ import annotations

import concurrent.futures as cf
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from gatedrnn.study import grid as G
from gatedrnn.study.baselines import music_baselines, speech_baselines
from gatedrnn.study.stats import holm, mean_ci, paired_t
from gatedrnn.study.store import Store, new_owner


# ------------------------------------------------------------------------------------- stats
def test_ci_hand_case():
    r = mean_ci([1, 2, 3, 4, 5])
    assert r.mean == 3 and r.n == 5
    assert r.sd == pytest.approx(math.sqrt(2.5))             # s = 1.5811
    # t_{0.975,4} = 2.7764; 2.7764 · 1.5811 / √5 = 1.9632
    assert r.half_width == pytest.approx(2.776445 * 1.581139 / math.sqrt(5), rel=1e-5)
    assert r.half_width == pytest.approx(1.963, abs=5e-4)
    assert r.fmt(3) == "3.000 ± 1.963"


def test_ci_degenerate():
    assert mean_ci([]).n == 0 and math.isnan(mean_ci([]).mean)
    one = mean_ci([2.5])
    assert one.mean == 2.5 and math.isnan(one.half_width) and one.fmt() == "2.50"
    assert mean_ci([4, 4, 4]).half_width == 0.0


def test_paired_t_hand_case():
    a = [2, 4, 6, 8, 10]
    b = [1, 2, 3, 4, 5]                      # differences 1..5: mean 3, s 1.5811
    t, p, n = paired_t(a, b)
    assert n == 5
    assert t == pytest.approx(3 / (1.581139 / math.sqrt(5)), rel=1e-6)  # 4.2426
    assert p == pytest.approx(0.013236, abs=2e-6)                        # 2·P(T_4 > 4.2426)
    assert paired_t([1, 2], [1, 2])[:2] == (0.0, 1.0)
    assert math.isnan(paired_t([1], [2])[1])


def test_holm_hand_case():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005·4 = 0.02; 0.01·3 = 0.03; 0.03·2 = 0.06; 0.04·1 = 0.04 → monotone: 0.06
    adj, rej = holm(p, alpha=0.05)
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert rej == [True, False, False, True]
    # plain Bonferroni would reject only p ≤ 0.0125: Holm's step-down is more powerful here
    adj2, rej2 = holm([0.001, 0.02, 0.04], alpha=0.05)
    assert adj2 == pytest.approx([0.003, 0.04, 0.04]) and rej2 == [True, True, True]
    adj3, rej3 = holm([0.2, float("nan"), 0.01])
    assert adj3[0] == pytest.approx(0.2) and math.isnan(adj3[1]) and adj3[2] == pytest.approx(0.02)
    assert rej3 == [False, False, True]


# ------------------------------------------------------------------------------------ selection
def test_lr_selection_uses_validation_only():
    # The best TEST NLL (lr 1e-2) differs from the best VALIDATION NLL (lr 1e-3): selection must pick 1e-3.
    results = [
        {"lr": 1e-4, "status": "completed", "valid_nll": 9.0, "test_nll": 9.5, "train_nll": 8.0},
        {"lr": 1e-3, "status": "completed", "valid_nll": 8.0, "test_nll": 9.0, "train_nll": 9.9},
        {"lr": 1e-2, "status": "early_stopped", "valid_nll": 8.5, "test_nll": 7.0, "train_nll": 5.0},
        {"lr": 3e-2, "status": "diverged", "valid_nll": 1.0, "test_nll": 1.0, "train_nll": 1.0},
        {"lr": 5e-2, "status": "failed", "valid_nll": None, "test_nll": None},
    ]
    assert G.select_lr(results)["lr"] == 1e-3
    # and moving the test numbers around changes nothing
    for r in results:
        if r["test_nll"] is not None:
            r["test_nll"] = -r["test_nll"]
    assert G.select_lr(results)["lr"] == 1e-3
    assert G.select_lr([{"lr": 1e-3, "status": "diverged", "valid_nll": 1.0}]) is None
    assert G.select_lr([{"lr": 1e-3, "status": "completed", "valid_nll": float("nan")}]) is None
    # ties: the smaller learning rate
    assert G.select_lr([{"lr": 2e-3, "status": "completed", "valid_nll": 5.0},
                        {"lr": 1e-3, "status": "completed", "valid_nll": 5.0}])["lr"] == 1e-3


def test_lr_candidates_reproducible_and_in_range():
    a = G.lr_candidates(10, -12, -6, "2", seed=0)
    assert a == G.lr_candidates(10, -12, -6, "2", seed=0)
    assert a != G.lr_candidates(10, -12, -6, "2", seed=1)
    assert a == sorted(a) and len(a) == 10
    assert all(2.0 ** -12 * 0.999 <= x <= 2.0 ** -6 * 1.001 for x in a)
    e = G.lr_candidates(10, -12, -6, "e", seed=0)
    assert all(math.exp(-12) * 0.999 <= x <= math.exp(-6) * 1.001 for x in e)
    with pytest.raises(ValueError):
        G.lr_candidates(3, base="3")
    # stratified: one draw in each of n equal slices of the exponent range
    st = G.lr_candidates(4, -12, -6, "2", seed=3, draw="stratified")
    assert st == G.lr_candidates(4, -12, -6, "2", seed=3, draw="stratified")
    for i, x in enumerate(st):
        assert -12 + 1.5 * i - 1e-3 <= math.log2(x) <= -12 + 1.5 * (i + 1) + 1e-3


def test_budgets_and_run_ids():
    s = G.budget_config("smoke", seeds=3, train={"epochs": 1})
    assert s.seeds == 3 and s.train["epochs"] == 1 and s.train["limit_sequences"] == 8
    assert s.seed_list() == [0, 1, 2]
    assert G.StudyConfig(seeds=3, search_seed=5).seed_list() == [5, 0, 1]
    paper = G.budget_config("paper")
    assert paper.lr_candidates == 10 and paper.seeds >= 5 and paper.train["epochs"] == 500
    with pytest.raises(ValueError):
        G.budget_config("huge")
    with pytest.raises(ValueError):
        G.StudyConfig(train={"lr": 1e-3})  # the lr is the grid's, not a shared field
    q = G.budget_config("speech")
    assert "limit_sequences" not in q.train_fields("fsdd-a") and "limit_sequences" not in q.train_fields("jsb")
    assert q.train_fields("fsdd-b")["limit_sequences"] == 320 and q.train_fields("fsdd-b")["subset"] == "spread"
    assert q.train_fields("fsdd-b")["tbptt"] == 100 and "tbptt" not in q.train_fields("fsdd-a")
    assert G.budget_config("speech", train={"epochs": 3}).train_fields("fsdd-b")["epochs"] == 3  # flag wins
    assert G.budget_config("speech", train={"tbptt": None}).train_fields("fsdd-b").get("tbptt") is None  # --tbptt 0
    g = G.Grid(s, datasets=["jsb"])
    sp = g.search_specs("jsb", "gru")
    assert len(sp) == 2 and len({x.run_id for x in sp}) == 2
    # seed 0 of the selected lr IS the search run (same id: reused, not retrained)
    assert g.seed_specs("jsb", "gru", sp[1].lr)[0].run_id == sp[1].run_id
    # the id ignores where the data lives and the device
    s2 = G.budget_config("smoke", seeds=3, train={"epochs": 1}, data_dir="/elsewhere")
    assert G.Grid(s2, datasets=["jsb"]).search_specs("jsb", "gru")[0].run_id == sp[0].run_id
    assert g.n_runs() == 3 * (2 + 3 - 1)


def test_run_ids_of_the_command_line_are_those_of_the_finished_studies():
    """The run ids (and study key) `gatedrnn reproduce` works on, through the CLI's own parser: pinned to
    what they were when results/paper, results/speech and results/ablation were computed, so finished runs
    keep their ids however the flags and grid.TRAIN_FIELDS are produced (and TrainConfig gains fields:
    grid.ID_DEFAULTS)."""
    import hashlib

    from gatedrnn.cli import build_parser
    from gatedrnn.cli.study import study_from_args
    for args, first, digest, key in [
            (["--budget", "paper", "--datasets", "jsb", "--report-seeds", "include-search"],
             "jsb-tanh-lr0.0002615-s0-749909aadc98", "d23b083895d90e6a",
             "a8b2c8343d62"),
            # the speech study of 2026-12-02 (30 epochs, full search, the search seed reported): its flags today
            (["--budget", "speech", "--epochs", "30", "--search", "full", "--report-seeds", "include-search"],
             "fsdd-a-tanh-lr0.0002265-s0-25724302973b", "7ef9252eeca3cdbb", "8ae04eeeff7f"),
            (["--budget", "ablation"], "jsb-lstm-lr0.00272-s0-bf62fe035454", "6ab5f7ffde2c12ed", "2938270ab63a")]:
        study = study_from_args(build_parser().parse_args(["reproduce", *args]))
        g = G.Grid(study)
        ids = [s.run_id for d, u in g.cells()
               for s in [*g.search_specs(d, u), *g.seed_specs(d, u, g.lrs[0])]]
        assert ids[0] == first and study.key() == key
        assert hashlib.sha256(" ".join(ids).encode()).hexdigest()[:16] == digest
    # the speech budget since 2026-12-03 (500-epoch cap, halving at 10/20, fresh seeds): its search runs of the
    # selected rates are results/speech-epochs-probe's runs (same configs, same ids), so that probe is reused
    sp = G.Grid(study_from_args(build_parser().parse_args(["reproduce", "--budget", "speech"])))
    assert sp.study.key() == "3dbb2e79fdfe" and sp.rungs("fsdd-b") == [10, 20]
    assert {s.lr: s.run_id for s in sp.search_specs("fsdd-b", "lstm")}[0.00228] \
        == "fsdd-b-lstm-lr0.00228-s0-cc86c10da449"
    assert [s.seed for s in sp.seed_specs("fsdd-a", "gru", 0.00228)] == [1, 2, 3]
    # the paper budget now reports fresh seeds 1..5: the same runs for seeds 1..4, one more (seed 5)
    old = study_from_args(build_parser().parse_args(["reproduce", "--budget", "paper", "--report-seeds",
                                                     "include-search"]))
    new = study_from_args(build_parser().parse_args(["reproduce", "--budget", "paper"]))
    assert old.seed_list() == [0, 1, 2, 3, 4] and new.seed_list() == [1, 2, 3, 4, 5]
    go, gn = G.Grid(old), G.Grid(new)
    so, sn = go.seed_specs("jsb", "gru", go.lrs[3]), gn.seed_specs("jsb", "gru", gn.lrs[3])
    assert [s.run_id for s in so[1:]] == [s.run_id for s in sn[:4]] and sn[4].seed == 5
    assert so[0].run_id == go.search_specs("jsb", "gru")[3].run_id       # include-search: seed 0 IS the search run
    assert all(s.run_id not in {x.run_id for x in gn.search_specs("jsb", "gru")} for s in sn)
    assert gn.n_runs() == len(gn.cells()) * (10 + 5) and go.n_runs() == len(go.cells()) * (10 + 4)
    # every TrainConfig field but the grid's axes, the data folder and the architecture is a study's to set
    assert {"epochs", "optimizer", "tbptt", "skip_nonfinite", "width", "device"} <= set(G.TRAIN_FIELDS)
    assert not {"dataset", "unit", "lr", "seed", "data_dir", "hidden_size"} & set(G.TRAIN_FIELDS)


def test_unknown_dataset_is_an_error_and_a_repeated_one_a_note():
    from gatedrnn.data import DataError
    with pytest.raises(DataError, match="unknown dataset 'no-such-set'.*valid names: jsb"):
        G.available_datasets(["jsb", "no-such-set"])
    ok, notes = G.available_datasets(["jsb", "nottingham", "JSB_Chorales"])
    assert ok == ["jsb", "nottingham"] and len(notes) == 1 and "JSB_Chorales" in notes[0]


# ---------------------------------------------------------------------------------- baselines
def test_music_baselines_hand_case():
    # one pitch, train frames 1,1,0,1 (inputs = previous frames 0,1,1,0)
    roll = np.array([[1], [1], [0], [1]], dtype=np.uint8)
    x = np.vstack([np.zeros((1, 1), np.uint8), roll[:-1]])
    b = music_baselines({"train": [(x, roll)]})
    p = (3 + 1) / (4 + 2)                                   # add-one smoothed frequency
    want = -(3 * math.log(p) + math.log(1 - p)) / 4
    assert b["marginal"]["train"] == pytest.approx(want)
    # transitions: on→(on, off) once each; off→on twice. ε = (1+1)/(2+2); ε' = P(on | off) = (2+1)/(2+2)
    eps, eps2 = 0.5, 0.75
    assert b["_params"] == {"repeat_eps_off": pytest.approx(eps), "repeat_eps_on": pytest.approx(eps2)}
    want_r = -(math.log(eps2) + math.log(1 - eps) + math.log(eps) + math.log(eps2)) / 4
    assert b["repeat"]["train"] == pytest.approx(want_r)


def test_speech_baseline_gaussian():
    rng = np.random.default_rng(0)
    y = rng.normal(2.0, 3.0, size=(20000, 2))
    b = speech_baselines({"train": [(y, y)]})
    assert b["gaussian"]["train"] == pytest.approx(2 * (0.5 * math.log(2 * math.pi * 9) + 0.5), rel=1e-2)


# -------------------------------------------------------------------------------------- store
def _spec(run_id="r1"):
    return {"run_id": run_id, "dataset": "jsb", "unit": "gru", "lr": 1e-3, "seed": 0, "config": {"x": 1}}


def test_store_claims_are_exclusive_and_dead_owners_are_taken_over(tmp_path):
    st = Store(tmp_path)
    a, b = new_owner(), new_owner()
    assert st.claim(_spec(), a) == "claimed"
    assert st.claim(_spec(), b) == "busy"                 # a live owner (this pid) holds it
    st.finish({"run_id": "r1", "status": "completed", "train_nll": 1.0, "valid_nll": 2.0, "test_nll": 3.0,
               "history": [{"epoch": 0}], "data_files": {"f": "abc"}, "environment": {"torch": "x"}})
    assert st.claim(_spec(), b) == "done"                 # finished: never run again
    row = st.get("r1")
    assert row["history"] == [{"epoch": 0}] and row["data_files"] == {"f": "abc"} and row["attempts"] == 1
    # an owner whose process is gone (same host, dead pid) loses the run
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    host = a.split(":")[0]
    assert st.claim(_spec("r2"), f"{host}:{dead}:zz") == "claimed"
    assert st.claim(_spec("r2"), b) == "claimed"
    assert st.get("r2")["attempts"] == 2
    # another host: alive while its heartbeat is fresh
    assert st.claim(_spec("r3"), "otherhost:1:zz") == "claimed"
    assert st.claim(_spec("r3"), b) == "busy"
    st.db.execute("UPDATE runs SET heartbeat = heartbeat - 1e6 WHERE run_id = 'r3'")
    assert st.claim(_spec("r3"), b) == "claimed"
    assert st.release(b) == 2 and st.get("r3")["status"] == "pending"
    assert st.check() == []
    st.close()


# ------------------------------------------------------------------------ driver, fake executor
class FakeExecutor:
    """Returns fabricated summaries: valid NLL = |log10 lr + 3| + seed/100 (best lr nearest 1e-3);
    the largest lr diverges; test NLL is lowest for the SMALLEST lr (must not matter)."""
    name, capacity = "fake", 3

    def __init__(self):
        self.submitted = []

    def submit(self, task):
        self.submitted.append(task["run_id"])
        cfg = task["config"]
        lr, seed = cfg["lr"], cfg["seed"]
        v = abs(math.log10(lr) + 3) + seed / 100
        status = "diverged" if lr > 0.01 else "completed"
        s = {"run_id": task["run_id"], "status": status, "train_nll": v - 0.5, "valid_nll": v,
             "test_nll": lr * 100 + seed / 100, "epochs": 3, "best_epoch": 2, "train_seconds": 1.0,
             "hidden_size": 46, "history": [{"epoch": e, "seconds": e * 1.0, "train_nll": 10 - e + v,
                                              "valid_nll": 11 - e + v} for e in range(4)],
             "data_files": {}, "environment": {}}
        f = cf.Future()
        f.set_result(s)
        return f

    @staticmethod
    def wait(futures, timeout):
        return {f for f in futures if f.done()}

    def shutdown(self, cancel=False):
        pass

    def describe(self):
        return "fake"


def test_driver_selects_on_validation_records_divergence_and_never_repeats(tmp_path):
    from gatedrnn.study.tables import collect
    from gatedrnn.study.runner import run_study
    study = G.StudyConfig(datasets=["jsb"], units=["gru", "lstm"], lr_candidates=6, seeds=3,
                          lr_low=-12, lr_high=-6, lr_base="2", train={"epochs": 3})
    ex = FakeExecutor()
    res = run_study(study, tmp_path, executor=ex, progress=False, log=lambda m: None, build_report=False,
                    poll_seconds=0.01)
    grid = G.Grid(study, datasets=["jsb"])
    assert res["runs"] == grid.n_runs() == len(ex.submitted) == len(set(ex.submitted))
    data = collect(tmp_path)
    for c in data["cells"]:
        ok = [s for s in c["search"] if s["lr"] <= 0.01]
        assert c["selected_lr"] == min(ok, key=lambda s: abs(math.log10(s["lr"]) + 3))["lr"]
        assert [s["seed"] for s in c["seeds"]] == [0, 1, 2]
    assert any(s["status"] == "diverged" for c in data["cells"] for s in c["search"])
    # a second invocation finds everything done and trains nothing
    ex2 = FakeExecutor()
    res2 = run_study(study, tmp_path, executor=ex2, progress=False, log=lambda m: None, build_report=False,
                     poll_seconds=0.01)
    assert ex2.submitted == [] and res2["ran_here"] == 0


@pytest.mark.parametrize("low, high, added, edge", [(-16, -13, 2, True), (-13, -9, 1, False)])
def test_edge_extension_adds_candidates_beyond_a_selected_edge(tmp_path, low, high, added, edge):
    # FakeExecutor: the best rate is the one nearest 1e-3. Drawn in 2^-16..2^-13 every candidate is too
    # small, so the largest wins; one candidate is added a stratum above, wins again, a second is added
    # (the limit, lr_extend=2) and wins: still an edge, and the table says so. Drawn in 2^-13..2^-9 the
    # largest (~1e-3) wins, the one added above it is worse: the selection is interior, the search done.
    from gatedrnn.study.runner import run_study
    from gatedrnn.study.tables import collect, edge_selections
    study = G.StudyConfig(datasets=["jsb"], units=["gru"], lr_candidates=3, lr_draw="stratified", seeds=2,
                          lr_low=low, lr_high=high, lr_extend=2, train={"epochs": 3})
    ex = FakeExecutor()
    res = run_study(study, tmp_path, executor=ex, progress=False, log=lambda m: None, build_report=False,
                    poll_seconds=0.01)
    grid = G.Grid(study, datasets=["jsb"])
    assert len(ex.submitted) == len(set(ex.submitted)) == res["runs"] == 3 + added + 1
    data = collect(tmp_path)
    (cell,) = data["cells"]
    lrs = [x["lr"] for x in cell["search"]]
    assert lrs == sorted(lrs) and lrs[:3] == grid.lrs and len(lrs) == 3 + added
    w = (high - low) / 3
    for k, lr in enumerate(lrs[3:], start=1):    # the k-th extension lies in the k-th stratum above
        assert 2.0 ** (high + (k - 1) * w) * 0.9999 <= lr <= 2.0 ** (high + k * w) * 1.0001
        assert lr == G.extension_lr(study, "high", k)
    best = min(lrs, key=lambda lr: abs(math.log10(lr) + 3))
    assert cell["selected_lr"] == best and (best == lrs[-1]) == edge
    assert (edge_selections(data) == ["JSB Chorales/GRU"]) == edge
    assert [x["seed"] for x in cell["seeds"]] == [0, 1] and all(x["lr"] == best for x in cell["seeds"])
    from gatedrnn.study.report import _extension_html
    assert _extension_html(data).endswith("JSB Chorales/GRU: " + ", ".join(f"{lr:.3g}" for lr in lrs[3:]))
    # the candidates are a function of the outcomes: a second invocation trains nothing
    ex2 = FakeExecutor()
    run_study(study, tmp_path, executor=ex2, progress=False, log=lambda m: None, build_report=False,
              poll_seconds=0.01)
    assert ex2.submitted == []
    # below the range the same way (mirror: the smallest wins when every candidate is too large)
    assert G.extension_lr(study, "low", 1) < 2.0 ** low <= G.extension_lr(study, "low", 1) * 2.0 ** w * 1.0001
    with pytest.raises(ValueError, match="lr_extend"):
        G.StudyConfig(lr_extend=1, search="halving")
    assert G.budget_config("quick", search="halving").lr_extend == 0


def test_cli_dry_run_and_clear_errors(tmp_path):
    env = {**os.environ, "GATEDRNN_DATA_DIR": os.environ.get("GATEDRNN_DATA_DIR", "")}
    r = subprocess.run([sys.executable, "-m", "gatedrnn.cli", "reproduce", "--budget", "paper", "--dry-run",
                        "--datasets", "jsb"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert len(d["lr_candidates"]) == 10 and d["runs"] == 3 * (10 + 5)     # fresh seeds 1..5
    r = subprocess.run([sys.executable, "-m", "gatedrnn.cli", "status", str(tmp_path / "nothing")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no results store" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "gatedrnn.cli", "reproduce", "--datasets", "nope",
                        "--out", str(tmp_path / "x"), "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown dataset 'nope'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "gatedrnn.cli", "reproduce", "--budget", "smoke", "--lr-extend", "1",
                        "--search", "halving", "--dry-run"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "lr_extend" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "gatedrnn.cli", "reproduce", "--budget", "smoke", "--lr-extend", "1",
                        "--dry-run"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["study"]["lr_extend"] == 1


# ------------------------------------------------------------------- run_one: failures and retries
def _tiny_task(tmp_path, data_dir, monkeypatch):
    import torch
    # run_one sets the thread count (torch and, when unset, OMP/MKL env): keep this process's as they are
    for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(v, os.environ.get(v, str(torch.get_num_threads())))
    study = G.StudyConfig(datasets=["jsb"], units=["tanh"], lr_candidates=1, seeds=1, data_dir=str(data_dir),
                          train=dict(epochs=1, patience=1, limit_sequences=4, crop_length=16, batch_size=2))
    spec = G.Grid(study, datasets=["jsb"]).search_specs("jsb", "tanh")[0]
    return {"run_id": spec.run_id, "config": spec.config, "runs_root": str(tmp_path / "runs"),
            "threads": torch.get_num_threads()}


def test_run_one_turns_an_exception_into_a_failed_summary(tmp_path, monkeypatch):
    from gatedrnn.study.executor import run_one
    monkeypatch.setenv("GATEDRNN_OFFLINE", "1")                  # an empty data folder: never download
    (tmp_path / "empty").mkdir()
    s = run_one(_tiny_task(tmp_path, tmp_path / "empty", monkeypatch))
    assert s["status"] == "failed" and s["error"].startswith("DataNotFoundError: ")
    assert "Traceback" in s["traceback"] and s["run_id"] and s["pid"] == os.getpid()
    assert "valid_nll" not in s


def test_run_failed_for_a_wrong_data_dir_succeeds_when_retried_with_the_right_one(tmp_path, monkeypatch):
    from _paths import data_dir
    from gatedrnn.study.executor import run_one
    monkeypatch.setenv("GATEDRNN_OFFLINE", "1")
    (tmp_path / "empty").mkdir()
    first = run_one(_tiny_task(tmp_path, tmp_path / "empty", monkeypatch))
    assert first["status"] == "failed" and "DataNotFoundError" in first["error"]
    second = run_one(_tiny_task(tmp_path, data_dir(), monkeypatch))          # same run id: data_dir is not part of it
    assert second["status"] in G.OK_STATUSES, second.get("error")


def test_store_opened_by_many_at_once_never_reports_locked(tmp_path):
    """Two `reproduce` invocations starting together both open (and create) the store; switching a new
    store to WAL takes an exclusive lock and SQLite answers 'database is locked' without waiting.
    Before the retry, 8 threads opening a fresh store at once failed in ~6 % of trials."""
    import threading
    errors: list[BaseException] = []
    for trial in range(100):
        path = tmp_path / f"s{trial}"
        barrier = threading.Barrier(8)

        def opener():
            barrier.wait()
            try:
                Store(path).close()
            except BaseException as e:  # noqa: BLE001 — collected and asserted below
                errors.append(e)
        threads = [threading.Thread(target=opener) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
