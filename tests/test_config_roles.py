"""Config fields carry their own roles (issue 22): the sets of fields the code works with are derived from
the tags on TrainConfig's and StudyConfig's fields, and `gatedrnn reproduce`'s flags are generated from
StudyConfig as `gatedrnn train`'s are from TrainConfig — with the same flag names, values and run ids."""
from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

import gatedrnn.study.grid as G
import gatedrnn.train as T
from gatedrnn.cli import build_parser, main
from gatedrnn.cli.study import STUDY_FLAGS, study_from_args
from gatedrnn.utils import fields_with, roles_of

from _paths import REPO


def _study(*args):
    return study_from_args(build_parser(["reproduce"]).parse_args(["reproduce", *args]))


# ------------------------------------------------------------------------------------ the derived sets
def test_the_derived_sets_are_the_hand_written_ones():
    """What train.py and grid.py wrote out by hand before the fields were tagged."""
    assert set(T.NOT_COMPUTED) == set(G.NOT_IN_ID) == {"data_dir", "device", "eval_train_every"}
    assert set(T.SHARED) == {"dataset", "data_dir", "data_format", "width", "limit_sequences", "subset",
                             "crop_length", "unit", "hidden_size", "budget", "peepholes", "reset_after",
                             "forget_bias", "device"}
    not_shared = {"dataset", "unit", "lr", "seed", "data_dir", "hidden_size", "budget", "peepholes",
                  "reset_after", "forget_bias"}
    assert set(G.NOT_SHARED) == not_shared
    assert G.TRAIN_FIELDS == tuple(f for f in T.TrainConfig.model_fields if f not in not_shared)
    assert set(STUDY_FLAGS) == set(G.StudyConfig.model_fields) - {
        "budget", "search_seed", "train", "per_dataset", "halving_fractions"}
    assert set(T.UNIT_OPTIONS) <= set(fields_with(T.TrainConfig, "architecture"))


def test_every_role_is_one_the_config_module_explains():
    """A misspelt role would silently drop a field from its set: each role used is a key of TRAIN_ROLES /
    STUDY_ROLES, and each of those keys is used."""
    for model, known in ((T.TrainConfig, T.TRAIN_ROLES), (G.StudyConfig, G.STUDY_ROLES)):
        used = {r for f in model.model_fields.values() for r in roles_of(f)}
        assert used == set(known), (model.__name__, used ^ set(known))


def test_the_lr_range_default_is_written_once():
    assert (G.StudyConfig().lr_low, G.StudyConfig().lr_high) == G.LR_RANGE == (-12.0, -6.0)
    assert G.lr_candidates(3) == G.lr_candidates(3, *G.LR_RANGE)
    assert "else -12.0 -6.0)" in " ".join(_help().split())


# ------------------------------------------------------------------------------------ reproduce's flags
def _help() -> str:
    p = build_parser(["reproduce"])
    sub = next(a for a in p._actions if a.dest == "command")
    return sub.choices["reproduce"].format_help()


def test_reproduce_help_lists_a_flag_for_every_field_that_is_one():
    """Every StudyConfig field not of role "no_flag" (lr_low and lr_high together: --lr-range) and every
    TrainConfig field a study shares is a flag; a "no_flag" field is not."""
    text = _help()
    flags = {(G.StudyConfig.model_fields[f].json_schema_extra or {}).get("flag") or f for f in STUDY_FLAGS}
    assert flags == set(STUDY_FLAGS) - {"lr_low", "lr_high"} | {"lr_range"}
    for f in [*flags, *({"data_format": "format"}.get(f, f) for f in G.TRAIN_FIELDS)]:
        assert f"--{f.replace('_', '-')} " in text, f
    for f in ("search_seed", "per_dataset", "halving_fractions", "hidden_size", "lr", "seed", "unit"):
        assert f"--{f.replace('_', '-')} " not in text, f
    # the defaults come from the field; the budget's preset over them
    squashed = " ".join(text.split())
    assert "(default: the budget's, else tanh,gru,lstm)" in squashed
    assert "(default: the budget's, else none; 0: none, overriding the budget)" in squashed     # --tbptt


