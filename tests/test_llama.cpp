// Llama: config.json checks, weight loading (single file, shards, bf16, tied/untied), forward
// parity with Hugging Face transformers (fixtures from scripts/reference/make_llama_fixtures.py),
// the cache of key/value heads, and the new kernels (RMSNorm, RoPE, SiLU gate, grouped-query attention).
#include <doctest/doctest.h>

#include <fstream>

#include "core/json_file.h"
#include "core/safetensors.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/reference.h"
#include "kernels/kernels.h"
#include "models/generate.h"
#include "models/llama.h"
#include "models/model_dir.h"
#include "models/session.h"
#include "tests/helpers.h"

using namespace stac;
using namespace stac::test;
using nlohmann::json;

namespace {

const char* kLlamaFixtures[] = {"tiny-gqa-tied-f32", "tiny-mha-untied-f32", "tiny-gqa-bf16-sharded"};

std::filesystem::path llama_fixture(const std::string& name) { return fixtures() / "llama" / name; }

// Copies every file of a fixture model directory (config, weights or shards, index) into `dst`.
void copy_dir(const std::filesystem::path& src, const std::filesystem::path& dst) {
    std::filesystem::create_directories(dst);
    for (const auto& e : std::filesystem::directory_iterator(src))
        if (!e.path().filename().string().starts_with("reference"))
            std::filesystem::copy_file(e.path(), dst / e.path().filename(), std::filesystem::copy_options::overwrite_existing);
}

std::string load_error(const std::filesystem::path& dir) {
    try {
        load_language_model(dir);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

json base_config() { return read_json_file(llama_fixture("tiny-gqa-tied-f32") / "config.json"); }

std::string config_error(const json& j) {
    try {
        LlamaConfig::from_json(j, "config.json");
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

// Rewrites DIR/model.safetensors through `edit`.
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

TEST_CASE("llama: forward matches transformers on every fixture (batched, max abs diff <= 1e-4)") {
    for (const char* name : kLlamaFixtures) {
        CAPTURE(name);
        const auto dir = llama_fixture(name);
        const auto model = load_language_model(dir);
        CHECK(model->info().architecture == "llama");
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

TEST_CASE("llama: incremental through the KV cache and chunked prefill equal transformers' batched logits") {
    for (const char* name : kLlamaFixtures) {
        CAPTURE(name);
        const auto dir = llama_fixture(name);
        const auto model = load_language_model(dir);
        for (const auto& c : load_reference(dir)) {
            const int64_t T = int64_t(c.ids.size()), V = c.vocab;
            CAPTURE(T);
            // one token at a time
            auto st = model->new_state();
            Tensor row = Tensor::empty({1, V}, DType::F32);
            float worst = 0;
            for (int64_t t = 0; t < T; ++t) {
                model->forward(std::span<const int32_t>(c.ids).subspan(size_t(t), 1), *st, LogitRows::Last, row);
                worst = std::max(worst, max_abs_diff(row.data<float>(), c.logits.data() + t * V, size_t(V)));
            }
            CHECK(worst <= 1e-4f);
            // uneven chunks (5, 1, 3, 5, 1, 3, ...) with every row's logits
            auto st2 = model->new_state();
            worst = 0;
            const int64_t sizes[] = {5, 1, 3};
            for (int64_t t = 0, k = 0; t < T; ++k) {
                const int64_t n = std::min<int64_t>(sizes[k % 3], T - t);
                Tensor rows = Tensor::empty({n, V}, DType::F32);
                model->forward(std::span<const int32_t>(c.ids).subspan(size_t(t), size_t(n)), *st2, LogitRows::All, rows);
                worst = std::max(worst, max_abs_diff(rows.data<float>(), c.logits.data() + t * V, size_t(n * V)));
                t += n;
            }
            CHECK(worst <= 1e-4f);
            // a prefill without logits, then the rest
            if (T > 2) {
                auto st3 = model->new_state();
                model->forward(std::span<const int32_t>(c.ids).first(size_t(T - 2)), *st3, LogitRows::None, Tensor());
                model->forward(std::span<const int32_t>(c.ids).subspan(size_t(T - 2)), *st3, LogitRows::Last, row);
                CHECK(max_abs_diff(row.data<float>(), c.logits.data() + (T - 1) * V, size_t(V)) <= 1e-4f);
            }
        }
    }
}

TEST_CASE("llama: greedy continuations equal transformers' generate()") {
    for (const char* name : kLlamaFixtures) {
        CAPTURE(name);
        const auto dir = llama_fixture(name);
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

TEST_CASE("llama: a multi-turn session keeps positions across turns (cached = one forward)") {
    const auto dir = llama_fixture("tiny-mha-untied-f32");
    const auto model = load_language_model(dir);
    const auto cases = load_reference(dir);
    const auto& c = cases[3];  // 150 tokens
    const int64_t V = c.vocab;
    Session s(*model);
    // turns of 40, 1, 60, 49 tokens: each turn's last logits equal the reference at that position
    int64_t t = 0;
    for (int64_t n : {40, 1, 60, 49}) {
        s.feed(std::span<const int32_t>(c.ids).subspan(size_t(t), size_t(n)));
        t += n;
        CHECK(s.position() == t);
        CHECK(max_abs_diff(s.logits().data(), c.logits.data() + (t - 1) * V, size_t(V)) <= 1e-4f);
    }
    // rewinding to an earlier turn and feeding the same tokens again is exact
    s.rewind(41);
    s.feed(std::span<const int32_t>(c.ids).subspan(41, 60));
    CHECK(max_abs_diff(s.logits().data(), c.logits.data() + 100 * V, size_t(V)) <= 1e-4f);
}

TEST_CASE("llama: published layout loads: shards + index, bf16 upcast, tied and untied heads, parameter count") {
    const auto tied = LlamaModel::load(llama_fixture("tiny-gqa-tied-f32"));
    const LlamaConfig& c = tied->config();
    CHECK(c.n_kv_head == 2);
    CHECK(c.group() == 3);
    CHECK(c.rope_theta == 100000.0f);
    CHECK(c.tie_word_embeddings);
    CHECK(tied->weights().lm_head.raw() == tied->weights().embed.raw());
    CHECK(tied->weights().source_dtype == "F32");
    const int64_t C = c.hidden, I = c.intermediate, D = c.head_dim();
    const int64_t per_layer = 2 * C + C * (c.n_head + 2 * c.n_kv_head) * D + c.n_head * D * C + 3 * C * I;
    CHECK(tied->weights().parameter_count() == c.vocab_size * C + c.n_layer * per_layer + C);

    const auto sharded = LlamaModel::load(llama_fixture("tiny-gqa-bf16-sharded"));
    CHECK(sharded->weights().source_dtype == "BF16");
    CHECK(sharded->weights().lm_head.raw() != sharded->weights().embed.raw());
    CHECK(sharded->config().group() == 4);
    const auto untied = LlamaModel::load(llama_fixture("tiny-mha-untied-f32"));
    CHECK(!untied->config().tie_word_embeddings);
    CHECK(untied->config().n_kv_head == untied->config().n_head);
    // The cache holds the key/value heads only: [G, cap, D] per layer.
    auto st = sharded->new_state(16);
    const auto& ls = dynamic_cast<const LlamaState&>(*st);
    CHECK(ls.k.size() == 3);
    CHECK(ls.k[0].shape() == Shape{2, 16, 8});
    CHECK(ls.v[2].shape() == Shape{2, 16, 8});
}

TEST_CASE("llama: config.json values are checked with clear messages") {
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
    CHECK(config_error(without("num_hidden_layers")).find("missing \"num_hidden_layers\"") != std::string::npos);
    CHECK(config_error(without("hidden_size")).find("missing \"hidden_size\"") != std::string::npos);
    CHECK(config_error(with("num_attention_heads", 5)).find("not divisible by num_attention_heads") != std::string::npos);
    CHECK(config_error(with("num_key_value_heads", 4)).find("not a multiple of num_key_value_heads = 4") != std::string::npos);
    CHECK(config_error(with("num_key_value_heads", 12)).find("not a multiple") != std::string::npos);
    CHECK(config_error(with("num_attention_heads", 16)).find("odd") != std::string::npos);  // 48 / 16 = 3
    CHECK(config_error(with("rope_theta", -1.0)).find("rope_theta") != std::string::npos);
    CHECK(config_error(with("rms_norm_eps", 0.0)).find("rms_norm_eps") != std::string::npos);
    CHECK(config_error(with("rms_norm_eps", "small")).find("must be a number") != std::string::npos);
    CHECK(config_error(with("hidden_act", "gelu")).find("hidden_act \"gelu\" is not supported") != std::string::npos);
    CHECK(config_error(with("rope_scaling", json{{"type", "linear"}, {"factor", 2.0}})).find("rope_scaling") !=
          std::string::npos);
    CHECK(config_error(with("attention_bias", true)).find("attention_bias") != std::string::npos);
    CHECK(config_error(with("mlp_bias", true)).find("mlp_bias") != std::string::npos);
    CHECK(config_error(with("head_dim", 16)).find("head_dim = 16") != std::string::npos);
    CHECK(config_error(with("model_type", "gpt2")).find("expected \"llama\"") != std::string::npos);
    CHECK(config_error(with("vocab_size", 0)).find("out of range") != std::string::npos);
    CHECK(config_error(with("tie_word_embeddings", 1)).find("true or false") != std::string::npos);
    CHECK(config_error(with("num_hidden_layers", 2.5)).find("must be an integer") != std::string::npos);
    CHECK(config_error(json::array()).find("expected a JSON object") != std::string::npos);
    CHECK(config_error(with("num_attention_heads", 5)).rfind("config.json: ", 0) == 0);
    // absent num_key_value_heads: multi-head attention
    CHECK(LlamaConfig::from_json(without("num_key_value_heads"), "c").n_kv_head == 6);
}

TEST_CASE("llama: malformed or mismatched weights are refused, naming the file and tensor") {
    TempDir tmp;
    const auto src = llama_fixture("tiny-gqa-tied-f32");
    const auto dir = tmp / "m";
    auto set_config = [&](const char* key, json value) {
        json j = read_json_file(dir / "config.json");
        j[key] = std::move(value);
        write_json_file(dir / "config.json", j);
    };

    SUBCASE("no weights") {
        std::filesystem::create_directories(dir);
        std::filesystem::copy_file(src / "config.json", dir / "config.json");
        CHECK(load_error(dir).find("model.safetensors: file not found") != std::string::npos);
    }
    SUBCASE("fewer layers in config than in the file") {
        copy_dir(src, dir);
        set_config("num_hidden_layers", 1);
        CHECK(load_error(dir).find("unexpected tensor model.layers.1.") != std::string::npos);
    }
    SUBCASE("more layers in config than in the file") {
        copy_dir(src, dir);
        set_config("num_hidden_layers", 3);
        CHECK(load_error(dir).find("missing tensor model.layers.2.input_layernorm.weight") != std::string::npos);
    }
    SUBCASE("wrong key/value head count: k_proj has the wrong shape") {
        copy_dir(src, dir);
        set_config("num_key_value_heads", 3);
        CHECK(load_error(dir).find("tensor model.layers.0.self_attn.k_proj.weight has shape [16, 48], expected [24, 48]") !=
              std::string::npos);
    }
    SUBCASE("untied config without lm_head.weight") {
        copy_dir(src, dir);
        set_config("tie_word_embeddings", false);
        CHECK(load_error(dir).find("no lm_head.weight") != std::string::npos);
    }
    SUBCASE("an integer dtype") {
        copy_dir(src, dir);
        rewrite_weights(dir, [](auto& ts) {
            for (auto& [n, t] : ts)
                if (n == "model.norm.weight") t = Tensor::zeros(t.shape(), DType::I32);
        });
        CHECK(load_error(dir).find("tensor model.norm.weight has dtype I32, expected F32, F16 or BF16") != std::string::npos);
    }
    SUBCASE("a stray tensor; the old rotary inv_freq buffer is ignored") {
        copy_dir(src, dir);
        rewrite_weights(dir, [](auto& ts) {
            ts.emplace_back("model.layers.0.self_attn.rotary_emb.inv_freq", Tensor::zeros({4}, DType::F32));
        });
        CHECK(load_error(dir).empty());
        rewrite_weights(dir, [](auto& ts) { ts.emplace_back("model.extra.weight", Tensor::zeros({2}, DType::F32)); });
        CHECK(load_error(dir).find("unexpected tensor model.extra.weight [2]") != std::string::npos);
    }
    SUBCASE("sharded: a missing shard, a tensor the index misplaces, a malformed index") {
        copy_dir(llama_fixture("tiny-gqa-bf16-sharded"), dir);
        CHECK(load_error(dir).empty());
        const auto index = dir / "model.safetensors.index.json";
        const json good = read_json_file(index);
        json j = good;
        j["weight_map"]["model.norm.weight"] = "model-00001-of-00007.safetensors";
        write_json_file(index, j);
        const std::string e = load_error(dir);
        CHECK(e.find("model.safetensors.index.json") != std::string::npos);
        CHECK(e.find("model.norm.weight") != std::string::npos);
        j = good;
        j["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors";
        write_json_file(index, j);
        CHECK(load_error(dir).find("not a file name in the same directory") != std::string::npos);
        j = good;
        j.erase("weight_map");
        write_json_file(index, j);
        CHECK(load_error(dir).find("no \"weight_map\"") != std::string::npos);
        write_json_file(index, good);
        std::filesystem::remove(dir / "model-00003-of-00007.safetensors");
        CHECK(load_error(dir).find("shard") != std::string::npos);
    }
}

TEST_CASE("llama: bad ids and over-long chunks are refused and leave the cache unchanged") {
    const auto model = load_language_model(llama_fixture("tiny-gqa-tied-f32"));  // 64 positions, vocab 300
    auto st = model->new_state();
    Tensor row = Tensor::empty({1, 300}, DType::F32);
    const std::vector<int32_t> ok = {1, 2, 3};
    model->forward(ok, *st, LogitRows::Last, row);
    const std::vector<int32_t> bad = {5, 300};
    CHECK_THROWS_WITH_AS(model->forward(bad, *st, LogitRows::Last, row), doctest::Contains("token id 300"), Error);
    const std::vector<int32_t> long_chunk(62, 7);
    CHECK_THROWS_WITH_AS(model->forward(long_chunk, *st, LogitRows::Last, row), doctest::Contains("does not fit"), Error);
    CHECK(st->length() == 3);
    CHECK_THROWS_AS(model->new_state(65), Error);
}

// ---------------------------------------------------------------- kernels

TEST_CASE("llama kernels: rmsnorm and silu_gate match the reference loops") {
    for (auto [T, C] : std::vector<std::array<int64_t, 2>>{{1, 8}, {9, 64}, {4, 576}}) {
        const auto x = random_floats(size_t(T * C), 4, 3.0f), g = random_floats(size_t(C), 5);
        std::vector<float> fast(x.size()), ref(x.size());
        cpu::rmsnorm(fast.data(), x.data(), g.data(), T, C, 1e-5f);
        ref::rmsnorm(ref.data(), x.data(), g.data(), T, C, 1e-5f);
        CHECK(max_abs_diff(fast.data(), ref.data(), fast.size()) < 1e-5f);
        // rows come out with mean square g^2-weighted 1: check one row directly
        double ss = 0;
        for (int64_t c = 0; c < C; ++c) ss += double(x[size_t(c)]) * x[size_t(c)];
        const double inv = 1.0 / std::sqrt(ss / double(C) + 1e-5);
        CHECK(ref[0] == doctest::Approx(g[0] * x[0] * inv).epsilon(1e-6));
    }
    const int64_t T = 5, I = 37;
    const auto gu = random_floats(size_t(T * 2 * I), 8, 4.0f);
    std::vector<float> fast(size_t(T * I)), ref(size_t(T * I));
    cpu::silu_gate(fast.data(), gu.data(), T, I);
    ref::silu_gate(ref.data(), gu.data(), T, I);
    CHECK(max_abs_diff(fast.data(), ref.data(), fast.size()) < 1e-5f);
    for (double x : {-6.0, -1.0, 0.0, 0.5, 3.0}) CHECK(silu(float(x)) == doctest::Approx(x / (1 + std::exp(-x))).epsilon(1e-6));
}

TEST_CASE("llama kernels: rope matches the reference and rotates relative positions only") {
    const int64_t T = 6, nh = 3, D = 16, ld = nh * D + 5;  // rows wider than the rotated heads
    for (int64_t pos0 : {0, 7, 3000}) {
        const auto x = random_floats(size_t(T * ld), 11);
        auto fast = x, ref = x;
        cpu::rope(fast.data(), ld, T, nh, D, pos0, 10000.0f);
        ref::rope(ref.data(), ld, T, nh, D, pos0, 10000.0f);
        // angles are f32-rounded on the fast path, as transformers rounds them: ~pos * 2^-24 apart
        CHECK(max_abs_diff(fast.data(), ref.data(), fast.size()) < 1e-5f + float(pos0) * 4e-7f);
        for (int64_t t = 0; t < T; ++t)
            for (int64_t c = nh * D; c < ld; ++c) REQUIRE(fast[size_t(t * ld + c)] == x[size_t(t * ld + c)]);
    }
    // <rope(q, m), rope(k, n)> depends only on m - n: the property attention relies on.
    const auto q = random_floats(size_t(D), 12), k = random_floats(size_t(D), 13);
    auto dot_at = [&](int64_t m, int64_t n) {
        auto a = q, b = k;
        ref::rope(a.data(), D, 1, 1, D, m, 10000.0f);
        ref::rope(b.data(), D, 1, 1, D, n, 10000.0f);
        double s = 0;
        for (int64_t d = 0; d < D; ++d) s += double(a[size_t(d)]) * b[size_t(d)];
        return s;
    };
    CHECK(dot_at(5, 2) == doctest::Approx(dot_at(105, 102)).epsilon(1e-5));
    CHECK(dot_at(5, 2) != doctest::Approx(dot_at(6, 2)).epsilon(1e-3));
    // position 0 is the identity
    auto z = q;
    cpu::rope(z.data(), D, 1, 1, D, 0, 10000.0f);
    CHECK(max_abs_diff(z.data(), q.data(), size_t(D)) == 0.0f);
}

TEST_CASE("llama kernels: grouped-query attention over a cache of key/value heads matches the reference") {
    const int64_t H = 6, G = 2, D = 8, cap = 30, W = (H + 2 * G) * D;
    for (auto [P, T] : std::vector<std::array<int64_t, 2>>{{0, 1}, {0, 13}, {5, 1}, {17, 6}, {0, 30}}) {
        const auto qkv = random_floats(size_t(T * W), 10 + P, 1.5f);
        std::vector<float> kc(size_t(G * cap * D), 0.0f), vc(kc.size(), 0.0f);
        const auto past_k = random_floats(kc.size(), 20 + P, 1.5f), past_v = random_floats(vc.size(), 30 + P);
        for (int64_t g = 0; g < G; ++g)
            for (int64_t j = 0; j < P * D; ++j) {
                kc[size_t(g * cap * D + j)] = past_k[size_t(g * cap * D + j)];
                vc[size_t(g * cap * D + j)] = past_v[size_t(g * cap * D + j)];
            }
        cpu::kv_append(kc.data(), vc.data(), qkv.data(), T, P, G, D, cap, H);
        for (int64_t t = 0; t < T; ++t)
            for (int64_t g = 0; g < G; ++g)
                for (int64_t d = 0; d < D; ++d) {
                    REQUIRE(kc[size_t((g * cap + P + t) * D + d)] == qkv[size_t(t * W + H * D + g * D + d)]);
                    REQUIRE(vc[size_t((g * cap + P + t) * D + d)] == qkv[size_t(t * W + (H + G) * D + g * D + d)]);
                }
        std::vector<float> fast(size_t(T * H * D)), ref(fast.size()), scratch(size_t(T * (P + T)));
        cpu::attention(fast.data(), H * D, qkv.data(), W, kc.data(), vc.data(), T, P, H, D, cap, 0.35f, scratch.data(), H / G);
        ref::attention(ref.data(), H * D, qkv.data(), W, kc.data(), vc.data(), T, P, H, D, cap, 0.35f, H / G);
        CHECK(max_abs_diff(fast.data(), ref.data(), fast.size()) < 1e-5f);
        // GQA = multi-head attention with each key/value head repeated for its group
        std::vector<float> kr(size_t(H * cap * D)), vr(kr.size()), mha(fast.size());
        for (int64_t h = 0; h < H; ++h)
            for (int64_t j = 0; j < cap * D; ++j) {
                kr[size_t(h * cap * D + j)] = kc[size_t((h / (H / G)) * cap * D + j)];
                vr[size_t(h * cap * D + j)] = vc[size_t((h / (H / G)) * cap * D + j)];
            }
        ref::attention(mha.data(), H * D, qkv.data(), W, kr.data(), vr.data(), T, P, H, D, cap, 0.35f);
        CHECK(max_abs_diff(mha.data(), ref.data(), fast.size()) == 0.0f);
    }
    // The Tensor API infers H from the qkv width and refuses widths that do not fit.
    Tensor kc = Tensor::zeros({G, cap, D}, DType::F32), vc = Tensor::zeros({G, cap, D}, DType::F32);
    CHECK_NOTHROW(kernels::kv_append(kc, vc, Tensor::zeros({2, W}, DType::F32), 0));
    CHECK_THROWS_WITH_AS(kernels::kv_append(kc, vc, Tensor::zeros({2, W + D}, DType::F32), 0),
                         doctest::Contains("multiple of G"), Error);
    CHECK_THROWS_WITH_AS(kernels::rope(Tensor::zeros({2, W}, DType::F32), H + G + 3, D, 0, 1e4f), doctest::Contains("rope"), Error);
    CHECK_THROWS_WITH_AS(kernels::silu_gate(Tensor::zeros({2, 3}, DType::F32), Tensor::zeros({2, 7}, DType::F32)),
                         doctest::Contains("[T, 2I]"), Error);
}
