// The LSTM's kernel (nn/lstm.py, nn/lstm_variants.py): gate blocks (i, f, c̃, o), peepholes v_i, v_f on
// c_{t-1} and v_o on c_t (or none), a carried cell state; act holds i, f, c̃, o and aux tanh(c_t).
// Its ablations (LVar) change only the elementwise pass, and run in a separate row loop whose gate
// layout is run-time data, so that the paper's LSTM keeps its specialised loops. The full gate
// recurrence (LV_GREC, lstm-fgr) adds a carried gate state [i|f|o] (3H per row) and one GEMM per step
// on it, R [i;f;o]_{t-1}, forward and backward.
#include "unit.h"

namespace gr __attribute__((visibility("hidden"))) {
namespace {

// LSTM ablations (Greff et al. 2015; nn/lstm_variants.py; the bits = kernels.VARIANT_BITS["lstm"]) as
// changes of the elementwise pass: a removed gate is the constant 1 (no weights, no block), the coupled
// input gate is 1 − f, an un-activated candidate / output is the identity. The present gates keep the
// order (i, f, c, o) in the weight blocks and (i, f, o) in the peephole rows.
// Full gate recurrence (LV_GREC, lstm-fgr): the pre-activations of i, f, o gain R [i;f;o]_{t-1}; it needs
// all three gates (the Python side rejects it with a removed or coupled gate).
enum LVar : int64_t { LV_NO_I = 1, LV_NO_F = 2, LV_NO_O = 4, LV_NO_IACT = 8, LV_NO_OACT = 16, LV_CIFG = 32,
                      LV_GREC = 64 };
struct LLayout {
    int64_t oi, of, oc, oo;   // element offsets of the gate blocks (-1: absent)
    int64_t pi, pf, po;       // element offsets of the peephole rows (-1: none)
    int G, P;                 // blocks, peephole rows
    bool iact, oact, cifg, grec;
};
LLayout lstm_layout(int64_t H, int64_t lvar, bool peep) {
    LLayout L{};
    const bool has_i = !(lvar & (LV_NO_I | LV_CIFG)), has_f = !(lvar & LV_NO_F), has_o = !(lvar & LV_NO_O);
    int g = 0, p = 0;
    L.oi = has_i ? H * g++ : -1;
    L.of = has_f ? H * g++ : -1;
    L.oc = H * g++;
    L.oo = has_o ? H * g++ : -1;
    L.pi = peep && has_i ? H * p++ : -1;
    L.pf = peep && has_f ? H * p++ : -1;
    L.po = peep && has_o ? H * p++ : -1;
    L.G = g;
    L.P = p;
    L.iact = !(lvar & LV_NO_IACT);
    L.oact = !(lvar & LV_NO_OACT);
    L.cifg = (lvar & LV_CIFG) != 0;
    L.grec = (lvar & LV_GREC) != 0 && has_i && has_f && has_o;
    return L;
}

#define R __restrict
// forward, LSTM (gates i,f,c,o; peepholes v_i, v_f on c_{t-1}, v_o on c_t)
template <typename T, bool PEEP>
void f_lstm(int64_t H, const T* R x, const T* R g, const T* R v, const T* R c, T* R cn, T* R ac,
                   T* R tc, T* R ho) {
    for (int64_t j = 0; j < H; ++j) {
        T pi = x[j] + g[j], pf = x[H + j] + g[H + j], po = x[3 * H + j] + g[3 * H + j];
        if (PEEP) { pi += v[j] * c[j]; pf += v[H + j] * c[j]; }
        T ig = sigm(pi), fg = sigm(pf);
        T cg = tanh_(x[2 * H + j] + g[2 * H + j]);
        T cc = fg * c[j] + ig * cg;
        if (PEEP) po += v[2 * H + j] * cc;
        T og = sigm(po);
        T tt = tanh_(cc);
        ac[j] = ig; ac[H + j] = fg; ac[2 * H + j] = cg; ac[3 * H + j] = og;
        tc[j] = tt; cn[j] = cc; ho[j] = og * tt;
    }
}

// backward rows: dh = carried dL/dh_t (state), go = dL/dout_t, dc = carried dL/dc_t (in place: becomes
// dL/dc_{t-1}); write d (gate grads), dd (the part of dL/dh_{t-1} that does not go through U), and add
// the peephole gradients of the row to dv
template <typename T, bool PEEP>
void b_lstm(int64_t H, const T* R dh, const T* R go, const T* R ac, const T* R tc, const T* R cp,
                   const T* R cn, const T* R v, T* R dc, T* R dv, T* R d, T* R dd) {
    for (int64_t j = 0; j < H; ++j) {
        T g = dh[j] + go[j];
        T ig = ac[j], fg = ac[H + j], cg = ac[2 * H + j], og = ac[3 * H + j], tt = tc[j];
        T dgo = g * tt * og * (T(1) - og);
        T dct = dc[j] + g * og * (T(1) - tt * tt);
        if (PEEP) dct += dgo * v[2 * H + j];
        T dgi = dct * cg * ig * (T(1) - ig);
        T dgf = dct * cp[j] * fg * (T(1) - fg);
        T dgc = dct * ig * (T(1) - cg * cg);
        T dcp = dct * fg;
        if (PEEP) {
            dcp += dgi * v[j] + dgf * v[H + j];
            dv[j] += dgi * cp[j]; dv[H + j] += dgf * cp[j]; dv[2 * H + j] += dgo * cn[j];
        }
        dc[j] = dcp;
        d[j] = dgi; d[H + j] = dgf; d[2 * H + j] = dgc; d[3 * H + j] = dgo;
        dd[j] = T(0);
    }
}

// forward / backward of an LSTM ablation (lvar != 0), gates at the offsets of L; constants for the
// removed gates. Kept apart from f_lstm / b_lstm so the paper's LSTM keeps its specialised loops.
template <typename T>
void f_lstm_var(int64_t H, const LLayout& L, const T* R x, const T* R g, const T* R v, const T* R c,
                       T* R cn, T* R ac, T* R tc, T* R ho) {
    for (int64_t j = 0; j < H; ++j) {
        T fg = T(1), ig = T(1), og = T(1);
        if (L.of >= 0) fg = sigm(x[L.of + j] + g[L.of + j] + (L.pf >= 0 ? v[L.pf + j] * c[j] : T(0)));
        if (L.oi >= 0) ig = sigm(x[L.oi + j] + g[L.oi + j] + (L.pi >= 0 ? v[L.pi + j] * c[j] : T(0)));
        else if (L.cifg) ig = T(1) - fg;
        const T pc = x[L.oc + j] + g[L.oc + j];
        const T cg = L.iact ? tanh_(pc) : pc;
        const T cc = fg * c[j] + ig * cg;
        if (L.oo >= 0) og = sigm(x[L.oo + j] + g[L.oo + j] + (L.po >= 0 ? v[L.po + j] * cc : T(0)));
        const T tt = L.oact ? tanh_(cc) : cc;
        if (L.oi >= 0) ac[L.oi + j] = ig;
        if (L.of >= 0) ac[L.of + j] = fg;
        ac[L.oc + j] = cg;
        if (L.oo >= 0) ac[L.oo + j] = og;
        tc[j] = tt; cn[j] = cc; ho[j] = og * tt;
    }
}

// GREC: dg = the carried dL/d[i;f;o]_t (the gates are also the next step's gate state), added to the
// gradients of the gate activations before their sigmoid derivatives.
template <typename T, bool GREC>
void b_lstm_var(int64_t H, const LLayout& L, const T* R dh, const T* R go, const T* R ac, const T* R tc,
                       const T* R cp, const T* R cn, const T* R v, T* R dc, T* R dv, T* R d, T* R dd,
                       const T* R dg) {
    for (int64_t j = 0; j < H; ++j) {
        const T g = dh[j] + go[j];
        const T fg = L.of >= 0 ? ac[L.of + j] : T(1);
        const T ig = L.oi >= 0 ? ac[L.oi + j] : (L.cifg ? T(1) - fg : T(1));
        const T og = L.oo >= 0 ? ac[L.oo + j] : T(1);
        const T cg = ac[L.oc + j], tt = tc[j];
        const T dgo = L.oo >= 0 ? (g * tt + (GREC ? dg[2 * H + j] : T(0))) * og * (T(1) - og) : T(0);
        T dct = dc[j] + g * og * (L.oact ? T(1) - tt * tt : T(1));
        if (L.po >= 0) dct += dgo * v[L.po + j];
        const T di = dct * cg + (GREC ? dg[j] : T(0));           // dL/di_t
        const T dgi = L.oi >= 0 ? di * ig * (T(1) - ig) : T(0);
        const T df = dct * cp[j] - (L.cifg ? di : T(0))          // i = 1 − f: dL/df gains −dL/di
                     + (GREC ? dg[H + j] : T(0));
        const T dgf = L.of >= 0 ? df * fg * (T(1) - fg) : T(0);
        const T dgc = dct * ig * (L.iact ? T(1) - cg * cg : T(1));
        T dcp = dct * fg;
        if (L.pi >= 0) { dcp += dgi * v[L.pi + j]; dv[L.pi + j] += dgi * cp[j]; }
        if (L.pf >= 0) { dcp += dgf * v[L.pf + j]; dv[L.pf + j] += dgf * cp[j]; }
        if (L.po >= 0) dv[L.po + j] += dgo * cn[j];
        dc[j] = dcp;
        if (L.oi >= 0) d[L.oi + j] = dgi;
        if (L.of >= 0) d[L.of + j] = dgf;
        d[L.oc + j] = dgc;
        if (L.oo >= 0) d[L.oo + j] = dgo;
        dd[j] = T(0);
    }
}

// the gate state [i | f | o] (3H) of one row from its activations (gate recurrence)
template <typename T>
void put_gates(int64_t H, const LLayout& L, const T* R ac, T* R gs) {
    for (int64_t j = 0; j < H; ++j) {
        gs[j] = ac[L.oi + j];
        gs[H + j] = ac[L.of + j];
        gs[2 * H + j] = ac[L.oo + j];
    }
}

#undef R

template <typename T>
struct Lstm final : Kernel<T> {
    LLayout L;
    bool peep;
    int64_t lvar;

