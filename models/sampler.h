// Sampler: greedy, temperature, top-k, top-p and repetition penalty, seeded and deterministic
// (its own RNG, so the same seed gives the same tokens on every platform). Allocates only at construction.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace stac {

struct SamplingOptions {
    float temperature = 0.0f;         // <= 0: greedy (argmax, first index on ties)
    int top_k = 0;                    // 0: off
    float top_p = 1.0f;               // 1: off
    float repetition_penalty = 1.0f;  // 1: off; as transformers: logit > 0 ? logit / p : logit * p, once per distinct id in the context
    uint64_t seed = 0;

    bool greedy() const { return temperature <= 0.0f; }
    void validate() const;  // throws stac::Error naming the bad option
};

// xoshiro256** seeded through splitmix64: small, fast, and the same everywhere.
class Rng {
public:
    explicit Rng(uint64_t seed);
    uint64_t next();
    double uniform();  // [0, 1) with 53 random bits

private:
    uint64_t s_[4];
};

class Sampler {
public:
    Sampler(const SamplingOptions& opt, int64_t vocab_size);
    // Picks the next id from logits [V]; `context` holds the ids the repetition penalty looks at.
    int32_t sample(std::span<const float> logits, std::span<const int32_t> context = {});
    const SamplingOptions& options() const { return opt_; }

private:
    SamplingOptions opt_;
    Rng rng_;
    std::vector<float> work_;     // [V] adjusted logits, then probabilities
    std::vector<int32_t> index_;  // [V] candidate ids
    std::vector<uint32_t> seen_;  // [V] epoch marks for the repetition penalty
    uint32_t epoch_ = 0;
};

}  // namespace stac
