// The music read-out and its loss in one pass (kernels/readout.py, gr_bernoulli): the Bernoulli head
// a = c + V h_t and nll_t = Σ_o softplus(a_o) − y_o a_o over blocks of valid (unpadded) steps, never
// materialising the (B, T, O) logits: a micro-kernel GEMM and one elementwise pass per block; in float the
// log terms log(1 + e^-|a|) are multiplied lane-wise (each factor in (1, 2], at most ceil(O/8) per lane)
// and 8 logs taken per step instead of O.
// With P set (training) the forward also stores σ(a) − y of every valid step, and backward forms
// da = g_t P, dh = da V, dV += daᵀ h, dc += Σ da (per-chunk partial sums); without P backward
// recomputes a. Rows are (b, t), b-major; padded rows get nll 0 and dh 0 and cost nothing.
#include "common.h"

namespace gr __attribute__((visibility("hidden"))) {

// the argument block, mirrored by readout.py (_Bern)
struct BernArgs {
    int64_t B, T, H, O;
    int32_t nthreads, backward;
    int32_t y_u8, pad_;       // y_u8: the targets are bytes (uint8), not T
    const void* h;
    int64_t hsB, hsT;         // h[b, t, :] at h + b*hsB + t*hsT (unit inner stride)
    const void* V;            // (O, H) read-out weight, row-major
    const void* c;            // (O) its bias
    const void* y;
    int64_t ysB, ysT;         // targets (unit inner stride)
    const uint8_t* mask;      // (b, t) valid, or null: all valid
    int64_t msB, msT;
    void* nll;                // forward: (B, T) contiguous per-step NLL
    void* P;                  // (B*T, O) σ(a) − y of valid rows (row q = b*T + t): written by the
                              // forward if set, then read by the backward instead of recomputing a
    const void* g;            // backward: dL/dnll_t
    int64_t gsB, gsT;
    void* dh;                 // backward: dL/dh, like h (strides dsB, dsT)
    int64_t dsB, dsT;
    void* dV;                 // backward: (O, H), (O)
    void* dc;
    // internal
    const void* VT;           // V^T (H, ldo), columns zero-padded; cp (ldo) the padded bias
    const void* cp;
    int64_t ldo;
    const void* Vp;           // V (O, ldh), columns zero-padded (backward)
    int64_t ldh;
    void* dVp;                // (P, O, ldh), (P, ldo) per-chunk partial sums
    void* dcp;
};

namespace {

constexpr int BL = 8;   // lanes of the per-step sums

// forward terms of one step: lin[o] = max(a, 0) − y a, fac[o] = 1 + e^-|a| (float) or the whole
// log term (double: log1p, exact enough for gradcheck); optionally p[o] = σ(a) − y
template <typename Y>
inline void b_nll_terms(int64_t O, const float* __restrict a, const Y* __restrict y, float* __restrict lin,
                        float* __restrict fac, float* __restrict p) {
    for (int64_t o = 0; o < O; ++o) {
        const float x = a[o];
        const float z = fexp(-std::fabs(x));
        const float yo = static_cast<float>(y[o]);
        lin[o] = std::max(x, 0.0f) - yo * x;
        fac[o] = 1.0f + z;
        if (p) p[o] = (x >= 0.0f ? 1.0f : z) / (1.0f + z) - yo;
    }
}
template <typename Y>
inline void b_nll_terms(int64_t O, const double* __restrict a, const Y* __restrict y,
                        double* __restrict lin, double* __restrict fac, double* __restrict p) {
    for (int64_t o = 0; o < O; ++o) {
        const double x = a[o];
        const double z = std::exp(-std::fabs(x));
        const double yo = static_cast<double>(y[o]);
        lin[o] = std::max(x, 0.0) - yo * x + std::log1p(z);
        fac[o] = 1.0;
        if (p) p[o] = (x >= 0.0 ? 1.0 : z) / (1.0 + z) - yo;
    }
}
inline float log_(float x) { return flog(x); }
inline double log_(double x) { return std::log(x); }

template <typename T>
inline T b_nll_sum(int64_t ldo, const T* __restrict lin, const T* __restrict fac) {
    T sl[BL] = {}, pf[BL];
    for (int l = 0; l < BL; ++l) pf[l] = T(1);
    for (int64_t o0 = 0; o0 < ldo; o0 += BL)   // ldo is a multiple of NB, hence of BL
        for (int l = 0; l < BL; ++l) {
            sl[l] += lin[o0 + l];
            pf[l] *= fac[o0 + l];
        }
    T s = T(0);
    for (int l = 0; l < BL; ++l) s += sl[l] + log_(pf[l]);
    return s;
}

template <typename T, typename Y>
void b_nll_grad(int64_t O, T g, T* __restrict a, const Y* __restrict y) {   // a -> da, in place
    for (int64_t o = 0; o < O; ++o) a[o] = g * (sigm(a[o]) - static_cast<T>(y[o]));
}
template <typename T>
void scale_row(int64_t O, T g, const T* __restrict p, T* __restrict da) {
    for (int64_t o = 0; o < O; ++o) da[o] = g * p[o];
}

template <typename T, typename Y>
void bern_rows(const BernArgs& a, int64_t p, int64_t q0, int64_t q1) {
    constexpr int64_t RB = 48;   // valid rows per block
    const int64_t Tn = a.T, H = a.H, O = a.O, ldo = a.ldo, ldh = a.ldh;
    const bool bwd = a.backward != 0;
    const T* h = static_cast<const T*>(a.h);
    const T* VT = static_cast<const T*>(a.VT);
    const T* c = static_cast<const T*>(a.cp);
    const T* Vp = static_cast<const T*>(a.Vp);
    const Y* y = static_cast<const Y*>(a.y);
    const T* g = static_cast<const T*>(a.g);
    T* nll = static_cast<T*>(a.nll);
    T* dh = static_cast<T*>(a.dh);
    T* P = static_cast<T*>(a.P);
    T* dV = bwd ? static_cast<T*>(a.dVp) + p * O * ldh : nullptr;
    T* dc = bwd ? static_cast<T*>(a.dcp) + p * ldo : nullptr;
    Buf<T> hbuf(RB * ldh, T(0)), abuf(RB * ldo, T(0)), lin(ldo, T(0)), fac(ldo, T(1)),
        dhbuf(bwd ? RB * ldh : 0);
    int64_t rows[RB];
    int64_t nr = 0;
    auto flush = [&] {
        const bool recompute = !bwd || P == nullptr;
        if (recompute || bwd) {
            for (int64_t r = 0; r < nr; ++r) {
                const int64_t b = rows[r] / Tn, t = rows[r] % Tn;
                std::memcpy(hbuf.data() + r * ldh, h + b * a.hsB + t * a.hsT, H * sizeof(T));
            }
        }
        if (recompute)
            gemm<T>(nr, ldo, H, hbuf.data(), ldh, 1, VT, ldo, abuf.data(), ldo, c, 0);   // a = c + h V^T
        if (!bwd) {
            for (int64_t r = 0; r < nr; ++r) {
                const int64_t b = rows[r] / Tn, t = rows[r] % Tn;
                b_nll_terms(O, abuf.data() + r * ldo, y + b * a.ysB + t * a.ysT, lin.data(), fac.data(),
                            P ? P + rows[r] * O : nullptr);
                nll[rows[r]] = b_nll_sum<T>(ldo, lin.data(), fac.data());
            }
            nr = 0;
            return;
        }
        for (int64_t r = 0; r < nr; ++r) {
            const int64_t b = rows[r] / Tn, t = rows[r] % Tn;
            T* da = abuf.data() + r * ldo;
            const T gr = g[b * a.gsB + t * a.gsT];
            if (P) scale_row<T>(O, gr, P + rows[r] * O, da);
            else b_nll_grad<T, Y>(O, gr, da, y + b * a.ysB + t * a.ysT);
            add_to<T>(O, da, dc);
        }
        gemm<T>(nr, ldh, O, abuf.data(), ldo, 1, Vp, ldh, dhbuf.data(), ldh, nullptr, 0);   // dh = da V
        gemm<T>(O, ldh, nr, abuf.data(), 1, ldo, hbuf.data(), ldh, dV, ldh, dV, ldh);       // dV += daᵀ h
        for (int64_t r = 0; r < nr; ++r) {
            const int64_t b = rows[r] / Tn, t = rows[r] % Tn;
            std::memcpy(dh + b * a.dsB + t * a.dsT, dhbuf.data() + r * ldh, H * sizeof(T));
        }
        nr = 0;
    };
    for (int64_t q = q0; q < q1; ++q) {
        const int64_t b = q / Tn, t = q % Tn;
        if (a.mask && !a.mask[b * a.msB + t * a.msT]) {
            if (bwd) std::memset(dh + b * a.dsB + t * a.dsT, 0, H * sizeof(T));
            else nll[q] = T(0);
            continue;
        }
        rows[nr++] = q;
        if (nr == RB) flush();
    }
    if (nr) flush();
}

template <typename T>
void bernoulli_all(const BernArgs& a0) {
    BernArgs a = a0;
    const int64_t H = a.H, O = a.O, N = a.B * a.T, P = num_chunks(N, a.nthreads);
    const bool bwd = a.backward != 0;
    a.ldo = padn(O);
    a.ldh = padn(H);
    Buf<T> VT(H * a.ldo, T(0)), cp, Vp, dVp, dcp;
    put_transposed<T>(VT.data(), a.ldo, 0, static_cast<const T*>(a.V), O, H);
    pad_cols<T>(cp, static_cast<const T*>(a.c), 1, O, a.ldo);
    a.VT = VT.data();
    a.cp = cp.data();
    if (bwd) {
        pad_cols<T>(Vp, static_cast<const T*>(a.V), O, H, a.ldh);
        dVp.assign(P * O * a.ldh, T(0));
        dcp.assign(P * a.ldo, T(0));
        a.Vp = Vp.data();
        a.dVp = dVp.data();
        a.dcp = dcp.data();
    }
    if (a.y_u8)
        run_items(1, N, a.nthreads, [&](int64_t, int64_t p, int64_t q0, int64_t q1) { bern_rows<T, uint8_t>(a, p, q0, q1); });
    else
        run_items(1, N, a.nthreads, [&](int64_t, int64_t p, int64_t q0, int64_t q1) { bern_rows<T, T>(a, p, q0, q1); });
    if (!bwd) return;
    T* dV = static_cast<T*>(a.dV);
    T* dc = static_cast<T*>(a.dc);
    for (int64_t o = 0; o < O; ++o) {
        for (int64_t j = 0; j < H; ++j) {
            T s = dVp[o * a.ldh + j];
            for (int64_t p = 1; p < P; ++p) s += dVp[(p * O + o) * a.ldh + j];
            dV[o * H + j] = s;
        }
        T s = dcp[o];
        for (int64_t p = 1; p < P; ++p) s += dcp[p * a.ldo + o];
        dc[o] = s;
    }
}

}  // namespace
}  // namespace gr

// the Bernoulli read-out + NLL over B*T rows (forward or backward, see BernArgs)
GR_API int gr_bernoulli(const gr::BernArgs* a, int is_double) {
    if (is_double) gr::bernoulli_all<double>(*a);
    else gr::bernoulli_all<float>(*a);
    return 0;
}
