"""minGRU and minLSTM (Feng et al. 2024, the vanilla forms) against independent float64 re-derivations of
their equations (numpy, written from the paper, sharing no code with gatedrnn.nn); the parallel scan
(nn/scan.py) against the step loop (values and gradients, padded and not, every chunking regime); gradcheck;
padding; parameter counts by hand; weight noise; K stacked models; the model's evaluation path; no fused
recurrence kernel ever runs for them. Their scan runs three ways — the gated C++ kernel (gates and scan in
one pass), coefficients() + the generic C++ scan, coefficients() + the chunked torch scan — and each is
held to the step loop (SCAN_PATHS)."""
import numpy as np
import pytest
import torch

import gatedrnn
from gatedrnn import kernels
from gatedrnn.kernels import autograd as kautograd
from gatedrnn.nn import MIN_UNITS, UNITS, Declaration, StackedUnit, make_unit, unit_family
from gatedrnn.nn.counting import count_parameters, match_hidden_size
from gatedrnn.nn.scan import SEQUENTIAL_BELOW, chunk_size, linear_scan, sequential_scan


def sig(a):
    return 1.0 / (1.0 + np.exp(-a))


SCAN_PATHS = ["gated kernel", "scan kernel", "torch"]


@pytest.fixture
def scan_path(request, monkeypatch):
    """Force one of the SCAN_PATHS (the kernels say no to the others) and check that it ran."""
    path = request.param
    real, seen = kernels.fused_path, []

    def decide(kernel, *ts, **kw):
        if kernel in kernels.GATED and path != "gated kernel" or kernel == "linear_scan" and path == "torch":
            return False
        ok = real(kernel, *ts, **kw)
        if ok and kernel in kernels.SCANS:
            seen.append(kernel)
        return ok
    monkeypatch.setattr(kernels, "fused_path", decide)
    yield path
    want = {"gated kernel": set(kernels.GATED), "scan kernel": {"linear_scan"}, "torch": set()}[path]
    assert set(seen) <= want and (bool(seen) == bool(want)), (path, seen)


def ref_numpy(unit, P, X, h0=None, lengths=None):
    """The paper's equations step by step in float64 numpy. X (B, T, I). A padded step (t >= lengths[b])
    keeps the state and outputs 0. Returns (H (B, T, n), final h)."""
    B, T, _ = X.shape
    n = P["b_h"].shape[0]
    h = np.zeros((B, n)) if h0 is None else h0.copy()
    out = np.zeros((B, T, n))
    for t in range(T):
        x = X[:, t]
        if unit == "mingru":
            z = sig(x @ P["W_z"].T + P["b_z"])                  # z_t = σ(W_z x_t + b_z)
            ht = x @ P["W_h"].T + P["b_h"]                      # h̃_t = W_h x_t + b_h
            new = (1 - z) * h + z * ht                          # h_t = (1 − z_t) h_{t−1} + z_t h̃_t
        else:
            f = sig(x @ P["W_f"].T + P["b_f"])
            i = sig(x @ P["W_i"].T + P["b_i"])
            ht = x @ P["W_h"].T + P["b_h"]
            new = f / (f + i) * h + i / (f + i) * ht            # f'_t h_{t−1} + i'_t h̃_t
        valid = np.ones(B, bool) if lengths is None else t < np.asarray(lengths)
        h = np.where(valid[:, None], new, h)
        out[:, t] = np.where(valid[:, None], h, 0.0)
    return out, h


def make(unit, I=5, H=7, seed=0, scale=0.7, **kw):
    torch.manual_seed(seed)
    m = make_unit(unit, I, H, **kw).double()
    rng = np.random.default_rng(seed)
    P = {}
    for name, view in m.paper_weights().items():
        val = rng.normal(0, scale, size=tuple(view.shape))
        view.copy_(torch.from_numpy(val))
        P[name] = val
    return m, P


# ------------------------------------------------------------------ the equations
@pytest.mark.parametrize("unit", MIN_UNITS)
@pytest.mark.parametrize("fused", [None, False])                 # the scan, and cell() step by step
@pytest.mark.parametrize("T", [6, 75])                           # the scan's plain loop, and its chunks
def test_unit_matches_float64_rederivation(unit, fused, T):
    m, P = make(unit, fused=fused)
    assert m.path() == ("scan" if fused is None else "reference")
    rng = np.random.default_rng(1)
    X, h0 = rng.normal(size=(3, T, 5)), rng.normal(size=(3, 7))
    out, h = m(torch.from_numpy(X), torch.from_numpy(h0))
    ref, href = ref_numpy(unit, P, X, h0)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h.detach().numpy(), href, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("unit", MIN_UNITS)
