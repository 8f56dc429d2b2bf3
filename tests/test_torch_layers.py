"""The torch.nn contract (issue 21.1): gatedrnn.LSTM / GRU / TanhRNN / RNN take torch.nn's arguments in its
order with its defaults, take and give its shapes (layers, directions, batch_first, PackedSequence,
unbatched), and `from_torch` builds ours from a torch.nn module so that outputs and states equal torch.nn's.
Also: the GEMM path (nn/gemm.py) equals the reference loop, the dispatch (nn/dispatch.py) applies its rule,
torch.jit.trace works."""
import inspect
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import gatedrnn
from gatedrnn.nn import dispatch, gemm, make_unit

TORCH = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "tanh": torch.nn.RNN}


def _close(a, b, dt):
    tol = dict(rtol=1e-5, atol=2e-6) if dt == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a, b, **tol)


def _states(s):
    return s if isinstance(s, tuple) else (s,)


# --------------------------------------------------------------------------------------------- signature
def test_signatures_follow_torch_nn():
    base = ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional"]
    defaults = {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0, "bidirectional": False}
    for cls, own in ((gatedrnn.LSTM, ["proj_size"]), (gatedrnn.GRU, []), (gatedrnn.TanhRNN, [])):
        ps = [p for p in inspect.signature(cls).parameters.values()]
        positional = [p.name for p in ps if p.kind == p.POSITIONAL_OR_KEYWORD]
        assert positional == base + own, cls
        assert all(p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) for p in ps)
        for p in ps:
            if p.name in defaults:
                assert p.default == defaults[p.name]
        assert {"weight_noise", "fused", "device", "dtype"} <= {p.name for p in ps if p.kind == p.KEYWORD_ONLY}
    # torch.nn.RNN has nonlinearity fourth: so has gatedrnn.RNN
    assert [p for p in inspect.signature(gatedrnn.RNN).parameters][:5] == \
        ["input_size", "hidden_size", "num_layers", "nonlinearity", "bias"]
    m = gatedrnn.RNN(3, 4, 2, "tanh", False, True, 0.0, True)
    assert (m.num_layers, m.bias, m.batch_first, m.bidirectional) == (2, False, True, True)
    assert "peepholes" in {p.name for p in inspect.signature(gatedrnn.LSTM).parameters.values()
                           if p.kind == p.KEYWORD_ONLY}


def test_the_issue_line_means_two_layers():
    lstm = gatedrnn.LSTM(88, 36, 2)         # was batch_first=2
    assert lstm.num_layers == 2 and lstm.batch_first is False
    out, (h, c) = lstm(torch.randn(7, 3, 88))
    assert out.shape == (7, 3, 36) and h.shape == (2, 3, 36) and c.shape == (2, 3, 36)
    torch.testing.assert_close(h[-1], out[-1])          # ported code's h[-1]: the last layer, every sequence


