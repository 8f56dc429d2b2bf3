// Fused recurrent loops for the paper's three units (tanh-RNN, GRU, peephole LSTM) and their ablations
// that change only the elementwise pass or add a recurrence (docs/VARIANTS.md): the loops over time —
// the training forward, the inference loop (the same forward, keeping nothing for backward) and the
// backward — and the C ABI that autograd.py calls through ctypes (loader.py builds the library).
//
// Plain C++ with a C ABI: no torch headers. Everything of a forward or backward pass runs in here, in one
// parallel region with no synchronisation inside: the work items are (model, chunk of batch rows)
// — rows are independent in the recurrence — and each item runs the whole time loop on its rows.
// The region is OpenMP when built with -fopenmp (then it runs on torch's own libgomp pool), else
// std::thread (common.h).
//
// Per step and chunk, forward: two small GEMMs in a register-blocked micro-kernel (common.h),
// g_x = b + x_t W^T and g_h = h_{t-1} U^T, then the unit's step (unit.h: a Kernel in tanh.cpp, gru.cpp,
// lstm.cpp): ONE fused elementwise pass that writes the new state, the output and the activations
// backward needs (the paper's GRU adds a third GEMM, U_c (r ⊙ h); the LSTM's gate recurrence R g_{t-1}).
// Backward: the unit's step gives the gate gradients d_t, then dh_{t-1} = (direct part) + d_t U, and the
// weight gradients accumulated in per-chunk partial sums as rank-n updates (dU += d_tᵀ h_{t-1},
// dW += d_tᵀ x_t, db += Σ d_t; dx_t = d_t W if wanted), added up after the region (or, with dG set —
// very large H — left to the caller: dW, dU, db, dx as a few large GEMMs after the loop).
// The input projection over all steps is never materialised. Each argument block (abi.h) is one model;
// gr_forward / gr_backward take K of them (same shapes) and run them in one region.
#include "unit.h"
#include <type_traits>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace gr __attribute__((visibility("hidden"))) {

// ---------------------------------------------------------------- work items
static int64_t g_chunks_per_thread = 2;
static int64_t g_chunk_rows = 0;   // one thread: rows per chunk (0 = the whole batch is one chunk)

int64_t num_chunks(int64_t B, int64_t nthreads) {
    const int64_t blocks = (B + MR - 1) / MR;
    const int64_t one = g_chunk_rows > 0 ? (B + g_chunk_rows - 1) / g_chunk_rows : 1;
    return std::max<int64_t>(1, std::min<int64_t>(blocks, nthreads <= 1 ? one : g_chunks_per_thread * nthreads));
}

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

// the unit family's kernel for one argument block (unit codes: abi.h)
template <typename T>
static std::unique_ptr<Kernel<T>> make_kernel(int32_t unit, int32_t reset_after, int32_t peep, int64_t lvar,
                                              int64_t H) {
    switch (unit) {
    case TANH: return tanh_kernel<T>(H);
    case GRU: return gru_kernel<T>(H, reset_after != 0, lvar);
    default: return lstm_kernel<T>(H, peep != 0, lvar);
    }
}

