"""The fused C++ path (gatedrnn.kernels) against the reference loop (`unit.fused=False`): outputs, final
states and every gradient (x, h0/c0, W, U, b, peepholes), on random shapes, lengths and every option
variant; float64 gradcheck through the fused path; weight noise; the fallback when the build fails;
K models as one (gatedrnn.nn.StackedUnit) against K single units; the layering (kernels/ imports
nothing from nn/). No timings here (see `gatedrnn bench`)."""
from __future__ import annotations

import shutil
import warnings

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gatedrnn import kernels
from gatedrnn.kernels import loader
from gatedrnn.nn import make_unit, recurrence, unit_names

VARIANTS = [
    ("tanh", {}),
    ("gru", {}),
    ("gru", {"reset_after": True}),
    ("lstm", {}),
    ("lstm", {"peepholes": False}),
]
IDS = ["tanh", "gru", "gru-reset_after", "lstm", "lstm-nopeep"]


@pytest.fixture(scope="module", autouse=True)
def built():
    """Build (or load the cached) kernel once; a machine with a compiler must be able to."""
    kernels.reset()
    ok = kernels.available()
    if not ok:
        if shutil.which("c++") or shutil.which("g++"):
            pytest.fail(f"the kernel did not build although a compiler exists: {kernels.build_error()}")
        pytest.skip(f"no C++ compiler: {kernels.build_error()}")
    yield


def fused_path(u) -> bool:
    """Would a forward of `u` run the fused kernel? (the unit declares one, it is on the CPU, the library
    is built)"""
    return u.kernel_spec() is not None and u.weight_hh.is_cpu and kernels.available()


@pytest.fixture
def kernel_calls(monkeypatch):
    """Records every call of kernels.recurrence and whether it ran the kernel (returned a result)."""
    calls = []
    real = kernels.recurrence

    def spy(*a, **k):
        r = real(*a, **k)
        calls.append(r is not None)
        return r

    monkeypatch.setattr(kernels, "recurrence", spy)
    return calls


def make(name, kw, I, H, dtype=torch.float32, seed=0, **extra):
    torch.manual_seed(seed)
    u = make_unit(name, I, H, **kw, **extra).to(dtype)
    with torch.no_grad():   # non-trivial biases and peepholes (they start at zero)
        u.bias.uniform_(-0.5, 0.5)
        if u.peephole is not None:
            u.peephole.uniform_(-0.5, 0.5)
    return u


def run(u, x, lengths=None, state=None, fused=None, loss_on=("out", "state"), seed=None):
    """Forward + backward of a fixed random loss; returns (out, state tensors, grads by name)."""
    u.fused = fused
    u.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    if state is not None:
        state = tuple(s.detach().clone().requires_grad_(True) for s in state) if isinstance(state, tuple) \
            else state.detach().clone().requires_grad_(True)
    if seed is not None:
        torch.manual_seed(seed)
    out, st_ = u(x, state, lengths=lengths)
    sts = st_ if isinstance(st_, tuple) else (st_,)
    g = torch.Generator().manual_seed(123)
    loss = x.new_zeros(())
    if "out" in loss_on:
        loss = loss + (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    if "state" in loss_on:
        for s in sts:
            loss = loss + (s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum()
    if "c" in loss_on:
        loss = loss + sts[-1].square().sum()
    loss.backward()
    grads = {n: p.grad.clone() if p.grad is not None else None for n, p in u.named_parameters()}
    grads["x"] = x.grad
    if state is not None:
        for i, s in enumerate(state if isinstance(state, tuple) else (state,)):
            grads[f"state{i}"] = s.grad
    return out.detach(), [s.detach() for s in sts], grads


def assert_same(a, b, atol, rtol=1e-4):
    out_a, st_a, g_a = a
    out_b, st_b, g_b = b
    torch.testing.assert_close(out_a, out_b, atol=atol, rtol=rtol)
    for s, t in zip(st_a, st_b):
        torch.testing.assert_close(s, t, atol=atol, rtol=rtol)
    assert g_a.keys() == g_b.keys()
    for k in g_a:
        if g_b[k] is None:
            assert g_a[k] is None or not g_a[k].any(), k
            continue
        assert g_a[k] is not None, k
        torch.testing.assert_close(g_a[k], g_b[k], atol=atol, rtol=rtol, msg=lambda m: f"grad {k}: {m}")


def test_units_declare_their_kernel(kernel_calls):
    want = {"tanh": {}, "gru": {"reset_after": False}, "lstm": {"peepholes": True}}
    for name, kw in VARIANTS:
        u = make(name, kw, 3, 4)
        assert fused_path(u)
        assert u.kernel_spec() == (name, {**want[name], **kw})
        u(torch.randn(2, 3, 3))
        u.fused = False
        u(torch.randn(2, 3, 3))                 # fused=False: the kernel is not even asked
    assert kernel_calls == [True] * len(VARIANTS)
    with pytest.raises(ValueError, match="no flag"):
        kernels.recurrence("gru", {"peepholes": True}, *[torch.zeros(1, 1, 1, 1)] * 8)


@pytest.fixture(params=["in-loop", "deferred"])
def wgrad_mode(request, monkeypatch):
    """The two ways the backward computes the weight gradients (see autograd.DEFER_BYTES)."""
    from gatedrnn.kernels import autograd
    monkeypatch.setattr(autograd, "DEFER_BYTES", 0 if request.param == "deferred" else 1 << 40)
    return request.param


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_equals_reference_padded_batch(variant, dtype, wgrad_mode):
    name, kw = variant
    B, T, I, H = 21, 9, 6, 19          # B not a multiple of the row block, H not of the column block
    u = make(name, kw, I, H, dtype)
    x = torch.randn(B, T, I, dtype=dtype)
    lengths = torch.randint(0, T + 1, (B,))
    lengths[0] = T
    h0 = torch.randn(B, H, dtype=dtype) * 0.5
    state = (h0, torch.randn(B, H, dtype=dtype) * 0.5) if name == "lstm" else h0
    atol = 1e-5 if dtype == torch.float32 else 1e-12
    assert_same(run(u, x, lengths, state), run(u, x, lengths, state, fused=False), atol)


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
@pytest.mark.parametrize("loss_on", [("out",), ("state",), ("c",)], ids=["out-only", "state-only", "c-only"])
def test_partial_losses(variant, loss_on):
    """Gradients reaching only the outputs, or only the final state (undefined incoming grads)."""
    name, kw = variant
    u = make(name, kw, 4, 5, torch.float64)
    x = torch.randn(3, 6, 4, dtype=torch.float64)
    assert_same(run(u, x, loss_on=loss_on), run(u, x, fused=False, loss_on=loss_on), 1e-12)


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_threads_and_paper_sizes(variant):
    """The batch is split across threads (with per-thread weight-gradient partial sums): the result
    must not depend on the thread count. Music-like sizes, float32."""
    name, kw = variant
    H = {"tanh": 100, "gru": 46, "lstm": 36}[name]
    u = make(name, kw, 88, H)
    x = (torch.rand(64, 30, 88) < 0.1).float()
    lengths = torch.randint(1, 31, (64,))
    ref = run(u, x, lengths, fused=False)
    old = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            assert_same(run(u, x, lengths), ref, atol=1e-4, rtol=1e-3)   # sums over 64 x 30 in float32
    finally:
        torch.set_num_threads(old)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(variant=st.sampled_from(VARIANTS), B=st.integers(1, 19), T=st.integers(1, 8), I=st.integers(1, 20),
       H=st.integers(1, 35), batch_first=st.booleans(), with_state=st.booleans(), padded=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 2**16))
def test_fused_equals_reference_property(variant, B, T, I, H, batch_first, with_state, padded, dtype, seed):
    name, kw = variant
    u = make(name, kw, I, H, dtype, seed=seed, batch_first=batch_first)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, I, generator=g, dtype=dtype)
    if not batch_first:
        x = x.transpose(0, 1).contiguous()
    lengths = torch.randint(0, T + 1, (B,), generator=g) if padded else None
    state = None
    if with_state:
        h0 = torch.randn(B, H, generator=g, dtype=dtype)
        state = (h0, torch.randn(B, H, generator=g, dtype=dtype)) if name == "lstm" else h0
    atol = 2e-5 if dtype == torch.float32 else 1e-11
    assert_same(run(u, x, lengths, state), run(u, x, lengths, state, fused=False), atol)


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_gradcheck_fused(variant, wgrad_mode, kernel_calls):
    name, kw = variant
    B, T, I, H = 3, 4, 3, 5
    u = make(name, kw, I, H, torch.float64)
    assert fused_path(u)
    lengths = torch.tensor([4, 2, 0])
    mask = torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    W = u.weight_ih.detach().clone().requires_grad_(True)
    U = u.weight_hh.detach().clone().requires_grad_(True)
    extra = [u.bias] + ([u.peephole] if u.peephole is not None else [])

    def f(x, h0, c0, W, U, *params):
        state = (h0, c0) if name == "lstm" else h0
        out, st_ = recurrence(u, x, state, mask, W, U, *params)
        return (out,) + (st_ if isinstance(st_, tuple) else (st_,))

    assert torch.autograd.gradcheck(f, (x, h0, c0, W, U, *extra), atol=1e-7, rtol=1e-5)
    assert kernel_calls and all(kernel_calls)


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_weight_noise_training(variant):
    """Training mode with weight noise: the noisy W, U reach the kernel as autograd tensors, and the
    gradient flows through them to the clean parameters exactly as in the reference."""
    name, kw = variant
    u = make(name, kw, 5, 7, weight_noise=0.075)
    u.train()
    x = torch.randn(4, 6, 5)
    lengths = torch.tensor([6, 3, 1, 5])
    a = run(u, x, lengths, seed=7)
    b = run(u, x, lengths, fused=False, seed=7)
    assert_same(a, b, atol=1e-5)
    c = run(u, x, lengths, seed=8)   # a different draw really changes the result
    assert not torch.allclose(a[0], c[0])