@pytest.mark.parametrize("fused", [None, False])
def test_padding_carries_the_state_and_outputs_zero(unit, fused):
    """A padded batch: each sequence's outputs equal it run alone, 0 after its end, and the final state is
    its state after its last valid step; time-major input and a PackedSequence give the same."""
    m, P = make(unit, fused=fused)
    T, lengths = 70, [70, 41, 1, 0]
    X = np.random.default_rng(2).normal(size=(4, T, 5))
    out, h = m(torch.from_numpy(X), lengths=torch.tensor(lengths))
    ref, href = ref_numpy(unit, P, X, lengths=lengths)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h.detach().numpy(), href, rtol=1e-10, atol=1e-12)
    for b, L in enumerate(lengths):
        if L:
            alone, h1 = m(torch.from_numpy(X[b:b + 1, :L]))
            torch.testing.assert_close(out[b, :L], alone[0], rtol=1e-12, atol=1e-13)
            torch.testing.assert_close(h[b], h1[0], rtol=1e-12, atol=1e-13)
        assert torch.all(out[b, L:] == 0)
    tm = make_unit(unit, 5, 7, batch_first=False, fused=fused).double()
    tm.load_state_dict(m.state_dict())
    o2, h2 = tm(torch.from_numpy(X).transpose(0, 1), lengths=torch.tensor(lengths))
    torch.testing.assert_close(o2.transpose(0, 1), out)
    torch.testing.assert_close(h2, h)


@pytest.mark.parametrize("unit", MIN_UNITS)
@pytest.mark.parametrize("scan_path", SCAN_PATHS, indirect=True)
def test_scan_equals_the_step_loop_values_and_gradients(unit, scan_path):
    """The fast path (one matrix product + each of the scan paths) against cell() step by step, float64, on
    a padded batch whose T runs the chunked form with a tail: outputs, final state and every gradient."""
    T = 3 * chunk_size(203) * 4 + 5
    assert T >= SEQUENTIAL_BELOW and T % chunk_size(T)
    x = torch.randn(3, T, 5, dtype=torch.float64)
    h0 = torch.randn(3, 7, dtype=torch.float64)
    lengths = torch.tensor([T, T - 40, 9])
    res = []
    for fused in (None, False):
        m, _ = make(unit, fused=fused)
        xs, hs = x.clone().requires_grad_(), h0.clone().requires_grad_()
        out, h = m(xs, hs, lengths=lengths)
        (out.sin().sum() + (h * h).sum()).backward()
        res.append([out, h, xs.grad, hs.grad, *(p.grad for p in m.parameters())])
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("unit", MIN_UNITS)
def test_gradcheck_float64(unit):
    m, _ = make(unit, I=3, H=4, scale=0.5)
    x = torch.randn(2, 40, 3, dtype=torch.float64, requires_grad=True)         # the chunked scan
    h0 = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([40, 23])

    def f(x, h0, W, b):
        out, h = torch.func.functional_call(m, {"weight_ih": W, "bias": b}, (x, h0), {"lengths": lengths})
        return out, h
    W = m.weight_ih.detach().clone().requires_grad_()
    b = m.bias.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (x, h0, W, b))


