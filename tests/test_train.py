"""The training protocol: hand-computed NLL, the optimisers, early stopping, divergence, resume after a
real SIGKILL, and a short JSB training whose validation NLL falls."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from _paths import data_dir
from gatedrnn.heads import BernoulliHead
from gatedrnn.model import SequenceModel
from gatedrnn.train import RMSPropMomentum, TrainConfig, evaluate, train

REPO = Path(__file__).resolve().parents[1]
DATA = str(data_dir())


def toy_dataset(seed=0, n=(6, 3, 3), W=4, nan=False):
    rng = np.random.default_rng(seed)
    splits = {}
    for split, k in zip(("train", "valid", "test"), n):
        pairs = []
        for _ in range(k):
            roll = (rng.random((int(rng.integers(3, 9)), W)) < 0.3).astype(np.uint8)
            x = np.vstack([np.zeros((1, W), np.uint8), roll[:-1]])
            pairs.append((x.astype(np.float32), roll.astype(np.float32)))
        splits[split] = pairs
    if nan:
        splits["train"][0][0][1, 0] = np.nan
    return SimpleNamespace(name="toy", kind="music", input_size=W, target_size=W, splits=splits,
                           files={}, meta={"lowest_pitch": 60})


# ------------------------------------------------------------------------------ the metric
def test_bernoulli_nll_by_hand():
    head = BernoulliHead(2, 3)
    logits = torch.tensor([[[0.0, 2.0, -1.0]]])
    y = torch.tensor([[[1.0, 0.0, 1.0]]])
    # −[log σ(0) + log(1 − σ(2)) + log σ(−1)]
    by_hand = -(math.log(0.5) + math.log(1 - 1 / (1 + math.exp(-2))) + math.log(1 / (1 + math.exp(1))))
    assert abs(head.nll(logits, y).item() - by_hand) < 1e-6


def test_evaluate_nats_per_frame_and_per_sequence_by_hand():
    ds = toy_dataset()
    model = SequenceModel("gru", 4, 3, 4)
    b = torch.tensor([0.3, -1.2, 2.0, 0.0])
    with torch.no_grad():                        # output independent of the input: p_k = σ(b_k)
        model.head.linear.weight.zero_()
        model.head.linear.bias.copy_(b)
    p = torch.sigmoid(b).double().numpy()
    total, frames = 0.0, 0
    for _, y in ds.splits["valid"]:
        total += -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum()
        frames += len(y)
    r = evaluate(model, ds.splits["valid"], batch_size=2, device="cpu")
    assert r["steps"] == frames and r["sequences"] == 3
    assert abs(r["nll"] - total / frames) < 1e-5
    assert abs(r["nll_seq"] - total / 3) < 1e-4


def test_evaluate_per_sequence_mean_first_frame_not_scored_by_hand():
    """Three sequences by hand. The model ignores its input: p(note 1) = σ(log 3) = 3/4, p(note 2) = 1/2, so
    a frame costs log(8/3) with note 1 on and log 8 with it off (note 2 always log 2). Sequence A (3 frames,
    note 1 on/off/off): frames 2..3 scored, mean log 8. B (2 frames, off/on): frame 2, log(8/3). C (1 frame):
    nothing scored, left out. Per-sequence mean: (log 8 + log(8/3)) / 2; per frame over all 6 frames
    (first frames scored): (2 log(8/3) + 4 log 8) / 6."""
    def seq(note1):
        y = np.array([[a, b] for a, b in zip(note1, [1, 0, 1][:len(note1)])], np.float32)
        return np.vstack([np.zeros((1, 2), np.float32), y[:-1]]), y
    pairs = [seq([1, 0, 0]), seq([0, 1]), seq([0])]
    model = SequenceModel("gru", 2, 3, 2)
    with torch.no_grad():
        model.head.linear.weight.zero_()
        model.head.linear.bias.copy_(torch.tensor([math.log(3.0), 0.0]))
    on, off = math.log(8 / 3), math.log(8)
    for batch_size in (1, 2, 3):                  # batching and padding change nothing
        r = evaluate(model, pairs, batch_size=batch_size, device="cpu")
        assert r["nll_seqavg"] == pytest.approx((off + on) / 2, rel=1e-6)
        assert r["nll"] == pytest.approx((2 * on + 4 * off) / 6, rel=1e-6)
    # a split of one-frame sequences scores nothing: no number, not a zero
    assert math.isnan(evaluate(model, [seq([1])], batch_size=4, device="cpu")["nll_seqavg"])


def test_run_records_both_metrics(tmp_path, monkeypatch):
    res = _toy_train(tmp_path, monkeypatch, epochs=2)
    hist = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("valid_nll_seqavg" in h for h in hist) and "train_nll_seqavg" in hist[0]
    model = SequenceModel("lstm", 4, 5, 4)
    model.load_state_dict(torch.load(tmp_path / "run" / "best.pt", weights_only=True))
    for split in ("train", "valid", "test"):
        again = evaluate(model, toy_dataset().splits[split], 64, "cpu")
        assert res[f"{split}_nll_seqavg"] == pytest.approx(again["nll_seqavg"], rel=1e-9)
        assert res[f"{split}_nll_seqavg"] != pytest.approx(res[f"{split}_nll"], rel=1e-9)


def test_patience_zero_trains_every_epoch_and_keeps_the_best(tmp_path, monkeypatch):
    """The released code's rule: no early termination; the reported model is the best-validation epoch."""
    res = _toy_train(tmp_path, monkeypatch, epochs=12, patience=0, lr=0.05)
    hist = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [h["valid_nll"] for h in hist]
    assert res["status"] == "completed" and res["epochs"] == 12 and len(hist) == 13
    assert res["best_epoch"] == int(np.argmin(valid)) < 12     # the curve rises at lr 0.05: early stopping would stop
    assert abs(res["valid_nll"] - min(valid)) < 1e-6