def test_packed_sequence_and_no_grad():
    from torch.nn.utils.rnn import pack_padded_sequence
    u = make("lstm", {}, 4, 6)
    x = torch.randn(5, 7, 4)
    lengths = torch.tensor([7, 2, 5, 1, 3])
    p = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        (pa, (ha, ca)) = u(p)
        u.fused = False
        (pb, (hb, cb)) = u(p)
    torch.testing.assert_close(pa.data, pb.data, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ha, hb, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ca, cb, atol=1e-5, rtol=1e-4)


def test_unsupported_units_fall_back_to_the_reference(kernel_calls):
    """A subclass that overrides the equations (cell, reference, state_h or init_state) never takes its
    parent's fused path; one that only adds, e.g., a method keeps it."""
    from gatedrnn.nn.gru import GRU
    from gatedrnn.nn.lstm import LSTM

    class MyGRU(GRU):
        def cell(self, wx_t, h, p):
            return super().cell(wx_t, h, p) * 0.5

    class MyRef(GRU):
        def reference(self, *a):
            return super().reference(*a)

    class MyState(LSTM):
        @staticmethod
        def state_h(state):
            return state[1]

    class MyInit(LSTM):
        def init_state(self, batch, like):
            return tuple(s + 1 for s in super().init_state(batch, like))

    class Plain(GRU):
        def describe(self):
            return "same equations"

    for cls in (MyGRU, MyRef, MyState, MyInit):
        u = cls(3, 4)
        assert u.kernel_spec() is None, cls
        u(torch.randn(2, 5, 3)).__getitem__(0).sum().backward()
    assert kernel_calls == []
    g, m = GRU(3, 4), MyGRU(3, 4)
    m.load_state_dict(g.state_dict())
    x = torch.randn(2, 1, 3)
    torch.testing.assert_close(m(x)[0], 0.5 * g(x)[0])     # one step from h_0 = 0: MyGRU's own cell() ran
    assert Plain(3, 4).kernel_spec() == ("gru", {"reset_after": False})


def test_fallback_when_the_build_fails(monkeypatch):
    """A failed build: ONE warning, then the reference loop, same results."""
    def boom(*a, **k):
        raise loader.KernelBuildError("simulated compiler failure")

    u = make("lstm", {}, 4, 5)
    x = torch.randn(3, 6, 4)
    ref = run(u, x, fused=False)
    monkeypatch.setattr(loader, "load", boom)
    kernels.reset()
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            assert not fused_path(u)
            got = run(u, x)
            run(make("gru", {}, 4, 5), x)
        msgs = [str(m.message) for m in w if issubclass(m.category, RuntimeWarning)]
        assert len(msgs) == 1, msgs
        assert "reference loop" in msgs[0] and "simulated compiler failure" in msgs[0]
        assert_same(got, ref, atol=0)
        assert "simulated" in kernels.build_error()
    finally:
        monkeypatch.undo()
        kernels.reset()
    assert kernels.available()


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("GATEDRNN_NO_KERNELS", "1")
    kernels.reset()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")      # disabling on purpose is not worth a warning
            assert not fused_path(make("tanh", {}, 2, 3))
    finally:
        monkeypatch.delenv("GATEDRNN_NO_KERNELS")
        kernels.reset()


