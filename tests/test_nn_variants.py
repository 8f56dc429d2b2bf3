"""The ablation variants (gatedrnn.nn.lstm_variants, gru_variants; docs/VARIANTS.md): each against an
independent float64 numpy re-derivation of its equations (written here from the docs, sharing no code
with gatedrnn.nn), gradcheck, parameter counts by hand, size matching at the music budget, paper_weights
names, the registry, the guarantee that no variant runs its parent's fused kernel unless its own class
declares one, and fused == reference for the variants that do (FUSED below)."""
import zlib

import numpy as np
import pytest
import torch

from gatedrnn import kernels
from gatedrnn.kernels import autograd as kautograd
from gatedrnn.nn import PAPER_UNITS, UNITS, make_unit, unit_family, unit_names
from gatedrnn.nn.counting import BUDGET, TABLE1_INPUT, count_parameters, match_hidden_size

torch.set_num_threads(1)

LSTM_VARIANTS = ["lstm-nig", "lstm-nfg", "lstm-nog", "lstm-niaf", "lstm-noaf", "lstm-np", "lstm-cifg",
                 "lstm-fgr", "lstm-fb1"]
GRU_VARIANTS = ["gru-nrg", "gru-nug", "gru-ra", "mgu"]
VARIANTS = LSTM_VARIANTS + GRU_VARIANTS
FUSED = {"lstm-np": ("lstm", {"peepholes": False}), "lstm-fb1": ("lstm", {"peepholes": True}),
         "lstm-nig": ("lstm", {"peepholes": True, "no_input_gate": True}),
         "lstm-nfg": ("lstm", {"peepholes": True, "no_forget_gate": True}),
         "lstm-nog": ("lstm", {"peepholes": True, "no_output_gate": True}),
         "lstm-niaf": ("lstm", {"peepholes": True, "no_input_activation": True}),
         "lstm-noaf": ("lstm", {"peepholes": True, "no_output_activation": True}),
         "lstm-cifg": ("lstm", {"peepholes": True, "coupled_input_forget": True}),
         "lstm-fgr": ("lstm", {"peepholes": True, "gate_recurrence": True}),
         "gru-ra": ("gru", {"reset_after": True}),
         "gru-nrg": ("gru", {"reset_after": False, "no_reset_gate": True}),
         "gru-nug": ("gru", {"reset_after": False, "no_update_gate": True}),
         "mgu": ("gru", {"reset_after": False, "minimal": True})}   # variant -> its declared kernel


def sig(a):
    return 1.0 / (1.0 + np.exp(-a))


# ------------------------------------------------------------------ independent re-derivation
def lstm_step(name, P, x, st):
    """One step of the LSTM family, float64 numpy, from the equations in docs/VARIANTS.md."""
    h, c, ip, fp, op = st
    peep = name != "lstm-np"
    fgr = name == "lstm-fgr"

    def gate(g, cell):
        a = x @ P[f"W_{g}"].T + h @ P[f"U_{g}"].T + P[f"b_{g}"]
        if peep:
            a = a + P[f"v_{g}"] * cell
        if fgr:
            a = a + ip @ P[f"R_{g}i"].T + fp @ P[f"R_{g}f"].T + op @ P[f"R_{g}o"].T
        return sig(a)

    f = 1.0 if name == "lstm-nfg" else gate("f", c)
    if name == "lstm-nig":
        i = 1.0
    elif name == "lstm-cifg":
        i = 1.0 - f
    else:
        i = gate("i", c)
    pre = x @ P["W_c"].T + h @ P["U_c"].T + P["b_c"]
    ct = pre if name == "lstm-niaf" else np.tanh(pre)
    c = f * c + i * ct
    o = 1.0 if name == "lstm-nog" else gate("o", c)
    h = o * c if name == "lstm-noaf" else o * np.tanh(c)
    z = np.zeros_like(h)
    as_arr = lambda g: g * np.ones_like(h)
    return (h, c, as_arr(i), as_arr(f), as_arr(o)) if fgr else (h, c, z, z, z)


def gru_step(name, P, x, h):
    """One step of the GRU family, float64 numpy."""
    if name == "mgu":
        f = sig(x @ P["W_f"].T + h @ P["U_f"].T + P["b_f"])
        ht = np.tanh(x @ P["W"].T + (f * h) @ P["U"].T + P["b"])
        return (1 - f) * h + f * ht
    z = 1.0 if name == "gru-nug" else sig(x @ P["W_z"].T + h @ P["U_z"].T + P["b_z"])
    r = 1.0 if name == "gru-nrg" else sig(x @ P["W_r"].T + h @ P["U_r"].T + P["b_r"])
    if name == "gru-ra":
        ht = np.tanh(x @ P["W"].T + r * (h @ P["U"].T) + P["b"])
    else:
        ht = np.tanh(x @ P["W"].T + (r * h) @ P["U"].T + P["b"])
    return ht if name == "gru-nug" else (1 - z) * h + z * ht


