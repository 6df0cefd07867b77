// stac tokenize, stac logits, stac inspect: the commands that show what the model and tokenizer compute.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/safetensors.h"
#include "convert/convert.h"
#include "models/gpt2.h"
#include "models/llama.h"
#include "models/model_dir.h"
#include "cli/cli.h"

namespace stac::cli {

namespace fs = std::filesystem;

int cmd_tokenize(int argc, char** argv) {
    ArgParser p("tokenize", "--model DIR [TEXT... | --decode IDS]",
                "Prints the token ids of TEXT (the arguments joined by spaces, or stdin when there are none)\n"
                "as a JSON array. <|endoftext|> in the text is the special token unless --no-special.\n"
                "With --decode, prints the text of a list of ids (1,2,3 or a JSON array) instead.");
    add_model_option(p);
    p.positionals("TEXT...", "text to tokenize (default: read stdin)");
    p.option("decode", "IDS", "token ids to turn back into text");
    p.flag("no-special", "treat <|endoftext|> in the text as ordinary text");
    if (!p.parse(argc, argv, 2)) return 0;
    placement_from(p);  // tokenizing needs no device, but a bad --device is still an error
    // Only the tokenizer is needed: do not load the weights.
    const fs::path dir = model_dir_from(p);
    if (!fs::is_directory(dir)) fail("{}: model directory not found", dir.string());
    const auto tok = load_tokenizer(dir);
    if (!tok) fail("{}: has no tokenizer files (vocab.json + merges.txt)", dir.string());

    if (p.has("decode")) {
        if (!p.args().empty()) throw UsageError("--decode takes no TEXT arguments");
        const std::string text = tok->decode(parse_id_list(p.get("decode"), "decode"));
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fputc('\n', stdout);
        return 0;
    }
    std::string text;
    if (p.args().empty()) {
        text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    } else {
        for (size_t i = 0; i < p.args().size(); ++i) {
            if (i) text += ' ';
            text += p.args()[i];
        }
    }
    const std::vector<int32_t> ids = tok->encode(text, {.allow_special = !p.has("no-special")});
    std::puts(json_int_array(ids.data(), int64_t(ids.size())).c_str());
    return 0;
}

int cmd_logits(int argc, char** argv) {
    ArgParser p("logits", "--model DIR (--ids LIST | --prompt TEXT) [--incremental]",
                "Prints one JSON object: {\"ids\", \"positions\", \"incremental\", \"vocab_size\", \"logits\": [[...] per\n"
                "position], \"greedy\": [argmax id per position]}. Logits are printed with enough digits to\n"
                "round-trip f32 exactly. By default one batched pass computes every position; --incremental\n"
                "feeds the tokens one at a time through the KV cache instead (the two must agree).");
    add_model_option(p);
    p.option("ids", "LIST", "token ids, e.g. 464,2068,7586");
    p.option("prompt", "TEXT", "text instead of ids (needs the model's tokenizer)");
    p.flag("incremental", "one token at a time through the KV cache");
    p.flag("last", "only the last position's logits");
    add_snn_options(p);
    if (!p.parse(argc, argv, 2)) return 0;

    OpenModel m = open_model(p);
    const std::vector<int32_t> ids = prompt_ids(p, m);
    const LanguageModel& model = *m.model;
    const int64_t T = int64_t(ids.size()), V = model.info().vocab_size;
    if (T > model.info().n_positions)
        fail("{} tokens exceed the model's context of {} positions", T, model.info().n_positions);
    const bool last_only = p.has("last");
    Tensor logits = Tensor::empty({last_only ? 1 : T, V}, DType::F32);
    auto state = model.new_state(T);
    if (p.has("incremental")) {
        for (int64_t t = 0; t < T; ++t) {
            const bool want = !last_only || t == T - 1;
            const Tensor row = want ? logits.slice_rows(last_only ? 0 : t, (last_only ? 0 : t) + 1) : Tensor();
            model.forward(std::span<const int32_t>(ids).subspan(size_t(t), 1), *state,
                          want ? LogitRows::Last : LogitRows::None, row);
        }
    } else {
        model.forward(ids, *state, last_only ? LogitRows::Last : LogitRows::All, logits);
    }

    const int64_t R = logits.dim(0);
    const float* L = logits.data<float>();
    std::vector<int32_t> greedy(static_cast<size_t>(R)), positions(static_cast<size_t>(R));
    for (int64_t r = 0; r < R; ++r) {
        const float* row = L + r * V;
        int64_t best = 0;
        for (int64_t v = 1; v < V; ++v)
            if (row[v] > row[best]) best = v;
        greedy[size_t(r)] = int32_t(best);
        positions[size_t(r)] = int32_t(last_only ? T - 1 : r);
    }
    std::string out = fmt::format("{{\"ids\":{},\"positions\":{},\"incremental\":{},\"vocab_size\":{},\"logits\":[",
                                  json_int_array(ids.data(), T), json_int_array(positions.data(), R),
                                  p.has("incremental") ? "true" : "false", V);
    for (int64_t r = 0; r < R; ++r) {
        if (r) out += ',';
        out += json_float_array(L + r * V, V);
    }
    out += "],\"greedy\":" + json_int_array(greedy.data(), R) + "}\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
}

namespace {

bool has_hf_tokenizer(const OpenModel& m) {
    std::error_code ec;
    return m.tokenizer && fs::exists(m.dir / "tokenizer.json", ec);
}

// The tokenizer part of inspect (both architectures): JSON and text.
nlohmann::json tokenizer_json(const OpenModel& m) {
    if (!m.tokenizer) return nullptr;
    return {{"kind", has_hf_tokenizer(m) ? "hf-bpe" : "gpt2-bpe"}, {"vocab_size", m.tokenizer->vocab_size()}};
}

void print_tokenizer(const OpenModel& m) {
    if (has_hf_tokenizer(m))
        fmt::print("tokenizer:    Hugging Face byte-level BPE, {} tokens (tokenizer.json)\n", m.tokenizer->vocab_size());
    else if (m.tokenizer)
        fmt::print("tokenizer:    GPT-2 byte-level BPE, {} tokens (vocab.json + merges.txt)\n", m.tokenizer->vocab_size());
    else
        fmt::print("tokenizer:    none (no tokenizer.json or vocab.json + merges.txt: ids only)\n");
}

// The spiking part of inspect (both architectures): JSON and text.
nlohmann::json snn_json(const SnnSpec& s) {
    return {{"timesteps", s.timesteps}, {"levels", s.levels}, {"schedule", std::string(schedule_name(s.schedule))},
            {"activation", activation_name(s.activation)}, {"granularity", s.per_channel ? "channel" : "tensor"},
            {"percentile", s.percentile}, {"sites", s.sites.str()}, {"token_scale", s.token_scale}, {"simplified", s.simplified},
            {"calibration", s.calibration}};
}

// inspect for a Llama directory, a Llama SNN directory or a llama GGUF file.
int inspect_llama(const ArgParser& p, const OpenModel& m, const LlamaModel& model) {
    const LlamaConfig& c = model.config();
    const LlamaWeights& w = model.weights();
    // The bytes of the weights as stored: the GGUF file, or every *.safetensors but the SNN's thresholds.
    uint64_t file_bytes = 0;
    std::error_code ec;
    if (fs::is_regular_file(m.dir, ec)) file_bytes = fs::file_size(m.dir);
    else
        for (const auto& e : fs::directory_iterator(m.dir))
            if (e.path().extension() == ".safetensors" && e.path().filename() != "snn.safetensors") file_bytes += e.file_size();
    const int64_t params = w.parameter_count();
    nlohmann::json j = {{"model", m.dir.string()},
                        {"architecture", "llama"},
                        {"n_layer", c.n_layer},
                        {"hidden_size", c.hidden},
                        {"n_head", c.n_head},
                        {"n_kv_head", c.n_kv_head},
                        {"head_dim", c.head_dim()},
                        {"intermediate_size", c.intermediate},
                        {"n_positions", c.n_positions},
                        {"vocab_size", c.vocab_size},
                        {"rope_theta", c.rope_theta},
                        {"rms_norm_eps", c.rms_norm_eps},
                        {"tied_lm_head", c.tie_word_embeddings},
                        {"parameters", params},
                        {"file_dtype", w.source_dtype},
                        {"file_bytes", file_bytes},
                        {"memory_bytes", w.arena->bytes()},
                        {"tokenizer", tokenizer_json(m)}};
    if (m.snn) j["snn"] = snn_json(m.snn->spec());
    if (p.has("json")) {
        std::puts(j.dump(2).c_str());
        return 0;
    }
    fmt::print("model:        {}\n", m.dir.string());
    fmt::print("architecture: llama, {} layers, hidden {}, {} query heads over {} key/value heads (head dim {}), intermediate {}\n",
               c.n_layer, c.hidden, c.n_head, c.n_kv_head, c.head_dim(), c.intermediate);
    fmt::print("context:      {} positions (rope_theta {}); vocabulary {}\n", c.n_positions, c.rope_theta, c.vocab_size);
    fmt::print("norm:         RMSNorm, eps {}; MLP SiLU-gated; LM head {}\n", c.rms_norm_eps,
               c.tie_word_embeddings ? "tied to the embedding" : "separate (lm_head.weight)");
    fmt::print("parameters:   {} ({:.1f} M)\n", params, double(params) / 1e6);
    fmt::print("weights:      {} as stored ({} bytes); f32 in memory ({} bytes)\n", w.source_dtype, file_bytes, w.arena->bytes());
    print_tokenizer(m);
    if (m.snn) {
        const SnnSpec& s = m.snn->spec();
        fmt::print("spiking:      S = {} timesteps, L = {} levels, {} schedule, activation {} (gate), {} thresholds ({}th percentile)\n",
                   s.timesteps, s.levels, schedule_name(s.schedule), activation_name(s.activation),
                   s.per_channel ? "per-channel" : "per-tensor", s.percentile);
        fmt::print("sites:        {}{}\n", s.sites.str(), s.token_scale ? ", token-scaled (all but q, k, v)" : "");
        fmt::print("calibration:  {}\n", s.calibration.dump());
    }
    return 0;
}

}  // namespace

int cmd_inspect(int argc, char** argv) {
    ArgParser p("inspect", "--model DIR [--json]",
                "Shows a model directory (GPT-2 or Llama, float or SNN): architecture and config, parameter count,\n"
                "the dtypes and bytes of the stored weights, the bytes held in memory, and the tokenizer. Loads and\n"
                "checks everything.");
    add_model_option(p);
    p.flag("json", "print JSON instead of text");
    if (!p.parse(argc, argv, 2)) return 0;
    OpenModel m = open_model(p);
    const LanguageModel& ann = m.snn ? m.snn->ann() : *m.model;
    const Gpt2Model* gpt2 = dynamic_cast<const Gpt2Model*>(&ann);
    if (const auto* llama = dynamic_cast<const LlamaModel*>(&ann)) return inspect_llama(p, m, *llama);
    if (!gpt2) fail("{}: inspect knows GPT-2 and Llama models, not {}", m.dir.string(), ann.info().architecture);
    const Gpt2Config& c = gpt2->config();
    const Gpt2Weights& w = gpt2->weights();
    const fs::path st = m.dir / "model.safetensors";
    const uint64_t file_bytes = fs::file_size(st);
    const int64_t params = w.parameter_count();
    nlohmann::json j = {{"model", m.dir.string()},
                        {"architecture", "gpt2"},
                        {"n_layer", c.n_layer},
                        {"n_embd", c.n_embd},
                        {"n_head", c.n_head},
                        {"head_dim", c.head_dim()},
                        {"n_inner", c.inner()},
                        {"n_positions", c.n_positions},
                        {"vocab_size", c.vocab_size},
                        {"activation_function", c.activation_function},
                        {"layer_norm_epsilon", c.layer_norm_epsilon},
                        {"tied_lm_head", c.tie_word_embeddings},
                        {"parameters", params},
                        {"file_dtype", w.source_dtype},
                        {"file_bytes", file_bytes},
                        {"memory_bytes", w.arena->bytes()},
                        {"tokenizer", tokenizer_json(m)}};
    if (m.snn) j["snn"] = snn_json(m.snn->spec());
    if (p.has("json")) {
        std::puts(j.dump(2).c_str());
        return 0;
    }
    fmt::print("model:        {}\n", m.dir.string());
    fmt::print("architecture: gpt2, {} layers, n_embd {}, {} heads (head dim {}), n_inner {}\n", c.n_layer, c.n_embd,
               c.n_head, c.head_dim(), c.inner());
    fmt::print("context:      {} positions; vocabulary {}\n", c.n_positions, c.vocab_size);
    fmt::print("activation:   {}; layer_norm_epsilon {}; LM head {}\n", c.activation_function, c.layer_norm_epsilon,
               c.tie_word_embeddings ? "tied to wte" : "separate (lm_head.weight)");
    fmt::print("parameters:   {} ({:.1f} M)\n", params, double(params) / 1e6);
    fmt::print("weights:      {} in model.safetensors ({} bytes); f32 in memory ({} bytes)\n", w.source_dtype,
               file_bytes, w.arena->bytes());
    print_tokenizer(m);
    if (m.snn) {
        const SnnSpec& s = m.snn->spec();
        fmt::print("spiking:      S = {} timesteps, L = {} levels, {} schedule, activation {}, {} thresholds ({}th percentile{})\n",
                   s.timesteps, s.levels, schedule_name(s.schedule), activation_name(s.activation),
                   s.per_channel ? "per-channel" : "per-tensor", s.percentile, s.simplified ? ", simplified" : "");
        fmt::print("sites:        {}{}\n", s.sites.str(), s.token_scale ? ", token-scaled (all but q, k, v)" : "");
        fmt::print("calibration:  {}\n", s.calibration.dump());
    }
    return 0;
}

}  // namespace stac::cli
