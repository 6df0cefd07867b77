// LanguageModel: what every runnable model offers (GPT-2 float, its QANN and SNN, Llama later),
// and ModelState, the per-conversation cache it keeps between calls.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/tensor.h"

namespace stac {

// Which positions of a chunk get logits: none (prefill only), the last one, or all of them.
enum class LogitRows { None, Last, All };

inline int64_t logit_row_count(LogitRows rows, int64_t T) {
    return rows == LogitRows::None ? 0 : rows == LogitRows::Last ? (T > 0 ? 1 : 0) : T;
}

// The cache of one conversation: whatever a model keeps for tokens at positions [0, length()).
class ModelState {
public:
    virtual ~ModelState() = default;
    virtual int64_t length() const = 0;    // tokens in the cache = the next token's position
    virtual int64_t capacity() const = 0;  // most tokens it can hold
    virtual void clear() = 0;              // forget everything (length 0), keep the memory
    // Forget the tokens at positions >= n (n <= length()); positions are absolute, so this is exact.
    virtual void truncate(int64_t n) = 0;
};

// Where a model runs: the device, and on a GPU the dtype its weight matrices are kept in (F32, F16
// or BF16; norms and biases stay f32, activations f32, accumulation f32).
struct Placement {
    Device device = Device::cpu();
    DType weights = DType::F32;
};

struct ModelInfo {
    std::string architecture;  // "gpt2"
    int64_t vocab_size = 0;
    int64_t n_positions = 0;   // largest context the model supports
};

// The checks every forward makes before touching its cache: a non-empty chunk that fits the
// cache (P = tokens already cached), ids inside the vocabulary, and a logits tensor of [rows, V].
// `who` names the model in messages.
void check_forward_args(const ModelInfo& info, std::span<const int32_t> ids, int64_t P, int64_t capacity,
                        LogitRows rows, const Tensor& logits, const char* who);

class LanguageModel {
public:
    virtual ~LanguageModel() = default;
    virtual const ModelInfo& info() const = 0;
    // A fresh cache for up to `capacity` tokens (0: the model's n_positions).
    virtual std::unique_ptr<ModelState> new_state(int64_t capacity = 0) const = 0;
    // Processes `ids` at positions state.length() .. + ids.size() - 1 in one batched pass, appends
    // them to the cache and writes the logits of the rows asked for into `logits`: [rows, V].
    // Throws stac::Error (state unchanged) for bad ids or when the chunk does not fit the cache.
    virtual void forward(std::span<const int32_t> ids, ModelState& state, LogitRows rows, const Tensor& logits) const = 0;
};

}  // namespace stac
