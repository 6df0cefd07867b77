#include "kernels/cpu/spiking.h"

#include <algorithm>
#include <vector>
#include <cmath>
#include <cstring>

#include <Eigen/Core>

#include "core/parallel.h"
#include "kernels/spiking_math.h"

namespace stac::cpu {

using namespace stac::spiking;
using RowMatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

void quantize(int8_t* counts, const float* x, int64_t T, int64_t N, const float* inv, bool per_col, int n_min, int n_max) {
    for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < N; ++i)
            counts[t * N + i] = int8_t(quant_count(x[t * N + i] * inv[per_col ? i : 0], n_min, n_max));
}

void token_scale(float* r, float* xs, const float* x, int64_t T, int64_t N, const float* inv, bool per_col, int n_min,
                 int n_max) {
    const bool is_signed = n_min < 0;
    for (int64_t t = 0; t < T; ++t) {
        const float* row = x + t * N;
        float m = 0.0f;
        for (int64_t i = 0; i < N; ++i) {
            const float a = spiking::token_magnitude(row[i], inv[per_col ? i : 0], is_signed);
            m = a > m ? a : m;
        }
        r[t] = spiking::token_factor(m, n_max);
        for (int64_t i = 0; i < N; ++i) xs[t * N + i] = row[i] / r[t];
    }
}

void rescale_rows(float* out, const float* r, const float* b, int64_t T, int64_t N) {
    for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < N; ++i) out[t * N + i] = spiking::token_rescale(out[t * N + i], r[t], b ? b[i] : 0.0f);
}

void rescale_head_rows(float* out, const float* r, int64_t T, int64_t H, int64_t D) {
    for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h)
            for (int64_t d = 0; d < D; ++d) out[(t * H + h) * D + d] *= r[h * T + t];
}

namespace {

// S steps of a block of nb <= kNeuronBlock neurons, the neuron index innermost so the compiler
// vectorizes it (16 neurons per AVX-512 register). The update is spiking::if_step written without
// branches and in int32: |v| <= kMembraneLimit = 2^30 and a constant current is below 2^24 in
// magnitude (to_fixed clamps U to [n_min - 1, n_max + 1] * 2^16 with |n| <= 127), so v + current
// never leaves int32 and the saturation gives what if_step's int64 sum gives.
constexpr int64_t kNeuronBlock = 64;

template <bool kSpikes>
int64_t neuron_block(int8_t* counts, int8_t* spikes, int64_t TN, int64_t k0, int64_t nb, const int32_t* q,
                     const int32_t* r, int n_min, int n_max, int S) {
    using namespace spiking;
    int32_t e[kNeuronBlock], v[kNeuronBlock], n[kNeuronBlock];
    for (int64_t j = 0; j < nb; ++j) e[j] = 0, v[j] = kMembraneStart, n[j] = 0;
    int32_t events = 0;
    for (int s = 0; s < S; ++s) {
        int8_t* out = kSpikes ? spikes + int64_t(s) * TN + k0 : nullptr;
        for (int64_t j = 0; j < nb; ++j) {
            int32_t ej = e[j] + r[j];
            const int32_t carry = ej >= S ? 1 : 0;
            e[j] = ej - (carry ? S : 0);
            int32_t vj = v[j] + q[j] + carry;
            vj = vj > kMembraneLimit ? kMembraneLimit : (vj < -kMembraneLimit ? -kMembraneLimit : vj);
            const int32_t nj = n[j];
            const int32_t up = (vj >= kOne) & (nj < n_max);
            const int32_t dn = (vj < 0) & (nj > n_min);
            const int32_t sp = up - dn;
            v[j] = vj - sp * kOne;
            n[j] = nj + sp;
            events += up + dn;
            if constexpr (kSpikes) out[j] = int8_t(sp);
        }
    }
    for (int64_t j = 0; j < nb; ++j) counts[k0 + j] = int8_t(n[j]);
    return events;
}

}  // namespace

