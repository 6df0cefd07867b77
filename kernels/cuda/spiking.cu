// CUDA kernels of the spiking network and its QANN. The neuron and quantizer arithmetic is
// kernels/spiking_math.h, the code the CPU runs, so counts and spikes are bit-identical to the CPU;
// the integer-valued linear layers and attention products are exact, so those match bit for bit too.
// Letters: T tokens, N neurons per token, K inputs, S timesteps, H heads, D head dim, C = H*D,
// P cached tokens, L = P + T keys, cap cache rows.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/spiking_math.h"

namespace stac::cuda {

using namespace stac::spiking;

namespace {

__global__ void quantize_kernel(int8_t* counts, const float* x, int64_t T, int64_t N, const float* inv, bool per_col,
                                int n_min, int n_max) {
    STAC_GRID_LOOP(k, T * N) counts[k] = int8_t(quant_count(x[k] * inv[per_col ? k % N : 0], n_min, n_max));
}

// The fused multi-step neuron: one thread per neuron runs all S steps with its membrane, counter
// and current remainder in registers; spikes[S, T, N] are written coalesced step by step.
__global__ void neurons_layerwise_kernel(int8_t* counts, int8_t* spikes, const float* x, int64_t TN, int64_t N,
                                         const float* inv, bool per_col, int n_min, int n_max, int S,
                                         long long* events) {
    long long mine = 0;
    STAC_GRID_LOOP(k, TN) {
        ConstantCurrent current(to_fixed(x[k] * inv[per_col ? k % N : 0], n_min, n_max), S);
        int32_t v = kMembraneStart, n = 0;
        for (int s = 0; s < S; ++s) {
            const int32_t sp = if_step(v, n, current.next(), n_min, n_max);
            if (spikes) spikes[int64_t(s) * TN + k] = int8_t(sp);
            mine += sp != 0;
        }
        counts[k] = int8_t(n);
    }
    count_events(events, mine);
}

__global__ void neurons_step_kernel(double* v, int32_t* n, int8_t* spikes, const float* increment, int64_t TN,
                                    int64_t N, const float* inv, bool per_col, int n_min, int n_max,
                                    long long* events) {
    long long mine = 0;
    STAC_GRID_LOOP(k, TN) {
        const double I = double(increment[k]) * double(inv[per_col ? k % N : 0]);
        const int32_t sp = if_step_real(v[k], n[k], I, n_min, n_max);
        spikes[k] = int8_t(sp);
        mine += sp != 0;
    }
    count_events(events, mine);
}

__global__ void narrow_kernel(int8_t* out, const int32_t* in, int64_t n, int* bad) {
    STAC_GRID_LOOP(i, n) {
        const int32_t v = in[i];
        if (v < -127 || v > 127) atomicExch(bad, 1);
        out[i] = int8_t(v);
    }
}

__global__ void to_double_kernel(double* out, const int8_t* in, int64_t n) {
    STAC_GRID_LOOP(i, n) out[i] = double(in[i]);
}

// out = fma(float(acc), mult, b): the rounding of cpu::finish_linear.
__global__ void finish_linear_kernel(float* out, const double* acc, int64_t T, int64_t N, const float* mult,
                                     const float* b) {
    STAC_GRID_LOOP(i, T * N) {
        const int64_t j = i % N;
        out[i] = __fmaf_rn(float(acc[i]), mult[j], b ? b[j] : 0.0f);
    }
}

// Signed spike accumulate over all S steps: a block owns a tile of 256 output columns of one token
// and walks the token's spikes (staged in shared memory per step); each spike adds or subtracts
// row k of w. Partial sums are exact integers in f64, so the order does not matter.
constexpr int kAccCols = 256, kAccK = 1024;
__global__ void spike_accumulate_kernel(double* acc, const int8_t* spikes, int S, int64_t T, int64_t K,
                                        const double* w, int64_t N) {
    __shared__ int8_t sp[kAccK];
    const int64_t t = blockIdx.y, j = int64_t(blockIdx.x) * kAccCols + threadIdx.x;
    double a = 0.0;
    for (int s = 0; s < S; ++s)
        for (int64_t k0 = 0; k0 < K; k0 += kAccK) {
            const int64_t nk = K - k0 < kAccK ? K - k0 : kAccK;
            __syncthreads();
            for (int64_t i = threadIdx.x; i < nk; i += blockDim.x) sp[i] = spikes[(int64_t(s) * T + t) * K + k0 + i];
            __syncthreads();
            if (j < N)
                for (int64_t i = 0; i < nk; ++i) {
                    const int8_t z = sp[i];
                    if (z > 0) a += w[(k0 + i) * N + j];
                    else if (z < 0) a -= w[(k0 + i) * N + j];
                }
        }
    if (j < N) acc[t * N + j] = a;
}

__global__ void count_nonzero_kernel(const int8_t* x, int64_t n, long long* counter) {
    long long mine = 0;
    STAC_GRID_LOOP(i, n) mine += x[i] != 0;
    count_events(counter, mine);
}

// acc[T, N] = sum over s of rows[s, T, N] (the folded GEMM's S partial results).
__global__ void sum_steps_kernel(double* acc, const double* rows, int S, int64_t TN) {
    STAC_GRID_LOOP(i, TN) {
        double a = 0.0;
        for (int s = 0; s < S; ++s) a += rows[int64_t(s) * TN + i];
        acc[i] = a;
    }
}

__global__ void scores_counts_kernel(int32_t* scores, const int8_t* nq, const int8_t* kc, int64_t T, int64_t P,
                                     int64_t H, int64_t D, int64_t cap) {
    const int64_t L = P + T, C = H * D;
    STAC_GRID_LOOP(i, H * T * L) {
        const int64_t j = i % L, t = (i / L) % T, h = i / (L * T);
        int32_t acc = 0;
        if (j <= P + t) {
            const int8_t* q = nq + t * C + h * D;
            const int8_t* k = kc + (h * cap + j) * D;
            for (int64_t d = 0; d < D; ++d) acc += int32_t(q[d]) * int32_t(k[d]);
        }
        scores[i] = acc;
    }
}

__global__ void pv_counts_kernel(int32_t* out, const int8_t* np, const int8_t* vc, int64_t T, int64_t P, int64_t H,
                                 int64_t D, int64_t cap) {
    const int64_t L = P + T, C = H * D;
    STAC_GRID_LOOP(i, T * C) {
        const int64_t t = i / C, c = i % C, h = c / D, d = c % D;
        const int8_t* p = np + (h * T + t) * L;
        int32_t acc = 0;
        for (int64_t j = 0; j <= P + t; ++j) acc += int32_t(p[j]) * int32_t(vc[(h * cap + j) * D + d]);
        out[i] = acc;
    }
}

// The temporal-difference score of (h, t, j) over S steps. The product separates per dimension d:
// step s adds q_s[d] * K_s[d] + Q_{s-1}[d] * k_s[d] (running sums kept as scalars per d), and a
// cached key adds q_s[d] * kc[d]. Operations are counted as cpu::scores_spikes counts them.
__global__ void scores_spikes_kernel(int32_t* scores, const int8_t* qs, const int8_t* ks, const int8_t* kc, int S,
                                     int64_t T, int64_t P, int64_t H, int64_t D, int64_t cap, long long* ops) {
    const int64_t L = P + T, C = H * D;
    long long mine = 0;
    STAC_GRID_LOOP(i, H * T * L) {
        const int64_t j = i % L, t = (i / L) % T, h = i / (L * T);
        int32_t acc = 0;
        if (j < P) {
            const int8_t* k = kc + (h * cap + j) * D;
            for (int64_t d = 0; d < D; ++d)
                for (int s = 0; s < S; ++s) {
                    const int32_t q = qs[(int64_t(s) * T + t) * C + h * D + d];
                    if (q) acc += q * int32_t(k[d]), ++mine;
                }
        } else if (j <= P + t) {
            const int64_t jj = j - P;
            for (int64_t d = 0; d < D; ++d) {
                int32_t Qr = 0, Kr = 0;
                for (int s = 0; s < S; ++s) {
                    const int32_t q = qs[(int64_t(s) * T + t) * C + h * D + d];
                    const int32_t k = ks[(int64_t(s) * T + jj) * C + h * D + d];
                    Kr += k;
                    if (q) acc += q * Kr, ++mine;
                    if (k) acc += Qr * k, ++mine;
                    Qr += q;
                }
            }
        }
        scores[i] = acc;
    }
    count_events(ops, mine);
}

// The temporal-difference P·V of (t, h, d): cached values are constants (p_s V_j), chunk values
// add p_s[j] V_s[j] + P_{s-1}[j] v_s[j]. Operations counted as cpu::pv_spikes counts them.
__global__ void pv_spikes_kernel(int32_t* out, const int8_t* ps, const int8_t* vs, const int8_t* vc, int S, int64_t T,
                                 int64_t P, int64_t H, int64_t D, int64_t cap, long long* ops) {
    const int64_t L = P + T, C = H * D;
    long long mine = 0;
    STAC_GRID_LOOP(i, T * C) {
        const int64_t t = i / C, c = i % C, h = c / D, d = c % D;
        int32_t acc = 0;
        for (int64_t j = 0; j < P; ++j) {
            const int32_t v = vc[(h * cap + j) * D + d];
            for (int s = 0; s < S; ++s) {
                const int32_t p = ps[((int64_t(s) * H + h) * T + t) * L + j];
                if (p) acc += p * v, ++mine;
            }
        }
        for (int64_t jj = 0; jj <= t; ++jj) {
            int32_t Pr = 0, Vr = 0;
            for (int s = 0; s < S; ++s) {
                const int32_t p = ps[((int64_t(s) * H + h) * T + t) * L + P + jj];
                const int32_t v = vs[(int64_t(s) * T + jj) * C + c];
                Vr += v;
                if (p) acc += p * Vr, ++mine;
                if (Pr && v) acc += Pr * v, ++mine;
                Pr += p;
            }
        }
        out[i] = acc;
    }
    count_events(ops, mine);
}

__global__ void dequantize_heads_kernel(float* out, const int32_t* in, const float* mult, int64_t n, int64_t per,
                                        int64_t C, int64_t D) {
    STAC_GRID_LOOP(i, n) {
        const int64_t h = per > 0 ? i / per : (i % C) / D;
        out[i] = float(in[i]) * mult[h];
    }
}

// One block of kThreads per row: the row's largest magnitude by a shared-memory max, then x / r.
__global__ void token_scale_kernel(float* r, float* xs, const float* x, int64_t N, const float* inv, bool per_col,
                                   bool is_signed, int n_max) {
    __shared__ float best[kThreads];
    const int64_t t = blockIdx.x;
    const float* row = x + t * N;
    float m = 0.0f;
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) m = fmaxf(m, token_magnitude(row[i], inv[per_col ? i : 0], is_signed));
    best[threadIdx.x] = m;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if (int(threadIdx.x) < half) best[threadIdx.x] = fmaxf(best[threadIdx.x], best[threadIdx.x + half]);
        __syncthreads();
    }
    const float f = token_factor(best[0], n_max);
    if (threadIdx.x == 0) r[t] = f;
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) xs[t * N + i] = row[i] / f;
}