@pytest.mark.parametrize("args,field,want", [
    ("--datasets jsb,nottingham", "datasets", ["jsb", "nottingham"]),
    ("--units LSTM,gru", "units", ["lstm", "gru"]),
    ("--units tanh --ablation gru", "units", ["tanh", *G.ABLATIONS["gru"]]),
    ("--lr-candidates 3", "lr_candidates", 3),
    ("--lr-range -9.9631 -9.9627", "lr_low", -9.9631),
    ("--lr-range -9.9631 -9.9627", "lr_high", -9.9627),
    ("--lr-base 10", "lr_base", "10"),
    ("--lr-seed 4", "lr_seed", 4),
    ("--lr-draw random", "lr_draw", "random"),
    ("--seeds 1", "seeds", 1),
    ("--report-seeds fresh", "report_seeds", "fresh"),
    ("--lr-extend 1", "lr_extend", 1),
    ("--search halving", "search", "halving"),
    ("--search halving --halving-rungs 20,10", "halving_rungs", [10, 20]),
    ("--search halving --halving-eta 3", "halving_eta", 3),
    ("--param-budgets 20_000,5000", "param_budgets", [5000, 20000]),
    ("--data-dir /elsewhere", "data_dir", "/elsewhere"),
])
def test_each_generated_flag_sets_its_field(args, field, want):
    assert getattr(_study("--budget", "smoke", *args.split()), field) == want
    assert getattr(_study("--budget", "smoke"), field) != want          # (the flag, not the preset)


def test_a_flag_not_given_keeps_the_preset_and_zero_clears_a_none_default():
    s = _study("--budget", "speech")
    assert (s.lr_low, s.lr_high, s.lr_draw) == (-13.0, -6.0, "stratified")
    assert s.per_dataset["fsdd-b"]["tbptt"] == 100 and s.train_fields("fsdd-b")["tbptt"] == 100
    assert "tbptt" not in _study("--budget", "speech", "--tbptt", "0").train_fields("fsdd-b")


def test_the_released_command_line_computes_the_committed_runs_ids():
    """/work/logs' long real command line (results/paper-released-full): its study and its first run id
    are those of the run directory committed under results/, through the generated flags."""
    args = ("--budget paper --datasets nottingham,musedata --units gru --lr-candidates 1 --lr-range -9.9631 "
            "-9.9627 --seeds 3 --report-seeds include-search --batch-size 1 --optimizer rmsprop-momentum "
            "--lr-final 0.01 --lr-decay-epochs 500 --patience 0 --epochs 500 --skip-nonfinite 100")
    study = _study(*shlex.split(args))
    g = G.Grid(study)
    ids = [s.run_id for d, u in g.cells() for s in g.search_specs(d, u)]
    assert study.key() == "3f63b546549f"
    assert ids[0] == "nottingham-gru-lr0.001002-s0-bf6a83ed7825"
    assert (REPO / "results" / "paper-released-full" / "runs" / ids[0]).is_dir()
    assert study.train == {"batch_size": 1, "optimizer": "rmsprop-momentum", "lr_final": 0.01,
                           "lr_decay_epochs": 500, "patience": 0, "epochs": 500, "skip_nonfinite": 100}


@pytest.mark.parametrize("args,needle", [
    (["--lr-range", "-5", "x"], "argument --lr-range: expected a finite number, got 'x'"),
    (["--lr-range", "-5"], "argument --lr-range: expected 2 arguments"),
    (["--halving-rungs", "0,3"], "argument --halving-rungs: expected comma-separated epochs"),
    (["--lr-candidates", "0"], "argument --lr-candidates: expected an integer > 0, got '0'"),
    (["--lr-base", "3"], "argument --lr-base: invalid choice: '3'"),
    (["--halving-eta", "1"], "argument --halving-eta: expected an integer >= 2, got '1'"),
    (["--param-budgets", "5000,-1"], "argument --param-budgets: expected comma-separated positive numbers"),
    (["--lr-range", "-5", "-8"], "lr range must have low < high"),
])
def test_an_invalid_value_of_a_generated_flag_is_one_line_exit_2(args, needle, capsys):
    try:
        code = main(["reproduce", "--budget", "smoke", "--dry-run", *args])
    except SystemExit as e:          # argparse's own exit (the parser's error: one line)
        code = e.code
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("gatedrnn") and needle in err[0], err


def test_an_invalid_value_is_one_line_from_the_real_command():
    p = subprocess.run([sys.executable, "-m", "gatedrnn", "reproduce", "--lr-draw", "sobol"], capture_output=True,
                       text=True, timeout=300)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "argument --lr-draw: invalid choice: 'sobol'" in lines[0]


# ------------------------------------------------------------------------------------ one size check
def test_hidden_size_is_checked_in_one_place():
    """A unit class, a unit of one's own and the parameter count refuse a size with the same message."""
    import torch

    from gatedrnn.nn import make_unit
    from gatedrnn.nn.counting import count_parameters
    from gatedrnn.nn.imported import ImportedUnit
    for build in (lambda: make_unit("gru", input_size=3, hidden_size=0),
                  lambda: ImportedUnit(torch.nn.GRU, 3, 0),
                  lambda: count_parameters("gru", 3, 0),
                  lambda: count_parameters("gru", 3, 2.5)):
        with pytest.raises(ValueError, match=r"^hidden_size must be a positive integer, got (0|2\.5)$"):
            build()
    assert count_parameters("gru", 3, 2) == 3 * (2 * 3 + 2 * 2 + 2)
