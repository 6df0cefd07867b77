// Opening a model directory (DESIGN §3): the architecture named by config.json, and its tokenizer files.
#pragma once

#include <filesystem>
#include <memory>

#include "models/language_model.h"
#include "models/tokenizer.h"

namespace stac {

// Loads the model in `dir` by its config.json model_type ("gpt2", "llama"), or a .gguf file by its
// general.architecture ("llama"); throws stac::Error naming the file and the problem (missing
// files, unknown architecture, malformed weights).
std::unique_ptr<LanguageModel> load_language_model(const std::filesystem::path& dir);
// The same, placed on `where` (a GPU: weights uploaded once; throws naming the device when it is
// missing, busy or not compiled in).
std::unique_ptr<LanguageModel> load_language_model(const std::filesystem::path& dir, const Placement& where);

// The tokenizer files of `dir`: tokenizer.json (Hugging Face; preferred when present, with
// tokenizer_config.json's eos_token), else vocab.json + merges.txt (GPT-2), or nullptr when it has
// none (or `dir` is a GGUF file: stac reads no tokenizer from GGUF, such a model takes token ids). Throws when the files exist but are malformed, or when only one of the pair is present.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& dir);

}  // namespace stac
