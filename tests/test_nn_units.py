"""The three units against independent float64 re-derivations of the paper's equations (numpy,
written from PAPER.md, sharing no code with gatedrnn.nn), against torch.nn where the forms coincide,
gradcheck, padding invariance, paper_weights() views, initialisation and weight noise."""
import math

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import gatedrnn
from gatedrnn.nn import GRU, LSTM, TanhRNN   # the single-layer units (gatedrnn.GRU etc. are the torch.nn-shaped layers)

VARIANTS = [
    ("tanh", {}),
    ("gru", {}),
    ("gru", {"reset_after": True}),
    ("lstm", {}),
    ("lstm", {"peepholes": False}),
]


def sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def ref_numpy(unit, kw, P, X, h0=None, c0=None):
    """The paper's equations, step by step, in float64 numpy. X: (B, T, I). Returns (H (B,T,n), state)."""
    B, T, _ = X.shape
    n = next(iter(P.values())).shape[0]
    h = np.zeros((B, n)) if h0 is None else h0.copy()
    c = np.zeros((B, n)) if c0 is None else c0.copy()
    out = np.zeros((B, T, n))
    for t in range(T):
        x = X[:, t]
        if unit == "tanh":
            h = np.tanh(x @ P["W"].T + h @ P["U"].T + P["b"])
        elif unit == "gru":
            z = sig(x @ P["W_z"].T + h @ P["U_z"].T + P["b_z"])
            r = sig(x @ P["W_r"].T + h @ P["U_r"].T + P["b_r"])
            if kw.get("reset_after"):
                ht = np.tanh(x @ P["W"].T + r * (h @ P["U"].T) + P["b"])
            else:
                ht = np.tanh(x @ P["W"].T + (r * h) @ P["U"].T + P["b"])
            h = (1 - z) * h + z * ht
        else:
            peep = kw.get("peepholes", True)
            vi = P["v_i"] if peep else 0.0
            vf = P["v_f"] if peep else 0.0
            vo = P["v_o"] if peep else 0.0
            i = sig(x @ P["W_i"].T + h @ P["U_i"].T + vi * c + P["b_i"])
            f = sig(x @ P["W_f"].T + h @ P["U_f"].T + vf * c + P["b_f"])
            ct = np.tanh(x @ P["W_c"].T + h @ P["U_c"].T + P["b_c"])
            c = f * c + i * ct
            o = sig(x @ P["W_o"].T + h @ P["U_o"].T + vo * c + P["b_o"])
            h = o * np.tanh(c)
        out[:, t] = h
    return out, (h, c)


def make(unit, kw, I=5, H=7, seed=0, dtype=torch.float64, scale=0.5):
    torch.manual_seed(seed)
    m = gatedrnn.make_unit(unit, I, H, **kw).to(dtype)
    rng = np.random.default_rng(seed)
    P = {}
    for name, view in m.paper_weights().items():  # set every paper symbol through its view
        val = rng.normal(0, scale, size=tuple(view.shape))
        view.copy_(torch.from_numpy(val))
        P[name] = val
    return m, P


@pytest.mark.parametrize("unit,kw", VARIANTS)
def test_unit_matches_float64_rederivation(unit, kw):
    m, P = make(unit, kw)
    X = np.random.default_rng(1).normal(size=(3, 6, 5))
    out, state = m(torch.from_numpy(X))
    ref, (h, c) = ref_numpy(unit, kw, P, X)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    hs = state[0] if unit == "lstm" else state
    np.testing.assert_allclose(hs.detach().numpy(), h, rtol=1e-10, atol=1e-12)
    if unit == "lstm":
        np.testing.assert_allclose(state[1].detach().numpy(), c, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("unit,kw", VARIANTS)
def test_initial_state_is_used(unit, kw):
    m, P = make(unit, kw)
    rng = np.random.default_rng(2)
    X, h0, c0 = rng.normal(size=(2, 4, 5)), rng.normal(size=(2, 7)), rng.normal(size=(2, 7))
    s0 = (torch.from_numpy(h0), torch.from_numpy(c0)) if unit == "lstm" else torch.from_numpy(h0)
    out, _ = m(torch.from_numpy(X), s0)
    ref, _ = ref_numpy(unit, kw, P, X, h0, c0)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-10, atol=1e-12)