// ---------------------------------------------------------------- input rows
// idx[0..c) = the k < I with x[k] != 0, ascending; returns c (the sparse input projection, and dW over
// the same entries in backward). Vector compares + bit scans where the target has them (a scalar scan
// of an 88-wide row cost more than the sparse products it feeds): GCC vector compares and the AVX2
// movemask builtins, not <immintrin.h>, whose parsing alone took ~0.9 s of this file's compile.
template <typename X>
static inline __attribute__((always_inline)) int64_t nonzeros(int64_t I, const X* __restrict x, int32_t* __restrict idx) {
    int64_t c = 0, k = 0;
#if defined(__AVX2__)
    if constexpr (std::is_same_v<X, float>) {
        typedef float V8 __attribute__((vector_size(32)));
        typedef int32_t M8 __attribute__((vector_size(32)));
        for (; k + 8 <= I; k += 8) {
            V8 v;
            std::memcpy(&v, x + k, sizeof v);
            const M8 nz = v != V8{};   // all ones where x != 0 (or NaN), as _CMP_NEQ_UQ
            unsigned m = static_cast<unsigned>(__builtin_ia32_movmskps256(reinterpret_cast<V8>(nz)));
            for (; m; m &= m - 1) idx[c++] = static_cast<int32_t>(k + __builtin_ctz(m));
        }
    } else if constexpr (std::is_same_v<X, uint8_t>) {
        typedef char V32 __attribute__((vector_size(32)));
        for (; k + 32 <= I; k += 32) {
            V32 v;
            std::memcpy(&v, x + k, sizeof v);
            const V32 z = v == V32{};
            unsigned m = ~static_cast<unsigned>(__builtin_ia32_pmovmskb256(z));
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

// Sparse input projection: gx = b + x W^T over the nonzero entries of each x row only (music inputs
// are piano rolls, ~4 of 88 keys on). The nonzero k are taken in ascending order with the same
// multiply-add as the dense micro-kernel, whose skipped terms add exactly zero: same sums.
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

// ---------------------------------------------------------------- forward (training and inference)
// A carried state of w values per row (h; a cell state; a gate state) for one chunk's rows: in training
// the caller's sequence (T+1, B, w) — [0] the initial state, [t+1] step t's, kept for backward — in
// inference two ping-pong blocks. w = 0: the unit has no such state (rows() is null).
template <typename T>
struct Carried {
    T* seq;
    Buf<T> pp;
    int64_t w, B, r0, n;
    bool infer;
    Carried(int64_t w_, bool infer_, void* seq_, int64_t B_, int64_t r0_, int64_t n_)
        : seq(static_cast<T*>(seq_)), pp(infer_ ? 2 * n_ * w_ : 0), w(w_), B(B_), r0(r0_), n(n_), infer(infer_) {}
    T* rows(int64_t t) { return !w ? nullptr : infer ? pp.data() + (t & 1) * n * w : seq + (t * B + r0) * w; }
    void init(const void* s0) {   // state 0 from the (B, w) initial state (null: zeros)
        if (!w) return;
        if (s0) std::memcpy(rows(0), static_cast<const T*>(s0) + r0 * w, n * w * sizeof(T));
        else std::memset(rows(0), 0, n * w * sizeof(T));
    }
    void store(void* dst, int64_t t) {   // state t into the (B, w) final state
        if (w) std::memcpy(static_cast<T*>(dst) + r0 * w, rows(t), n * w * sizeof(T));
    }
};

// The input projection gx = b + W x_t of a chunk's rows at each step (row stride ldx). Dense inputs of a
// chunk of at most AHEAD_ROWS rows (batch 1-4): AHEAD steps at a time, as one GEMM per row over those
// steps — the per-step product of one row was a matrix-vector product that streamed all of Wᵀ through
// the cache at every step, and at the LSTM-128's 4H x 128 Wᵀ and Uᵀ together filled the 512 KiB L2, so
// neither stayed (batch 1: ~40 % of a forward step). Each value is the same sum either way (gemm).
// Otherwise, per step: the active rows [lo, hi) only; sparse inputs over their nonzeros (sparse_gx).
// With Wᵀ packed (larger than the L2; more rows), the same ahead, S steps at a time as ONE product over
// their S n rows (copied together), S n ~ BLOCK_ROWS: per step, Wᵀ came from L3 once per row tile.
constexpr int64_t AHEAD_ROWS = 4, AHEAD = 24, BLOCK_ROWS = 64;
template <typename T>
struct InputProj {
    const FwdArgs& a;
    const T* WTp;   // packed Wᵀ or null
    int64_t r0, n, ldx;
    bool sparse, xu8, ahead, block;
    int64_t S, done = -1;   // ahead / block: steps per block, the first step of the block in gx
    Buf<T> gx, xcv;
    Buf<int32_t> idx;
    InputProj(const FwdArgs& a_, const T* WTp_, int64_t r0_, int64_t n_)
        : a(a_), WTp(WTp_), r0(r0_), n(n_), ldx(a_.ldx), sparse((a_.flags & 1) != 0), xu8((a_.flags & 2) != 0),
          ahead(!sparse && !xu8 && n_ <= AHEAD_ROWS), block(!sparse && !xu8 && !ahead && WTp_),
          S(std::min(a_.T, ahead ? AHEAD : block ? std::max<int64_t>(1, BLOCK_ROWS / n_) : 1)),
          gx(S * n_ * ldx), xcv(xu8 && !sparse ? n_ * a_.I : block ? S * n_ * a_.I : 0), idx(sparse ? a_.I : 0) {}

    // block mode: steps t0 .. t0+S-1, all n rows, row i of step t0 + s at (s n + i) ldx
    void run_block(int64_t t0) {
        const int64_t I = a.I, s1 = std::min(S, a.T - t0);
        for (int64_t s = 0; s < s1; ++s)
            for (int64_t i = 0; i < n; ++i)
                std::memcpy(xcv.data() + (s * n + i) * I, static_cast<const T*>(a.x) + (t0 + s) * a.sT + (r0 + i) * a.sB,
                            I * sizeof(T));
        gemm_packed<T>(s1 * n, ldx, I, xcv.data(), I, 1, WTp, I, gx.data(), ldx, static_cast<const T*>(a.bx), 0);
    }

    // row 0 of step t's projection (rows [lo, hi) valid)
    const T* step(int64_t t, int64_t lo, int64_t hi) {
        const int64_t I = a.I, m_ = hi - lo;
        const T* WT = static_cast<const T*>(a.WT);
        const T* bx = static_cast<const T*>(a.bx);
        if (block) {
            const int64_t t0 = t / S * S;
            if (t0 != done) run_block(t0), done = t0;
            return gx.data() + (t - t0) * n * ldx;
        }
        if (ahead) {
            const int64_t t0 = t / AHEAD * AHEAD;
            if (t0 != done) {   // steps t0 .. t0+AHEAD-1, row by row: row i of step t0 + s at (s n + i) ldx
                for (int64_t i = 0; i < n; ++i)
                    gemm<T>(std::min(AHEAD, a.T - t0), ldx, I, static_cast<const T*>(a.x) + t0 * a.sT + (r0 + i) * a.sB,
                            a.sT, 1, WT, ldx, gx.data() + i * ldx, n * ldx, bx, 0);
                done = t0;
            }
            return gx.data() + (t - t0) * n * ldx;
        }
        T* g = gx.data();
        if (xu8) {   // byte inputs (inference on compact batches): exact small integers
            const uint8_t* xt = static_cast<const uint8_t*>(a.x) + t * a.sT + (r0 + lo) * a.sB;
            if (sparse) return sparse_gx<T, uint8_t>(m_, I, xt, a.sB, WT, ldx, bx, g + lo * ldx, idx.data()), g;
            for (int64_t i = 0; i < m_; ++i)
                for (int64_t q = 0; q < I; ++q) xcv[i * I + q] = T(xt[i * a.sB + q]);
            gemm<T>(m_, ldx, I, xcv.data(), I, 1, WT, ldx, g + lo * ldx, ldx, bx, 0);
            return g;
        }
        const T* xt = static_cast<const T*>(a.x) + t * a.sT + (r0 + lo) * a.sB;
        if (sparse) sparse_gx<T, T>(m_, I, xt, a.sB, WT, ldx, bx, g + lo * ldx, idx.data());
        else gemm<T>(m_, ldx, I, xt, a.sB, 1, WT, ldx, g + lo * ldx, ldx, bx, 0);
        return g;
    }
};

// Training mode (Hs != null): writes Hs, Cs, Gs, act, aux for backward. Inference mode (Hs == null):
// keeps nothing for backward — the chunk's state lives in ping-pong rows (read from h0/c0/g0, final
// state written to hT/cT/gT), the activations in one step of scratch rows. Both run the same step.
template <typename T>
static void forward_rows(const FwdArgs& a, const FwdOps<T>& o, const Kernel<T>& k, int64_t r0, int64_t r1) {
    const int64_t Tn = a.T, B = a.B, H = a.H, I = a.I, n = r1 - r0;
    const int64_t GH = k.G * H, W3 = k.gs, ldu = a.ldu;
    const bool infer = a.Hs == nullptr;
    const bool xu8 = (a.flags & 2) != 0;   // x holds bytes (uint8), not T
    const T* UT = static_cast<const T*>(a.UT);
    T* out = static_cast<T*>(a.out);
    T* act = static_cast<T*>(a.act);
    T* aux = static_cast<T*>(a.aux);
    Carried<T> hs(H, infer, a.Hs, B, r0, n), cs(k.cell ? H : 0, infer, a.Cs, B, r0, n),
        gs(W3, infer, a.Gs, B, r0, n);
    Buf<T> gbuf(n * ldu);
    Buf<T> actb(infer && k.acts ? n * GH : 0), auxb(infer && k.acts ? n * H : 0);
    InputProj<T> xin(a, o.WTp.empty() ? nullptr : o.WTp.data(), r0, n);
    T* g = gbuf.data();
    hs.init(a.h0);
    cs.init(a.c0);
    gs.init(a.g0);

    const int64_t xbytes = I * (xu8 ? 1 : int64_t(sizeof(T)));
    for (int64_t t = 0; t < Tn; ++t) {
        if (t + 1 < Tn)   // the next step's input rows (batch-first x: one row per sequence, far apart)
            prefetch_rows(static_cast<const char*>(a.x) + ((t + 1) * a.sT + r0 * a.sB) * (xu8 ? 1 : sizeof(T)), n,
                          a.sB * (xu8 ? 1 : int64_t(sizeof(T))), xbytes);
        // this step's rows r0.. of the state (t-1 and t), activations and output
        T *hp = hs.rows(t), *hn = hs.rows(t + 1), *cp = cs.rows(t), *cn = cs.rows(t + 1), *gp = gs.rows(t),
          *gn = gs.rows(t + 1);
        T* at = !k.acts ? nullptr : infer ? actb.data() : act + (t * B + r0) * GH;
        T* ut = !k.acts ? nullptr : infer ? auxb.data() : aux + (t * B + r0) * H;
        T* ot = out + (t * B + r0) * H;
        const uint8_t* mt = a.mask ? a.mask + t * B + r0 : nullptr;
        int64_t lo, hi;
        active_range(mt, n, lo, hi);
        // rows outside [lo, hi): padded at this step — state carried, output zero
        auto carry = [&](int64_t i) {
            std::memcpy(hn + i * H, hp + i * H, H * sizeof(T));
            if (cn) std::memcpy(cn + i * H, cp + i * H, H * sizeof(T));
            if (gn) std::memcpy(gn + i * W3, gp + i * W3, W3 * sizeof(T));
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
        const T* gx = xin.step(t, lo, hi);   // b + W x_t
        if (o.UTp.empty()) gemm<T>(m_, k.n1, H, hp + lo * H, H, 1, UT, ldu, g + lo * ldu, ldu, nullptr, 0);  // U h_{t-1}
        else gemm_packed<T>(m_, k.n1, H, hp + lo * H, H, 1, o.UTp.data(), H, g + lo * ldu, ldu, nullptr, 0);
        k.forward_step(FwdStep<T>{a, H, lo, hi, mt, gx, g, hp, hn, cp, cn, gp, gn, at, ut, ot,
                                  o.UTp.empty() ? nullptr : o.UTp.data()});
    }
    hs.store(a.hT, Tn);
    cs.store(a.cT, Tn);
    gs.store(a.gT, Tn);
}

// ---------------------------------------------------------------- backward
// The in-loop weight gradients are rank-m updates, m = a chunk's active rows at a step. With few rows (batch
// 1-8) such an update is bound by reading and writing all of dW and dU at every step, not by its m FMAs per
// element (batch 1, the LSTM-36's 144 x 96 dW and 144 x 48 dU: ~60 % of the kernels' time in a training
// call). So the rows of consecutive steps are gathered, up to WBLOCK_ROWS of them, and added as ONE product.
// Each element of dW, dU still receives the same FMAs in the same order — steps descending, rows ascending
// within a step, one FMA per row (gemm) — so the sums are the same bit for bit.
constexpr int64_t WBLOCK_ROWS = 64, WBLOCK_MAX_N = 8;
template <typename T>
struct WeightBlock {
    int64_t GH, ldi, ldh, cap, r = 0;   // r: rows gathered
    bool dw, du, sep;                   // gathers dW's rows (dense x) / dU's (plain_dU) / separate U-side d
    Buf<T> dg, d, xb, hb;               // (cap, GH) W-side and U-side gate gradients, (cap, ldi) x, (cap, ldh) h
    WeightBlock(int64_t n, int64_t GH_, int64_t ldi_, int64_t ldh_, bool dw_, bool du_, bool sep_)
        : GH(GH_), ldi(ldi_), ldh(ldh_), cap(WBLOCK_ROWS / std::max<int64_t>(n, 1) * n), dw(dw_), du(du_),
          sep(sep_ && du_), dg(cap * GH_), d(sep ? cap * GH_ : 0), xb(dw_ ? cap * ldi_ : 0, T(0)),
          hb(du_ ? cap * ldh_ : 0, T(0)) {}
    // one row of this step: W-side / U-side gradient rows, its x row (I values) and h_{t-1} row (H values)
    void add(const T* dgr, const T* dr, const T* xr, int64_t I, const T* hr, int64_t H) {
        std::memcpy(dg.data() + r * GH, dgr, GH * sizeof(T));
        if (sep) std::memcpy(d.data() + r * GH, dr, GH * sizeof(T));
        if (dw) std::memcpy(xb.data() + r * ldi, xr, I * sizeof(T));
        if (du) std::memcpy(hb.data() + r * ldh, hr, H * sizeof(T));
        ++r;
    }
    void flush(T* dW, T* dU) {   // dW += dgᵀ x, dU += dᵀ h over the gathered rows (as the per-step gemm calls)
        if (!r) return;
        if (dw) gemm<T>(GH, ldi, r, dg.data(), 1, GH, xb.data(), ldi, dW, ldi, dW, ldi);
        if (du) gemm<T>(GH, ldh, r, sep ? d.data() : dg.data(), 1, GH, hb.data(), ldh, dU, ldh, dU, ldh);
        r = 0;
    }
};

template <typename T>
static void backward_rows(const BwdArgs& a, const BwdOps<T>& o, const Kernel<T>& k, int64_t p, int64_t r0,
                          int64_t r1) {
    const int64_t Tn = a.T, B = a.B, H = a.H, I = a.I, n = r1 - r0, ldh = a.ldh, ldi = a.ldi;
    const int64_t GH = k.G * H, W3 = k.gs, ldg = W3 ? a.ldg : 0;
    const T* x = static_cast<const T*>(a.x);
    const T* Wp = static_cast<const T*>(a.Wp);
    const T* Up = static_cast<const T*>(a.Up);
    const T* Hs = static_cast<const T*>(a.Hs);
    const T* ghT = static_cast<const T*>(a.ghT);
    const T* gcT = static_cast<const T*>(a.gcT);
    const T* ggT = static_cast<const T*>(a.ggT);
    const bool sep_x = k.sep_x;          // W-side gradient differs from the U-side one
    const bool defer = a.dG != nullptr;   // weight gradients after the loop (by the caller), from dG / dGx
    const bool inl = !defer;
    const bool sparse = inl && (a.flags & 1) != 0;
    T* dx = static_cast<T*>(a.dx);
    T* dW = inl && !sparse ? static_cast<T*>(a.dWp) + p * GH * ldi : nullptr;
    T* dWT = sparse ? static_cast<T*>(a.dWTp) + p * I * GH : nullptr;
    T* dU = inl ? static_cast<T*>(a.dUp) + p * GH * ldh : nullptr;
    T* db = inl ? static_cast<T*>(a.dbp) + p * GH : nullptr;
    // dh: the carried dL/dh_t (row stride ldh), dhd its direct part (not through d U); dc: dL/dc_t (cell);
    // dga: dL/d(gate state)_t (row stride ldg), dgad its direct part
    Buf<T> dhb(n * ldh, T(0)), dhdb(n * ldh, T(0)), zero(H, T(0)), db_(inl ? n * GH : 0, T(0)),
        dgxb(inl && sep_x ? n * GH : 0, T(0)), xpb(inl && !sparse ? n * ldi : 0, T(0)),
        hpb(inl ? n * ldh : 0, T(0)), dxb(inl && dx ? n * ldi : 0), dcb(k.cell ? n * H : 0, T(0)),
        dgab(n * ldg, T(0)), dgadb(n * ldg, T(0)), scr(n * k.scratch, T(0));
    Buf<int32_t> idx(sparse ? I : 0);
    // the weight gradients over several steps at once (WeightBlock): dense dW, and dU where the kernel's
    // accumulate() is the plain one; what is not gathered is added at each step
    const bool gather = inl && n <= WBLOCK_MAX_N && (!sparse || k.plain_dU);
    WeightBlock<T> wb(gather ? n : 0, GH, ldi, ldh, gather && !sparse, gather && k.plain_dU, sep_x);
    T *dh = dhb.data(), *dhd = dhdb.data(), *d = db_.data(), *dgx = sep_x ? dgxb.data() : d;
    T *xp = xpb.data(), *hpad = hpb.data(), *dxs = dxb.data(), *dc = dcb.data();
    T *dga = dgab.data(), *dgad = dgadb.data();
    if (ghT)
        for (int64_t i = 0; i < n; ++i) std::memcpy(dh + i * ldh, ghT + (r0 + i) * H, H * sizeof(T));
    if (k.cell && gcT) std::memcpy(dc, gcT + r0 * H, n * H * sizeof(T));
    if (W3 && ggT)
        for (int64_t i = 0; i < n; ++i) std::memcpy(dga + i * ldg, ggT + (r0 + i) * W3, W3 * sizeof(T));

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
            if (!mt || mt[i]) continue;
            // a padded row inside the range: the state passes through untouched, no gate gradient
            std::memset(d + i * GH, 0, GH * sizeof(T));
            if (sep_x) std::memset(dgx + i * GH, 0, GH * sizeof(T));
            std::memcpy(dhd + i * ldh, dh + i * ldh, H * sizeof(T));
            if (W3) std::memcpy(dgad + i * ldg, dga + i * ldg, W3 * sizeof(T));
        }
        const BwdStep<T> s{a, t, p, r0, lo, hi, H, GH, ldh, ldg, mt, d, dgx, dh, dhd, dc, dga, dgad, hpad, dU,
                           scr.data(), zero.data(), o.Upp.empty() ? nullptr : o.Upp.data()};
        k.backward_step(s);   // the gate gradients of the valid rows
        T* dl = d + lo * GH;          // the active rows' gate gradients
        T* dgl = dgx + lo * GH;
        // dh_{t-1} = direct part + d U   (the paper GRU: only the gate blocks; U_c went through r ⊙ h)
        if (o.Upp.empty()) gemm<T>(m_, ldh, k.ku, dl, GH, 1, Up, ldh, dh + lo * ldh, ldh, dhd + lo * ldh, ldh);
        else gemm_packed<T>(m_, ldh, k.ku, dl, GH, 1, o.Upp.data(), GH, dh + lo * ldh, ldh, dhd + lo * ldh, ldh);
        if (defer) continue;
        // weight gradients of this step (rank-m updates of the per-chunk partial sums), or its rows gathered
        if (gather && wb.r + m_ > wb.cap) wb.flush(dW, dU);
        for (int64_t i = lo; i < hi; ++i) {
            const T* xr = x + t * a.sT + (r0 + i) * a.sB;
            const T* hr = Hs + (t * B + r0 + i) * H;
            if (gather) wb.add(dgx + i * GH, d + i * GH, xr, I, hr, H);
            if (!sparse && !wb.dw) std::memcpy(xp + i * ldi, xr, I * sizeof(T));
            if (!wb.du) std::memcpy(hpad + i * ldh, hr, H * sizeof(T));
            add_to<T>(GH, dgx + i * GH, db);
        }
        if (sparse) {   // dW^T[k] += x_t[k] dgx over the nonzero k of each row, rows in order
            for (int64_t i = lo; i < hi; ++i) {
                const T* xr = x + t * a.sT + (r0 + i) * a.sB;
                const int64_t c = nonzeros<T>(I, xr, idx.data());
                for (int64_t q = 0; q < c; ++q)
                    axpy_row<T>(GH, xr[idx[q]], dgx + i * GH, dWT + int64_t(idx[q]) * GH);
            }
        } else if (!wb.dw) {
            gemm<T>(GH, ldi, m_, dgl, 1, GH, xp + lo * ldi, ldi, dW, ldi, dW, ldi);   // dW += dgxᵀ x_t
        }
        if (!wb.du) k.accumulate(s);   // dU += dᵀ h_{t-1} (and the unit's own)
        if (dx) {
            if (o.Wpp.empty()) gemm<T>(m_, ldi, GH, dgl, GH, 1, Wp, ldi, dxs + lo * ldi, ldi, nullptr, 0);   // dx_t = dgx W
            else gemm_packed<T>(m_, ldi, GH, dgl, GH, 1, o.Wpp.data(), GH, dxs + lo * ldi, ldi, nullptr, 0);
            for (int64_t i = lo; i < hi; ++i)
                std::memcpy(dx + t * a.sT + (r0 + i) * a.sB, dxs + i * ldi, I * sizeof(T));
        }
    }
    wb.flush(dW, dU);
    T* dh0 = static_cast<T*>(a.dh0);
    for (int64_t i = 0; i < n; ++i) std::memcpy(dh0 + (r0 + i) * H, dh + i * ldh, H * sizeof(T));
    if (k.cell) std::memcpy(static_cast<T*>(a.dc0) + r0 * H, dc, n * H * sizeof(T));
    if (W3) {
        T* dg0 = static_cast<T*>(a.dg0);
        for (int64_t i = 0; i < n; ++i) std::memcpy(dg0 + (r0 + i) * W3, dga + i * ldg, W3 * sizeof(T));
    }
}

// ---------------------------------------------------------------- drivers (operands, reduction)
// Operands of more than g_pack_bytes (256 KiB) are packed into panels for the loop's products (common.h gemm_packed):
// beyond what stays in the L2 next to the rest of a step, a product streams them from L3 at every step.
// (gr_set_pack_bytes changes it: the tests pack every operand and compare bit for bit.)
static int64_t g_pack_bytes = 256 * 1024;
template <typename T>
static bool packs(int64_t values) { return values * int64_t(sizeof(T)) > g_pack_bytes; }

// W^T (I, ldx) and the bias (ldx), padded to ldx = pad(G*H); U^T (and the unit's own) by the kernel
template <typename T>
static void forward_all(const FwdArgs* a0, int64_t K) {
    std::vector<FwdArgs> a(a0, a0 + K);
    std::vector<FwdOps<T>> ops(K);
    std::vector<std::unique_ptr<Kernel<T>>> kern(K);
    for (int64_t k = 0; k < K; ++k) {
        FwdArgs& x = a[k];
        FwdOps<T>& o = ops[k];
        kern[k] = make_kernel<T>(x.unit, x.reset_after, x.peep, x.lvar, x.H);
        const int64_t GH = kern[k]->G * x.H;
        x.ldx = padn(GH);
        o.WT.assign(x.I * x.ldx, T(0));
        put_transposed<T>(o.WT.data(), x.ldx, 0, static_cast<const T*>(x.W), GH, x.I);
        pad_cols<T>(o.bx, static_cast<const T*>(x.b), 1, GH, x.ldx);
        x.WT = o.WT.data();
        x.bx = o.bx.data();
        kern[k]->prepare_forward(x, o);
        // all ldu columns: the paper GRU's U_c^T (from off2) too, for its own product U_c (r ⊙ h)
        if (packs<T>(x.H * kern[k]->n1)) pack_panels<T>(o.UTp, static_cast<const T*>(x.UT), x.H, x.ldu, x.ldu);
        if (x.B > AHEAD_ROWS && !(x.flags & 3) && packs<T>(x.I * x.ldx)) pack_panels<T>(o.WTp, o.WT.data(), x.I, x.ldx, x.ldx);
    }
    run_items(K, a[0].B, a[0].nthreads,
              [&](int64_t k, int64_t, int64_t r0, int64_t r1) { forward_rows<T>(a[k], ops[k], *kern[k], r0, r1); });
}

template <typename T>
static void backward_all(const BwdArgs* a0, int64_t K) {
    std::vector<BwdArgs> a(a0, a0 + K);
    std::vector<BwdOps<T>> ops(K);
    std::vector<std::unique_ptr<Kernel<T>>> kern(K);
    const int64_t B = a[0].B, H = a[0].H, I = a[0].I;
    const int64_t P = num_chunks(B, a[0].nthreads), ldi = padn(I), ldh = padn(H);
    for (int64_t k = 0; k < K; ++k) {
        BwdArgs& x = a[k];
        BwdOps<T>& o = ops[k];
        kern[k] = make_kernel<T>(x.unit, x.reset_after, x.peep, x.lvar, H);
        const int64_t GH = kern[k]->G * H;
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
        kern[k]->prepare_backward(x, o, P);
        if (packs<T>(GH * ldh)) pack_panels<T>(o.Upp, o.Up.data(), GH, ldh, ldh);
        if (x.dx && !defer && packs<T>(GH * ldi)) pack_panels<T>(o.Wpp, o.Wp.data(), GH, ldi, ldi);
    }
    run_items(K, B, a[0].nthreads, [&](int64_t k, int64_t p, int64_t r0, int64_t r1) {
        backward_rows<T>(a[k], ops[k], *kern[k], p, r0, r1);
    });
    // the partial sums, added in chunk order
    for (int64_t k = 0; k < K; ++k) {
        const BwdArgs& x = a[k];
        const BwdOps<T>& o = ops[k];
        const int64_t GH = kern[k]->G * H;
        if (x.dG == nullptr) {
            if ((x.flags & 1) != 0) {   // sparse: dWᵀ per slot, (I, GH)
                Buf<T> dWT(I * GH);
                sum_slots<T>(I, GH, o.dWTp.data(), GH, I * GH, P, dWT.data(), GH);
                put_transposed<T>(static_cast<T*>(x.dW), I, 0, dWT.data(), I, GH);
            } else {
                sum_slots<T>(GH, I, o.dWp.data(), ldi, GH * ldi, P, static_cast<T*>(x.dW), I);
            }
            sum_slots<T>(GH, H, o.dUp.data(), ldh, GH * ldh, P, static_cast<T*>(x.dU), H);
            sum_slots<T>(1, GH, o.dbp.data(), GH, GH, P, static_cast<T*>(x.db), GH);
        }
        kern[k]->reduce_backward(x, o, P);
    }
}

}  // namespace gr

GR_API int gr_abi_version() { return 9; }

// number of row chunks per model (= partial-sum slots per model) the loops use
GR_API int64_t gr_num_parts(int64_t B, int64_t nthreads) { return gr::num_chunks(B, nthreads); }

GR_API void gr_set_chunks_per_thread(int64_t c) { gr::g_chunks_per_thread = std::max<int64_t>(1, c); }
GR_API void gr_set_chunk_rows(int64_t r) { gr::g_chunk_rows = std::max<int64_t>(0, r); }
// operands larger than this many bytes are packed into panels (see g_pack_bytes); returns the previous value
GR_API int64_t gr_set_pack_bytes(int64_t b) {
    const int64_t old = gr::g_pack_bytes;
    gr::g_pack_bytes = std::max<int64_t>(0, b);
    return old;
}

// transparent huge pages for a fresh buffer of `bytes` at p (see advise_huge)
GR_API void gr_advise_huge(void* p, int64_t bytes) { gr::advise_huge(p, bytes); }

// a: K argument blocks (one per model, same shapes), all run in one parallel region
GR_API int gr_forward(const gr::FwdArgs* a, int64_t K, int is_double) {
    if (is_double) gr::forward_all<double>(a, K);
    else gr::forward_all<float>(a, K);
    return 0;
}

GR_API int gr_backward(const gr::BwdArgs* a, int64_t K, int is_double) {
    if (is_double) gr::backward_all<double>(a, K);
    else gr::backward_all<float>(a, K);
    return 0;
}

// gr_bernoulli (the read-out + NLL): readout.cpp
