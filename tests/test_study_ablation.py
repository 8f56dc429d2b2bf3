"""The ablation tables (study/tables.py ablation_rows, ablation.md/.csv, the forest plot) from a FABRICATED
results store with hand-computed answers: each variant's test NLL beside its full unit's, the difference
paired by seed, the paired t-test and Holm across every (variant, dataset) pair.

The numbers are chosen so that every p-value has a closed form (never computed with gatedrnn.study.stats
or scipy's t-test): with 3 pairs (2 degrees of freedom) the t CDF is F(t) = 1/2 + t / (2 √(2 + t²)), so
p = 1 − |t| / √(2 + t²); with 2 pairs (1 degree of freedom, Cauchy) p = 1 − (2/π) arctan |t|. Every
3-pair difference set has standard deviation 0.1, so t = mean / (0.1 / √3)."""
from __future__ import annotations

import csv
import math

import pytest

from gatedrnn.study import grid as G
from gatedrnn.study.report import build_report
from gatedrnn.study.tables import ablation_rows, collect

from _fabricate import DIV, FAIL, FabricatedStore
from _fabricate import summary as _summary

DATASETS = ["jsb", "nottingham"]
UNITS = ["lstm", "lstm-nig", "lstm-nfg", "lstm-nog", "gru-nrg"]   # no "gru": gru-nrg has nothing to compare
TEST_NLL = {   # seeds 0, 1, 2 of each cell
    "jsb": {"lstm": [8.0, 8.3, 8.1],
            "lstm-nig": [8.1, 8.5, 8.4],        # A: differences 0.1, 0.2, 0.3
            "lstm-nfg": [9.0, 9.4, 9.3],        # C: 1.0, 1.1, 1.2
            "lstm-nog": [7.9, 8.3, 8.2],        # D: −0.1, 0.0, 0.1
            "gru-nrg": [8.9, 9.0, 9.1]},
    "nottingham": {"lstm": [3.2, 3.5, 3.3],
                   "lstm-nig": [3.7, 4.1, 4.0],     # B: 0.5, 0.6, 0.7
                   "lstm-nfg": [3.4, 3.9, DIV],     # E: 0.2, 0.4 (seed 2 diverged: 2 pairs)
                   "lstm-nog": [3.3, FAIL, FAIL],   # 1 pair: no test
                   "gru-nrg": [4.0, 4.1, FAIL]},
}
DECOY = 0.5   # the test NLL recorded by the diverged run: never averaged, never paired

SQRT3 = math.sqrt(3)
T = {"A": 2 * SQRT3, "B": 6 * SQRT3, "C": 11 * SQRT3, "D": 0.0, "E": 3.0}   # E: mean 0.3, sd √0.02, n 2
P = {k: 1 - abs(t) / math.sqrt(2 + t * t) for k, t in T.items() if k != "E"}
P["E"] = 1 - 2 / math.pi * math.atan(3.0)
T_975 = {2: 4.302653, 1: 12.706205}   # t_{0.975, df} from a table
CELL = {("jsb", "lstm-nig"): "A", ("nottingham", "lstm-nig"): "B", ("jsb", "lstm-nfg"): "C",
        ("jsb", "lstm-nog"): "D", ("nottingham", "lstm-nfg"): "E"}
MEAN_DIFF = {"A": 0.2, "B": 0.6, "C": 1.1, "D": 0.0, "E": 0.3}
# Holm over the m = 5 tested pairs, p ascending C < B < A < E < D: C·5, B·4, A·3, E·2, D·1 (each already
# larger than the one before, so no running maximum is needed)
P_HOLM = {"C": 5 * P["C"], "B": 4 * P["B"], "A": 3 * P["A"], "E": 2 * P["E"], "D": 1.0}


def test_hand_values():
    """The closed forms above, worked to numbers: only C and B survive Holm."""
    assert P["A"] == pytest.approx(0.0741799, abs=1e-7)
    assert P["B"] == pytest.approx(0.0091327, abs=1e-7)
    assert P["C"] == pytest.approx(0.0027435, abs=1e-7)
    assert P["E"] == pytest.approx(0.2048328, abs=1e-7)
    assert sorted(P, key=P.get) == ["C", "B", "A", "E", "D"]
    assert P_HOLM["C"] == pytest.approx(0.0137175, abs=1e-6) and P_HOLM["B"] == pytest.approx(0.0365308, abs=1e-6)
    assert [k for k in "ABCDE" if P_HOLM[k] <= 0.05] == ["B", "C"]
    assert all(P[k] < 0.1 for k in "ABC")


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    study = G.StudyConfig(datasets=DATASETS, units=UNITS, lr_candidates=1, seeds=3, train={"epochs": 3})
    grid = G.Grid(study, datasets=DATASETS)
    with FabricatedStore(out, study, grid, DATASETS) as st:
        for d in DATASETS:
            for u in UNITS:
                for spec, v in zip(grid.seed_specs(d, u, grid.lrs[0]), TEST_NLL[d][u]):
                    if v == FAIL:
                        st.put(spec, _summary(spec.run_id, FAIL))
                    elif v == DIV:
                        st.put(spec, _summary(spec.run_id, DIV, DECOY))
                    else:
                        st.put(spec, _summary(spec.run_id, "completed", v))
    return out, grid.lrs[0]