def test_peephole_output_gate_sees_current_cell():
    # With everything zero except v_o, o_t = σ(v_o ⊙ c_t): the output gate must use c_t, not c_{t-1}.
    m, _ = make("lstm", {}, I=1, H=1)
    with torch.no_grad():
        for v in m.paper_weights().values():
            v.zero_()
        pw = m.paper_weights()
        pw["W_c"].fill_(1.0)
        pw["b_i"].fill_(50.0)      # i ≈ 1
        pw["v_o"].fill_(3.0)
    x = torch.ones(1, 1, 1, dtype=torch.float64)
    out, (h, c) = m(x)
    c1 = np.tanh(1.0) * sig(50.0)  # f*0 + i*tanh(1)
    assert abs(c.item() - c1) < 1e-12
    assert abs(h.item() - sig(3.0 * c1) * np.tanh(c1)) < 1e-12     # current cell
    assert abs(h.item() - sig(0.0) * np.tanh(c1)) > 1e-3           # not c_0 = 0


def test_gru_reset_placement_matters():
    m1, _ = make("gru", {})
    m2, _ = make("gru", {"reset_after": True})
    x = torch.randn(2, 5, 5, dtype=torch.float64)
    assert not torch.allclose(m1(x)[0], m2(x)[0])


# ---------------------------------------------------------------- torch.nn where the forms agree
def test_tanh_equals_torch_rnn():
    m, P = make("tanh", {})
    ref = torch.nn.RNN(5, 7, batch_first=True).double()
    with torch.no_grad():
        ref.weight_ih_l0.copy_(torch.from_numpy(P["W"])); ref.weight_hh_l0.copy_(torch.from_numpy(P["U"]))
        ref.bias_ih_l0.copy_(torch.from_numpy(P["b"])); ref.bias_hh_l0.zero_()
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(m(x)[0], ref(x)[0])


def test_lstm_without_peepholes_equals_torch_lstm():
    m, P = make("lstm", {"peepholes": False})
    ref = torch.nn.LSTM(5, 7, batch_first=True).double()
    with torch.no_grad():  # torch order i, f, g(=c̃), o — same as ours
        ref.weight_ih_l0.copy_(torch.cat([torch.from_numpy(P[f"W_{g}"]) for g in "ifco"]))
        ref.weight_hh_l0.copy_(torch.cat([torch.from_numpy(P[f"U_{g}"]) for g in "ifco"]))
        ref.bias_ih_l0.copy_(torch.cat([torch.from_numpy(P[f"b_{g}"]) for g in "ifco"])); ref.bias_hh_l0.zero_()
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    out, (h, c) = m(x)
    rout, (rh, rc) = ref(x)
    torch.testing.assert_close(out, rout)
    torch.testing.assert_close(c, rc[0])


def test_gru_reset_after_equals_torch_gru():
    m, P = make("gru", {"reset_after": True})
    ref = torch.nn.GRU(5, 7, batch_first=True).double()
    t = lambda a: torch.from_numpy(a)
    with torch.no_grad():
        # torch: order r, z, n and h' = (1 − z') n + z' h, i.e. z' = 1 − z = σ(−a_z): negate the z block.
        ref.weight_ih_l0.copy_(torch.cat([t(P["W_r"]), -t(P["W_z"]), t(P["W"])]))
        ref.weight_hh_l0.copy_(torch.cat([t(P["U_r"]), -t(P["U_z"]), t(P["U"])]))
        ref.bias_ih_l0.copy_(torch.cat([t(P["b_r"]), -t(P["b_z"]), t(P["b"])])); ref.bias_hh_l0.zero_()
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(m(x)[0], ref(x)[0])


# ------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("unit,kw", VARIANTS)
def test_gradcheck(unit, kw):
    m, _ = make(unit, kw, I=3, H=4, scale=0.4)
    m.fused = False
    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2])
    params = list(m.parameters())

    def f(x, *ps):  # run the unit with the given tensors as its parameters
        out, _ = torch.func.functional_call(m, {n: q for (n, _), q in zip(m.named_parameters(), ps)},
                                            (x,), {"lengths": lengths})
        return out

    inputs = (x, *[p.detach().clone().requires_grad_(True) for p in params])
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