def test_failed_compile_is_reported(monkeypatch, tmp_path):
    """A compiler that fails gives KernelBuildError (never a crash), and nothing half-written is cached."""
    monkeypatch.setenv("GATEDRNN_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "false")
    with pytest.raises(loader.KernelBuildError):
        loader.build()
    assert not any(p.suffix == ".so" for p in tmp_path.rglob("*"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_runs_the_reference():
    u = make("gru", {}, 3, 4).cuda()
    assert not fused_path(u)
    out, h = u(torch.randn(2, 5, 3, device="cuda"))
    assert out.is_cuda


# ------------------------------------------------------------------ many models as one
from gatedrnn.nn import StackedUnit  # noqa: E402


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
@pytest.mark.parametrize("fused", [None, False], ids=["fused", "stacked-reference"])
def test_stacked_equals_independent_runs(variant, fused, wgrad_mode):
    """K models as one == K single units run one by one (outputs, final states, every gradient),
    with per-model lengths, initial states and weight noise drawn in training mode."""
    name, kw = variant
    K, B, T, I, H = 3, 9, 7, 5, 18
    torch.manual_seed(0)
    units = [make(name, kw, I, H, seed=k, weight_noise=[0.0, 0.05, 0.1][k]) for k in range(K)]
    stacked = StackedUnit.from_units(units, fused=fused)
    stacked.train()
    x = torch.randn(K, B, T, I, requires_grad=True)
    lengths = torch.randint(0, T + 1, (K, B))
    h0 = torch.randn(K, B, H, requires_grad=True)
    c0 = torch.randn(K, B, H, requires_grad=True)
    state = (h0, c0) if name == "lstm" else h0
    torch.manual_seed(11)
    out, st_ = stacked(x, state, lengths=lengths)
    sts = st_ if isinstance(st_, tuple) else (st_,)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * w + 0).sum().add(sum(s.square().sum() for s in sts)).backward()

    torch.manual_seed(11)
    for k, u in enumerate(units):
        u.train()
        u.fused = False
        xk = x[k].detach().clone().requires_grad_(True)
        sk = tuple(s[k].detach().clone().requires_grad_(True) for s in (h0, c0)) if name == "lstm" \
            else h0[k].detach().clone().requires_grad_(True)
        o, s1 = u(xk, sk, lengths=lengths[k])
        s1 = s1 if isinstance(s1, tuple) else (s1,)
        (o * w[k]).sum().add(sum(s.square().sum() for s in s1)).backward()
        torch.testing.assert_close(out[k].detach(), o.detach(), atol=1e-5, rtol=1e-4)
        for a, b in zip(sts, s1):
            torch.testing.assert_close(a[k].detach(), b.detach(), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(x.grad[k], xk.grad, atol=1e-5, rtol=1e-4)
        for a, b in zip((h0, c0) if name == "lstm" else (h0,), sk if name == "lstm" else (sk,)):
            torch.testing.assert_close(a.grad[k], b.grad, atol=1e-5, rtol=1e-4)
        for (n, p), q in zip(stacked.named_parameters(), u.parameters()):
            torch.testing.assert_close(p.grad[k], q.grad, atol=1e-5, rtol=1e-4, msg=lambda m: f"{n}[{k}]: {m}")


def test_stacked_roundtrip_and_construction():
    s = StackedUnit("lstm", 4, 6, 5, peepholes=False, forget_bias=1.0, weight_noise=[0, 0.1, 0.2, 0.3])
    assert s.weight_ih.shape == (4, 20, 6) and s.weight_hh.shape == (4, 20, 5) and s.bias.shape == (4, 20)
    assert s.peephole is None
    units = s.to_units()
    assert [u.weight_noise for u in units] == pytest.approx([0, 0.1, 0.2, 0.3])
    assert all(not u.peepholes and u.forget_bias == 1.0 for u in units)
    back = StackedUnit.from_units(units)
    for a, b in zip(s.parameters(), back.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError):
        StackedUnit.from_units([make_unit("gru", 3, 4), make_unit("gru", 3, 5)])
    with pytest.raises(ValueError):
        StackedUnit.from_units([make_unit("gru", 3, 4), make_unit("gru", 3, 4, reset_after=True)])


def test_stacked_gradcheck():
    s = StackedUnit("gru", 2, 3, 4).double()
    x = torch.randn(2, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([[4, 2, 1], [3, 4, 0]])

    def f(x, W, U, b):
        out, h = recurrence(s.template, x.transpose(1, 2), torch.zeros(2, 3, 4, dtype=torch.float64),
                            torch.arange(4).view(1, 4, 1) < lengths.unsqueeze(1), W, U, b)
        return out, h

    W = s.weight_ih.detach().clone().requires_grad_(True)
    U = s.weight_hh.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (x, W, U, s.bias), atol=1e-7, rtol=1e-5)


def test_bench_command_is_registered_and_reports():
    """The bench CLI (gatedrnn/cli/bench.py) parses and its report (gatedrnn.nn.bench) renders (no timing is
    run or checked here)."""
    import argparse

    from gatedrnn.cli import bench as cli_bench
    from gatedrnn.nn import bench
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    cli_bench.add_bench_command(sub)
    args = p.parse_args(["bench", "--suite", "music", "--unit", "gru", "--threads", "1", "--out", "x.json"])
    assert args.func is cli_bench._cmd and args.threads == 1
    assert p.parse_args(["bench"]).suite == ["music", "speech"] and p.parse_args(["bench"]).unit == ["lstm", "gru", "tanh"]
    assert bench.flops("lstm", 64, 200, 88, 36, False) == 2 * 200 * 64 * (88 + 36) * 144 + 4 * 12800 * 144 * 36 \
        + 2 * 12800 * 144 * 88
    t = {"median_ms": 1.0, "min_ms": 1.0, "n": 1}
    res = {"machine": {"cpu": "x", "logical_cpus": 2, "torch": "t", "torch_threads": 1, "gemm_gflops": 10.0,
                       "loadavg_start": (0.1, 0.1, 0.1)},
           "results": [{"suite": "music", "unit": "gru", "hidden": 46, "readout": False,
                        "times": {"fused": t, "torch.nn": t, "reference": t}, "fused_over_nn": 1.0,
                        "reference_over_nn": 1.0, "floor_ms": 1.0, "fused_over_floor": 1.0}],
           "stacked": None}
    assert "| music | gru | 46 |" in bench.markdown(res)
    res["stacked"] = [{"unit": u, "hidden": h, "K": 10, "stacked_per_model_ms": 0.9, "ratio_per_model_vs_one": 0.9,
                       "ratio_per_model_vs_one_min": 0.8,
                       "times": {"one fused model": t, "K=10 stacked": {"median_ms": 9.0, "min_ms": 8.0, "n": 1}}}
                      for u, h in (("lstm", 36), ("gru", 46), ("tanh", 100))]
    md = bench.markdown(res)
    for u, h in (("lstm", 36), ("gru", 46), ("tanh", 100)):
        assert f"| {u} | {h} | 10 | 1.0 (1.0) | 9 (8) | 0.9 | **0.90** (0.80) | — |" in md
    res["stacked"][0].update(cpu_ratio_per_model_vs_one=0.95, cpu_ratio_per_model_vs_one_min=0.85)
    assert "| lstm | 36 | 10 | 1.0 (1.0) | 9 (8) | 0.9 | **0.90** (0.80) | **0.95** (0.85) |" in bench.markdown(res)


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc/self/maps")
def test_kernel_threads_are_torchs_openmp_pool():
    """Built with -fopenmp, the library must reuse the libgomp torch loaded (one OpenMP pool, not two)."""
    from pathlib import Path
    assert loader.load() is not None
    gomps = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
             if "libgomp" in line and "/" in line}
    if not any("torch" in g for g in gomps):
        pytest.skip("this torch build does not bundle libgomp")
    assert len(gomps) == 1, gomps


# ------------------------------------------------------------------ forward only (evaluation)
def _inputs(B, T, I, dtype, g, sparse):
    if sparse:   # piano-roll-like: mostly zeros, ones and a few other values
        x = (torch.rand(B, T, I, generator=g) < 0.1).to(dtype)
        x[..., 0] *= torch.randn(B, T, generator=g, dtype=dtype)
        return x
    return torch.randn(B, T, I, generator=g, dtype=dtype)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(variant=st.sampled_from(VARIANTS), B=st.integers(1, 19), T=st.integers(1, 9), I=st.integers(1, 20),
       H=st.integers(1, 35), with_state=st.booleans(), lengths_kind=st.sampled_from(["none", "random", "sorted"]),
       dtype=st.sampled_from([torch.float32, torch.float64]), sparse=st.booleans(), seed=st.integers(0, 2**16))
# the case hypothesis found (torch.nn.LSTM's form at batch 1, one thread, runs torch's oneDNN primitive,
# gemm.py _torch_lstm, whose inference and training propagation kinds rounded differently: 1.1e-8 apart;
# test_torch_lstm_primitive_evaluation_equals_training_forward pins that path)
@example(variant=("lstm", {"peepholes": False}), B=1, T=1, I=3, H=2, with_state=True, lengths_kind="none",
         dtype=torch.float32, sparse=False, seed=1)
@example(variant=("lstm", {"peepholes": False}), B=1, T=1, I=3, H=2, with_state=False, lengths_kind="none",
         dtype=torch.float32, sparse=False, seed=1)
def test_inference_equals_reference_and_training_forward(variant, B, T, I, H, with_state, lengths_kind, dtype,
                                                         sparse, seed):
    """Under no_grad the fused path runs forward-only (no autograd Function, no activations kept): its
    outputs and final state equal the reference loop's (to float rounding) and the training-mode fused
    forward's (exactly: the same arithmetic)."""
    name, kw = variant
    u = make(name, kw, I, H, dtype, seed=seed)
    g = torch.Generator().manual_seed(seed)
    x = _inputs(B, T, I, dtype, g, sparse)
    lengths = None
    if lengths_kind != "none":
        lengths = torch.randint(0, T + 1, (B,), generator=g)
        if lengths_kind == "sorted":
            lengths = lengths.sort(descending=bool(seed % 2)).values
    state = None
    if with_state:
        h0 = torch.randn(B, H, generator=g, dtype=dtype)
        state = (h0, torch.randn(B, H, generator=g, dtype=dtype)) if name == "lstm" else h0
    with torch.no_grad():
        u.fused = None
        out, st_ = u(x, state, lengths=lengths)
        u.fused = False
        ref_out, ref_st = u(x, state, lengths=lengths)
    u.fused = None
    tr_out, tr_st = u(x, state, lengths=lengths)          # parameters require grad: the autograd Function
    assert tr_out.requires_grad
    atol = 2e-5 if dtype == torch.float32 else 1e-11
    sts = lambda s: s if isinstance(s, tuple) else (s,)
    torch.testing.assert_close(out, ref_out, atol=atol, rtol=1e-4)
    same = lambda a, b: torch.equal(a, b) or pytest.fail(f"not bit-identical: {(a - b).abs().max().item():.3g}")
    same(out, tr_out.detach())
    for a, r, t in zip(sts(st_), sts(ref_st), sts(tr_st)):
        torch.testing.assert_close(a, r, atol=atol, rtol=1e-4)
        same(a, t.detach())


@pytest.mark.parametrize("threads", [1, 2])
def test_torch_lstm_primitive_evaluation_equals_training_forward(threads, monkeypatch):
    """torch.nn.LSTM's form on torch's own LSTM primitive (the GEMM path at batch 1, unpadded: gemm.py
    _torch_lstm): under no_grad the same values, bit for bit, as the training forward. (torch picks oneDNN's
    forward-inference kind from grad mode alone, which rounds differently: B = 1, T = 1, H = 2, seed 1 was
    1.1e-8 apart.)"""
    from gatedrnn.nn import dispatch, gemm
    monkeypatch.setattr(dispatch, "FORCE", "gemm")
    calls = []
    real = gemm._torch_lstm
    monkeypatch.setattr(gemm, "_torch_lstm", lambda *a: calls.append(torch.is_grad_enabled()) or real(*a))
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for seed, H, T in ((1, 2, 1), (2, 5, 7), (3, 17, 4)):
            u = make("lstm", {"peepholes": False}, 3, H, seed=seed)
            g = torch.Generator().manual_seed(seed)
            x = torch.randn(1, T, 3, generator=g)
            state = (torch.randn(1, H, generator=g), torch.randn(1, H, generator=g))
            with torch.no_grad():
                out, (h, c) = u(x, state)
            tr_out, (tr_h, tr_c) = u(x, state)
            assert tr_out.requires_grad and not out.requires_grad
            for a, b in ((out, tr_out), (h, tr_h), (c, tr_c)):
                assert torch.equal(a, b.detach()), (seed, (a - b).abs().max().item())
    finally:
        torch.set_num_threads(old)
    assert calls == [False, True] * 3   # both passes ran the primitive (called under no_grad, then in training)


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_one_model_without_the_k_dim_is_the_k1_call(variant):
    """kernels.recurrence takes one model's operands without the leading K (what a single unit passes):
    the same outputs, final state and gradients, bit for bit, as the K = 1 call — and no view of a parameter
    between it and the parameter in the autograd graph (each was a backward node: per-call overhead)."""
    name, kw = variant
    T, B, I, H = 7, 3, 5, 6
    u = make(name, kw, I, H)
    spec = u.kernel_spec()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, I, generator=g)
    h0 = torch.randn(B, H, generator=g)
    c0 = torch.randn(B, H, generator=g) if name == "lstm" else None
    mask = torch.arange(T).unsqueeze(1) < torch.tensor([7, 3, 5]).unsqueeze(0)
    params = [u.weight_ih, u.weight_hh, u.bias] + ([u.peephole] if u.peephole is not None else [])
    res = []
    for single in (True, False):
        k = (lambda t: t) if single else (lambda t: None if t is None else t[None])
        out, hT, cT = kernels.recurrence(*spec, k(x), k(h0), k(c0), k(u.weight_ih), k(u.weight_hh), k(u.bias),
                                         k(u.peephole), k(mask))
        if single:
            nodes = {type(f).__name__ for f, _ in out.grad_fn.next_functions if f is not None}
            assert nodes == {"AccumulateGrad"}, nodes
        loss = out.sum() + (hT * 2).sum() + (0 if cT is None else cT.sum())   # out.sum(): a broadcast gradient
        grads = torch.autograd.grad(loss, params)
        res.append([t.squeeze(0) if not single else t for t in (out, hT) + ((cT,) if cT is not None else ())]
                   + list(grads))
    for a, b in zip(*res):
        assert a.shape == b.shape and torch.equal(a, b)
    with torch.no_grad():   # the forward-only kernel too
        out1 = kernels.recurrence(*spec, x, h0, c0, u.weight_ih, u.weight_hh, u.bias, u.peephole, mask)[0]
    assert torch.equal(out1, res[0][0])


def test_no_grad_runs_the_forward_only_kernel(monkeypatch):
    """The evaluation path never builds the autograd Function nor the activations backward needs."""
    from gatedrnn.kernels import autograd
    seen = []
    real = autograd.run_forward
    monkeypatch.setattr(autograd, "run_forward", lambda *a, **k: seen.append(k.get("inference", False)) or real(*a, **k))
    for name, kw in VARIANTS:
        u = make(name, kw, 4, 5)
        x = torch.randn(3, 6, 4)
        with torch.no_grad():
            u(x, lengths=torch.tensor([6, 2, 4]))
        u.requires_grad_(False)
        u(x)                                      # grad mode, but nothing requires a gradient
        u.requires_grad_(True)
        u(x)                                      # training: the autograd Function
    assert seen == [True, True, False] * len(VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_input_path_is_exact(variant, dtype, wgrad_mode, monkeypatch):
    """The sparse input projection (forward b + W x_t, backward dW += dgxᵀ x_t over x's nonzeros) gives
    bit-for-bit the dense kernel's outputs and gradients: it skips only terms that add exactly zero."""
    from gatedrnn.kernels import autograd
    name, kw = variant
    B, T, I, H = 13, 11, 23, 19
    u = make(name, kw, I, H, dtype)
    x = _inputs(B, T, I, dtype, torch.Generator().manual_seed(3), sparse=True)
    lengths = torch.randint(0, T + 1, (B,))
    res = []
    for mode in (False, True):
        monkeypatch.setattr(autograd, "SPARSE", mode)
        res.append(run(u, x, lengths))
    assert autograd.use_sparse(x.transpose(0, 1)) is True
    monkeypatch.setattr(autograd, "SPARSE", None)
    assert autograd.use_sparse(x.transpose(0, 1)) and not autograd.use_sparse(torch.randn(4, 3, 5))
    assert_same(res[0], res[1], atol=0, rtol=0)
    torch.testing.assert_close(res[1][0], run(u, x, lengths, fused=False)[0], atol=2e-5 if dtype == torch.float32
                               else 1e-11, rtol=1e-4)


@pytest.fixture
def pack_bytes():
    """Sets the kernels' packing threshold (fused.cpp g_pack_bytes) for a test; restores it after."""
    lib = loader.load()
    old = lib.gr_set_pack_bytes(1 << 40)
    lib.gr_set_pack_bytes(old)
    yield lib.gr_set_pack_bytes
    lib.gr_set_pack_bytes(old)


@pytest.mark.parametrize("variant", VARIANTS + [("lstm-fgr", {}), ("gru-nug", {})], ids=IDS + ["lstm-fgr", "gru-nug"])
@pytest.mark.parametrize("B, padded, dtype", [(13, False, torch.float32), (13, True, torch.float32),
                                              (3, True, torch.float32), (13, False, torch.float64)])
def test_packed_operands_are_exact(variant, B, padded, dtype, wgrad_mode, pack_bytes):
    """Large operands (Wᵀ, Uᵀ, U, W) packed into panels (fused.cpp, common.h gemm_packed; here forced at a
    small size) give bit-for-bit the unpacked kernel's outputs, states and every gradient — training
    forward, backward with dx, inference — and the reference's to float rounding. B = 13: the input
    projection over blocks of steps (tiles of 6, 4, 2 and 1 rows); B = 3: the products of a few rows
    across panels; padded lengths. The paper GRU's own product U_c (r ⊙ h) packed too, forward (U_c^T's
    panels after [U_z;U_r]^T's) and backward (rows 2H.. of U's panels); gru-nug: one gate block, U_c^T
    from column pad(H)."""
    name, kw = variant
    T, I, H = 11, 21, 19
    u = make(name, kw, I, H, dtype)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(B, T, I, generator=g, dtype=dtype)
    lengths = torch.randint(0, T + 1, (B,), generator=g) if padded else None
    res, infer = [], []
    for nbytes in (1 << 40, 0):
        pack_bytes(nbytes)
        res.append(run(u, x, lengths))
        with torch.no_grad():
            infer.append(u(x, lengths=lengths)[0])
    assert_same(res[0], res[1], atol=0, rtol=0)
    assert torch.equal(infer[0], infer[1]) and torch.equal(infer[1], res[1][0])
    assert_same(res[1], run(u, x, lengths, fused=False), atol=2e-5 if dtype == torch.float32 else 1e-11)


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_byte_inputs_for_inference(variant):
    """Compact evaluation batches: uint8 inputs give exactly the float inputs' forward."""
    from gatedrnn.kernels import autograd, inference
    name, kw = variant
    u = make(name, kw, 9, 7)
    kind, flags = u.kernel_spec()
    x8 = (torch.rand(1, 8, 5, 9) < 0.3).to(torch.uint8)
    x8[0, :, :, 2] *= 3
    mask = (torch.arange(8).view(1, 8, 1) < torch.tensor([8, 3, 0, 5, 8]).view(1, 1, 5))
    h0 = torch.randn(1, 5, 7)
    c0 = torch.randn(1, 5, 7) if name == "lstm" else None
    peep = u.peephole is not None
    args = lambda x: (kind, flags, x, h0, c0, u.weight_ih[None], u.weight_hh[None], u.bias[None],
                      u.peephole[None] if peep else None, mask)
    for sparse in (False, True):
        autograd.SPARSE = sparse
        try:
            a, b = inference(*args(x8)), inference(*args(x8.float()))
        finally:
            autograd.SPARSE = None
        for s, t in zip(a, b):
            assert (s is None and t is None) or torch.equal(s, t)
    with pytest.raises(ValueError):
        autograd.run_forward(*kernels._code(kind, flags)[:3], *args(x8)[2:9], None)


def test_stacked_inference_equals_training_forward():
    K, B, T = 3, 6, 7
    for name, kw in VARIANTS:
        s = StackedUnit(name, K, 5, 8, **kw)
        x = torch.randn(K, B, T, 5)
        lengths = torch.randint(0, T + 1, (K, B))
        with torch.no_grad():
            a, sa = s(x, lengths=lengths)
        b, sb = s(x, lengths=lengths)
        assert b.requires_grad and torch.equal(a, b.detach())
        for p, q in zip(sa if isinstance(sa, tuple) else (sa,), sb if isinstance(sb, tuple) else (sb,)):
            assert torch.equal(p, q.detach())


# ------------------------------------------------------------------ fused Bernoulli read-out + NLL
from gatedrnn.heads import BernoulliHead  # noqa: E402
from gatedrnn.kernels import readout  # noqa: E402


def _readout_case(dtype, B=7, T=13, H=11, O=19, seed=0, soft=False):
    torch.manual_seed(seed)
    head = BernoulliHead(H, O).to(dtype)
    with torch.no_grad():   # large logits too (saturated sigmoids, e^-|a| underflowing)
        head.linear.weight.mul_(30)
        head.linear.bias.uniform_(-3, 3)
    h = torch.randn(T, B, H, dtype=dtype).transpose(0, 1)          # batch-first view of a time-major output
    y = torch.rand(B, T, O, dtype=dtype) if soft else (torch.rand(B, T, O) < 0.2).to(dtype)
    lengths = torch.randint(0, T + 1, (B,))
    mask = torch.arange(T).view(1, T) < lengths.view(B, 1)
    return head, h, y, mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("soft", [False, True], ids=["binary", "soft-targets"])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_readout_equals_torch(dtype, soft, masked):
    head, h, y, mask = _readout_case(dtype, soft=soft)
    mask = mask if masked else None
    g = torch.randn(h.shape[:2], dtype=dtype)
    res = []
    for fused in (None, False):
        head.fused = fused
        head.zero_grad(set_to_none=True)
        hh = h.detach().requires_grad_(True)
        nll = head.nll_hidden(hh, y, mask)
        (nll * g).sum().backward()
        res.append((nll.detach(), hh.grad, head.linear.weight.grad, head.linear.bias.grad))
    tol = dict(atol=1e-4, rtol=2e-5) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-10)
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, **tol)
    if masked:
        assert not res[0][0][~mask].any() and not res[0][1][~mask].any()
    head.fused = None
    with torch.no_grad():                     # forward only: the training forward's values exactly
        assert torch.equal(head.nll_hidden(h, y, mask), res[0][0])
        if not soft:                          # byte targets (compact evaluation batches): exactly the same
            assert torch.equal(head.nll_hidden(h, y.to(torch.uint8), mask), res[0][0])


