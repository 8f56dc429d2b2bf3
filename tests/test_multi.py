"""K models trained as one program equal the same K models trained one by one."""
import json
from pathlib import Path

import pytest

from _paths import data_dir
from gatedrnn import train as T
from gatedrnn.train import TrainConfig, train, train_many

DATA = str(data_dir())


def _cfg(**kw):
    base = dict(dataset="jsb", unit="lstm", hidden_size=12, limit_sequences=24, crop_length=40, batch_size=5,
                epochs=4, patience=2, data_dir=DATA)
    base.update(kw)
    return TrainConfig(**base)


def _hist(d):
    return [json.loads(line) for line in (Path(d) / "metrics.jsonl").read_text().splitlines()]


# lstm-fgr: its R does not stack, so its models train one by one (they must still train, and equal);
# mingru: no recurrent matrix (weight_hh None), stacked through its scan.
# Stacking forced on for every unit here (the rule stacks the LSTM only): the stacked path stays tested.
@pytest.mark.parametrize("unit", ["lstm", "gru", "tanh", "mgu", "lstm-fgr", "mingru"])
def test_models_as_one_equal_single_runs(tmp_path, unit, monkeypatch):
    monkeypatch.setattr(T, "stacking_wins", lambda unit, hidden_size: True)
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


def _strip(h):
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in h]


def _close(many, ones, dirs_m, dirs_s):
    """Every model's metrics.jsonl and result.json equal its single run's (rel. 2e-4, as above)."""
    for k, one in enumerate(ones):
        hm, hs = _hist(dirs_m[k]), _hist(dirs_s[k])
        assert len(hm) == len(hs)
        for a, b in zip(hm, hs):
            assert a.keys() == b.keys() and a["updates"] == b["updates"]
            for key in {"valid_nll", "train_nll", "train_nll_running", "lr"} & b.keys():
                assert a[key] == pytest.approx(b[key], rel=2e-4), key
        rm = json.loads((Path(dirs_m[k]) / "result.json").read_text())
        assert rm == {**many[k], "status": rm["status"]}
        for key in ("status", "best_epoch", "epochs", "updates", "skipped_updates", "hidden_size", "config"):
            assert rm[key] == one[key], key
        for key in ("train_nll", "valid_nll", "test_nll"):
            assert rm[key] == pytest.approx(one[key], rel=2e-4), key


def test_models_that_stop_leave_the_others_training(tmp_path, monkeypatch):
    """Different lr, seed, optimiser, batch size, clipping, epochs and patience; uncropped sequences of
    different lengths (zero-padded to a common shape in the stacked step); one model early-stops, one
    reaches its epoch cap first, the others go on. The stacked recurrence does run."""
    import gatedrnn.train as T
    monkeypatch.setattr(T, "stacking_wins", lambda unit, hidden_size: True)   # (the rule runs GRUs apart)
    builds, real = [], T._stacked_unit
    monkeypatch.setattr(T, "_stacked_unit", lambda: builds.append(1) or real())
    cfgs = [_cfg(unit="gru", crop_length=None, limit_sequences=12, lr=0.2, seed=3, patience=1, epochs=6),
            _cfg(unit="gru", crop_length=None, limit_sequences=12, lr=3e-3, seed=4, epochs=2, batch_size=3),
            _cfg(unit="gru", crop_length=None, limit_sequences=12, lr=0.01, seed=5, epochs=6, clip_norm=0.5,
                 optimizer="rmsprop-momentum", lr_final=0.5, lr_decay_epochs=3)]
    many = train_many(cfgs, [tmp_path / f"m{k}" for k in range(3)], log=lambda m: None)
    ones = [train(c, tmp_path / f"s{k}", log=lambda m: None) for k, c in enumerate(cfgs)]
    _close(many, ones, [tmp_path / f"m{k}" for k in range(3)], [tmp_path / f"s{k}" for k in range(3)])
    assert [r["status"] for r in ones] == ["early_stopped", "completed", "completed"]
    assert ones[0]["epochs"] < 6 and ones[1]["epochs"] == 2 and ones[2]["epochs"] == 6
    assert builds, "the models never took a stacked step"