    Lstm(int64_t H, bool peep_, int64_t lvar_) : L(lstm_layout(H, lvar_, peep_)), peep(peep_), lvar(lvar_) {
        this->G = L.G;
        this->cell = true;
        this->gs = L.grec ? 3 * H : 0;
        this->n1 = padn(L.G * H);
        this->ku = L.G * H;
        this->scratch = L.grec ? padn(3 * H) : 0;   // backward: the previous gate state, padded (dR)
        this->plain_dU = !L.grec;                   // accumulate() adds dR too
    }

    // + R^T with receiving block q (i, f, o) at that gate's columns of g (gate recurrence)
    void prepare_forward(FwdArgs& a, FwdOps<T>& o) const override {
        Kernel<T>::prepare_forward(a, o);
        if (!L.grec) return;
        const int64_t H = a.H;
        const T* Rm = static_cast<const T*>(a.R);
        o.RT.assign(3 * H * a.ldu, T(0));
        const int64_t off[3] = {L.oi, L.of, L.oo};
        for (int q = 0; q < 3; ++q) put_transposed<T>(o.RT.data(), a.ldu, off[q], Rm + q * H * 3 * H, H, 3 * H);
        a.RT = o.RT.data();
    }

    void forward_step(const FwdStep<T>& s) const override {
        const int64_t H = s.H, H3 = 3 * H, GH = this->G * H, ldx = s.a.ldx, ldu = s.a.ldu, lo = s.lo, hi = s.hi;
        const T* v = static_cast<const T*>(s.a.v);
        if (L.grec)   // + R [i;f;o]_{t-1} into the i, f, o columns
            gemm<T>(hi - lo, this->n1, H3, s.gp + lo * H3, H3, 1, static_cast<const T*>(s.a.RT), ldu, s.g + lo * ldu,
                    ldu, s.g + lo * ldu, ldu);
        for (int64_t i = lo; i < hi; ++i) {
            const bool m = s.valid(i);
            const T* xr = s.gx + i * ldx;
            const T* gg = s.g + i * ldu;
            const T* c = s.cp + i * H;
            T* cc = s.cn + i * H;
            T* ho = s.hn + i * H;
            if (lvar) f_lstm_var<T>(H, L, xr, gg, v, c, cc, s.at + i * GH, s.ut + i * H, ho);
            else if (peep) f_lstm<T, true>(H, xr, gg, v, c, cc, s.at + i * GH, s.ut + i * H, ho);
            else f_lstm<T, false>(H, xr, gg, v, c, cc, s.at + i * GH, s.ut + i * H, ho);
            if (!m) std::memcpy(cc, c, H * sizeof(T));
            if (L.grec) {
                if (m) put_gates<T>(H, L, s.at + i * GH, s.gn + i * H3);
                else std::memcpy(s.gn + i * H3, s.gp + i * H3, H3 * sizeof(T));
            }
            s.finish(i, m);
        }
    }