# ------------------------------------------------------------------------------ optimisers
def test_rmsprop_momentum_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = RMSPropMomentum([p], lr=0.1, rho=0.9, momentum=0.5, floor=0.01, max_update_norm=10.0)
    v = np.zeros(2); d = np.zeros(2); x = np.array([1.0, -2.0])
    for g in ([0.5, 0.001], [-0.2, 0.002]):
        p.grad = torch.tensor(g)
        opt.step()
        g = np.array(g)
        v = 0.9 * v + 0.1 * g * g
        d = 0.5 * d - 0.1 * g / np.maximum(np.sqrt(v), 0.01)
        x = x + d
    np.testing.assert_allclose(p.detach().numpy(), x, rtol=1e-6)


def test_rmsprop_momentum_update_norm_clipped():
    p = torch.nn.Parameter(torch.zeros(4))
    opt = RMSPropMomentum([p], lr=10.0, max_update_norm=1.0)
    p.grad = torch.ones(4)
    opt.step()
    assert abs(p.detach().norm().item() - 1.0) < 1e-5


# ----------------------------------------------------------------------------- the config
def test_invalid_config_values_name_the_field():
    for bad, field in [({"lr": -1}, "lr"), ({"unit": "rnn"}, "unit"), ({"batch_size": 0}, "batch_size"),
                       ({"dataset": "mnist"}, "dataset"), ({"bogus": 1}, "bogus"),
                       ({"hidden_size": 10, "budget": 1000}, "budget")]:
        with pytest.raises(ValidationError) as e:
            TrainConfig(**bad)
        assert field in str(e.value)


# ------------------------------------------------------------------ loop on a toy dataset
def _toy_train(tmp_path, monkeypatch, nan=False, **kw):
    monkeypatch.setattr("gatedrnn.train.prepare_data", lambda cfg: toy_dataset(nan=nan))
    cfg = TrainConfig(dataset="jsb", unit="lstm", hidden_size=5, batch_size=2, **kw)
    return train(cfg, tmp_path / "run", log=lambda m: None)


def test_divergence_is_recorded_not_raised(tmp_path, monkeypatch):
    res = _toy_train(tmp_path, monkeypatch, nan=True, epochs=3)
    assert res["status"] == "diverged"
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "diverged"
    assert (tmp_path / "run" / "best.pt").exists()       # the (untrained) best model is still there


def test_early_stopping_keeps_the_best_model(tmp_path, monkeypatch):
    res = _toy_train(tmp_path, monkeypatch, epochs=60, patience=2, lr=0.05)
    hist = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [h["valid_nll"] for h in hist]
    assert res["status"] == "early_stopped"
    assert res["best_epoch"] == int(np.argmin(valid))
    assert res["epochs"] == res["best_epoch"] + 2
    assert abs(res["valid_nll"] - min(valid)) < 1e-6     # the reported model is the best-validation one


def test_finished_run_is_not_repeated_and_config_mismatch_is_refused(tmp_path, monkeypatch):
    res = _toy_train(tmp_path, monkeypatch, epochs=2)
    mtime = (tmp_path / "run" / "result.json").stat().st_mtime_ns
    assert _toy_train(tmp_path, monkeypatch, epochs=2) == res
    assert (tmp_path / "run" / "result.json").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="different config"):
        _toy_train(tmp_path, monkeypatch, epochs=3)


# ------------------------------------------------------------------------ real data (JSB)
SMALL = ["train", "--dataset", "jsb", "--unit", "gru", "--hidden-size", "16", "--limit-sequences", "40",
         "--crop-length", "48", "--batch-size", "4", "--lr", "0.003", "--data-dir", DATA, "--no-progress"]


