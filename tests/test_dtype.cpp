// dtype conversions against independent references.
//
// References: f16 and bf16 values are decoded from their fields with ldexp (in double), and f32 is
// rounded to f16 by looking up the two neighbouring f16 values in a table and comparing with their
// exact midpoint; GCC's _Float16 (F16C or libgcc) is a second, independent check where it exists.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/tensor.h"

using namespace stac;

namespace {

uint32_t bits_of(float f) { return std::bit_cast<uint32_t>(f); }
float float_of(uint32_t u) { return std::bit_cast<float>(u); }

bool f16_is_nan(uint16_t h) { return (h & 0x7C00u) == 0x7C00u && (h & 0x3FFu) != 0; }
bool bf16_is_nan(uint16_t h) { return (h & 0x7F80u) == 0x7F80u && (h & 0x7Fu) != 0; }

// binary16 value from its fields: subnormals are man * 2^-24, normals (1024 + man) * 2^(exp - 25).
double ref_f16_value(uint16_t h) {
    const int exp = (h >> 10) & 0x1F, man = h & 0x3FF;
    double v;
    if (exp == 0x1F) v = man == 0 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
    else if (exp == 0) v = std::ldexp(double(man), -24);
    else v = std::ldexp(double(1024 + man), exp - 25);
    return (h & 0x8000u) ? -v : v;
}

// bfloat16 value from its fields: 8 exponent bits (bias 127), 7 mantissa bits.
double ref_bf16_value(uint16_t h) {
    const int exp = (h >> 7) & 0xFF, man = h & 0x7F;
    double v;
    if (exp == 0xFF) v = man == 0 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
    else if (exp == 0) v = std::ldexp(double(man), -133);
    else v = std::ldexp(double(128 + man), exp - 134);
    return (h & 0x8000u) ? -v : v;
}

// Non-negative f16 magnitudes by pattern 0x0000..0x7BFF (increasing), then 65536 at 0x7C00: the value
// the next pattern would have with an unbounded exponent, so the midpoint 65520 decides overflow.
const std::vector<double>& f16_magnitudes() {
    static const std::vector<double> table = [] {
        std::vector<double> t(0x7C01);
        for (uint32_t i = 0; i < 0x7C00; ++i) t[i] = ref_f16_value(uint16_t(i));
        t[0x7C00] = 65536.0;
        return t;
    }();
    return table;
}

// f32 -> f16 round-to-nearest-even, by table lookup and an exact midpoint comparison. NaN is not
// modelled here (callers check NaN separately).
uint16_t ref_f32_to_f16(float x) {
    const uint16_t sign = std::signbit(x) ? 0x8000u : 0u;
    const double a = std::fabs(double(x));
    if (a >= 65536.0) return uint16_t(sign | 0x7C00u);
    const auto& t = f16_magnitudes();
    const size_t i = size_t(std::upper_bound(t.begin(), t.end(), a) - t.begin()) - 1;  // t[i] <= a < t[i+1]
    if (a == t[i]) return uint16_t(sign | i);
    const double mid = (t[i] + t[i + 1]) / 2;  // exact: f16 values have 11 significant bits
    size_t r;
    if (a < mid) r = i;
    else if (a > mid) r = i + 1;
    else r = (i % 2 == 0) ? i : i + 1;
    return uint16_t(sign | r);
}

// f32 -> bf16 round-to-nearest-even: pick the truncated value or the next one up in magnitude by
// comparing with their exact midpoint in double; above the largest finite bf16 the "next" is 2^128 (inf).
uint16_t ref_f32_to_bf16(float x) {
    const uint32_t u = bits_of(x);
    const uint16_t lo = uint16_t(u >> 16);
    if ((u & 0x7FFFFFFFu) == 0x7F800000u) return lo;  // inf stays inf
    const double a = std::fabs(double(x));
    const double lo_mag = std::fabs(ref_bf16_value(lo));
    if (a == lo_mag) return lo;
    const int e = (lo >> 7) & 0xFF;
    const double ulp = std::ldexp(1.0, std::max(e, 1) - 134);
    const double mid = lo_mag + ulp / 2;
    const uint16_t hi = uint16_t(lo + 1);  // same sign, next magnitude (0x7F7F + 1 is inf)
    if (a < mid) return lo;
    if (a > mid) return hi;
    return (lo & 1u) ? hi : lo;
}

// Checks f32_to_f16 on one input against the reference (and _Float16); counts and describes mismatches.
struct Mismatches {
    size_t count = 0;
    std::string first;
    void add(const std::string& what) {
        if (count++ < 5) first += what + "\n";
    }
};

std::string hex(uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%X", v);
    return buf;
}

void check_f16_rounding(float x, Mismatches& m) {
    const uint16_t got = f32_to_f16(x);
    if (std::isnan(x)) {
        if (!f16_is_nan(got) || bool(got & 0x8000u) != std::signbit(x))
            m.add("f32 " + hex(bits_of(x)) + " (NaN) -> " + hex(got));
        return;
    }
    const uint16_t want = ref_f32_to_f16(x);
    if (got != want) m.add("f32 " + hex(bits_of(x)) + " -> " + hex(got) + ", reference " + hex(want));
#if defined(__FLT16_MANT_DIG__)
    const _Float16 hw = static_cast<_Float16>(x);
    const uint16_t want_hw = std::bit_cast<uint16_t>(hw);
    if (got != want_hw) m.add("f32 " + hex(bits_of(x)) + " -> " + hex(got) + ", _Float16 " + hex(want_hw));
#endif
}

void check_bf16_rounding(float x, Mismatches& m) {
    const uint16_t got = f32_to_bf16(x);
    if (std::isnan(x)) {
        if (!bf16_is_nan(got) || bool(got & 0x8000u) != std::signbit(x))
            m.add("f32 " + hex(bits_of(x)) + " (NaN) -> bf16 " + hex(got));
        return;
    }
    const uint16_t want = ref_f32_to_bf16(x);
    if (got != want) m.add("f32 " + hex(bits_of(x)) + " -> bf16 " + hex(got) + ", reference " + hex(want));
}

}  // namespace