    // per-row peephole sums; gate recurrence: R with its receiving blocks at the rows of d's gate blocks
    // (Rp, ldg = pad(3H)) and the partial sums of dR
    void prepare_backward(BwdArgs& a, BwdOps<T>& o, int64_t P) const override {
        const int64_t H = a.H, GH = this->G * H;
        if (a.dv) {
            o.dvr.assign(a.B * lstm_layout(H, lvar, true).P * H, T(0));
            a.dvr = o.dvr.data();
        }
        if (!L.grec) return;
        const int64_t ldg = padn(3 * H), off[3] = {L.oi, L.of, L.oo};
        const T* Rm = static_cast<const T*>(a.R);
        o.Rp.assign(GH * ldg, T(0));
        for (int q = 0; q < 3; ++q)
            for (int64_t j = 0; j < H; ++j)
                std::memcpy(o.Rp.data() + (off[q] + j) * ldg, Rm + (q * H + j) * 3 * H, 3 * H * sizeof(T));
        a.Rp = o.Rp.data();
        a.ldg = ldg;
        if (a.dG == nullptr) {
            o.dRp.assign(P * GH * ldg, T(0));
            a.dRp = o.dRp.data();
        }
    }

    void backward_step(const BwdStep<T>& s) const override {
        const int64_t H = s.H, H3 = 3 * H, GH = s.GH, B = s.a.B, ldh = s.ldh, ldg = s.ldg, PH = L.P * H;
        const T* v = static_cast<const T*>(s.a.v);
        const T* act = static_cast<const T*>(s.a.act);
        const T* aux = static_cast<const T*>(s.a.aux);
        const T* Cs = static_cast<const T*>(s.a.Cs);
        T* dv = static_cast<T*>(s.a.dvr);
        for (int64_t i = s.lo; i < s.hi; ++i) {
            if (!s.valid(i)) continue;
            const int64_t b = s.r0 + i, tb = s.tb(i);
            const T* dhr = s.dh + i * ldh;
            const T* go = s.go(i);
            T* di = s.d + i * GH;
            T* dd = s.dhd + i * ldh;
            if (L.grec) {
                b_lstm_var<T, true>(H, L, dhr, go, act + tb * GH, aux + tb * H, Cs + tb * H, Cs + (tb + B) * H, v,
                                    s.dc + i * H, dv ? dv + b * PH : nullptr, di, dd, s.dga + i * ldg);
                std::memset(s.dgad + i * ldg, 0, H3 * sizeof(T));
            } else if (lvar)
                b_lstm_var<T, false>(H, L, dhr, go, act + tb * GH, aux + tb * H, Cs + tb * H, Cs + (tb + B) * H, v,
                                     s.dc + i * H, dv ? dv + b * PH : nullptr, di, dd, nullptr);
            else if (peep)
                b_lstm<T, true>(H, dhr, go, act + tb * GH, aux + tb * H, Cs + tb * H, Cs + (tb + B) * H, v,
                                s.dc + i * H, dv + b * PH, di, dd);
            else
                b_lstm<T, false>(H, dhr, go, act + tb * GH, aux + tb * H, Cs + tb * H, Cs + (tb + B) * H, v,
                                 s.dc + i * H, nullptr, di, dd);
        }
        // dL/d[i;f;o]_{t-1} = direct part + d Rp  (gate recurrence)
        if (L.grec)
            gemm<T>(s.hi - s.lo, ldg, GH, s.d + s.lo * GH, GH, 1, static_cast<const T*>(s.a.Rp), ldg,
                    s.dga + s.lo * ldg, ldg, s.dgad + s.lo * ldg, ldg);
    }

