// Fused recurrent loops for the paper's three units (tanh-RNN, GRU, peephole LSTM), the LSTM ablations
// that change only the elementwise pass (LVar below), and the LSTM with full gate recurrence (LV_GREC:
// one more GEMM per step on the previous step's gates, a carried gate state and its gradient).
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
//   dv   (B, P*H)      per-row peephole gradient sums (P rows: 3, or fewer for an LSTM ablation)
// Gate recurrence (LV_GREC; lstm-fgr): R (3H, 3H) rows = receiving gate (i, f, o), columns = source gate
// (i, f, o) of the previous step; the gate state is (B, 3H) = [i | f | o] (g0 initial, gT final):
//   Gs   (T+1, B, 3H)  training: the gate-state sequence, Gs[0] = g0 (zeros if null), Gs[t+1] = step t's
//                      gates (carried on padded steps)
//   RT   (3H, ldu)     R^T with its receiving blocks at the columns of i, f, o in g (the c̃ columns zero):
//                      forward adds Gs[t] RT to U h_{t-1}
//   Rp   (G*H, ldg)    R with rows at the gate blocks of d (ldg = pad(3H); the c̃ rows zero): backward
//                      carries dL/dGs[t] = d_{t+1} Rp (plus the direct part on padded steps)
//   dRp  (P, G*H, ldg) per-chunk partial sums of dR += d_tᵀ Gs[t] (rows of d's layout)
#include <cstdint>
#include <cstring>
#include <cmath>
#include <vector>
#include <thread>
#include <algorithm>
#include <atomic>
#include <type_traits>
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif

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
// log for x > 0 (normal), Cephes logf, branch-free
static inline __attribute__((always_inline)) float flog(float x) {
    int32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    const int32_t e = ((bits >> 23) & 0xff) - 126;
    bits = (bits & 0x007fffff) | 0x3f000000;   // mantissa in [0.5, 1)
    float m;
    std::memcpy(&m, &bits, sizeof m);
    const bool lt = m < 0.707106781186547524f;
    const float fe = static_cast<float>(e) - (lt ? 1.0f : 0.0f);
    m = (lt ? m + m : m) - 1.0f;
    const float z = m * m;
    float y = 7.0376836292E-2f;
    y = y * m - 1.1514610310E-1f;
    y = y * m + 1.1676998740E-1f;
    y = y * m - 1.2420140846E-1f;
    y = y * m + 1.4249322787E-1f;
    y = y * m - 1.6668057665E-1f;
    y = y * m + 2.0000714765E-1f;
    y = y * m - 2.4999993993E-1f;
    y = y * m + 3.3333331174E-1f;
    y = y * m * z;
    y += -2.12194440E-4f * fe;
    y += -0.5f * z;
    return m + y + 0.693359375f * fe;
}

static inline int64_t padn(int64_t n) { return (n + NB - 1) / NB * NB; }

// The state sequence, activations and outputs of a pass are fresh multi-MB buffers (torch allocates
// them per call; glibc maps large ones anew each time), so every 4 KiB page of them costs a fault on
// first touch. With K models stacked they are K times larger and never recycled (one model's ~5 MB
// buffers come back from glibc's heap): measured, the faults made a K=10 tanh-100 forward+backward
// ~1.4x one model's CPU time per model. Asking for transparent huge pages on the 2 MiB-aligned interior
// of a whole (K, ...) buffer before its first write cuts the faults ~500-fold (a no-op where THP is off
// or the pages exist already). Called from Python (gr_advise_huge) on each buffer the kernels fill.
static void advise_huge(void* p, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    constexpr uintptr_t HP = uintptr_t(1) << 21;
    if (!p || bytes < int64_t(2 * HP)) return;
    const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + HP - 1) & ~(HP - 1);
    const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + uintptr_t(bytes)) & ~(HP - 1);
    if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#else
    (void)p; (void)bytes;
#endif
}

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

