"""Units of one's own, named by import path (nn/imported.py): torch.nn:GRU / torch.nn:LSTM as units, the
hidden size matched by counting instances, padding for a unit that cannot take lengths, weight noise, the
run's record of the code (import path, file, sha256), the rule that reading runs and studies never imports
the code they name, and every failure as one line with exit code 2."""
from __future__ import annotations

import hashlib
import inspect
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gatedrnn.cli import main
from gatedrnn.model import SequenceModel
from gatedrnn.nn import imported
from gatedrnn.nn import ImportedUnit, UnitImportError, allow_units, make_unit, unit_family, unit_options
from gatedrnn.nn.counting import BUDGET, TABLE1_INPUT, count_parameters, match_hidden_size
from _paths import REPO, data_dir

DATA = str(data_dir())


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """No unit named yet, in this process or its environment (restored afterwards)."""
    monkeypatch.setenv(imported.ENV, "")
    monkeypatch.setattr(imported, "_allowed", set())
    monkeypatch.setattr(imported, "_imported", {})


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """write(name, source) -> a module importable as `name` (dropped from sys.modules afterwards)."""
    root = tmp_path / "unitmods"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    names = []

    def write(name: str, source: str) -> Path:
        p = root / f"{name}.py"
        p.write_text(textwrap.dedent(source))
        names.append(name)
        return p
    yield write
    for n in names:
        sys.modules.pop(n, None)


LEAKY = """
    import torch
    from torch import nn

    class Leaky(nn.Module):
        '''h_t = (1 − a) h_{t−1} + a tanh(W x_t + U h_{t−1} + b), a = 0.5; takes lengths (and records them).'''
        def __init__(self, input_size, hidden_size, batch_first=True):
            super().__init__()
            self.cell = nn.RNNCell(input_size, hidden_size)
            self.seen = []

        def forward(self, x, h=None, lengths=None):
            self.seen.append(lengths)
            h = x.new_zeros(x.shape[0], self.cell.hidden_size) if h is None else h
            outs = []
            for t in range(x.shape[1]):
                new = 0.5 * h + 0.5 * self.cell(x[:, t], h)
                if lengths is not None:
                    new = torch.where((t < lengths).unsqueeze(1), new, h)
                h = new
                outs.append(h)
            return torch.stack(outs, 1), h
"""


# ------------------------------------------------------------------ torch.nn's own units
def test_torch_nn_gru_and_lstm_are_units():
    allow_units("torch.nn:GRU", "torch.nn:LSTM")
    # counted by instances: torch.nn has two bias vectors per gate, GRU 3(I·n + n² + 2n), LSTM 4(I·n + n² + 2n)
    for I, n in ((100, 45), (20, 226)):
        assert count_parameters("torch.nn:GRU", I, n) == 3 * (I * n + n * n + 2 * n)
        assert count_parameters("torch.nn:LSTM", I, n) == 4 * (I * n + n * n + 2 * n)
    assert match_hidden_size("torch.nn:GRU", 100, 20_100) == 45           # 19,845 (n = 46: 20,424)
    assert match_hidden_size("torch.nn:LSTM", 100, 20_100) == 36          # 19,872 (n = 37: 20,572)
    assert match_hidden_size("torch.nn:GRU", 20, 168_400) == 226          # 168,144 (n = 227: 169,569)
    assert match_hidden_size("torch.nn:LSTM", 20, 168_400) == 194         # 167,616 (n = 195: 169,260)
    for path, cls in (("torch.nn:GRU", torch.nn.GRU), ("torch.nn:LSTM", torch.nn.LSTM)):
        torch.manual_seed(0)
        u = make_unit(path, 5, 7)
        assert isinstance(u, ImportedUnit) and isinstance(u.inner, cls) and u.path() == "module"
        assert u.kernel_spec() is None and unit_family(path) == path and unit_options(path) == {}
        x = torch.randn(3, 9, 5)
        out, state = u(x)
        ref, ref_state = u.inner(x)
        torch.testing.assert_close(out, ref)
        h = state[0] if isinstance(state, tuple) else state
        assert h.shape == (3, 7)                             # torch.nn's (layers = 1, B, H) handed out as (B, H)
        # the state goes back in the module's own form: two halves equal the whole
        o1, s1 = u(x[:, :4])
        o2, _ = u(x[:, 4:], s1)
        torch.testing.assert_close(torch.cat([o1, o2], 1), out)
        # a class given directly needs no naming
        assert isinstance(make_unit(cls, 5, 7).inner, cls)


