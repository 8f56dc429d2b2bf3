// Fused recurrent loops for the paper's three units (tanh-RNN, GRU, peephole LSTM).
//
// Plain C++ with a C ABI, loaded through ctypes (see loader.py): no torch headers, so it
// compiles in about two seconds. Everything of a forward or backward pass runs in here, in one
// parallel region with no synchronisation inside: the work items are (model, chunk of batch rows)
// — rows are independent in the recurrence — and each item runs the whole time loop on its rows.
// The region is OpenMP when built with -fopenmp (then it runs on torch's own libgomp pool), else
// std::thread.
//
// Per step and chunk, forward: two small GEMMs in a register-blocked micro-kernel
// (g_x = b + x_t W^T and g_h = h_{t-1} U^T; the paper's GRU needs a third, U_c (r ⊙ h)) and ONE
// fused elementwise pass that writes the new state, the output and the activations backward needs.
// Backward: one elementwise pass giving the gate gradients d_t, then dh_{t-1} = (direct part) + d_t U,
// and the weight gradients accumulated in per-chunk partial sums as rank-n updates
// (dU += d_tᵀ h_{t-1}, dW += d_tᵀ x_t, db += Σ d_t; dx_t = d_t W if wanted). Python sums the
// per-chunk partials (or, with dG set — very large H — does dW, dU, db, dx itself after the loop).
// The input projection over all steps is never materialised. Each argument block is one model;
// gr_forward / gr_backward take K of them (same shapes) and run them in one region.
//
// Layouts (row-major; x and dx may have any row strides sT, sB with unit inner stride):
//   x    (T, B, I)     input
//   WT   (I, ldx)      W^T, columns zero-padded to ldx = pad(G*H); bx (ldx) the bias, padded
//   UT   (H, ldu)      U^T, columns zero-padded (paper GRU: [U_z;U_r]^T in [0, 2H), U_c^T at off2)
//   Wp   (G*H, ldi)    W, columns padded (ldi = pad(I)), for dx
//   Up   (G*H, ldh)    U, columns padded (ldh = pad(H)), for dh
//   Hs   (T+1, B, H)   the state sequence, Hs[0] = h0 (filled by the caller)
//   Cs   (T+1, B, H)   LSTM cell sequence, Cs[0] = c0
//   out  (T, B, H)     h_t on valid steps, 0 on padded ones
//   act  (T, B, G*H)   saved activations (LSTM i,f,ĉ,o; GRU z,r,h̃; unused for tanh)
//   aux  (T, B, H)     LSTM tanh(c_t); GRU(reset_after) U_c h_{t-1}; GRU(paper) r_t ⊙ h_{t-1}
//   dWp  (P, G*H, ldi), dUp (P, G*H, ldh), dbp (P, G*H): per-chunk partial sums (zeroed by caller)
//   dG, dGx (T, B, G*H) deferred mode: the gate gradients of every step (U-side, W-side)
//   dv   (B, 3*H)      per-row peephole gradient sums (zeroed by caller; the caller sums over B)
#include <cstdint>
#include <cstring>
#include <cmath>
#include <vector>
#include <thread>
#include <algorithm>
#include <atomic>