def ref_sequence(name, P, X, n, st=None):
    """X (T, I) one sequence -> outputs (T, n) and the final state: (h, c, i, f, o) for the LSTM family
    (i, f, o: lstm-fgr's gate state, zeros for the others), (h, None) for the GRU family. st: the initial
    state in that form (default zeros)."""
    lstm = name.startswith("lstm")
    if st is None:
        st = tuple(np.zeros(n) for _ in range(5)) if lstm else np.zeros(n)
    out = []
    for x in X:
        st = lstm_step(name, P, x, st) if lstm else gru_step(name, P, x, st)
        out.append(st[0] if lstm else st)
    return np.array(out).reshape(len(X), n), st if lstm else (st, None)


def randomise(unit, gen, scale=0.6):
    """Random values written through the paper_weights() views."""
    for w in unit.paper_weights().values():
        w.copy_(scale * torch.randn(w.shape, generator=gen, dtype=w.dtype))


@pytest.mark.parametrize("fused", [None, False], ids=["default", "reference"])
@pytest.mark.parametrize("name", VARIANTS)
def test_variant_matches_float64_rederivation(name, fused):
    """fused=None: the fused kernel where the variant declares one (FUSED), else the reference loop."""
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    I, n, lengths = 3, 4, [6, 2, 4, 1]
    u = make_unit(name, I, n, fused=fused).double()
    randomise(u, gen)
    P = {k: v.numpy().copy() for k, v in u.paper_weights().items()}
    X = torch.randn(len(lengths), max(lengths), I, generator=gen, dtype=torch.float64)
    out, state = u(X, lengths=torch.tensor(lengths))
    h_fin = state[0] if isinstance(state, tuple) else state
    for b, L in enumerate(lengths):
        ref, st_ref = ref_sequence(name, P, X[b, :L].numpy(), n)
        np.testing.assert_allclose(out[b, :L].detach().numpy(), ref, rtol=1e-10, atol=1e-12)
        assert torch.all(out[b, L:] == 0)
        np.testing.assert_allclose(h_fin[b].detach().numpy(), st_ref[0], rtol=1e-10, atol=1e-12)
        if st_ref[1] is not None:
            np.testing.assert_allclose(state[1][b].detach().numpy(), st_ref[1], rtol=1e-10, atol=1e-12)
        if name == "lstm-fgr":                               # the carried gate state i_T, f_T, o_T
            for k in (2, 3, 4):
                np.testing.assert_allclose(state[k][b].detach().numpy(), st_ref[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", VARIANTS)
def test_gradcheck(name):
    torch.manual_seed(0)
    u = make_unit(name, 2, 2, fused=False).double()
    randomise(u, torch.Generator().manual_seed(1))
    names = [k for k, _ in u.named_parameters()]
    x = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 2])

    def f(x, *params):
        out, state = torch.func.functional_call(u, dict(zip(names, params)), (x,), {"lengths": lengths})
        return out, state[0] if isinstance(state, tuple) else state

    params = [p.detach().clone().requires_grad_(True) for p in u.parameters()]
    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------ counting
# The paper's convention (recurrent layer, one bias per block, diagonal peepholes), by hand per variant.
BY_HAND = {
    "lstm-nig": lambda I, n: 3 * (I * n + n * n) + 3 * n + 2 * n,    # f, c̃, o blocks; v_f, v_o
    "lstm-nfg": lambda I, n: 3 * (I * n + n * n) + 3 * n + 2 * n,    # i, c̃, o; v_i, v_o
    "lstm-nog": lambda I, n: 3 * (I * n + n * n) + 3 * n + 2 * n,    # i, f, c̃; v_i, v_f
    "lstm-niaf": lambda I, n: 4 * (I * n + n * n) + 4 * n + 3 * n,   # the LSTM's
    "lstm-noaf": lambda I, n: 4 * (I * n + n * n) + 4 * n + 3 * n,
    "lstm-np": lambda I, n: 4 * (I * n + n * n) + 4 * n,              # no peepholes
    "lstm-cifg": lambda I, n: 3 * (I * n + n * n) + 3 * n + 2 * n,   # f, c̃, o; v_f, v_o
    "lstm-fgr": lambda I, n: 4 * (I * n + n * n) + 4 * n + 3 * n + 9 * n * n,   # + R_{gk}, g, k ∈ {i, f, o}
    "lstm-fb1": lambda I, n: 4 * (I * n + n * n) + 4 * n + 3 * n,
    "gru-nrg": lambda I, n: 2 * (I * n + n * n) + 2 * n,              # z, h̃
    "gru-nug": lambda I, n: 2 * (I * n + n * n) + 2 * n,              # r, h̃
    "gru-ra": lambda I, n: 3 * (I * n + n * n) + 3 * n,               # the GRU's
    "mgu": lambda I, n: 2 * (I * n + n * n) + 2 * n,                  # f, h̃
}
# hidden sizes at the music budget (20,100 with the nominal input 100), as in docs/VARIANTS.md
MUSIC_SIZES = {"lstm-nig": 46, "lstm-nfg": 46, "lstm-nog": 46, "lstm-niaf": 36, "lstm-noaf": 36,
               "lstm-np": 37, "lstm-cifg": 46, "lstm-fgr": 27, "lstm-fb1": 36,
               "gru-nrg": 62, "gru-nug": 62, "gru-ra": 46, "mgu": 62}


