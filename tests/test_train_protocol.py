"""Options of the training loop that depart from the strict protocol only when asked: skipping non-finite
updates (counted, bounded) and truncated back-propagation through time (one update per batch)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from _paths import data_dir
from gatedrnn import train as T
from gatedrnn.data.batching import collate
from gatedrnn.model import SequenceModel

TINY = dict(dataset="jsb", unit="gru", limit_sequences=8, crop_length=16, batch_size=4, epochs=3, patience=5)


def _cfg(**kw):
    return T.TrainConfig(**{**TINY, "data_dir": str(data_dir()), **kw})


def _poison(monkeypatch, bad_calls: set[int]):
    """forward_backward returns a non-finite loss on the given call numbers (0-based)."""
    real, calls = T.forward_backward, [0]

    def fake(model, b, n, tbptt, timer=None):
        k = calls[0]
        calls[0] += 1
        if k in bad_calls:
            return math.inf, False
        return real(model, b, n, tbptt, timer)
    monkeypatch.setattr(T, "forward_backward", fake)
    return calls


def test_strict_protocol_declares_divergence_at_the_first_non_finite_update(tmp_path, monkeypatch):
    _poison(monkeypatch, {3})
    res = T.train(_cfg(), tmp_path, log=lambda m: None)
    assert res["status"] == "diverged" and res["skipped_updates"] == 1
    assert res["updates"] == 3          # 2 batches per epoch: the 4th batch (epoch 2) diverged


def test_skipped_updates_are_counted_and_bounded(tmp_path, monkeypatch):
    _poison(monkeypatch, {1, 4})
    res = T.train(_cfg(skip_nonfinite=2), tmp_path / "a", log=lambda m: None)
    assert res["status"] == "completed" and res["skipped_updates"] == 2
    assert res["updates"] == 3 * 2 - 2
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("skipped_updates") for r in rows[1:]] == [1, 1, 2]   # cumulative, per epoch
    _poison(monkeypatch, {0, 2, 5})
    res = T.train(_cfg(skip_nonfinite=2), tmp_path / "b", log=lambda m: None)
    assert res["status"] == "diverged" and res["skipped_updates"] == 3


def test_an_epoch_without_one_finite_update_is_divergence(tmp_path, monkeypatch):
    _poison(monkeypatch, set(range(100)))
    res = T.train(_cfg(skip_nonfinite=1000), tmp_path, log=lambda m: None)
    assert res["status"] == "diverged" and res["updates"] == 0 and res["epochs"] == 1


def _batch(lengths, I=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    pairs = [((torch.rand(L, I, generator=g) < 0.3).float().numpy(), (torch.rand(L, I, generator=g) < 0.3).float().numpy())
             for L in lengths]
    return collate(pairs, list(range(len(pairs))))


@pytest.mark.parametrize("unit", ["tanh", "gru", "lstm"])
def test_tbptt_loss_is_the_full_loss_and_cuts_only_the_recurrent_gradient(unit):
    torch.manual_seed(0)
    model = SequenceModel(unit, 5, 7, 5).double()
    b = _batch([23, 9, 17, 1])
    b.inputs, b.targets = b.inputs.double(), b.targets.double()
    n = int(b.lengths.sum())

    def grads(K):
        model.zero_grad()
        loss, ok = T.forward_backward(model, b, n, K)
        assert ok
        return loss, {k: p.grad.clone() for k, p in model.named_parameters()}

    full_loss, full = grads(None)
    same_loss, same = grads(23)                       # a window as long as the batch: no truncation
    cut_loss, cut = grads(4)
    assert same_loss == pytest.approx(full_loss, rel=1e-12)
    assert all(torch.allclose(same[k], full[k], rtol=1e-10, atol=1e-12) for k in full)
    assert cut_loss == pytest.approx(full_loss, rel=1e-10)   # truncation changes gradients, never the loss
    # the read-out sees h_t only: its gradient is the same; the recurrent matrices' gradient is not
    for k in ("head.linear.weight", "head.linear.bias"):
        assert torch.allclose(cut[k], full[k], rtol=1e-10, atol=1e-12), k
    assert not torch.allclose(cut["rnn.weight_hh"], full["rnn.weight_hh"], rtol=1e-6)
    # with U = 0 the tanh unit has no path from h_{t-1} to h_t, so truncation changes nothing; the gated
    # units keep their additive shortcut paths ((1 − z) ⊙ h_{t−1}, f ⊙ c_{t−1}), so it still must differ
    with torch.no_grad():
        model.rnn.weight_hh.zero_()
    _, full0 = grads(None)
    _, cut0 = grads(4)
    same0 = all(torch.allclose(cut0[k], full0[k], rtol=1e-10, atol=1e-12) for k in full0)
    assert same0 == (unit == "tanh")


def test_tbptt_trains_from_the_cli_and_keeps_old_run_ids(tmp_path):
    from gatedrnn.cli import main
    from gatedrnn.study.grid import run_id_of
    assert main(["train", *sum(([f"--{k.replace('_', '-')}", str(v)] for k, v in TINY.items()), []),
                 "--tbptt", "5", "--out", str(tmp_path / "r"), "--data-dir", str(data_dir())]) == 0
    res = json.loads((tmp_path / "r" / "result.json").read_text())
    assert res["config"]["tbptt"] == 5 and res["updates"] == 6 and math.isfinite(res["test_nll"])
    base = _cfg().model_dump()
    assert run_id_of(base) == run_id_of({k: v for k, v in base.items() if k not in ("tbptt", "skip_nonfinite")})
    assert run_id_of(_cfg(tbptt=5).model_dump()) != run_id_of(base)