namespace {

constexpr int NB = 16;  // column block of the micro-kernel (operands are padded to a multiple of it)
constexpr int MR = 8;   // rows per chunk granule (the row chunks of the parallel region are multiples of it)

// The vector register file the compiler targets (-march=native). The micro-kernel keeps R x NV
// column vectors of C in registers; more than the file holds spills to the stack on every k, which
// measured 6x slower than the plain torch loop on an AVX2-only machine (znver3) with the AVX-512
// tile (8 rows x 32 floats). So the tile is sized from the register file, not fixed.
#if defined(__AVX512F__)
constexpr int VREGS = 32, VBYTES = 64;
#elif defined(__AVX__)
constexpr int VREGS = 16, VBYTES = 32;
#else
constexpr int VREGS = 16, VBYTES = 16;
#endif
// Rows per micro-kernel call for NV column vectors of NB elements of T: accumulators + the NV
// loaded B vectors + one broadcast must fit in the register file.
template <typename T, int NV>
constexpr int micro_rows() {
    constexpr int per_vec = (NB * int(sizeof(T)) + VBYTES - 1) / VBYTES;   // registers per NB-vector
    constexpr int r = (VREGS - 1 - NV * per_vec) / (NV * per_vec);
    return r > MR ? MR : (r < 1 ? 1 : r);
}

// ---------------------------------------------------------------- activations
// float: branch-free, auto-vectorisable exp (Cephes polynomial, ~1 ulp) and tanh/sigmoid on top.
// double (used by gradcheck): libm.
static inline __attribute__((always_inline)) float fexp(float x) {
    x = std::min(88.0f, std::max(-87.0f, x));
    // round to nearest with the 1.5*2^23 trick (floorf does not vectorise without -ffast-math)
    float fx = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    x = x - fx * 0.693359375f + fx * 2.12194440e-4f;
    float z = x * x;
    float y = 1.9875691500E-4f;
    y = y * x + 1.3981999507E-3f;
    y = y * x + 8.3334519073E-3f;
    y = y * x + 4.1665795894E-2f;
    y = y * x + 1.6666665459E-1f;
    y = y * x + 5.0000001201E-1f;
    y = y * z + x + 1.0f;
    int32_t n = static_cast<int32_t>(fx);
    const int32_t bits = (n + 127) << 23;   // 2^n
    float p;
    std::memcpy(&p, &bits, sizeof p);
    return y * p;
}
static inline __attribute__((always_inline)) float sigm(float x) { return 1.0f / (1.0f + fexp(-x)); }
static inline __attribute__((always_inline)) float tanh_(float x) {
    float ax = std::fabs(x);
    // |x| < 0.625: odd polynomial (Cephes tanhf); else 1 - 2/(e^{2|x|}+1), sign restored
    float z = x * x;
    float p = -5.70498872745E-3f;
    p = p * z + 2.06390887954E-2f;
    p = p * z - 5.37397155531E-2f;
    p = p * z + 1.33314422036E-1f;
    p = p * z - 3.33332819422E-1f;
    float small = p * z * x + x;
    float e = fexp(2.0f * ax);
    float big = 1.0f - 2.0f / (e + 1.0f);
    big = std::copysign(big, x);
    return ax < 0.625f ? small : big;
}
static inline double sigm(double x) { return 1.0 / (1.0 + std::exp(-x)); }
static inline double tanh_(double x) { return std::tanh(x); }

static inline int64_t padn(int64_t n) { return (n + NB - 1) / NB * NB; }

// ---------------------------------------------------------------- small GEMM
// C[M x Np] = (Cin ? Cin : 0) + A[M x K] * B[K x Np]; Np a multiple of NB, B padded with zeros.
// A is addressed as A[m * ars + k * aks] (so Aᵀ works too); Cin may equal C (in-place accumulation)
// and may have row stride 0 (a broadcast bias row).
// Register-blocked with GCC vector extensions of the target's native width (VBYTES): R rows x NB
// columns of C stay in vector registers, one broadcast FMA per row, k and native vector. (Vectors
// wider than the registers, e.g. 64-byte ones on AVX2, are split by GCC through the stack.)
template <typename T> struct Vec { typedef T type __attribute__((vector_size(VBYTES))); };

template <typename T, int R, int NV>
static inline __attribute__((always_inline)) void micro(int64_t K, const T* __restrict A, int64_t ars, int64_t aks,
                                                        const T* __restrict Bm, int64_t ldb,
                                                        T* C, int64_t ldc, const T* Cin, int64_t ldcin) {
    typedef typename Vec<T>::type V;
    constexpr int L = VBYTES / int(sizeof(T));   // lanes per register
    constexpr int NVV = NV * NB / L;             // registers per row of the tile
    V acc[R][NVV];
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < NVV; ++v) {
            if (Cin) std::memcpy(&acc[r][v], Cin + r * ldcin + v * L, sizeof(V));
            else acc[r][v] = V{};
        }
    for (int64_t k = 0; k < K; ++k) {
        V b[NVV];
        for (int v = 0; v < NVV; ++v) std::memcpy(&b[v], Bm + k * ldb + v * L, sizeof(V));
        for (int r = 0; r < R; ++r) {
            const T a = A[r * ars + k * aks];
            for (int v = 0; v < NVV; ++v) acc[r][v] += a * b[v];
        }
    }
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < NVV; ++v) std::memcpy(C + r * ldc + v * L, &acc[r][v], sizeof(V));
}