__global__ void rescale_rows_kernel(float* out, const float* r, const float* b, int64_t T, int64_t N) {
    STAC_GRID_LOOP(k, T * N) out[k] = token_rescale(out[k], r[k / N], b ? b[k % N] : 0.0f);
}

__global__ void rescale_head_rows_kernel(float* out, const float* r, int64_t T, int64_t H, int64_t D) {
    STAC_GRID_LOOP(k, T * H * D) {
        const int64_t t = k / (H * D), h = (k / D) % H;
        out[k] *= r[h * T + t];
    }
}

long long* new_counter(Tensor& holder, int dev) {
    holder = temp(1, DType::F64, dev);  // 8 bytes
    zero_bytes(holder.raw(), Device::cuda(dev), 8);
    return static_cast<long long*>(holder.raw());
}

int64_t read(const Tensor& holder, int dev) { return read_counter(static_cast<const int64_t*>(holder.raw()), dev); }

}  // namespace

void quantize(int dev, int8_t* counts, const float* x, int64_t T, int64_t N, const float* inv, bool per_col, int n_min,
              int n_max) {
    if (T * N == 0) return;
    quantize_kernel<<<blocks_for(T * N), kThreads, 0, cuda_stream(dev)>>>(counts, x, T, N, inv, per_col, n_min, n_max);
    STAC_CUDA_LAUNCHED("quantize_kernel");
}

