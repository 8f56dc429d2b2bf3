// The linear recurrence h_t = a_t ⊙ h_{t−1} + b_t and its adjoint, one step after another: the loop over
// time of the units without a recurrent matrix (minGRU, minLSTM; nn/scan.py computes a_t, b_t for every step
// at once with torch, then hands them here). Knows nothing of the units: coefficients in, states out.
//
// Layouts (row-major, contiguous), M models (or any leading batch), T steps, R rows per step that the
// mask covers (the batch), C values per row (the hidden units):
//   a, b   (M, T, R, C)     coefficients
//   h0     (M, R, C)        state before the first step
//   mask   (M, T, R) uint8  1 valid, 0 padded (a padded step carries the state and outputs 0), or null
//   Hs     (M, T+1, R, C)   forward: the state sequence, Hs[:, 0] = h0, Hs[:, t+1] the state after step t
//   out    (M, T, R, C)     forward: h_t on valid steps, 0 on padded ones
// Backward, given gout (M, T, R, C) = dL/dout or null and ghT (M, R, C) = dL/dh_T or null, with
// λ_t = dL/dh_t = gout_t + a_{t+1} ⊙ λ_{t+1} (+ ghT at the last step):
//   db_t = λ_t,  da_t = λ_t ⊙ h_{t−1} (0 on padded steps, where λ passes through unchanged),
//   dh0 = a_0 ⊙ λ_0 (the λ carried to before the first step).
// The arithmetic is the step-by-step recurrence itself (no regrouping), so it equals the reference loop up
// to the contraction of a*h + b into one fused multiply-add.
//
// The gated forms (gr_gated_scan_*) also compute the coefficients from the pre-activations of the units
// that declare them, in the same pass — no (T, B, H) intermediate is written but the states:
//   wx   (M, T, R, G*C)   W x_t + b for every step, the gate blocks in the unit's order
//   kind 0, minGRU  (G = 2: z, h):    z = σ(wz), h̃ = wh,  h_t = (1 − z) h_{t−1} + z h̃
//   kind 1, minLSTM (G = 3: f, i, h): f = σ(wf), i = σ(wi), h̃ = wh, h_t = f/(f+i) h_{t−1} + i/(f+i) h̃
//   backward: dwx (M, T, R, G*C) = dL/dwx (0 on padded steps), dh0, from λ_t as above.
#include "common.h"

