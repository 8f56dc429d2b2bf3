// The GRU's kernel (nn/gru.py, nn/gru_variants.py), in its three step structures:
//   paper form (reset_after=False; Chung et al. 2014): two stages per step — the gates z, r, then the
//     candidate h̃ = tanh(W_c x + U_c (r ⊙ h_{t-1}) + b_c), a third GEMM per step;
//   Cho form (reset_after=True): h̃ = tanh(W_c x + r ⊙ (U_c h_{t-1}) + b_c), one GEMM over all blocks;
//     its W-side and U-side gradients differ in the candidate block (sep_x);
//   ablations (GVar): no reset gate (r_t = 1; blocks z, h̃; one GEMM, as the Cho form), and the paper
//     form's two stages with ONE gate block s before the candidate: no update gate (s = r,
//     h_t = h̃_t), or the minimal gated unit (s = f as both reset and update gate).
// Gate blocks (z, r, h̃) or (s, h̃); act holds their activations, aux U_c h_{t-1} (Cho form) or
// r ⊙ h_{t-1} (paper form).
#include "unit.h"

namespace gr __attribute__((visibility("hidden"))) {

// = kernels.VARIANT_BITS["gru"]
enum GVar : int64_t { GV_NO_R = 1, GV_NO_Z = 2, GV_MIN = 4 };

namespace {

#define R __restrict
// forward, GRU Cho form: g = U h_prev (all three blocks)
template <typename T>
void f_gru_after(int64_t H, const T* R x, const T* R g, const T* R h, T* R ac, T* R uc, T* R ho) {
    for (int64_t j = 0; j < H; ++j) {
        T z = sigm(x[j] + g[j]);
        T r = sigm(x[H + j] + g[H + j]);
        T u = g[2 * H + j];
        T c = tanh_(x[2 * H + j] + r * u);
        ac[j] = z; ac[H + j] = r; ac[2 * H + j] = c; uc[j] = u;
        ho[j] = (T(1) - z) * h[j] + z * c;
    }
}

// forward, GRU without reset gate: g = U h_prev (both blocks)
template <typename T>
void f_gru_nrg(int64_t H, const T* R x, const T* R g, const T* R h, T* R ac, T* R ho) {
    for (int64_t j = 0; j < H; ++j) {
        T z = sigm(x[j] + g[j]);
        T c = tanh_(x[H + j] + g[H + j]);
        ac[j] = z; ac[H + j] = c;
        ho[j] = (T(1) - z) * h[j] + z * c;
    }
}

// forward, GRU paper form, stage 1: z, r and r ⊙ h_prev
template <typename T>
void f_gru_1(int64_t H, const T* R x, const T* R g, const T* R h, T* R ac, T* R rh) {
    for (int64_t j = 0; j < H; ++j) {
        T z = sigm(x[j] + g[j]);
        T r = sigm(x[H + j] + g[H + j]);
        ac[j] = z; ac[H + j] = r; rh[j] = r * h[j];
    }
}

// forward, GRU paper form, stage 2: candidate from g2 = U_c (r ⊙ h_prev), new state
template <typename T>
void f_gru_2(int64_t H, const T* R x, const T* R g2, const T* R h, T* R ac, T* R ho) {
    for (int64_t j = 0; j < H; ++j) {
        T c = tanh_(x[2 * H + j] + g2[j]);
        T z = ac[j];
        ac[2 * H + j] = c;
        ho[j] = (T(1) - z) * h[j] + z * c;
    }
}

// forward, one gate block s (no update gate: s = r; minimal: s = f), stage 1: s and s ⊙ h_prev
template <typename T>
void f_gru1_1(int64_t H, const T* R x, const T* R g, const T* R h, T* R ac, T* R sh) {
    for (int64_t j = 0; j < H; ++j) {
        T s = sigm(x[j] + g[j]);
        ac[j] = s; sh[j] = s * h[j];
    }
}

// stage 2: candidate (block 1) from g2 = U_c (s ⊙ h_prev); new state h̃ (NOZ) or (1 − s) h + s h̃
template <typename T, bool NOZ>
void f_gru1_2(int64_t H, const T* R x, const T* R g2, const T* R h, T* R ac, T* R ho) {
    for (int64_t j = 0; j < H; ++j) {
        T c = tanh_(x[H + j] + g2[j]);
        ac[H + j] = c;
        if (NOZ) ho[j] = c;
        else { T s = ac[j]; ho[j] = (T(1) - s) * h[j] + s * c; }
    }
}

// backward rows: dh = carried dL/dh_t (state), go = dL/dout_t; write d (gate grads) and dd (the part
// of dL/dh_{t-1} that does not go through U); the Cho form also dgx (W side)
template <typename T>
void b_gru_after(int64_t H, const T* R dh, const T* R go, const T* R ac, const T* R uc, const T* R hp,
                        T* R d, T* R dgx, T* R dd) {
    for (int64_t j = 0; j < H; ++j) {
        T g = dh[j] + go[j];
        T z = ac[j], r = ac[H + j], c = ac[2 * H + j];
        T dac = g * z * (T(1) - c * c);
        T dz = g * (c - hp[j]) * z * (T(1) - z);
        T dr = dac * uc[j] * r * (T(1) - r);
        d[j] = dz; d[H + j] = dr; d[2 * H + j] = dac * r;        // w.r.t. the U h_{t-1} terms
        dgx[j] = dz; dgx[H + j] = dr; dgx[2 * H + j] = dac;      // w.r.t. the W x_t + b terms
        dd[j] = g * (T(1) - z);
    }
}

template <typename T>
void b_gru_nrg(int64_t H, const T* R dh, const T* R go, const T* R ac, const T* R hp, T* R d, T* R dd) {
    for (int64_t j = 0; j < H; ++j) {
        T g = dh[j] + go[j];
        T z = ac[j], c = ac[H + j];
        d[j] = g * (c - hp[j]) * z * (T(1) - z);
        d[H + j] = g * z * (T(1) - c * c);
        dd[j] = g * (T(1) - z);
    }
}

// GRU paper form, stage 1: update gate and candidate (the reset gate needs U_c^T d_cand: stage 2)
template <typename T>
void b_gru_1(int64_t H, const T* R dh, const T* R go, const T* R ac, const T* R hp, T* R d, T* R dd) {
    for (int64_t j = 0; j < H; ++j) {
        T g = dh[j] + go[j];
        T z = ac[j], c = ac[2 * H + j];
        d[j] = g * (c - hp[j]) * z * (T(1) - z);
        d[2 * H + j] = g * z * (T(1) - c * c);
        dd[j] = g * (T(1) - z);
    }
}

// stage 2: q = d(r ⊙ h_prev) = U_c^T d_cand
template <typename T>
void b_gru_2(int64_t H, const T* R q, const T* R ac, const T* R hp, T* R d, T* R dd) {
    for (int64_t j = 0; j < H; ++j) {
        T r = ac[H + j];
        d[H + j] = q[j] * hp[j] * r * (T(1) - r);
        dd[j] += q[j] * r;
    }
}

// one gate block s, stage 1: the candidate's gradient, and the update role of s (minimal unit; no
// update gate: none, h_t = h̃_t). d[s] is completed by stage 2 (its reset role), so it is set here.
template <typename T, bool NOZ>
void b_gru1_1(int64_t H, const T* R dh, const T* R go, const T* R ac, const T* R hp, T* R d, T* R dd) {
    for (int64_t j = 0; j < H; ++j) {
        T g = dh[j] + go[j];
        T c = ac[H + j];
        if (NOZ) {
            d[j] = T(0);
            d[H + j] = g * (T(1) - c * c);
            dd[j] = T(0);
        } else {
            T s = ac[j];
            d[j] = g * (c - hp[j]) * s * (T(1) - s);
            d[H + j] = g * s * (T(1) - c * c);
            dd[j] = g * (T(1) - s);
        }
    }
}

// stage 2: q = d(s ⊙ h_prev) = U_c^T d_cand: the reset role of s, and the path through s ⊙ h_prev
template <typename T>
void b_gru1_2(int64_t H, const T* R q, const T* R ac, const T* R hp, T* R d, T* R dd) {
    for (int64_t j = 0; j < H; ++j) {
        T s = ac[j];
        d[j] += q[j] * hp[j] * s * (T(1) - s);
        dd[j] += q[j] * s;
    }
}

#undef R

template <typename T>
struct Gru final : Kernel<T> {
    bool reset_after, nrg, no_z, two_stage, one_gate;
    int64_t NG;   // two-stage form: the gate rows before the candidate (2H, or H with one gate block)