int64_t neurons_layerwise(int dev, int8_t* counts, int8_t* spikes, const float* x, int64_t T, int64_t N,
                          const float* inv, bool per_col, int n_min, int n_max, int S) {
    if (T * N == 0) return 0;
    Tensor c;
    long long* events = new_counter(c, dev);
    neurons_layerwise_kernel<<<blocks_for(T * N), kThreads, 0, cuda_stream(dev)>>>(counts, spikes, x, T * N, N, inv,
                                                                                   per_col, n_min, n_max, S, events);
    STAC_CUDA_LAUNCHED("neurons_layerwise_kernel");
    return read(c, dev);
}

int64_t neurons_step(int dev, double* v, int32_t* n, int8_t* spikes, const float* increment, int64_t T, int64_t N,
                     const float* inv, bool per_col, int n_min, int n_max) {
    if (T * N == 0) return 0;
    Tensor c;
    long long* events = new_counter(c, dev);
    neurons_step_kernel<<<blocks_for(T * N), kThreads, 0, cuda_stream(dev)>>>(v, n, spikes, increment, T * N, N, inv,
                                                                              per_col, n_min, n_max, events);
    STAC_CUDA_LAUNCHED("neurons_step_kernel");
    return read(c, dev);
}

void narrow_counts(int dev, int8_t* out, const int32_t* in, int64_t n) {
    if (n == 0) return;
    Tensor flag = temp(1, DType::I32, dev);
    zero_bytes(flag.raw(), Device::cuda(dev), 4);
    narrow_kernel<<<blocks_for(n), kThreads, 0, cuda_stream(dev)>>>(out, in, n, flag.raw_data<int>());
    STAC_CUDA_LAUNCHED("narrow_kernel");
    int bad = 0;
    copy_bytes(&bad, Device::cpu(), flag.raw(), Device::cuda(dev), 4);
    if (bad) throw Error("narrow_counts: a counter does not fit int8 (outside [-127, 127])");
}