def test_padding_for_a_unit_that_cannot_take_lengths():
    """torch.nn.GRU takes no lengths: outputs after a sequence's end are 0 and unscored, so the model's NLL of a
    padded batch is each sequence's NLL alone; its final state ran through the padding (documented)."""
    allow_units("torch.nn:GRU")
    torch.manual_seed(0)
    m = SequenceModel("torch.nn:GRU", 6, 5, 6)
    x = (torch.rand(3, 12, 6) < 0.4).float()
    y = (torch.rand(3, 12, 6) < 0.4).float()
    lengths = torch.tensor([12, 7, 3])
    mask = torch.arange(12)[None] < lengths[:, None]
    nll = m.nll(x, y, mask, lengths)
    assert torch.all(nll[~mask] == 0)
    for b, L in enumerate(lengths.tolist()):
        alone = m.nll(x[b:b + 1, :L], y[b:b + 1, :L], mask[b:b + 1, :L], lengths[b:b + 1])
        torch.testing.assert_close(nll[b, :L], alone[0])
    torch.testing.assert_close(m.eval().step_nll(x, y, mask, lengths), nll.detach().double(), rtol=1e-5, atol=1e-5)
    out, h = m.rnn(x, lengths=lengths)
    assert torch.all(out[1, 7:] == 0)
    assert not torch.allclose(h[1], m.rnn(x[1:2, :7])[1][0])   # not its state after its last valid step


def test_a_unit_that_takes_lengths_gets_them(modules):
    modules("leaky_unit", LEAKY)
    allow_units("leaky_unit:Leaky")
    u = make_unit("leaky_unit:Leaky", 4, 3)
    x, lengths = torch.randn(2, 6, 4), torch.tensor([6, 2])
    out, h = u(x, lengths=lengths)
    assert torch.equal(u.inner.seen[-1], lengths)
    torch.testing.assert_close(h[1], u(x[1:2, :2])[1][0])        # with lengths: its last valid state
    assert torch.all(out[1, 2:] == 0)


def test_weight_noise_on_the_matrices_only():
    allow_units("torch.nn:GRU")
    torch.manual_seed(0)
    u = make_unit("torch.nn:GRU", 5, 7, weight_noise=0.075)
    x = torch.randn(2, 6, 5)
    u.eval()
    torch.testing.assert_close(u(x)[0], u(x)[0])
    u.train()
    a, b = u(x)[0], u(x)[0]
    assert not torch.allclose(a, b)                                  # a fresh draw every pass
    a.sum().backward()
    assert all(p.grad is not None for p in u.parameters())           # through the noise, to the clean weights
    # the noise touches weight_ih_l0 / weight_hh_l0 only: with them zeroed and noise off, the biases alone
    seen = {}
    real = torch.func.functional_call

    def spy(module, params, args, kwargs=None):
        seen.update({n: p for n, p in params.items()})
        return real(module, params, args, kwargs)
    torch.func.functional_call = spy
    try:
        u(x)
    finally:
        torch.func.functional_call = real
    for n, p in u.inner.named_parameters():
        assert (seen[n] is p) == (p.dim() < 2), n


# ------------------------------------------------------------------ configs, ids, records
def test_configs_take_import_paths_and_keep_every_run_id():
    from gatedrnn.study.grid import StudyConfig, run_id_of
    from gatedrnn.train import TrainConfig
    cfg = TrainConfig(unit="torch.nn:GRU")
    assert cfg.unit == "torch.nn:GRU" and TrainConfig(unit="GRU").unit == "gru"
    assert run_id_of(cfg.model_dump()).startswith("jsb-torch.nn_GRU-lr0.003-s0-")
    with pytest.raises(ValueError, match="unknown unit"):
        TrainConfig(unit="gru2")
    with pytest.raises(ValueError, match="takes no option 'peepholes'"):
        TrainConfig(unit="torch.nn:LSTM", peepholes=False)
    assert StudyConfig(units=["gru", "torch.nn:LSTM"]).units == ["gru", "torch.nn:LSTM"]
    assert imported._allowed == set() and "torch.nn" not in imported._imported      # nothing named, nothing imported
    # the committed runs keep their ids (the registered names are recorded as before)
    checked = 0
    for d in sorted((REPO / "results").glob("*/runs/*/config.json"))[::25]:
        assert run_id_of(TrainConfig(**json.loads(d.read_text())).model_dump()) == d.parent.name, d
        checked += 1
    assert checked > 10


def _tiny(out: Path, unit: str, *extra: str) -> list[str]:
    return ["train", "--dataset", "jsb", "--unit", unit, "--hidden-size", "4", "--epochs", "1", "--batch-size", "4",
            "--limit-sequences", "4", "--crop-length", "12", "--data-dir", DATA, "--out", str(out), "--no-progress",
            *extra]