// ---------------------------------------------------------------- dtype

TEST_CASE("dtype: sizes and names") {
    CHECK(dtype_size(DType::F32) == 4);
    CHECK(dtype_size(DType::I32) == 4);
    CHECK(dtype_size(DType::F16) == 2);
    CHECK(dtype_size(DType::BF16) == 2);
    CHECK(dtype_size(DType::I8) == 1);
    CHECK(dtype_size(DType::U8) == 1);
    for (DType t : {DType::F32, DType::F16, DType::BF16, DType::I32, DType::I8, DType::U8}) {
        REQUIRE(dtype_from_name(dtype_name(t)).has_value());
        CHECK(*dtype_from_name(dtype_name(t)) == t);
    }
    CHECK(dtype_name(DType::BF16) == "BF16");
    CHECK_FALSE(dtype_from_name("BOOL").has_value());
    CHECK_FALSE(dtype_from_name("f32").has_value());
    CHECK_FALSE(dtype_from_name("").has_value());
}

TEST_CASE("dtype: f16 -> f32 is exact for all 65536 bit patterns") {
    size_t bad = 0, bad_hw = 0, checked_nan = 0;
    std::string first;
    for (uint32_t i = 0; i < 0x10000; ++i) {
        const uint16_t h = uint16_t(i);
        const float got = f16_to_f32(h);
        if (f16_is_nan(h)) {
            ++checked_nan;
            // NaN stays NaN, keeps its sign and the payload bits below the quiet bit.
            const uint32_t g = bits_of(got);
            if (!std::isnan(got) || std::signbit(got) != bool(h & 0x8000u) || ((g >> 13) & 0x1FFu) != (h & 0x1FFu)) {
                if (bad++ < 5) first += "NaN " + hex(h) + " -> " + hex(g) + "\n";
            }
            continue;
        }
        const float want = static_cast<float>(ref_f16_value(h));  // exact: every f16 value is an f32
        if (bits_of(got) != bits_of(want)) {
            if (bad++ < 5) first += hex(h) + " -> " + hex(bits_of(got)) + ", reference " + hex(bits_of(want)) + "\n";
        }
#if defined(__FLT16_MANT_DIG__)
        const float hw = static_cast<float>(std::bit_cast<_Float16>(h));
        if (bits_of(got) != bits_of(hw)) ++bad_hw;
#endif
    }
    INFO(first);
    CHECK(bad == 0);
    CHECK(bad_hw == 0);
    CHECK(checked_nan == 2 * 1023);
    // Spot values that do not depend on either reference.
    CHECK(f16_to_f32(0x3C00) == 1.0f);
    CHECK(f16_to_f32(0xC000) == -2.0f);
    CHECK(f16_to_f32(0x7BFF) == 65504.0f);
    CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));
    CHECK(f16_to_f32(0x03FF) == std::ldexp(1023.0f, -24));
    CHECK(f16_to_f32(0x0400) == std::ldexp(1.0f, -14));
    CHECK(bits_of(f16_to_f32(0x8000)) == 0x80000000u);
    CHECK(f16_to_f32(0x7C00) == std::numeric_limits<float>::infinity());
    CHECK(f16_to_f32(0xFC00) == -std::numeric_limits<float>::infinity());
}