@pytest.mark.parametrize("name", VARIANTS)
def test_parameter_count_by_hand_and_module(name):
    for I, n in [(7, 5), (100, 36), (20, 195)]:
        assert count_parameters(name, I, n) == BY_HAND[name](I, n)
    assert count_parameters(name, 7, 5) == sum(p.numel() for p in make_unit(name, 7, 5).parameters())


@pytest.mark.parametrize("name", VARIANTS)
def test_match_hidden_size_at_the_music_budget(name):
    I, budget = TABLE1_INPUT["music"], BUDGET["music"]
    assert (I, budget) == (100, 20_100)
    n = match_hidden_size(name, I, budget)
    err = lambda k: abs(BY_HAND[name](I, k) - budget)
    assert err(n) <= err(n - 1) and err(n) < err(n + 1)          # the closest size (ties: the smaller)
    assert n == MUSIC_SIZES[name]


def test_count_errors():
    with pytest.raises(ValueError, match="lstm-np"):
        count_parameters("lstm-nig", 10, 5, peepholes=False)
    assert count_parameters("lstm", 10, 5, peepholes=False) == count_parameters("lstm-np", 10, 5)
    assert count_parameters("lstm-np", 10, 5, peepholes=True) == BY_HAND["lstm-np"](10, 5)
    with pytest.raises(ValueError, match="mgu"):
        count_parameters("lstm-xyz", 10, 5)


# ------------------------------------------------------------------------------ names
LSTM_NAMES = ["W_i", "U_i", "v_i", "b_i", "W_f", "U_f", "v_f", "b_f", "W_c", "U_c", "b_c", "W_o", "U_o", "v_o", "b_o"]
GRU_NAMES = ["W_z", "U_z", "b_z", "W_r", "U_r", "b_r", "W", "U", "b"]
minus = lambda names, g: [k for k in names if not k.endswith("_" + g)]
R_NAMES = ["R_ii", "R_if", "R_io", "R_fi", "R_ff", "R_fo", "R_oi", "R_of", "R_oo"]   # R_gk: k_{t-1} into gate g
EXPECTED_NAMES = {
    "lstm-nig": minus(LSTM_NAMES, "i"), "lstm-nfg": minus(LSTM_NAMES, "f"), "lstm-nog": minus(LSTM_NAMES, "o"),
    "lstm-niaf": LSTM_NAMES, "lstm-noaf": LSTM_NAMES, "lstm-np": [k for k in LSTM_NAMES if not k.startswith("v")],
    "lstm-cifg": minus(LSTM_NAMES, "i"), "lstm-fgr": LSTM_NAMES + R_NAMES, "lstm-fb1": LSTM_NAMES,
    "gru-nrg": minus(GRU_NAMES, "r"), "gru-nug": minus(GRU_NAMES, "z"), "gru-ra": GRU_NAMES,
    "mgu": ["W_f", "U_f", "b_f", "W", "U", "b"],
}


@pytest.mark.parametrize("name", VARIANTS)
def test_paper_weights_names_shapes_and_views(name):
    I, n = 3, 5
    u = make_unit(name, I, n)
    pw = u.paper_weights()
    assert sorted(pw) == sorted(EXPECTED_NAMES[name])
    for k, w in pw.items():
        shape = {"W": (n, I), "U": (n, n), "R": (n, n)}.get(k[0], (n,))
        assert tuple(w.shape) == shape, k
        w.fill_(0.25)                                   # a view: writing changes the module
    assert all(torch.all(p == 0.25) for p in u.parameters())


def test_lstm_fgr_storage_and_names():
    """weight_gate (3n, 3n): row block = receiving gate, column block = source gate, both (i, f, o)."""
    n = 3
    u = make_unit("lstm-fgr", 2, n)
    assert tuple(u.weight_gate.shape) == (3 * n, 3 * n)
    pw = u.paper_weights()
    for a, g in enumerate("ifo"):
        for b, k in enumerate("ifo"):
            blk = u.weight_gate.detach()[a * n:(a + 1) * n, b * n:(b + 1) * n]
            assert pw[f"R_{g}{k}"].data_ptr() == blk.data_ptr()
            torch.testing.assert_close(blk @ blk.T, torch.eye(n))     # orthogonal, like every U block
    assert set(u.state_dict()) == {"weight_ih", "weight_hh", "bias", "peephole", "weight_gate"}


def test_lstm_fgr_weight_noise_on_W_U_R_in_that_order():
    torch.manual_seed(3)
    u = make_unit("lstm-fgr", 2, 3, weight_noise=0.3).double()
    x = torch.randn(2, 4, 2, dtype=torch.float64)
    torch.manual_seed(7)
    out_train, _ = u.train()(x)
    clean = make_unit("lstm-fgr", 2, 3).double()
    clean.load_state_dict(u.state_dict())
    torch.manual_seed(7)
    with torch.no_grad():
        for p in (clean.weight_ih, clean.weight_hh, clean.weight_gate):
            p.add_(0.3 * torch.randn_like(p))
    out_manual, _ = clean.eval()(x)
    torch.testing.assert_close(out_train, out_manual)
    out_eval, _ = u.eval()(x)
    assert not torch.allclose(out_eval, out_train)
    assert u._pass_R is None                       # nothing of the pass stays on the module