// column blocks of 2*NB (8 x 32 floats = 16 AVX-512 accumulators: 10 loads per 16 FMAs), then NB
template <typename T, int NV>
static inline void gemm_cols(int64_t M, int64_t n0, int64_t K, const T* A, int64_t ars, int64_t aks, const T* Bm,
                             int64_t ldb, T* C, int64_t ldc, const T* Cin, int64_t ldcin) {
    constexpr int R = micro_rows<T, NV>();
    int64_t m = 0;
#define GR_MICRO(RR) micro<T, RR, NV>(K, A + m * ars, ars, aks, Bm + n0, ldb, C + m * ldc + n0, ldc, \
                                      Cin ? Cin + m * ldcin + n0 : nullptr, ldcin)
    for (; m + R <= M; m += R) GR_MICRO(R);
    if constexpr (R > 4) if (m + 4 <= M) { GR_MICRO(4); m += 4; }
    if constexpr (R > 2) if (m + 2 <= M) { GR_MICRO(2); m += 2; }
    for (; m < M; ++m) GR_MICRO(1);
#undef GR_MICRO
}

template <typename T>
static void gemm(int64_t M, int64_t Np, int64_t K, const T* A, int64_t ars, int64_t aks, const T* Bm,
                 int64_t ldb, T* C, int64_t ldc, const T* Cin, int64_t ldcin) {
    int64_t n0 = 0;
    if (micro_rows<T, 2>() >= 4)   // two column vectors per call only where 4+ rows of them fit (AVX-512)
        for (; n0 + 2 * NB <= Np; n0 += 2 * NB) gemm_cols<T, 2>(M, n0, K, A, ars, aks, Bm, ldb, C, ldc, Cin, ldcin);
    for (; n0 < Np; n0 += NB) gemm_cols<T, 1>(M, n0, K, A, ars, aks, Bm, ldb, C, ldc, Cin, ldcin);
}

// ---------------------------------------------------------------- arguments
enum Unit : int32_t { TANH = 0, GRU = 1, LSTM = 2 };

struct FwdArgs {
    int64_t T, B, H, I;
    int32_t unit, reset_after, peep, nthreads;
    const void* x;
    int64_t sT, sB;
    const void* WT;
    const void* bx;
    int64_t ldx;
    const void* UT;
    int64_t ldu, off2;
    const void* v;
    const uint8_t* mask;
    void* Hs;
    void* Cs;
    void* out;
    void* act;
    void* aux;
};

struct BwdArgs {
    int64_t T, B, H, I;
    int32_t unit, reset_after, peep, nthreads;
    const void* x;
    int64_t sT, sB;
    const void* Wp;
    int64_t ldi;
    const void* Up;
    int64_t ldh;
    const void* v;
    const uint8_t* mask;
    const void* Hs;
    const void* Cs;
    const void* act;
    const void* aux;
    const void* gout;   // (T,B,H) or null
    const void* ghT;    // (B,H) or null
    const void* gcT;    // (B,H) or null
    void* dx;           // like x (strides sT, sB) or null
    void* dWp;
    void* dUp;
    void* dbp;
    void* dh0;
    void* dc0;
    void* dv;
    void* dG;           // (T,B,G*H) or null: if set, store the gate gradients there and leave dW, dU, db,
    void* dGx;          // dx to the caller; dGx (GRU reset_after): the W-side ones
};

