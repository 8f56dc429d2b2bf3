"""gatedrnn.analysis against answers known without it: a linear recurrence whose Jacobian powers are known,
finite differences, the full-sequence NLL and a hand-computed no-context NLL."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gatedrnn import analysis as A
from gatedrnn.model import SequenceModel
from gatedrnn.train import evaluate


def _pairs(rng, n, lengths, I, O):
    return [(rng.integers(0, 2, size=(T, I)).astype(np.float32), rng.integers(0, 2, size=(T, O)).astype(np.float32))
            for T in (lengths if hasattr(lengths, "__len__") else [lengths] * n)]


def _softplus(a):
    return np.logaddexp(0.0, a)


def _bernoulli_nll(a, y):  # −log p of independent Bernoullis with logits a, summed over outputs
    return float(np.sum(_softplus(a) - y * a))


def test_gradient_flow_of_a_linear_recurrence_is_the_power_of_its_jacobian():
    # tanh unit with W = 0, b = 0, U = a·I: the state stays at 0, where tanh' = 1, so h_t = U h_{t−1} to first
    # order and ∂ℓ_{s+k}/∂h_s = (aI)^k ᵀ V ᵀ (σ(c) − y_{s+k}): its norm is a^k ‖Vᵀ(σ(c) − y)‖ exactly.
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    I, H, O, a, K = 3, 5, 4, 0.75, 12   # a exact in float32
    m = SequenceModel("tanh", I, H, O)
    p = m.rnn.paper_weights()
    p["W"].zero_(), p["b"].zero_(), p["U"].copy_(a * torch.eye(H))
    V = m.head.linear.weight.detach().double().numpy()
    with torch.no_grad():
        m.head.linear.bias.copy_(torch.randn(O))
    c = m.head.linear.bias.detach().double().numpy()
    pairs = _pairs(rng, 6, 40, I, O)
    s = 5
    g = A.gradient_flow(m, pairs, max_distance=K, starts=(s,))
    assert g.shape == (6, K + 1)
    sig = 1 / (1 + np.exp(-c))
    for w, (_, y) in enumerate(pairs):
        for k in range(K + 1):
            expect = a ** k * np.linalg.norm(V.T @ (sig - y[s - 1 + k].astype(np.float64)))
            assert g[w, k] == pytest.approx(expect, rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("unit", ["gru", "lstm", "mgu", "lstm-fgr"])
def test_gradient_flow_equals_finite_differences(unit):
    # ∂ℓ_{s+k}/∂h_s by central differences of the loss of a fresh float64 run from a perturbed h_s
    # (the rest of the state held fixed, as the measure defines: the LSTM's c_s; lstm-fgr's c, i, f, o),
    # against the autograd measure
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    I, H, O, K, s = 4, 6, 5, 7, 3
    m = SequenceModel(unit, I, H, O).double().eval()
    pairs = _pairs(rng, 2, 12, I, O)
    g = A.gradient_flow(m, pairs, max_distance=K, starts=(s,))
    x = torch.as_tensor(np.stack([q[0] for q in pairs]), dtype=torch.float64)
    y = torch.as_tensor(np.stack([q[1] for q in pairs]), dtype=torch.float64)
    with torch.no_grad():
        _, st = m.rnn(x[:, :s])
        h0 = st[0] if isinstance(st, tuple) else st

        def loss(h, k):  # ℓ at distance k from state h (per window)
            start = (h, *st[1:]) if isinstance(st, tuple) else h
            if k == 0:
                hk = h
            else:
                out, _ = m.rnn(x[:, s:s + k], start)
                hk = out[:, -1]
            return m.head.nll(m.head(hk), y[:, s - 1 + k])
        eps = 1e-6
        for k in (0, 1, 4, K):
            grad = torch.zeros(len(pairs), H, dtype=torch.float64)
            for j in range(H):
                e = torch.zeros(H, dtype=torch.float64)
                e[j] = eps
                grad[:, j] = (loss(h0 + e, k) - loss(h0 - e, k)) / (2 * eps)
            np.testing.assert_allclose(g[:, k], grad.norm(dim=1).numpy(), rtol=1e-6)


def test_context_curve_full_length_is_the_test_nll_and_k1_is_the_no_context_nll():
    torch.manual_seed(2)
    rng = np.random.default_rng(2)
    I, H, O = 4, 3, 4
    m = SequenceModel("tanh", I, H, O).double().eval()
    pairs = _pairs(rng, 5, [7, 3, 9, 1, 6], I, O)
    curve = dict(A.context_curve(m, pairs))
    assert list(curve)[-1] == 9 and sorted(curve)[:3] == [1, 2, 4]
    assert curve[9] == pytest.approx(evaluate(m, pairs, 64, "cpu")["nll"], rel=1e-12)
    # k = 1: every step from the zero state: h = tanh(W x_t + b), logits V h + c
    p = {k: v.double().numpy() for k, v in m.rnn.paper_weights().items()}
    V, c = m.head.linear.weight.detach().double().numpy(), m.head.linear.bias.detach().double().numpy()
    tot = steps = 0
    for x, y in pairs:
        for t in range(len(x)):
            h = np.tanh(p["W"] @ x[t].astype(np.float64) + p["b"])
            tot += _bernoulli_nll(V @ h + c, y[t].astype(np.float64))
            steps += 1
    assert curve[1] == pytest.approx(tot / steps, rel=1e-10)
    assert curve[1] != pytest.approx(curve[9], rel=1e-6)   # the context matters for this model


def test_time_scale_and_retention():
    assert A.time_scale(np.array([np.exp(-1.0)]))[0] == pytest.approx(1.0)
    assert A.time_scale(np.array([np.exp(-0.1)]))[0] == pytest.approx(10.0)
    z = np.array([[0.1, 0.5], [0.3, 0.5]])
    np.testing.assert_allclose(A.retention("gru", {"z": z, "r": z}), [0.8, 0.5])
    np.testing.assert_allclose(A.retention("lstm", {"i": z, "f": z, "o": z}), [0.2, 0.5])
    np.testing.assert_allclose(A.retention("mgu", {"f": z}), [0.8, 0.5])
    assert A.retention("tanh", {}) is None


@pytest.mark.parametrize("unit,gates", [("gru", "zr"), ("lstm", "ifo"), ("lstm-cifg", "fio"), ("lstm-nig", "fo"),
                                        ("gru-nrg", "z"), ("mgu", "f"), ("lstm-fgr", "ifo")])
def test_traced_gates_are_the_equations_gates(unit, gates):
    # the traced activations against the gates re-derived in float64 from the paper's symbols and the
    # states of an untraced (fused where it applies) run: h_{t−1} (and c for the LSTM) step by step
    torch.manual_seed(3)
    I, H, B, T = 4, 5, 3, 6
    from gatedrnn.nn import make_unit
    u = make_unit(unit, I, H).double()
    with torch.no_grad():
        u.bias.uniform_(-0.5, 0.5)
        if u.peephole is not None:
            u.peephole.uniform_(-0.5, 0.5)
    x = torch.randn(B, T, I, dtype=torch.float64)
    with torch.no_grad():
        with u.trace() as steps:
            out, _ = u(x)
        ref_out, _ = u(x)
    assert len(steps) == T and all(set(s) == set(gates) for s in steps)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)   # tracing changes nothing
    p = {k: v.numpy() for k, v in u.paper_weights().items()}
    sig = lambda a: 1 / (1 + np.exp(-a))
    h = np.zeros((B, H))
    c = np.zeros((B, H))
    prev = {g: np.zeros((B, H)) for g in "ifo"}      # lstm-fgr: the gates at t−1 (0 at t = 0)
    for t in range(T):
        xt = x[:, t].numpy()
        if unit.startswith("lstm"):
            pre = lambda g, cc: xt @ p[f"W_{g}"].T + h @ p[f"U_{g}"].T + p[f"b_{g}"] + \
                (cc * p[f"v_{g}"] if f"v_{g}" in p else 0) + \
                sum(prev[s] @ p[f"R_{g}{s}"].T for s in "ifo" if f"R_{g}{s}" in p)
            f = sig(pre("f", c))
            i = 1 - f if unit == "lstm-cifg" else (sig(pre("i", c)) if "i" in gates else 1.0)
            c = f * c + i * np.tanh(xt @ p["W_c"].T + h @ p["U_c"].T + p["b_c"])
            o = sig(pre("o", c))
            want = prev = {"i": i, "f": f, "o": o}
            h = o * np.tanh(c)
        else:
            g0 = "f" if unit == "mgu" else "z"
            a = sig(xt @ p[f"W_{g0}"].T + h @ p[f"U_{g0}"].T + p[f"b_{g0}"])
            want = {g0: a}
            r = 1.0
            if "r" in gates:
                r = want["r"] = sig(xt @ p["W_r"].T + h @ p["U_r"].T + p["b_r"])
            if unit == "mgu":
                r = a
            hh = np.tanh(xt @ p["W"].T + (r * h) @ p["U"].T + p["b"])
            h = (1 - a) * h + a * hh
        for g in gates:
            np.testing.assert_allclose(steps[t][g][0].numpy(), want[g] * np.ones((B, H)), rtol=0, atol=1e-12)
        np.testing.assert_allclose(out[:, t].numpy(), h, rtol=0, atol=1e-12)


def test_analyze_command_writes_every_output(tmp_path):
    """`gatedrnn analyze RUN... --out DIR` on two tiny trained runs: every CSV and figure, all units side by
    side; a folder that is neither a results nor a run directory is one line, exit 2."""
    import csv
    import os
    import subprocess
    import sys
    from _paths import data_dir
    env = dict(os.environ, GATEDRNN_DATA_DIR=str(data_dir()), OMP_NUM_THREADS="1")
    runs = []
    for unit in ("gru", "lstm"):
        run = tmp_path / unit
        p = subprocess.run([sys.executable, "-m", "gatedrnn", "train", "--dataset", "jsb", "--unit", unit,
                            "--epochs", "1", "--limit-sequences", "6", "--crop-length", "40", "--out", str(run),
                            "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        runs.append(str(run))
    out = tmp_path / "analysis"
    p = subprocess.run([sys.executable, "-m", "gatedrnn", "analyze", *runs, "--out", str(out), "--max-distance", "8"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    for name in ("gradient_flow", "context", "time_scales"):
        for ext in ("csv", "png", "svg"):
            assert (out / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    rows = list(csv.DictReader(open(out / "gates.csv")))
    assert {(r["unit"], r["gate"]) for r in rows} == {("gru", "z"), ("gru", "r"), ("lstm", "i"), ("lstm", "f"),
                                                       ("lstm", "o")}
    flow = list(csv.DictReader(open(out / "gradient_flow.csv")))
    assert {int(r["k"]) for r in flow} == set(range(9)) and {r["unit"] for r in flow} == {"gru", "lstm"}
    ctx = [r for r in csv.DictReader(open(out / "context.csv")) if r["unit"] == "gru"]
    full = json.loads((tmp_path / "gru" / "result.json").read_text())["test_nll"]
    assert float(ctx[-1]["nll"]) == pytest.approx(full, rel=1e-5)   # no reset = the run's test NLL
    bad = subprocess.run([sys.executable, "-m", "gatedrnn", "analyze", str(tmp_path)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "neither a results directory" in bad.stderr and "Traceback" not in bad.stderr


def test_a_study_is_analyzed_through_its_listed_runs(tmp_path):
    """A results directory's runs are the ones its reported_runs.txt names by run id (not the runs whose
    learning rate is close to Table 2's): a run not listed is left out, one listed without a model is skipped,
    and a study without the listing is one line, exit 2."""
    import shutil
    from gatedrnn.analysis import table2_runs
    from gatedrnn.cli import main
    study = tmp_path / "study"
    for name in ("jsb-gru-lr0.001-s1-aaaa", "jsb-gru-lr0.001-s2-bbbb", "jsb-gru-lr0.001-s0-cccc"):
        (study / "runs" / name).mkdir(parents=True)
        for f in ("best.pt", "result.json"):
            (study / "runs" / name / f).write_text("x")
    shutil.rmtree(study / "runs" / "jsb-gru-lr0.001-s2-bbbb")
    (study / "runs" / "jsb-gru-lr0.001-s2-bbbb").mkdir()          # listed, but no model (e.g. it diverged)
    (study / "table2.csv").write_text("dataset,unit,lr\njsb,gru,0.001\n")
    with pytest.raises(FileNotFoundError, match="reported_runs.txt"):
        table2_runs(study)
    assert main(["analyze", str(study)]) == 2
    (study / "reported_runs.txt").write_text("runs/jsb-gru-lr0.001-s1-aaaa\nruns/jsb-gru-lr0.001-s2-bbbb\n")
    assert [p.name for p in table2_runs(study)] == ["jsb-gru-lr0.001-s1-aaaa"]   # s0 has a model but is not listed
