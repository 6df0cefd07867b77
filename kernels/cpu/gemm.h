// Matrix products of the float model on the CPU, on the threads of core/parallel.h:
//   - f32 weights in Hugging Face Conv1D layout [K, N]: Eigen's GEMM for prompt chunks, a streaming
//     GEMV (each thread owns a block of output columns) for the few rows of a decode step;
//   - bf16 weights packed in pairs along K (see pack_bf16_pairs): the AVX-512 BF16 dot-product
//     instruction where the CPU has it (chosen at run time), a portable loop elsewhere; the
//     activations are split into two bf16 parts (hi + lo) so that only the weights are rounded;
//   - the LM head x · E^T with E [V, C] in f32 or bf16.
// Every product takes an optional bias and an activation applied in the same pass (the epilogue).
// Letters: T rows (tokens), K inputs, N outputs, V vocabulary, C = K of the head.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "kernels/math.h"

namespace stac::cpu {

// Rows at or below which a product streams the weights once as a GEMV instead of calling the GEMM.
constexpr int64_t kGemvMaxRows = 8;

// out[T, N] = act(x[T, K] · w[K, N] + b[N]); b may be null; no activation when act is empty.
void linear_f32(float* out, const float* x, const float* w, const float* b, int64_t T, int64_t K, int64_t N,
                std::optional<Activation> act = std::nullopt);

// Packed bf16 weights: element (k, n) of a [K, N] matrix sits at wp[((k / 2) * N + n) * 2 + k % 2]
// (K rounded up to even; the padding row is zero). Rounds to nearest even.
int64_t bf16_pairs_size(int64_t K, int64_t N);  // uint16 elements
void pack_bf16_pairs(uint16_t* wp, const float* w, int64_t K, int64_t N);
// The same product with packed bf16 weights.
void linear_bf16(float* out, const float* x, const uint16_t* wp, const float* b, int64_t T, int64_t K, int64_t N,
                 std::optional<Activation> act = std::nullopt);

// out[T, V] = x[T, C] · e[V, C]^T (the tied LM head), e in f32 or (row-major) bf16.
void matmul_nt_f32(float* out, const float* x, const float* e, int64_t T, int64_t C, int64_t V);
void matmul_nt_bf16(float* out, const float* x, const uint16_t* e, int64_t T, int64_t C, int64_t V);

// Which bf16 kernels run: "avx512bf16" where the CPU has the instructions, else "portable".
// STAC_BF16_KERNEL=portable in the environment, or set_bf16_portable(true) (tests, benches), forces
// the portable loops.
std::string bf16_kernel_name();
bool cpu_has_avx512bf16();
void set_bf16_portable(bool portable);

}  // namespace stac::cpu
