"""study/progress.py: progress per update and per second, from hand-made histories with known answers."""
from types import SimpleNamespace

import pytest

from gatedrnn.study import progress


def _hist(valid, seconds_per_epoch, updates_per_epoch=10):
    return [{"epoch": e, "updates": e * updates_per_epoch, "seconds": e * seconds_per_epoch, "valid_nll": v}
            for e, v in enumerate(valid)]


def _cell(unit, *hists, status="completed"):
    return {"dataset": "jsb", "unit": unit, "seeds": [{"row": {"history": h}, "status": status} for h in hists]}


@pytest.fixture
def data(monkeypatch):
    monkeypatch.setattr(progress, "EPOCH_MARKS", (1, 2))
    # tanh: 1 s per epoch, two seeds; gru: 2 s per epoch, one seed; a diverged lstm seed is not reported
    cells = [_cell("tanh", _hist([10, 8, 7, 7.5], 1.0), _hist([10, 9, 8, 6], 1.0)),
             _cell("gru", _hist([10, 7, 6, 5], 2.0)),
             _cell("lstm", _hist([10, 1, 1, 1], 1.0), status="diverged")]
    return {"grid": SimpleNamespace(datasets=["jsb"], budgets=[None], sized=False), "cells": cells}


def test_marks_targets_and_spreads_by_hand(data):
    rows = {r["unit"]: r for r in progress.progress_rows(data)}
    assert set(rows) == {"tanh", "gru"}                       # the diverged seed is no reported run
    t, g = rows["tanh"], rows["gru"]
    # 10 updates per epoch; median epoch over every reported run: seconds (1, 1, 1, 1, 1, 1, 2, 2, 2) -> 1
    assert t["updates_per_epoch"] == 10 and t["median_epoch_seconds"] == 1.0
    # after 1 epoch of updates (<= 10): tanh seeds 8 and 9, gru 7; after 2 (<= 20): tanh 7 and 8, gru 6
    assert t["valid_at_1_epochs_of_updates"] == {"median": 8.5, "min": 8, "max": 9, "n": 2, "of": 2}
    assert g["valid_at_1_epochs_of_updates"]["median"] == 7 and g["valid_at_2_epochs_of_updates"]["median"] == 6
    # after 1 s: tanh has epoch 1 (8, 9), gru only its untrained epoch 0 (10); after 2 s gru has epoch 1 (7)
    assert t["valid_at_1_epochs_of_seconds"]["median"] == 8.5 and g["valid_at_1_epochs_of_seconds"]["median"] == 10
    assert g["valid_at_2_epochs_of_seconds"]["median"] == 7
    # target: the worst unit's median best — tanh's bests are 7 and 6, median 6.5; gru's 5 -> 6.5
    assert t["target_valid_nll"] == 6.5
    # tanh seed a never gets to 6.5; seed b at epoch 3 (30 updates, 3 s); gru at epoch 2 (20 updates, 4 s)
    assert t["updates_to_target"] == {"median": 30, "min": 30, "max": 30, "n": 1, "of": 2}
    assert g["updates_to_target"]["median"] == 20 and g["seconds_to_target"]["median"] == 4
    md = progress.progress_markdown(list(rows.values()))
    assert "30 [30, 30] (1 of 2 never)" in md and "| 6.500 |" in md
    flat = progress.flat(list(rows.values()))
    assert flat[0]["updates_to_target_median"] == 30 and flat[0]["updates_to_target_seeds"] == 1
