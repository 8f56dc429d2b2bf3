// The common part of the fused kernels: the register-blocked GEMM micro-kernel, the activations, the
// row helpers and the parallel region over (model, chunk of batch rows). Included by every kernel file
// (fused.cpp: the time loops; tanh.cpp, gru.cpp, lstm.cpp: the units' steps; readout.cpp); no torch
// headers. Everything is in namespace gr with hidden visibility: only the gr_* C functions (fused.cpp,
// readout.cpp) are exported from the library.
#pragma once
// (Headers are a large part of a file's compile time: immintrin.h alone took ~0.9 s with -march=native,
// so no file includes it; <thread> only for the build without OpenMP.)
#include <cstdint>
#include <cstring>
#include <cmath>
#include <vector>
#include <algorithm>
#include <atomic>
#include <new>
#include <type_traits>
#ifndef _OPENMP
#include <thread>
#endif

// the library's exported C functions (everything else is hidden; a function taking a hidden type
// would be hidden too without this)
#define GR_API extern "C" __attribute__((visibility("default")))

namespace gr __attribute__((visibility("hidden"))) {

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
inline __attribute__((always_inline)) float fexp(float x) {
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
inline __attribute__((always_inline)) float sigm(float x) { return 1.0f / (1.0f + fexp(-x)); }
inline __attribute__((always_inline)) float tanh_(float x) {
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
inline double sigm(double x) { return 1.0 / (1.0 + std::exp(-x)); }
inline double tanh_(double x) { return std::tanh(x); }
// log for x > 0 (normal), Cephes logf, branch-free
inline __attribute__((always_inline)) float flog(float x) {
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

inline int64_t padn(int64_t n) { return (n + NB - 1) / NB * NB; }

// ---------------------------------------------------------------- small GEMM
// C[M x Np] = (Cin ? Cin : 0) + A[M x K] * B[K x Np]; Np a multiple of NB, B padded with zeros.
// A is addressed as A[m * ars + k * aks] (so Aᵀ works too); Cin may equal C (in-place accumulation)
// and may have row stride 0 (a broadcast bias row).
// Register-blocked with GCC vector extensions of the target's native width (VBYTES): R rows x NV*NB
// columns of C stay in vector registers, one broadcast FMA per row, k and native vector. Every element
// is summed the same way whatever the tile — Cin (or 0), then + a_k b_k for k = 0, 1, ... in order, one
// FMA each — so the blocking below (which depends on M and K) never changes a result.
template <typename T> struct Vec {
    typedef T type __attribute__((vector_size(VBYTES)));
    // the same vector read from / written to memory of T's alignment (C's rows need not be vector
    // aligned). Through std::memcpy into an array of vectors GCC 12 spilled the tile to the stack and
    // copied it in 16-byte halves, which made a rank-1 update (K = 1, batch 1) ~3x the loads and stores.
    typedef T mem __attribute__((vector_size(VBYTES), aligned(sizeof(T)), may_alias));
};

template <typename T, int R, int NV>
inline __attribute__((always_inline)) void micro(int64_t K, const T* __restrict A, int64_t ars, int64_t aks,
                                                        const T* __restrict Bm, int64_t ldb,
                                                        T* C, int64_t ldc, const T* Cin, int64_t ldcin,
                                                        int64_t ps = NB) {
    typedef typename Vec<T>::type V;
    typedef typename Vec<T>::mem VM;
    constexpr int L = VBYTES / int(sizeof(T));   // lanes per register
    constexpr int NVV = NV * NB / L;             // registers per row of the tile
    constexpr int VPB = NB / L;                  // registers per NB-column block (block v / VPB at ps)
    V acc[R][NVV];
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < NVV; ++v)
            acc[r][v] = Cin ? V(*reinterpret_cast<const VM*>(Cin + r * ldcin + v * L)) : V{};
    for (int64_t k = 0; k < K; ++k) {
        V b[NVV];
        for (int v = 0; v < NVV; ++v) b[v] = *reinterpret_cast<const VM*>(Bm + v / VPB * ps + k * ldb + v % VPB * L);
        for (int r = 0; r < R; ++r) {
            const T a = A[r * ars + k * aks];
            for (int v = 0; v < NVV; ++v) acc[r][v] += a * b[v];
        }
    }
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < NVV; ++v) *reinterpret_cast<VM*>(C + r * ldc + v * L) = acc[r][v];
}

// The column blocks of the register-blocked part: 2*NB (8 x 32 floats = 16 AVX-512 accumulators: 10
// loads per 16 FMAs) where 4+ rows of them fit in the register file (AVX-512), else NB.
template <typename T>
constexpr int main_blocks() { return micro_rows<T, 2>() >= 4 ? 2 : 1; }

// rows [0, M) (a multiple of R) of the column block at n0
template <typename T, int NV, int R>
inline void gemm_cols(int64_t M, int64_t n0, int64_t K, const T* A, int64_t ars, int64_t aks, const T* Bm,
                             int64_t ldb, T* C, int64_t ldc, const T* Cin, int64_t ldcin, int64_t ps) {
    for (int64_t m = 0; m + R <= M; m += R)
        micro<T, R, NV>(K, A + m * ars, ars, aks, Bm + n0 / NB * ps, ldb, C + m * ldc + n0, ldc,
                        Cin ? Cin + m * ldcin + n0 : nullptr, ldcin, ps);
}

// A few rows (m0, RR of them) across all columns, in blocks as wide as keep WIDE accumulators in flight
// (then halved for the rest of the columns): with one or two rows the NB-wide tile holds only 2-4
// accumulators, and each waits for its previous FMA (latency 4, two FMA pipes: 8 independent chains
// keep them busy) — at batch 1 the products U h, d U were latency-bound at a quarter of the FMA rate.
constexpr int WIDE = 8;
template <typename T, int RR>
constexpr int wide_blocks() {
    constexpr int n = WIDE * (VBYTES / int(sizeof(T))) / (NB * RR);
    return n >= 4 ? 4 : n >= 2 ? 2 : 1;
}
template <typename T, int RR, int NV>
inline void gemm_rows(int64_t m0, int64_t n0, int64_t Np, int64_t K, const T* A, int64_t ars, int64_t aks,
                             const T* Bm, int64_t ldb, T* C, int64_t ldc, const T* Cin, int64_t ldcin,
                             int64_t ps = NB) {
    for (; n0 + NV * NB <= Np; n0 += NV * NB)
        micro<T, RR, NV>(K, A + m0 * ars, ars, aks, Bm + n0 / NB * ps, ldb, C + m0 * ldc + n0, ldc,
                         Cin ? Cin + m0 * ldcin + n0 : nullptr, ldcin, ps);
    if constexpr (NV > 1) gemm_rows<T, RR, NV / 2>(m0, n0, Np, K, A, ars, aks, Bm, ldb, C, ldc, Cin, ldcin, ps);
}

template <typename T>
void gemm(int64_t M, int64_t Np, int64_t K, const T* A, int64_t ars, int64_t aks, const T* Bm,
          int64_t ldb, T* C, int64_t ldc, const T* Cin, int64_t ldcin, int64_t ps = NB) {
    constexpr int NV = main_blocks<T>(), R = micro_rows<T, NV>();
    int64_t m = 0;
    if (M >= R) {   // the register-blocked part: R rows share each loaded B vector
        const int64_t Mr = M / R * R;
        int64_t n0 = 0;
        for (; n0 + NV * NB <= Np; n0 += NV * NB) gemm_cols<T, NV, R>(Mr, n0, K, A, ars, aks, Bm, ldb, C, ldc, Cin, ldcin, ps);
        for (; n0 < Np; n0 += NB) gemm_cols<T, 1, R>(Mr, n0, K, A, ars, aks, Bm, ldb, C, ldc, Cin, ldcin, ps);
        m = Mr;
    }
    // the rest (all rows when M < R: batch 1 to 5): groups of 4, 2, 1 rows with wide column blocks
    if constexpr (R > 4)
        for (; m + 4 <= M; m += 4)
            gemm_rows<T, 4, wide_blocks<T, 4>()>(m, 0, Np, K, A, ars, aks, Bm, ldb, C, ldc, Cin, ldcin, ps);
    if constexpr (R > 2)
        for (; m + 2 <= M; m += 2)
            gemm_rows<T, 2, wide_blocks<T, 2>()>(m, 0, Np, K, A, ars, aks, Bm, ldb, C, ldc, Cin, ldcin, ps);
    for (; m < M; ++m) gemm_rows<T, 1, wide_blocks<T, 1>()>(m, 0, Np, K, A, ars, aks, Bm, ldb, C, ldc, Cin, ldcin, ps);
}

// ---------------------------------------------------------------- row helpers
// Elementwise loops over one batch row take their pointers as __restrict parameters, so that GCC
// vectorises them without alias-versioning (it only trusts restrict on parameters). The unit files
// write their row kernels the same way (R = __restrict, defined around them).
template <typename T>
void copy_or_zero(int64_t H, bool m, const T* __restrict src, T* __restrict o) {
    if (m) { for (int64_t j = 0; j < H; ++j) o[j] = src[j]; }
    else { for (int64_t j = 0; j < H; ++j) o[j] = T(0); }
}

template <typename T>
void add_to(int64_t n, const T* __restrict src, T* __restrict dst) {
    for (int64_t j = 0; j < n; ++j) dst[j] += src[j];
}

template <typename T>
void axpy_row(int64_t N, T a, const T* __restrict w, T* __restrict g) {
    for (int64_t j = 0; j < N; ++j) g[j] += a * w[j];
}

// dst (rows x cols, row stride ldd) = the sum of the P partial-sum slots of src (slot p at p * slot, row
// stride lds), added in slot order: row by row, so the adds vectorise (element by element, with the
// slot loop inside, they did not: ~0.2 ms of a batch-1 LSTM-128 backward)
template <typename T>
void sum_slots(int64_t rows, int64_t cols, const T* src, int64_t lds, int64_t slot, int64_t P, T* dst,
               int64_t ldd) {
    for (int64_t r = 0; r < rows; ++r) {
        std::memcpy(dst + r * ldd, src + r * lds, cols * sizeof(T));
        for (int64_t p = 1; p < P; ++p) add_to<T>(cols, src + p * slot + r * lds, dst + r * ldd);
    }
}

// Rows [lo, hi) of a chunk that are active (unmasked) at step t: rows outside it are padded at this
// step, so their state passes through unchanged and the GEMMs skip them (length-sorted batches then
// cost little more than their real steps; skipping an all-zero row changes no sum).
inline void active_range(const uint8_t* m, int64_t n, int64_t& lo, int64_t& hi) {
    lo = 0;
    hi = n;
    if (!m) return;
    while (lo < n && !m[lo]) ++lo;
    while (hi > lo && !m[hi - 1]) --hi;
}

// ---------------------------------------------------------------- buffers
// The operand copies and the per-chunk scratch rows are cache-line aligned: the elementwise passes and
// the micro-kernel move native-width vectors along rows whose lengths are multiples of NB, so with
// 64-byte-aligned buffers no vector access straddles two cache lines. (With malloc's 16-byte alignment
// the split accesses depended on allocation order and measured up to 15 % of an inference pass.)
template <typename T>
struct Aligned {
    using value_type = T;
    static constexpr std::align_val_t A{64};
    Aligned() = default;
    template <typename U> Aligned(const Aligned<U>&) {}
    T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), A)); }
    void deallocate(T* p, std::size_t) { ::operator delete(p, A); }
    template <typename U> bool operator==(const Aligned<U>&) const { return true; }
    template <typename U> bool operator!=(const Aligned<U>&) const { return false; }
};
template <typename T>
using Buf = std::vector<T, Aligned<T>>;