def _cli(args, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "gatedrnn.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _history(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    epochs = ["--epochs", "6"]
    a = _cli([*SMALL, *epochs, "--out", str(tmp_path / "a")])
    out, err = a.communicate(timeout=300)
    assert a.returncode == 0, err
    # Same run, killed (SIGKILL: no chance to clean up) once two epochs are checkpointed.
    b_dir = tmp_path / "b"
    b = _cli([*SMALL, *epochs, "--out", str(b_dir)])
    deadline = time.time() + 300
    while time.time() < deadline:
        if (b_dir / "metrics.jsonl").exists() and len(_history(b_dir)) >= 3 and b.poll() is None:
            break
        time.sleep(0.05)
    assert b.poll() is None, "run finished before it could be killed"
    os.kill(b.pid, signal.SIGKILL)
    b.wait()
    killed_at = len(_history(b_dir)) - 1
    assert 2 <= killed_at < 6
    c = _cli([*SMALL, *epochs, "--out", str(b_dir)])
    out_c, err_c = c.communicate(timeout=300)
    assert c.returncode == 0, err_c
    assert "resuming" in err_c
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (tmp_path / "a", b_dir))
    for k in ("train_nll", "valid_nll", "test_nll", "best_epoch", "updates", "epochs"):
        assert ra[k] == rb[k], k
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]
    assert strip(_history(tmp_path / "a")) == strip(_history(b_dir))


@pytest.mark.slow
def test_short_jsb_training_lowers_validation_nll(tmp_path):
    from gatedrnn.cli import main
    assert main([*SMALL, "--epochs", "4", "--out", str(tmp_path / "r")]) == 0
    h = _history(tmp_path / "r")
    assert h[-1]["valid_nll"] < h[0]["valid_nll"] - 5        # from ~61 (σ(0) per note) downwards
    assert all(math.isfinite(r["valid_nll"]) for r in h)
    res = json.loads((tmp_path / "r" / "result.json").read_text())
    assert set(res["data_files"]) and all(len(v) == 64 for v in res["data_files"].values())
    assert res["environment"]["torch"].startswith("2.13")


def test_training_split_evaluated_every_nth_epoch_changes_nothing_else(tmp_path):
    # --eval-train-every 3: the training split's NLL at epochs 0, 3, 6 only — equal to the every-epoch
    # run's there — and the run itself (weight noise drawn, updates, validation curve, result) unchanged:
    # evaluation draws no random numbers and touches no weight. It is no part of the run's identity.
    from gatedrnn.cli import main
    from gatedrnn.train import same_run
    args = [*SMALL, "--epochs", "6", "--limit-sequences", "24"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--eval-train-every", "3", "--out", str(tmp_path / "b")]) == 0
    ha, hb = _history(tmp_path / "a"), _history(tmp_path / "b")
    assert [r["epoch"] for r in ha] == [r["epoch"] for r in hb] == list(range(7))
    assert [r["epoch"] for r in hb if "train_nll" in r] == [0, 3, 6]
    assert all(b["train_nll"] == a["train_nll"] for a, b in zip(ha, hb) if "train_nll" in b)
    for k in ("valid_nll", "train_nll_running", "updates", "lr"):
        assert [r.get(k) for r in ha] == [r.get(k) for r in hb], k
    ra, rb = (json.loads((tmp_path / d / "result.json").read_text()) for d in "ab")
    for k in ("train_nll", "valid_nll", "test_nll", "best_epoch", "updates", "epochs"):
        assert ra[k] == rb[k], k
    assert same_run(rb["config"], ra["config"]) and rb["config"]["eval_train_every"] == 3
    with pytest.raises(SystemExit) as e:
        main([*args, "--eval-train-every", "0", "--out", str(tmp_path / "c")])
    assert e.value.code == 2


TRAINING_PHASES = ("batches", "forward", "backward", "optimiser")


def _stripped(history):
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in history]


