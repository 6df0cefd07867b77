// Element types of stac tensors, their sizes and names, and the f16/bf16 <-> f32 conversions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

#include "core/hd.h"

namespace stac {

// F64 holds the exact integer-valued weights of the spiking model's linear layers (convert/).
enum class DType : uint8_t { F32, F16, BF16, I32, I8, U8, F64 };

constexpr size_t dtype_size(DType t) {
    switch (t) {
        case DType::F64: return 8;
        case DType::F32: case DType::I32: return 4;
        case DType::F16: case DType::BF16: return 2;
        case DType::I8: case DType::U8: return 1;
    }
    return 0;
}

// Names as safetensors spells them ("F32", "BF16", ...).
constexpr std::string_view dtype_name(DType t) {
    switch (t) {
        case DType::F32: return "F32";
        case DType::F16: return "F16";
        case DType::BF16: return "BF16";
        case DType::I32: return "I32";
        case DType::I8: return "I8";
        case DType::U8: return "U8";
        case DType::F64: return "F64";
    }
    return "?";
}

std::optional<DType> dtype_from_name(std::string_view name);

// IEEE binary16 -> f32, exact for every input (normals, subnormals, inf, NaN keeps its payload's top bits).
STAC_HD float f16_to_f32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    uint32_t bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {
        // subnormal: normalise the mantissa
        exp = 113;
        while ((man & 0x400u) == 0) { man <<= 1; --exp; }
        bits = sign | (exp << 23) | ((man & 0x3FFu) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// f32 -> IEEE binary16 with round-to-nearest-even (as numpy and PyTorch do); overflow gives inf.
STAC_HD uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7FFFFFFFu;
    if (ax >= 0x7F800000u) {  // inf or NaN
        return uint16_t(sign | 0x7C00u | (ax > 0x7F800000u ? (0x200u | ((ax >> 13) & 0x3FFu)) : 0u));
    }
    if (ax >= 0x477FF000u) return uint16_t(sign | 0x7C00u);  // rounds to >= 65520: inf
    if (ax < 0x38800000u) {                                   // result is subnormal or zero
        if (ax < 0x33000000u) return sign;                    // below half the smallest subnormal
        const uint32_t e = ax >> 23;
        const uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
        const uint32_t shift = 126u - e;  // 14..24
        uint32_t r = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1u);
        const uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) ++r;
        return uint16_t(sign | r);
    }
    uint32_t r = ax - 0x38000000u;  // rebias exponent 127 -> 15
    const uint32_t rem = r & 0x1FFFu;
    r >>= 13;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
    return uint16_t(sign | r);
}

STAC_HD float bf16_to_f32(uint16_t h) {
    const uint32_t bits = uint32_t(h) << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// f32 -> bfloat16 with round-to-nearest-even; NaN stays NaN.
STAC_HD uint16_t f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((x >> 16) | 0x40u);
    const uint32_t lsb = (x >> 16) & 1u;
    x += 0x7FFFu + lsb;
    return uint16_t(x >> 16);
}

}  // namespace stac
