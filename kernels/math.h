// Per-element math shared by the CPU paths and the CUDA kernels (one copy of each formula).
#pragma once

#include <cmath>

#include "core/hd.h"

namespace stac {

// The activations GPT-2 checkpoints name in config.json ("gelu_new"/"gelu_pytorch_tanh", "gelu", "relu").
enum class Activation { GeluTanh, GeluErf, Relu };

// GELU, tanh approximation (OpenAI's GPT-2, transformers' "gelu_new"):
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
STAC_HD float gelu_tanh(float x) {
    const float kAlpha = 0.7978845608028654f;  // sqrt(2/pi)
    return 0.5f * x * (1.0f + tanhf(kAlpha * (x + 0.044715f * x * x * x)));
}

// Exact GELU (transformers' "gelu" = torch.nn.functional.gelu): 0.5 x (1 + erf(x / sqrt 2))
STAC_HD float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f)); }

STAC_HD float relu(float x) { return x > 0.0f ? x : 0.0f; }

STAC_HD float activate(Activation a, float x) {
    switch (a) {
        case Activation::GeluTanh: return gelu_tanh(x);
        case Activation::GeluErf: return gelu_erf(x);
        case Activation::Relu: return relu(x);
    }
    return x;
}

}  // namespace stac