    // + dR += dᵀ [i;f;o]_{t-1} (rows of d's layout; the c̃ rows are dropped by the reduction)
    void accumulate(const BwdStep<T>& s) const override {
        Kernel<T>::accumulate(s);
        if (!L.grec) return;
        const int64_t H3 = 3 * s.H, GH = s.GH, ldg = s.ldg, lo = s.lo, hi = s.hi;
        const T* Gs = static_cast<const T*>(s.a.Gs);
        T* gpad = s.scratch;
        T* dR = static_cast<T*>(s.a.dRp) + s.p * GH * ldg;
        for (int64_t i = lo; i < hi; ++i) std::memcpy(gpad + i * ldg, Gs + s.tb(i) * H3, H3 * sizeof(T));
        gemm<T>(GH, ldg, hi - lo, s.d + lo * GH, 1, GH, gpad + lo * ldg, ldg, dR, ldg, dR, ldg);
    }

    // dR from the gate rows of the partial sums; the peephole gradient from the per-row sums (rows in order)
    void reduce_backward(const BwdArgs& x, const BwdOps<T>& o, int64_t P) const override {
        const int64_t H = x.H, B = x.B, GH = this->G * H;
        if (x.dG == nullptr && L.grec) {
            const int64_t ldg = x.ldg, H3 = 3 * H, off[3] = {L.oi, L.of, L.oo};
            T* dR = static_cast<T*>(x.dR);
            for (int q = 0; q < 3; ++q)
                for (int64_t j = 0; j < H; ++j)
                    for (int64_t c = 0; c < H3; ++c) {
                        T s = o.dRp[(off[q] + j) * ldg + c];
                        for (int64_t p = 1; p < P; ++p) s += o.dRp[(p * GH + off[q] + j) * ldg + c];
                        dR[(q * H + j) * H3 + c] = s;
                    }
        }
        if (x.dv) {
            const int64_t PH = lstm_layout(H, lvar, true).P * H;
            sum_slots<T>(1, PH, o.dvr.data(), PH, PH, B, static_cast<T*>(x.dv), PH);
        }
    }
};

}  // namespace

template <typename T>
std::unique_ptr<Kernel<T>> lstm_kernel(int64_t H, bool peep, int64_t lvar) {
    return std::make_unique<Lstm<T>>(H, peep, lvar);
}
template std::unique_ptr<Kernel<float>> lstm_kernel<float>(int64_t, bool, int64_t);
template std::unique_ptr<Kernel<double>> lstm_kernel<double>(int64_t, bool, int64_t);

}  // namespace gr