def test_refusals_are_clear():
    with pytest.raises(ValueError, match="relu"):
        gatedrnn.RNN(3, 4, 1, "relu")
    with pytest.raises(ValueError, match="relu"):
        gatedrnn.from_torch(torch.nn.RNN(3, 4, nonlinearity="relu"))
    with pytest.raises(ValueError, match="proj_size"):
        gatedrnn.from_torch(torch.nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(ValueError, match="proj_size"):
        gatedrnn.LSTM(3, 4, 1, True, False, 0.0, False, 2)
    with pytest.raises(TypeError, match="torch.nn.LSTM, GRU or RNN"):
        gatedrnn.from_torch(torch.nn.Linear(3, 4))
    with pytest.raises(TypeError, match="batch_first must be a bool"):
        gatedrnn.GRU(3, 4, 1, True, 2)
    with pytest.raises(ValueError, match="input_size=3"):
        gatedrnn.GRU(3, 4)(torch.randn(5, 2, 4))
    with pytest.raises(ValueError, match=r"expected hidden state of shape \(2, 2, 4\)"):
        gatedrnn.GRU(3, 4, 2)(torch.randn(5, 2, 3), torch.zeros(1, 2, 4))


def test_float64_module_float32_input_is_one_clear_line():
    m = gatedrnn.LSTM(3, 4).double()
    with pytest.raises(TypeError) as e:
        m(torch.randn(5, 2, 3))
    msg = str(e.value)
    assert "\n" not in msg and "torch.float32" in msg and "torch.float64" in msg


# ----------------------------------------------------------------------------------------- from_torch
@pytest.mark.parametrize("kind,layers,bidir,batch_first,dtype", list(itertools.product(
    ("lstm", "gru", "tanh"), (1, 2, 3), (False, True), (False, True), (torch.float32, torch.float64))))
def test_from_torch_equals_torch_nn(kind, layers, bidir, batch_first, dtype):
    torch.manual_seed(layers * 7 + bidir)
    tm = TORCH[kind](5, 6, layers, batch_first=batch_first, bidirectional=bidir).to(dtype)
    with torch.no_grad():       # torch.nn.GRU's second bias matters: make every bias nonzero
        for n, p in tm.named_parameters():
            if "bias" in n:
                p.normal_(0, 0.5)
    ours = gatedrnn.from_torch(tm)
    B, T, D = 4, 7, 2 if bidir else 1
    x = torch.randn(B, T, 5, dtype=dtype) if batch_first else torch.randn(T, B, 5, dtype=dtype)
    h0 = torch.randn(layers * D, B, 6, dtype=dtype)
    hx = (h0, torch.randn_like(h0)) if kind == "lstm" else h0
    # padded input, with and without an initial state
    for state in (None, hx):
        a, sa = tm(x, state)
        b, sb = ours(x, state)
        _close(b, a, dtype)
        for p, q in zip(_states(sb), _states(sa)):
            _close(p, q, dtype)
    # packed input, unsorted lengths
    lengths = torch.tensor([7, 2, 5, 1])
    xp = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    a, sa = tm(xp, hx)
    b, sb = ours(xp, hx)
    assert torch.equal(b.batch_sizes, a.batch_sizes) and torch.equal(b.sorted_indices, a.sorted_indices)
    _close(b.data, a.data, dtype)
    for p, q in zip(_states(sb), _states(sa)):
        _close(p, q, dtype)
    # the same padded batch with lengths= (ours): the packed result, padded
    b2, sb2 = ours(x, hx, lengths=lengths)
    pa, _ = pad_packed_sequence(a, batch_first=batch_first, total_length=T)
    _close(b2, pa, dtype)
    for p, q in zip(_states(sb2), _states(sa)):
        _close(p, q, dtype)


@pytest.mark.parametrize("kind", ["lstm", "gru", "tanh"])
def test_from_torch_gradients_equal(kind):
    torch.manual_seed(1)
    tm = TORCH[kind](3, 5, 2, bidirectional=True).double()
    ours = gatedrnn.from_torch(tm)
    x1 = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    w = torch.randn(6, 2, 10, dtype=torch.float64)
    (tm(x1)[0] * w).sum().backward()
    (ours(x2)[0] * w).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad)
    # bias=False modules: no bias parameters on our side either
    tb = TORCH[kind](3, 5, bias=False).double()
    ob = gatedrnn.from_torch(tb)
    assert not any("bias" in n for n, _ in ob.named_parameters())
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(ob(x)[0], tb(x)[0])


def test_from_torch_keeps_mode_and_dropout():
    tm = torch.nn.GRU(3, 4, 2, dropout=0.25).eval()
    ours = gatedrnn.from_torch(tm)
    assert not ours.training and ours.dropout == 0.25 and ours.inner_bias
    assert ours.layer(0).bias_hn.shape == (4,)


# ----------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("cls", [gatedrnn.LSTM, gatedrnn.GRU, gatedrnn.TanhRNN])
def test_unbatched_input(cls):
    torch.manual_seed(0)
    m = cls(3, 4, 2, bidirectional=True).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    out, s = m(x)
    assert out.shape == (5, 8)
    ob, sb = m(x.unsqueeze(1))
    torch.testing.assert_close(out, ob[:, 0])
    for p, q in zip(_states(s), _states(sb)):
        assert p.shape == (4, 4)
        torch.testing.assert_close(p, q[:, 0])
    h0 = torch.randn(4, 4, dtype=torch.float64)
    out2, _ = m(x, (h0, h0) if cls is gatedrnn.LSTM else h0)
    assert out2.shape == (5, 8)


