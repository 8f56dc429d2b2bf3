"""Successive halving (`gatedrnn reproduce --search halving`): the decision function on fabricated histories
with hand-known answers, a real tiny halving study from the CLI (the candidate set shrinks rung by rung,
the usual outputs, decisions equal to the replay of benchmarks/halving_agreement.py), a halted run continued
by a later full study to bit-identical numbers, and the unchanged key of every full-search study."""
from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest

from _paths import REPO, data_dir
from gatedrnn.study import grid as G
from gatedrnn.study.store import Store

INF = math.inf


def _hist(valids, diverged_at=None):
    """History rows: epoch e has valid_nll valids[e] (epoch 0 = the untrained model)."""
    rows = [{"epoch": e, "valid_nll": v, "seconds": float(e), "eval_seconds": 0.0} for e, v in enumerate(valids)]
    if diverged_at is not None:
        rows.append({"epoch": diverged_at, "diverged": True})
    return rows


def _row(valids, status="completed", valid=None, diverged_at=None):
    h = _hist(valids, diverged_at)
    return {"status": status, "epochs": int(h[-1]["epoch"]), "history": h,
            "valid_nll": min(valids) if valid is None else valid}


def _halt(row, at):
    """The same run as a halving study sees it when halted at epoch `at` (history cut there)."""
    h = [r for r in row["history"] if r["epoch"] <= at]
    return {"status": "halted", "epochs": at, "history": h, "valid_nll": min(r["valid_nll"] for r in h)}


# ------------------------------------------------------------------------------ the decision, by hand
def test_halving_decide_hand_case():
    lrs = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3]
    full = [
        _row([10, 9.9, 9.8, 9.0, 8.0, 7.0, 6.0]),            # 1e-4: slow starter, best in the end: cut at rung 2
        _row([10, 9.0, 8.5, 8.4, 8.3, 8.2, 8.1]),            # 2e-4: score 8.5 at rung 2, 8.3 at rung 4
        _row([10, 8.8, 8.9], status="early_stopped"),       # 5e-4: stopped at epoch 2, best 8.8: competes on
        _row([10, 8.0, 7.5, 7.4, 7.3, 7.2, 7.1]),            # 1e-3: the best at each rung
        _row([10, 7.0], status="diverged", diverged_at=2),   # 2e-3: diverged in epoch 2: the worst
        _row([10, 8.5, 8.6, 8.7, 8.8, 8.9, 9.0]),            # 5e-3: 8.5 at rung 2, ties 2e-4: the smaller lr wins
    ]
    d = G.halving_decide(full, lrs, [2, 4], eta=2)
    assert d["done"]
    # rung 2: scores 9.8, 8.5, 8.8, 7.5, inf, 8.5 → keep ceil(6/2)=3: 1e-3 (7.5), 2e-4 (8.5, tie won), 5e-3 (8.5)
    assert d["trace"][0]["kept"] == [2e-4, 1e-3, 5e-3] and d["trace"][0]["scores"][2e-3] == INF
    # rung 4: 7.3 (1e-3), 8.3 (2e-4), 8.5 (5e-3: best stays its epoch 1) → keep 2
    assert d["trace"][1]["kept"] == [2e-4, 1e-3] and d["trace"][1]["cut"] == [5e-3]
    # the two finalists train to the end; validation NLL decides: 1e-3 (7.1) — although 1e-4 ends at 6.0
    assert d["finalists"] == [2e-4, 1e-3] and d["selected"]["lr"] == 1e-3
    assert G.select_lr([{**r, "lr": lr} for r, lr in zip(full, lrs)])["lr"] == 1e-4   # the full search
    assert d["trained_to"] == {0: 2, 1: None, 2: 2, 3: None, 4: 2, 5: 4}

    # incremental, as the driver calls it: nothing known → every candidate to rung 2
    assert G.halving_decide([None] * 6, lrs, [2, 4])["need"] == [(i, 2) for i in range(6)]
    # halted at rung 2 (finished ones as they are) → the kept three to rung 4
    at2 = [_halt(full[0], 2), _halt(full[1], 2), full[2], _halt(full[3], 2), full[4], _halt(full[5], 2)]
    d2 = G.halving_decide(at2, lrs, [2, 4])
    assert not d2["done"] and d2["need"] == [(1, 4), (3, 4), (5, 4)]
    # halted at rung 4 → the finalists to the end
    at4 = [at2[0], _halt(full[1], 4), full[2], _halt(full[3], 4), full[4], _halt(full[5], 4)]
    assert G.halving_decide(at4, lrs, [2, 4])["need"] == [(1, None), (3, None)]
    # runs trained further than a rung (a shared directory) give the same decisions: only epochs <= rung count
    assert G.halving_decide(full, lrs, [2, 4])["trace"] == \
        G.halving_decide([*full[:5], _halt(full[5], 4)], lrs, [2, 4])["trace"]
    # every finalist diverges after the last rung: the next in line of the last rung trains to the end
    late = [full[0], _row([10, 8.0, 7.5, 7.4, 7.3], status="diverged", diverged_at=5), full[2],
            _row([10, 8.0, 7.5, 7.4, 7.3], status="diverged", diverged_at=5), full[4], full[5]]
    d3 = G.halving_decide(late, lrs, [2, 4])
    assert d3["done"] and d3["selected"]["lr"] == 5e-3 and d3["trained_to"][5] is None
    # no rung before the end: the full search
    assert G.halving_decide(full, lrs, [])["selected"]["lr"] == 1e-4