@pytest.mark.parametrize("unit, K", [("gru", 1), ("lstm", 2)], ids=["one-model", "two-stacked"])
def test_loop_timer_books_every_phase_and_changes_nothing(tmp_path, unit, K):
    """The loop's timing hooks (train.LoopTimer; benchmarks/study_cost.py times the real loop with them):
    the training phases add up to the epoch's training seconds, the evaluation phases to its eval_seconds,
    all phases to the epoch's span; a timed run computes exactly what an untimed one does. Two LSTMs of
    hidden size 8 take the stacked path (train.stacking_wins)."""
    from gatedrnn.train import LoopTimer, stacking_wins, train_many
    assert (K > 1) == stacking_wins(unit, 8)
    cfgs = [TrainConfig(dataset="jsb", unit=unit, hidden_size=8, limit_sequences=24, crop_length=48, batch_size=4,
                        epochs=3, lr=0.003, seed=k, data_dir=DATA) for k in range(K)]
    dirs = {name: [tmp_path / f"{name}{k}" for k in range(K)] for name in ("plain", "timed")}
    plain = train_many(cfgs, dirs["plain"], log=lambda m: None)
    timer = LoopTimer()
    t0 = time.perf_counter()
    timed = train_many(cfgs, dirs["timed"], log=lambda m: None, timer=timer)
    wall = time.perf_counter() - t0
    for a, b, da, db in zip(plain, timed, dirs["plain"], dirs["timed"]):
        for k in ("train_nll", "valid_nll", "test_nll", "best_epoch", "updates", "epochs"):
            assert a[k] == b[k], k
        assert _stripped(_history(da)) == _stripped(_history(db))
    assert [e["epoch"] for e in timer.epochs] == [1, 2, 3]
    hist = _history(dirs["timed"][0])
    for e, row, prev in zip(timer.epochs, hist[1:], hist):
        assert set(e) == {"epoch", *LoopTimer.PHASES}
        assert all(e[p] > 0 for p in (*TRAINING_PHASES, "eval_train", "eval_valid", "checkpoint")), e
        training = sum(e[p] for p in TRAINING_PHASES)           # the loop's wall-clock is shared by the models
        assert training == pytest.approx(K * (row["seconds"] - prev["seconds"]), rel=0.02, abs=2e-3)
        assert e["eval_train"] + e["eval_valid"] == pytest.approx(
            sum(_history(d)[e["epoch"]]["eval_seconds"] for d in dirs["timed"]), rel=0.02, abs=2e-3)
        assert e["other"] < 0.1 * training
    assert sum(sum(e[p] for p in LoopTimer.PHASES) for e in timer.epochs) < wall