def test_a_run_records_the_code_and_reading_it_back_needs_the_path_again(modules, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "imported.txt"
    monkeypatch.setenv("SPY_MARKER", str(marker))
    src = modules("spy_unit", """
        import os, pathlib
        pathlib.Path(os.environ["SPY_MARKER"]).write_text("imported")
        from torch import nn

        class Spy(nn.GRU):
            pass
    """)
    run = tmp_path / "run"
    assert main(_tiny(run, "spy_unit:Spy")) == 0 and marker.exists()
    want = {"import_path": "spy_unit:Spy", "class": "spy_unit.Spy", "file": str(src),
            "sha256": hashlib.sha256(src.read_bytes()).hexdigest()}
    res = json.loads((run / "result.json").read_text())
    spec = json.loads((run / "model.json").read_text())
    assert res["unit_source"] == want and spec["unit_source"] == want and res["path"] == "module"
    assert res["recurrent_parameters"] == 3 * (88 * 4 + 16 + 8) and res["unit"] == "spy_unit:Spy"
    # a new process: nothing named, the module not imported
    marker.unlink()
    sys.modules.pop("spy_unit")
    imported._allowed.clear(), imported._imported.clear()
    monkeypatch.setenv(imported.ENV, "")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data-dir", DATA]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--import-unit spy_unit:Spy" in err and "is named in a file" in err
    from gatedrnn.train import ModelSpec, TrainConfig, same_run
    cfg = json.loads((run / "config.json").read_text())
    assert same_run(cfg, TrainConfig(**cfg).model_dump()) and ModelSpec.from_json(spec).unit == "spy_unit:Spy"
    assert not marker.exists() and "spy_unit" not in sys.modules
    # named again: evaluated; with a changed file, a warning says so
    assert main(["evaluate", str(run), "--data-dir", DATA, "--import-unit", "spy_unit:Spy"]) == 0 and marker.exists()
    src.write_text(src.read_text() + "\n# changed\n")
    from gatedrnn.train import load_run
    with pytest.warns(RuntimeWarning, match="changed since the run"):
        load_run(run)
    with pytest.raises(SystemExit) as e:                          # argparse: one line, exit 2
        main(["evaluate", str(run), "--import-unit", "not-a-path"])
    assert e.value.code == 2 and "expected package.module:ClassName" in capsys.readouterr().err


def test_a_study_with_units_of_ones_own(modules, tmp_path, monkeypatch, capsys):
    """reproduce --units torch.nn:GRU,spy: trains (run ids, records); report, status and a Store never import
    the spy; analyze needs --import-unit."""
    marker = tmp_path / "imported.txt"
    monkeypatch.setenv("SPY_MARKER", str(marker))
    modules("spy_study_unit", """
        import os, pathlib
        pathlib.Path(os.environ["SPY_MARKER"]).write_text("imported")
        from torch import nn

        class Spy(nn.LSTM):
            pass
    """)
    out = tmp_path / "study"
    args = ["reproduce", "--budget", "smoke", "--datasets", "jsb", "--units", "torch.nn:GRU,spy_study_unit:Spy",
            "--lr-candidates", "1", "--seeds", "1", "--epochs", "1", "--out", str(out), "--data-dir", DATA,
            "--jobs", "0", "--no-progress", "--no-report"]
    assert main(args) == 0, capsys.readouterr().err
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert any(r.startswith("jsb-torch.nn_GRU-") for r in runs) and any(r.startswith("jsb-spy_study_unit_Spy-")
                                                                         for r in runs)
    res = [json.loads(p.read_text()) for p in (out / "runs").glob("*/result.json")]
    assert {r["unit_source"]["import_path"] for r in res} == {"torch.nn:GRU", "spy_study_unit:Spy"}
    assert {r["hidden_size"] for r in res} == {45, 36}                   # Table 1's music budget, by instances
    marker.unlink()
    sys.modules.pop("spy_study_unit")
    imported._allowed.clear(), imported._imported.clear()
    monkeypatch.setenv(imported.ENV, "")
    assert main(["report", str(out), "--no-figures"]) == 0
    assert main(["status", str(out)]) == 0
    assert "spy_study_unit:Spy" in (out / "table2.md").read_text()
    assert not marker.exists() and "spy_study_unit" not in sys.modules
    capsys.readouterr()
    assert main(["analyze", str(out), "--max-distance", "2", "--max-sequences", "2"]) == 2
    assert "--import-unit" in capsys.readouterr().err
    assert not marker.exists()


# ------------------------------------------------------------------ failures: one line, exit code 2
FAILURES = {
    "does not import": ("broken_unit", "raise RuntimeError('no such dependency\\n on two lines')\n", "broken_unit:U",
                        "module 'broken_unit' does not import (RuntimeError: no such dependency on two lines)"),
    "syntax error": ("syntax_unit", "class U(:\n", "syntax_unit:U", "does not import (SyntaxError"),
    "missing class": ("empty_unit", "X = 1\n", "empty_unit:U", "module 'empty_unit' has no 'U'"),
    "not a module class": ("plain_unit", "class U:\n    def __init__(self, i, h, batch_first=True): pass\n",
                           "plain_unit:U", "is not a torch.nn.Module class"),
    "wrong constructor": ("ctor_unit", """
        from torch import nn
        class U(nn.Module):
            def __init__(self, hidden_size):
                super().__init__()
    """, "ctor_unit:U", "U cannot be built as Class(input_size, hidden_size, batch_first=True)"),
    "wrong forward": ("fwd_unit", """
        from torch import nn
        class U(nn.GRU):
            def forward(self):
                return None
    """, "fwd_unit:U", "U.forward cannot be called as forward(x)"),
    "wrong output shape": ("shape_unit", """
        from torch import nn
        class U(nn.GRU):
            def __init__(self, input_size, hidden_size, batch_first=True):
                super().__init__(input_size, hidden_size, batch_first=True, bidirectional=True)   # 2 hidden
    """, "shape_unit:U", "forward's output must be (batch, time, hidden) = (2, 5, 3), got (2, 5, 6)"),
    "no pair": ("pair_unit", """
        from torch import nn
        class U(nn.GRU):
            def forward(self, x):
                return super().forward(x)[0]
    """, "pair_unit:U", "forward must return (output, state), got a Tensor"),
    "never matches the budget": ("flat_unit", """
        import torch
        from torch import nn
        class U(nn.Module):
            def __init__(self, input_size, hidden_size, batch_first=True):
                super().__init__()
                self.w = nn.Parameter(torch.zeros(3))
                self.hidden_size = hidden_size
            def forward(self, x):
                return x.new_zeros(x.shape[0], x.shape[1], self.hidden_size) + self.w.sum(), None
    """, "flat_unit:U", "never matches the budget of 20,100 parameters"),
}


@pytest.mark.parametrize("case", FAILURES)
def test_each_failure_is_one_line_and_exit_2(case, modules, tmp_path, capsys):
    name, source, path, needle = FAILURES[case]
    modules(name, source)
    budget = case == "never matches the budget"
    args = _tiny(tmp_path / "r", path)
    if budget:                       # Table 1's size, matched to the budget: no --hidden-size
        i = args.index("--hidden-size")
        del args[i:i + 2]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "r" / "best.pt").exists()
    # the study checks every unit it names before any run: the same line
    if case in ("does not import", "wrong output shape", "never matches the budget"):
        assert main(["reproduce", "--budget", "smoke", "--datasets", "jsb", "--units", f"gru,{path}",
                     "--out", str(tmp_path / "s"), "--data-dir", DATA, "--jobs", "0", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and (needle if case != "wrong output shape" else "got (2, 5, 6)") in err, err
        assert not (tmp_path / "s" / "runs").exists() or not any((tmp_path / "s" / "runs").iterdir())


def test_budget_too_far_is_refused(modules):
    modules("huge_unit", """
        import torch
        from torch import nn
        class U(nn.Module):
            def __init__(self, input_size, hidden_size, batch_first=True):
                super().__init__()
                self.w = nn.Parameter(torch.zeros(50_000 + hidden_size))
            def forward(self, x):
                return x, None
    """)
    allow_units("huge_unit:U")
    with pytest.raises(UnitImportError, match="cannot be matched to the budget of 20,100 parameters"):
        match_hidden_size("huge_unit:U", TABLE1_INPUT["music"], BUDGET["music"])


def test_import_rules():
    with pytest.raises(UnitImportError, match="named in a file"):
        make_unit("torch.nn:GRU", 3, 4)                         # not named: not imported
    with pytest.raises(ValueError, match="unknown unit"):
        make_unit("torch.nn.GRU", 3, 4)                         # not an import path either
    allow_units("torch.nn:GRU")
    assert "torch.nn:GRU" in imported.os.environ[imported.ENV]   # the workers a study starts inherit the name
    import subprocess
    p = subprocess.run([sys.executable, "-c", "from gatedrnn.nn.imported import allowed; "
                        "print(allowed('torch.nn:GRU'), allowed('torch.nn:LSTM'))"], capture_output=True, text=True)
    assert p.stdout.split() == ["True", "False"], p.stderr
    with pytest.raises(TypeError, match="takes no option"):
        make_unit("torch.nn:GRU", 3, 4, reset_after=True)
    assert inspect.isclass(imported.import_unit("torch.nn:GRU"))