namespace {
using gr::sigm;

#define RS __restrict

template <typename T>
void scan_forward(int64_t M, int64_t Tn, int64_t R, int64_t C, const T* a, const T* b, const T* h0,
                  const uint8_t* mask, T* Hs, T* out) {
    const int64_t S = R * C;
    for (int64_t m = 0; m < M; ++m) {
        T* hs = Hs + m * (Tn + 1) * S;
        std::memcpy(hs, h0 + m * S, sizeof(T) * S);
        for (int64_t t = 0; t < Tn; ++t) {
            const int64_t off = (m * Tn + t) * S;
            const T* RS at = a + off;
            const T* RS bt = b + off;
            const T* RS hp = hs + t * S;
            T* RS hn = hs + (t + 1) * S;
            T* RS o = out + off;
            const uint8_t* mk = mask ? mask + (m * Tn + t) * R : nullptr;
            for (int64_t r = 0; r < R; ++r) {
                const int64_t lo = r * C, hi = lo + C;
                if (!mk || mk[r]) {
                    for (int64_t j = lo; j < hi; ++j) {
                        const T h = at[j] * hp[j] + bt[j];
                        hn[j] = h;
                        o[j] = h;
                    }
                } else {
                    for (int64_t j = lo; j < hi; ++j) {
                        hn[j] = hp[j];
                        o[j] = T(0);
                    }
                }
            }
        }
    }
}

template <typename T>
void scan_backward(int64_t M, int64_t Tn, int64_t R, int64_t C, const T* a, const T* Hs, const T* gout,
                   const T* ghT, const uint8_t* mask, T* da, T* db, T* dh0) {
    const int64_t S = R * C;
    for (int64_t m = 0; m < M; ++m) {
        T* RS lam = dh0 + m * S;                     // λ, carried backwards in time; ends as dL/dh0
        if (ghT)
            std::memcpy(lam, ghT + m * S, sizeof(T) * S);
        else
            std::memset(lam, 0, sizeof(T) * S);
        const T* hs = Hs + m * (Tn + 1) * S;
        for (int64_t t = Tn - 1; t >= 0; --t) {
            const int64_t off = (m * Tn + t) * S;
            const T* RS at = a + off;
            const T* RS hp = hs + t * S;
            const T* RS g = gout ? gout + off : nullptr;
            T* RS dat = da + off;
            T* RS dbt = db + off;
            const uint8_t* mk = mask ? mask + (m * Tn + t) * R : nullptr;
            for (int64_t r = 0; r < R; ++r) {
                const int64_t lo = r * C, hi = lo + C;
                if ((!mk || mk[r]) && g) {
                    for (int64_t j = lo; j < hi; ++j) {
                        const T l = lam[j] + g[j];               // λ_t
                        dbt[j] = l;
                        dat[j] = l * hp[j];
                        lam[j] = at[j] * l;                      // a_t ⊙ λ_t: to dL/dh_{t−1}
                    }
                } else if (!mk || mk[r]) {
                    for (int64_t j = lo; j < hi; ++j) {
                        const T l = lam[j];
                        dbt[j] = l;
                        dat[j] = l * hp[j];
                        lam[j] = at[j] * l;
                    }
                } else {
                    for (int64_t j = lo; j < hi; ++j) {
                        dbt[j] = T(0);
                        dat[j] = T(0);
                    }
                }
            }
        }
    }
}


// one row of C values of one step: the gates from wx, the state update; the backward of the same
template <typename T>
inline void gated_step(int kind, int64_t C, const T* RS w, const T* RS hp, T* RS hn, T* RS o) {
    if (kind == 0) {
        for (int64_t j = 0; j < C; ++j) {
            const T z = sigm(w[j]);
            const T h = hp[j] + z * (w[C + j] - hp[j]);          // (1 − z) h_{t−1} + z h̃
            hn[j] = h;
            o[j] = h;
        }
    } else {
        for (int64_t j = 0; j < C; ++j) {
            const T f = sigm(w[j]), i = sigm(w[C + j]);
            const T h = (f * hp[j] + i * w[2 * C + j]) / (f + i);  // f' h_{t−1} + i' h̃
            hn[j] = h;
            o[j] = h;
        }
    }
}

// λ (in/out): dL/dh_t on entry (the output's gradient already added), a_t ⊙ λ_t = dL/dh_{t−1} on exit
template <typename T>
inline void gated_step_back(int kind, int64_t C, const T* RS w, const T* RS hp, T* RS lam, T* RS d) {
    if (kind == 0) {
        for (int64_t j = 0; j < C; ++j) {
            const T z = sigm(w[j]), l = lam[j];
            d[j] = l * (w[C + j] - hp[j]) * z * (T(1) - z);     // dL/dwz
            d[C + j] = l * z;                                   // dL/dwh
            lam[j] = l * (T(1) - z);
        }
    } else {
        for (int64_t j = 0; j < C; ++j) {
            const T f = sigm(w[j]), i = sigm(w[C + j]), l = lam[j];
            const T s = f + i, fn = f / s, in = i / s;
            const T dfn = l * hp[j], din = l * w[2 * C + j];     // dL/df', dL/di'
            const T q = (dfn - din) / (s * s);
            d[j] = q * i * f * (T(1) - f);                      // dL/df · σ'(wf);  ∂f'/∂f = i/s², ∂i'/∂f = −i/s²
            d[C + j] = -q * f * i * (T(1) - i);                 // dL/di · σ'(wi);  ∂f'/∂i = −f/s², ∂i'/∂i = f/s²
            d[2 * C + j] = l * in;                              // dL/dwh
            lam[j] = l * fn;
        }
    }
}

template <typename T>
void gated_forward(int kind, int64_t M, int64_t Tn, int64_t R, int64_t C, const T* wx, const T* h0,
                   const uint8_t* mask, T* Hs, T* out) {
    const int64_t S = R * C, G = kind == 0 ? 2 : 3;
    for (int64_t m = 0; m < M; ++m) {
        T* hs = Hs + m * (Tn + 1) * S;
        std::memcpy(hs, h0 + m * S, sizeof(T) * S);
        for (int64_t t = 0; t < Tn; ++t) {
            const uint8_t* mk = mask ? mask + (m * Tn + t) * R : nullptr;
            for (int64_t r = 0; r < R; ++r) {
                const T* hp = hs + t * S + r * C;
                T* hn = hs + (t + 1) * S + r * C;
                T* o = out + (m * Tn + t) * S + r * C;
                if (!mk || mk[r]) {
                    gated_step<T>(kind, C, wx + ((m * Tn + t) * R + r) * G * C, hp, hn, o);
                } else {
                    std::memcpy(hn, hp, sizeof(T) * C);
                    std::memset(o, 0, sizeof(T) * C);
                }
            }
        }
    }
}

template <typename T>
void gated_backward(int kind, int64_t M, int64_t Tn, int64_t R, int64_t C, const T* wx, const T* Hs,
                    const T* gout, const T* ghT, const uint8_t* mask, T* dwx, T* dh0) {
    const int64_t S = R * C, G = kind == 0 ? 2 : 3;
    for (int64_t m = 0; m < M; ++m) {
        T* lam = dh0 + m * S;
        if (ghT)
            std::memcpy(lam, ghT + m * S, sizeof(T) * S);
        else
            std::memset(lam, 0, sizeof(T) * S);
        const T* hs = Hs + m * (Tn + 1) * S;
        for (int64_t t = Tn - 1; t >= 0; --t) {
            const uint8_t* mk = mask ? mask + (m * Tn + t) * R : nullptr;
            for (int64_t r = 0; r < R; ++r) {
                T* d = dwx + ((m * Tn + t) * R + r) * G * C;
                if (mk && !mk[r]) {                             // padded: no gradient, λ passes through
                    std::memset(d, 0, sizeof(T) * G * C);
                    continue;
                }
                T* l = lam + r * C;
                if (gout) {
                    const T* g = gout + (m * Tn + t) * S + r * C;
                    for (int64_t j = 0; j < C; ++j) l[j] += g[j];
                }
                gated_step_back<T>(kind, C, wx + ((m * Tn + t) * R + r) * G * C, hs + t * S + r * C, l, d);
            }
        }
    }
}

#undef RS

}  // namespace

