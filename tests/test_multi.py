"""K models trained as one program equal the same K models trained one by one."""
import json
import os
from pathlib import Path

import pytest

from gatedrnn.multi import train_many
from gatedrnn.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
DATA = os.environ.get("GATEDRNN_DATA_DIR") or str(REPO.parent / "shared" / "data")


def _cfg(**kw):
    base = dict(dataset="jsb", unit="lstm", hidden_size=12, limit_sequences=24, crop_length=40, batch_size=5,
                epochs=4, patience=2, data_dir=DATA)
    base.update(kw)
    return TrainConfig(**base)


def _hist(d):
    return [json.loads(line) for line in (Path(d) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("unit", ["lstm", "gru", "tanh"])
def test_models_as_one_equal_single_runs(tmp_path, unit):
    cfgs = [_cfg(unit=unit, lr=3e-3, seed=0), _cfg(unit=unit, lr=1e-2, seed=1, weight_noise=0.0),
            _cfg(unit=unit, lr=1e-3, seed=2, patience=1)]
    many = train_many(cfgs, [tmp_path / f"m{k}" for k in range(3)], log=lambda m: None)
    for k, cfg in enumerate(cfgs):
        one = train(cfg, tmp_path / f"s{k}", log=lambda m: None)
        hm, hs = _hist(tmp_path / f"m{k}"), _hist(tmp_path / f"s{k}")
        assert len(hm) == len(hs)
        for a, b in zip(hm, hs):
            assert a["updates"] == b["updates"]
            assert a["valid_nll"] == pytest.approx(b["valid_nll"], rel=2e-4)
            assert a["train_nll"] == pytest.approx(b["train_nll"], rel=2e-4)
        for key in ("status", "best_epoch", "epochs"):
            assert many[k][key] == one[key], key
        assert many[k]["test_nll"] == pytest.approx(one["test_nll"], rel=2e-4)


def test_incompatible_configs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="hidden_size"):
        train_many([_cfg(), _cfg(hidden_size=13)], [tmp_path / "a", tmp_path / "b"])