def test_dropout_between_layers_in_training_only():
    torch.manual_seed(0)
    m = gatedrnn.GRU(3, 4, 3, dropout=0.5)
    x = torch.randn(6, 2, 3)
    m.eval()
    a, b = m(x)[0], m(x)[0]
    assert torch.equal(a, b)
    ref = gatedrnn.GRU(3, 4, 3, dropout=0.0)
    ref.load_state_dict(m.state_dict())
    ref.train()
    torch.testing.assert_close(ref(x)[0], a)        # dropout off: training and evaluation agree
    m.train()
    torch.manual_seed(1)
    c = m(x)[0]
    torch.manual_seed(2)
    d = m(x)[0]
    assert not torch.allclose(c, a) and not torch.allclose(c, d)
    with pytest.warns(UserWarning, match="num_layers=1"):
        gatedrnn.LSTM(3, 4, dropout=0.3)


def test_paper_forms_by_default_and_options():
    m = gatedrnn.LSTM(3, 4)
    assert m.layer(0).peephole is not None                      # the paper's peephole LSTM
    assert gatedrnn.LSTM(3, 4, peepholes=False).layer(0).peephole is None
    assert not gatedrnn.GRU(3, 4).layer(0).reset_after           # the paper's GRU
    assert torch.all(gatedrnn.LSTM(3, 4, 2, forget_bias=1.0).layer(1).paper_weights()["b_f"] == 1.0)
    assert gatedrnn.LSTM(3, 4, 2, True, False, 0.0, True).layer(1, reverse=True).input_size == 8
    with pytest.raises(ValueError, match="reset_after=True"):
        gatedrnn.GRU(3, 4, inner_bias=True)
    g = gatedrnn.GRU(3, 4)
    g.paper_weights()["U_r"].fill_(0.5)                          # views, as the unit's
    assert torch.all(g.layer(0).weight_hh[4:8] == 0.5)
    with pytest.raises(ValueError, match="layer"):
        gatedrnn.GRU(3, 4, 2).paper_weights()


def test_weight_noise_in_training_only():
    m = gatedrnn.LSTM(3, 4, 2, weight_noise=0.5)
    x = torch.randn(5, 2, 3)
    m.eval()
    assert torch.equal(m(x)[0], m(x)[0])
    m.train()
    assert not torch.equal(m(x)[0], m(x)[0])


def test_internal_units_unchanged():
    """The project's own single-layer units keep their API (batch_first=True, state (B, H))."""
    u = make_unit("gru", 3, 4)
    assert u.batch_first and type(u) is gatedrnn.nn.GRU and gatedrnn.nn.GRU is not gatedrnn.GRU
    out, h = u(torch.randn(2, 5, 3))
    assert out.shape == (2, 5, 4) and h.shape == (2, 4)


# ----------------------------------------------------------------------------------------- jit
@pytest.mark.parametrize("cls", [gatedrnn.LSTM, gatedrnn.GRU, gatedrnn.TanhRNN])
def test_torch_jit_trace_works_and_saves(cls, tmp_path):
    torch.manual_seed(0)
    m = cls(3, 4, 2, bidirectional=True).eval()
    x = torch.randn(6, 2, 3)
    with pytest.warns(torch.jit.TracerWarning) if False else _nothing():
        traced = torch.jit.trace(m, x, check_trace=False)
    out, s = m(x)
    tout, ts = traced(x)
    torch.testing.assert_close(tout, out)
    y = torch.randn(6, 2, 3)                                     # another input of the traced shape
    torch.testing.assert_close(traced(y)[0], m(y)[0])
    torch.jit.save(traced, tmp_path / "m.pt")
    loaded = torch.jit.load(tmp_path / "m.pt")
    torch.testing.assert_close(loaded(y)[0], m(y)[0])


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_torch_jit_script_is_refused():
    """Documented (docs/UNITS.md): the modules dispatch in Python to the C++ kernels; use torch.jit.trace."""
    with pytest.raises(Exception):
        torch.jit.script(gatedrnn.GRU(3, 4))


