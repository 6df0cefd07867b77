// Per-element math shared by the CPU paths and the CUDA kernels (one copy of each formula).
#pragma once

#include <cmath>
#include <utility>
#include <cstdint>

#include "core/hd.h"

namespace stac {

// The activations GPT-2 checkpoints name in config.json ("gelu_new"/"gelu_pytorch_tanh", "gelu", "relu"),
// and Llama's "silu" (used there inside the gate product silu(gate) * up).
enum class Activation { GeluTanh, GeluErf, Relu, Silu };

// GELU, tanh approximation (OpenAI's GPT-2, transformers' "gelu_new"):
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
STAC_HD float gelu_tanh(float x) {
    const float kAlpha = 0.7978845608028654f;  // sqrt(2/pi)
    return 0.5f * x * (1.0f + tanhf(kAlpha * (x + 0.044715f * x * x * x)));
}

// Exact GELU (transformers' "gelu" = torch.nn.functional.gelu): 0.5 x (1 + erf(x / sqrt 2))
STAC_HD float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f)); }

STAC_HD float relu(float x) { return x > 0.0f ? x : 0.0f; }

// SiLU (Llama's hidden_act "silu" = torch.nn.functional.silu): x * sigmoid(x) = x / (1 + e^-x)
STAC_HD float silu(float x) { return x / (1.0f + expf(-x)); }

// The gated MLP's per-element product (Llama): silu(gate) * up
STAC_HD float silu_gate(float gate, float up) { return silu(gate) * up; }

// Rotary embedding (Llama, transformers' rotate_half layout): dimension pair (i, i + D/2) of a
// head turns by the angle pos * theta^(-2i/D). The inverse frequency and the angle are rounded to
// f32 as transformers computes them (inv_freq in f32, then an f32 product with the position), so
// the angles agree bit for bit even at positions in the thousands; cos/sin are taken in double.
inline float rope_inv_freq(int64_t i, int64_t D, float theta) {
    return float(1.0 / std::pow(double(theta), double(float(2 * i) / float(D))));
}
inline float rope_angle(int64_t pos, float inv_freq) { return float(pos) * inv_freq; }
// (cos, sin) of pair i's angle at position pos, as f32 (the CPU kernel, and the table the GPU's reads).
inline std::pair<float, float> rope_cos_sin(int64_t pos, int64_t i, int64_t D, float theta) {
    const double a = double(rope_angle(pos, rope_inv_freq(i, D, theta)));
    return {float(std::cos(a)), float(std::sin(a))};
}
// (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)
STAC_HD void rope_rotate(float& x1, float& x2, float c, float s) {
    const float a = x1 * c - x2 * s, b = x2 * c + x1 * s;
    x1 = a, x2 = b;
}

STAC_HD float activate(Activation a, float x) {
    switch (a) {
        case Activation::GeluTanh: return gelu_tanh(x);
        case Activation::GeluErf: return gelu_erf(x);
        case Activation::Relu: return relu(x);
        case Activation::Silu: return silu(x);
    }
    return x;
}

// Online softmax (the running form flash attention and the split decode attention use): keys
// arrive in chunks; the state keeps the running maximum m and the sum l of exp(s - m). Each chunk
// rescales what came before by softmax_rescale(m_old, m_new); merging two partial states (two
// splits of the cache) rescales both to the larger maximum. Starting state: m = -inf, l = 0.
struct SoftmaxRunning {
    float m = -INFINITY;
    float l = 0.0f;
};

// The factor that moves sums taken against maximum m_old to maximum m_new (>= m_old); 0 when
// nothing came before (m_old = -inf), so a first chunk needs no special case.
STAC_HD float softmax_rescale(float m_old, float m_new) {
    return m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
}

// Merges partial state b (its weighted sums scaled by *b_factor) into a (scaled by *a_factor):
// afterwards a describes both, and the caller multiplies a's sums by *a_factor and b's by
// *b_factor before adding them.
STAC_HD void softmax_merge(SoftmaxRunning& a, const SoftmaxRunning& b, float* a_factor, float* b_factor) {
    const float m = a.m > b.m ? a.m : b.m;
    *a_factor = softmax_rescale(a.m, m);
    *b_factor = softmax_rescale(b.m, m);
    a.l = a.l * *a_factor + b.l * *b_factor;
    a.m = m;
}

}  // namespace stac