// The batch rows are cut into chunks (multiples of MR rows, about two per thread); each chunk runs
// the whole time loop. Threads take chunks from an atomic counter, so a thread that the OS
// deschedules (a busy machine) leaves its remaining chunks to the others. Chunk p writes partial
// sums into slot p.
static int64_t g_chunks_per_thread = 2;

static int64_t num_chunks(int64_t B, int64_t nthreads) {
    const int64_t blocks = (B + MR - 1) / MR;
    return std::max<int64_t>(1, std::min<int64_t>(blocks, nthreads <= 1 ? 1 : g_chunks_per_thread * nthreads));
}

// K independent problems (models) x chunks each = the work items of one parallel region.
template <typename F>
static void run_items(int64_t K, int64_t B, int nthreads, F&& f) {
    const int64_t nc = num_chunks(B, nthreads), items = K * nc;
    const int64_t blocks = (B + MR - 1) / MR;
    auto lo = [&](int64_t p) { return std::min(B, (blocks * p / nc) * MR); };
    auto item = [&](int64_t i) {
        const int64_t k = i / nc, p = i % nc;
        if (lo(p + 1) > lo(p)) f(k, p, lo(p), lo(p + 1));
    };
    if (items == 1 || nthreads <= 1) {
        for (int64_t i = 0; i < items; ++i) item(i);
        return;
    }
    std::atomic<int64_t> next{0};
    auto worker = [&] {
        for (int64_t i; (i = next.fetch_add(1)) < items;) item(i);
    };
    const int nt = static_cast<int>(std::min<int64_t>(nthreads, items));
#ifdef _OPENMP
    // Built with -fopenmp, this library needs libgomp.so.1 — which the dynamic linker resolves to the
    // copy torch has already loaded, so these are torch's own intra-op threads: no second pool whose
    // threads would compete with torch's spinning OpenMP workers.
#pragma omp parallel num_threads(nt)
    worker();
#else
    std::vector<std::thread> th;
    for (int i = 1; i < nt; ++i) th.emplace_back(worker);
    worker();
    for (auto& t : th) t.join();
#endif
}

// ---------------------------------------------------------------- row kernels
// One fused elementwise pass over one batch row (j < H). Separate functions with __restrict
// parameters so that GCC vectorises them without alias-versioning (it only trusts restrict on
// parameters). R = restrict pointer shorthand.
#define R __restrict

// forward, tanh: h = tanh(wx + U h_prev)
template <typename T>
static void f_tanh(int64_t H, const T* R x, const T* R g, T* R ho) {
    for (int64_t j = 0; j < H; ++j) ho[j] = tanh_(x[j] + g[j]);
}

