"""The GEMM path: the paper units' loop over time built from the platform's GEMM (what torch.nn calls),
for the sizes where a large product dominates and the fused kernel's own micro-kernel loses to it.

One `torch.autograd.Function` per call, K >= 1 models on a leading dimension (the operands of
`gatedrnn.kernels.recurrence`): x (K, T, B, I), h0/c0 (K, B, H), W (K, G·H, I), U (K, G·H, H), b (K, G·H),
v (K, 3, H) or None (LSTM peepholes), mask (K, T, B) bool or None, and `bn` (K, H) or None: the GRU's second,
inner candidate bias of torch.nn.GRU, h̃ = tanh(W x + b + r ⊙ (U h + b_n)) (reset_after only).

Forward: the input projection b + W x_t for all steps at once (one GEMM), then per step one batched
GEMM U h_{t−1} (the paper GRU: two, U_zr h and U (r ⊙ h)) and a few in-place elementwise torch ops, no
autograd graph. Backward (haste's / cuDNN's schedule): per step only the gate gradients and
dh_{t−1} = d_t U (one GEMM; the paper GRU two), the gate gradients of every step kept; dW, dU, db, dx
are then a few large GEMMs over all T·B rows, where torch.nn's autograd does a rank-B update of dU per
step. The one form torch has a fused primitive for — the LSTM without peepholes, one model, no padding —
runs that primitive (`torch._VF.lstm`, what torch.nn.LSTM calls: oneDNN on the CPU). Padded steps
(mask False) carry the state, output 0 and pass dh, dc straight through, as in the
fused kernel and `RecurrentUnit.reference`.

It computes the paper's equations (cell() of tanh.py, gru.py in both forms, lstm.py with or without
peepholes) — `tests/test_torch_layers.py` holds it to the reference loop (float64, gradcheck). The
choice between it and the fused kernel is `gatedrnn.nn.dispatch.route`.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["GemmRecurrence", "recurrence", "KINDS"]

KINDS = ("tanh", "gru", "lstm")
_GATES = {"tanh": 1, "gru": 3, "lstm": 4}


def recurrence(kind: str, flags, x: Tensor, h0: Tensor, c0: Tensor | None, W: Tensor, U: Tensor, b: Tensor,
               v: Tensor | None, mask: Tensor | None, bn: Tensor | None = None):
    """The loop over time on the GEMM path; the same operands and results as
    `gatedrnn.kernels.recurrence` (out (K, T, B, H), hT, cT or None)."""
    if kind not in KINDS:
        raise ValueError(f"the GEMM path computes {KINDS}, not {kind!r}")
    reset_after = bool(flags.get("reset_after", False))
    peep = kind == "lstm" and bool(flags.get("peepholes", False)) and v is not None
    if bn is not None and not (kind == "gru" and reset_after):
        raise ValueError("the inner candidate bias bn belongs to the GRU with reset_after=True")
    if kind == "lstm" and not peep and mask is None and x.shape[0] == 1 and x.dtype in (torch.float32, torch.float64):
        return _torch_lstm(x[0], h0, c0, W[0], U[0], b[0])
    res = GemmRecurrence.apply(kind, reset_after, peep, x, h0, c0 if kind == "lstm" else None, W, U, b,
                               v if peep else None, bn, mask)
    return (res[0], res[1], res[2] if kind == "lstm" else None)


def _torch_lstm(x: Tensor, h0: Tensor, c0: Tensor, W: Tensor, U: Tensor, b: Tensor):
    """torch.nn.LSTM's own form (no peepholes, no padding, one model): torch's LSTM, the one torch.nn.LSTM
    runs (oneDNN's fused primitive on the CPU); our single bias is its b_ih, b_hh = 0.
    Always with grad mode on: torch picks oneDNN's propagation kind from grad mode alone (not from what
    requires a gradient), and its forward-inference kind rounds differently from its forward-training
    kind (about one float32 ulp; 2026-12-03, torch 2.13) — so an evaluation under no_grad would not give
    the training forward's values. Without grad mode the operands are detached: nothing is recorded."""
    ops = (x, h0, c0, W, U, b)
    if not torch.is_grad_enabled():
        ops = tuple(t.detach() for t in ops)
    x, h0, c0, W, U, b = ops
    with torch.enable_grad():
        out, hT, cT = torch._VF.lstm(x, (h0, c0), [W, U, b, torch.zeros_like(b)], True, 1, 0.0, False, False, False)
    return out.unsqueeze(0), hT, cT