# ----------------------------------------------------------------------------------------- GEMM path
CASES = [("tanh", {}), ("gru", {}), ("gru", {"reset_after": True}), ("lstm", {}), ("lstm", {"peepholes": False})]


@pytest.mark.parametrize("unit,kw", CASES)
@pytest.mark.parametrize("K,masked", [(1, False), (1, True), (2, True)])
def test_gemm_path_equals_reference_and_gradcheck(unit, kw, K, masked):
    torch.manual_seed(0)
    I, H, T, B = 3, 4, 5, 3
    u = make_unit(unit, I, H, fused=False, **kw).double()
    d = dict(dtype=torch.float64)
    x = torch.randn(K, T, B, I, **d, requires_grad=True)
    W = torch.randn(K, *u.weight_ih.shape, **d, requires_grad=True)
    U = torch.randn(K, *u.weight_hh.shape, **d, requires_grad=True)
    b = torch.randn(K, *u.bias.shape, **d, requires_grad=True)
    v = torch.randn(K, 3, H, **d, requires_grad=True) if u.peephole is not None else None
    h0 = torch.randn(K, B, H, **d, requires_grad=True)
    c0 = torch.randn(K, B, H, **d, requires_grad=True) if unit == "lstm" else None
    mask = None
    if masked:
        mask = torch.arange(T).view(1, T, 1) < torch.tensor([[5, 2, 0], [3, 5, 1]])[:K].unsqueeze(1)
    kind, flags = u.kernel_spec()
    ref, rs = u.reference(x, (h0, c0) if unit == "lstm" else h0, mask, W, U, b, v)
    out, hT, cT = gemm.recurrence(kind, flags, x, h0, c0, W, U, b, v, mask)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(hT, rs[0] if unit == "lstm" else rs)

    def f(x, h0, c0, W, U, b, v):
        o, h, c = gemm.recurrence(kind, flags, x, h0, c0, W, U, b, v, mask)
        w = torch.linspace(-1, 1, o.numel(), **d).view_as(o)
        return (o * w).sum() + 1.7 * h.sum() + (0.3 * c.sum() if c is not None else 0)
    assert torch.autograd.gradcheck(f, (x, h0, c0, W, U, b, v))


def test_torch_form_gru_inner_bias_on_gemm_path_gradcheck():
    torch.manual_seed(0)
    tm = torch.nn.GRU(3, 4).double()
    with torch.no_grad():
        tm.bias_hh_l0.normal_()
    ours = gatedrnn.from_torch(tm)
    u = ours.layer(0)
    assert dispatch.route(u, torch.zeros(1, 2, 2, 3, dtype=torch.float64), u.weight_ih[None], u.weight_hh[None],
                          u.bias[None], None, None, None) == "gemm"
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, bn: ours(x)[0].sum() + 0 * bn.sum(), (x, u.bias_hn))
    # the reference loop (fused=False) computes the same
    ref = gatedrnn.from_torch(tm)
    for c in ref.cells:
        c.fused = False
    torch.testing.assert_close(ref(x)[0], ours(x)[0])
    g1 = torch.autograd.grad(ours(x)[0].sum(), u.bias_hn)[0]
    g2 = torch.autograd.grad(ref(x)[0].sum(), ref.layer(0).bias_hn)[0]
    torch.testing.assert_close(g1, g2)


# ----------------------------------------------------------------------------------------- dispatch
def test_dispatch_applies_its_rule(monkeypatch):
    from gatedrnn import kernels
    if not kernels.available():
        pytest.skip("no kernel library")
    u = make_unit("lstm", 3, 4)
    args = lambda: (torch.zeros(1, 5, 2, 3), u.weight_ih[None], u.weight_hh[None], u.bias[None], u.peephole[None],
                    None)
    monkeypatch.setattr(dispatch, "gemm_wins", lambda *a, **k: True)
    assert dispatch.route(u, *args(), None) == "gemm"
    monkeypatch.setattr(dispatch, "gemm_wins", lambda *a, **k: False)
    assert dispatch.route(u, *args(), None) == "fused"
    assert dispatch.route(u, *args(), False) == "reference"
    # a variant with an ablation flag has no GEMM form: the rule is not asked
    monkeypatch.setattr(dispatch, "gemm_wins", lambda *a, **k: True)
    nig = make_unit("lstm-nig", 3, 4)
    assert dispatch.route(nig, torch.zeros(1, 5, 2, 3), nig.weight_ih[None], nig.weight_hh[None], nig.bias[None],
                          nig.peephole[None], None, None) == "fused"
    # and the path taken is the one routed: the unit's output equals the reference either way
    x = torch.randn(2, 5, 3)
    a = u(x)[0]
    monkeypatch.setattr(dispatch, "gemm_wins", lambda *a, **k: False)
    torch.testing.assert_close(u(x)[0], a, rtol=1e-5, atol=1e-6)