def test_fused_readout_gradcheck():
    head, h, y, mask = _readout_case(torch.float64, B=3, T=4, H=5, O=6)
    with torch.no_grad():
        head.linear.weight.div_(30)
    V = head.linear.weight.detach().clone().requires_grad_(True)
    c = head.linear.bias.detach().clone().requires_grad_(True)
    hh = h.detach().clone().requires_grad_(True)
    f = lambda h_, V_, c_: readout.BernoulliNLL.apply(h_, V_, c_, y, mask)
    assert torch.autograd.gradcheck(f, (hh, V, c), atol=1e-7, rtol=1e-5)


def test_fused_readout_falls_back_where_it_does_not_apply():
    head, h, y, mask = _readout_case(torch.float32)
    assert readout.bernoulli_nll(h.double(), head.linear.weight, head.linear.bias, y, mask) is None  # mixed dtypes
    yy = y.clone().requires_grad_(True)
    assert readout.bernoulli_nll(h, head.linear.weight, head.linear.bias, yy, mask) is None          # target grads

    class MyHead(BernoulliHead):
        def nll(self, logits, target):
            return super().nll(logits, target) * 2

    m = MyHead(11, 19)
    torch.testing.assert_close(m.nll_hidden(h, y, mask), m.nll(m(h), y) * mask)