void linear_counts(int dev, float* out, const int8_t* counts, int64_t T, int64_t K, const double* w, int64_t N,
                   const float* mult, const float* b) {
    if (T * N == 0) return;
    cudaStream_t s = cuda_stream(dev);
    Tensor xd = temp(T * K, DType::F64, dev), acc = temp(T * N, DType::F64, dev);
    to_double_kernel<<<blocks_for(T * K), kThreads, 0, s>>>(xd.raw_data<double>(), counts, T * K);
    STAC_CUDA_LAUNCHED("to_double_kernel");
    gemm_f64(dev, acc.raw_data<double>(), xd.raw_data<double>(), w, T, K, N);
    finish_linear_kernel<<<blocks_for(T * N), kThreads, 0, s>>>(out, acc.raw_data<double>(), T, N, mult, b);
    STAC_CUDA_LAUNCHED("finish_linear_kernel");
}

int64_t linear_spikes(int dev, float* out, const int8_t* spikes, int S, int64_t T, int64_t K, const double* w,
                      int64_t N, const float* mult, const float* b, SpikeLinear how) {
    if (T * N == 0) return 0;
    cudaStream_t s = cuda_stream(dev);
    Tensor acc = temp(T * N, DType::F64, dev);
    if (how == SpikeLinear::Accumulate) {
        const dim3 grid(unsigned((N + kAccCols - 1) / kAccCols), unsigned(T));
        spike_accumulate_kernel<<<grid, kAccCols, 0, s>>>(acc.raw_data<double>(), spikes, S, T, K, w, N);
        STAC_CUDA_LAUNCHED("spike_accumulate_kernel");
    } else {
        // S folded into the GEMM's rows: [S*T, K] spikes (as f64) · w, then the S row blocks summed.
        Tensor xd = temp(int64_t(S) * T * K, DType::F64, dev), rows = temp(int64_t(S) * T * N, DType::F64, dev);
        to_double_kernel<<<blocks_for(int64_t(S) * T * K), kThreads, 0, s>>>(xd.raw_data<double>(), spikes,
                                                                            int64_t(S) * T * K);
        STAC_CUDA_LAUNCHED("to_double_kernel");
        gemm_f64(dev, rows.raw_data<double>(), xd.raw_data<double>(), w, int64_t(S) * T, K, N);
        sum_steps_kernel<<<blocks_for(T * N), kThreads, 0, s>>>(acc.raw_data<double>(), rows.raw_data<double>(), S, T * N);
        STAC_CUDA_LAUNCHED("sum_steps_kernel");
    }
    finish_linear_kernel<<<blocks_for(T * N), kThreads, 0, s>>>(out, acc.raw_data<double>(), T, N, mult, b);
    STAC_CUDA_LAUNCHED("finish_linear_kernel");
    Tensor c;
    long long* nz = new_counter(c, dev);
    count_nonzero_kernel<<<blocks_for(int64_t(S) * T * K), kThreads, 0, s>>>(spikes, int64_t(S) * T * K, nz);
    STAC_CUDA_LAUNCHED("count_nonzero_kernel");
    return read(c, dev) * N;
}