def _sd(x):
    m = sum(x) / len(x)
    return math.sqrt(sum((v - m) ** 2 for v in x) / (len(x) - 1))


def test_rows_order_counts_and_means(fabricated):
    out, lr = fabricated
    rows = ablation_rows(collect(out))
    assert [(r["dataset"], r["unit"], r["role"]) for r in rows] == [
        (d, u, "full" if u == "lstm" else "variant") for d in DATASETS for u in UNITS]
    assert all(r["family"] == ("gru" if u == "gru-nrg" else "lstm") for r, u in zip(rows, UNITS * 2))
    by = {(r["dataset"], r["unit"]): r for r in rows}
    for (d, u), r in by.items():
        vals = TEST_NLL[d][u]
        ok = [v for v in vals if v not in (DIV, FAIL)]
        assert (r["seeds_ok"], r["seeds_diverged"], r["seeds_failed"], r["seeds_missing"]) == \
            (len(ok), vals.count(DIV), vals.count(FAIL), 0), (d, u)
        assert r["lr"] == lr
        assert r["test_mean"] == pytest.approx(sum(ok) / len(ok), abs=1e-12), (d, u)
        if len(ok) == 3:
            assert r["test_ci"] == pytest.approx(T_975[2] * _sd(ok) / SQRT3, rel=1e-6), (d, u)
        elif len(ok) == 2:
            assert r["test_ci"] == pytest.approx(T_975[1] * _sd(ok) / math.sqrt(2), rel=1e-6), (d, u)
        else:
            assert math.isnan(r["test_ci"])
    # by hand: JSB lstm-nig 8.1, 8.5, 8.4: mean 8.3333, s = √0.043333 = 0.2081666, ± 4.302653 · s / √3 = 0.5171145
    assert by[("jsb", "lstm-nig")]["test_mean"] == pytest.approx(25 / 3)
    assert by[("jsb", "lstm-nig")]["test_ci"] == pytest.approx(0.5171145, abs=1e-6)
    # the diverged seed's decoy 0.5 is not averaged: 3.4, 3.9
    assert by[("nottingham", "lstm-nfg")]["test_mean"] == pytest.approx(3.65)


def test_paired_differences_t_p_and_holm(fabricated):
    out, _ = fabricated
    by = {(r["dataset"], r["unit"]): r for r in ablation_rows(collect(out))}
    for d in DATASETS:
        full = by[(d, "lstm")]
        assert full["diff_mean"] is None and full["p"] is None and full["p_holm"] is None
        assert full["significant"] is None
    for cell, k in CELL.items():
        r = by[cell]
        n = 2 if k == "E" else 3
        assert r["pairs"] == n, cell
        assert r["diff_mean"] == pytest.approx(MEAN_DIFF[k], abs=1e-12), cell     # variant − full
        assert r["diff_ci"] == pytest.approx(T_975[n - 1] * 0.1 / math.sqrt(n) * (math.sqrt(2) if n == 2 else 1),
                                             rel=1e-6), cell
        assert r["t"] == pytest.approx(T[k], rel=1e-9, abs=1e-9), cell
        assert r["p"] == pytest.approx(P[k], rel=1e-9, abs=1e-12), cell
        assert r["p_holm"] == pytest.approx(P_HOLM[k], rel=1e-9, abs=1e-12), cell
        assert r["significant"] is (k in "BC"), cell
        assert r["note"] == ""
    # E: 2 pairs, differences 0.2 and 0.4: ± t_{0.975,1} · √0.02 / √2 = 12.706205 · 0.1
    assert by[("nottingham", "lstm-nfg")]["diff_ci"] == pytest.approx(1.2706205, rel=1e-6)
    # untestable pairs: left out of Holm's m (5, not 8)
    one = by[("nottingham", "lstm-nog")]
    assert one["pairs"] == 1 and one["p"] is None and one["p_holm"] is None and one["significant"] is False
    assert one["diff_mean"] == pytest.approx(0.1, abs=1e-12) and one["diff_ci"] is None
    assert "no test" in one["note"]
    for d in DATASETS:
        g = by[(d, "gru-nrg")]
        assert g["pairs"] == 0 and g["diff_mean"] is None and g["p"] is None and g["significant"] is False
        assert "full unit (gru) is not in the study" in g["note"]


