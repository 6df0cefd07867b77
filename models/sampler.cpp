#include "models/sampler.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace stac {

void SamplingOptions::validate() const {
    if (!std::isfinite(temperature) || temperature < 0) fail("--temperature {} must be a finite number >= 0", temperature);
    if (top_k < 0) fail("--top-k {} must be >= 0", top_k);
    if (!(top_p > 0.0f && top_p <= 1.0f)) fail("--top-p {} must be in (0, 1]", top_p);
    if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty))
        fail("--repetition-penalty {} must be a positive finite number", repetition_penalty);
}

namespace {
uint64_t splitmix64(uint64_t& x) {
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

Rng::Rng(uint64_t seed) {
    for (auto& s : s_) s = splitmix64(seed);
}

uint64_t Rng::next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
}

double Rng::uniform() { return double(next() >> 11) * 0x1.0p-53; }

Sampler::Sampler(const SamplingOptions& opt, int64_t vocab_size)
    : opt_(opt), rng_(opt.seed), work_(size_t(vocab_size)), index_(size_t(vocab_size)), seen_(size_t(vocab_size), 0) {
    opt_.validate();
    if (vocab_size <= 0) fail("sampler: vocabulary size {} must be positive", vocab_size);
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> context) {
    const size_t V = work_.size();
    if (logits.size() != V) fail("sampler: {} logits for a vocabulary of {}", logits.size(), V);
    std::copy(logits.begin(), logits.end(), work_.begin());

    if (opt_.repetition_penalty != 1.0f) {
        if (++epoch_ == 0) {  // wrapped: clear the marks
            std::fill(seen_.begin(), seen_.end(), 0u);
            epoch_ = 1;
        }
        for (int32_t id : context) {
            if (id < 0 || size_t(id) >= V || seen_[size_t(id)] == epoch_) continue;
            seen_[size_t(id)] = epoch_;
            float& l = work_[size_t(id)];
            l = l > 0 ? l / opt_.repetition_penalty : l * opt_.repetition_penalty;
        }
    }

    if (opt_.greedy() || opt_.top_k == 1) {
        size_t best = 0;
        for (size_t i = 1; i < V; ++i)
            if (work_[i] > work_[best]) best = i;
        return int32_t(best);
    }

    // Candidates: all ids, or the top k by logit (ties broken by lower id for determinism).
    for (size_t i = 0; i < V; ++i) index_[i] = int32_t(i);
    size_t n = V;
    auto by_logit = [&](int32_t a, int32_t b) {
        return work_[size_t(a)] != work_[size_t(b)] ? work_[size_t(a)] > work_[size_t(b)] : a < b;
    };
    if (opt_.top_k > 0 && size_t(opt_.top_k) < V) {
        n = size_t(opt_.top_k);
        std::nth_element(index_.begin(), index_.begin() + long(n) - 1, index_.end(), by_logit);
    }
    const bool need_sorted = opt_.top_p < 1.0f;
    if (need_sorted) std::sort(index_.begin(), index_.begin() + long(n), by_logit);

    // Softmax of logit / T over the candidates (in double for a stable cumulative sum).
    float m = -INFINITY;
    for (size_t i = 0; i < n; ++i) m = std::max(m, work_[size_t(index_[i])]);
    const double inv_t = 1.0 / double(opt_.temperature);
    double total = 0;
    for (size_t i = 0; i < n; ++i) {
        float& w = work_[size_t(index_[i])];
        w = float(std::exp((double(w) - double(m)) * inv_t));
        total += w;
    }
    if (need_sorted) {
        // Smallest prefix (by probability) whose mass reaches top_p; at least one id.
        double cum = 0;
        size_t keep = 0;
        while (keep < n) {
            cum += work_[size_t(index_[keep])] / total;
            ++keep;
            if (cum >= double(opt_.top_p)) break;
        }
        n = keep;
        total = 0;
        for (size_t i = 0; i < n; ++i) total += work_[size_t(index_[i])];
    }
    const double r = rng_.uniform() * total;
    double cum = 0;
    for (size_t i = 0; i < n; ++i) {
        cum += work_[size_t(index_[i])];
        if (r < cum) return index_[i];
    }
    return index_[n - 1];
}

}  // namespace stac
