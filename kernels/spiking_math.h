// The integrate-and-fire neuron and the site quantizer, shared by the QANN, both SNN paths and the
// CUDA kernels (one copy of the math; DESIGN §5).
//
// Fixed point. A site with threshold (scale) s sees its input in units of s: u = x / s. Currents
// and membranes are integers with kFracBits fraction bits (kOne = 1.0 threshold). Integer
// membranes make the layer-wise count exactly the quantizer's value, with no float ties:
//   QANN:   n = clamp(floor((U + kOne/2) / kOne), n_min, n_max),   U = to_fixed(u)
//   neuron: v starts at kOne/2; S steps receive currents I_t that sum to U exactly;
//           v += I_t; spike +1 when v >= kOne and n < n_max (v -= kOne), spike -1 when v < 0 and
//           n > n_min (v += kOne). For S >= n_max and n_min >= -S the spike count after S steps
//           equals the QANN's n (proof in docs/SNN.md; tested exhaustively in tests/test_spiking_neuron.cpp).
#pragma once

#include <cmath>
#include <cstdint>

#include "core/hd.h"

namespace stac::spiking {

inline constexpr int kFracBits = 16;
inline constexpr int32_t kOne = int32_t(1) << kFracBits;
inline constexpr int kMaxLevels = 127;  // counts fit int8: [-127, 127]

// u (input in units of the threshold) -> fixed point. u is first clamped to [n_min - 1, n_max + 1]
// (the count does not change, and the integers stay far from overflow); rounding to the 2^-16
// grid is round-half-even (rintf), identical on CPU and GPU.
STAC_HD int32_t to_fixed(float u, int n_min, int n_max) {
    if (u != u) return 0;  // NaN: no drive
    const float lo = float(n_min - 1), hi = float(n_max + 1);
    u = u < lo ? lo : (u > hi ? hi : u);
#if defined(__CUDA_ARCH__)
    return __float2int_rn(u * float(kOne));
#else
    return int32_t(rintf(u * float(kOne)));
#endif
}

// The QANN's count for fixed-point input U: round half up to the threshold grid, clamped.
STAC_HD int32_t quant_count_fixed(int32_t U, int n_min, int n_max) {
    const int32_t n = (U + kOne / 2) >> kFracBits;  // arithmetic shift: floor
    return n < n_min ? n_min : (n > n_max ? n_max : n);
}

STAC_HD int32_t quant_count(float u, int n_min, int n_max) { return quant_count_fixed(to_fixed(u, n_min, n_max), n_min, n_max); }

// Step t (0-based) of S of a constant current totalling U: floor((t+1)U/S) - floor(tU/S). The S
// currents sum to U exactly and differ from U/S by less than one fixed-point unit.
STAC_HD int32_t constant_current(int32_t U, int t, int S) {
    const int64_t a = (int64_t(U) * (t + 1)), b = int64_t(U) * t;
    auto floordiv = [](int64_t x, int64_t d) { return x >= 0 ? x / d : -((-x + d - 1) / d); };
    return int32_t(floordiv(a, S) - floordiv(b, S));
}

// The same currents one step at a time, without a division per step (Bresenham): the current of
// step t is q plus a carry of the running remainder, q = floor(U / S), r = U - q S in [0, S).
// next() returns constant_current(U, t, S) for t = 0, 1, ..., S-1 (tested for every t).
struct ConstantCurrent {
    int32_t q, r, e, S;
    STAC_HD ConstantCurrent(int32_t U, int S_) : q(U >= 0 ? U / S_ : -((-U + S_ - 1) / S_)), r(0), e(0), S(S_) {
        r = U - q * S_;
    }
    STAC_HD int32_t next() {
        e += r;
        const int32_t carry = e >= S;
        e -= carry * S;
        return q + carry;
    }
};

// Token scaling (per-token adaptive thresholds, docs/SNN.md): a row whose largest value, in
// thresholds, is m (max over the row of |x| * inv; for an unsigned site of max(x, 0) * inv) gets the
// factor r = m / n_max, and its neurons see x / r: the row's largest value lands on the top count
// and nothing in the row clips. A row with nothing to count (m = 0, or not finite) keeps r = 1.
STAC_HD float token_magnitude(float x, float inv, bool is_signed) {
    const float a = is_signed ? (x < 0.0f ? -x : x) : (x > 0.0f ? x : 0.0f);
    return a * inv;
}
STAC_HD float token_factor(float m, int n_max) {
    return (m > 0.0f && m <= 3.0e38f) ? m / float(n_max) : 1.0f;
}
// What a consumer of a token-scaled site does with an output y it computed from the counts: y r + b,
// one rounding (fused), the same on CPU and GPU.
STAC_HD float token_rescale(float y, float r, float b) { return fmaf(y, r, b); }

// One integrate-and-fire step with reset by subtraction and a bounded signed spike counter.
// Returns the spike (-1, 0, +1); v and n are the membrane and the count so far.
// The membrane saturates at +-kMembraneLimit, far beyond what a bounded count can use, so a neuron
// driven past its bound for many steps cannot overflow.
inline constexpr int32_t kMembraneLimit = int32_t(1) << 30;

STAC_HD int32_t if_step(int32_t& v, int32_t& n, int32_t current, int n_min, int n_max) {
    const int64_t w = int64_t(v) + current;
    v = int32_t(w > kMembraneLimit ? kMembraneLimit : (w < -kMembraneLimit ? -kMembraneLimit : w));
    if (v >= kOne && n < n_max) {
        v -= kOne;
        ++n;
        return 1;
    }
    if (v < 0 && n > n_min) {
        v += kOne;
        --n;
        return -1;
    }
    return 0;
}

inline constexpr int32_t kMembraneStart = kOne / 2;

// The streaming schedule's neuron: the same dynamics with the membrane in double, in units of the
// threshold (start 0.5, fire at 1). Its currents are this step's float increments, which vary from
// step to step; a double membrane adds them without the per-step rounding a 2^-16 grid would
// accumulate over hundreds of steps (which flips counts near ties as S grows), and conserves
// charge across steps: +20 now and -15 later is +5. A NaN increment is no drive.
STAC_HD int32_t if_step_real(double& v, int32_t& n, double current, int n_min, int n_max) {
    if (current == current) v += current;
    if (v >= 1.0 && n < n_max) {
        v -= 1.0;
        ++n;
        return 1;
    }
    if (v < 0.0 && n > n_min) {
        v += 1.0;
        --n;
        return -1;
    }
    return 0;
}

}  // namespace stac::spiking
