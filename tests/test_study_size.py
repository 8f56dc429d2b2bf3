"""The size axis (issue 20, StudyConfig.param_budgets / `reproduce --param-budgets`): one cell per (dataset,
unit, budget) with the hidden size matched to its budget, nothing changed without it (study keys, run ids),
a bad budget list refused in one line, and the tables, tests and figure per budget from a FABRICATED store
(hand-known numbers; expectations with scipy, never gatedrnn.study.stats)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from scipy import stats as sst

from gatedrnn.nn.counting import count_parameters
from gatedrnn.study import grid as G
from gatedrnn.study.report import build_report
from gatedrnn.study.size import answer
from gatedrnn.train import TrainConfig, resolve_hidden_size
from _fabricate import FabricatedStore, summary as _summary

MUSIC_INPUT = 88   # the music sets' piano keys: the input size the runs are built with
TABLE1_INPUT = 100  # Table 1's nominal input size for music: the size the budgets are matched at


def _paper_count(unit: str, I: int, n: int) -> int:
    """Table 1's convention written out by hand (recurrent layer, one bias per gate, LSTM peepholes)."""
    return {"tanh": I * n + n * n + n, "gru": 3 * (I * n + n * n) + 3 * n,
            "lstm": 4 * (I * n + n * n) + 4 * n + 3 * n}[unit]


def test_the_axis_makes_one_cell_per_budget_with_the_matched_hidden_size():
    study = G.StudyConfig(datasets=["jsb"], units=["tanh", "gru", "lstm"], param_budgets=[20_000, 5_000],
                          lr_candidates=2, seeds=3, report_seeds="fresh")
    assert study.param_budgets == [5_000, 20_000]           # sorted, each once
    g = G.Grid(study, datasets=["jsb"])
    assert g.sized and g.sized_cells() == [("jsb", u, b) for b in (5_000, 20_000) for u in ("tanh", "gru", "lstm")]
    assert g.n_runs() == 6 * (2 + 3)
    # by hand, Table 1's convention (input 100): the closest count to the budget (tanh 36 units = 4,932;
    # GRU 14 = 4,830; LSTM 11 = 4,961); at 20,000 Table 1's own sizes (100, 46, 36)
    hand = {("tanh", 5_000): 36, ("gru", 5_000): 14, ("lstm", 5_000): 11,
            ("tanh", 20_000): 100, ("gru", 20_000): 46, ("lstm", 20_000): 36}
    ids = set()
    for _, u, b in g.sized_cells():
        specs = g.search_specs("jsb", u, budget=b)
        seeds = g.seed_specs("jsb", u, specs[0].lr, b)
        assert all(s.config["budget"] == b and s.config["hidden_size"] is None for s in specs + seeds)
        n = resolve_hidden_size(TrainConfig(**specs[0].config), "music", MUSIC_INPUT)
        assert n == hand[(u, b)]
        assert count_parameters(u, MUSIC_INPUT, n) == _paper_count(u, MUSIC_INPUT, n)
        best = min(range(1, 400), key=lambda k: (abs(_paper_count(u, TABLE1_INPUT, k) - b), k))
        assert n == best
        ids |= {s.run_id for s in specs + seeds}
    assert len(ids) == g.n_runs()          # no run shared between budgets


def test_without_the_axis_keys_and_run_ids_are_unchanged():
    # pinned from main before the axis existed (the studies in results/ were computed with these)
    for budget, key, first, seed1 in [
            ("paper-faithful", "019d4388fb52", "jsb-gru-lr0.0002615-s0-5a236d9ed496",
             "jsb-lstm-lr0.0007498-s2-648c797775e6"),
            ("laptop", "8a776c6b350c", "jsb-gru-lr0.001411-s0-311449ecb7ea", "jsb-lstm-lr0.003175-s2-2251fa0de450")]:
        s = G.budget_config(budget)
        g = G.Grid(s)
        assert s.param_budgets is None and not g.sized and g.budgets == [None]
        assert s.key() == key
        assert g.search_specs("jsb", "gru")[0].run_id == first
        assert g.seed_specs("jsb", "lstm", g.lrs[2])[1].run_id == seed1
        assert [c[:2] for c in g.sized_cells()] == g.cells()
        # a store written before the field existed reads back as the same study
        old = {k: v for k, v in s.model_dump().items() if k != "param_budgets"}
        assert G.StudyConfig(**old).key() == key
    # the axis changes the key (a different study) but not the grid's learning rates
    sized = G.budget_config("paper-faithful", param_budgets=[20_000])
    assert sized.key() != "019d4388fb52" and G.Grid(sized).lrs == G.Grid(G.budget_config("paper-faithful")).lrs