TEST_CASE("dtype: f32 -> f16 rounds to nearest even on every value, midpoint and its neighbours") {
#if !defined(__FLT16_MANT_DIG__)
    MESSAGE("_Float16 is not available: checking against the table reference only");
#endif
    Mismatches m;
    const auto& t = f16_magnitudes();
    size_t ties_even_down = 0, ties_even_up = 0;
    for (uint32_t i = 0; i < 0x7C00; ++i) {
        for (float s : {1.0f, -1.0f}) {
            // every finite f16 value converts back to itself
            const float v = s * static_cast<float>(t[i]);
            check_f16_rounding(v, m);
            if (f32_to_f16(v) != uint16_t((s < 0 ? 0x8000u : 0u) | i)) m.add("f16 value " + hex(i) + " not kept");
            // the midpoint to the next value up (for 0x7BFF: 65520, which must overflow to inf) and both neighbours
            const float mid = s * static_cast<float>((t[i] + t[i + 1]) / 2);
            if (double(std::fabs(mid)) != (t[i] + t[i + 1]) / 2) m.add("midpoint above " + hex(i) + " is not an f32");
            check_f16_rounding(mid, m);
            const uint16_t r = uint16_t(f32_to_f16(mid) & 0x7FFFu);
            if (r != ((i % 2 == 0) ? i : i + 1)) m.add("tie above " + hex(i) + " -> " + hex(r));
            else (r == i ? ties_even_down : ties_even_up)++;
            check_f16_rounding(std::nextafter(mid, 0.0f), m);
            check_f16_rounding(std::nextafter(mid, s * std::numeric_limits<float>::infinity()), m);
            if ((f32_to_f16(std::nextafter(mid, 0.0f)) & 0x7FFFu) != i) m.add("below tie above " + hex(i));
            if ((f32_to_f16(std::nextafter(mid, s * 1e30f)) & 0x7FFFu) != i + 1) m.add("above tie above " + hex(i));
        }
    }
    INFO(m.first);
    CHECK(m.count == 0);
    CHECK(ties_even_down == ties_even_up);  // alternate: half the ties go down, half up
    CHECK(ties_even_down + ties_even_up == 2 * 0x7C00);
}

