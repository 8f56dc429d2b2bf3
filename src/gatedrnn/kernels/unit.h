// What a unit family's kernel (tanh.cpp, gru.cpp, lstm.cpp) provides to the time loops (fused.cpp).
//
// The loops own everything that is the same for every unit: the parallel region over (model, chunk of
// rows), the state sequences (training) or ping-pong rows (inference), padded rows, the input
// projection b + W x_t (dense, sparse or bytes), g = U h_{t-1}, and in backward dh_{t-1} += d U, the
// weight gradients dW, db, dx and the partial sums. A kernel supplies one step, forward and backward,
// written once: the training forward and the inference loop run the same forward_step.
//
// To add a unit family: a new file <unit>.cpp with a Kernel<T> subclass and its factory (declared
// below), a code in abi.h's Unit and a case in fused.cpp's make_kernel; loader.py compiles every
// kernels/*.cpp into the one library.
#pragma once
#include "common.h"
#include "abi.h"
#include <memory>

namespace gr __attribute__((visibility("hidden"))) {

// the operand copies of one model for one call (made by the drivers in fused.cpp and by the kernel's
// prepare_* hooks; the argument block points into them)
// WTp, UTp, Upp, Wpp: the loop's own large operands packed into panels (common.h pack_panels; empty:
// not packed), used only by fused.cpp's products (a unit's own products read the unpacked copies)
template <typename T>
struct FwdOps { Buf<T> WT, bx, UT, RT, WTp, UTp; };
template <typename T>
struct BwdOps { Buf<T> Wp, Up, dWp, dUp, dbp, dWTp, dvr, Rp, dRp, Upp, Wpp; };

// One forward step t of one chunk of batch rows. The loop has already handled the rows outside
// [lo, hi) (padded at this step: state carried, output zero) and computed, for rows [lo, hi),
// gx = b + W x_t and g = U h_{t-1} in g's first n1 columns. forward_step then writes, for every row i
// in [lo, hi): h_t and the unit's other carried state (a padded row i inside the range, !valid(i),
// keeps its state), the activations backward reads (at, ut; training), and the output (finish()).
// Pointers are to the chunk's row 0 (rows of this step; row strides: H, G*H, ldx, ldu, 3H).
template <typename T>
struct FwdStep {
    const FwdArgs& a;        // operands: UT, RT, v, ldx, ldu, off2
    int64_t H, lo, hi;
    const uint8_t* mt;       // the chunk's mask at t, or null (all valid)
    const T* gx;             // (rows, ldx) b + W x_t
    T* g;                    // (rows, ldu) U h_{t-1} in [0, n1); the kernel may use the rest
    const T* hp;             // (rows, H) h_{t-1}
    T* hn;                   // (rows, H) h_t
    const T* cp;             // (rows, H) cell state c_{t-1}, c_t (kernels with a cell; else null)
    T* cn;
    const T* gp;             // (rows, gs) gate state of t-1, of t (kernels with a gate state; else null)
    T* gn;
    T* at;                   // (rows, G*H) activations, (rows, H) aux: in training this step's rows of
    T* ut;                   //   act/aux, in inference scratch rows (null if the kernel keeps none)
    T* ot;                   // (rows, H) output
    const T* UTp;            // Uᵀ packed in panels of NB columns over all ldu columns (K = H), or null
    bool valid(int64_t i) const { return !mt || mt[i] != 0; }
    // row i's end: a padded row keeps h_{t-1}; the output is h_t, or zero on a padded row
    void finish(int64_t i, bool m) const {
        if (!m) std::memcpy(hn + i * H, hp + i * H, H * sizeof(T));
        copy_or_zero<T>(H, m, hn + i * H, ot + i * H);
    }
};

// One backward step t of one chunk. The loop has passed dh through the padded rows (outside [lo, hi)
// and the invalid ones inside: d = 0, dhd = dh, dgad = dga). backward_step writes, for the valid rows
// in [lo, hi): the gate gradients d (and dgx if the kernel has sep_x), the part dhd of dL/dh_{t-1} that
// does not go through d U (the loop adds d U, over d's first ku columns, after the step), dL/dc_{t-1}
// over dL/dc_t in dc; a kernel with a gate state also forms dga = dgad + d Rp over rows [lo, hi).
template <typename T>
struct BwdStep {
    const BwdArgs& a;        // operands: Hs, Cs, act, aux, Up, v, Rp, ldg, dvr, dRp
    int64_t t, p, r0, lo, hi;   // step, chunk (its partial-sum slot), the chunk's first batch row, rows
    int64_t H, GH, ldh, ldg;
    const uint8_t* mt;
    T* d;                    // (rows, GH) gate gradients (the U side)
    T* dgx;                  // (rows, GH) the W side (= d unless sep_x)
    T* dh;                   // (rows, ldh) dL/dh_t (carried)
    T* dhd;                  // (rows, ldh) out: the direct part of dL/dh_{t-1}
    T* dc;                   // (rows, H) dL/dc_t in, dL/dc_{t-1} out (kernels with a cell)
    T* dga;                  // (rows, ldg) dL/d(gate state)_t in, _{t-1} out; dgad its direct part
    T* dgad;
    T* hpad;                 // (rows, ldh) h_{t-1}, padded (accumulate(): rows [lo, hi) filled)
    T* dU;                   // (GH, ldh) this chunk's partial dU (accumulate())
    T* scratch;              // (rows, the kernel's scratch width)
    const T* zero;           // H zeros
    const T* Upp;            // U (GH, ldh) packed in panels of NB columns (K = GH rows), or null
    bool valid(int64_t i) const { return !mt || mt[i] != 0; }
    int64_t tb(int64_t i) const { return t * a.B + r0 + i; }   // row i's index in the (T(+1), B, ·) sequences
    const T* go(int64_t i) const {                            // dL/dout_t of row i
        return a.gout ? static_cast<const T*>(a.gout) + t * a.gsT + (r0 + i) * a.gsB : zero;
    }
};

template <typename T>
struct Kernel {
    int G = 1;               // gate blocks: W, U, b have G*H rows
    bool acts = true;        // keeps activations per step: act (G*H) and aux (H)
    bool cell = false;       // carries a cell state c (Cs, c0, cT; gcT, dc0)
    int64_t gs = 0;          // width of a carried gate state per row (Gs, g0, gT; ggT, dg0), 0: none
    bool sep_x = false;      // backward: the W-side gate gradients differ from the U-side ones (dgx)
    int64_t n1 = 0;          // forward: columns of g = U h_{t-1} the loop computes (a multiple of NB)
    int64_t ku = 0;          // backward: columns of d whose d U the loop adds to dh_{t-1}
    int64_t scratch = 0;     // backward: scratch values per row
    bool plain_dU = true;    // accumulate() is the default dU += dᵀ h_{t-1} alone (the loop may batch it)

