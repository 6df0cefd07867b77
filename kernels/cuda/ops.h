// The CUDA backend's entry points, called by kernels/kernels.cpp and kernels/spiking.cpp after
// they checked shapes, dtypes and devices (plain C++: no CUDA types, so the dispatch compiles
// without nvcc). Pointers are device pointers on `dev`; work is queued on that device's stream and
// the functions return before it finishes, except those that return a count (they wait).
// Letters as in kernels/cpu/ops.h and kernels/cpu/spiking.h. Weights `w`/`e` may be F32, F16 or
// BF16 (`wdt`); activations are f32, accumulation f32 (f64 for the spiking linear layers).
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "kernels/math.h"

namespace stac::cuda {

// ---- GPT-2 (kernels/cuda/ops.cu, blas.cu, attention.cu)

// out[T, N] = act(x[T, K] · w[K, N] + b[N]); cuBLAS GEMM, then one fused bias + activation pass.
// With f16/bf16 weights x is rounded to the weights' type first (tensor cores, f32 accumulation).
void linear(int dev, float* out, const float* x, const void* w, DType wdt, const float* b, int64_t T, int64_t K,
            int64_t N, bool apply_act, Activation act);
// logits[T, V] = x[T, C] · e[V, C]^T
void matmul_nt(int dev, float* out, const float* x, const void* e, DType edt, int64_t T, int64_t C, int64_t V);
void layernorm(int dev, float* out, const float* x, const float* g, const float* b, int64_t T, int64_t C, float eps);
// x += y, then out = layernorm(x) (out may be y): the residual add fused into the norm that follows it.
void add_layernorm(int dev, float* x, const float* y, float* out, const float* g, const float* b, int64_t T,
                   int64_t C, float eps);
void activation(int dev, float* x, int64_t n, Activation act);
void add(int dev, float* x, const float* y, int64_t n);
// x[n] of dtype dt (F32, F64, I32) = value
void fill(int dev, void* x, DType dt, int64_t n, double value);
void scaled_copy(int dev, float* out, const float* in, int64_t n, float a);
void accumulate(int dev, double* sum, const float* inc, float* value, int64_t n);
void td_emit(int dev, float* emitted, const float* y, float* prev, int64_t n);
// ids are on the host (checked by the caller) and copied to the device here.
void embedding(int dev, float* out, const int32_t* host_ids, int64_t T, int64_t pos0, const void* wte,
               const void* wpe, DType wdt, int64_t C);
// q, k, v: [T, C] = the column blocks of qkv: [T, 3C]
void split_qkv(int dev, float* q, float* k, float* v, const float* qkv, int64_t T, int64_t Cq, int64_t Ckv);
void kv_append(int dev, float* kc, float* vc, const float* qkv, int64_t T, int64_t pos0, int64_t H, int64_t D,
               int64_t cap, int64_t Hq = 0);  // Hq query heads before K in qkv (0: H, no grouping)
// Llama's ops: RMSNorm (one block per row), silu(gate) * up of gu: [T, 2I], and the rotary
// embedding of nh heads of D at the start of each row of x (row stride ldx) with host_cs: [T, D/2, 2]
// the (cos, sin) the CPU computes (kernels/math.h), so the rotation matches the CPU's.
void rmsnorm(int dev, float* out, const float* x, const float* g, int64_t T, int64_t C, float eps);
void silu_gate(int dev, float* out, const float* gu, int64_t T, int64_t I);
void rope(int dev, float* x, int64_t ldx, int64_t T, int64_t nh, int64_t D, const float* host_cs);

// Decode-step variants for CUDA graphs: the token id and its position come from device memory,
// step = {id, pos} (I32), so one recorded graph serves every position. The caller checks them.
void embedding_at(int dev, float* out, const int32_t* step, const void* wte, const void* wpe, DType wdt, int64_t C);
void kv_append_at(int dev, float* kc, float* vc, const float* qkv, const int32_t* step, int64_t H, int64_t D,
                  int64_t cap);
// One query at position step[1] over the cache rows [0, step[1]]; the grid covers the whole
// capacity (chunks past the position finish at once).
void attention_at(int dev, float* out, const float* q, const float* kc, const float* vc, const int32_t* step,
                  int64_t H, int64_t D, int64_t cap, float scale);

// Which attention kernel runs: Auto picks split-cache decode for T == 1 and the tiled prefill
// kernel otherwise; tests force each on every shape.
enum class AttentionKernel { Auto, Prefill, Decode };
// Largest head dimension the attention kernels take (GPT-2 family: 64; 128 covers the rest).
inline constexpr int64_t kMaxHeadDim = 128;
void attention(int dev, float* out, int64_t ldo, const float* q, int64_t ldq, const float* kc, const float* vc,
               int64_t T, int64_t P, int64_t H, int64_t D, int64_t cap, float scale,
               AttentionKernel which = AttentionKernel::Auto, int64_t group = 1);
// group: query heads per key/value head (grouped-query attention; the caches hold H / group heads,
// query head h reads cache head h / group), as on the CPU.
// Explicit steps (spiking model, calibration): see cpu::attention_scores / attention_pv / softmax_causal.
void attention_scores(int dev, float* scores, const float* q, int64_t ldq, const float* kc, int64_t T, int64_t P,
                      int64_t H, int64_t D, int64_t cap, float scale, int64_t group = 1);
void attention_pv(int dev, float* out, int64_t ldo, const float* probs, const float* vc, int64_t T, int64_t P,
                  int64_t H, int64_t D, int64_t cap, int64_t group = 1);
void softmax_causal(int dev, float* x, int64_t H, int64_t T, int64_t P);

// values[R, k], indices[R, k] (device) = the k largest logits of each row of logits[R, V], largest
// first, ties to the lower id; k <= 64.
void top_k(int dev, float* values, int32_t* indices, const float* logits, int64_t R, int64_t V, int k);

// ---- spiking (kernels/cuda/spiking.cu); per_col: inv has N entries, else one

void quantize(int dev, int8_t* counts, const float* x, int64_t T, int64_t N, const float* inv, bool per_col,
              int n_min, int n_max);
// Token scaling (spiking_math.h): r[T] and xs[T, N] = x / r, one block per row.
void token_scale(int dev, float* r, float* xs, const float* x, int64_t T, int64_t N, const float* inv, bool per_col,
                 int n_min, int n_max);
// out[T, N] = out * r[t] + b (b may be null), in place.
void rescale_rows(int dev, float* out, const float* r, const float* b, int64_t T, int64_t N);
// out[T, H * D] *= r[H, T], in place.
void rescale_head_rows(int dev, float* out, const float* r, int64_t T, int64_t H, int64_t D);
// All S steps in one kernel: membrane, counter and the current's remainder stay in registers;
// int8 counts (and spikes [S, T, N] if not null) go out. Returns the spike events.
int64_t neurons_layerwise(int dev, int8_t* counts, int8_t* spikes, const float* x, int64_t T, int64_t N,
                          const float* inv, bool per_col, int n_min, int n_max, int S);
int64_t neurons_step(int dev, double* v, int32_t* n, int8_t* spikes, const float* increment, int64_t T, int64_t N,
                     const float* inv, bool per_col, int n_min, int n_max);
// out: I8 = in: I32; throws stac::Error if a counter does not fit int8.
void narrow_counts(int dev, int8_t* out, const int32_t* in, int64_t n);
// DGEMM on the counts (exact integers), then out = fma(float(acc), mult, b).
void linear_counts(int dev, float* out, const int8_t* counts, int64_t T, int64_t K, const double* w, int64_t N,
                   const float* mult, const float* b);
// How linear_spikes runs: Accumulate adds weight rows for the spikes that fired (one kernel over
// all S steps); Folded treats the S steps as S*T rows of one DGEMM and sums them. Same result.
enum class SpikeLinear { Accumulate, Folded };
int64_t linear_spikes(int dev, float* out, const int8_t* spikes, int S, int64_t T, int64_t K, const double* w,
                      int64_t N, const float* mult, const float* b, SpikeLinear how = SpikeLinear::Accumulate);
void kv_append_counts(int dev, int8_t* kc, int8_t* vc, const int8_t* nk, const int8_t* nv, int64_t T, int64_t pos0,
                      int64_t H, int64_t D, int64_t cap);
void scores_counts(int dev, int32_t* scores, const int8_t* nq, const int8_t* kc, int64_t T, int64_t P, int64_t H,
                   int64_t D, int64_t cap);
void pv_counts(int dev, int32_t* out, const int8_t* np, const int8_t* vc, int64_t T, int64_t P, int64_t H, int64_t D,
               int64_t cap);
int64_t scores_spikes(int dev, int32_t* scores, const int8_t* qs, const int8_t* ks, const int8_t* kc, int S,
                      int64_t T, int64_t P, int64_t H, int64_t D, int64_t cap);
int64_t pv_spikes(int dev, int32_t* out, const int8_t* ps, const int8_t* vs, const int8_t* vc, int S, int64_t T,
                  int64_t P, int64_t H, int64_t D, int64_t cap);
// out = float(in) * mult[head]; per = elements per head block (rank 3: T*L with D = 0), or for
// [T, C] rows: C columns in blocks of D (per = 0).
void dequantize_heads(int dev, float* out, const int32_t* in, const float* mult, int64_t n, int64_t per, int64_t C,
                      int64_t D);

}  // namespace stac::cuda