# ------------------------------------------------------------------------------ options
def test_forget_bias_lands_on_the_forget_gate():
    n = 4
    fb1 = make_unit("lstm-fb1", 3, n)
    assert torch.all(fb1.paper_weights()["b_f"] == 1) and fb1.bias.sum() == n
    nig = make_unit("lstm-nig", 3, n, forget_bias=2.0)          # f is the FIRST block here
    pw = nig.paper_weights()
    assert torch.all(pw["b_f"] == 2) and torch.all(pw["b_c"] == 0) and torch.all(pw["b_o"] == 0)
    assert make_unit("lstm-fb1", 3, n, forget_bias=0.0).bias.abs().sum() == 0
    with pytest.raises(ValueError, match="no forget gate"):
        make_unit("lstm-nfg", 3, n, forget_bias=1.0)
    with pytest.raises(ValueError, match="reset_after"):
        make_unit("gru-ra", 3, n, reset_after=False)
    assert make_unit("gru-ra", 3, n, reset_after=True).reset_after


@torch.no_grad()
def test_coupled_gate_and_no_output_gate_by_hand():
    """Two hand-checkable cases: cifg with f_t = 1/2 exactly, nog with h_t = tanh(c_t)."""
    u = make_unit("lstm-cifg", 1, 1).double()
    for w in u.paper_weights().values():
        w.zero_()
    u.paper_weights()["b_c"].fill_(0.5)                          # c̃ = tanh(0.5), i = 1 − f = 1/2, o = 1/2
    out, (h, c) = u(torch.zeros(1, 1, 1, dtype=torch.float64))
    assert float(c) == pytest.approx(0.5 * np.tanh(0.5)) and float(h) == pytest.approx(0.5 * np.tanh(float(c)))
    v = make_unit("lstm-nog", 1, 1).double()
    for w in v.paper_weights().values():
        w.zero_()
    v.paper_weights()["b_c"].fill_(0.5)
    out, (h, c) = v(torch.zeros(1, 1, 1, dtype=torch.float64))
    assert float(h) == pytest.approx(np.tanh(float(c)))


# ------------------------------------------------------------------------------ registry
def test_registry_and_make_unit():
    names = unit_names()
    assert names[:3] == list(PAPER_UNITS) and set(names) == set(PAPER_UNITS) | set(VARIANTS) | {"mingru", "minlstm"}
    assert list(UNITS) == names and len(set(UNITS.values())) == len(UNITS)   # one class per name
    for name in VARIANTS:
        assert type(make_unit(name.upper(), 2, 3)) is UNITS[name]
        assert UNITS[name].name == name
        assert unit_family(name) == ("lstm" if name.startswith("lstm") else "gru")
    with pytest.raises(ValueError) as e:
        make_unit("lstm-xyz", 2, 3)
    assert "lstm-xyz" in str(e.value) and all(n in str(e.value) for n in names)
    with pytest.raises(ValueError, match="unknown unit"):
        make_unit(None, 2, 3)
    with pytest.raises(TypeError):
        make_unit("lstm-nig", 2, 3, peepholes=False)               # the variant fixes its peepholes


# ------------------------------------------------------------------------------ kernels
@pytest.fixture
def no_fused(monkeypatch):
    """Any call into a fused kernel raises (and is recorded)."""
    calls = []

    def boom(*a, **k):
        calls.append(a)
        raise AssertionError("a fused kernel ran")

    monkeypatch.setattr(kernels, "recurrence", boom)
    monkeypatch.setattr(kernels, "inference", boom)
    monkeypatch.setattr(kautograd.FusedRecurrence, "apply", boom)
    return calls


def _unfused(name):
    """The variant itself if it declares no kernel, else a subclass that overrides cell() (the same
    equations, but the override is all the rule sees: a kernel cannot know what a new cell() computes)."""
    cls = UNITS[name]
    if name not in FUSED:
        return make_unit(name, 3, 4)
    sub = type(cls.__name__ + "Sub", (cls,), {"cell": lambda self, *a: cls.cell(self, *a)})
    return sub(3, 4)


@pytest.mark.parametrize("name", VARIANTS)
def test_a_variant_never_runs_its_parents_fused_kernel(name, no_fused):
    """A variant without its own kernel declaration (the unfused variants; for the fused ones a subclass
    overriding cell()) runs the reference loop: forward, backward and no_grad."""
    u = _unfused(name)                                              # fused=None: a kernel would be used
    assert u.kernel_spec() is None
    x = torch.randn(2, 5, 3)
    out, _ = u(x, lengths=torch.tensor([5, 3]))
    out.sum().backward()
    with torch.no_grad():
        u(x)
    assert no_fused == []