int64_t neurons_layerwise(int8_t* counts, int8_t* spikes, const float* x, int64_t T, int64_t N, const float* inv,
                          bool per_col, int n_min, int n_max, int S) {
    const int64_t TN = T * N;
    int64_t events = 0;
    int32_t q[kNeuronBlock], r[kNeuronBlock];
    for (int64_t k0 = 0; k0 < TN; k0 += kNeuronBlock) {
        const int64_t nb = std::min(kNeuronBlock, TN - k0);
        for (int64_t j = 0; j < nb; ++j) {
            const int64_t k = k0 + j;
            const int32_t U = to_fixed(x[k] * inv[per_col ? k % N : 0], n_min, n_max);
            // The constant current of spiking::ConstantCurrent, its quotient and remainder per neuron.
            const ConstantCurrent c(U, S);
            q[j] = c.q;
            r[j] = c.r;  // 0 <= r < S
        }
        events += spikes ? neuron_block<true>(counts, spikes, TN, k0, nb, q, r, n_min, n_max, S)
                         : neuron_block<false>(counts, spikes, TN, k0, nb, q, r, n_min, n_max, S);
    }
    return events;
}

int64_t neurons_step(double* v, int32_t* n, int8_t* spikes, const float* increment, int64_t T, int64_t N,
                     const float* inv, bool per_col, int n_min, int n_max) {
    int64_t events = 0;
    for (int64_t k = 0; k < T * N; ++k) {
        const double I = double(increment[k]) * double(inv[per_col ? k % N : 0]);
        const int32_t sp = if_step_real(v[k], n[k], I, n_min, n_max);
        spikes[k] = int8_t(sp);
        events += sp != 0;
    }
    return events;
}

// float(acc) * mult + b with one rounding after the multiply-add (an explicit fma, as CUDA's
// __fmaf_rn), so the result does not depend on whether the compiler contracts it.
void finish_linear(float* out, const double* acc, int64_t T, int64_t N, const float* mult, const float* b) {
    for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < N; ++j)
            out[t * N + j] = std::fma(float(acc[t * N + j]), mult[j], b ? b[j] : 0.0f);
}

void linear_counts(float* out, const int8_t* counts, int64_t T, int64_t K, const double* w, int64_t N,
                   const float* mult, const float* b, double* scratch) {
    double* xd = scratch;
    double* acc = scratch + T * K;
    for (int64_t i = 0; i < T * K; ++i) xd[i] = counts[i];
    Eigen::Map<const RowMatD> X(xd, T, K), W(w, K, N);
    Eigen::Map<RowMatD> A(acc, T, N);
    A.noalias() = X * W;
    finish_linear(out, acc, T, N, mult, b);
}

int64_t linear_spikes(float* out, const int8_t* spikes, int S, int64_t T, int64_t K, const double* w, int64_t N,
                      const float* mult, const float* b, double* acc) {
    // The spikes as lists: for step s and input k, the tokens that spiked (t, with the sign in bit 0).
    // Every spike then adds (or subtracts) row k of w into its token's accumulator; each row is
    // read once per (s, k) for all the tokens that need it, one block of output columns at a time,
    // the blocks side by side on the threads. The sums are exact integers, so order is free.
    thread_local std::vector<int32_t> start, list;  // grown once: the decode loop does not allocate
    start.assign(size_t(int64_t(S) * K + 1), 0);
    int64_t spikes_total = 0;
    for (int s = 0; s < S; ++s)
        for (int64_t t = 0; t < T; ++t) {
            const int8_t* sp = spikes + (int64_t(s) * T + t) * K;
            for (int64_t k = 0; k < K; ++k)
                if (sp[k] != 0) ++start[size_t(int64_t(s) * K + k + 1)], ++spikes_total;
        }
    for (size_t i = 1; i < start.size(); ++i) start[i] += start[i - 1];
    list.resize(size_t(spikes_total));
    {
        std::vector<int32_t>& fill = list;
        thread_local std::vector<int32_t> pos;
        pos.assign(start.begin(), start.end() - 1);
        for (int s = 0; s < S; ++s)
            for (int64_t t = 0; t < T; ++t) {
                const int8_t* sp = spikes + (int64_t(s) * T + t) * K;
                for (int64_t k = 0; k < K; ++k)
                    if (sp[k] != 0) fill[size_t(pos[size_t(int64_t(s) * K + k)]++)] = int32_t(t * 2 + (sp[k] < 0));
            }
    }
    const int32_t* st = start.data();
    const int32_t* ls = list.data();
    parallel_for(N, 256, [&](int64_t j0, int64_t j1) {
        const int64_t nb = j1 - j0;
        for (int64_t t = 0; t < T; ++t) std::fill(acc + t * N + j0, acc + t * N + j1, 0.0);
        for (int64_t sk = 0; sk < int64_t(S) * K; ++sk) {
            if (st[sk] == st[sk + 1]) continue;
            const double* __restrict row = w + (sk % K) * N + j0;
            for (int32_t i = st[sk]; i < st[sk + 1]; ++i) {
                double* __restrict a = acc + int64_t(ls[i] >> 1) * N + j0;
                if (ls[i] & 1)
                    for (int64_t j = 0; j < nb; ++j) a[j] -= row[j];
                else
                    for (int64_t j = 0; j < nb; ++j) a[j] += row[j];
            }
        }
    });
    finish_linear(out, acc, T, N, mult, b);
    return spikes_total * N;
}