# ---------------------------------------------------------------------- variable lengths
@pytest.mark.parametrize("unit,kw", VARIANTS)
def test_padding_invariance(unit, kw):
    m, _ = make(unit, kw, dtype=torch.float32, scale=0.3)
    head = torch.nn.Linear(7, 5)
    torch.manual_seed(3)
    lengths = [6, 2, 4]
    seqs = [torch.randn(L, 5) for L in lengths]
    targets = [torch.bernoulli(torch.full((L, 5), 0.3)) for L in lengths]
    X = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=7.0)  # junk padding
    Y = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True)
    L = torch.tensor(lengths)
    out, state = m(X, lengths=L)
    mask = (torch.arange(6)[None] < L[:, None]).float()
    loss = (torch.nn.functional.binary_cross_entropy_with_logits(head(out), Y, reduction="none").sum(-1) * mask).sum()
    loss_one = 0.0
    for b, (s, y) in enumerate(zip(seqs, targets)):
        o1, s1 = m(s[None])
        torch.testing.assert_close(out[b, :len(s)], o1[0], rtol=1e-5, atol=1e-6)
        assert torch.all(out[b, len(s):] == 0)
        if unit == "lstm":
            torch.testing.assert_close(state[0][b], s1[0][0]); torch.testing.assert_close(state[1][b], s1[1][0])
        else:
            torch.testing.assert_close(state[b], s1[0])
        loss_one = loss_one + torch.nn.functional.binary_cross_entropy_with_logits(head(o1[0]), y, reduction="sum")
    torch.testing.assert_close(loss, loss_one, rtol=1e-5, atol=1e-5)
    # gradients too: padding contributes nothing
    g_pad = torch.autograd.grad(loss, list(m.parameters()))
    g_one = torch.autograd.grad(loss_one, list(m.parameters()))
    for a, b in zip(g_pad, g_one):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_packed_input_equals_lengths():
    m, _ = make("gru", {}, dtype=torch.float32)
    X = torch.randn(3, 6, 5)
    L = torch.tensor([6, 2, 4])
    out, h = m(X, lengths=L)
    pout, ph = m(pack_padded_sequence(X, L, batch_first=True, enforce_sorted=False))
    pout, _ = pad_packed_sequence(pout, batch_first=True)
    torch.testing.assert_close(pout, out)
    torch.testing.assert_close(ph, h)


def test_time_major_layout():
    m, _ = make("lstm", {}, dtype=torch.float32)
    x = torch.randn(3, 6, 5)
    tm = LSTM(5, 7, batch_first=False)
    tm.load_state_dict(m.state_dict())
    torch.testing.assert_close(tm(x.transpose(0, 1))[0].transpose(0, 1), m(x)[0])


def test_bad_inputs_are_rejected_clearly():
    m = GRU(5, 7)
    with pytest.raises(ValueError, match="input_size=5"):
        m(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="lengths"):
        m(torch.randn(2, 3, 5), lengths=torch.tensor([4, 1]))
    with pytest.raises(ValueError, match="hidden_size"):
        GRU(5, 0)


# ------------------------------------------------------------------ paper_weights / init
def test_paper_weights_are_views_with_paper_shapes():
    m = LSTM(5, 7)
    pw = m.paper_weights()
    assert set(pw) == {"W_i", "U_i", "v_i", "b_i", "W_f", "U_f", "v_f", "b_f", "W_c", "U_c", "b_c",
                       "W_o", "U_o", "v_o", "b_o"}
    assert pw["W_f"].shape == (7, 5) and pw["U_o"].shape == (7, 7) and pw["v_o"].shape == (7,)
    pw["U_o"].fill_(0.25)
    assert torch.all(m.weight_hh[21:28] == 0.25) and not torch.all(m.weight_hh[:21] == 0.25)
    pw["v_f"].fill_(-2.0)
    assert torch.all(m.peephole[1] == -2.0)
    assert set(GRU(3, 4).paper_weights()) == {"W_z", "U_z", "b_z", "W_r", "U_r", "b_r", "W", "U", "b"}
    assert set(TanhRNN(3, 4).paper_weights()) == {"W", "U", "b"}
    assert "v_i" not in LSTM(3, 4, peepholes=False).paper_weights()


@pytest.mark.parametrize("cls", [TanhRNN, GRU, LSTM])
def test_initialisation_as_released_code(cls):
    torch.manual_seed(0)
    m = cls(30, 20)
    for name, v in m.paper_weights().items():
        if name.startswith("W"):
            assert v.abs().max() <= 0.1 and v.std() > 0.04            # U(-0.1, 0.1)
        elif name.startswith("U"):
            torch.testing.assert_close(v @ v.t(), torch.eye(20), atol=1e-5, rtol=0)  # orthogonal block
        else:
            assert torch.all(v == 0)                                   # biases, peepholes
    assert torch.all(LSTM(3, 4, forget_bias=1.0).paper_weights()["b_f"] == 1.0)