def test_dispatch_rule_is_the_measured_one():
    """The rule's cells (docs/KERNELS.md, "Two paths"): the fused kernel at the paper's sizes and, since the
    packed operands, wherever it measured faster; the GEMM path where it did."""
    for kind, flags, I, H in (("lstm", {"peepholes": True}, 88, 36), ("gru", {"reset_after": False}, 88, 46),
                              ("tanh", {}, 88, 100)):
        for B in (1, 16, 64):
            for th in (1, 2):
                assert not dispatch.gemm_wins(kind, flags, 1, B, I, H, th), (kind, B, th)
    # since the packed operands (results/torch-t1-packed-20261203.json): one thread, the fused kernel for the
    # peephole LSTM, the tanh unit and the GRU at every size (the GRU at batch 64: H = 512 since its U_c
    # product is packed too, results/torch-gru-uc-t1-20261203.json; H = 1024 results/torch-gru1024-t1-20261203b.json)
    peep = {"peepholes": True}
    for H in (128, 256, 512, 1024):
        for B in (1, 4, 16, 64):
            assert not dispatch.gemm_wins("lstm", peep, 1, B, H, H, 1), (H, B)
            assert not dispatch.gemm_wins("tanh", {}, 1, B, H, H, 1), (H, B)
            assert not dispatch.gemm_wins("gru", {}, 1, B, H, H, 1), (H, B)
    # two threads (results/torch-lstm-t2-packed-20261203.json, H <= 512; results/torch-t2-packed-20261203.json:
    # GRU and tanh H 32-1024, the LSTM at 1024): the fused kernel for the peephole LSTM and the GRU at every
    # size, for the tanh unit but at batch 1 and H = 1024 (the GEMM path there: 0.23x torch.nn against 0.52x)
    for H in (32, 128, 256, 512, 1024):
        for B in (1, 16, 64):
            assert not dispatch.gemm_wins("lstm", peep, 1, B, H, H, 2), (H, B)
            assert not dispatch.gemm_wins("gru", {}, 1, B, H, H, 2), (H, B)
            assert dispatch.gemm_wins("tanh", {}, 1, B, H, H, 2) == (B == 1 and H == 1024), (H, B)
    # torch.nn.LSTM's form at one thread: the fused kernel at batch 1 (results/torch-np-b1-t1-20261203b.json:
    # it beat torch's own LSTM primitive there), else the earlier rule (GEMM from 2^19 values)
    nopeep = {"peepholes": False}
    for H in (32, 36, 64, 128, 256, 512):
        assert not dispatch.gemm_wins("lstm", nopeep, 1, 1, 88 if H == 36 else H, H, 1), H
    assert not dispatch.gemm_wins("lstm", nopeep, 1, 1, 512, 512, 1, masked=True)
    assert not dispatch.gemm_wins("lstm", nopeep, 1, 4, 128, 128, 1)
    assert dispatch.gemm_wins("lstm", nopeep, 1, 4, 512, 512, 1)
    assert dispatch.gemm_wins("lstm", nopeep, 1, 16, 256, 256, 1)
    # ... and at two threads the fused kernel everywhere, batch 1 too (results/torch-np-ra-t2-20261203b.json)
    for H in (32, 128, 256, 512, 1024):
        for B in (1, 16, 64):
            assert not dispatch.gemm_wins("lstm", nopeep, 1, B, H, H, 2), (H, B)