// ---------------------------------------------------------------- operands
// dst (rows x ld) = src (rows x cols, row-major) with zero-padded columns
template <typename T>
void pad_cols(Buf<T>& dst, const T* src, int64_t rows, int64_t cols, int64_t ld) {
    dst.assign(rows * ld, T(0));
    for (int64_t r = 0; r < rows; ++r) std::memcpy(dst.data() + r * ld, src + r * cols, cols * sizeof(T));
}

// dst[j * ld + off + g] = src[g * cols + j] (g < rows, j < cols): a transposed block into a padded matrix.
// In tiles of 16 x 16: element by element along a row of src, every store went to another row of dst
// (ld apart, 2 KiB for the LSTM-128's 4H columns: a new page every second store), and transposing W
// and U took ~0.5 ms per call at H = 128 — a quarter of a 100-step batch-1 forward.
template <typename T>
void put_transposed(T* dst, int64_t ld, int64_t off, const T* src, int64_t rows, int64_t cols) {
    constexpr int64_t TB = 16;
    for (int64_t g0 = 0; g0 < rows; g0 += TB)
        for (int64_t j0 = 0; j0 < cols; j0 += TB) {
            const int64_t g1 = std::min(rows, g0 + TB), j1 = std::min(cols, j0 + TB);
            for (int64_t j = j0; j < j1; ++j)
                for (int64_t g = g0; g < g1; ++g) dst[j * ld + off + g] = src[g * cols + j];
        }
}

