// GPT-2: config.json checks, weight loading (every published layout), and forward parity with
// Hugging Face transformers (fixtures from scripts/reference/make_gpt2_fixtures.py).
#include <doctest/doctest.h>

#include <fstream>

#include "core/json_file.h"
#include "core/safetensors.h"
#include "models/generate.h"
#include "models/gpt2.h"
#include "models/model_dir.h"
#include "tests/helpers.h"

using namespace stac;
using namespace stac::test;
using nlohmann::json;

namespace {

const char* kFixtures[] = {"tiny-gelu-f32", "tiny-relu-f16", "tiny-gelu-bf16-published", "tiny-untied-f32"};

json base_config() { return read_json_file(gpt2_fixture("tiny-gelu-f32") / "config.json"); }

std::string config_error(const json& j) {
    try {
        Gpt2Config::from_json(j, "config.json");
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

// Loads `dir` and returns the error message ("" if it loaded).
std::string load_error(const std::filesystem::path& dir) {
    try {
        load_language_model(dir);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

// Copies a fixture model to `dir` with one config.json value changed.
void copy_with_config(const std::filesystem::path& src, const std::filesystem::path& dir, const char* key, json value) {
    copy_model(src, dir);
    json j = read_json_file(dir / "config.json");
    j[key] = std::move(value);
    write_json_file(dir / "config.json", j);
}

// Rewrites DIR/model.safetensors through `edit` (a list of name/tensor pairs to change).
template <typename F>
void rewrite_weights(const std::filesystem::path& dir, F edit) {
    std::vector<std::pair<std::string, Tensor>> ts;
    {
        const auto f = SafetensorsFile::open(dir / "model.safetensors");
        for (const auto& e : f.entries()) ts.emplace_back(e.name, f.tensor(e.name).clone());
    }
    edit(ts);
    save_safetensors(dir / "model.safetensors", ts, {{"format", "pt"}});
}

}  // namespace

TEST_CASE("gpt2: forward matches transformers on every fixture (batched, max abs diff <= 1e-4)") {
    for (const char* name : kFixtures) {
        CAPTURE(name);
        const auto dir = gpt2_fixture(name);
        const auto model = load_language_model(dir);
        for (const auto& c : load_reference(dir)) {
            const int64_t T = int64_t(c.ids.size());
            CAPTURE(T);
            REQUIRE(c.vocab == model->info().vocab_size);
            auto st = model->new_state();
            Tensor logits = Tensor::empty({T, c.vocab}, DType::F32);
            model->forward(c.ids, *st, LogitRows::All, logits);
            CHECK(max_abs_diff(logits.data<float>(), c.logits.data(), c.logits.size()) <= 1e-4f);
            CHECK(st->length() == T);
        }
    }
}

TEST_CASE("gpt2: incremental through the KV cache and chunked prefill equal transformers' batched logits") {
    for (const char* name : kFixtures) {
        CAPTURE(name);
        const auto dir = gpt2_fixture(name);
        const auto model = load_language_model(dir);
        for (const auto& c : load_reference(dir)) {
            const int64_t T = int64_t(c.ids.size()), V = c.vocab;
            // one token at a time
            auto st = model->new_state();
            Tensor row = Tensor::empty({1, V}, DType::F32);
            float worst = 0;
            for (int64_t t = 0; t < T; ++t) {
                model->forward(std::span<const int32_t>(c.ids).subspan(size_t(t), 1), *st, LogitRows::Last, row);
                worst = std::max(worst, max_abs_diff(row.data<float>(), c.logits.data() + t * V, size_t(V)));
            }
            CHECK(worst <= 1e-4f);
            // chunks of 3 with the last row of each chunk
            auto st2 = model->new_state();
            worst = 0;
            for (int64_t t = 0; t < T; t += 3) {
                const int64_t n = std::min<int64_t>(3, T - t);
                model->forward(std::span<const int32_t>(c.ids).subspan(size_t(t), size_t(n)), *st2, LogitRows::Last, row);
                worst = std::max(worst, max_abs_diff(row.data<float>(), c.logits.data() + (t + n - 1) * V, size_t(V)));
            }
            CHECK(worst <= 1e-4f);
        }
    }
}

TEST_CASE("gpt2: greedy continuations equal transformers' generate()") {
    for (const char* name : kFixtures) {
        CAPTURE(name);
        const auto dir = gpt2_fixture(name);
        const auto model = load_language_model(dir);
        for (const auto& c : load_reference(dir)) {
            if (c.greedy.empty()) continue;
            Session s(*model);
            Sampler greedy(SamplingOptions{}, model->info().vocab_size);
            std::vector<int32_t> got;
            GenerateOptions opt;
            opt.max_new_tokens = int64_t(c.greedy.size());
            generate(s, greedy, c.ids, opt, [&](int32_t id) {
                got.push_back(id);
                return true;
            });
            CHECK(got == c.greedy);
        }
    }
}

TEST_CASE("gpt2: published layout loads: no prefix, mask buffers ignored, tied head - dtypes upcast") {
    const auto m = Gpt2Model::load(gpt2_fixture("tiny-gelu-bf16-published"));
    CHECK(m->config().activation == Activation::GeluErf);
    CHECK(m->weights().source_dtype == "BF16");
    CHECK(m->weights().lm_head.raw() == m->weights().wte.raw());
    const auto f16 = Gpt2Model::load(gpt2_fixture("tiny-relu-f16"));
    CHECK(f16->weights().source_dtype == "F16");
    CHECK(f16->config().inner() == 96);
    CHECK(f16->config().layer_norm_epsilon == doctest::Approx(1e-6));
    const auto untied = Gpt2Model::load(gpt2_fixture("tiny-untied-f32"));
    CHECK(untied->weights().lm_head.raw() != untied->weights().wte.raw());
    // parameter count: embeddings + per layer (2 LN + attn + proj + fc + fc_proj) + ln_f (+ separate head)
    const Gpt2Config& c = m->config();
    const int64_t C = c.n_embd, I = c.inner();
    const int64_t per_layer = 4 * C + (C * 3 * C + 3 * C) + (C * C + C) + (C * I + I) + (I * C + C);
    CHECK(m->weights().parameter_count() == c.vocab_size * C + c.n_positions * C + c.n_layer * per_layer + 2 * C);
}

TEST_CASE("gpt2: config.json values are checked with clear messages") {
    CHECK(config_error(base_config()).empty());
    auto with = [](const char* key, json v) {
        json j = base_config();
        j[key] = v;
        return j;
    };
    auto without = [](const char* key) {
        json j = base_config();
        j.erase(key);
        return j;
    };
    CHECK(config_error(without("n_layer")).find("missing \"n_layer\"") != std::string::npos);
    CHECK(config_error(with("n_embd", "64")).find("\"n_embd\" must be an integer") != std::string::npos);
    CHECK(config_error(with("n_embd", 65.5)).find("\"n_embd\" must be an integer") != std::string::npos);
    CHECK(config_error(with("n_head", 5)).find("not divisible by n_head") != std::string::npos);
    CHECK(config_error(with("n_layer", 0)).find("out of range") != std::string::npos);
    CHECK(config_error(with("vocab_size", -3)).find("out of range") != std::string::npos);
    CHECK(config_error(with("activation_function", "swish")).find("\"swish\" is not supported") != std::string::npos);
    CHECK(config_error(with("model_type", "llama")).find("expected \"gpt2\"") != std::string::npos);
    CHECK(config_error(with("n_ctx", 32)).find("n_ctx = 32 disagrees with n_positions = 64") != std::string::npos);
    CHECK(config_error(with("layer_norm_epsilon", -1.0)).find("layer_norm_epsilon") != std::string::npos);
    CHECK(config_error(with("tie_word_embeddings", "yes")).find("true or false") != std::string::npos);
    CHECK(config_error(with("add_cross_attention", true)).find("not supported") != std::string::npos);
    CHECK(config_error(json::array()).find("expected a JSON object") != std::string::npos);
    // Each message names the file.
    CHECK(config_error(with("n_head", 5)).rfind("config.json: ", 0) == 0);
}

TEST_CASE("gpt2: malformed or mismatched model directories are refused, naming the problem") {
    TempDir tmp;
    const auto src = gpt2_fixture("tiny-gelu-f32");
    const auto dir = tmp / "m";

    SUBCASE("missing directory and files") {
        CHECK(load_error(tmp / "nope").find("not found") != std::string::npos);
        std::filesystem::create_directories(dir);
        CHECK(load_error(dir).find("config.json: file not found") != std::string::npos);
        std::filesystem::copy_file(src / "config.json", dir / "config.json");
        CHECK(load_error(dir).find("model.safetensors: file not found") != std::string::npos);
    }
    SUBCASE("config.json that is not JSON") {
        copy_model(src, dir);
        std::ofstream(dir / "config.json") << "{ \"n_layer\": 2, ";
        CHECK(load_error(dir).find("not valid JSON") != std::string::npos);
    }
    SUBCASE("config disagrees with the weights: shape named with file and tensor") {
        copy_with_config(src, dir, "vocab_size", 999);
        const std::string e = load_error(dir);
        CHECK(e.find("model.safetensors: tensor transformer.wte.weight has shape [1000, 64], expected [999, 64]") !=
              std::string::npos);
    }
    SUBCASE("fewer layers in config than in the file: unexpected tensor") {
        copy_with_config(src, dir, "n_layer", 1);
        CHECK(load_error(dir).find("unexpected tensor transformer.h.1.") != std::string::npos);
    }
    SUBCASE("more layers in config than in the file: missing tensor") {
        copy_with_config(src, dir, "n_layer", 3);
        CHECK(load_error(dir).find("missing tensor transformer.h.2.ln_1.weight") != std::string::npos);
    }
    SUBCASE("truncated weights file") {
        copy_model(src, dir);
        std::filesystem::resize_file(dir / "model.safetensors", std::filesystem::file_size(dir / "model.safetensors") - 100);
        const std::string e = load_error(dir);
        CHECK(e.find("model.safetensors") != std::string::npos);
        CHECK(e.find("past the end") != std::string::npos);
    }
    SUBCASE("corrupted header") {
        copy_model(src, dir);
        std::fstream f(dir / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(8);
        f.write("#", 1);
        f.close();
        CHECK(load_error(dir).find("header is not valid JSON") != std::string::npos);
    }
    SUBCASE("a weight in an integer dtype") {
        copy_model(src, dir);
        rewrite_weights(dir, [](auto& ts) {
            for (auto& [n, t] : ts)
                if (n == "transformer.ln_f.bias") t = Tensor::zeros(t.shape(), DType::I32);
        });
        CHECK(load_error(dir).find("tensor transformer.ln_f.bias has dtype I32, expected F32, F16 or BF16") !=
              std::string::npos);
    }
    SUBCASE("untied config without lm_head.weight") {
        copy_with_config(src, dir, "tie_word_embeddings", false);
        CHECK(load_error(dir).find("no lm_head.weight") != std::string::npos);
    }
    SUBCASE("a stray tensor") {
        copy_model(src, dir);
        rewrite_weights(dir, [](auto& ts) { ts.emplace_back("transformer.extra.weight", Tensor::zeros({2}, DType::F32)); });
        CHECK(load_error(dir).find("unexpected tensor transformer.extra.weight [2]") != std::string::npos);
    }
    SUBCASE("pytorch_model.bin only") {
        std::filesystem::create_directories(dir);
        std::filesystem::copy_file(src / "config.json", dir / "config.json");
        std::ofstream(dir / "pytorch_model.bin") << "x";
        CHECK(load_error(dir).find("safetensors only") != std::string::npos);
    }
}

TEST_CASE("gpt2: bad ids and over-long chunks are refused and leave the cache unchanged") {
    const auto model = load_language_model(gpt2_fixture("tiny-relu-f16"));  // n_positions 32, vocab 512
    auto st = model->new_state();
    Tensor row = Tensor::empty({1, 512}, DType::F32);
    const std::vector<int32_t> ok = {1, 2, 3};
    model->forward(ok, *st, LogitRows::Last, row);
    const std::vector<int32_t> bad = {5, 512};
    CHECK_THROWS_WITH_AS(model->forward(bad, *st, LogitRows::Last, row), doctest::Contains("token id 512"), Error);
    const std::vector<int32_t> neg = {-1};
    CHECK_THROWS_AS(model->forward(neg, *st, LogitRows::Last, row), Error);
    const std::vector<int32_t> long_chunk(30, 7);
    CHECK_THROWS_WITH_AS(model->forward(long_chunk, *st, LogitRows::Last, row), doctest::Contains("does not fit"), Error);
    CHECK(st->length() == 3);
    CHECK_THROWS_AS(model->new_state(33), Error);
}