@pytest.mark.slow
def test_evaluate_and_sample_a_playable_midi(tmp_path, capsys):
    import pretty_midi

    from gatedrnn.cli import main
    from gatedrnn.generate import roll_to_midi
    assert main([*SMALL, "--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    assert main(["evaluate", str(tmp_path / "r"), "--split", "test", "--data-dir", DATA]) == 0
    assert "nats/frame" in capsys.readouterr().out
    mid = tmp_path / "piece.mid"
    assert main(["sample", str(tmp_path / "r"), "--out", str(mid), "--steps", "64", "--seed", "3"]) == 0
    pm = pretty_midi.PrettyMIDI(str(mid))
    assert pm.get_end_time() > 0 and len(pm.instruments[0].notes) > 0
    assert all(21 <= n.pitch <= 108 for n in pm.instruments[0].notes)
    # the same seed draws the same piece
    mid2 = tmp_path / "again.mid"
    main(["sample", str(tmp_path / "r"), "--out", str(mid2), "--steps", "64", "--seed", "3"])
    assert mid.read_bytes() == mid2.read_bytes()


def test_cli_invalid_arguments_give_a_message_not_a_traceback():
    for args, needle in [(["train", "--lr", "abc"], "expected a finite number > 0 and < 1"),
                         (["train", "--lr", "nan"], "expected a finite number > 0 and < 1"),
                         (["train", "--dataset", "mnist", "--epochs", "0"], "dataset"),
                         (["train", "--lr", "-3", "--epochs", "0"], "lr"),
                         (["train", "--hidden-size", "0"], "expected an integer > 0"),
                         (["evaluate", "/nonexistent/run"], "not a (started) run directory")]:
        p = _cli(args)
        out, err = p.communicate(timeout=120)
        assert p.returncode == 2, (args, err)
        assert needle in err and "Traceback" not in err, (args, err)


def test_table1_command(capsys):
    from gatedrnn.cli import main
    assert main(["table1"]) == 0
    out = capsys.readouterr().out
    for s in ("19,836", "20,286", "20,100", "169,065", "168,888", "168,400"):
        assert s in out
    assert "NO" not in out


# ------------------------------------------------- the optimiser protocol, through train() itself
def dense_toy(seed=0, W=48, n=(4, 2, 2)):
    """Dense rolls (p(on) = 0.9) over many notes: the first gradient's norm is well above 1."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, k in zip(("train", "valid", "test"), n):
        pairs = []
        for _ in range(k):
            roll = (rng.random((int(rng.integers(4, 9)), W)) < 0.9).astype(np.float32)
            x = np.vstack([np.zeros((1, W), np.float32), roll[:-1]])
            pairs.append((x, roll))
        splits[split] = pairs
    return SimpleNamespace(name="toy", kind="music", input_size=W, target_size=W, splits=splits,
                           files={}, meta={"lowest_pitch": 60})


def _recording_train(tmp_path, monkeypatch, ds, **kw):
    """train() on `ds` with the real optimiser, recording before every opt.step(): the parameters, the
    gradients the optimiser sees and its lr; after it: the parameters."""
    import gatedrnn.train as T
    monkeypatch.setattr(T, "prepare_data", lambda cfg: ds)
    steps = []
    real_make = T.make_optimizer

    def make(cfg, params):
        opt = real_make(cfg, params)
        ps = [p for g in opt.param_groups for p in g["params"]]
        real_step = opt.step

        def step(*a, **k):
            rec = {"before": [p.detach().clone() for p in ps], "grad": [p.grad.detach().clone() for p in ps],
                   "lr": opt.param_groups[0]["lr"], "opt": opt}
            r = real_step(*a, **k)
            rec["after"] = [p.detach().clone() for p in ps]
            steps.append(rec)
            return r
        opt.step = step
        return opt

    monkeypatch.setattr(T, "make_optimizer", make)
    cfg = TrainConfig(**{"dataset": "jsb", "unit": "gru", "hidden_size": 6, "weight_noise": 0.0,
                         "batch_size": len(ds.splits["train"]), "epochs": 1, "lr": 0.01, **kw})
    res = T.train(cfg, tmp_path / "run", log=lambda m: None)
    return cfg, res, steps


def _hand_gradient(cfg, ds, params_before):
    """The gradient of the first update, computed here: mean NLL per step over every train sequence,
    each sequence run alone (no padding), BCE written out by hand."""
    model = SequenceModel(cfg.unit, ds.input_size, cfg.hidden_size, ds.target_size)
    ps = list(model.parameters())
    with torch.no_grad():
        for p, v in zip(ps, params_before):
            p.copy_(v)
    total, steps = 0.0, 0
    for x, y in ds.splits["train"]:
        logits, _ = model(torch.from_numpy(x)[None])
        yt = torch.from_numpy(y)[None]
        total = total - (yt * torch.nn.functional.logsigmoid(logits)
                         + (1 - yt) * torch.nn.functional.logsigmoid(-logits)).sum()
        steps += len(y)
    (total / steps).backward()
    return [p.grad.detach().clone() for p in ps]


def _flat(ts):
    return torch.cat([t.reshape(-1) for t in ts]).double()


@pytest.mark.parametrize("clip_norm", [1.0, 0.25])
def test_first_update_is_rescaled_gradient_then_rmsprop_by_hand(tmp_path, monkeypatch, clip_norm):
    """One batch, one update, through train(): the optimiser sees the gradient rescaled to norm
    clip_norm (it is above), and plain RMSProp (decay 0.95, eps 1e-6, no momentum) moves the weights
    by lr·ĝ/(√(0.05 ĝ²) + 1e-6) — all computed here from the gradient."""
    ds = dense_toy()
    cfg, res, steps = _recording_train(tmp_path, monkeypatch, ds, clip_norm=clip_norm)
    assert len(steps) == 1 and res["updates"] == 1
    s = steps[0]
    g = _flat(_hand_gradient(cfg, ds, s["before"]))
    norm = float(g.norm())
    assert norm > 1.5, f"the toy's gradient norm {norm} must exceed the clip for this test to mean anything"
    g_hat = g * (clip_norm / norm)
    seen = _flat(s["grad"])
    assert float(seen.norm()) == pytest.approx(clip_norm, rel=1e-5)        # rescaled to clip_norm exactly
    torch.testing.assert_close(seen, g_hat, rtol=1e-4, atol=1e-6)           # same direction
    opt = s["opt"]
    assert isinstance(opt, torch.optim.RMSprop)
    d = opt.defaults
    assert (d["alpha"], d["eps"], d["momentum"], d["centered"], d["lr"]) == (0.95, 1e-6, 0, False, 0.01)
    sq = 0.05 * g_hat * g_hat                                               # square_avg after one step
    want = _flat(s["before"]) - 0.01 * g_hat / (sq.sqrt() + 1e-6)
    torch.testing.assert_close(_flat(s["after"]), want, rtol=1e-4, atol=1e-6)
    state_sq = _flat([opt.state[p]["square_avg"] for g_ in opt.param_groups for p in g_["params"]])
    torch.testing.assert_close(state_sq, sq, rtol=2e-4, atol=1e-9)


def test_gradient_below_the_clip_is_not_rescaled(tmp_path, monkeypatch):
    ds = dense_toy()
    cfg, _, steps = _recording_train(tmp_path, monkeypatch, ds, clip_norm=50.0)
    g = _flat(_hand_gradient(cfg, ds, steps[0]["before"]))
    assert float(g.norm()) < 50.0
    torch.testing.assert_close(_flat(steps[0]["grad"]), g, rtol=1e-4, atol=1e-6)


def test_first_update_rmsprop_momentum_by_hand(tmp_path, monkeypatch):
    """The authors' variant through train(): ĝ (norm 1), v = 0.05 ĝ², Δ = −lr ĝ / max(√v, 0.01),
    Δ rescaled to norm ≤ 1 (engaged here: ~800 parameters each moving ≈ lr/√0.05)."""
    ds = dense_toy()
    cfg, _, steps = _recording_train(tmp_path, monkeypatch, ds, optimizer="rmsprop-momentum", lr=0.04)
    s = steps[0]
    opt = s["opt"]
    assert isinstance(opt, RMSPropMomentum)
    assert {k: opt.defaults[k] for k in ("lr", "rho", "momentum", "floor", "max_update_norm")} == \
        {"lr": 0.04, "rho": 0.95, "momentum": 0.9, "floor": 0.01, "max_update_norm": 1.0}
    g = _flat(_hand_gradient(cfg, ds, s["before"]))
    g_hat = g / g.norm()
    v = 0.05 * g_hat * g_hat
    delta = -0.04 * g_hat / torch.clamp(v.sqrt(), min=0.01)
    assert float(delta.norm()) > 1.2                                   # the update-norm clip is engaged
    assert bool(((v.sqrt() < 0.01) & (g_hat != 0)).any())            # and the floor for small components
    delta = delta / delta.norm()
    torch.testing.assert_close(_flat(s["after"]) - _flat(s["before"]), delta, rtol=2e-4, atol=1e-6)


def test_rmsprop_momentum_several_steps_joint_clip_by_hand():
    """Two parameters (the update norm is over both), three steps; the clip engages on the second; the
    momentum buffer keeps the clipped update (Δ is rescaled in place)."""
    a = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))
    b = torch.nn.Parameter(torch.tensor([[0.1, 0.2]]))
    opt = RMSPropMomentum([a, b], lr=0.3, rho=0.9, momentum=0.8, floor=0.05, max_update_norm=0.5)
    x = np.array([0.5, -1.0, 2.0, 0.1, 0.2])
    v, d = np.zeros(5), np.zeros(5)
    clipped = []
    for g in ([0.01, -0.02, 0.001, 0.03, 0.0], [1.0, -2.0, 0.5, 0.7, -0.1], [-0.3, 0.1, 0.02, 0.0, 0.4]):
        g = np.array(g)
        a.grad, b.grad = torch.tensor(g[:3], dtype=torch.float32), torch.tensor(g[3:][None], dtype=torch.float32)
        opt.step()
        v = 0.9 * v + 0.1 * g * g
        d = 0.8 * d - 0.3 * g / np.maximum(np.sqrt(v), 0.05)
        n = np.linalg.norm(d)
        clipped.append(n > 0.5)
        if n > 0.5:
            d = d * 0.5 / n
        x = x + d
        got = np.concatenate([a.detach().numpy(), b.detach().numpy().ravel()])
        np.testing.assert_allclose(got, x, rtol=1e-5, atol=1e-6)
    assert clipped[1]
    np.testing.assert_allclose(np.concatenate([opt.state[a]["v"].numpy(), opt.state[b]["v"].numpy().ravel()]), v,
                               rtol=1e-5)


def test_make_optimizer_defaults():
    from gatedrnn.train import make_optimizer
    p = [torch.nn.Parameter(torch.zeros(3))]
    opt = make_optimizer(TrainConfig(), p)
    assert type(opt) is torch.optim.RMSprop
    assert opt.defaults["alpha"] == 0.95 and opt.defaults["eps"] == 1e-6 and opt.defaults["lr"] == 3e-3
    assert opt.defaults["momentum"] == 0 and opt.defaults["centered"] is False and opt.defaults["weight_decay"] == 0
    m = make_optimizer(TrainConfig(optimizer="rmsprop-momentum", rms_decay=0.9, momentum=0.5, rms_floor=0.02), p)
    assert {k: m.defaults[k] for k in ("rho", "momentum", "floor", "max_update_norm")} == \
        {"rho": 0.9, "momentum": 0.5, "floor": 0.02, "max_update_norm": 1.0}
    c = TrainConfig()
    assert (c.clip_norm, c.rms_decay, c.lr_final, c.weight_noise) == (1.0, 0.95, 1.0, 0.075)


def test_lr_at_linear_decay_values():
    from gatedrnn.train import lr_at
    c = TrainConfig(lr=0.01, lr_final=0.01, lr_decay_epochs=500)     # the released code: to 1 % by 500
    for epoch, want in [(0, 0.01), (1, 0.01 * (1 - 0.99 / 500)), (250, 0.00505), (499, 0.01 * (1 - 0.99 * 499 / 500)),
                        (500, 1e-4), (501, 1e-4), (5000, 1e-4)]:
        assert lr_at(c, epoch) == pytest.approx(want, rel=1e-12), epoch
    assert all(lr_at(TrainConfig(lr=0.02), e) == 0.02 for e in (0, 7, 500, 10_000))   # default: no decay


def test_training_loop_applies_the_decay_per_epoch(tmp_path, monkeypatch):
    """Epoch e trains with lr_at(e − 1): the optimiser's lr at every step and metrics.jsonl agree."""
    ds = dense_toy()
    _, res, steps = _recording_train(tmp_path, monkeypatch, ds, epochs=3, lr=0.02, lr_final=0.5,
                                     lr_decay_epochs=2, batch_size=2, patience=10)
    assert res["updates"] == 6 and len(steps) == 6
    assert [s["lr"] for s in steps] == pytest.approx([0.02, 0.02, 0.015, 0.015, 0.01, 0.01], rel=1e-12)
    hist = _history(tmp_path / "run")
    assert [h["lr"] for h in hist] == pytest.approx([0.02, 0.02, 0.015, 0.01], rel=1e-12)


# ------------------------------------------------------------------------------ failure paths
def test_cli_train_exits_3_on_divergence(tmp_path, monkeypatch, capsys):
    """`gatedrnn train` on data that makes the loss NaN: the run is recorded as diverged, exit code 3."""
    from gatedrnn.cli import main
    monkeypatch.setattr("gatedrnn.train.prepare_data", lambda cfg: toy_dataset(nan=True))
    code = main(["train", "--dataset", "jsb", "--unit", "tanh", "--hidden-size", "4", "--epochs", "3",
                 "--batch-size", "2", "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 3
    res = json.loads((tmp_path / "r" / "result.json").read_text())
    assert res["status"] == "diverged" and res["epochs"] == 1
    assert "diverged" in capsys.readouterr().err
    # a healthy run of the same command exits 0
    monkeypatch.setattr("gatedrnn.train.prepare_data", lambda cfg: toy_dataset())
    assert main(["train", "--dataset", "jsb", "--unit", "tanh", "--hidden-size", "4", "--epochs", "1",
                 "--batch-size", "2", "--out", str(tmp_path / "ok"), "--no-progress"]) == 0


# ------------------------------------------------------- unit options: the unit's declaration decides
def test_every_declared_unit_option_is_a_config_field():
    """A unit option no TrainConfig field carries could never reach a run: each is one of UNIT_OPTIONS."""
    from gatedrnn.nn import UNITS
    from gatedrnn.train import UNIT_OPTIONS
    declared = {k for cls in UNITS.values() for k in cls.declares.options}
    assert declared == set(UNIT_OPTIONS) and set(UNIT_OPTIONS) <= set(TrainConfig.model_fields)


@pytest.mark.parametrize("kw,field", [({"unit": "lstm-nig", "peepholes": False}, "peepholes"),
                                      ({"unit": "tanh", "forget_bias": 1.0}, "forget_bias"),
                                      ({"unit": "lstm-nfg", "forget_bias": 0.5}, "forget_bias"),
                                      ({"unit": "mgu", "reset_after": True}, "reset_after"),
                                      ({"unit": "gru", "peepholes": False}, "peepholes")])
def test_an_option_the_unit_does_not_take_is_refused_with_the_config(kw, field):
    with pytest.raises(ValidationError) as e:
        TrainConfig(**kw)
    (err,) = e.value.errors()
    assert err["loc"] == (field,) and kw["unit"] in err["msg"] and field in err["msg"]
    cfg = TrainConfig(unit="lstm", peepholes=False)          # on assignment too: the unit no longer takes it
    with pytest.raises(ValidationError, match="lstm-nig"):
        cfg.unit = "lstm-nig"


def test_cli_refuses_an_option_the_unit_does_not_take_in_one_line(tmp_path, capsys):
    """`--unit lstm-nig --no-peepholes` used to train to the end and fail without result.json: exit 2 now,
    one line naming the field and the unit, nothing trained."""
    from gatedrnn.cli import main
    out = tmp_path / "r"
    assert main(["train", "--dataset", "jsb", "--unit", "lstm-nig", "--no-peepholes", "--epochs", "1",
                 "--out", str(out), "--no-progress"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("gatedrnn: error:"), lines
    assert "peepholes" in lines[0] and "lstm-nig" in lines[0]
    assert not out.exists()


def test_forget_bias_reaches_the_lstm_variants(tmp_path, monkeypatch):
    """--forget-bias used to be passed to "lstm" only; now every unit that takes it gets it (b_f, wherever
    its block is), the default leaves the unit's own (lstm-fb1: 1), and model.json records it."""
    from gatedrnn.train import build_model, model_spec
    ds = toy_dataset()
    for unit, fb, want in [("lstm-nig", 2.0, 2.0), ("lstm-cifg", -1.5, -1.5), ("lstm-fgr", 0.5, 0.5),
                           ("lstm-fb1", 0.0, 1.0), ("lstm-fb1", 0.25, 0.25), ("lstm", 3.0, 3.0)]:
        spec = model_spec(TrainConfig(unit=unit, hidden_size=5, forget_bias=fb), ds)
        assert spec.unit_kwargs["forget_bias"] == want, unit
        pw = build_model(spec).rnn.paper_weights()
        assert torch.all(pw["b_f"] == want) and torch.all(pw["b_c"] == 0) and torch.all(pw["b_o"] == 0), unit
    monkeypatch.setattr("gatedrnn.train.prepare_data", lambda cfg: ds)
    cfg = TrainConfig(dataset="jsb", unit="lstm-nog", hidden_size=3, batch_size=2, epochs=1, forget_bias=2.0)
    train(cfg, tmp_path / "run", log=lambda m: None)
    assert json.loads((tmp_path / "run" / "model.json").read_text())["unit_kwargs"] == {"forget_bias": 2.0}


@pytest.mark.parametrize("unit,kw", [("lstm-np", {}), ("lstm", {"peepholes": False}), ("lstm-nig", {})])
def test_a_unit_without_some_peepholes_is_counted_as_built(tmp_path, monkeypatch, unit, kw):
    """result.json's recurrent_parameters is the module's own count (no peepholes: none counted), and a
    budget is matched for the unit as it is built, by Table 1's convention (counted at the nominal input size
    of the data's kind, 100 for music, whatever the data's own input size — here 4)."""
    from gatedrnn.nn.counting import count_parameters
    monkeypatch.setattr("gatedrnn.train.prepare_data", lambda cfg: toy_dataset())
    cfg = TrainConfig(dataset="jsb", unit=unit, budget=400, batch_size=2, epochs=1, **kw)
    res = train(cfg, tmp_path / "run", log=lambda m: None)
    model = SequenceModel(unit, 4, res["hidden_size"], 4, **kw)
    n = sum(p.numel() for p in model.rnn.parameters())
    assert res["recurrent_parameters"] == n == count_parameters(unit, 4, res["hidden_size"], **kw)
    G, P = {"lstm-np": (4, 0), "lstm": (4, 0), "lstm-nig": (3, 2)}[unit]
    count = lambda h: G * (100 * h + h * h) + G * h + P * h
    assert abs(count(res["hidden_size"]) - 400) <= min(abs(count(res["hidden_size"] + d) - 400) for d in (-1, 1))
    cfg = TrainConfig(dataset="jsb", unit=unit, budget=4000, batch_size=2, epochs=1, **kw)
    res = train(cfg, tmp_path / "run2", log=lambda m: None)
    assert res["hidden_size"] == min(range(1, 60), key=lambda h: (abs(count(h) - 4000), h))


def test_result_records_which_path_ran(tmp_path, monkeypatch):
    """result.json "path": "fused" where the kernels ran the recurrence, "reference" where they cannot."""
    from gatedrnn import kernels
    monkeypatch.setattr("gatedrnn.train.prepare_data", lambda cfg: toy_dataset())
    cfg = TrainConfig(dataset="jsb", unit="gru", hidden_size=3, batch_size=2, epochs=1)
    res = train(cfg, tmp_path / "a", log=lambda m: None)
    assert res["path"] == ("fused" if kernels.available() else "reference")
    monkeypatch.setenv("GATEDRNN_NO_KERNELS", "1")
    kernels.reset()
    try:
        assert train(cfg, tmp_path / "b", log=lambda m: None)["path"] == "reference"
    finally:
        monkeypatch.delenv("GATEDRNN_NO_KERNELS")
        kernels.reset()
    assert json.loads((tmp_path / "b" / "result.json").read_text())["path"] == "reference"


# ------------------------------------------------------------------ model.json: a typed spec, same file
def _committed_runs() -> list[Path]:
    return sorted(p.parent for p in REPO.glob("results/*/runs/*/model.json"))


def test_every_committed_model_json_reads_as_a_model_spec():
    """The typed ModelSpec reads every committed model.json (read-only) and writes the same JSON object
    back (older files lack data_dir_resolved, which reads as None); its unit options are accepted."""
    from gatedrnn.nn import unit_options
    from gatedrnn.train import ModelSpec
    runs = _committed_runs()
    if not runs:
        pytest.skip("no committed runs in this checkout")
    for run in runs:
        d = json.loads((run / "model.json").read_text())
        spec = ModelSpec.from_json(d)
        assert spec.to_json() == {"data_dir_resolved": None, **d}, run
        assert spec["kind"] == spec.kind and spec.get("meta") == d["meta"]
        unit_options(spec.unit, **spec.unit_kwargs)


@pytest.mark.parametrize("unit", ["lstm", "lstm-fb1", "gru"])
def test_load_run_reads_a_committed_run(tmp_path, unit):
    """load_run on a committed run's config.json + model.json (copied, read-only source) with weights of
    the right shapes (committed runs keep no best.pt here): a ModelSpec, the model built as recorded."""
    from gatedrnn.train import ModelSpec, build_model, load_run
    src = next((r for r in _committed_runs() if r.name.startswith(f"jsb-{unit}-lr")), None)
    if src is None:
        pytest.skip(f"no committed jsb {unit} run in this checkout")
    run = tmp_path / src.name
    run.mkdir()
    for name in ("config.json", "model.json"):
        (run / name).write_text((src / name).read_text())
    d = json.loads((src / "model.json").read_text())
    torch.save(build_model(d).state_dict(), run / "best.pt")
    cfg, spec, model = load_run(run)
    assert isinstance(spec, ModelSpec) and spec.to_json() == {"data_dir_resolved": None, **d}
    assert (cfg.unit, spec.unit, model.rnn.hidden_size) == (unit, unit, d["hidden_size"])
    assert model.rnn.options == {**type(model.rnn).declares.options, **d["unit_kwargs"]}