    Gru(int64_t H, bool reset_after_, int64_t lvar) : reset_after(reset_after_) {
        nrg = (lvar & GV_NO_R) != 0;
        no_z = (lvar & GV_NO_Z) != 0;
        two_stage = !reset_after && !nrg;
        NG = ((lvar & (GV_NO_Z | GV_MIN)) ? 1 : 2) * H;
        one_gate = two_stage && NG == H;
        this->G = (lvar & (GV_NO_R | GV_NO_Z | GV_MIN)) ? 2 : 3;
        this->sep_x = reset_after;
        const int64_t GH = this->G * H;
        this->n1 = two_stage ? padn(NG) : padn(GH);   // two-stage: U_c (r ⊙ h) is the step's own GEMM
        this->ku = two_stage ? NG : GH;               //   (and d_cand's path to dh goes through r ⊙ h)
        this->scratch = two_stage ? padn(H) : 0;      // backward: d(r ⊙ h_{t-1}) per row
        this->plain_dU = !two_stage;                  // two-stage: U_c's rows take r ⊙ h (accumulate())
    }

    // two-stage form: [U_z;U_r]^T in [0, n1), U_c^T from off2 = n1, for the separate U_c (r ⊙ h) GEMM
    void prepare_forward(FwdArgs& a, FwdOps<T>& o) const override {
        if (!two_stage) return Kernel<T>::prepare_forward(a, o);
        const int64_t H = a.H;
        const T* U = static_cast<const T*>(a.U);
        a.ldu = this->n1 + padn(H);
        a.off2 = this->n1;
        o.UT.assign(H * a.ldu, T(0));
        put_transposed<T>(o.UT.data(), a.ldu, 0, U, NG, H);
        put_transposed<T>(o.UT.data(), a.ldu, this->n1, U + NG * H, H, H);
        a.UT = o.UT.data();
    }