@pytest.mark.parametrize("unit", ["tanh", "gru", "lstm", "lstm-fgr"])
def test_model_total_nll_matches_the_reference(unit):
    """What evaluation sums (SequenceModel.total_nll on compact batches, fused forward-only) equals the
    reference model's summed per-step NLL."""
    from gatedrnn.data.batching import collate
    from gatedrnn.model import SequenceModel
    torch.manual_seed(1)
    m = SequenceModel(unit, 12, 9, 12, weight_noise=0.075).eval()
    rng = torch.Generator().manual_seed(2)
    pairs = []
    for L in (5, 9, 1, 7, 9):
        y = (torch.rand(L, 12, generator=rng) < 0.2).to(torch.uint8).numpy()
        x = y.copy()
        x[1:], x[0] = y[:-1], 0
        pairs.append((x, y))
    compact, full = collate(pairs, range(5), compact=True), collate(pairs, range(5))
    assert compact.inputs.dtype == torch.uint8
    got = m.total_nll(compact.inputs, compact.targets, compact.mask, compact.lengths)
    with torch.no_grad():                     # the fused path ran (it returns None where it does not apply)
        fused = m._fused_step_nll(compact.inputs, compact.targets, compact.mask)
        assert fused is not None and float(fused.to(torch.float64).sum()) == got
        assert (fused[~compact.mask] == 0).all()      # padded steps score nothing
    m.rnn.fused = m.head.fused = False
    with torch.no_grad():
        ref = float(m.nll(full.inputs, full.targets, full.mask, full.lengths).sum(dtype=torch.float64))
    assert got == pytest.approx(ref, rel=1e-6)
    assert m.total_nll(compact.inputs, compact.targets, compact.mask, compact.lengths) == pytest.approx(ref, rel=1e-12)