def test_rungs_and_unchanged_keys():
    # the keys every budget's (full-search) study had before halving existed (quick: since its redefinition
    # of 2026-12, 6 candidates over 2^-10..2^-5 with edge extension, 250 epochs; before 2026-12-02 its top was
    # 2^-6 without extension, key 8c447632fa48)
    assert {b: G.budget_config(b).key() for b in ("smoke", "quick")} == {
        "smoke": "a122650ce176", "quick": "db24d85beed0"}
    # laptop (make reproduce) was redefined 2026-12-03 as quick's protocol on JSB with fresh seeds: its search
    # runs are quick's JSB runs
    lap, quick = G.Grid(G.budget_config("laptop")), G.Grid(G.budget_config("quick"))
    assert [s.run_id for s in lap.search_specs("jsb", "gru")] == [s.run_id for s in quick.search_specs("jsb", "gru")]
    # the paper budget reports fresh seeds since 2026-12-03 (report_seeds): with the old rule, its old key
    old = dict(report_seeds="include-search")
    assert G.budget_config("paper", **old).key() == "9b435d0c1d59"
    assert G.budget_config("paper", **old, halving_rungs=[3], halving_eta=3).key() == "9b435d0c1d59"  # unused by full
    h = G.budget_config("paper", search="halving")
    assert h.key() != G.budget_config("paper").key() and \
        h.key() != G.budget_config("paper", search="halving", halving_eta=3).key()
    assert h.rungs(500) == [150, 300] and h.rungs(40) == [12, 24] and h.rungs(2) == [1]
    assert h.halving_fractions == [0.3, 0.6] and G.budget_config("paper", **old, halving_fractions=[0.5]).key() == \
        "9b435d0c1d59"
    # the default fractions are part of a halving study's config (and key): a later change of the default
    # does not silently change the rungs of a study that has run
    assert "halving_fractions" in h.model_dump() and h.key() != h.model_copy(update={"halving_fractions": [0.5]}).key()
    assert G.budget_config("paper").rungs(500) == []
    # a halving study records the training split's curve every 10th epoch unless told otherwise; the
    # full search every epoch; neither changes the key or the run ids (below)
    assert h.train["eval_train_every"] == G.HALVING_EVAL_TRAIN_EVERY == 10
    assert G.budget_config("paper", search="halving", train={"eval_train_every": 1}).train["eval_train_every"] == 1
    assert "eval_train_every" not in G.budget_config("paper").train
    assert G.budget_config("paper", search="halving", halving_rungs=[50, 10, 600]).rungs(500) == [10, 50]
    with pytest.raises(ValueError):
        G.StudyConfig(search="halving", halving_rungs=[0])
    # the run ids do not depend on the search: a halted run is the full search's run
    full_g, halv_g = G.Grid(G.budget_config("paper"), ["jsb"]), G.Grid(h, ["jsb"])
    assert [s.run_id for s in full_g.search_specs("jsb", "gru")] == [s.run_id for s in halv_g.search_specs("jsb", "gru")]


# ------------------------------------------------------------------------------ a real tiny study
TINY = ["--budget", "smoke", "--datasets", "jsb", "--units", "gru", "--lr-candidates", "4", "--seeds", "2",
        "--epochs", "6", "--patience", "6", "--halving-rungs", "2,4", "--jobs", "0", "--no-progress"]