TEST_CASE("dtype: f32 -> f16 special values, subnormal range and overflow") {
    const float inf = std::numeric_limits<float>::infinity();
    CHECK(f32_to_f16(0.0f) == 0x0000);
    CHECK(f32_to_f16(-0.0f) == 0x8000);
    CHECK(f32_to_f16(inf) == 0x7C00);
    CHECK(f32_to_f16(-inf) == 0xFC00);
    CHECK(f32_to_f16(65504.0f) == 0x7BFF);
    CHECK(f32_to_f16(65520.0f) == 0x7C00);  // the tie between 65504 and "65536" goes to even: inf
    CHECK(f32_to_f16(-65520.0f) == 0xFC00);
    CHECK(f32_to_f16(std::nextafter(65520.0f, 0.0f)) == 0x7BFF);
    CHECK(f32_to_f16(std::numeric_limits<float>::max()) == 0x7C00);
    CHECK(f32_to_f16(std::ldexp(1.0f, -25)) == 0x0000);  // half the smallest subnormal: tie to even (zero)
    CHECK(f32_to_f16(-std::ldexp(1.0f, -25)) == 0x8000);
    CHECK(f32_to_f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)) == 0x0001);
    CHECK(f32_to_f16(std::ldexp(3.0f, -25)) == 0x0002);  // 1.5 subnormal steps: tie to even (2)
    CHECK(f32_to_f16(std::numeric_limits<float>::denorm_min()) == 0x0000);
    CHECK(f32_to_f16(std::ldexp(1.0f, -14)) == 0x0400);  // smallest normal
    CHECK(f32_to_f16(0.1f) == 0x2E66);
    CHECK(f32_to_f16(1.0f) == 0x3C00);
    CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11)) == 0x3C00);  // tie: stays at even 1.0
    CHECK(f32_to_f16(1.0f + std::ldexp(3.0f, -11)) == 0x3C02);  // tie: goes up to even
    for (uint32_t nan : {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFF800001u, 0x7FFFFFFFu, 0x7FA00000u}) {
        const uint16_t h = f32_to_f16(float_of(nan));
        CAPTURE(hex(nan));
        CHECK(f16_is_nan(h));
        CHECK(bool(h & 0x8000u) == bool(nan & 0x80000000u));
    }

    Mismatches m;
    // Dense sweep over the f32 patterns whose f16 result is subnormal or zero, and around the overflow edge.
    for (uint32_t u = 0x32FF0000u; u <= 0x38810000u; u += 37) {
        check_f16_rounding(float_of(u), m);
        check_f16_rounding(float_of(u | 0x80000000u), m);
    }
    for (uint32_t u = 0x477F0000u; u <= 0x47810000u; ++u) check_f16_rounding(float_of(u), m);
    // Every f32 subnormal region sample, and specials through the common path.
    for (uint32_t u = 0; u < 0x00800000u; u += 4099) check_f16_rounding(float_of(u), m);
    for (uint32_t u : {0x7F800000u, 0xFF800000u, 0x7FC00000u, 0x00000000u, 0x80000000u, 0x7F7FFFFFu}) check_f16_rounding(float_of(u), m);
    // A few million random f32 bit patterns (all exponents, so mostly overflow/underflow) and random
    // values within the f16 range.
    std::mt19937 rng(20240601);
    for (int k = 0; k < 2'000'000; ++k) check_f16_rounding(float_of(rng()), m);
    std::uniform_int_distribution<uint32_t> in_range(0x33000000u, 0x47800000u);
    for (int k = 0; k < 2'000'000; ++k) {
        const uint32_t u = in_range(rng) | (rng() & 0x80000000u);
        check_f16_rounding(float_of(u), m);
    }
    INFO(m.first);
    CHECK(m.count == 0);
}

