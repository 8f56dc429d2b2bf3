// The tanh-RNN's kernel (nn/tanh.py): h_t = tanh(W x_t + U h_{t-1} + b). One gate block, no
// activations kept (backward reads h_t from the state sequence).
#include "unit.h"

namespace gr __attribute__((visibility("hidden"))) {
namespace {

#define R __restrict
// forward: h = tanh(wx + U h_prev)
template <typename T>
void f_tanh(int64_t H, const T* R x, const T* R g, T* R ho) {
    for (int64_t j = 0; j < H; ++j) ho[j] = tanh_(x[j] + g[j]);
}

// backward: dh = carried dL/dh_t (state), go = dL/dout_t; write d (gate grads) and dd (the part of
// dL/dh_{t-1} that does not go through U)
template <typename T>
void b_tanh(int64_t H, const T* R dh, const T* R go, const T* R hn, T* R d, T* R dd) {
    for (int64_t j = 0; j < H; ++j) {
        T g = dh[j] + go[j];
        d[j] = g * (T(1) - hn[j] * hn[j]);
        dd[j] = T(0);
    }
}
#undef R

template <typename T>
struct Tanh final : Kernel<T> {
    explicit Tanh(int64_t H) {
        this->G = 1;
        this->acts = false;
        this->n1 = padn(H);
        this->ku = H;
    }

    void forward_step(const FwdStep<T>& s) const override {
        const int64_t H = s.H, ldx = s.a.ldx, ldu = s.a.ldu;
        for (int64_t i = s.lo; i < s.hi; ++i) {
            f_tanh<T>(H, s.gx + i * ldx, s.g + i * ldu, s.hn + i * H);
            s.finish(i, s.valid(i));
        }
    }

    void backward_step(const BwdStep<T>& s) const override {
        const int64_t H = s.H;
        const T* Hs = static_cast<const T*>(s.a.Hs);
        for (int64_t i = s.lo; i < s.hi; ++i)
            if (s.valid(i))
                b_tanh<T>(H, s.dh + i * s.ldh, s.go(i), Hs + (s.tb(i) + s.a.B) * H, s.d + i * s.GH,
                          s.dhd + i * s.ldh);
    }
};

}  // namespace

template <typename T>
std::unique_ptr<Kernel<T>> tanh_kernel(int64_t H) { return std::make_unique<Tanh<T>>(H); }
template std::unique_ptr<Kernel<float>> tanh_kernel<float>(int64_t);
template std::unique_ptr<Kernel<double>> tanh_kernel<double>(int64_t);

}  // namespace gr