def _agreement():
    spec = importlib.util.spec_from_file_location("halving_agreement", REPO / "benchmarks" / "halving_agreement.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def halving_dir(tmp_path_factory, monkeypatch_module):
    from gatedrnn.cli import main
    d = tmp_path_factory.mktemp("halving")
    assert main(["reproduce", *TINY, "--search", "halving", "--out", str(d)]) == 0
    return d


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    mp.setenv("GATEDRNN_DATA_DIR", str(data_dir()))
    yield mp
    mp.undo()


def _study(search: str):
    return G.budget_config("smoke", datasets=["jsb"], units=["gru"], lr_candidates=4, seeds=2, search=search,
                           halving_rungs=[2, 4], train={"epochs": 6, "patience": 6})


def test_cli_halving_study_shrinks_and_writes_the_outputs(halving_dir):
    d = halving_dir
    for name in ("table1.md", "table2.md", "table2.csv", "lr_search.csv", "report.html", "curves_epochs.png"):
        assert (d / name).exists(), name
    with Store(d, create=False) as st:
        rows = st.all()
        meta = st.get_meta("halving")["jsb/gru"]
        study = G.StudyConfig(**st.get_meta("study"))
        assert st.check() == []
    assert study.search == "halving" and study.key() == _study("halving").key()
    search = sorted((r for r in rows if r["seed"] == 0), key=lambda r: r["lr"])
    assert len(search) == 4
    # 4 candidates → 2 after epoch 2 → 1 after epoch 4 → the survivor trains to the end (epoch 6)
    assert [len(t["kept"]) + len(t["cut"]) for t in meta["trace"]] == [4, 2]
    assert [len(t["kept"]) for t in meta["trace"]] == [2, 1]
    sel = meta["selected_lr"]
    assert meta["trace"][1]["kept"] == [sel]
    # the training split evaluated before training only (every 10th epoch; 6 epochs), the validation every epoch
    for r in search:
        assert [h["epoch"] for h in r["history"] if "train_nll" in h] == [0]
        assert [h["epoch"] for h in r["history"] if "valid_nll" in h] == list(range(r["epochs"] + 1))
    by_lr = {r["lr"]: r for r in search}
    for lr in meta["trace"][0]["cut"]:
        assert by_lr[lr]["status"] == "halted" and by_lr[lr]["epochs"] == 2
    for lr in meta["trace"][1]["cut"]:
        assert by_lr[lr]["status"] == "halted" and by_lr[lr]["epochs"] == 4
    assert by_lr[sel]["status"] in G.OK_STATUSES and by_lr[sel]["epochs"] == 6
    # the better half by the best validation NLL up to the rung (store histories)
    scores = {lr: G.rung_score(r["history"], 2) for lr, r in by_lr.items()}
    assert meta["trace"][0]["kept"] == sorted(sorted(scores, key=lambda lr: (scores[lr], lr))[:2])
    # seeds of the survivor: seed 0 is the search run itself, seed 1 ran to the end
    seeds = sorted((r for r in rows if r["lr"] == sel), key=lambda r: r["seed"])
    assert [r["seed"] for r in seeds] == [0, 1] and all(r["status"] in G.OK_STATUSES for r in seeds)
    # the selection the tables get from the store (grid.search_outcome) is the driver's
    g = G.Grid(study, ["jsb"])
    specs = g.search_specs("jsb", "gru")
    done, chosen = G.search_outcome(study, [by_lr[s.lr] for s in specs], [s.lr for s in specs], 6)
    assert done and chosen["lr"] == sel
    lr_csv = (d / "lr_search.csv").read_text()
    assert lr_csv.count("halted") == 3
    # the measured cost counts the cut candidates' epochs too (halted: no result.json)
    spec = importlib.util.spec_from_file_location("study_hours", REPO / "benchmarks" / "study_hours.py")
    hours = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hours)
    (cell,) = hours.study_hours(d)
    assert (cell["runs"], cell["epochs"], cell["status"].get("halted")) == (5, 2 + 2 + 4 + 6 + 6, 3)
    # the replay used for the agreement measurement makes the recorded decisions from the run directories
    cmp = _agreement().compare_study(d)
    assert len(cmp) == 1 and cmp[0]["own_agrees"] and cmp[0]["replay_own_lr"] == sel