    void forward_step(const FwdStep<T>& s) const override {
        const int64_t H = s.H, GH = this->G * H, ldx = s.a.ldx, ldu = s.a.ldu, off2 = s.a.off2, lo = s.lo,
                      hi = s.hi;
        for (int64_t i = lo; i < hi; ++i) {
            const T* xr = s.gx + i * ldx;
            const T* gg = s.g + i * ldu;
            const T* h = s.hp + i * H;
            T* ho = s.hn + i * H;
            if (nrg) f_gru_nrg<T>(H, xr, gg, h, s.at + i * GH, ho);
            else if (reset_after) f_gru_after<T>(H, xr, gg, h, s.at + i * GH, s.ut + i * H, ho);
            else if (one_gate) f_gru1_1<T>(H, xr, gg, h, s.at + i * GH, s.ut + i * H);
            else f_gru_1<T>(H, xr, gg, h, s.at + i * GH, s.ut + i * H);
            if (!two_stage) s.finish(i, s.valid(i));   // two-stage: state and output in stage 2
        }
        if (!two_stage) return;
        // U_c (r ⊙ h)  (one gate block: U_c (s ⊙ h))
        // (packed: U_c^T's panels start at panel off2 / NB, each H rows)
        if (s.UTp) gemm_packed<T>(hi - lo, padn(H), H, s.ut + lo * H, H, 1, s.UTp + off2 * H, H,
                                  s.g + lo * ldu + off2, ldu, nullptr, 0);
        else gemm<T>(hi - lo, padn(H), H, s.ut + lo * H, H, 1, static_cast<const T*>(s.a.UT) + off2, ldu,
                     s.g + lo * ldu + off2, ldu, nullptr, 0);
        for (int64_t i = lo; i < hi; ++i) {
            const T* h = s.hp + i * H;
            T* ho = s.hn + i * H;
            if (!one_gate) f_gru_2<T>(H, s.gx + i * ldx, s.g + i * ldu + off2, h, s.at + i * GH, ho);
            else if (no_z) f_gru1_2<T, true>(H, s.gx + i * ldx, s.g + i * ldu + off2, h, s.at + i * GH, ho);
            else f_gru1_2<T, false>(H, s.gx + i * ldx, s.g + i * ldu + off2, h, s.at + i * GH, ho);
            s.finish(i, s.valid(i));
        }
    }

