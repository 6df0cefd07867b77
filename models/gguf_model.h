// Models straight from a GGUF file (llama.cpp's format): the architecture named by
// general.architecture, its config from the GGUF metadata and its tensors mapped to stac's models.
#pragma once

#include <filesystem>
#include <memory>

#include "core/gguf.h"
#include "models/language_model.h"
#include "models/llama.h"

namespace stac {

// The LlamaConfig a GGUF file of architecture "llama" describes (llama.block_count,
// llama.embedding_length, llama.attention.head_count[_kv], llama.feed_forward_length,
// llama.context_length, llama.rope.freq_base, llama.attention.layer_norm_rms_epsilon; vocab from
// llama.vocab_size or token_embd.weight; tied when there is no output.weight).
LlamaConfig llama_config_from_gguf(const GgufFile& f);

// The GGUF's llama tensors under Hugging Face names, with the q/k rows of each head put back in
// transformers' rotate_half order (llama.cpp's converter interleaves the two halves of every head
// for its rope; this undoes it exactly). Unmapped GGUF tensors keep their names, so the Llama
// loader refuses them by name.
std::unique_ptr<WeightSource> llama_source_from_gguf(std::shared_ptr<const GgufFile> f, const LlamaConfig& cfg);

// Loads a .gguf file; throws stac::Error naming the file and the problem (an architecture other
// than llama, a tensor type stac does not dequantize, ...).
std::unique_ptr<LanguageModel> load_gguf_model(const std::filesystem::path& path);

}  // namespace stac