// ---------------------------------------------------------------- packed operands
// A large B (K x Np, beyond the 1 MiB L2 here: the LSTM's Uᵀ from H = 256) streamed from L3 at every step
// in 64-byte pieces of rows ld apart — a new 4 KiB page at every k, which the hardware prefetcher does not
// cross — ran at ~4 GB/s. Packed once per call into panels of NB columns, each panel (K x NB) contiguous,
// a product streams whole panels. pack_panels: dst panel j = columns [j NB, j NB + NB) of src (rows of
// stride ld), at j * K * NB, row stride NB.
template <typename T>
void pack_panels(Buf<T>& dst, const T* src, int64_t K, int64_t ld, int64_t Np) {
    dst.resize(K * Np);
    for (int64_t j = 0; j < Np / NB; ++j)
        for (int64_t k = 0; k < K; ++k)
            std::memcpy(dst.data() + (j * K + k) * NB, src + k * ld + j * NB, NB * sizeof(T));
}

// C = Cin + A B with B packed (pack_panels over Kp >= K rows: panel j at Bp + j * Kp * NB). Panel by panel,
// every row of A (R-row tiles, then 4, 2, 1), so each panel comes from L3 once per product; fewer rows than
// a tile: gemm's row groups across consecutive panels. The same sums as gemm (see above).
template <typename T>
void gemm_packed(int64_t M, int64_t Np, int64_t K, const T* A, int64_t ars, int64_t aks, const T* Bp, int64_t Kp,
                 T* C, int64_t ldc, const T* Cin, int64_t ldcin) {
    constexpr int R = micro_rows<T, 1>();
    const int64_t ps = Kp * NB;
    if (M < R) return gemm<T>(M, Np, K, A, ars, aks, Bp, NB, C, ldc, Cin, ldcin, ps);
    for (int64_t n0 = 0; n0 < Np; n0 += NB) {
        const T* Bj = Bp + n0 / NB * ps;
        auto tile = [&](auto rows, int64_t m) {
            micro<T, decltype(rows)::value, 1>(K, A + m * ars, ars, aks, Bj, NB, C + m * ldc + n0, ldc,
                                                Cin ? Cin + m * ldcin + n0 : nullptr, ldcin);
        };
        int64_t m = 0;
        for (; m + R <= M; m += R) tile(std::integral_constant<int, R>{}, m);
        if constexpr (R > 4) for (; m + 4 <= M; m += 4) tile(std::integral_constant<int, 4>{}, m);
        if constexpr (R > 2) for (; m + 2 <= M; m += 2) tile(std::integral_constant<int, 2>{}, m);
        for (; m < M; ++m) tile(std::integral_constant<int, 1>{}, m);
    }
}

// ---------------------------------------------------------------- the parallel region
// The batch rows are cut into chunks (multiples of MR rows, about two per thread); each chunk runs
// the whole time loop. Threads take chunks from an atomic counter, so a thread that the OS
// deschedules (a busy machine) leaves its remaining chunks to the others. Chunk p writes partial
// sums into slot p. The chunk count (gr_set_chunks_per_thread, gr_set_chunk_rows) lives in fused.cpp.
int64_t num_chunks(int64_t B, int64_t nthreads);

// K independent problems (models) x chunks each = the work items of one parallel region.
template <typename F>
void run_items(int64_t K, int64_t B, int nthreads, F&& f) {
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

}  // namespace gr