def _bias_view(t: Tensor, k: int, H: int) -> Tensor:
    """Row k of a (K, P, H) peephole tensor as (K, 1, H), broadcast over the batch rows."""
    return t[:, k].unsqueeze(1)


def _gru_forward_step(a: Tensor, h: Tensor, Uzr: Tensor, Uc: Tensor, e: Tensor, reset_after: bool,
                      bnv: Tensor | None, H: int) -> Tensor:
    """One paper-GRU step on the pre-activations a = b + W x_t (overwritten by z, r, h̃); e receives
    r ⊙ h_{t−1} (paper form) or U_c h_{t−1} + b_n (reset_after), which the backward needs."""
    azr, ac = a[..., :2 * H], a[..., 2 * H:]
    azr.baddbmm_(h, Uzr.mT)
    azr.sigmoid_()
    z, r = a[..., :H], a[..., H:2 * H]
    if reset_after:
        if bnv is not None:
            torch.baddbmm(bnv, h, Uc.mT, out=e)
        else:
            torch.bmm(h, Uc.mT, out=e)
        ac.addcmul_(r, e)
    else:
        torch.mul(r, h, out=e)
        ac.baddbmm_(e, Uc.mT)
    ac.tanh_()
    return torch.addcmul(h, z, ac - h)                    # h + z ⊙ (h̃ − h)


def _lstm_forward_step(a: Tensor, h: Tensor, c: Tensor, U: Tensor, vif: Tensor | None, vo: Tensor | None,
                       c_out: Tensor, tc_out: Tensor, h_out: Tensor, m_t: Tensor | None) -> Tensor | None:
    """One LSTM step on a = b + W x_t (overwritten by i, f, g, o); c_t goes to c_out, tanh(c_t) to tc_out.
    Unpadded (m_t None) h_t is written to h_out and None returned; padded, the new h is returned and c_out
    keeps c_{t−1} where m_t is False. Few torch ops per step: each costs microseconds of dispatch."""
    K, B, H = h.shape
    a.baddbmm_(h, U.mT)
    ai, af, ag, ao = (a[..., k * H:(k + 1) * H] for k in range(4))
    if vif is not None:
        a[..., :2 * H].view(K, B, 2, H).addcmul_(vif, c.unsqueeze(2))   # v_i ⊙ c, v_f ⊙ c
    a[..., :2 * H].sigmoid_()
    ag.tanh_()
    cn = torch.mul(af, c, out=c_out) if m_t is None else af * c
    cn.addcmul_(ai, ag)
    if vo is not None:
        ao.addcmul_(vo, cn)
    ao.sigmoid_()
    torch.tanh(cn, out=tc_out)
    if m_t is None:
        torch.mul(ao, tc_out, out=h_out)
        return None
    torch.where(m_t, cn, c, out=c_out)
    return ao * tc_out


def _gru_backward_step(gh: Tensor, a: Tensor, d: Tensor, wc: Tensor, hp: Tensor, e: Tensor, U: Tensor,
                       reset_after: bool, mf_t: Tensor | None, H: int) -> Tensor:
    """The GRU's gate gradients of one step into d (and the candidate's W-side gradient into wc, which is
    d's candidate block in the paper form); returns dL/dh_{t−1}."""
    Uzr, Uc = U[:, :2 * H], U[:, 2 * H:]
    z, r, ct = a[..., :H], a[..., H:2 * H], a[..., 2 * H:]
    dz, dr, dcand = d[..., :H], d[..., H:2 * H], d[..., 2 * H:]
    torch.sub(ct, hp, out=dz)
    dz.mul_(gh).mul_(z * (1 - z))
    torch.mul(gh, z, out=wc)                              # dL/d(candidate pre-activation)
    wc.mul_(1 - ct * ct)
    if mf_t is not None:
        dz.mul_(mf_t)
        wc.mul_(mf_t)
    if reset_after:
        torch.mul(wc, e, out=dr)
        dr.mul_(r * (1 - r))
        torch.mul(wc, r, out=dcand)                      # U side: d(U_c h + b_n)
        return torch.baddbmm(gh * (1 - z), d, U)
    drh = torch.bmm(dcand, Uc)                           # dL/d(r ⊙ h_{t−1})
    torch.mul(drh, hp, out=dr)
    dr.mul_(r * (1 - r))
    dhp = torch.addcmul(gh * (1 - z), drh, r)
    return dhp.baddbmm_(d[..., :2 * H], Uzr)