def test_weight_noise_training_only_and_resampled():
    torch.manual_seed(0)
    m = GRU(5, 7, weight_noise=0.075)
    x = torch.randn(2, 4, 5)
    m.eval()
    torch.testing.assert_close(m(x)[0], m(x)[0])
    m.train()
    assert not torch.allclose(m(x)[0], m(x)[0])                        # fresh draw each pass
    W, U = m.noisy_weights()
    dW, dU = (W - m.weight_ih).detach(), (U - m.weight_hh).detach()
    assert abs(dW.std().item() - 0.075) < 0.01 and abs(dU.std().item() - 0.075) < 0.01
    # the gradient reaches the clean weights
    m(x)[0].sum().backward()
    assert m.weight_ih.grad is not None and m.weight_hh.grad is not None


# --------------------------------------------------------------------------- Table 1
def test_table1_counts_and_sizes():
    from gatedrnn.nn.counting import table1_rows
    exact = {("speech", "lstm"): 169_065, ("speech", "gru"): 168_888, ("speech", "tanh"): 168_400,
             ("music", "lstm"): 19_836, ("music", "gru"): 20_286, ("music", "tanh"): 20_100}
    for r in table1_rows():
        assert r["units"] == r["units_paper"]
        assert r["parameters"] == exact[(r["task"], r["unit"])]
        assert r["agrees"]


@pytest.mark.parametrize("unit", ["tanh", "gru", "lstm"])
def test_count_parameters_equals_module(unit):
    m = gatedrnn.make_unit(unit, 11, 13)
    assert gatedrnn.count_parameters(unit, 11, 13) == sum(p.numel() for p in m.parameters())


def test_match_hidden_size_is_closest():
    for unit in ("tanh", "gru", "lstm"):
        n = gatedrnn.match_hidden_size(unit, 88, 50_000)
        c = lambda k: abs(gatedrnn.count_parameters(unit, 88, k) - 50_000)
        assert c(n) <= c(n - 1) and c(n) <= c(n + 1)
    with pytest.raises(ValueError):
        gatedrnn.match_hidden_size("gru", 88, 0)


# ------------------------------------------------------------------------- property-based
from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(variant=st.sampled_from(VARIANTS), I=st.integers(1, 6), H=st.integers(1, 6),
       lengths=st.lists(st.integers(1, 7), min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_property_padded_batch_equals_one_by_one(variant, I, H, lengths, seed):
    unit, kw = variant
    m, _ = make(unit, kw, I=I, H=H, seed=seed)
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randn(L, I, generator=g, dtype=torch.float64) for L in lengths]
    X = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=float("nan"))
    X = torch.nan_to_num(X, nan=3.0)             # junk in the padding
    out, state = m(X, lengths=torch.tensor(lengths))
    for b, s in enumerate(seqs):
        o1, s1 = m(s[None])
        torch.testing.assert_close(out[b, :len(s)], o1[0])
        h1 = s1[0] if unit == "lstm" else s1
        hb = state[0] if unit == "lstm" else state
        torch.testing.assert_close(hb[b], h1[0])


# ------------------------------------------- cell() (the readable equations) and the fused path
# Every unit and option: the reference loop (`fused=False`, i.e. each unit's cell()) and the fused C++
# path, each against ref_numpy above (float64, written from the paper), on a padded batch of different
# lengths with junk in the padding and a non-zero initial state. A wrong gate in cell() fails here even
# though the fused kernel (which the default units use) still computes the right thing.
CELL_VARIANTS = VARIANTS + [("lstm", {"forget_bias": 1.0}), ("lstm", {"peepholes": False, "forget_bias": 1.5})]
CELL_IDS = ["tanh", "gru", "gru-reset_after", "lstm", "lstm-nopeep", "lstm-forget_bias", "lstm-nopeep-forget_bias"]


def make_cell_unit(unit, kw, fused, I=4, H=5, seed=0, scale=0.6):
    """A float64 unit with every paper symbol set through paper_weights() — except b_f when the
    forget_bias option is given: then the reference uses the value the option must have put there."""
    m = gatedrnn.make_unit(unit, I, H, fused=fused, **kw).double()
    rng = np.random.default_rng(seed)
    P = {}
    for name, view in m.paper_weights().items():
        if name == "b_f" and "forget_bias" in kw:
            P[name] = np.full(H, kw["forget_bias"])      # what LSTM(forget_bias=...) must initialise
            continue
        val = rng.normal(0, scale, size=tuple(view.shape))
        view.copy_(torch.from_numpy(val))
        P[name] = val
    return m, P