def test_the_spy_catches_the_paper_units(no_fused):
    """Control for the test above: the parents DO reach the (patched) fused path when it is built."""
    if not kernels.available():
        pytest.skip("fused kernels unavailable: " + str(kernels.build_error()))
    for name in PAPER_UNITS:
        with pytest.raises(AssertionError, match="fused kernel ran"):
            make_unit(name, 3, 4)(torch.randn(2, 5, 3))
    assert len(no_fused) == len(PAPER_UNITS)


# ------------------------------------------------------------------ the fused variants
def _run(u, x, lengths, fused, state):
    """forward + backward of a fixed random loss on the outputs and the final state; returns the outputs,
    the final state and every gradient (x, initial state, parameters)."""
    u.fused = fused
    u.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    state = tuple(s.detach().clone().requires_grad_(True) for s in state) if isinstance(state, tuple) \
        else state.detach().clone().requires_grad_(True)
    out, st_ = u(x, state, lengths=lengths)
    sts = st_ if isinstance(st_, tuple) else (st_,)
    g = torch.Generator().manual_seed(5)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    for s_ in sts:
        loss = loss + (s_ * torch.randn(s_.shape, generator=g, dtype=s_.dtype)).sum()
    loss.backward()
    grads = [x.grad] + [s_.grad for s_ in (state if isinstance(state, tuple) else (state,))] + \
        [p.grad for p in u.parameters()]
    return [out.detach(), *[s_.detach() for s_ in sts], *grads]


@pytest.mark.parametrize("name", list(FUSED))
def test_fused_variant_declares_and_runs_its_kernel(name, monkeypatch):
    if not kernels.available():
        pytest.skip("fused kernels unavailable: " + str(kernels.build_error()))
    u = make_unit(name, 3, 4)
    assert u.kernel_spec() == FUSED[name]
    ran, real = [], kernels.recurrence
    monkeypatch.setattr(kernels, "recurrence", lambda *a, **k: ran.append(1) or real(*a, **k))
    u(torch.randn(2, 5, 3), lengths=torch.tensor([5, 3]))[0].sum().backward()
    assert ran == [1]


def initial_state(name, B, H, g, dtype):
    """A random initial state of the variant's form: h, (h, c), or lstm-fgr's (h, c, i, f, o) with gate
    values in (0, 1) as a sigmoid gives them."""
    h0 = torch.randn(B, H, generator=g, dtype=dtype)
    if unit_family(name) != "lstm":
        return h0
    st_ = (h0, torch.randn(B, H, generator=g, dtype=dtype))
    if name == "lstm-fgr":
        st_ += tuple(torch.rand(B, H, generator=g, dtype=dtype) for _ in range(3))
    return st_


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(list(FUSED)), B=st.integers(1, 9), T=st.integers(1, 8), I=st.integers(1, 9),
       H=st.integers(1, 21), padded=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]),
       seed=st.integers(0, 2**16))
def test_fused_variant_equals_reference_property(name, B, T, I, H, padded, dtype, seed):
    """fused == reference for every fused variant: outputs, final state and every gradient (x, initial
    state, each parameter), float32 and float64, random lengths (masked steps)."""
    if not kernels.available():
        pytest.skip("fused kernels unavailable: " + str(kernels.build_error()))
    g = torch.Generator().manual_seed(seed)
    u = make_unit(name, I, H).to(dtype)
    randomise(u, g)
    x = torch.randn(B, T, I, generator=g, dtype=dtype)
    lengths = torch.randint(0, T + 1, (B,), generator=g) if padded else None
    state = initial_state(name, B, H, g, dtype)
    atol = 2e-5 if dtype == torch.float32 else 1e-11
    for a, b in zip(_run(u, x, lengths, None, state), _run(u, x, lengths, False, state)):
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(FUSED))
def test_fused_variant_equals_reference(name, dtype):
    """Every fused variant, both dtypes, a padded batch (the property test above samples among them)."""
    if not kernels.available():
        pytest.skip("fused kernels unavailable: " + str(kernels.build_error()))
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    B, T, I, H = 7, 9, 5, 11
    u = make_unit(name, I, H).to(dtype)
    randomise(u, g)
    x = torch.randn(B, T, I, generator=g, dtype=dtype)
    lengths = torch.tensor([9, 4, 0, 9, 1, 6, 8])
    state = initial_state(name, B, H, g, dtype)
    atol = 2e-5 if dtype == torch.float32 else 1e-11
    for a, b in zip(_run(u, x, lengths, None, state), _run(u, x, lengths, False, state)):
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-4)


