"""Committed runs are data that can be re-read without training: every run under results/ with a committed
best.pt evaluates, from the files alone, to the numbers its result.json records (issue 19: committed studies
can be re-read). One short run here (MuseData, the weight-noise-off GRU); the study runs' best.pt the same way."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from _paths import data_dir

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "results" / "musedata-gru-no-weight-noise"


def test_a_committed_run_evaluates_to_its_recorded_numbers():
    res = json.loads((RUN / "result.json").read_text())
    r = subprocess.run([sys.executable, "-m", "gatedrnn.cli", "evaluate", str(RUN), "--json",
                        "--data-dir", str(data_dir())], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    for split in ("train", "valid", "test"):
        assert got[split]["nll"] == pytest.approx(res[f"{split}_nll"], rel=1e-6)
        assert got[split]["nll_seqavg"] == pytest.approx(res[f"{split}_nll_seqavg"], rel=1e-6)
    # the convention changes the number: MuseData's longest pieces are its hardest (issue 19)
    assert got["test"]["nll_seqavg"] < got["test"]["nll"] - 0.5