TEST_CASE("dtype: bf16 -> f32 is exact and f32 -> bf16 rounds to nearest even") {
    size_t bad = 0;
    std::string first;
    for (uint32_t i = 0; i < 0x10000; ++i) {
        const uint16_t h = uint16_t(i);
        const float got = bf16_to_f32(h);
        if (bf16_is_nan(h)) {
            if (!std::isnan(got) || std::signbit(got) != bool(h & 0x8000u)) ++bad;
            continue;
        }
        const float want = static_cast<float>(ref_bf16_value(h));
        if (bits_of(got) != bits_of(want) && bad++ < 5) first += hex(h) + " -> " + hex(bits_of(got)) + "\n";
    }
    INFO(first);
    CHECK(bad == 0);
    CHECK(bf16_to_f32(0x3F80) == 1.0f);
    CHECK(bf16_to_f32(0xC000) == -2.0f);
    CHECK(bf16_to_f32(0x0001) == std::ldexp(1.0f, -133));

    const float inf = std::numeric_limits<float>::infinity();
    CHECK(f32_to_bf16(1.0f) == 0x3F80);
    CHECK(f32_to_bf16(0.1f) == 0x3DCD);  // 0x3DCCCCCD rounds up
    CHECK(f32_to_bf16(float_of(0x3F808000u)) == 0x3F80);  // tie, even stays
    CHECK(f32_to_bf16(float_of(0x3F818000u)) == 0x3F82);  // tie, odd goes up
    CHECK(f32_to_bf16(float_of(0x3F808001u)) == 0x3F81);
    CHECK(f32_to_bf16(float_of(0x3F807FFFu)) == 0x3F80);
    CHECK(f32_to_bf16(inf) == 0x7F80);
    CHECK(f32_to_bf16(-inf) == 0xFF80);
    CHECK(f32_to_bf16(0.0f) == 0x0000);
    CHECK(f32_to_bf16(-0.0f) == 0x8000);
    CHECK(f32_to_bf16(std::numeric_limits<float>::max()) == 0x7F80);  // above max bf16 + half ulp: inf
    CHECK(f32_to_bf16(float_of(0x7F7F7FFFu)) == 0x7F7F);
    CHECK(f32_to_bf16(float_of(0x7F7F8000u)) == 0x7F80);  // tie at the top, odd: inf
    for (uint32_t nan : {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFF800001u, 0x7FFFFFFFu, 0x7F80FFFFu, 0xFF80FFFFu}) {
        const uint16_t h = f32_to_bf16(float_of(nan));
        CAPTURE(hex(nan));
        CHECK(bf16_is_nan(h));  // payloads only in the low 16 bits must not truncate to inf
        CHECK(bool(h & 0x8000u) == bool(nan & 0x80000000u));
    }

    Mismatches m;
    // Ties and their neighbours for every upper half.
    for (uint32_t hi = 0; hi < 0x10000; ++hi)
        for (uint32_t low : {0x0000u, 0x0001u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu})
            check_bf16_rounding(float_of((hi << 16) | low), m);
    std::mt19937 rng(7);
    for (int k = 0; k < 3'000'000; ++k) check_bf16_rounding(float_of(rng()), m);
    INFO(m.first);
    CHECK(m.count == 0);
}

TEST_CASE("dtype: f16 and bf16 round trips are the identity on every non-NaN pattern") {
    size_t bad16 = 0, badbf = 0;
    for (uint32_t i = 0; i < 0x10000; ++i) {
        const uint16_t h = uint16_t(i);
        const uint16_t r16 = f32_to_f16(f16_to_f32(h));
        if (f16_is_nan(h) ? !f16_is_nan(r16) || (r16 & 0x8000u) != (h & 0x8000u) : r16 != h) ++bad16;
        const uint16_t rbf = f32_to_bf16(bf16_to_f32(h));
        if (bf16_is_nan(h) ? !bf16_is_nan(rbf) || (rbf & 0x8000u) != (h & 0x8000u) : rbf != h) ++badbf;
    }
    CHECK(bad16 == 0);
    CHECK(badbf == 0);
}