    virtual ~Kernel() = default;
    // U^T into o.UT, padded: a.UT, a.ldu, a.off2 (default: all G*H columns, ldu = n1 = pad(G*H))
    virtual void prepare_forward(FwdArgs& a, FwdOps<T>& o) const {
        const int64_t GH = G * a.H;
        a.ldu = padn(GH);
        a.off2 = 0;
        o.UT.assign(a.H * a.ldu, T(0));
        put_transposed<T>(o.UT.data(), a.ldu, 0, static_cast<const T*>(a.U), GH, a.H);
        a.UT = o.UT.data();
    }
    virtual void forward_step(const FwdStep<T>& s) const = 0;
    // the kernel's own operands and partial sums (after the loop's Wp, Up, dWp, dUp, dbp; P chunks)
    virtual void prepare_backward(BwdArgs&, BwdOps<T>&, int64_t /*P*/) const {}
    virtual void backward_step(const BwdStep<T>& s) const = 0;
    // the weight gradients through U (inline mode, after dW): default dU += dᵀ h_{t-1}. A kernel that
    // overrides it sets plain_dU = false (else the loop adds dU over several steps at once without it)
    virtual void accumulate(const BwdStep<T>& s) const {
        const int64_t m_ = s.hi - s.lo;
        gemm<T>(s.GH, s.ldh, m_, s.d + s.lo * s.GH, 1, s.GH, s.hpad + s.lo * s.ldh, s.ldh, s.dU, s.ldh, s.dU,
                s.ldh);
    }
    // the kernel's own gradients from its partial sums (after the loop's dW, dU, db)
    virtual void reduce_backward(const BwdArgs&, const BwdOps<T>&, int64_t /*P*/) const {}
};

// the unit families (tanh.cpp, gru.cpp, lstm.cpp), float and double
template <typename T> std::unique_ptr<Kernel<T>> tanh_kernel(int64_t H);
template <typename T> std::unique_ptr<Kernel<T>> gru_kernel(int64_t H, bool reset_after, int64_t lvar);
template <typename T> std::unique_ptr<Kernel<T>> lstm_kernel(int64_t H, bool peep, int64_t lvar);

}  // namespace gr
