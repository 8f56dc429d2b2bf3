"""The study's summary and significance tables (study/tables.py + stats.py) from a FABRICATED results
store with hand-known answers: the selected learning rate's seed runs only, diverged/failed seeds counted
but left out of every mean, mean ± Student-t CI, best vs runner-up per dataset paired by seed, and
Holm–Bonferroni across datasets. Expectations are computed here with scipy (ttest_rel, t.interval) and
Holm by hand — never with gatedrnn.study.stats."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from scipy import stats as sst

from gatedrnn.study import grid as G
from gatedrnn.study.report import build_report
from gatedrnn.study.store import Store
from gatedrnn.study.tables import collect, significance_rows, stopping_summary, table2_markdown, table2_rows
from _fabricate import DIV, FAIL, FabricatedStore, summary as _summary

DATASETS = ["jsb", "nottingham", "musedata", "piano"]
UNITS = ["tanh", "gru", "lstm"]

# Test NLL of the seed runs (seeds 0..3) of each cell's SELECTED learning rate. DIV/FAIL mark a seed that
# diverged / failed. Per dataset: best, runner-up and worst unit are all different, so picking the worst
# unit as the runner-up changes the table.
TEST_NLL = {
    # best gru (8.55), runner-up lstm (8.8625), worst tanh (9.25): paired p ≈ 0.00097
    "jsb": {"gru": [8.50, 8.70, 8.40, 8.60], "lstm": [8.80, 8.95, 8.75, 8.95], "tanh": [9.20, 9.40, 9.10, 9.30]},
    # best lstm over seeds 0, 1, 3 (seed 2 diverged with a decoy test NLL of 0.5); runner-up gru over seeds
    # 0, 2, 3 (seed 1 failed): pairs = common seeds {0, 3}; p ≈ 0.0303
    "nottingham": {"lstm": [3.30, 3.35, DIV, 3.40], "gru": [3.60, FAIL, 3.65, 3.73], "tanh": [4.00, 4.10, 4.20, 4.30]},
    # best tanh (6.05), runner-up gru (6.275), worst lstm: p ≈ 0.0374
    "musedata": {"tanh": [6.00, 6.10, 6.05, 6.05], "gru": [6.20, 6.30, 6.15, 6.45], "lstm": [7.00, 7.20, 6.90, 7.10]},
    # incomplete: the lstm search has not finished, so no test (and not counted by Holm)
    "piano": {"tanh": [9.00, 9.10, 9.20, 9.30], "gru": [8.80, 8.90, 8.85, 8.95], "lstm": None},
}
DECOY_TEST = 0.5      # test NLL of diverged runs and of the non-selected learning rate: must never show up
SELECTED = {("jsb", "tanh"): 0}   # index into grid.lrs; every other cell selects lrs[1]


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory):
    """A results directory whose store holds the study above, inserted through the Store API."""
    out = tmp_path_factory.mktemp("fabricated")
    study = G.StudyConfig(datasets=DATASETS, units=UNITS, lr_candidates=2, seeds=4, train={"epochs": 3})
    grid = G.Grid(study, datasets=DATASETS)
    lrs = grid.lrs
    with FabricatedStore(out, study, grid, DATASETS) as st:
        put = st.put
        for d in DATASETS:
            for u in UNITS:
                sel = SELECTED.get((d, u), 1)
                search = grid.search_specs(d, u)
                other = search[1 - sel]
                if TEST_NLL[d][u] is None:       # search not finished: one candidate recorded, one missing
                    put(other, _summary(other.run_id, "completed", 5.0))
                    continue
                if (d, u) == ("jsb", "tanh"):
                    # the candidate with the lowest validation NLL diverged: it must not be selected
                    put(other, {**_summary(other.run_id, DIV, DECOY_TEST), "valid_nll": 0.1})
                else:  # a worse validation NLL but the best test NLL: selection must ignore test NLL
                    put(other, {**_summary(other.run_id, "completed", DECOY_TEST), "valid_nll": 50.0})
                seeds = grid.seed_specs(d, u, lrs[sel])
                assert seeds[0].run_id == search[sel].run_id      # seed 0 IS the search run
                for spec, v in zip(seeds, TEST_NLL[d][u]):
                    if v == FAIL:
                        put(spec, _summary(spec.run_id, FAIL))
                    elif v == DIV:
                        put(spec, _summary(spec.run_id, DIV, DECOY_TEST))
                    else:
                        put(spec, _summary(spec.run_id, "early_stopped" if spec.seed % 2 else "completed", v))
    return out, lrs


def _ok(values):
    return [(s, v) for s, v in enumerate(values) if v not in (DIV, FAIL)]


def _t_half_width(x):
    x = np.asarray(x, dtype=np.float64)
    lo, hi = sst.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sst.sem(x))
    return (hi - lo) / 2


def _expected_tests():
    """Per dataset (best, runner-up, pairs, t, p) with scipy; then Holm by hand over the testable ones."""
    rows = {}
    for d in DATASETS:
        means = {u: np.mean([v for _, v in _ok(vals)]) for u, vals in TEST_NLL[d].items() if vals is not None}
        if len(means) < len(UNITS):
            rows[d] = {"best": None, "runner_up": None, "pairs": 0, "t": None, "p": None}
            continue
        best, runner, worst = sorted(means, key=means.get)
        a, b = dict(_ok(TEST_NLL[d][runner])), dict(_ok(TEST_NLL[d][best]))
        common = sorted(set(a) & set(b))
        r = sst.ttest_rel([a[s] for s in common], [b[s] for s in common])
        rows[d] = {"best": best, "runner_up": runner, "worst": worst, "pairs": len(common),
                   "mean_diff": np.mean([a[s] - b[s] for s in common]), "t": r.statistic, "p": r.pvalue}
    tested = sorted((r["p"], d) for d, r in rows.items() if r["p"] is not None)
    m, running = len(tested), 0.0
    for i, (p, d) in enumerate(tested):            # Holm: max over j <= i of min(1, (m − j) p_(j)), 0-based
        running = max(running, min(1.0, (m - i) * float(p)))
        rows[d]["p_holm"] = running
        rows[d]["significant"] = bool(running <= 0.05)
    for d, r in rows.items():
        r.setdefault("p_holm", None)
        r.setdefault("significant", False)
    return rows


def test_fixture_is_what_the_tests_claim():
    """The fabricated numbers have the properties the other tests rely on (so they stay meaningful)."""
    e = _expected_tests()
    assert [e[d]["best"] for d in DATASETS] == ["gru", "lstm", "tanh", None]
    assert [e[d]["runner_up"] for d in DATASETS] == ["lstm", "gru", "gru", None]
    assert [e[d]["pairs"] for d in DATASETS] == [4, 2, 4, 0]
    assert e["jsb"]["p"] == pytest.approx(0.00097, abs=1e-5)
    assert e["nottingham"]["p"] == pytest.approx(0.0303, abs=1e-4)
    assert e["musedata"]["p"] == pytest.approx(0.0374, abs=1e-4)
    # Holm by hand: 3 · 0.00097 = 0.0029; 2 · 0.0303 = 0.0606; max(0.0606, 1 · 0.0374) = 0.0606.
    # Every raw p is below 0.05; after Holm only JSB stays significant.
    assert e["jsb"]["p_holm"] == pytest.approx(3 * e["jsb"]["p"])
    assert e["nottingham"]["p_holm"] == pytest.approx(2 * e["nottingham"]["p"])
    assert e["musedata"]["p_holm"] == pytest.approx(2 * e["nottingham"]["p"])
    assert [e[d]["significant"] for d in DATASETS] == [True, False, False, False]
    assert all(e[d]["p"] < 0.05 for d in DATASETS[:3])


def test_selection_uses_validation_and_skips_diverged_candidates(fabricated):
    out, lrs = fabricated
    data = collect(out)
    sel = {(c["dataset"], c["unit"]): c["selected_lr"] for c in data["cells"]}
    for d in DATASETS:
        for u in UNITS:
            if TEST_NLL[d][u] is None:
                assert sel[(d, u)] is None, (d, u)
            else:
                assert sel[(d, u)] == lrs[SELECTED.get((d, u), 1)], (d, u)


def test_summary_table_means_and_t_intervals(fabricated):
    out, lrs = fabricated
    rows = {(r["dataset"], r["unit"]): r for r in table2_rows(collect(out))}
    assert len(rows) == len(DATASETS) * len(UNITS)
    for d in DATASETS:
        for u in UNITS:
            r, vals = rows[(d, u)], TEST_NLL[d][u]
            if vals is None:
                assert r["seeds_ok"] == 0 and r["lr"] is None and math.isnan(r["test_mean"])
                continue
            ok = [v for _, v in _ok(vals)]
            assert r["seeds_ok"] == len(ok), (d, u)
            assert r["seeds_diverged"] == vals.count(DIV), (d, u)
            assert r["seeds_failed"] == vals.count(FAIL), (d, u)
            assert r["seeds_missing"] == 0
            assert r["lr"] == lrs[SELECTED.get((d, u), 1)]
            assert r["test_mean"] == pytest.approx(np.mean(ok), abs=1e-12), (d, u)
            assert r["test_ci"] == pytest.approx(_t_half_width(ok), rel=1e-9), (d, u)
            assert r["train_mean"] == pytest.approx(np.mean(ok) - 0.5, abs=1e-12)
            assert r["valid_mean"] == pytest.approx(np.mean(ok) - 0.25, abs=1e-12)
            assert r["train_ci"] == pytest.approx(_t_half_width(ok), rel=1e-9)
    # hand values: JSB GRU mean 8.55, s = 0.12910, t_{0.975,3} = 3.18245 → ± 0.20543
    assert rows[("jsb", "gru")]["test_ci"] == pytest.approx(3.182446 * 0.1290994 / 2, rel=1e-6)
    # Nottingham LSTM: the diverged seed (test NLL 0.5) is counted, not averaged: mean of 3.30, 3.35, 3.40
    assert rows[("nottingham", "lstm")]["test_mean"] == pytest.approx(3.35)
    assert rows[("nottingham", "lstm")]["test_ci"] == pytest.approx(4.302653 * 0.05 / math.sqrt(3), rel=1e-6)


def test_significance_rows_best_runner_up_paired_by_seed_holm(fabricated):
    out, _ = fabricated
    exp = _expected_tests()
    got = {r["dataset"]: r for r in significance_rows(collect(out))}
    assert list(got) == DATASETS
    for d in DATASETS:
        g, e = got[d], exp[d]
        assert (g["best"], g["runner_up"], g["pairs"]) == (e["best"], e["runner_up"], e["pairs"]), d
        if e["p"] is None:
            assert g["t"] is None and g["p"] is None and g["p_holm"] is None and g["significant"] is False
            assert g["note"].startswith("incomplete")
            continue
        assert g["note"] == ""
        assert g["mean_diff"] == pytest.approx(e["mean_diff"], rel=1e-9), d
        assert g["t"] == pytest.approx(e["t"], rel=1e-9), d      # runner-up minus best: positive
        assert g["t"] > 0
        assert g["p"] == pytest.approx(e["p"], rel=1e-9), d
        assert g["p_holm"] == pytest.approx(e["p_holm"], rel=1e-9), d
        assert g["significant"] is e["significant"], d


def test_written_tables_hold_the_hand_known_numbers(fabricated, monkeypatch):
    out, _ = fabricated

    def no_data(*a, **k):       # the reference rows need the data; not what this test is about
        raise RuntimeError("no data in this test")
    monkeypatch.setattr("gatedrnn.study.baselines.dataset_baselines", no_data)
    files = build_report(out, figures=False, log=lambda m: None)
    assert "ablation.md" not in files and not (out / "ablation.csv").exists()   # no variants in this study
    exp = _expected_tests()
    with open(files["table2_tests.csv"]) as f:
        rows = {r["dataset"]: r for r in csv.DictReader(f)}
    assert list(rows) == DATASETS
    for d in DATASETS:
        r, e = rows[d], exp[d]
        assert r["best"] == (e["best"] or "") and r["runner_up"] == (e["runner_up"] or ""), d
        assert int(r["pairs"]) == e["pairs"], d
        assert r["significant"] == str(e["significant"]), d
        if e["p"] is None:
            assert r["p"] == r["p_holm"] == r["t"] == "" and r["note"].startswith("incomplete"), d
        else:
            assert float(r["t"]) == pytest.approx(e["t"], rel=1e-9), d
            assert float(r["p"]) == pytest.approx(e["p"], rel=1e-9), d
            assert float(r["p_holm"]) == pytest.approx(e["p_holm"], rel=1e-9), d
    with open(files["table2.csv"]) as f:
        t2 = {(r["dataset"], r["unit"]): r for r in csv.DictReader(f)}
    for d in DATASETS:
        for u in UNITS:
            if TEST_NLL[d][u] is None:
                continue
            ok = [v for _, v in _ok(TEST_NLL[d][u])]
            assert float(t2[(d, u)]["test_mean"]) == pytest.approx(np.mean(ok), abs=1e-12)
            assert float(t2[(d, u)]["test_ci"]) == pytest.approx(_t_half_width(ok), rel=1e-9)
            assert int(t2[(d, u)]["seeds_ok"]) == len(ok)
    md = (out / "table2.md").read_text()
    # mean ± half-width as printed (3 decimals), and the significance line of JSB / Nottingham
    assert f"{np.mean([8.5, 8.7, 8.4, 8.6]):.3f} ± {_t_half_width([8.5, 8.7, 8.4, 8.6]):.3f}" in md  # 8.550 ± 0.205
    assert "8.550 ± 0.205" in md
    jsb_line = next(line for line in md.splitlines() if line.startswith("| JSB Chorales | GRU | LSTM |"))
    assert "| 4 |" in jsb_line and jsb_line.rstrip().endswith("| yes |  |")
    nott_line = next(line for line in md.splitlines() if line.startswith("| Nottingham | LSTM | GRU |"))
    assert "| 2 |" in nott_line and "| no |" in nott_line


def test_dataset_kind_is_read_from_the_runs_not_the_name(fabricated):
    """Δ to the paper only for music, and 'music' is what the runs recorded (result.json's kind), never a
    guess from the dataset's name."""
    out, _ = fabricated
    data = collect(out)
    assert data["kinds"] == {d: "music" for d in DATASETS}
    rows = {(r["dataset"], r["unit"]): r for r in table2_rows(data)}
    ok = [v for _, v in _ok(TEST_NLL["jsb"]["gru"])]
    assert rows[("jsb", "gru")]["diff_test"] == pytest.approx(np.mean(ok) - 8.54, abs=1e-12)
    data["kinds"]["jsb"] = "speech"          # as if JSB's runs had recorded speech
    rows = {(r["dataset"], r["unit"]): r for r in table2_rows(data)}
    assert rows[("jsb", "gru")]["diff_test"] is None and rows[("jsb", "gru")]["paper_test"] == 8.54
    assert rows[("nottingham", "gru")]["diff_test"] is not None


def test_a_search_whose_every_candidate_diverged_says_so(tmp_path):
    """No selected rate because every candidate diverged (the released-optimiser tanh on Nottingham): the
    table says so instead of '0 / 0 / 0' with a blank rate; an unfinished search stays 'incomplete'."""
    from gatedrnn.study.tables import table2_markdown
    study = G.StudyConfig(datasets=["jsb"], units=["tanh", "gru"], lr_candidates=2, seeds=2, train={"epochs": 3})
    grid = G.Grid(study, datasets=["jsb"])
    with FabricatedStore(tmp_path, study, grid, ["jsb"]) as st:
        for spec in grid.search_specs("jsb", "tanh"):
            st.put(spec, _summary(spec.run_id, DIV, DECOY_TEST))
        spec = grid.search_specs("jsb", "gru")[0]            # gru: one of two candidates done
        st.put(spec, _summary(spec.run_id, "completed", 8.0))
    data = collect(tmp_path)
    rows = {r["unit"]: r for r in table2_rows(data)}
    assert rows["tanh"]["lr"] is None and rows["tanh"]["search"] == "no candidate trained: 2 diverged, 0 failed"
    assert rows["gru"]["search"] == "incomplete"
    md = table2_markdown(data, list(rows.values()), [], [])
    assert "– (no candidate trained: 2 diverged, 0 failed)" in md


def test_stopping_summary_counts_each_run_once_by_how_it_ended(fabricated):
    """By hand from the fixture: 11 non-selected candidates ran to the cap (jsb/tanh's diverged; piano/lstm's
    only finished candidate counts too); seed runs: seed 0 and 2 hit the cap, 1 and 3 stopped by patience,
    except nottingham/lstm seed 2 (diverged) and nottingham/gru seed 1 (failed: not finished). Seed 0 is
    also the selected search run: counted once."""
    out, _ = fabricated
    s = stopping_summary(collect(out))
    assert (s["patience"], s["cap"], s["diverged"], s["finished"]) == (21, 32, 2, 55)
    assert len(s["cap_cells"]) == 12
    md = table2_markdown(collect(out), [], [], [])
    assert "21 of 55 finished runs (38 %) stopped by patience" in md


def test_curves_of_seeds_recorded_at_different_cadences_share_their_common_epochs():
    # one seed's training split every epoch, another's every 3rd (--eval-train-every 3; a halving study):
    # the mean and band use only the epochs both evaluated, so the curve neither zig-zags between one seed
    # and two nor collapses its band; a seed that diverged at epoch 4 (no value there) leaves later epochs
    # to the others
    from gatedrnn.study.report import _aggregate
    dense = [{"epoch": e, "seconds": float(e), "train_nll": 10.0 - e} for e in range(7)]
    sparse = [{"epoch": e, "seconds": 2.0 * e, **({"train_nll": 20.0 - e} if e % 3 == 0 else {})} for e in range(7)]
    x, m, lo, hi = _aggregate([dense, sparse], "train_nll", "epoch")
    assert list(x) == [0, 3, 6]
    assert list(m) == [15.0, 12.0, 9.0] and list(lo) == [10.0, 7.0, 4.0] and list(hi) == [20.0, 17.0, 14.0]
    x, m, *_ = _aggregate([dense, sparse], "train_nll", "seconds")
    assert list(x) == [0.0, 4.5, 9.0]
    short = [{"epoch": e, "train_nll": 5.0} for e in range(4)] + [{"epoch": 4, "diverged": True}]
    x, m, *_ = _aggregate([dense, short], "train_nll", "epoch")
    assert list(x) == list(range(7)) and list(m[:4]) == [7.5, 7.0, 6.5, 6.0] and list(m[4:]) == [6.0, 5.0, 4.0]


def test_fresh_seeds_report_others_and_show_the_selecting_run_apart(tmp_path):
    """report_seeds="fresh": the search run (seed 0) selects; the mean is over seeds 1..3 only (its decoy-good
    test NLL is never averaged) and it is shown in its own column; the per-sequence mean is averaged over the
    same seeds, and '–' where a run predates it."""
    study = G.StudyConfig(datasets=["jsb"], units=["gru"], lr_candidates=2, seeds=3, report_seeds="fresh",
                          train={"epochs": 3})
    assert study.seed_list() == [1, 2, 3]
    grid = G.Grid(study, datasets=["jsb"])
    search = grid.search_specs("jsb", "gru")
    seeds = grid.seed_specs("jsb", "gru", search[0].lr)
    assert {s.seed for s in seeds} == {1, 2, 3} and not {s.run_id for s in seeds} & {s.run_id for s in search}
    with FabricatedStore(tmp_path, study, grid, ["jsb"]) as st:
        st.put(search[0], {**_summary(search[0].run_id, "completed", 7.0), "test_nll_seqavg": 6.5})  # selected
        st.put(search[1], {**_summary(search[1].run_id, "completed", 9.0), "valid_nll": 50.0})
        for spec, (v, sa) in zip(seeds, [(8.0, 7.6), (8.2, 7.7), (8.4, 7.8)]):
            st.put(spec, {**_summary(spec.run_id, "completed", v), "test_nll_seqavg": sa})
    data = collect(tmp_path)
    (row,) = table2_rows(data)
    assert row["seeds_ok"] == 3 and row["test_mean"] == pytest.approx(8.2)
    assert row["test_ci"] == pytest.approx(_t_half_width([8.0, 8.2, 8.4]))
    assert row["test_seqavg_mean"] == pytest.approx(7.7)
    assert row["selecting_test"] == 7.0 and row["selecting_test_seqavg"] == 6.5
    md = table2_markdown(data, [row], [], [])
    assert "| 7.000 (6.500) |" in md and "7.700 ± " in md and "not one of the reported seeds" in md
    # the runs whose best.pt a committed study keeps: the seeds and the selecting run, not the other candidate
    from gatedrnn.study.tables import reported_run_ids
    assert reported_run_ids(data) == sorted([search[0].run_id, *(s.run_id for s in seeds)])
    # a run recorded before the per-sequence metric: '–', never a mean over the seeds that have it
    with Store(tmp_path) as st:
        st.finish(_summary(seeds[2].run_id, "completed", 8.4))
    row = table2_rows(collect(tmp_path))[0]
    assert row["test_seqavg_mean"] is None and row["test_mean"] == pytest.approx(8.2)