# ------------------------------------------------------------------ layering
def test_kernels_import_nothing_from_nn():
    """kernels/ receives tensors and a unit code: it imports nothing of gatedrnn outside itself — checked
    on the source (every import statement) and at run time (a bare `gatedrnn` package, so that the
    package's own __init__ cannot mask what kernels/ pulls in)."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    import gatedrnn
    pkg = Path(gatedrnn.__file__).parent
    for f in sorted((pkg / "kernels").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{f.name}: relative import beyond kernels/ ({'.' * node.level}{node.module})"
                mods = [node.module or ""] if node.level == 0 else []
                if node.module == "gatedrnn":
                    assert [a.name for a in node.names] == ["kernels"], f"{f.name}: from gatedrnn import ..."
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                continue
            for m in mods:
                assert not m.startswith("gatedrnn.") or m.startswith("gatedrnn.kernels"), f"{f.name} imports {m}"
    code = ("import sys, types\n"
            f"p = types.ModuleType('gatedrnn'); p.__path__ = [{str(pkg)!r}]; sys.modules['gatedrnn'] = p\n"
            "import gatedrnn.kernels, gatedrnn.kernels.autograd, gatedrnn.kernels.loader, gatedrnn.kernels.readout\n"
            "print(sorted(m for m in sys.modules if m.startswith('gatedrnn.') and not m.startswith('gatedrnn.kernels')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
@pytest.mark.parametrize("fused", [None, False], ids=["fused", "reference"])
def test_one_loop_a_stack_of_one_is_the_unit(variant, fused):
    """The single unit IS the K = 1 case of the stacked loop: bit-for-bit the same outputs, state and
    gradients (fused and reference), and the stacked reference path is the unit's own `reference`."""
    name, kw = variant
    u = make(name, kw, 5, 6, fused=fused)
    s = StackedUnit.from_units([u], fused=fused)
    x = torch.randn(4, 7, 5)
    lengths = torch.tensor([7, 3, 0, 5])
    a, sa = u(x, lengths=lengths)
    b, sb = s(x[None], lengths=lengths)
    assert torch.equal(a, b[0])
    for p, q in zip(sa if isinstance(sa, tuple) else (sa,), sb if isinstance(sb, tuple) else (sb,)):
        assert torch.equal(p, q[0])
    a.square().sum().backward()
    b.square().sum().backward()
    for (n, p), q in zip(u.named_parameters(), s.parameters()):
        assert torch.equal(p.grad, q.grad[0]), n
    s3 = StackedUnit.from_units([u, u, u], fused=False)
    t, calls = s3.template, []
    t.reference = lambda *a: calls.append(tuple(a[0].shape)) or type(t).reference(t, *a)
    s3(x[None].expand(3, -1, -1, -1), lengths=lengths)
    del t.reference
    assert calls == [(3, 7, 4, 5)]          # (K, T, B, I): one call of the unit's loop for all K models


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_broadcast_and_strided_output_gradients(variant):
    """The output gradient reaches the kernel with any T, B strides: broadcast (out.sum(): stride 0
    everywhere; a per-feature weight: stride 0 in T and B; a per-step weight: stride 0 in H, which is
    materialised along H only) and transposed (batch-first) — the same gradients as the reference."""
    name, kw = variant
    u = make(name, kw, 4, 6, torch.float64)
    x = torch.randn(5, 7, 4, dtype=torch.float64)
    lengths = torch.tensor([7, 2, 5, 0, 6])
    w_h = torch.randn(6, dtype=torch.float64)
    w_bt = torch.randn(5, 7, dtype=torch.float64)
    for loss in (lambda o: o.sum(), lambda o: (o * w_h).sum(), lambda o: (o.mean(-1) * w_bt).sum()):
        grads = []
        for fused in (None, False):
            u.fused = fused
            u.zero_grad(set_to_none=True)
            out, _ = u(x, lengths=lengths)
            loss(out).backward()
            grads.append([p.grad.clone() for p in u.parameters()])
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_recycled_activation_buffers(monkeypatch):
    """The activations kept for backward live in recycled memory (autograd.BufferPool): reused once
    nothing refers to them, never while a retained graph may still run its backward."""
    from gatedrnn.kernels import autograd
    monkeypatch.setattr(autograd, "HUGE_BYTES", 0)          # pool every buffer, however small
    monkeypatch.setattr(autograd, "pool", autograd.BufferPool())
    u = make("lstm", {}, 4, 6, torch.float64)
    x = torch.randn(5, 7, 4, dtype=torch.float64)
    lengths = torch.tensor([7, 2, 5, 0, 6])
    out, _ = u(x, lengths=lengths)
    loss = out.square().sum()
    loss.backward(retain_graph=True)
    first = [p.grad.clone() for p in u.parameters()]
    n = len(autograd.pool._arrays)
    assert n == 5                                             # out, Hs, Cs, act, aux
    u(2 * x, lengths=lengths)[0].sum().backward()             # another pass meanwhile: fresh buffers
    assert len(autograd.pool._arrays) == 2 * n
    u.zero_grad()
    loss.backward()                                           # the retained graph: its own buffers, intact
    for a, b in zip(first, u.parameters()):
        assert torch.equal(a, b.grad)
    del out, loss
    u(x, lengths=lengths)[0].sum().backward()                 # everything free again: nothing new
    assert len(autograd.pool._arrays) == 2 * n