def test_written_ablation_files_and_forest_plot(fabricated, monkeypatch):
    out, _ = fabricated

    def no_data(*a, **k):       # the reference rows need the data; not what this test is about
        raise RuntimeError("no data in this test")
    monkeypatch.setattr("gatedrnn.study.baselines.dataset_baselines", no_data)
    files = build_report(out, log=lambda m: None)
    for name in ("ablation.md", "ablation.csv", "ablation_forest.png", "ablation_forest.svg"):
        assert name in files and (out / name).stat().st_size > 0, name
    with open(out / "ablation.csv") as f:
        rows = {(r["dataset"], r["unit"]): r for r in csv.DictReader(f)}
    assert len(rows) == len(DATASETS) * len(UNITS)
    for cell, k in CELL.items():
        r = rows[cell]
        assert float(r["diff_mean"]) == pytest.approx(MEAN_DIFF[k], abs=1e-12)
        assert float(r["p"]) == pytest.approx(P[k], rel=1e-9, abs=1e-12)
        assert float(r["p_holm"]) == pytest.approx(P_HOLM[k], rel=1e-9, abs=1e-12)
        assert r["significant"] == str(k in "BC")
    assert rows[("jsb", "gru-nrg")]["p"] == "" and rows[("jsb", "lstm")]["role"] == "full"
    md = (out / "ablation.md").read_text()
    line = {c: next(x for x in md.splitlines() if x.startswith(f"| {n} | {c[1]} |"))
            for c, n in [(("jsb", "lstm-nig"), "JSB Chorales"), (("jsb", "lstm-nfg"), "JSB Chorales"),
                         (("nottingham", "lstm-nfg"), "Nottingham")]}
    # A: 8.333 ± 0.517, Δ +0.200 ± 0.248 over 3 pairs, not significant after Holm
    assert "| 8.333 ± 0.517 | – | +0.200 ± 0.248 | 3 | 3.46 |" in line[("jsb", "lstm-nig")]
    assert line[("jsb", "lstm-nig")].rstrip().endswith("| no |  |")
    assert "| +1.100 ± 0.248 | 3 | 19.05 |" in line[("jsb", "lstm-nfg")]
    assert line[("jsb", "lstm-nfg")].rstrip().endswith("| yes |  |")
    assert "| 2 / 1 / 0 |" in line[("nottingham", "lstm-nfg")] and "+0.300 ± 1.271 | 2 | 3.00 |" in \
        line[("nottingham", "lstm-nfg")]
    assert "| JSB Chorales | LSTM (full) |" in md and "over all 5 (variant, dataset) pairs" in md
    page = (out / "report.html").read_text()
    assert "Ablation: what each component is worth" in page and "href='ablation.csv'" in page
    assert "href='ablation_forest.png'" in page and page.count("<svg") >= 3


def test_a_variant_whose_every_candidate_diverged_is_named_not_blank(tmp_path, monkeypatch):
    """lstm-noaf on Nottingham: all its search candidates diverged, so it has no seed runs. Its ablation row
    says so (the note names the search's outcome), it is left out of Holm's m, and the forest plot is drawn."""
    study = G.StudyConfig(datasets=["jsb"], units=["lstm", "lstm-noaf"], lr_candidates=2, seeds=2,
                          train={"epochs": 3})
    grid = G.Grid(study, datasets=["jsb"])
    with FabricatedStore(tmp_path, study, grid, ["jsb"]) as st:
        for spec in grid.search_specs("jsb", "lstm-noaf"):
            st.put(spec, _summary(spec.run_id, DIV, DECOY))
        for spec in grid.search_specs("jsb", "lstm"):
            st.put(spec, _summary(spec.run_id, "completed", 8.0 + spec.lr))
        for spec in grid.seed_specs("jsb", "lstm", grid.lrs[0])[1:]:
            st.put(spec, _summary(spec.run_id, "completed", 8.1))
    rows = {r["unit"]: r for r in ablation_rows(collect(tmp_path))}
    v = rows["lstm-noaf"]
    assert v["lr"] is None and v["seeds_ok"] == 0 and v["pairs"] == 0 and v["diff_mean"] is None
    assert v["note"] == "no candidate trained: 2 diverged, 0 failed"
    assert v["p"] is None and v["p_holm"] is None and v["significant"] is False
    assert rows["lstm"]["seeds_ok"] == 2 and rows["lstm"]["note"] == ""

    def no_data(*a, **k):
        raise RuntimeError("no data in this test")
    monkeypatch.setattr("gatedrnn.study.baselines.dataset_baselines", no_data)
    files = build_report(tmp_path, log=lambda m: None)
    assert "ablation_forest.png" in files
    assert "no candidate trained: 2 diverged, 0 failed" in (tmp_path / "ablation.md").read_text()