def _lstm_backward_step(gh: Tensor, dc: Tensor, a: Tensor, d: Tensor, tc: Tensor, cp: Tensor, U: Tensor,
                        v: Tensor | None, mf_t: Tensor | None, H: int) -> tuple[Tensor, Tensor]:
    """The LSTM's gate gradients of one step into d; returns dL/dh_{t−1} and dL/dc_{t−1} (before padding)."""
    K, B = gh.shape[:2]
    ones = gh.new_ones(())
    i, f, g, o = (a[..., k * H:(k + 1) * H] for k in range(4))
    di, df, dg, do = (d[..., k * H:(k + 1) * H] for k in range(4))
    torch.mul(gh, tc, out=do)
    do.mul_(torch.addcmul(o, o, o, value=-1))                      # σ' = o − o²
    if mf_t is not None:
        do.mul_(mf_t)
    dct = torch.addcmul(dc, gh * o, torch.addcmul(ones, tc, tc, value=-1))
    if v is not None:
        dct.addcmul_(do, _bias_view(v, 2, H))
    a2 = a[..., :2 * H]
    torch.mul(torch.addcmul(a2, a2, a2, value=-1).view(K, B, 2, H), dct.unsqueeze(2),
              out=d[..., :2 * H].view(K, B, 2, H))                # dct ⊙ σ'(i), dct ⊙ σ'(f)
    di.mul_(g)
    df.mul_(cp)
    torch.mul(dct, i, out=dg)
    dg.mul_(torch.addcmul(ones, g, g, value=-1))
    if mf_t is not None:
        d[..., :3 * H].mul_(mf_t)
    dcp = dct * f
    if v is not None:
        dcp.addcmul_(di, _bias_view(v, 0, H)).addcmul_(df, _bias_view(v, 1, H))
    return torch.bmm(d, U), dcp


class GemmRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kind, reset_after, peep, x, h0, c0, W, U, b, v, bn, mask):
        K, T, B, I = x.shape
        H = h0.shape[-1]
        G = _GATES[kind]
        with torch.no_grad():
            # b + W x_t for every step: one GEMM, laid out time-major (T, K, B, G·H) so that a step is contiguous
            X = x.reshape(K, T * B, I)
            A = torch.baddbmm(b.unsqueeze(1), X, W.mT).view(K, T, B, G * H).transpose(0, 1).contiguous()
            if mask is not None:
                m = mask.transpose(0, 1).unsqueeze(-1)           # (T, K, B, 1) bool
                mf = m.to(x.dtype)
            Hs = x.new_empty(T + 1, K, B, H)
            Hs[0] = h0
            out = x.new_empty(T, K, B, H) if mask is not None else Hs[1:]
            h = Hs[0]
            Cs = TC = extra = None
            if kind == "lstm":
                Cs, TC = x.new_empty(T + 1, K, B, H), x.new_empty(T, K, B, H)
                Cs[0] = c0
                vif = v[:, :2].unsqueeze(1) if peep else None          # (K, 1, 2, H)
                vo = _bias_view(v, 2, H) if peep else None
            elif kind == "gru":
                Uzr, Uc = U[:, :2 * H], U[:, 2 * H:]
                extra = x.new_empty(T, K, B, H)     # paper: r ⊙ h_{t−1}; reset_after: U_c h_{t−1} (+ b_n)
                bnv = bn.unsqueeze(1) if bn is not None else None
            for t in range(T):
                a = A[t]
                if kind == "tanh":
                    a.baddbmm_(h, U.mT)
                    hn = a.tanh_()
                elif kind == "gru":
                    hn = _gru_forward_step(a, h, Uzr, Uc, extra[t], reset_after, bnv, H)
                else:
                    hn = _lstm_forward_step(a, h, Cs[t], U, vif, vo, Cs[t + 1], TC[t], Hs[t + 1],
                                            m[t] if mask is not None else None)
                if mask is not None:
                    torch.where(m[t], hn, h, out=Hs[t + 1])
                    torch.mul(hn, mf[t], out=out[t])
                elif hn is not None:
                    Hs[t + 1] = hn
                h = Hs[t + 1]
            outs = [out.transpose(0, 1), Hs[T].clone()]
            if kind == "lstm":
                outs.append(Cs[T].clone())
        if torch.is_grad_enabled() or any(ctx.needs_input_grad):
            ctx.kind, ctx.reset_after, ctx.peep = kind, reset_after, peep
            ctx.save_for_backward(x, W, U, v, bn, mask, A, Hs, Cs, TC, extra)
        return tuple(outs)

    @staticmethod
    def backward(ctx, gout, ghT, *gc):
        x, W, U, v, bn, mask, A, Hs, Cs, TC, extra = ctx.saved_tensors
        kind, reset_after, peep = ctx.kind, ctx.reset_after, ctx.peep
        K, T, B, I = x.shape
        H = Hs.shape[-1]
        dO = gout.transpose(0, 1) if gout is not None else None      # (T, K, B, H)
        dh = ghT.clone() if ghT is not None else Hs.new_zeros(K, B, H)
        if kind == "lstm":
            gcT = gc[0] if gc else None
            dc = gcT.clone() if gcT is not None else Hs.new_zeros(K, B, H)
        if mask is not None:
            m = mask.transpose(0, 1).unsqueeze(-1)
            mf = m.to(x.dtype)
        dA = torch.empty_like(A)          # the gate gradients of every step (U side for the GRU reset_after)
        dAc = torch.empty(T, K, B, H, dtype=A.dtype) if kind == "gru" and reset_after else None  # W-side h̃
        for t in range(T - 1, -1, -1):
            gh = dh
            if dO is not None:
                gh = gh + (dO[t] * mf[t] if mask is not None else dO[t])
            mf_t = mf[t] if mask is not None else None
            d = dA[t]
            if kind == "tanh":
                hn = Hs[t + 1]
                torch.mul(gh, 1 - hn * hn, out=d)
                if mask is not None:
                    d.mul_(mf_t)
                dhp = torch.bmm(d, U)
            elif kind == "gru":
                wc = dAc[t] if reset_after else d[..., 2 * H:]
                dhp = _gru_backward_step(gh, A[t], d, wc, Hs[t], extra[t], U, reset_after, mf_t, H)
            else:
                dhp, dcp = _lstm_backward_step(gh, dc, A[t], d, TC[t], Cs[t], U, v if peep else None, mf_t, H)
                dc = torch.where(m[t], dcp, dc) if mask is not None else dcp
            dh = torch.where(m[t], dhp, gh) if mask is not None else dhp
        grads = _weight_grads(ctx.needs_input_grad, kind, reset_after, peep, x, W, bn, dA, dAc, Hs, Cs, extra)
        dh0 = dh if ctx.needs_input_grad[4] else None
        dc0 = dc if kind == "lstm" and ctx.needs_input_grad[5] else None
        dx, dW, dU, db, dv, dbn = grads
        return None, None, None, dx, dh0, dc0, dW, dU, db, dv, dbn, None


def _weight_grads(need, kind, reset_after, peep, x, W, bn, dA, dAc, Hs, Cs, extra):
    """dx, dW, dU, db, dv, dbn from the gate gradients of every step: a few large GEMMs over all T·B rows."""
    K, T, B, I = x.shape
    H = Hs.shape[-1]
    rows = lambda t_: t_.transpose(0, 1).reshape(K, T * B, t_.shape[-1])
    dAk = rows(dA)
    Hp = rows(Hs[:-1])
    if kind == "gru" and reset_after:
        dAw = torch.cat([dAk[..., :2 * H], rows(dAc)], -1)      # the W side: the candidate's own gradient
    else:
        dAw = dAk
    dx = dW = dU = db = dv = dbn = None
    if need[3]:
        dx = torch.bmm(dAw, W).view(K, T, B, I)
    if need[6]:
        dW = torch.bmm(dAw.mT, x.reshape(K, T * B, I))
    if need[7]:
        if kind == "gru" and not reset_after:
            dU = torch.cat([torch.bmm(dAk[..., :2 * H].mT, Hp), torch.bmm(dAk[..., 2 * H:].mT, rows(extra))], 1)
        else:
            dU = torch.bmm(dAk.mT, Hp)
    if need[8]:
        db = dAw.sum(1)
    if kind == "lstm" and peep and need[9]:
        dv = torch.stack([(dA[..., :H] * Cs[:-1]).sum((0, 2)), (dA[..., H:2 * H] * Cs[:-1]).sum((0, 2)),
                          (dA[..., 3 * H:] * Cs[1:]).sum((0, 2))], 1)
    if bn is not None and need[10]:
        dbn = dAk[..., 2 * H:].sum(1)
    return dx, dW, dU, db, dv, dbn