@pytest.mark.parametrize("T", [1, 2, SEQUENTIAL_BELOW - 1, SEQUENTIAL_BELOW, 50, 97, 401])
@pytest.mark.parametrize("scan_path", ["scan kernel", "torch"], indirect=True)
def test_linear_scan_equals_sequential(T, scan_path):
    """nn/scan.py alone, the C++ scan and the torch form (every chunking regime: plain loop; chunks with and
    without a tail), masked or not, values and gradients against the step-by-step recurrence in plain
    autograd ops."""
    g = torch.Generator().manual_seed(T)
    a = torch.rand(3, T, 4, dtype=torch.float64, generator=g)
    b = torch.randn(3, T, 4, dtype=torch.float64, generator=g)
    h0 = torch.randn(3, 4, dtype=torch.float64, generator=g)
    mask = torch.arange(T)[None] < torch.tensor([T, T // 2, 0])[:, None]
    for m in (None, mask):
        grads = []
        for fn in (linear_scan, sequential_scan):
            ins = [t.clone().requires_grad_() for t in (a, b, h0)]
            out, hT = fn(*ins, m)
            (out.cos().sum() + (hT ** 3).sum()).backward()
            grads.append([out, hT, *(t.grad for t in ins)])
        for u, v in zip(*grads):
            torch.testing.assert_close(u, v, rtol=1e-11, atol=1e-12)
    if T <= 97:
        for m in (None, mask):
            ins = [t.clone().requires_grad_() for t in (a, b, h0)]
            assert torch.autograd.gradcheck(lambda a, b, h: linear_scan(a, b, h, m), ins)


def test_linear_scan_is_stable_where_a_log_space_form_is_not():
    """Gates at 0 and 1 and negative b: no division or logarithm, so h stays the sequential value."""
    T = 300
    a = torch.zeros(1, T, 3, dtype=torch.float64)
    a[..., 1] = 1.0
    a[..., 2] = 1e-300
    b = -torch.ones(1, T, 3, dtype=torch.float64)
    out, hT = linear_scan(a, b, torch.ones(1, 3, dtype=torch.float64))
    ref, _ = sequential_scan(a, b, torch.ones(1, 3, dtype=torch.float64))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref)
    assert hT[0, 1] == 1 - T


# ------------------------------------------------------------------ parameters
def test_paper_weights_and_parameters():
    g, l = make_unit("mingru", 5, 7), make_unit("minlstm", 5, 7)
    assert list(g.paper_weights()) == ["W_z", "b_z", "W_h", "b_h"]
    assert list(l.paper_weights()) == ["W_f", "b_f", "W_i", "b_i", "W_h", "b_h"]
    for u in (g, l):
        assert u.weight_hh is None and set(u.state_dict()) == {"weight_ih", "bias"}
        assert u.paper_weights()["W_h"].shape == (7, 5) and u.paper_weights()["b_h"].shape == (7,)
        u.paper_weights()["W_h"].fill_(0.5)                          # a view of the module's storage
        assert torch.all(u.weight_ih[-7:] == 0.5)
        assert u.weight_ih.abs()[:-7].max() <= 0.1 and torch.all(u.bias == 0)   # init: U(-0.1, 0.1), b = 0
        assert u.kernel_spec() is None and u.path() == "scan"


def test_parameter_counts_by_hand():
    """Table 1's convention: recurrent layer only, one bias per gate/candidate, no U: G·I·n + G·n."""
    for I, n in ((5, 7), (100, 46), (20, 300)):
        assert count_parameters("mingru", I, n) == 2 * I * n + 2 * n
        assert count_parameters("minlstm", I, n) == 3 * I * n + 3 * n
        for unit in MIN_UNITS:
            assert count_parameters(unit, I, n) == sum(p.numel() for p in make_unit(unit, I, n).parameters())
    # matched to the paper's budgets: music 20,100 at the nominal input 100, speech 168,400 at input 20
    assert match_hidden_size("mingru", 100, 20_100) == 100          # 202·100 = 20,200 (202·99 = 19,998)
    assert match_hidden_size("minlstm", 100, 20_100) == 66          # 303·66 = 19,998 (303·67 = 20,301)
    assert match_hidden_size("mingru", 20, 168_400) == 4010         # 42·4010 = 168,420
    assert match_hidden_size("minlstm", 20, 168_400) == 2673        # 63·2673 = 168,399


def test_weight_noise_on_W_only():
    torch.manual_seed(0)
    m = make_unit("mingru", 5, 7, weight_noise=0.075)
    x = torch.randn(2, 40, 5)
    m.eval()
    torch.testing.assert_close(m(x)[0], m(x)[0])
    m.train()
    assert not torch.allclose(m(x)[0], m(x)[0])                       # a fresh draw each pass
    W, U = m.noisy_weights()
    assert U is None and abs((W - m.weight_ih).detach().std().item() - 0.075) < 0.015
    m(x)[0].sum().backward()
    assert m.weight_ih.grad is not None and m.bias.grad is not None


# ------------------------------------------------------------------ registry, declaration
def test_registry_and_declaration():
    assert MIN_UNITS == ("mingru", "minlstm") and all(u in UNITS for u in MIN_UNITS)
    assert gatedrnn.nn.unit_names()[-2:] == list(MIN_UNITS)
    for u in MIN_UNITS:
        assert unit_family(u) == u                                    # not an ablation of a paper unit
        assert type(make_unit(u.upper(), 2, 3)).name == u
        with pytest.raises(TypeError, match="takes no option"):
            make_unit(u, 2, 3, forget_bias=1.0)
    from gatedrnn.study.grid import ABLATIONS
    assert not any(u in v for v in ABLATIONS.values() for u in MIN_UNITS)
    for bad in (dict(gates=("z",), recurrent=False, kernel="gru"), dict(gates=("z",), scan=True),
                dict(gates=("f", "c"), peepholes=("f",), recurrent=False)):
        with pytest.raises(TypeError):
            Declaration(**bad)
    assert Declaration(gates=("z", "h"), recurrent=False).count(10, 4) == 2 * 10 * 4 + 2 * 4


def test_a_subclass_that_changes_cell_runs_its_own_loop():
    """As for kernels: the scan is the declaring class's; a subclass overriding cell() (or coefficients())
    computes something else and runs the reference loop."""
    from gatedrnn.nn import MinGRU
    sub = type("Sub", (MinGRU,), {"cell": lambda self, wx, h, p: MinGRU.cell(self, wx, h, p) * 0.5})
    u = sub(3, 4)
    assert u.path() == "reference"
    base = MinGRU(3, 4)
    base.load_state_dict(u.state_dict())
    x = torch.randn(2, 6, 3)
    assert not torch.allclose(u(x)[0], base(x)[0])


def test_tracing_records_the_gates():
    u = make_unit("minlstm", 3, 4)
    with u.trace() as steps:
        u(torch.randn(2, 5, 3))
    assert len(steps) == 5 and set(steps[0]) == {"f", "i"} and steps[0]["f"].shape == (1, 2, 4)
    assert u.path() == "scan"                                         # the switch is restored


# ------------------------------------------------------------------ stacked, model, no kernels
@pytest.mark.parametrize("unit", MIN_UNITS)
def test_stacked_models_equal_single_units(unit):
    torch.manual_seed(0)
    units = [make_unit(unit, 5, 6).double() for _ in range(3)]
    s = StackedUnit.from_units(units)
    assert s.weight_hh is None and s.weight_ih.shape == (3, len(units[0].gates) * 6, 5)
    x = torch.randn(3, 4, 50, 5, dtype=torch.float64)
    lengths = torch.tensor([[50, 7, 33, 1], [50, 50, 2, 20], [3, 50, 40, 50]])
    out, h = s(x, lengths=lengths)
    out.sum().backward()
    for k, u in enumerate(units):
        o, hk = u(x[k], lengths=lengths[k])
        o.sum().backward()
        torch.testing.assert_close(out[k], o)
        torch.testing.assert_close(h[k], hk)
        torch.testing.assert_close(s.weight_ih.grad[k], u.weight_ih.grad)
    back = s.to_units()
    torch.testing.assert_close(back[1].weight_ih, units[1].weight_ih)


@pytest.fixture
def no_fused(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a fused recurrence kernel ran")
    monkeypatch.setattr(kernels, "recurrence", boom)
    monkeypatch.setattr(kernels, "inference", boom)
    monkeypatch.setattr(kautograd.FusedRecurrence, "apply", boom)


@pytest.mark.parametrize("unit", MIN_UNITS)
@pytest.mark.parametrize("head", ["bernoulli", "mdn"])
def test_model_evaluation_path_and_no_kernel(unit, head, no_fused):
    """step_nll (evaluation: no gradient, compact inputs) works for a unit that declares no kernel — it takes
    the unit's own scan, never a fused recurrence — and equals nll(); training steps likewise."""
    from gatedrnn.model import SequenceModel
    torch.manual_seed(0)
    O = 6 if head == "bernoulli" else 2
    m = SequenceModel(unit, 6, 5, O, head=head, **({"head_kwargs": {"n_components": 2}} if head == "mdn" else {}))
    x = (torch.rand(3, 45, 6) < 0.3).float() if head == "bernoulli" else torch.randn(3, 45, 6)
    y = (torch.rand(3, 45, O) < 0.3).float() if head == "bernoulli" else torch.randn(3, 45, O)
    lengths = torch.tensor([45, 30, 2])
    mask = torch.arange(45)[None] < lengths[:, None]
    ev = m.eval().step_nll(x, y, mask, lengths)
    ref = m.nll(x, y, mask, lengths).detach().double()
    torch.testing.assert_close(ev, ref, rtol=1e-5, atol=1e-5)
    assert torch.all(ev[~mask] == 0)
    m.train()
    m.nll(x, y, mask, lengths).sum().backward()
    assert m.rnn.weight_ih.grad is not None


@pytest.mark.parametrize("unit", MIN_UNITS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_gated_kernel_is_the_training_path_and_matches_float32(unit, dtype):
    """By default a minimal unit's forward runs the gated kernel (one pass: gates and scan), in float32 as in
    float64, and equals the numpy re-derivation; its gradients equal the step loop's."""
    calls = []
    real = kernels.gated_scan
    try:
        kernels.gated_scan = lambda *a, **k: calls.append(a[0]) or real(*a, **k)
        m, P = make(unit)
        m = m.to(dtype)
        x = torch.randn(4, 60, 5, dtype=dtype, requires_grad=True)
        lengths = torch.tensor([60, 31, 1, 59])
        out, h = m(x, lengths=lengths)
    finally:
        kernels.gated_scan = real
    assert calls == [unit]
    ref, href = ref_numpy(unit, P, x.detach().double().numpy(), lengths=lengths.numpy())
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(out.detach().double().numpy(), ref, **tol)
    np.testing.assert_allclose(h.detach().double().numpy(), href, **tol)
    (out.sum() + h.sum()).backward()
    g = x.grad.clone()
    m.fused = False
    x.grad = None
    out2, h2 = m(x, lengths=lengths)
    (out2.sum() + h2.sum()).backward()
    torch.testing.assert_close(g, x.grad, **tol)