# every component ablation that declares a fused kernel (nn/*_variants.py), by name
FUSED_ABLATIONS = [(n, {}) for n in unit_names() if n not in ("tanh", "gru", "lstm")
                   and make_unit(n, 1, 1).kernel_spec() is not None]


def test_the_fused_ablations_are_found():
    """Control for the list above (an empty list would make the tests below pass vacuously)."""
    assert {"gru-nrg", "gru-nug", "mgu", "lstm-cifg"} <= {n for n, _ in FUSED_ABLATIONS}


@pytest.mark.parametrize("variant", VARIANTS + FUSED_ABLATIONS, ids=IDS + [n for n, _ in FUSED_ABLATIONS])
def test_no_unwritten_memory_reaches_a_result(variant, wgrad_mode, monkeypatch):
    """Every buffer the kernels should fill starts as NaN (autograd.POISON): a value they leave unwritten
    — e.g. the activations of a padded step that the deferred weight gradients multiply by a zero gate
    gradient (0·NaN = NaN) — shows up as a mismatch. Found as an intermittent NaN in dU (deferred GRU)."""
    from gatedrnn.kernels import autograd
    monkeypatch.setattr(autograd, "POISON", float("nan"))
    monkeypatch.setattr(autograd.pool, "_arrays", [])
    name, kw = variant
    B, T, I, H = 13, 8, 5, 7
    u = make(name, kw, I, H, torch.float64)
    x = torch.randn(B, T, I, dtype=torch.float64)
    lengths = torch.tensor([T, 3, 0, 8, 1, 5, 2, 8, 4, 6, 7, 1, 3])   # rows padded at every step but the first
    assert_same(run(u, x, lengths), run(u, x, lengths, fused=False), 1e-12)


def test_gate_recurrence_operands_are_checked():
    """The LSTM's gate_recurrence flag takes R (and optionally g0) by keyword; a missing or unexpected R,
    a wrong shape or a flag needing a removed gate is a programming error, never a silent wrong result."""
    K, T, B, I, H = 1, 3, 2, 4, 5
    z = lambda *s: torch.zeros(*s)
    args = (z(K, T, B, I), z(K, B, H), z(K, B, H), z(K, 4 * H, I), z(K, 4 * H, H), z(K, 4 * H), None, None)
    grec = {"gate_recurrence": True}
    with pytest.raises(ValueError, match="needs R"):
        kernels.recurrence("lstm", grec, *args)
    with pytest.raises(ValueError, match="needs R"):
        kernels.inference("lstm", grec, *args)
    with pytest.raises(ValueError, match="gate_recurrence flag only"):
        kernels.recurrence("lstm", {}, *args, R=z(K, 3 * H, 3 * H))
    with pytest.raises(ValueError, match="R must have shape"):
        kernels.recurrence("lstm", grec, *args, R=z(K, 3 * H, H))
    with pytest.raises(ValueError, match="g0 must have shape"):
        kernels.recurrence("lstm", grec, *args, R=z(K, 3 * H, 3 * H), g0=z(K, B, H))
    with pytest.raises(ValueError, match="cannot be combined"):
        kernels.recurrence("lstm", {**grec, "coupled_input_forget": True}, *args, R=z(K, 3 * H, 3 * H))
    with pytest.raises(ValueError, match="no flag"):
        kernels.recurrence("gru", grec, *args)
    out, hT, cT, gT = kernels.recurrence("lstm", grec, *args, R=z(K, 3 * H, 3 * H))   # zero weights:
    assert torch.equal(gT, torch.full((K, B, 3 * H), 0.5))                         # every gate σ(0)