void scores_counts(int32_t* scores, const int8_t* nq, const int8_t* kc, int64_t T, int64_t P, int64_t H, int64_t D,
                   int64_t cap, int64_t group) {
    const int64_t L = P + T, C = H * D;
    for (int64_t h = 0; h < H; ++h)
        for (int64_t t = 0; t < T; ++t) {
            int32_t* row = scores + (h * T + t) * L;
            const int8_t* q = nq + t * C + h * D;
            const int8_t* kh = kc + (h / group) * cap * D;
            for (int64_t j = 0; j <= P + t; ++j) {
                const int8_t* k = kh + j * D;
                int32_t acc = 0;
                for (int64_t d = 0; d < D; ++d) acc += int32_t(q[d]) * int32_t(k[d]);
                row[j] = acc;
            }
            for (int64_t j = P + t + 1; j < L; ++j) row[j] = 0;
        }
}

void pv_counts(int32_t* out, const int8_t* np, const int8_t* vc, int64_t T, int64_t P, int64_t H, int64_t D,
               int64_t cap, int64_t group) {
    const int64_t L = P + T, C = H * D;
    for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h) {
            int32_t* o = out + t * C + h * D;
            std::fill(o, o + D, 0);
            const int8_t* p = np + (h * T + t) * L;
            const int8_t* vh = vc + (h / group) * cap * D;
            for (int64_t j = 0; j <= P + t; ++j) {
                if (p[j] == 0) continue;
                const int8_t* v = vh + j * D;
                for (int64_t d = 0; d < D; ++d) o[d] += int32_t(p[j]) * int32_t(v[d]);
            }
        }
}

int64_t scores_spikes(int32_t* scores, const int8_t* qs, const int8_t* ks, const int8_t* kc, int S, int64_t T,
                      int64_t P, int64_t H, int64_t D, int64_t cap, int32_t* run, int64_t group) {
    const int64_t L = P + T, C = H * D, Ck = (H / group) * D;  // query and key widths
    int32_t* Qr = run;          // [T, C] running sum of q spikes before this step
    int32_t* Kr = run + T * C;  // [T, Ck] running sum of the chunk's k spikes up to this step
    std::fill(run, run + T * C + T * Ck, 0);
    std::fill(scores, scores + H * T * L, 0);
    int64_t ops = 0;
    for (int s = 0; s < S; ++s) {
        const int8_t* q = qs + int64_t(s) * T * C;
        const int8_t* k = ks + int64_t(s) * T * Ck;
        for (int64_t i = 0; i < T * Ck; ++i) Kr[i] += k[i];
        for (int64_t h = 0; h < H; ++h) {
            const int64_t g = h / group;
            for (int64_t t = 0; t < T; ++t) {
                int32_t* row = scores + (h * T + t) * L;
                const int8_t* qt = q + t * C + h * D;
                const int32_t* Qp = Qr + t * C + h * D;
                // cached keys are constants: the step adds q_t . K_j
                for (int64_t d = 0; d < D; ++d) {
                    if (qt[d] == 0) continue;
                    for (int64_t j = 0; j < P; ++j) row[j] += qt[d] * int32_t(kc[(g * cap + j) * D + d]);
                    ops += P;
                }
                // chunk keys: q_t . K_t + Q_{t-1} . k_t
                for (int64_t jj = 0; jj <= t; ++jj) {
                    const int32_t* Kj = Kr + jj * Ck + g * D;
                    const int8_t* kj = k + jj * Ck + g * D;
                    int32_t acc = 0;
                    for (int64_t d = 0; d < D; ++d) {
                        if (qt[d]) acc += qt[d] * Kj[d], ++ops;
                        if (kj[d]) acc += Qp[d] * kj[d], ++ops;
                    }
                    row[P + jj] += acc;
                }
            }
        }
        for (int64_t i = 0; i < T * C; ++i) Qr[i] += q[i];
    }
    return ops;
}