def test_a_committed_halving_study_rebuilds_without_weights_and_trains_nothing(halving_dir, tmp_path):
    # what the repository keeps of a study: no store, no checkpoints, no weights — its cut candidates
    # keep paused.json (the pause) and metrics.jsonl; reproducing it again trains no epoch and decides
    # the same
    from gatedrnn.study.runner import run_study
    copy = tmp_path / "committed"
    shutil.copytree(halving_dir, copy)
    for p in [*copy.rglob("*.pt"), *copy.glob("store.sqlite*")]:
        p.unlink()
    halted = [d for d in (copy / "runs").iterdir() if not (d / "result.json").exists()]
    assert len(halted) == 3 and all((d / "paused.json").exists() for d in halted)
    logs = {d.name: (d / "train.log").read_text() for d in (copy / "runs").iterdir()}
    run_study(_study("halving"), copy, jobs=0, progress=False, log=lambda m: None, build_report=False,
              poll_seconds=0.01)
    for d in (copy / "runs").iterdir():
        new = (d / "train.log").read_text()[len(logs[d.name]):]
        assert not any(f"epoch {e}/6 " in new for e in range(1, 7)) and "resuming" not in new, new
    with Store(halving_dir, create=False) as a, Store(copy, create=False) as b:
        assert b.get_meta("halving") == a.get_meta("halving")
        assert sorted((r["run_id"], r["status"], r["epochs"], r["valid_nll"]) for r in b.all()) == \
            sorted((r["run_id"], r["status"], r["epochs"], r["valid_nll"]) for r in a.all())


def test_halted_runs_are_continued_by_a_full_study_bit_identically(halving_dir, tmp_path):
    from gatedrnn.study.runner import run_study
    shared = tmp_path / "shared"
    shutil.copytree(halving_dir, shared)
    fresh = tmp_path / "fresh"
    kw = dict(jobs=0, progress=False, log=lambda m: None, build_report=False, poll_seconds=0.01)
    run_study(_study("full"), shared, **kw)       # continues the halted runs
    run_study(_study("full"), fresh, **kw)        # the uninterrupted reference
    g = G.Grid(_study("full"), ["jsb"])
    specs = g.search_specs("jsb", "gru")
    for s in specs:
        a = json.loads((shared / "runs" / s.run_id / "result.json").read_text())
        b = json.loads((fresh / "runs" / s.run_id / "result.json").read_text())
        for k in ("train_nll", "valid_nll", "test_nll", "epochs", "best_epoch", "updates"):
            assert a[k] == b[k], (s.lr, k)
    with Store(halving_dir, create=False) as st:
        cut = {lr: t["rung"] for t in st.get_meta("halving")["jsb/gru"]["trace"] for lr in t["cut"]}
    for s in specs:
        log = (shared / "runs" / s.run_id / "train.log").read_text()
        # continued from its rung, not retrained: every epoch trained once over the two studies
        assert [log.count(f"epoch {e}/6 ") for e in range(1, 7)] == [1] * 6, log
        if s.lr in cut:
            assert f"end: paused at epoch {cut[s.lr]} (halving rung {cut[s.lr]})" in log
    with Store(shared, create=False) as st:
        assert all(r["status"] in G.OK_STATUSES for r in st.all())
    # the replay of halving on the full study's histories = what the halving study decided
    mod = _agreement()
    cmp = mod.compare_study(halving_dir, fresh)
    assert cmp[0]["full_agrees"] and cmp[0]["history_epochs_identical"] == cmp[0]["history_epochs_compared"] > 0
    rows, notes = mod.replay(fresh, rungs=[2, 4])
    assert notes == [] and rows[0]["halving"]["lr"] == cmp[0]["recorded_lr"]
    assert rows[0]["halving"]["search_epochs"] == 2 + 2 + 4 + 6 and rows[0]["full"]["search_epochs"] == 4 * 6


def test_tables_show_the_halving_selection(halving_dir):
    from gatedrnn.study.tables import collect
    with Store(halving_dir, create=False) as st:
        sel = st.get_meta("halving")["jsb/gru"]["selected_lr"]
    cell = collect(halving_dir)["cells"][0]
    if cell["selected_lr"] is None:
        pytest.skip("tables.collect does not use grid.search_outcome yet: Table 2 of a halving study stays empty")
    assert cell["selected_lr"] == sel and [s["status"] for s in cell["seeds"]] == ["completed"] * 2
    assert f"{sel:.4g}" in (halving_dir / "table2.md").read_text()