@pytest.mark.parametrize("name", list(FUSED))
def test_fused_variant_gradcheck(name):
    if not kernels.available():
        pytest.skip("fused kernels unavailable: " + str(kernels.build_error()))
    u = make_unit(name, 2, 3).double()
    randomise(u, torch.Generator().manual_seed(2))
    assert u.kernel_spec() == FUSED[name]
    names = [k for k, _ in u.named_parameters()]
    x = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2, 3])

    def f(x, *params):
        out, state = torch.func.functional_call(u, dict(zip(names, params)), (x,), {"lengths": lengths})
        return (out,) + (state if isinstance(state, tuple) else (state,))

    params = [p.detach().clone().requires_grad_(True) for p in u.parameters()]
    assert torch.autograd.gradcheck(f, (x, *params), atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("name", ["lstm-nig", "lstm-cifg", "lstm-noaf", "gru-ra", "gru-nrg"])
def test_fused_variant_stacked_equals_single_units(name):
    """K fused variant models as one (gatedrnn.nn.StackedUnit) == the single units, outputs and gradients."""
    from gatedrnn.nn import StackedUnit
    torch.manual_seed(0)
    units = [make_unit(name, 4, 6).double() for _ in range(3)]
    for k, u in enumerate(units):
        randomise(u, torch.Generator().manual_seed(k))
    s = StackedUnit.from_units(units)
    x = torch.randn(3, 5, 7, 4, dtype=torch.float64)
    lengths = torch.randint(0, 8, (3, 5))
    out, _ = s(x, lengths=lengths)
    out.square().sum().backward()
    for k, u in enumerate(units):
        o, _ = u(x[k], lengths=lengths[k])
        o.square().sum().backward()
        torch.testing.assert_close(out[k].detach(), o.detach(), atol=1e-12, rtol=1e-10)
        for p, q in zip(s.parameters(), u.parameters()):
            torch.testing.assert_close(p.grad[k], q.grad, atol=1e-12, rtol=1e-10)


# ------------------------------------------------------------------ lstm-fgr: the gate state in the kernel
@pytest.fixture(params=["in-loop", "deferred"])
def wgrad_mode(request, monkeypatch):
    """The two ways the kernels' backward forms the weight gradients (kernels.autograd.DEFER_BYTES)."""
    monkeypatch.setattr(kautograd, "DEFER_BYTES", 0 if request.param == "deferred" else 1 << 40)
    return request.param


def _fgr(I, H, dtype, seed):
    u = make_unit("lstm-fgr", I, H).to(dtype)
    randomise(u, torch.Generator().manual_seed(seed))
    return u


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lstm_fgr_gate_state_fused_equals_reference(dtype, wgrad_mode):
    """The carried gate state through the fused kernel: from a nonzero initial (i_0, f_0, o_0), over a
    padded batch (padded steps carry the gates), with a loss on the final gates only — the final gate
    state, the gradients w.r.t. the initial gate state (and everything else) equal the reference loop's,
    the final gates equal the float64 re-derivation, and the gradient really reaches i_0, f_0, o_0."""
    if not kernels.available():
        pytest.skip("fused kernels unavailable: " + str(kernels.build_error()))
    g = torch.Generator().manual_seed(11)
    B, T, I, H = 6, 7, 4, 5
    u = _fgr(I, H, dtype, 3)
    x = torch.randn(B, T, I, generator=g, dtype=dtype)
    lengths = torch.tensor([7, 3, 0, 7, 1, 5])
    state = initial_state("lstm-fgr", B, H, g, dtype)
    w = [torch.randn(B, H, generator=g, dtype=dtype) for _ in range(3)]
    res = []
    for fused in (None, False):
        u.fused = fused
        u.zero_grad(set_to_none=True)
        s0 = tuple(s.detach().clone().requires_grad_(True) for s in state)
        out, sT = u(x, s0, lengths=lengths)
        sum((a * b).sum() for a, b in zip(sT[2:], w)).backward()
        res.append([*(s.detach() for s in sT), *(s.grad for s in s0), *(p.grad for p in u.parameters())])
    atol = 2e-5 if dtype == torch.float32 else 1e-12
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-4)
    d_gates0 = res[0][7:10]
    assert all(d[lengths > 0].abs().min() > 0 for d in d_gates0)       # every gate of every row reached
    assert all(torch.equal(d[lengths == 0], w_[lengths == 0]) for d, w_ in zip(d_gates0, w))   # carried
    P = {k: v.double().numpy() for k, v in u.paper_weights().items()}
    for b, L in enumerate(lengths.tolist()):
        _, st_ref = ref_sequence("lstm-fgr", P, x[b, :L].double().numpy(), H,
                                 tuple(s[b].double().numpy() for s in state))
        for k in range(5):
            np.testing.assert_allclose(res[0][k][b].double().numpy(), st_ref[k], rtol=1e-4 if dtype ==
                                       torch.float32 else 1e-10, atol=atol)
    with torch.no_grad():                                                # the forward-only kernel
        u.fused = None
        _, s_inf = u(x, state, lengths=lengths)
    for a, b in zip(s_inf, res[0][:5]):
        assert torch.equal(a, b)