def check_against_rederivation(m, unit, kw, P, I=4, H=5, seed=1):
    rng = np.random.default_rng(seed)
    lengths = [7, 3, 1, 5]
    B, T = len(lengths), max(lengths)
    X = rng.normal(size=(B, T, I))
    for b, L in enumerate(lengths):
        X[b, L:] = 50.0                                   # junk in the padding: must never be read
    h0, c0 = rng.normal(size=(B, H)) * 0.5, rng.normal(size=(B, H)) * 0.5
    s0 = (torch.from_numpy(h0), torch.from_numpy(c0)) if unit == "lstm" else torch.from_numpy(h0)
    with torch.no_grad():
        out, state = m(torch.from_numpy(X), s0, lengths=torch.tensor(lengths))
    out = out.numpy()
    hs, cs = (state[0].numpy(), state[1].numpy()) if unit == "lstm" else (state.numpy(), None)
    for b, L in enumerate(lengths):                       # each sequence alone, on its valid steps only
        ref, (h, c) = ref_numpy(unit, kw, P, X[b:b + 1, :L], h0[b:b + 1], c0[b:b + 1])
        np.testing.assert_allclose(out[b, :L], ref[0], rtol=1e-10, atol=1e-12, err_msg=f"outputs of sequence {b}")
        assert np.all(out[b, L:] == 0), f"padding of sequence {b} must output zeros"
        np.testing.assert_allclose(hs[b], h[0], rtol=1e-10, atol=1e-12, err_msg=f"final h of sequence {b}")
        if unit == "lstm":
            np.testing.assert_allclose(cs[b], c[0], rtol=1e-10, atol=1e-12, err_msg=f"final c of sequence {b}")


@pytest.mark.parametrize("unit,kw", CELL_VARIANTS, ids=CELL_IDS)
def test_cell_equations_match_float64_rederivation(unit, kw):
    """The readable path: fused=False runs RecurrentUnit.reference, i.e. the unit's cell() step by step."""
    m, P = make_cell_unit(unit, kw, fused=False)
    assert m.fused is False
    calls = []
    real_cell = m.cell
    m.cell = lambda *a: calls.append(1) or real_cell(*a)   # prove the equations come from cell()
    check_against_rederivation(m, unit, kw, P)
    assert len(calls) == 7                                  # one call per time step of the padded batch


@pytest.mark.parametrize("unit,kw", CELL_VARIANTS, ids=CELL_IDS)
def test_fused_path_matches_float64_rederivation(unit, kw, monkeypatch):
    """The fused C++ path against the same float64 equations (not only against cell())."""
    from gatedrnn import kernels
    m, P = make_cell_unit(unit, kw, fused=None)
    if not kernels.available():
        pytest.skip(f"fused kernels unavailable here: {kernels.build_error()}")
    assert m.kernel_spec() is not None
    ran, real = [], kernels.recurrence
    monkeypatch.setattr(kernels, "recurrence", lambda *a: ran.append(1) or real(*a))
    m.cell = None                                           # proves cell() plays no part in this path
    check_against_rederivation(m, unit, kw, P)
    assert ran == [1]


def test_forget_bias_option_only_sets_b_f():
    m = LSTM(3, 4, forget_bias=1.0)
    pw = m.paper_weights()
    assert torch.all(pw["b_f"] == 1.0)
    for g in ("i", "c", "o"):
        assert torch.all(pw[f"b_{g}"] == 0.0), g
    assert torch.all(LSTM(3, 4).paper_weights()["b_f"] == 0.0)


@pytest.mark.parametrize("fused", [False, None], ids=["cell", "fused"])
def test_gru_candidate_resets_before_the_product_by_hand(fused):
    """One step, 2 units, by hand: h̃ = tanh(U (r ⊙ h_{t-1})) vs tanh(r ⊙ (U h_{t-1})) with r = (1, 0)."""
    for reset_after in (False, True):
        m = GRU(1, 2, reset_after=reset_after, fused=fused).double()
        with torch.no_grad():
            for v in m.paper_weights().values():
                v.zero_()
            pw = m.paper_weights()
            pw["b_z"].fill_(60.0)                               # z ≈ 1: h_1 = h̃_1
            pw["b_r"].copy_(torch.tensor([60.0, -60.0]))        # r ≈ (1, 0)
            pw["U"].copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))  # swaps the two units
        h0 = torch.tensor([[0.5, -0.7]], dtype=torch.float64)
        _, h1 = m(torch.zeros(1, 1, 1, dtype=torch.float64), h0)
        if reset_after:   # r ⊙ (U h) = (1, 0) ⊙ (-0.7, 0.5)
            want = [math.tanh(-0.7), 0.0]
        else:             # U (r ⊙ h) = U (0.5, 0) = (0, 0.5)
            want = [0.0, math.tanh(0.5)]
        np.testing.assert_allclose(h1[0].detach().numpy(), want, atol=1e-12)