// LSTM ablations (Greff et al. 2015; nn/lstm_variants.py) as changes of the elementwise pass: a removed
// gate is the constant 1 (no weights, no block), the coupled input gate is 1 − f, an un-activated
// candidate / output is the identity. The present gates keep the order (i, f, c, o) in the weight
// blocks and (i, f, o) in the peephole rows.
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
static LLayout lstm_layout(int64_t H, int64_t lvar, bool peep) {
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
// GRU ablations (nn/gru_variants.py). No reset gate (r_t = 1): blocks (z, candidate), h̃ = tanh(W x +
// U h_{t-1} + b) — one GEMM over both blocks, as the reset_after form. The paper form's two stages
// (gates, then U (s ⊙ h_{t-1}) for the candidate) with ONE gate block s before the candidate: no update
// gate (s = r, h_t = h̃_t), or the minimal gated unit (s = f as both reset and update gate).
enum GVar : int64_t { GV_NO_R = 1, GV_NO_Z = 2, GV_MIN = 4 };
static inline int gates(int32_t unit, int64_t lvar, int64_t H) {
    if (unit == LSTM) return lstm_layout(H, lvar, false).G;
    if (unit != GRU) return 1;
    return (lvar & (GV_NO_R | GV_NO_Z | GV_MIN)) ? 2 : 3;
}
// the paper GRU's two-stage form (reset before the product), and its gate blocks before the candidate
static inline bool gru_two_stage(int32_t unit, int32_t reset_after, int64_t lvar) {
    return unit == GRU && !reset_after && !(lvar & GV_NO_R);
}
static inline int64_t gru_gate_blocks(int64_t lvar) { return (lvar & (GV_NO_Z | GV_MIN)) ? 1 : 2; }

// One argument block per model. The caller passes the weights as they are (row-major, contiguous);
// the zero-padded / transposed copies the micro-kernel wants are made here (fields marked
// "internal"), once per call and model, as are the per-chunk partial sums and their reduction.
struct FwdArgs {
    int64_t T, B, H, I;
    int32_t unit, reset_after, peep, nthreads;
    const void* x;
    int64_t sT, sB;
    const void* W;      // (G*H, I)
    const void* U;      // (G*H, H)
    const void* b;      // (G*H)
    const void* v;      // (3, H) peepholes or null
    const uint8_t* mask;
    const void* h0;     // (B, H)
    const void* c0;     // (B, H), LSTM
    void* Hs;           // training mode: (T+1, B, H) state sequence (Hs[0] = h0 is written here);
    void* Cs;           //   null = inference mode (then Cs, act, aux are null too)
    void* act;
    void* aux;
    void* out;
    void* hT;           // (B, H) final state
    void* cT;           // (B, H), LSTM
    int64_t flags;      // bit 0: sparse input projection (x mostly zeros); bit 1: x is uint8 (strides in
                        // elements as always)
    int64_t lvar;       // ablation bits (LV_* for the LSTM, GV_* for the GRU, below); 0 = the paper's unit
    const void* R;      // LV_GREC: (3H, 3H) gate recurrence; else null
    const void* g0;     // LV_GREC: (B, 3H) initial gate state, or null (zeros)
    void* Gs;           // LV_GREC, training: (T+1, B, 3H) gate-state sequence (null in inference mode)
    void* gT;           // LV_GREC: (B, 3H) final gate state
    // internal
    const void* WT;
    const void* bx;
    int64_t ldx;
    const void* UT;
    int64_t ldu, off2;
    const void* RT;     // LV_GREC: (3H, ldu), see the layouts above
};

struct BwdArgs {
    int64_t T, B, H, I;
    int32_t unit, reset_after, peep, nthreads;
    const void* x;
    int64_t sT, sB;
    const void* W;
    const void* U;
    const void* v;
    const uint8_t* mask;
    const void* Hs;
    const void* Cs;
    const void* act;
    const void* aux;
    const void* gout;   // (T,B,H) or null: gout[t, b, :] at gout + t*gsT + b*gsB (unit inner stride; a
    int64_t gsT, gsB;   //   broadcast gradient, e.g. of out.sum(), has stride 0 and is never materialised)
    const void* ghT;    // (B,H) or null
    const void* gcT;    // (B,H) or null
    void* dx;           // like x (strides sT, sB) or null
    void* dh0;
    void* dc0;
    void* dW;           // (G*H, I), (G*H, H), (G*H): the weight gradients (unless deferred)
    void* dU;
    void* db;
    void* dv;           // (3, H) peephole gradient (LSTM with peepholes) or null
    void* dG;           // (T,B,G*H) or null: if set, store the gate gradients there and leave dW, dU, db,
    void* dGx;          // dx to the caller; dGx (GRU reset_after): the W-side ones
    int64_t flags;      // bit 0: sparse input — dW accumulated transposed, over x's nonzeros
    int64_t lvar;       // ablation bits (LV_*, GV_* below)
    const void* R;      // LV_GREC: (3H, 3H), the forward's Gs, the incoming dL/dgT (B, 3H) or null; out:
    const void* Gs;     //   dg0 (B, 3H), dR (3H, 3H) (unless deferred: then the caller forms dR from dG, Gs)
    const void* ggT;
    void* dg0;
    void* dR;
    // internal
    const void* Wp;     // W, U with zero-padded columns (ldi = pad(I), ldh = pad(H))
    int64_t ldi;
    const void* Up;
    int64_t ldh;
    void* dWp;          // (P, G*H, ldi), (P, G*H, ldh), (P, G*H): per-chunk partial sums
    void* dUp;
    void* dbp;
    void* dWTp;         // (P, I, G*H) per-chunk partial sums of dW^T (sparse input)
    void* dvr;          // (B, P*H) per-row peephole gradient sums
    const void* Rp;     // LV_GREC: (G*H, ldg), see the layouts above; dRp (P, G*H, ldg) partial sums
    int64_t ldg;
    void* dRp;
};

// The batch rows are cut into chunks (multiples of MR rows, about two per thread); each chunk runs
// the whole time loop. Threads take chunks from an atomic counter, so a thread that the OS
// deschedules (a busy machine) leaves its remaining chunks to the others. Chunk p writes partial
// sums into slot p.
static int64_t g_chunks_per_thread = 2;
static int64_t g_chunk_rows = 0;   // one thread: rows per chunk (0 = the whole batch is one chunk)

static int64_t num_chunks(int64_t B, int64_t nthreads) {
    const int64_t blocks = (B + MR - 1) / MR;
    const int64_t one = g_chunk_rows > 0 ? (B + g_chunk_rows - 1) / g_chunk_rows : 1;
    return std::max<int64_t>(1, std::min<int64_t>(blocks, nthreads <= 1 ? one : g_chunks_per_thread * nthreads));
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

// forward, GRU without reset gate: g = U h_prev (both blocks)
template <typename T>
static void f_gru_nrg(int64_t H, const T* R x, const T* R g, const T* R h, T* R ac, T* R ho) {
    for (int64_t j = 0; j < H; ++j) {
        T z = sigm(x[j] + g[j]);
        T c = tanh_(x[H + j] + g[H + j]);
        ac[j] = z; ac[H + j] = c;
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

// forward, one gate block s (no update gate: s = r; minimal: s = f), stage 1: s and s ⊙ h_prev
template <typename T>
static void f_gru1_1(int64_t H, const T* R x, const T* R g, const T* R h, T* R ac, T* R sh) {
    for (int64_t j = 0; j < H; ++j) {
        T s = sigm(x[j] + g[j]);
        ac[j] = s; sh[j] = s * h[j];
    }
}

// stage 2: candidate (block 1) from g2 = U_c (s ⊙ h_prev); new state h̃ (NOZ) or (1 − s) h + s h̃
template <typename T, bool NOZ>
static void f_gru1_2(int64_t H, const T* R x, const T* R g2, const T* R h, T* R ac, T* R ho) {
    for (int64_t j = 0; j < H; ++j) {
        T c = tanh_(x[H + j] + g2[j]);
        ac[H + j] = c;
        if (NOZ) ho[j] = c;
        else { T s = ac[j]; ho[j] = (T(1) - s) * h[j] + s * c; }
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

// forward / backward of an LSTM ablation (lvar != 0), gates at the offsets of L; constants for the
// removed gates. Kept apart from f_lstm / b_lstm so the paper's LSTM keeps its specialised loops.
template <typename T>
static void f_lstm_var(int64_t H, const LLayout& L, const T* R x, const T* R g, const T* R v, const T* R c,
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
static void b_lstm_var(int64_t H, const LLayout& L, const T* R dh, const T* R go, const T* R ac, const T* R tc,
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

template <typename T>
static void b_gru_nrg(int64_t H, const T* R dh, const T* R go, const T* R ac, const T* R hp, T* R d, T* R dd) {
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

// one gate block s, stage 1: the candidate's gradient, and the update role of s (minimal unit; no
// update gate: none, h_t = h̃_t). d[s] is completed by stage 2 (its reset role), so it is set here.
template <typename T, bool NOZ>
static void b_gru1_1(int64_t H, const T* R dh, const T* R go, const T* R ac, const T* R hp, T* R d, T* R dd) {
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
static void b_gru1_2(int64_t H, const T* R q, const T* R ac, const T* R hp, T* R d, T* R dd) {
    for (int64_t j = 0; j < H; ++j) {
        T s = ac[j];
        d[j] += q[j] * hp[j] * s * (T(1) - s);
        dd[j] += q[j] * s;
    }
}

// the gate state [i | f | o] (3H) of one row from its activations (gate recurrence)
template <typename T>
static void put_gates(int64_t H, const LLayout& L, const T* R ac, T* R gs) {
    for (int64_t j = 0; j < H; ++j) {
        gs[j] = ac[L.oi + j];
        gs[H + j] = ac[L.of + j];
        gs[2 * H + j] = ac[L.oo + j];
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
// Rows [lo, hi) of a chunk that are active (unmasked) at step t: rows outside it are padded at this
// step, so their state passes through unchanged and the GEMMs skip them (length-sorted batches then
// cost little more than their real steps; skipping an all-zero row changes no sum).
static inline void active_range(const uint8_t* m, int64_t n, int64_t& lo, int64_t& hi) {
    lo = 0;
    hi = n;
    if (!m) return;
    while (lo < n && !m[lo]) ++lo;
    while (hi > lo && !m[hi - 1]) --hi;
}

// Sparse input projection: gx = b + x W^T over the nonzero entries of each x row only (music inputs
// are piano rolls, ~4 of 88 keys on). The nonzero k are taken in ascending order with the same
// multiply-add as the dense micro-kernel, whose skipped terms add exactly zero: same sums.
// idx[0..c) = the k < I with x[k] != 0, ascending; returns c. Vector compares + bit scans where the
// target has them (a scalar scan of an 88-wide row cost more than the sparse products it feeds).
template <typename X>
static inline __attribute__((always_inline)) int64_t nonzeros(int64_t I, const X* __restrict x, int32_t* __restrict idx) {
    int64_t c = 0, k = 0;
#if defined(__AVX2__)
    if constexpr (std::is_same_v<X, float>) {
        const __m256 z = _mm256_setzero_ps();
        for (; k + 8 <= I; k += 8) {
            unsigned m = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + k), z, _CMP_NEQ_UQ)));
            for (; m; m &= m - 1) idx[c++] = static_cast<int32_t>(k + __builtin_ctz(m));
        }
    } else if constexpr (std::is_same_v<X, uint8_t>) {
        const __m256i z = _mm256_setzero_si256();
        for (; k + 32 <= I; k += 32) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k));
            unsigned m = ~static_cast<unsigned>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, z)));
            for (; m; m &= m - 1) idx[c++] = static_cast<int32_t>(k + __builtin_ctz(m));
        }
    }
#endif
    for (; k < I; ++k) {   // branch-free compaction
        idx[c] = static_cast<int32_t>(k);
        c += x[k] != X(0);
    }
    return c;
}

template <typename T>
static void axpy_row(int64_t N, T a, const T* __restrict w, T* __restrict g) {
    for (int64_t j = 0; j < N; ++j) g[j] += a * w[j];
}

template <typename T, typename X>
static void sparse_gx(int64_t n, int64_t I, const X* x, int64_t sB, const T* WT, int64_t ldx, const T* bx,
                      T* gx, int32_t* idx) {
    for (int64_t i = 0; i < n; ++i) {
        const X* xr = x + i * sB;
        T* g = gx + i * ldx;
        std::memcpy(g, bx, ldx * sizeof(T));
        const int64_t c = nonzeros<X>(I, xr, idx);
        for (int64_t q = 0; q < c; ++q) axpy_row<T>(ldx, T(xr[idx[q]]), WT + int64_t(idx[q]) * ldx, g);
    }
}

// software prefetch of n rows (row stride `stride` elements of p's type, `bytes` each)
template <typename P>
static inline void prefetch_rows(const P* p, int64_t n, int64_t stride, int64_t bytes) {
    for (int64_t i = 0; i < n; ++i) {
        const char* r = reinterpret_cast<const char*>(p + i * stride);
        for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(r + o);
    }
}

// Training mode (Hs != null): writes Hs, Cs, act, aux for backward. Inference mode (Hs == null):
// keeps nothing for backward — the state of the chunk's rows lives in two small ping-pong buffers
// (read from h0/c0, final state written to hT/cT), the activations in one step of scratch rows.
template <typename T>
static void forward_rows(const FwdArgs& a, int64_t r0, int64_t r1) {
    const int64_t Tn = a.T, B = a.B, H = a.H, I = a.I, n = r1 - r0;
    const int G = gates(a.unit, a.lvar, a.H);
    const int64_t GH = G * H, ldu = a.ldu, ldx = a.ldx;
    const LLayout LL = lstm_layout(H, a.lvar, a.peep != 0);
    const bool infer = a.Hs == nullptr;
    const bool sparse = (a.flags & 1) != 0;
    const bool xu8 = (a.flags & 2) != 0;   // x holds bytes (uint8), not T
    const uint8_t* x8 = static_cast<const uint8_t*>(a.x);
    const bool is_lstm = a.unit == LSTM;
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
    std::vector<T> hb(infer ? 2 * n * H : 0), cb(infer && is_lstm ? 2 * n * H : 0),
        actb(infer && a.unit != TANH ? n * GH : 0), auxb(infer && a.unit != TANH ? n * H : 0);
    std::vector<int32_t> idx(sparse ? I : 0);
    std::vector<T> xcv(xu8 && !sparse ? n * I : 0);
    T* g = gbuf.data();
    T* gx = gxbuf.data();
    std::memcpy(infer ? hb.data() : Hs + r0 * H, static_cast<const T*>(a.h0) + r0 * H, n * H * sizeof(T));
    if (is_lstm)
        std::memcpy(infer ? cb.data() : Cs + r0 * H, static_cast<const T*>(a.c0) + r0 * H, n * H * sizeof(T));
    // gate recurrence: the gate state [i|f|o]_{t-1} of the chunk's rows (Gs in training, else ping-pong)
    const bool grec = is_lstm && LL.grec;
    const int64_t H3 = 3 * H;
    T* Gs = static_cast<T*>(a.Gs);
    const T* RT = static_cast<const T*>(a.RT);
    std::vector<T> gsb(grec && infer ? 2 * n * H3 : 0);
    if (grec) {
        T* g0d = infer ? gsb.data() : Gs + r0 * H3;
        if (a.g0) std::memcpy(g0d, static_cast<const T*>(a.g0) + r0 * H3, n * H3 * sizeof(T));
        else std::memset(g0d, 0, n * H3 * sizeof(T));
    }
    const bool gru_paper = gru_two_stage(a.unit, a.reset_after, a.lvar);
    const int64_t NG = gru_gate_blocks(a.lvar) * H;   // two-stage GRU: the gate rows before the candidate
    const bool one_gate = gru_paper && NG == H, no_z = (a.lvar & GV_NO_Z) != 0;
    const int64_t N1 = gru_paper ? padn(NG) : padn(GH);

    const int64_t xbytes = I * (xu8 ? 1 : int64_t(sizeof(T)));
    for (int64_t t = 0; t < Tn; ++t) {
        if (t + 1 < Tn)   // the next step's input rows (batch-first x: one row per sequence, far apart)
            prefetch_rows(static_cast<const char*>(a.x) + ((t + 1) * a.sT + r0 * a.sB) * (xu8 ? 1 : sizeof(T)), n,
                          a.sB * (xu8 ? 1 : int64_t(sizeof(T))), xbytes);
        // this step's rows r0.. of every sequence buffer (row stride H, resp. GH)
        T* hp = infer ? hb.data() + (t & 1) * n * H : Hs + (t * B + r0) * H;          // h_{t-1}
        T* hn = infer ? hb.data() + ((t + 1) & 1) * n * H : Hs + ((t + 1) * B + r0) * H;  // h_t
        T* cp = !is_lstm ? nullptr : infer ? cb.data() + (t & 1) * n * H : Cs + (t * B + r0) * H;
        T* cn = !is_lstm ? nullptr : infer ? cb.data() + ((t + 1) & 1) * n * H : Cs + ((t + 1) * B + r0) * H;
        T* at = a.unit == TANH ? nullptr : infer ? actb.data() : act + (t * B + r0) * GH;
        T* ut = a.unit == TANH ? nullptr : infer ? auxb.data() : aux + (t * B + r0) * H;
        T* ot = out + (t * B + r0) * H;
        T* gp = !grec ? nullptr : infer ? gsb.data() + (t & 1) * n * H3 : Gs + (t * B + r0) * H3;        // gates_{t-1}
        T* gn = !grec ? nullptr : infer ? gsb.data() + ((t + 1) & 1) * n * H3 : Gs + ((t + 1) * B + r0) * H3;
        const uint8_t* mt = a.mask ? a.mask + t * B + r0 : nullptr;
        int64_t lo, hi;
        active_range(mt, n, lo, hi);
        // rows outside [lo, hi): padded at this step — state carried, output zero
        auto carry = [&](int64_t i) {
            std::memcpy(hn + i * H, hp + i * H, H * sizeof(T));
            if (is_lstm) std::memcpy(cn + i * H, cp + i * H, H * sizeof(T));
            if (grec) std::memcpy(gn + i * H3, gp + i * H3, H3 * sizeof(T));
            std::memset(ot + i * H, 0, H * sizeof(T));
            if (!infer && at) {   // defined activations (recycled buffers; the deferred backward reads every row)
                std::memset(at + i * GH, 0, GH * sizeof(T));
                std::memset(ut + i * H, 0, H * sizeof(T));
            }
        };
        for (int64_t i = 0; i < lo; ++i) carry(i);   // (all rows when none is active: lo = hi = n)
        for (int64_t i = hi; i < n; ++i) carry(i);
        if (lo >= hi) continue;
        const int64_t m_ = hi - lo;
        if (xu8) {   // byte inputs (inference on compact batches): exact small integers
            const uint8_t* xt = x8 + t * a.sT + (r0 + lo) * a.sB;
            if (sparse) {
                sparse_gx<T, uint8_t>(m_, I, xt, a.sB, WT, ldx, bx, gx + lo * ldx, idx.data());
            } else {
                for (int64_t i = 0; i < m_; ++i)
                    for (int64_t k = 0; k < I; ++k) xcv[i * I + k] = T(xt[i * a.sB + k]);
                gemm<T>(m_, ldx, I, xcv.data(), I, 1, WT, ldx, gx + lo * ldx, ldx, bx, 0);
            }
        } else {
            const T* xt = x + t * a.sT + (r0 + lo) * a.sB;
            if (sparse) sparse_gx<T, T>(m_, I, xt, a.sB, WT, ldx, bx, gx + lo * ldx, idx.data());
            else gemm<T>(m_, ldx, I, xt, a.sB, 1, WT, ldx, gx + lo * ldx, ldx, bx, 0);   // b + W x_t
        }
        gemm<T>(m_, N1, H, hp + lo * H, H, 1, UT, ldu, g + lo * ldu, ldu, nullptr, 0);  // U h_{t-1}
        if (grec)   // + R [i;f;o]_{t-1} into the i, f, o columns
            gemm<T>(m_, N1, H3, gp + lo * H3, H3, 1, RT, ldu, g + lo * ldu, ldu, g + lo * ldu, ldu);
        for (int64_t i = lo; i < hi; ++i) {
            const bool m = mt ? mt[i] != 0 : true;
            const T* xr = gx + i * ldx;
            const T* gg = g + i * ldu;
            const T* h = hp + i * H;
            T* ho = hn + i * H;
            if (a.unit == TANH) {
                f_tanh<T>(H, xr, gg, ho);
            } else if (is_lstm) {
                const T* c = cp + i * H;
                T* cc = cn + i * H;
                if (a.lvar) f_lstm_var<T>(H, LL, xr, gg, v, c, cc, at + i * GH, ut + i * H, ho);
                else if (a.peep) f_lstm<T, true>(H, xr, gg, v, c, cc, at + i * GH, ut + i * H, ho);
                else f_lstm<T, false>(H, xr, gg, v, c, cc, at + i * GH, ut + i * H, ho);
                if (!m) std::memcpy(cc, c, H * sizeof(T));
                if (grec) {
                    if (m) put_gates<T>(H, LL, at + i * GH, gn + i * H3);
                    else std::memcpy(gn + i * H3, gp + i * H3, H3 * sizeof(T));
                }
            } else if (a.lvar & GV_NO_R) {
                f_gru_nrg<T>(H, xr, gg, h, at + i * GH, ho);
            } else if (a.reset_after) {
                f_gru_after<T>(H, xr, gg, h, at + i * GH, ut + i * H, ho);
            } else {
                if (one_gate) f_gru1_1<T>(H, xr, gg, h, at + i * GH, ut + i * H);
                else f_gru_1<T>(H, xr, gg, h, at + i * GH, ut + i * H);
                continue;  // state and output in stage 2
            }
            if (!m) std::memcpy(ho, h, H * sizeof(T));
            copy_or_zero<T>(H, m, ho, ot + i * H);
        }
        if (gru_paper) {
            gemm<T>(m_, padn(H), H, ut + lo * H, H, 1, UT + a.off2, ldu, g + lo * ldu + a.off2, ldu, nullptr, 0);
            // U_c (r ⊙ h)  (one gate block: U_c (s ⊙ h))
            for (int64_t i = lo; i < hi; ++i) {
                const bool m = mt ? mt[i] != 0 : true;
                const T* h = hp + i * H;
                T* ho = hn + i * H;
                if (!one_gate) f_gru_2<T>(H, gx + i * ldx, g + i * ldu + a.off2, h, at + i * GH, ho);
                else if (no_z) f_gru1_2<T, true>(H, gx + i * ldx, g + i * ldu + a.off2, h, at + i * GH, ho);
                else f_gru1_2<T, false>(H, gx + i * ldx, g + i * ldu + a.off2, h, at + i * GH, ho);
                if (!m) std::memcpy(ho, h, H * sizeof(T));
                copy_or_zero<T>(H, m, ho, ot + i * H);
            }
        }
    }
    std::memcpy(static_cast<T*>(a.hT) + r0 * H, infer ? hb.data() + (Tn & 1) * n * H : Hs + (Tn * B + r0) * H,
                n * H * sizeof(T));
    if (is_lstm)
        std::memcpy(static_cast<T*>(a.cT) + r0 * H, infer ? cb.data() + (Tn & 1) * n * H : Cs + (Tn * B + r0) * H,
                    n * H * sizeof(T));
    if (grec)
        std::memcpy(static_cast<T*>(a.gT) + r0 * H3, infer ? gsb.data() + (Tn & 1) * n * H3 : Gs + (Tn * B + r0) * H3,
                    n * H3 * sizeof(T));
}

// ---------------------------------------------------------------- backward
template <typename T>
static void backward_rows(const BwdArgs& a, int64_t p, int64_t r0, int64_t r1) {
    const int64_t Tn = a.T, B = a.B, H = a.H, I = a.I, n = r1 - r0, ldh = a.ldh, ldi = a.ldi;
    const int G = gates(a.unit, a.lvar, a.H);
    const int64_t GH = G * H;
    const LLayout LL = lstm_layout(H, a.lvar, a.peep != 0);
    const int64_t PH = LL.P * H;   // a row of per-row peephole sums
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
    const bool gru_paper = gru_two_stage(a.unit, a.reset_after, a.lvar);
    const int64_t NG = gru_gate_blocks(a.lvar) * H;   // two-stage GRU: gate rows before the candidate at NG
    const bool one_gate = gru_paper && NG == H, no_z = (a.lvar & GV_NO_Z) != 0;
    const bool sep_x = a.unit == GRU && a.reset_after;   // W-side gradient differs from the U-side one
    const bool defer = a.dG != nullptr;   // weight gradients after the loop (by the caller), from dG / dGx
    const bool inl = !defer;
    const bool sparse = inl && (a.flags & 1) != 0;
    T* dx = static_cast<T*>(a.dx);
    T* dW = inl && !sparse ? static_cast<T*>(a.dWp) + p * GH * ldi : nullptr;
    T* dWT = sparse ? static_cast<T*>(a.dWTp) + p * I * GH : nullptr;
    T* dU = inl ? static_cast<T*>(a.dUp) + p * GH * ldh : nullptr;
    T* db = inl ? static_cast<T*>(a.dbp) + p * GH : nullptr;
    T* dv = static_cast<T*>(a.dvr);
    std::vector<T> dhb(n * ldh, T(0)), dhdb(n * ldh, T(0)), zero(H, T(0)), db_(inl ? n * GH : 0, T(0)),
        dgxb(inl && sep_x ? n * GH : 0, T(0)), xpb(inl && !sparse ? n * ldi : 0, T(0)),
        hpb(inl ? n * ldh : 0, T(0)), dxb(inl && dx ? n * ldi : 0), drhb(gru_paper ? n * ldh : 0, T(0)),
        dcb(a.unit == LSTM ? n * H : 0, T(0));
    std::vector<int32_t> idx(sparse ? I : 0);
    T *dh = dhb.data(), *dhd = dhdb.data(), *d = db_.data(), *dgx = sep_x ? dgxb.data() : d;
    T *xp = xpb.data(), *hpad = hpb.data(), *dxs = dxb.data(), *drh = drhb.data(), *dc = dcb.data();
    if (ghT)
        for (int64_t i = 0; i < n; ++i) std::memcpy(dh + i * ldh, ghT + (r0 + i) * H, H * sizeof(T));
    if (a.unit == LSTM && gcT) std::memcpy(dc, gcT + r0 * H, n * H * sizeof(T));
    // gate recurrence: dga = the carried dL/d[i;f;o]_t (row stride ldg), dgad its direct part at a padded
    // step (carried unchanged; 0 on an active step, where the gate state is overwritten), gpad the
    // previous gates padded to ldg (inline dR)
    const bool grec = a.unit == LSTM && LL.grec;
    const int64_t H3 = 3 * H, ldg = grec ? a.ldg : 0;
    const T* Gs = static_cast<const T*>(a.Gs);
    const T* Rp = static_cast<const T*>(a.Rp);
    const T* ggT = static_cast<const T*>(a.ggT);
    T* dR = grec && inl ? static_cast<T*>(a.dRp) + p * GH * ldg : nullptr;
    std::vector<T> dgab(n * ldg, T(0)), dgadb(n * ldg, T(0)), gpb(grec && inl ? n * ldg : 0, T(0));
    T *dga = dgab.data(), *dgad = dgadb.data(), *gpad = gpb.data();
    if (grec && ggT)
        for (int64_t i = 0; i < n; ++i) std::memcpy(dga + i * ldg, ggT + (r0 + i) * H3, H3 * sizeof(T));

    for (int64_t t = Tn - 1; t >= 0; --t) {
        if (t > 0) prefetch_rows(x + (t - 1) * a.sT + r0 * a.sB, n, a.sB, I * int64_t(sizeof(T)));   // next step's x
        if (defer) {   // this step's rows of the caller's (T, B, G*H) buffers
            d = static_cast<T*>(a.dG) + (t * B + r0) * GH;
            dgx = sep_x ? static_cast<T*>(a.dGx) + (t * B + r0) * GH : d;
        }
        const uint8_t* mt = a.mask ? a.mask + t * B + r0 : nullptr;
        int64_t lo, hi;
        active_range(mt, n, lo, hi);
        // rows outside [lo, hi) are padded at this step: dh passes through unchanged (nothing to do),
        // no gate gradient (zeros where the caller or dx reads them)
        auto inactive = [&](int64_t i) {
            if (defer) {
                std::memset(d + i * GH, 0, GH * sizeof(T));
                if (sep_x) std::memset(dgx + i * GH, 0, GH * sizeof(T));
            }
            if (dx) std::memset(dx + t * a.sT + (r0 + i) * a.sB, 0, I * sizeof(T));
        };
        for (int64_t i = 0; i < lo; ++i) inactive(i);
        for (int64_t i = hi; i < n; ++i) inactive(i);
        if (lo >= hi) continue;
        const int64_t m_ = hi - lo;
        for (int64_t i = lo; i < hi; ++i) {
            const int64_t b = r0 + i, tb = t * B + b;
            const bool m = mt ? mt[i] != 0 : true;
            T* di = d + i * GH;
            T* dhr = dh + i * ldh;
            T* dd = dhd + i * ldh;
            if (!m) {  // padded step: the state passes through untouched, no gate gradient
                std::memset(di, 0, GH * sizeof(T));
                if (sep_x) std::memset(dgx + i * GH, 0, GH * sizeof(T));
                std::memcpy(dd, dhr, H * sizeof(T));
                if (grec) std::memcpy(dgad + i * ldg, dga + i * ldg, H3 * sizeof(T));
                continue;
            }
            const T* go = gout ? gout + t * a.gsT + b * a.gsB : zero.data();
            const T* hp = Hs + tb * H;
            if (a.unit == TANH) {
                b_tanh<T>(H, dhr, go, Hs + (tb + B) * H, di, dd);
            } else if (a.unit == LSTM) {
                if (grec) {
                    b_lstm_var<T, true>(H, LL, dhr, go, act + tb * GH, aux + tb * H, Cs + tb * H, Cs + (tb + B) * H,
                                        v, dc + i * H, dv ? dv + b * PH : nullptr, di, dd, dga + i * ldg);
                    std::memset(dgad + i * ldg, 0, H3 * sizeof(T));
                } else if (a.lvar)
                    b_lstm_var<T, false>(H, LL, dhr, go, act + tb * GH, aux + tb * H, Cs + tb * H, Cs + (tb + B) * H,
                                         v, dc + i * H, dv ? dv + b * PH : nullptr, di, dd, nullptr);
                else if (a.peep)
                    b_lstm<T, true>(H, dhr, go, act + tb * GH, aux + tb * H, Cs + tb * H, Cs + (tb + B) * H, v,
                                    dc + i * H, dv + b * PH, di, dd);
                else
                    b_lstm<T, false>(H, dhr, go, act + tb * GH, aux + tb * H, Cs + tb * H, Cs + (tb + B) * H, v,
                                     dc + i * H, nullptr, di, dd);
            } else if (a.lvar & GV_NO_R) {
                b_gru_nrg<T>(H, dhr, go, act + tb * GH, hp, di, dd);
            } else if (a.reset_after) {
                b_gru_after<T>(H, dhr, go, act + tb * GH, aux + tb * H, hp, di, dgx + i * GH, dd);
            } else if (!one_gate) {
                b_gru_1<T>(H, dhr, go, act + tb * GH, hp, di, dd);
            } else if (no_z) {
                b_gru1_1<T, true>(H, dhr, go, act + tb * GH, hp, di, dd);
            } else {
                b_gru1_1<T, false>(H, dhr, go, act + tb * GH, hp, di, dd);
            }
        }
        T* dl = d + lo * GH;          // the active rows' gate gradients
        T* dgl = dgx + lo * GH;
        if (gru_paper) {
            // d(r ⊙ h_{t-1}) = d_cand U_c, then the reset gate's gradient and the direct path
            gemm<T>(m_, ldh, H, dl + NG, GH, 1, Up + NG * ldh, ldh, drh + lo * ldh, ldh, nullptr, 0);
            for (int64_t i = lo; i < hi; ++i) {
                const int64_t tb = t * B + r0 + i;
                if (mt && !mt[i]) continue;
                if (one_gate) b_gru1_2<T>(H, drh + i * ldh, act + tb * GH, Hs + tb * H, d + i * GH, dhd + i * ldh);
                else b_gru_2<T>(H, drh + i * ldh, act + tb * GH, Hs + tb * H, d + i * GH, dhd + i * ldh);
            }
        }
        // dh_{t-1} = direct part + d U   (the paper GRU: only the gate blocks; U_c went through r ⊙ h)
        gemm<T>(m_, ldh, gru_paper ? NG : GH, dl, GH, 1, Up, ldh, dh + lo * ldh, ldh, dhd + lo * ldh, ldh);
        // dL/d[i;f;o]_{t-1} = direct part + d Rp  (gate recurrence)
        if (grec) gemm<T>(m_, ldg, GH, dl, GH, 1, Rp, ldg, dga + lo * ldg, ldg, dgad + lo * ldg, ldg);
        if (defer) continue;
        // weight gradients of this step (rank-m updates of the per-chunk partial sums)
        for (int64_t i = lo; i < hi; ++i) {
            if (!sparse) std::memcpy(xp + i * ldi, x + t * a.sT + (r0 + i) * a.sB, I * sizeof(T));
            std::memcpy(hpad + i * ldh, Hs + (t * B + r0 + i) * H, H * sizeof(T));
            add_to<T>(GH, dgx + i * GH, db);
        }
        if (sparse) {   // dW^T[k] += x_t[k] dgx over the nonzero k of each row, rows in order
            for (int64_t i = lo; i < hi; ++i) {
                const T* xr = x + t * a.sT + (r0 + i) * a.sB;
                const int64_t c = nonzeros<T>(I, xr, idx.data());
                for (int64_t q = 0; q < c; ++q)
                    axpy_row<T>(GH, xr[idx[q]], dgx + i * GH, dWT + int64_t(idx[q]) * GH);
            }
        } else {
            gemm<T>(GH, ldi, m_, dgl, 1, GH, xp + lo * ldi, ldi, dW, ldi, dW, ldi);   // dW += dgxᵀ x_t
        }
        if (gru_paper) {
            gemm<T>(NG, ldh, m_, dl, 1, GH, hpad + lo * ldh, ldh, dU, ldh, dU, ldh);   // [dU_z;dU_r] += dᵀ h
            for (int64_t i = lo; i < hi; ++i)
                std::memcpy(hpad + i * ldh, aux + (t * B + r0 + i) * H, H * sizeof(T));
            gemm<T>(H, ldh, m_, dl + NG, 1, GH, hpad + lo * ldh, ldh, dU + NG * ldh, ldh, dU + NG * ldh,
                    ldh);   // dU_c += d_candᵀ (r ⊙ h)
        } else {
            gemm<T>(GH, ldh, m_, dl, 1, GH, hpad + lo * ldh, ldh, dU, ldh, dU, ldh);   // dU += dᵀ h_{t-1}
        }
        if (grec) {   // dR += dᵀ [i;f;o]_{t-1} (rows of d's layout; the c̃ rows are dropped by the reduction)
            for (int64_t i = lo; i < hi; ++i)
                std::memcpy(gpad + i * ldg, Gs + (t * B + r0 + i) * H3, H3 * sizeof(T));
            gemm<T>(GH, ldg, m_, dl, 1, GH, gpad + lo * ldg, ldg, dR, ldg, dR, ldg);
        }
        if (dx) {
            gemm<T>(m_, ldi, GH, dgl, GH, 1, Wp, ldi, dxs + lo * ldi, ldi, nullptr, 0);   // dx_t = dgx W
            for (int64_t i = lo; i < hi; ++i)
                std::memcpy(dx + t * a.sT + (r0 + i) * a.sB, dxs + i * ldi, I * sizeof(T));
        }
    }
    T* dh0 = static_cast<T*>(a.dh0);
    for (int64_t i = 0; i < n; ++i) std::memcpy(dh0 + (r0 + i) * H, dh + i * ldh, H * sizeof(T));
    if (a.unit == LSTM) std::memcpy(static_cast<T*>(a.dc0) + r0 * H, dc, n * H * sizeof(T));
    if (grec) {
        T* dg0 = static_cast<T*>(a.dg0);
        for (int64_t i = 0; i < n; ++i) std::memcpy(dg0 + (r0 + i) * H3, dga + i * ldg, H3 * sizeof(T));
    }
}

// ---------------------------------------------------------------- Bernoulli read-out + NLL
// The music head and its loss in one pass over blocks of valid (unpadded) steps, never materialising
// the (B, T, O) logits: a = c + V h_t (micro-kernel GEMM), nll_t = Σ_o softplus(a_o) − y_o a_o with
// softplus(a) = max(a, 0) + log(1 + e^-|a|); in float the log terms are multiplied lane-wise (each
// factor in (1, 2], at most ceil(O/8) per lane) and 8 logs taken per step instead of O.
// With P set (training) the forward also stores σ(a) − y of every valid step, and backward forms
// da = g_t P, dh = da V, dV += daᵀ h, dc += Σ da (per-chunk partial sums); without P backward
// recomputes a. Rows are (b, t), b-major; padded rows get nll 0 and dh 0 and cost nothing.
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

constexpr int BL = 8;   // lanes of the per-step sums

// forward terms of one step: lin[o] = max(a, 0) − y a, fac[o] = 1 + e^-|a| (float) or the whole
// log term (double: log1p, exact enough for gradcheck); optionally p[o] = σ(a) − y
template <typename Y>
static inline void b_nll_terms(int64_t O, const float* __restrict a, const Y* __restrict y, float* __restrict lin,
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
static inline void b_nll_terms(int64_t O, const double* __restrict a, const Y* __restrict y,
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
static inline float log_(float x) { return flog(x); }
static inline double log_(double x) { return std::log(x); }

template <typename T>
static inline T b_nll_sum(int64_t ldo, const T* __restrict lin, const T* __restrict fac) {
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
static void b_nll_grad(int64_t O, T g, T* __restrict a, const Y* __restrict y) {   // a -> da, in place
    for (int64_t o = 0; o < O; ++o) a[o] = g * (sigm(a[o]) - static_cast<T>(y[o]));
}
template <typename T>
static void scale_row(int64_t O, T g, const T* __restrict p, T* __restrict da) {
    for (int64_t o = 0; o < O; ++o) da[o] = g * p[o];
}

template <typename T, typename Y>
static void bern_rows(const BernArgs& a, int64_t p, int64_t q0, int64_t q1) {
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
    std::vector<T> hbuf(RB * ldh, T(0)), abuf(RB * ldo, T(0)), lin(ldo, T(0)), fac(ldo, T(1)),
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

// ---------------------------------------------------------------- drivers (operands, reduction)

// dst (rows x ld) = src (rows x cols, row-major) with zero-padded columns
template <typename T>
static void pad_cols(std::vector<T>& dst, const T* src, int64_t rows, int64_t cols, int64_t ld) {
    dst.assign(rows * ld, T(0));
    for (int64_t r = 0; r < rows; ++r) std::memcpy(dst.data() + r * ld, src + r * cols, cols * sizeof(T));
}

// dst[j * ld + off + g] = src[g * cols + j] (g < rows, j < cols): a transposed block into a padded matrix
template <typename T>
static void put_transposed(T* dst, int64_t ld, int64_t off, const T* src, int64_t rows, int64_t cols) {
    for (int64_t g = 0; g < rows; ++g)
        for (int64_t j = 0; j < cols; ++j) dst[j * ld + off + g] = src[g * cols + j];
}

template <typename T>
struct FwdOps { std::vector<T> WT, bx, UT, RT; };

// W^T (I, ldx) and the bias (ldx), padded to ldx = pad(G*H); U^T (H, ldu), padded (the paper GRU:
// [U_z;U_r]^T in [0, 2H), U_c^T from off2, for its separate U_c (r ⊙ h) GEMM)
template <typename T>
static void prep_forward(FwdArgs& a, FwdOps<T>& o) {
    const int64_t H = a.H, I = a.I, GH = gates(a.unit, a.lvar, H) * H;
    const T* W = static_cast<const T*>(a.W);
    const T* U = static_cast<const T*>(a.U);
    a.ldx = padn(GH);
    o.WT.assign(I * a.ldx, T(0));
    put_transposed<T>(o.WT.data(), a.ldx, 0, W, GH, I);
    pad_cols<T>(o.bx, static_cast<const T*>(a.b), 1, GH, a.ldx);
    if (gru_two_stage(a.unit, a.reset_after, a.lvar)) {
        const int64_t NG = gru_gate_blocks(a.lvar) * H, n1 = padn(NG);
        a.ldu = n1 + padn(H);
        a.off2 = n1;
        o.UT.assign(H * a.ldu, T(0));
        put_transposed<T>(o.UT.data(), a.ldu, 0, U, NG, H);
        put_transposed<T>(o.UT.data(), a.ldu, n1, U + NG * H, H, H);
    } else {
        a.ldu = padn(GH);
        a.off2 = 0;
        o.UT.assign(H * a.ldu, T(0));
        put_transposed<T>(o.UT.data(), a.ldu, 0, U, GH, H);
    }
    const LLayout L = lstm_layout(H, a.lvar, false);
    if (a.unit == LSTM && L.grec) {   // R^T with receiving block q (i, f, o) at that gate's columns of g
        const T* R = static_cast<const T*>(a.R);
        o.RT.assign(3 * H * a.ldu, T(0));
        const int64_t off[3] = {L.oi, L.of, L.oo};
        for (int q = 0; q < 3; ++q) put_transposed<T>(o.RT.data(), a.ldu, off[q], R + q * H * 3 * H, H, 3 * H);
        a.RT = o.RT.data();
    }
    a.WT = o.WT.data();
    a.bx = o.bx.data();
    a.UT = o.UT.data();
}

template <typename T>
static void forward_all(const FwdArgs* a0, int64_t K) {
    std::vector<FwdArgs> a(a0, a0 + K);
    std::vector<FwdOps<T>> ops(K);
    for (int64_t k = 0; k < K; ++k) prep_forward<T>(a[k], ops[k]);
    run_items(K, a[0].B, a[0].nthreads, [&](int64_t k, int64_t, int64_t r0, int64_t r1) { forward_rows<T>(a[k], r0, r1); });
}

template <typename T>
struct BwdOps { std::vector<T> Wp, Up, dWp, dUp, dbp, dWTp, dvr, Rp, dRp; };

template <typename T>
static void backward_all(const BwdArgs* a0, int64_t K) {
    std::vector<BwdArgs> a(a0, a0 + K);
    std::vector<BwdOps<T>> ops(K);
    const int64_t B = a[0].B, H = a[0].H, I = a[0].I, GH = gates(a[0].unit, a[0].lvar, H) * H;
    const int64_t P = num_chunks(B, a[0].nthreads), ldi = padn(I), ldh = padn(H);
    for (int64_t k = 0; k < K; ++k) {
        BwdArgs& x = a[k];
        BwdOps<T>& o = ops[k];
        const bool defer = x.dG != nullptr, sparse = !defer && (x.flags & 1);
        pad_cols<T>(o.Wp, static_cast<const T*>(x.W), GH, I, ldi);
        pad_cols<T>(o.Up, static_cast<const T*>(x.U), GH, H, ldh);
        x.Wp = o.Wp.data(); x.ldi = ldi;
        x.Up = o.Up.data(); x.ldh = ldh;
        if (!defer) {
            if (sparse) o.dWTp.assign(P * I * GH, T(0));
            else o.dWp.assign(P * GH * ldi, T(0));
            o.dUp.assign(P * GH * ldh, T(0));
            o.dbp.assign(P * GH, T(0));
            x.dWp = o.dWp.data(); x.dWTp = o.dWTp.data(); x.dUp = o.dUp.data(); x.dbp = o.dbp.data();
        }
        if (x.dv) {
            o.dvr.assign(B * lstm_layout(H, x.lvar, true).P * H, T(0));
            x.dvr = o.dvr.data();
        }
        const LLayout L = lstm_layout(H, x.lvar, false);
        if (x.unit == LSTM && L.grec) {   // R's receiving blocks at the rows of d's gate blocks
            const int64_t ldg = padn(3 * H), off[3] = {L.oi, L.of, L.oo};
            const T* R = static_cast<const T*>(x.R);
            o.Rp.assign(GH * ldg, T(0));
            for (int q = 0; q < 3; ++q)
                for (int64_t j = 0; j < H; ++j)
                    std::memcpy(o.Rp.data() + (off[q] + j) * ldg, R + (q * H + j) * 3 * H, 3 * H * sizeof(T));
            x.Rp = o.Rp.data();
            x.ldg = ldg;
            if (!defer) {
                o.dRp.assign(P * GH * ldg, T(0));
                x.dRp = o.dRp.data();
            }
        }
    }
    run_items(K, B, a[0].nthreads, [&](int64_t k, int64_t p, int64_t r0, int64_t r1) { backward_rows<T>(a[k], p, r0, r1); });
    // the partial sums, added in chunk order (rows in order for the peepholes)
    for (int64_t k = 0; k < K; ++k) {
        const BwdArgs& x = a[k];
        const BwdOps<T>& o = ops[k];
        if (x.dG == nullptr) {
            T* dW = static_cast<T*>(x.dW);
            T* dU = static_cast<T*>(x.dU);
            T* db = static_cast<T*>(x.db);
            const bool sparse = (x.flags & 1) != 0;
            for (int64_t g = 0; g < GH; ++g) {
                for (int64_t i = 0; i < I; ++i) {
                    T s = sparse ? o.dWTp[i * GH + g] : o.dWp[g * ldi + i];
                    for (int64_t p = 1; p < P; ++p) s += sparse ? o.dWTp[(p * I + i) * GH + g] : o.dWp[(p * GH + g) * ldi + i];
                    dW[g * I + i] = s;
                }
                for (int64_t j = 0; j < H; ++j) {
                    T s = o.dUp[g * ldh + j];
                    for (int64_t p = 1; p < P; ++p) s += o.dUp[(p * GH + g) * ldh + j];
                    dU[g * H + j] = s;
                }
                T s = o.dbp[g];
                for (int64_t p = 1; p < P; ++p) s += o.dbp[p * GH + g];
                db[g] = s;
            }
        }
        const LLayout L = lstm_layout(H, x.lvar, false);
        if (x.dG == nullptr && x.unit == LSTM && L.grec) {   // dR: the gate rows of the partial sums
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
            T* dv = static_cast<T*>(x.dv);
            const int64_t PH = lstm_layout(H, x.lvar, true).P * H;
            for (int64_t j = 0; j < PH; ++j) {
                T s = o.dvr[j];
                for (int64_t b = 1; b < B; ++b) s += o.dvr[b * PH + j];
                dv[j] = s;
            }
        }
    }
}

template <typename T>
static void bernoulli_all(const BernArgs& a0) {
    BernArgs a = a0;
    const int64_t H = a.H, O = a.O, N = a.B * a.T, P = num_chunks(N, a.nthreads);
    const bool bwd = a.backward != 0;
    a.ldo = padn(O);
    a.ldh = padn(H);
    std::vector<T> VT(H * a.ldo, T(0)), cp, Vp, dVp, dcp;
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

extern "C" {

int gr_abi_version() { return 9; }

// number of row chunks per model (= partial-sum slots per model) the loops use
int64_t gr_num_parts(int64_t B, int64_t nthreads) { return num_chunks(B, nthreads); }

void gr_set_chunks_per_thread(int64_t c) { g_chunks_per_thread = std::max<int64_t>(1, c); }
void gr_set_chunk_rows(int64_t r) { g_chunk_rows = std::max<int64_t>(0, r); }

// transparent huge pages for a fresh buffer of `bytes` at p (see advise_huge)
void gr_advise_huge(void* p, int64_t bytes) { advise_huge(p, bytes); }

// a: K argument blocks (one per model, same shapes), all run in one parallel region
int gr_forward(const FwdArgs* a, int64_t K, int is_double) {
    if (is_double) forward_all<double>(a, K);
    else forward_all<float>(a, K);
    return 0;
}

int gr_backward(const BwdArgs* a, int64_t K, int is_double) {
    if (is_double) backward_all<double>(a, K);
    else backward_all<float>(a, K);
    return 0;
}

// the Bernoulli read-out + NLL over B*T rows (forward or backward, see BernArgs)
int gr_bernoulli(const BernArgs* a, int is_double) {
    if (is_double) bernoulli_all<double>(*a);
    else bernoulli_all<float>(*a);
    return 0;
}

}  // extern "C"