void scores_counts(int dev, int32_t* scores, const int8_t* nq, const int8_t* kc, int64_t T, int64_t P, int64_t H,
                   int64_t D, int64_t cap) {
    const int64_t n = H * T * (P + T);
    if (n == 0) return;
    scores_counts_kernel<<<blocks_for(n), kThreads, 0, cuda_stream(dev)>>>(scores, nq, kc, T, P, H, D, cap);
    STAC_CUDA_LAUNCHED("scores_counts_kernel");
}

void pv_counts(int dev, int32_t* out, const int8_t* np, const int8_t* vc, int64_t T, int64_t P, int64_t H, int64_t D,
               int64_t cap) {
    if (T == 0) return;
    pv_counts_kernel<<<blocks_for(T * H * D), kThreads, 0, cuda_stream(dev)>>>(out, np, vc, T, P, H, D, cap);
    STAC_CUDA_LAUNCHED("pv_counts_kernel");
}

int64_t scores_spikes(int dev, int32_t* scores, const int8_t* qs, const int8_t* ks, const int8_t* kc, int S, int64_t T,
                      int64_t P, int64_t H, int64_t D, int64_t cap) {
    const int64_t n = H * T * (P + T);
    if (n == 0) return 0;
    Tensor c;
    long long* ops = new_counter(c, dev);
    scores_spikes_kernel<<<blocks_for(n), kThreads, 0, cuda_stream(dev)>>>(scores, qs, ks, kc, S, T, P, H, D, cap, ops);
    STAC_CUDA_LAUNCHED("scores_spikes_kernel");
    return read(c, dev);
}

int64_t pv_spikes(int dev, int32_t* out, const int8_t* ps, const int8_t* vs, const int8_t* vc, int S, int64_t T,
                  int64_t P, int64_t H, int64_t D, int64_t cap) {
    if (T == 0) return 0;
    Tensor c;
    long long* ops = new_counter(c, dev);
    pv_spikes_kernel<<<blocks_for(T * H * D), kThreads, 0, cuda_stream(dev)>>>(out, ps, vs, vc, S, T, P, H, D, cap, ops);
    STAC_CUDA_LAUNCHED("pv_spikes_kernel");
    return read(c, dev);
}

void dequantize_heads(int dev, float* out, const int32_t* in, const float* mult, int64_t n, int64_t per, int64_t C,
                      int64_t D) {
    if (n == 0) return;
    dequantize_heads_kernel<<<blocks_for(n), kThreads, 0, cuda_stream(dev)>>>(out, in, mult, n, per, C, D);
    STAC_CUDA_LAUNCHED("dequantize_heads_kernel");
}

void token_scale(int dev, float* r, float* xs, const float* x, int64_t T, int64_t N, const float* inv, bool per_col,
                 int n_min, int n_max) {
    if (T == 0) return;
    token_scale_kernel<<<unsigned(T), kThreads, 0, cuda_stream(dev)>>>(r, xs, x, N, inv, per_col, n_min < 0, n_max);
    STAC_CUDA_LAUNCHED("token_scale_kernel");
}

void rescale_rows(int dev, float* out, const float* r, const float* b, int64_t T, int64_t N) {
    if (T * N == 0) return;
    rescale_rows_kernel<<<blocks_for(T * N), kThreads, 0, cuda_stream(dev)>>>(out, r, b, T, N);
    STAC_CUDA_LAUNCHED("rescale_rows_kernel");
}

void rescale_head_rows(int dev, float* out, const float* r, int64_t T, int64_t H, int64_t D) {
    if (T * H * D == 0) return;
    rescale_head_rows_kernel<<<blocks_for(T * H * D), kThreads, 0, cuda_stream(dev)>>>(out, r, T, H, D);
    STAC_CUDA_LAUNCHED("rescale_head_rows_kernel");
}

}  // namespace stac::cuda