def test_lstm_fgr_gradcheck_with_initial_gate_state(wgrad_mode):
    """float64 gradcheck through the fused kernel w.r.t. x, all five parts of the initial state and every
    parameter (R included), outputs and the whole final state, on a padded batch."""
    if not kernels.available():
        pytest.skip("fused kernels unavailable: " + str(kernels.build_error()))
    u = _fgr(2, 3, torch.float64, 4)
    assert u.kernel_spec() == FUSED["lstm-fgr"]
    g = torch.Generator().manual_seed(5)
    names = [k for k, _ in u.named_parameters()]
    x = torch.randn(3, 4, 2, dtype=torch.float64, generator=g, requires_grad=True)
    s0 = [s.requires_grad_(True) for s in initial_state("lstm-fgr", 3, 3, g, torch.float64)]
    lengths = torch.tensor([4, 1, 3])

    def f(x, h, c, i, f_, o, *params):
        out, st_ = torch.func.functional_call(u, dict(zip(names, params)), (x, (h, c, i, f_, o)),
                                              {"lengths": lengths})
        return (out, *st_)

    params = [p.detach().clone().requires_grad_(True) for p in u.parameters()]
    assert torch.autograd.gradcheck(f, (x, *s0, *params), atol=1e-7, rtol=1e-5)


