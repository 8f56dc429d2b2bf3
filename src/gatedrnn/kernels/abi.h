// The C ABI's argument blocks of gr_forward / gr_backward, mirrored field by field by autograd.py
// (_Fwd, _Bwd); the read-out's BernArgs is in readout.cpp. One block per model. The caller passes the
// weights as they are (row-major, contiguous); the zero-padded / transposed copies the micro-kernel
// wants are made in C++ (fields marked "internal"), once per call and model, as are the per-chunk
// partial sums and their reduction.
//
// Layouts (row-major; x and dx may have any row strides sT, sB with unit inner stride):
//   x    (T, B, I)     input
//   WT   (I, ldx)      W^T, columns zero-padded to ldx = pad(G*H); bx (ldx) the bias, padded
//   UT   (H, ldu)      U^T, columns zero-padded (paper GRU: [U_z;U_r]^T in [0, 2H), U_c^T at off2)
//   Wp   (G*H, ldi)    W, columns padded (ldi = pad(I)), for dx
//   Up   (G*H, ldh)    U, columns padded (ldh = pad(H)), for dh
//   Hs   (T+1, B, H)   the state sequence, Hs[0] = h0 (written by the forward)
//   Cs   (T+1, B, H)   LSTM cell sequence, Cs[0] = c0
//   out  (T, B, H)     h_t on valid steps, 0 on padded ones
//   act  (T, B, G*H)   saved activations (LSTM i,f,ĉ,o; GRU z,r,h̃; unused for tanh)
//   aux  (T, B, H)     LSTM tanh(c_t); GRU(reset_after) U_c h_{t-1}; GRU(paper) r_t ⊙ h_{t-1}
//   dWp  (P, G*H, ldi), dUp (P, G*H, ldh), dbp (P, G*H): per-chunk partial sums (zeroed by the driver)
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
#pragma once
#include <cstdint>

namespace gr __attribute__((visibility("hidden"))) {

// the unit codes (kernels.KINDS); each unit family's flags (lvar) are defined in its own file:
// LVar in lstm.cpp, GVar in gru.cpp (= kernels.VARIANT_BITS)
enum Unit : int32_t { TANH = 0, GRU = 1, LSTM = 2 };

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
    int64_t lvar;       // ablation bits (LV_* for the LSTM, GV_* for the GRU); 0 = the paper's unit
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
    int64_t lvar;       // ablation bits (LV_*, GV_*)
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

}  // namespace gr