def test_the_size_preset():
    s = G.budget_config("size")
    assert s.datasets == ["jsb"] and s.units == ["tanh", "gru", "lstm", "mingru", "minlstm"]
    assert s.param_budgets == [5_000, 20_000, 80_000, 320_000]
    assert (s.lr_candidates, s.seeds, s.report_seeds, s.search) == (10, 3, "fresh", "halving")
    assert s.train["epochs"] == 500 and s.train["patience"] == 0 and s.rungs(500) == [150, 300]
    assert G.Grid(s).n_runs() == 5 * 4 * (10 + 3)


@pytest.mark.parametrize("given", ["0", "-5", "abc", "5000,x", "", "5000,0", "2.5e4"])
def test_an_invalid_budget_list_is_one_line_exit_2(given):
    r = subprocess.run([sys.executable, "-m", "gatedrnn.cli", "reproduce", "--param-budgets", given, "--dry-run"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "--param-budgets" in r.stderr and "positive numbers of parameters" in r.stderr
    for bad in ([0], [-1], [], ["x"], [2.5]):
        with pytest.raises(ValueError):
            G.StudyConfig(param_budgets=bad)


def test_dry_run_shows_each_cells_matched_size():
    env = {**os.environ}
    r = subprocess.run([sys.executable, "-m", "gatedrnn.cli", "reproduce", "--datasets", "jsb", "--units", "tanh,lstm",
                        "--param-budgets", "5000,20000", "--lr-candidates", "2", "--seeds", "2", "--dry-run"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["study"]["param_budgets"] == [5000, 20000] and plan["runs"] == 4 * (2 + 1)
    # [hidden size, recurrent parameters as built at the data's 88 inputs]; matched at Table 1's input 100
    assert plan["hidden_sizes"] == {"jsb/tanh@5000": [36, 4500], "jsb/lstm@5000": [11, 4433],
                                    "jsb/tanh@20000": [100, 18900], "jsb/lstm@20000": [36, 18108]}


# ------------------------------------------------------------------ tables from a fabricated store
BUDGETS = (5_000, 20_000)
UNITS = ("tanh", "gru", "lstm")
# test NLL of seeds 1..3 (fresh) per (budget, unit): at 5k the GRU is best and the LSTM runner-up; at 20k the
# LSTM is best and the GRU runner-up — the order changes, and tanh stays behind at both
TEST_NLL = {5_000: {"tanh": [9.30, 9.40, 9.35], "gru": [8.80, 8.90, 8.82], "lstm": [8.95, 9.05, 9.00]},
            20_000: {"tanh": [9.00, 9.10, 9.05], "gru": [8.60, 8.70, 8.66], "lstm": [8.40, 8.55, 8.45]}}
HIDDEN = {5_000: {"tanh": 36, "gru": 14, "lstm": 11}, 20_000: {"tanh": 100, "gru": 46, "lstm": 36}}


@pytest.fixture(scope="module")
def sized_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("sized")
    study = G.StudyConfig(datasets=["jsb"], units=list(UNITS), lr_candidates=1, seeds=3, report_seeds="fresh",
                          param_budgets=list(BUDGETS), train={"epochs": 3})
    grid = G.Grid(study, datasets=["jsb"])
    with FabricatedStore(out, study, grid, ["jsb"]) as st:
        for b in BUDGETS:
            for u in UNITS:
                n = HIDDEN[b][u]
                extra = {"recurrent_parameters": _paper_count(u, MUSIC_INPUT, n), "input_size": MUSIC_INPUT}
                search = grid.search_specs("jsb", u, budget=b)[0]
                st.put(search, {**_summary(search.run_id, "completed", 5.0, hidden_size=n), **extra})
                for spec, v in zip(grid.seed_specs("jsb", u, search.lr, b), TEST_NLL[b][u]):
                    st.put(spec, {**_summary(spec.run_id, "completed", v, hidden_size=n), **extra})
    build_report(out, log=lambda m: None)
    return out


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_table2_per_budget_with_parameters_and_tests_per_budget(sized_study):
    t2 = [r for r in _csv(sized_study / "table2.csv") if not r["unit"].startswith("reference")]
    assert [(r["budget"], r["unit"]) for r in t2] == [(str(b), u) for b in BUDGETS for u in UNITS]
    for r in t2:
        b, u = int(r["budget"]), r["unit"]
        assert int(r["hidden_size"]) == HIDDEN[b][u]
        assert int(r["parameters"]) == _paper_count(u, MUSIC_INPUT, HIDDEN[b][u])
        assert float(r["test_mean"]) == pytest.approx(sum(TEST_NLL[b][u]) / 3)
        # the paper's numbers stand only beside the paper's size (~20k for music), not beside 5k
        assert (r["paper_test"] == "") == (b == 5_000)
    md = (sized_study / "table2.md").read_text()
    assert "| JSB Chorales | GRU | 4,326 (5,000) | 14 |" in md and "## Best unit per dataset and budget" in md
    tests = _csv(sized_study / "table2_tests.csv")
    assert [(r["budget"], r["best"], r["runner_up"]) for r in tests] == [("5000", "gru", "lstm"),
                                                                         ("20000", "lstm", "gru")]
    ps = []
    for r, (b, best, second) in zip(tests, [(5_000, "gru", "lstm"), (20_000, "lstm", "gru")]):
        p = sst.ttest_rel(TEST_NLL[b][second], TEST_NLL[b][best]).pvalue
        assert float(r["p"]) == pytest.approx(p) and int(r["pairs"]) == 3
        ps.append(p)
    lo, hi = sorted(ps)          # Holm over the two (dataset, budget) tests, by hand
    holm = {lo: min(1.0, 2 * lo), hi: min(1.0, max(2 * lo, hi))}
    assert [float(r["p_holm"]) for r in tests] == pytest.approx([holm[p] for p in ps])
    assert "JSB Chorales, 5,000 parameters" in md


def test_size_table_figure_and_the_answer(sized_study):
    rows = _csv(sized_study / "size.csv")
    assert [(int(r["budget"]), r["unit"]) for r in rows] == [(b, u) for b in BUDGETS for u in UNITS]
    for name in ("size.md", "size.png", "size.svg"):
        assert (sized_study / name).stat().st_size > 0, name
    md = (sized_study / "size.md").read_text()
    # the order changes (GRU < LSTM < tanh at 5k, LSTM < GRU < tanh at 20k); tanh's gap holds at both
    gap5 = sum(TEST_NLL[5_000]["tanh"]) / 3 - sum(TEST_NLL[5_000]["gru"]) / 3
    gap20 = sum(TEST_NLL[20_000]["tanh"]) / 3 - sum(TEST_NLL[20_000]["lstm"]) / 3
    assert "the order of the units changes with the size (5,000: GRU < LSTM < tanh; 20,000: LSTM < GRU < tanh)" in md
    assert f"gap to the better gated unit holds (5,000: {gap5:+.3f}, 20,000: {gap20:+.3f} nats)" in md
    assert "Bai et al. 2018" in md
    svg = (sized_study / "size.svg").read_text()
    assert "test NLL against size" in svg and "recurrent parameters" in svg
    page = (sized_study / "report.html").read_text()
    assert "Test NLL against size" in page and page.count("<svg") >= 2 and "size axis" in page


def test_the_answer_sentence_when_the_order_holds():
    orders = [{"dataset": "jsb", "budget": b, "order": ["gru", "lstm", "tanh"], "tanh_gap": g, "complete": True}
              for b, g in ((5_000, 0.4), (20_000, -0.1))]
    s = answer(orders)
    assert "is the same at every budget" in s and "holds at some budgets only" in s
    assert "no answer" in answer(orders[:1])
