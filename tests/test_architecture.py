"""The package's shape, held by tests: the layers import only downwards (the pipeline data/kernels → nn →
heads → model → train → generate/analysis → study → cli), and no function is too long to hold in one's head."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "gatedrnn"
# The layer of each top-level module or package of gatedrnn, bottom first. A module may import from its own
# layer or any layer below it, never from above.
LAYERS = {
    "status": 0, "utils": 0, "palette": 0, "units": 0, "data": 0, "kernels": 0,
    "nn": 1,
    "heads": 2,
    "model": 3,
    "config": 4, "train": 4,
    "generate": 5, "analysis": 5,
    "study": 6,
    "cli": 7, "__main__": 7, "__init__": 7,
}
MAX_FUNCTION_LINES = 80


def _part(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_parts(path: Path) -> set[str]:
    """Top-level parts of gatedrnn that a module imports (absolute or relative, at any depth in the file)."""
    tree = ast.parse(path.read_text())
    depth = len(path.relative_to(SRC).parts) - 1         # 0 for gatedrnn/x.py, 1 for gatedrnn/pkg/x.py
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.startswith("gatedrnn."):
                out.add(node.module.split(".")[1])
            elif node.level and node.level - 1 == depth:  # relative to the package root
                if node.module:
                    out.add(node.module.split(".")[0])
                else:
                    out.update(a.name for a in node.names)
            elif node.level and node.level - 1 < depth:  # within the module's own package
                out.add(path.relative_to(SRC).parts[0])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("gatedrnn."))
    return out


def test_every_module_has_a_layer():
    parts = {_part(p) for p in SRC.rglob("*.py")}
    assert parts <= set(LAYERS), f"modules without a layer in this test: {sorted(parts - set(LAYERS))}"


def test_layers_import_only_downwards():
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        me = _part(path)
        for other in _imported_parts(path):
            if other in LAYERS and LAYERS[other] > LAYERS[me]:
                upward.append(f"{path.relative_to(SRC)} imports {other} (layer {LAYERS[other]} > {LAYERS[me]})")
    assert not upward, "\n".join(upward)


def test_no_function_over_80_lines():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}: {n} lines")
    assert not long, "\n".join(long)


def test_the_layer_test_sees_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: a module of the data layer importing train is caught."""
    pkg = tmp_path / "gatedrnn"
    (pkg / "data").mkdir(parents=True)
    (pkg / "data" / "bad.py").write_text("from ..train import TrainConfig\nfrom . import sources\n")
    monkeypatch.setattr(__import__(__name__), "SRC", pkg)
    assert _imported_parts(pkg / "data" / "bad.py") == {"train", "data"}


def _modules_after(code: str) -> set[str]:
    """sys.modules after running `code` in a fresh interpreter (this one has imported everything)."""
    code = f"{code}\nimport sys; print(' '.join(sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


def _modules_after_importing(module: str) -> set[str]:
    return _modules_after(f"import {module}")


def test_a_studys_report_imports_no_training_code():
    """study/ knows runs, not tensors: the report takes its colours from palette.py, not from analysis.py (the
    analysis of trained models, torch and matplotlib figures)."""
    mods = _modules_after_importing("gatedrnn.study.report")
    assert "gatedrnn.study.report" in mods           # control: the import ran
    assert not {"gatedrnn.analysis", "matplotlib"} & mods


@pytest.mark.parametrize("module", ["gatedrnn.study.tables", "gatedrnn.study.report", "gatedrnn.config",
                                    "gatedrnn.units"])
def test_study_tables_and_report_import_no_torch(module):
    """The study names units and keys runs by their config (config.py, units.py), without the training code."""
    mods = _modules_after_importing(module)
    assert module in mods                            # control: the import ran
    assert "torch" not in mods


def test_a_studys_runs_are_named_without_torch():
    """Building a study's grid validates every run's TrainConfig and hashes its run id: unit names, families
    and config fields only, no torch. A config that gives a unit option reads that unit's declaration (the
    class, torch): the control that the check sees torch when it is imported."""
    grid = ("from gatedrnn.study.grid import Grid, budget_config\n"
            "g = Grid(budget_config('ablation'))\n"
            "assert len([s.run_id for d, u in g.cells() for s in g.search_specs(d, u)]) == 120")
    assert "torch" not in _modules_after(grid)
    assert "torch" in _modules_after("from gatedrnn.config import TrainConfig; TrainConfig(unit='lstm', forget_bias=1)")