// forward, LSTM (gates i,f,c,o; peepholes v_i, v_f on c_{t-1}, v_o on c_t)
template <typename T, bool PEEP>
static void f_lstm(int64_t H, const T* R x, const T* R g, const T* R v, const T* R c, T* R cn, T* R ac,
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

// forward, GRU Cho form: g = U h_prev (all three blocks)
template <typename T>
static void f_gru_after(int64_t H, const T* R x, const T* R g, const T* R h, T* R ac, T* R uc, T* R ho) {
    for (int64_t j = 0; j < H; ++j) {
        T z = sigm(x[j] + g[j]);
        T r = sigm(x[H + j] + g[H + j]);
        T u = g[2 * H + j];
        T c = tanh_(x[2 * H + j] + r * u);
        ac[j] = z; ac[H + j] = r; ac[2 * H + j] = c; uc[j] = u;
        ho[j] = (T(1) - z) * h[j] + z * c;
    }
}

// forward, GRU paper form, stage 1: z, r and r ⊙ h_prev
template <typename T>
static void f_gru_1(int64_t H, const T* R x, const T* R g, const T* R h, T* R ac, T* R rh) {
    for (int64_t j = 0; j < H; ++j) {
        T z = sigm(x[j] + g[j]);
        T r = sigm(x[H + j] + g[H + j]);
        ac[j] = z; ac[H + j] = r; rh[j] = r * h[j];
    }
}

// forward, GRU paper form, stage 2: candidate from g2 = U_c (r ⊙ h_prev), new state
template <typename T>
static void f_gru_2(int64_t H, const T* R x, const T* R g2, const T* R h, T* R ac, T* R ho) {
    for (int64_t j = 0; j < H; ++j) {
        T c = tanh_(x[2 * H + j] + g2[j]);
        T z = ac[j];
        ac[2 * H + j] = c;
        ho[j] = (T(1) - z) * h[j] + z * c;
    }
}

// backward rows: dh = carried dL/dh_t (state), go = dL/dout_t; write d (gate grads) and dd (the part
// of dL/dh_{t-1} that does not go through U)
template <typename T>
static void b_tanh(int64_t H, const T* R dh, const T* R go, const T* R hn, T* R d, T* R dd) {
    for (int64_t j = 0; j < H; ++j) {
        T g = dh[j] + go[j];
        d[j] = g * (T(1) - hn[j] * hn[j]);
        dd[j] = T(0);
    }
}

template <typename T, bool PEEP>
static void b_lstm(int64_t H, const T* R dh, const T* R go, const T* R ac, const T* R tc, const T* R cp,
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

template <typename T>
static void b_gru_after(int64_t H, const T* R dh, const T* R go, const T* R ac, const T* R uc, const T* R hp,
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

// GRU paper form, stage 1: update gate and candidate (the reset gate needs U_c^T d_cand: stage 2)
template <typename T>
static void b_gru_1(int64_t H, const T* R dh, const T* R go, const T* R ac, const T* R hp, T* R d, T* R dd) {
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
static void b_gru_2(int64_t H, const T* R q, const T* R ac, const T* R hp, T* R d, T* R dd) {
    for (int64_t j = 0; j < H; ++j) {
        T r = ac[H + j];
        d[H + j] = q[j] * hp[j] * r * (T(1) - r);
        dd[j] += q[j] * r;
    }
}

template <typename T>
static void copy_or_zero(int64_t H, bool m, const T* R src, T* R o) {
    if (m) { for (int64_t j = 0; j < H; ++j) o[j] = src[j]; }
    else { for (int64_t j = 0; j < H; ++j) o[j] = T(0); }
}

template <typename T>
static void add_to(int64_t n, const T* R src, T* R dst) {
    for (int64_t j = 0; j < n; ++j) dst[j] += src[j];
}
#undef R

// ---------------------------------------------------------------- forward
template <typename T>
static void forward_rows(const FwdArgs& a, int64_t r0, int64_t r1) {
    const int64_t Tn = a.T, B = a.B, H = a.H, I = a.I, n = r1 - r0;
    const int G = a.unit == LSTM ? 4 : (a.unit == GRU ? 3 : 1);
    const int64_t GH = G * H, ldu = a.ldu, ldx = a.ldx;
    const T* x = static_cast<const T*>(a.x);
    const T* WT = static_cast<const T*>(a.WT);
    const T* bx = static_cast<const T*>(a.bx);
    const T* UT = static_cast<const T*>(a.UT);
    const T* v = static_cast<const T*>(a.v);
    T* Hs = static_cast<T*>(a.Hs);
    T* Cs = static_cast<T*>(a.Cs);
    T* out = static_cast<T*>(a.out);
    T* act = static_cast<T*>(a.act);
    T* aux = static_cast<T*>(a.aux);
    std::vector<T> gbuf(n * ldu), gxbuf(n * ldx);
    T* g = gbuf.data();
    T* gx = gxbuf.data();
    const bool gru_paper = a.unit == GRU && !a.reset_after;
    const int64_t N1 = gru_paper ? padn(2 * H) : padn(GH);

    for (int64_t t = 0; t < Tn; ++t) {
        const T* hp = Hs + (t * B + r0) * H;   // h_{t-1} rows
        T* hn = Hs + ((t + 1) * B + r0) * H;   // h_t rows
        gemm<T>(n, ldx, I, x + t * a.sT + r0 * a.sB, a.sB, 1, WT, ldx, gx, ldx, bx, 0);  // b + W x_t
        gemm<T>(n, N1, H, hp, H, 1, UT, ldu, g, ldu, nullptr, 0);                        // U h_{t-1}
        for (int64_t i = 0; i < n; ++i) {
            const int64_t b = r0 + i, tb = t * B + b;
            const bool m = a.mask ? a.mask[tb] != 0 : true;
            const T* xr = gx + i * ldx;
            const T* gg = g + i * ldu;
            const T* h = hp + i * H;
            T* ho = hn + i * H;
            if (a.unit == TANH) {
                f_tanh<T>(H, xr, gg, ho);
            } else if (a.unit == LSTM) {
                const T* c = Cs + tb * H;
                T* cn = Cs + (tb + B) * H;
                if (a.peep) f_lstm<T, true>(H, xr, gg, v, c, cn, act + tb * GH, aux + tb * H, ho);
                else f_lstm<T, false>(H, xr, gg, v, c, cn, act + tb * GH, aux + tb * H, ho);
                if (!m) std::memcpy(cn, c, H * sizeof(T));
            } else if (a.reset_after) {
                f_gru_after<T>(H, xr, gg, h, act + tb * GH, aux + tb * H, ho);
            } else {
                f_gru_1<T>(H, xr, gg, h, act + tb * GH, aux + tb * H);
                continue;  // state and output in stage 2
            }
            if (!m) std::memcpy(ho, h, H * sizeof(T));
            copy_or_zero<T>(H, m, ho, out + tb * H);
        }
        if (gru_paper) {
            const T* rh0 = aux + (t * B + r0) * H;
            gemm<T>(n, padn(H), H, rh0, H, 1, UT + a.off2, ldu, g + a.off2, ldu, nullptr, 0);  // U_c (r ⊙ h)
            for (int64_t i = 0; i < n; ++i) {
                const int64_t b = r0 + i, tb = t * B + b;
                const bool m = a.mask ? a.mask[tb] != 0 : true;
                const T* h = hp + i * H;
                T* ho = hn + i * H;
                f_gru_2<T>(H, gx + i * ldx, g + i * ldu + a.off2, h, act + tb * GH, ho);
                if (!m) std::memcpy(ho, h, H * sizeof(T));
                copy_or_zero<T>(H, m, ho, out + tb * H);
            }
        }
    }
}

// ---------------------------------------------------------------- backward
template <typename T>
static void backward_rows(const BwdArgs& a, int64_t p, int64_t r0, int64_t r1) {
    const int64_t Tn = a.T, B = a.B, H = a.H, I = a.I, n = r1 - r0, ldh = a.ldh, ldi = a.ldi;
    const int G = a.unit == LSTM ? 4 : (a.unit == GRU ? 3 : 1);
    const int64_t GH = G * H;
    const T* x = static_cast<const T*>(a.x);
    const T* Wp = static_cast<const T*>(a.Wp);
    const T* Up = static_cast<const T*>(a.Up);
    const T* v = static_cast<const T*>(a.v);
    const T* Hs = static_cast<const T*>(a.Hs);
    const T* Cs = static_cast<const T*>(a.Cs);
    const T* act = static_cast<const T*>(a.act);
    const T* aux = static_cast<const T*>(a.aux);
    const T* gout = static_cast<const T*>(a.gout);
    const T* ghT = static_cast<const T*>(a.ghT);
    const T* gcT = static_cast<const T*>(a.gcT);
    T* dx = static_cast<T*>(a.dx);
    T* dW = static_cast<T*>(a.dWp) + p * GH * ldi;
    T* dU = static_cast<T*>(a.dUp) + p * GH * ldh;
    T* db = static_cast<T*>(a.dbp) + p * GH;
    T* dv = static_cast<T*>(a.dv);
    const bool gru_paper = a.unit == GRU && !a.reset_after;
    const bool sep_x = a.unit == GRU && a.reset_after;   // W-side gradient differs from the U-side one
    const bool defer = a.dG != nullptr;   // weight gradients after the loop (by the caller), from dG / dGx
    const bool inl = !defer;
    std::vector<T> dhb(n * ldh, T(0)), dhdb(n * ldh, T(0)), zero(H, T(0)), db_(inl ? n * GH : 0, T(0)),
        dgxb(inl && sep_x ? n * GH : 0, T(0)), xpb(inl ? n * ldi : 0, T(0)), hpb(inl ? n * ldh : 0, T(0)),
        dxb(inl && dx ? n * ldi : 0), drhb(gru_paper ? n * ldh : 0, T(0)), dcb(a.unit == LSTM ? n * H : 0, T(0));
    T *dh = dhb.data(), *dhd = dhdb.data(), *d = db_.data(), *dgx = sep_x ? dgxb.data() : d;
    T *xp = xpb.data(), *hpad = hpb.data(), *dxs = dxb.data(), *drh = drhb.data(), *dc = dcb.data();
    if (ghT)
        for (int64_t i = 0; i < n; ++i) std::memcpy(dh + i * ldh, ghT + (r0 + i) * H, H * sizeof(T));
    if (a.unit == LSTM && gcT) std::memcpy(dc, gcT + r0 * H, n * H * sizeof(T));

    for (int64_t t = Tn - 1; t >= 0; --t) {
        if (defer) {   // this step's rows of the caller's (T, B, G*H) buffers
            d = static_cast<T*>(a.dG) + (t * B + r0) * GH;
            dgx = sep_x ? static_cast<T*>(a.dGx) + (t * B + r0) * GH : d;
        }
        for (int64_t i = 0; i < n; ++i) {
            const int64_t b = r0 + i, tb = t * B + b;
            const bool m = a.mask ? a.mask[tb] != 0 : true;
            T* di = d + i * GH;
            T* dhr = dh + i * ldh;
            T* dd = dhd + i * ldh;
            if (!m) {  // padded step: the state passes through untouched, no gate gradient
                std::memset(di, 0, GH * sizeof(T));
                if (sep_x) std::memset(dgx + i * GH, 0, GH * sizeof(T));
                std::memcpy(dd, dhr, H * sizeof(T));
                continue;
            }
            const T* go = gout ? gout + tb * H : zero.data();
            const T* hp = Hs + tb * H;
            if (a.unit == TANH) {
                b_tanh<T>(H, dhr, go, Hs + (tb + B) * H, di, dd);
            } else if (a.unit == LSTM) {
                if (a.peep)
                    b_lstm<T, true>(H, dhr, go, act + tb * GH, aux + tb * H, Cs + tb * H, Cs + (tb + B) * H, v,
                                    dc + i * H, dv + b * 3 * H, di, dd);
                else
                    b_lstm<T, false>(H, dhr, go, act + tb * GH, aux + tb * H, Cs + tb * H, Cs + (tb + B) * H, v,
                                     dc + i * H, nullptr, di, dd);
            } else if (a.reset_after) {
                b_gru_after<T>(H, dhr, go, act + tb * GH, aux + tb * H, hp, di, dgx + i * GH, dd);
            } else {
                b_gru_1<T>(H, dhr, go, act + tb * GH, hp, di, dd);
            }
        }
        if (gru_paper) {
            // d(r ⊙ h_{t-1}) = d_cand U_c, then the reset gate's gradient and the direct path
            gemm<T>(n, ldh, H, d + 2 * H, GH, 1, Up + 2 * H * ldh, ldh, drh, ldh, nullptr, 0);
            for (int64_t i = 0; i < n; ++i) {
                const int64_t tb = t * B + r0 + i;
                if (a.mask && !a.mask[tb]) continue;
                b_gru_2<T>(H, drh + i * ldh, act + tb * GH, Hs + tb * H, d + i * GH, dhd + i * ldh);
            }
        }
        // dh_{t-1} = direct part + d U   (the paper GRU: only the z, r blocks; U_c went through r ⊙ h)
        gemm<T>(n, ldh, gru_paper ? 2 * H : GH, d, GH, 1, Up, ldh, dh, ldh, dhd, ldh);
        if (defer) continue;
        // weight gradients of this step (rank-n updates of the per-chunk partial sums)
        for (int64_t i = 0; i < n; ++i) {
            std::memcpy(xp + i * ldi, x + t * a.sT + (r0 + i) * a.sB, I * sizeof(T));
            std::memcpy(hpad + i * ldh, Hs + (t * B + r0 + i) * H, H * sizeof(T));
            add_to<T>(GH, dgx + i * GH, db);
        }
        gemm<T>(GH, ldi, n, dgx, 1, GH, xp, ldi, dW, ldi, dW, ldi);                   // dW += dgxᵀ x_t
        if (gru_paper) {
            gemm<T>(2 * H, ldh, n, d, 1, GH, hpad, ldh, dU, ldh, dU, ldh);            // [dU_z;dU_r] += dᵀ h
            for (int64_t i = 0; i < n; ++i)
                std::memcpy(hpad + i * ldh, aux + (t * B + r0 + i) * H, H * sizeof(T));
            gemm<T>(H, ldh, n, d + 2 * H, 1, GH, hpad, ldh, dU + 2 * H * ldh, ldh, dU + 2 * H * ldh, ldh);
            // dU_c += d_candᵀ (r ⊙ h)
        } else {
            gemm<T>(GH, ldh, n, d, 1, GH, hpad, ldh, dU, ldh, dU, ldh);               // dU += dᵀ h_{t-1}
        }
        if (dx) {
            gemm<T>(n, ldi, GH, dgx, GH, 1, Wp, ldi, dxs, ldi, nullptr, 0);           // dx_t = dgx W
            for (int64_t i = 0; i < n; ++i)
                std::memcpy(dx + t * a.sT + (r0 + i) * a.sB, dxs + i * ldi, I * sizeof(T));
        }
    }
    T* dh0 = static_cast<T*>(a.dh0);
    for (int64_t i = 0; i < n; ++i) std::memcpy(dh0 + (r0 + i) * H, dh + i * ldh, H * sizeof(T));
    if (a.unit == LSTM) std::memcpy(static_cast<T*>(a.dc0) + r0 * H, dc, n * H * sizeof(T));
}

}  // namespace

extern "C" {

int gr_abi_version() { return 4; }

// number of row chunks per model (= partial-sum slots per model) the loops use
int64_t gr_num_parts(int64_t B, int64_t nthreads) { return num_chunks(B, nthreads); }

void gr_set_chunks_per_thread(int64_t c) { g_chunks_per_thread = std::max<int64_t>(1, c); }

// a: K argument blocks (one per model, same shapes), all run in one parallel region
int gr_forward(const FwdArgs* a, int64_t K, int is_double) {
    if (is_double)
        run_items(K, a->B, a->nthreads, [&](int64_t k, int64_t, int64_t r0, int64_t r1) { forward_rows<double>(a[k], r0, r1); });
    else
        run_items(K, a->B, a->nthreads, [&](int64_t k, int64_t, int64_t r0, int64_t r1) { forward_rows<float>(a[k], r0, r1); });
    return 0;
}

int gr_backward(const BwdArgs* a, int64_t K, int is_double) {
    if (is_double)
        run_items(K, a->B, a->nthreads, [&](int64_t k, int64_t p, int64_t r0, int64_t r1) { backward_rows<double>(a[k], p, r0, r1); });
    else
        run_items(K, a->B, a->nthreads, [&](int64_t k, int64_t p, int64_t r0, int64_t r1) { backward_rows<float>(a[k], p, r0, r1); });
    return 0;
}

}  // extern "C"