def test_speech_models_as_one_equal_single_runs(tmp_path):
    cfgs = [TrainConfig(dataset="fsdd-a", unit=u, hidden_size=8, limit_sequences=8, crop_length=20, batch_size=4,
                        epochs=2, data_dir=DATA, lr=lr, seed=s) for u, lr, s in (("lstm", 3e-3, 0), ("lstm", 1e-2, 1))]
    many = train_many(cfgs, [tmp_path / f"m{k}" for k in range(2)], log=lambda m: None)
    ones = [train(c, tmp_path / f"s{k}", log=lambda m: None) for k, c in enumerate(cfgs)]
    _close(many, ones, [tmp_path / f"m{k}" for k in range(2)], [tmp_path / f"s{k}" for k in range(2)])


def test_truncated_models_trained_together_equal_single_runs_exactly(tmp_path):
    """tbptt steps run each model's own forward/backward: bit for bit its single run (its own noise
    stream, batch order and optimiser, whatever the other models draw)."""
    cfgs = [_cfg(unit="lstm", tbptt=6, seed=s, lr=lr, weight_noise=wn)
            for s, lr, wn in ((0, 3e-3, 0.075), (1, 1e-2, 0.1), (2, 1e-3, 0.075))]
    many = train_many(cfgs, [tmp_path / f"m{k}" for k in range(3)], log=lambda m: None)
    for k, cfg in enumerate(cfgs):
        one = train(cfg, tmp_path / f"s{k}", log=lambda m: None)
        assert _strip(_hist(tmp_path / f"m{k}")) == _strip(_hist(tmp_path / f"s{k}"))
        for key in ("status", "train_nll", "valid_nll", "test_nll", "best_epoch", "updates", "epochs"):
            assert many[k][key] == one[key], key


def test_models_trained_together_resume_as_uninterrupted(tmp_path):
    """Paused after epoch 2 (each model checkpointed in its own directory), then continued: the same
    files as the uninterrupted run of the same models."""
    cfgs = [_cfg(unit="tanh", seed=s, lr=lr) for s, lr in ((0, 3e-3), (1, 1e-2))]
    a = [tmp_path / f"a{k}" for k in range(2)]
    b = [tmp_path / f"b{k}" for k in range(2)]
    ra = train_many(cfgs, a, log=lambda m: None)
    paused = train_many(cfgs, b, log=lambda m: None, stop_after=2)
    assert [p["status"] for p in paused] == ["paused", "paused"] and [p["epoch"] for p in paused] == [2, 2]
    assert not (b[0] / "result.json").exists()
    rb = train_many(cfgs, b, log=lambda m: None)
    for k in range(2):
        assert _strip(_hist(a[k])) == _strip(_hist(b[k]))
        for key in ("status", "train_nll", "valid_nll", "test_nll", "best_epoch", "updates", "epochs"):
            assert ra[k][key] == rb[k][key], key


def test_one_output_directory_per_model(tmp_path):
    with pytest.raises(ValueError, match="one output directory per config"):
        train_many([_cfg(), _cfg(seed=1)], [tmp_path / "a"])
    with pytest.raises(ValueError, match="its own output directory"):
        train_many([_cfg(), _cfg(seed=1)], [tmp_path / "a", tmp_path / "a"])


@pytest.mark.parametrize("unit,stacked", [("lstm", True), ("gru", False), ("tanh", False)])
def test_train_many_stacks_only_where_the_rule_says(tmp_path, monkeypatch, unit, stacked):
    """stacking_wins decides (issue 21.2: stacking must never be slower than the models one by one): the
    K-model call runs for the LSTM at its measured size, and not for the GRU and tanh units, nor for an
    LSTM larger than measured."""
    calls = []
    real = T._forward_backward_stacked
    monkeypatch.setattr(T, "_forward_backward_stacked", lambda *a: calls.append(1) or real(*a))
    cfgs = [_cfg(unit=unit, hidden_size=12, epochs=1, seed=s) for s in range(2)]
    train_many(cfgs, [tmp_path / f"m{k}" for k in range(2)], log=lambda m: None)
    assert bool(calls) == stacked
    assert T.stacking_wins(unit, 12) == stacked
    assert not T.stacking_wins("lstm", 195) and T.stacking_wins("lstm", 36)
    calls.clear()
    monkeypatch.setattr(T, "stacking_wins", lambda unit, hidden_size: False)
    train_many(cfgs, [tmp_path / f"n{k}" for k in range(2)], log=lambda m: None)
    assert not calls