int64_t pv_spikes(int32_t* out, const int8_t* ps, const int8_t* vs, const int8_t* vc, int S, int64_t T, int64_t P,
                  int64_t H, int64_t D, int64_t cap, int32_t* run, int64_t group) {
    const int64_t L = P + T, C = H * D, Cv = (H / group) * D;  // output and value widths
    int32_t* Pr = run;              // [H, T, L] running sum of probability spikes before this step
    int32_t* Vr = run + H * T * L;  // [T, Cv] running sum of the chunk's v spikes up to this step
    std::fill(run, run + H * T * L + T * Cv, 0);
    std::fill(out, out + T * C, 0);
    int64_t ops = 0;
    for (int s = 0; s < S; ++s) {
        const int8_t* p = ps + int64_t(s) * H * T * L;
        const int8_t* v = vs + int64_t(s) * T * Cv;
        for (int64_t i = 0; i < T * Cv; ++i) Vr[i] += v[i];
        for (int64_t t = 0; t < T; ++t)
            for (int64_t h = 0; h < H; ++h) {
                const int64_t g = h / group;
                int32_t* o = out + t * C + h * D;
                const int8_t* pt = p + (h * T + t) * L;
                const int32_t* Pp = Pr + (h * T + t) * L;
                for (int64_t j = 0; j < P; ++j) {  // cached values are constants: p_t V_j
                    if (pt[j] == 0) continue;
                    const int8_t* vj = vc + (g * cap + j) * D;
                    for (int64_t d = 0; d < D; ++d) o[d] += pt[j] * int32_t(vj[d]);
                    ops += D;
                }
                for (int64_t jj = 0; jj <= t; ++jj) {  // chunk values: p_t V_t + P_{t-1} v_t
                    const int32_t* Vj = Vr + jj * Cv + g * D;
                    const int8_t* vj = v + jj * Cv + g * D;
                    if (pt[P + jj]) {
                        for (int64_t d = 0; d < D; ++d) o[d] += pt[P + jj] * Vj[d];
                        ops += D;
                    }
                    if (Pp[P + jj])
                        for (int64_t d = 0; d < D; ++d)
                            if (vj[d]) o[d] += Pp[P + jj] * vj[d], ++ops;
                }
            }
        for (int64_t i = 0; i < H * T * L; ++i) Pr[i] += p[i];
    }
    return ops;
}

void kv_append_counts(int8_t* kc, int8_t* vc, const int8_t* nk, const int8_t* nv, int64_t T, int64_t pos0, int64_t H,
                      int64_t D, int64_t cap) {
    const int64_t C = H * D;
    for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h) {
            std::memcpy(kc + (h * cap + pos0 + t) * D, nk + t * C + h * D, size_t(D));
            std::memcpy(vc + (h * cap + pos0 + t) * D, nv + t * C + h * D, size_t(D));
        }
}

void softmax_causal(float* x, int64_t H, int64_t T, int64_t P) {
    const int64_t L = P + T;
    for (int64_t h = 0; h < H; ++h)
        for (int64_t t = 0; t < T; ++t) {
            float* r = x + (h * T + t) * L;
            const int64_t len = P + t + 1;
            float m = -INFINITY;
            for (int64_t j = 0; j < len; ++j) m = std::max(m, r[j]);
            float sum = 0;
            for (int64_t j = 0; j < len; ++j) {
                r[j] = std::exp(r[j] - m);
                sum += r[j];
            }
            const float inv = 1.0f / sum;
            for (int64_t j = 0; j < len; ++j) r[j] *= inv;
            for (int64_t j = len; j < L; ++j) r[j] = 0.0f;
        }
}

}  // namespace stac::cpu