def test_lstm_fgr_stacked_models_equal_single_units(wgrad_mode):
    """K lstm-fgr models in one kernel call (the loop's leading model dimension, base.recurrence; each
    model its own W, U, b, v, R, initial state and lengths) == the K single units, outputs, final states
    and every gradient; and == the stacked reference loop."""
    from gatedrnn.nn import recurrence
    if not kernels.available():
        pytest.skip("fused kernels unavailable: " + str(kernels.build_error()))
    K, B, T, I, H = 3, 5, 6, 4, 7
    units = [_fgr(I, H, torch.float64, k) for k in range(K)]
    g = torch.Generator().manual_seed(9)
    x = torch.randn(K, T, B, I, generator=g, dtype=torch.float64)
    lengths = torch.randint(0, T + 1, (K, B), generator=g)
    mask = torch.arange(T).view(1, T, 1) < lengths.unsqueeze(1)                  # (K, T, B)
    states = [initial_state("lstm-fgr", B, H, g, torch.float64) for _ in range(K)]
    w = torch.randn(K, T, B, H, generator=g, dtype=torch.float64)

    def stacked(fused):
        ps = [torch.stack([getattr(u, n).detach() for u in units]).requires_grad_(True)
              for n in ("weight_ih", "weight_hh", "bias", "peephole", "weight_gate")]
        s0 = tuple(torch.stack([s[j] for s in states]).requires_grad_(True) for j in range(5))
        t = units[0]
        object.__setattr__(t, "_pass_R", ps[4])            # this pass's R, one per model (as forward sets it)
        try:
            out, sT = recurrence(t, x, s0, mask, *ps[:4], fused=fused)
        finally:
            object.__setattr__(t, "_pass_R", None)
        ((out * w).sum() + sum(s.square().sum() for s in sT)).backward()
        return out.detach(), [s.detach() for s in sT], [s.grad for s in s0], [p.grad for p in ps]

    fus, ref = stacked(None), stacked(False)
    for a, b in zip([fus[0], *fus[1], *fus[2], *fus[3]], [ref[0], *ref[1], *ref[2], *ref[3]]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    for k, u in enumerate(units):
        u.zero_grad(set_to_none=True)
        s0 = tuple(s.detach().clone().requires_grad_(True) for s in states[k])
        out, sT = u(x[k].transpose(0, 1), s0, lengths=lengths[k])
        ((out.transpose(0, 1) * w[k]).sum() + sum(s.square().sum() for s in sT)).backward()
        torch.testing.assert_close(fus[0][k], out.detach().transpose(0, 1), atol=1e-12, rtol=1e-10)
        for a, b in zip(fus[1], sT):
            torch.testing.assert_close(a[k], b.detach(), atol=1e-12, rtol=1e-10)
        for a, b in zip(fus[2], s0):
            torch.testing.assert_close(a[k], b.grad, atol=1e-12, rtol=1e-10)
        for a, p in zip(fus[3], (u.weight_ih, u.weight_hh, u.bias, u.peephole, u.weight_gate)):
            torch.testing.assert_close(a[k], p.grad, atol=1e-12, rtol=1e-10)


def test_lstm_fgr_weight_noise_reaches_the_kernel(monkeypatch):
    """Training with weight noise: the noisy R of the pass (not the clean parameter) reaches the kernel,
    and fused == reference for the same draws."""
    if not kernels.available():
        pytest.skip("fused kernels unavailable: " + str(kernels.build_error()))
    u = _fgr(3, 4, torch.float64, 6)
    u.weight_noise = 0.3
    u.train()
    seen, real = [], kernels.recurrence
    monkeypatch.setattr(kernels, "recurrence", lambda *a, **k: seen.append(k["R"].detach().clone()) or real(*a, **k))
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    res = []
    for fused in (None, False):
        u.fused = fused
        u.zero_grad(set_to_none=True)
        torch.manual_seed(3)
        out, sT = u(x, lengths=torch.tensor([5, 2]))
        (out.square().sum() + sT[2].sum()).backward()
        res.append([out.detach(), *(p.grad for p in u.parameters())])
    assert len(seen) == 1 and not torch.allclose(seen[0][0], u.weight_gate.detach())
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


# ------------------------------------------------------------------ the declaration: one place per unit
def test_counting_shapes_derive_from_the_declarations():
    """SHAPES (G, P, S) is read from each class's declaration; pinned here to Table 1's convention as it
    was written by hand before, so a declaration cannot drift from the counts of committed studies."""
    from gatedrnn.nn.counting import SHAPES
    assert SHAPES == {
        "tanh": (1, 0, 0), "gru": (3, 0, 0), "lstm": (4, 3, 0),
        "lstm-nig": (3, 2, 0), "lstm-nfg": (3, 2, 0), "lstm-nog": (3, 2, 0), "lstm-niaf": (4, 3, 0),
        "lstm-noaf": (4, 3, 0), "lstm-np": (4, 0, 0), "lstm-cifg": (3, 2, 0), "lstm-fgr": (4, 3, 9),
        "lstm-fb1": (4, 3, 0), "gru-nrg": (2, 0, 0), "gru-nug": (2, 0, 0), "gru-ra": (3, 0, 0), "mgu": (2, 0, 0),
        "mingru": (2, 0, 0), "minlstm": (3, 0, 0)}     # (these two without U: Declaration.recurrent)
    for name, cls in UNITS.items():
        assert cls.name == name and UNITS[name] is cls                  # the registry names each class once
        d = cls.declares
        u = make_unit(name, 7, 5)
        assert u.gates == d.gates and u.peepholes == d.peepholes and u.options == dict(d.options)
        assert {k: tuple(getattr(u, k).shape) for k in d.extra} == {k: (r * 5, c * 5) for k, (r, c) in d.extra.items()}


def test_declared_options_reach_the_unit_and_others_are_refused():
    from gatedrnn.nn import OptionError, unit_options
    assert unit_options("lstm-fb1") == {"forget_bias": 1.0} and unit_options("lstm-nfg") == {}
    assert unit_options("lstm", peepholes=False) == {"peepholes": False, "forget_bias": 0.0}
    assert make_unit("lstm-cifg", 3, 4, forget_bias=1).forget_bias == 1.0          # cast to the default's type
    with pytest.raises(OptionError, match="lstm-np") as e:                          # the family's other forms
        unit_options("lstm-nig", peepholes=False)
    assert isinstance(e.value, TypeError) and isinstance(e.value, ValueError)
    with pytest.raises(TypeError, match="takes no option 'reset_after'"):
        make_unit("mgu", 3, 4, reset_after=True)
    with pytest.raises(ValueError, match="no forget gate"):
        make_unit("lstm-nfg", 3, 4, forget_bias=0.0)                            # it takes no forget_bias at all
    with pytest.raises(ValueError, match="finite"):
        make_unit("lstm", 3, 4, forget_bias=float("nan"))


def test_a_declaration_is_checked_when_the_class_is_defined():
    from gatedrnn.nn import Declaration
    for bad in (dict(gates=()), dict(gates=("z", ""), peepholes=("f",)), dict(gates=("",), flags={"minimal": True}),
                dict(gates=("",), kernel="lstm2"), dict(gates=("f", ""), kernel="gru", flags={"no_input_gate": True}),
                dict(gates=("",), extra={"R": (0, 1)})):
        with pytest.raises(TypeError):
            Declaration(**bad)


def test_a_new_unit_is_one_class():
    """A unit of one's own: one class that declares itself and writes its cell(); counting (by name of
    the class, and matching), options, the reference loop and the path record follow, with no other
    file touched (registering it is one more entry in gatedrnn.units.BUILTIN_UNITS)."""
    from gatedrnn.nn import Declaration, RecurrentUnit
    from gatedrnn.nn.counting import count_parameters, match_hidden_size

    class Damped(RecurrentUnit):
        """h_t = (1 − a) h_{t−1} + a tanh(W x_t + U h_{t−1} + b), a fixed: the leaky tanh unit."""
        name = "damped"
        declares = Declaration(gates=("",), options={"a": 0.5})

        def cell(self, wx_t, h, p):
            return (1 - self.a) * h + self.a * torch.tanh(wx_t + h @ p["U"].mT)

    u = Damped(3, 4, a=0.25)
    assert u.a == 0.25 and u.kernel_spec() is None and u.path() == "reference"
    assert count_parameters(Damped, 3, 4) == sum(p.numel() for p in u.parameters()) == 3 * 4 + 16 + 4
    assert match_hidden_size(Damped, 100, 20_100) == 100                      # the tanh unit's count
    out, h = u(torch.randn(2, 5, 3))
    assert out.shape == (2, 5, 4)
    with pytest.raises(TypeError, match="takes no option 'b'"):
        Damped(3, 4, b=1.0)


def test_a_class_that_declares_nothing_is_counted_by_an_instance():
    """Issue 20's units named by import path need no formula: e.g. torch.nn.GRU, counted as built."""
    from gatedrnn.nn.counting import count_parameters, match_hidden_size
    assert count_parameters(torch.nn.GRU, 10, 5) == sum(p.numel() for p in torch.nn.GRU(10, 5).parameters())
    n = match_hidden_size(torch.nn.LSTM, 20, 5_000)
    c = lambda k: abs(count_parameters(torch.nn.LSTM, 20, k) - 5_000)
    assert c(n) <= c(n - 1) and c(n) < c(n + 1)