    void backward_step(const BwdStep<T>& s) const override {
        const int64_t H = s.H, GH = s.GH, ldh = s.ldh, lo = s.lo, hi = s.hi;
        const T* Hs = static_cast<const T*>(s.a.Hs);
        const T* act = static_cast<const T*>(s.a.act);
        const T* aux = static_cast<const T*>(s.a.aux);
        for (int64_t i = lo; i < hi; ++i) {
            if (!s.valid(i)) continue;
            const int64_t tb = s.tb(i);
            const T* dhr = s.dh + i * ldh;
            const T* go = s.go(i);
            const T* hp = Hs + tb * H;
            T* di = s.d + i * GH;
            T* dd = s.dhd + i * ldh;
            if (nrg) b_gru_nrg<T>(H, dhr, go, act + tb * GH, hp, di, dd);
            else if (reset_after) b_gru_after<T>(H, dhr, go, act + tb * GH, aux + tb * H, hp, di, s.dgx + i * GH, dd);
            else if (!one_gate) b_gru_1<T>(H, dhr, go, act + tb * GH, hp, di, dd);
            else if (no_z) b_gru1_1<T, true>(H, dhr, go, act + tb * GH, hp, di, dd);
            else b_gru1_1<T, false>(H, dhr, go, act + tb * GH, hp, di, dd);
        }
        if (!two_stage) return;
        // d(r ⊙ h_{t-1}) = d_cand U_c, then the reset gate's gradient and the direct path
        T* drh = s.scratch;
        // (packed: U_c is rows NG.. of every panel of U, panels GH rows apart)
        if (s.Upp) gemm_packed<T>(hi - lo, ldh, H, s.d + lo * GH + NG, GH, 1, s.Upp + NG * NB, GH,
                                  drh + lo * ldh, ldh, nullptr, 0);
        else gemm<T>(hi - lo, ldh, H, s.d + lo * GH + NG, GH, 1, static_cast<const T*>(s.a.Up) + NG * ldh, ldh,
                     drh + lo * ldh, ldh, nullptr, 0);
        for (int64_t i = lo; i < hi; ++i) {
            if (!s.valid(i)) continue;
            const int64_t tb = s.tb(i);
            if (one_gate) b_gru1_2<T>(H, drh + i * ldh, act + tb * GH, Hs + tb * H, s.d + i * GH, s.dhd + i * ldh);
            else b_gru_2<T>(H, drh + i * ldh, act + tb * GH, Hs + tb * H, s.d + i * GH, s.dhd + i * ldh);
        }
    }

    // two-stage form: [dU_z;dU_r] += dᵀ h_{t-1}, dU_c += d_candᵀ (r ⊙ h_{t-1})
    void accumulate(const BwdStep<T>& s) const override {
        if (!two_stage) return Kernel<T>::accumulate(s);
        const int64_t H = s.H, GH = s.GH, ldh = s.ldh, lo = s.lo, hi = s.hi, m_ = hi - lo;
        const T* dl = s.d + lo * GH;
        gemm<T>(NG, ldh, m_, dl, 1, GH, s.hpad + lo * ldh, ldh, s.dU, ldh, s.dU, ldh);
        const T* aux = static_cast<const T*>(s.a.aux);
        for (int64_t i = lo; i < hi; ++i) std::memcpy(s.hpad + i * ldh, aux + s.tb(i) * H, H * sizeof(T));
        gemm<T>(H, ldh, m_, dl + NG, 1, GH, s.hpad + lo * ldh, ldh, s.dU + NG * ldh, ldh, s.dU + NG * ldh, ldh);
    }
};

}  // namespace

template <typename T>
std::unique_ptr<Kernel<T>> gru_kernel(int64_t H, bool reset_after, int64_t lvar) {
    return std::make_unique<Gru<T>>(H, reset_after, lvar);
}
template std::unique_ptr<Kernel<float>> gru_kernel<float>(int64_t, bool, int64_t);
template std::unique_ptr<Kernel<double>> gru_kernel<double>(int64_t, bool, int64_t);

}  // namespace gr