// Runs f(T{}) with T the element type `dtype` names (0 float32, 1 float64): 0, or 1 for an unknown dtype.
// The one place the C entry points below turn their dtype code into a type.
template <class F>
int by_dtype(int32_t dtype, F&& f) {
    if (dtype == 0)
        f(float{});
    else if (dtype == 1)
        f(double{});
    else
        return 1;
    return 0;
}

extern "C" {

// dtype: 0 float32, 1 float64. Returns 0, or 1 for an unknown dtype.
int gr_scan_forward(int32_t dtype, int64_t M, int64_t Tn, int64_t R, int64_t C, const void* a, const void* b,
                    const void* h0, const uint8_t* mask, void* Hs, void* out) {
    return by_dtype(dtype, [&](auto t) {
        using T = decltype(t);
        scan_forward<T>(M, Tn, R, C, static_cast<const T*>(a), static_cast<const T*>(b), static_cast<const T*>(h0),
                        mask, static_cast<T*>(Hs), static_cast<T*>(out));
    });
}

int gr_scan_backward(int32_t dtype, int64_t M, int64_t Tn, int64_t R, int64_t C, const void* a, const void* Hs,
                     const void* gout, const void* ghT, const uint8_t* mask, void* da, void* db, void* dh0) {
    return by_dtype(dtype, [&](auto t) {
        using T = decltype(t);
        scan_backward<T>(M, Tn, R, C, static_cast<const T*>(a), static_cast<const T*>(Hs),
                         static_cast<const T*>(gout), static_cast<const T*>(ghT), mask, static_cast<T*>(da),
                         static_cast<T*>(db), static_cast<T*>(dh0));
    });
}

// kind: 0 minGRU, 1 minLSTM; dtype as above. Returns 0, or 1 for an unknown dtype or kind.
int gr_gated_scan_forward(int32_t kind, int32_t dtype, int64_t M, int64_t Tn, int64_t R, int64_t C,
                          const void* wx, const void* h0, const uint8_t* mask, void* Hs, void* out) {
    if (kind != 0 && kind != 1)
        return 1;
    return by_dtype(dtype, [&](auto t) {
        using T = decltype(t);
        gated_forward<T>(kind, M, Tn, R, C, static_cast<const T*>(wx), static_cast<const T*>(h0), mask,
                         static_cast<T*>(Hs), static_cast<T*>(out));
    });
}

int gr_gated_scan_backward(int32_t kind, int32_t dtype, int64_t M, int64_t Tn, int64_t R, int64_t C,
                           const void* wx, const void* Hs, const void* gout, const void* ghT, const uint8_t* mask,
                           void* dwx, void* dh0) {
    if (kind != 0 && kind != 1)
        return 1;
    return by_dtype(dtype, [&](auto t) {
        using T = decltype(t);
        gated_backward<T>(kind, M, Tn, R, C, static_cast<const T*>(wx), static_cast<const T*>(Hs),
                          static_cast<const T*>(gout), static_cast<const T*>(ghT), mask, static_cast<T*>(dwx),
                          static_cast<T*>(dh0));
    });
}

}  // extern "C"