# ------------------------------------------------------------------ GRU flag combinations the kernel refuses
# Each GRU ablation is its own step structure in gru.cpp, none of them in the Cho form: combined, the kernel
# ran one structure on another's layout (reset_after + no_reset_gate never wrote the W-side gradients;
# reset_after + no_update_gate / minimal read a third gate block that is not there).
GRU_ABLATIONS = ("no_reset_gate", "no_update_gate", "minimal")
REFUSED_GRU = [{"reset_after": True, a: True} for a in GRU_ABLATIONS] + [
    {a: True, b: True} for i, a in enumerate(GRU_ABLATIONS) for b in GRU_ABLATIONS[i + 1:]]


@pytest.mark.parametrize("flags", REFUSED_GRU, ids=lambda f: "+".join(f))
def test_gru_kernel_refuses_flag_combinations_it_does_not_compute(flags):
    K, T, B, I, H = 1, 3, 2, 4, 5
    z = lambda *s: torch.zeros(*s)
    args = (z(K, T, B, I), z(K, B, H), None, z(K, 2 * H, I), z(K, 2 * H, H), z(K, 2 * H), None, None)
    assert not kernels.supports("gru", flags)
    for fn in (kernels.recurrence, kernels.inference):
        with pytest.raises(ValueError, match="at most one of"):
            fn("gru", flags, *args)
    for a in GRU_ABLATIONS:             # control: each alone, in the paper's reset placement, is computed
        assert kernels.supports("gru", {"reset_after": False, a: True})
        assert kernels.recurrence("gru", {a: True}, *args) is not None


def _gru_ablation_with_reset_placement():
    """The three GRU ablations as units of one's own that also take the option reset_after (their cell()
    honours it where the unit has a reset role): with reset_after=True their declarations ask the GRU
    kernel for a refused combination."""
    from gatedrnn.nn.declaration import Declaration
    from gatedrnn.nn.gru_variants import MGU, GRUNoResetGate, GRUNoUpdateGate

    def candidate(self, Wx, s, h, p):   # s: the gate in the reset role
        return torch.tanh(Wx + (s * (h @ p["U"].mT) if self.reset_after else (s * h) @ p["U"].mT))

    class NRG(GRUNoResetGate):
        declares = Declaration(gates=("z", ""), options={"reset_after": False}, kernel="gru",
                               flags={"no_reset_gate": True})
        cell = GRUNoResetGate.cell     # no reset gate: the placement changes nothing

    class NUG(GRUNoUpdateGate):
        declares = Declaration(gates=("r", ""), options={"reset_after": False}, kernel="gru",
                               flags={"no_update_gate": True})

        def cell(self, wx_t, h, p):
            Wx_r, Wx = self.blocks(wx_t)
            return candidate(self, Wx, torch.sigmoid(Wx_r + h @ p["U_r"].mT), h, p)

    class MinimalUnit(MGU):
        declares = Declaration(gates=("f", ""), options={"reset_after": False}, kernel="gru",
                               flags={"minimal": True})

        def cell(self, wx_t, h, p):
            Wx_f, Wx = self.blocks(wx_t)
            f = torch.sigmoid(Wx_f + h @ p["U_f"].mT)
            return (1 - f) * h + f * candidate(self, Wx, f, h, p)

    return [NRG, NUG, MinimalUnit]


@pytest.mark.parametrize("idx", range(3), ids=["nrg", "nug", "mgu"])
@pytest.mark.parametrize("reset_after", [False, True])
def test_a_unit_asking_for_a_refused_combination_runs_its_reference(idx, reset_after, kernel_calls, wgrad_mode):
    """float64: with reset_after=False the kernel runs and equals cell()'s loop (so the test unit is right);
    with True the unit declares no kernel it can have, runs its reference loop and computes what its cell()
    computes (before the refusal, nrg's W-side gradients came out unwritten)."""
    cls = _gru_ablation_with_reset_placement()[idx]
    B, T, I, H = 5, 6, 3, 4
    u = make(cls, {"reset_after": reset_after}, I, H, torch.float64)
    assert (u.kernel_spec() is None) == reset_after
    assert u.path() == ("reference" if reset_after else "fused")
    x = torch.randn(B, T, I, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 5, 1, 6])
    assert_same(run(u, x, lengths), run(u, x, lengths, fused=False), 1e-12)
    assert kernel_calls == ([] if reset_after else [True])


def test_no_registered_unit_asks_for_a_refused_combination():
    """Every registered unit with a kernel declared gets it, in each of its option forms."""
    for name in unit_names():
        cls = make_unit(name, 1, 1).__class__
        forms = [{}] + [{k: not v} for k, v in cls.declares.options.items() if isinstance(v, bool)]
        for kw in forms:
            try:
                u = make_unit(name, 2, 3, **kw)
            except ValueError:          # a form the unit refuses (gru-ra with reset_after=False)
                continue
            assert (u.kernel_spec() is None) == (cls.declares.kernel is None), (name, kw)


# ------------------------------------------------------------------ the one decision: fused_path
def test_fused_path_is_the_one_decision():
    """kernels.fused_path decides for every caller: the caller's switch and declared kernel, CPU, one
    float dtype (uint8 inputs only without a gradient), nothing empty, the library built."""
    from gatedrnn.kernels import fused_path
    W = torch.randn(6, 3, requires_grad=True)
    x, x8, m = torch.randn(1, 4, 2, 3), torch.zeros(1, 4, 2, 3, dtype=torch.uint8), torch.ones(1, 4, 2, dtype=torch.bool)
    assert fused_path("gru", x, W, mask=m) and fused_path("bernoulli", x, W)
    assert not fused_path("gru", x, W, fused=False) and not fused_path(None, x, W)
    assert not fused_path("gru", x.double(), W)                             # mixed dtypes
    assert not fused_path("gru", x.half(), W.half())                        # not float32/float64
    assert not fused_path("gru", x[:, :0], W)                               # nothing to run
    assert not fused_path("gru", x8, W)                                     # bytes where a gradient is wanted
    with torch.no_grad():
        assert fused_path("gru", x8, W)                                     # compact evaluation batches
    with pytest.raises(ValueError, match="unknown kernel"):
        fused_path("lstm2", x, W)
    u = make("gru", {}, 3, 4)
    assert u.path() == "fused"
    u.fused = False
    assert u.path() == "reference"
