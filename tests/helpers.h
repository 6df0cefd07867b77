// Shared test helpers: fixture paths, temporary directories, and the transformers reference of a fixture model.
#pragma once

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/json_file.h"
#include "core/safetensors.h"
#include "models/gpt2.h"
#include "models/language_model.h"

namespace stac::test {

inline std::filesystem::path fixtures() { return STAC_FIXTURES_DIR; }
inline std::filesystem::path gpt2_fixture(const std::string& name) { return fixtures() / "gpt2" / name; }
inline std::filesystem::path repo_root() { return STAC_DATA_DIR; }

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
class TempDir {
public:
    TempDir() {
        static std::mt19937_64 rng(std::random_device{}());
        path_ = std::filesystem::temp_directory_path() / ("stac-test-" + std::to_string(rng()));
        std::filesystem::create_directories(path_);
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return path_; }
    std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

private:
    std::filesystem::path path_;
};

// Copies a fixture model directory (config.json, model.safetensors) into `dst`.
inline void copy_model(const std::filesystem::path& src, const std::filesystem::path& dst) {
    std::filesystem::create_directories(dst);
    for (const char* f : {"config.json", "model.safetensors"})
        std::filesystem::copy_file(src / f, dst / f, std::filesystem::copy_options::overwrite_existing);
}

// One recorded case of scripts/reference/make_gpt2_fixtures.py: ids, transformers' logits [T, V]
// of one batched forward, and its greedy continuation.
struct ReferenceCase {
    std::vector<int32_t> ids;
    std::vector<float> logits;
    int64_t vocab = 0;
    std::vector<int32_t> greedy;
};

inline std::vector<ReferenceCase> load_reference(const std::filesystem::path& model_dir) {
    const auto j = read_json_file(model_dir / "reference.json");
    const auto f = SafetensorsFile::open(model_dir / "reference.safetensors");
    std::vector<ReferenceCase> out;
    for (size_t k = 0; k < j["cases"].size(); ++k) {
        ReferenceCase c;
        const Tensor ids = f.tensor("case" + std::to_string(k) + ".ids");
        const Tensor logits = f.tensor("case" + std::to_string(k) + ".logits");
        c.ids.assign(ids.data<int32_t>(), ids.data<int32_t>() + ids.numel());
        c.logits.assign(logits.data<float>(), logits.data<float>() + logits.numel());
        c.vocab = logits.dim(1);
        c.greedy = j["cases"][k]["greedy"].get<std::vector<int32_t>>();
        out.push_back(std::move(c));
    }
    return out;
}

inline float max_abs_diff(const float* a, const float* b, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
}

inline std::vector<float> random_floats(size_t n, uint64_t seed, float scale = 1.0f) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

inline std::string slurp(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// ---------------------------------------------------------------- the stac program (STAC_CLI_PATH)

struct CliRun {
    int rc = -1;
    std::string out, err;
};

inline std::string shell_quote(const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

#ifdef STAC_CLI_PATH
// Runs `stac ARGS` with `input` on stdin; captures stdout, stderr and the exit code.
inline CliRun run_stac(const std::vector<std::string>& args, const std::string& input = "") {
    TempDir tmp;
    std::ofstream(tmp / "in") << input;
    std::string cmd = shell_quote(STAC_CLI_PATH);
    for (const auto& a : args) cmd += " " + shell_quote(a);
    cmd += " < " + shell_quote((tmp / "in").string()) + " > " + shell_quote((tmp / "out").string()) + " 2> " +
           shell_quote((tmp / "err").string());
    const int status = std::system(cmd.c_str());
    CliRun r;
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(tmp / "out");
    r.err = slurp(tmp / "err");
    return r;
}
#endif

inline std::string join_ids(const std::vector<int32_t>& ids) {
    std::string s;
    for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
    return s;
}

// A random GPT-2 with the real 50257-token vocabulary and the GPT-2 tokenizer files: big enough
// for text commands (chat, --prompt), small enough to write in a test (n_embd 8).
inline void make_text_model(const std::filesystem::path& dir) {
    std::filesystem::create_directories(dir);
    Gpt2Config c;
    c.n_layer = 1, c.n_embd = 8, c.n_head = 2, c.n_positions = 64, c.vocab_size = 50257;
    write_json_file(dir / "config.json", c.to_json());
    std::vector<std::pair<std::string, Tensor>> ts;
    uint64_t seed = 1;
    auto rnd = [&](Shape s) {
        Tensor t = Tensor::empty(s, DType::F32);
        const auto v = random_floats(size_t(t.numel()), seed++, 0.5f);
        std::copy(v.begin(), v.end(), t.data<float>());
        return t;
    };
    const int64_t C = 8;
    ts = {{"wte.weight", rnd({50257, C})}, {"wpe.weight", rnd({64, C})},       {"h.0.ln_1.weight", rnd({C})},
          {"h.0.ln_1.bias", rnd({C})},     {"h.0.attn.c_attn.weight", rnd({C, 3 * C})}, {"h.0.attn.c_attn.bias", rnd({3 * C})},
          {"h.0.attn.c_proj.weight", rnd({C, C})}, {"h.0.attn.c_proj.bias", rnd({C})}, {"h.0.ln_2.weight", rnd({C})},
          {"h.0.ln_2.bias", rnd({C})},     {"h.0.mlp.c_fc.weight", rnd({C, 4 * C})}, {"h.0.mlp.c_fc.bias", rnd({4 * C})},
          {"h.0.mlp.c_proj.weight", rnd({4 * C, C})}, {"h.0.mlp.c_proj.bias", rnd({C})}, {"ln_f.weight", rnd({C})},
          {"ln_f.bias", rnd({C})}};
    save_safetensors(dir / "model.safetensors", ts, {{"format", "pt"}});
    for (const char* f : {"vocab.json", "merges.txt"})
        std::filesystem::copy_file(repo_root() / "models" / "gpt2-tokenizer" / f, dir / f);
}

// The real SmolLM2-135M-Instruct directory of scripts/reference/make_smollm2_dir.py (long tests):
// $STAC_SMOLLM2_DIR, else build-smollm2/SmolLM2-135M-Instruct of this tree.
inline std::filesystem::path smollm2_dir() {
    if (const char* e = std::getenv("STAC_SMOLLM2_DIR"); e && *e) return e;
    return repo_root() / "build-smollm2" / "SmolLM2-135M-Instruct";
}

// n samples of len random token ids below vocab (one generator, seeded once).
inline std::vector<std::vector<int32_t>> random_token_samples(int n, int len, int64_t vocab, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<std::vector<int32_t>> out(static_cast<size_t>(n));
    for (auto& s : out)
        for (int i = 0; i < len; ++i) s.push_back(int32_t(rng() % uint64_t(vocab)));
    return out;
}

// All-position logits [T * V] of `m` over ids on `st` (a state of m; empty for the logits of ids
// alone): one batched pass (chunk 0), or chunks of `chunk` tokens through the cache. The state
// stays the caller's, to read what it counted (a spiking model's statistics).
inline std::vector<float> chunked_logits(const LanguageModel& m, ModelState& st, const std::vector<int32_t>& ids,
                                         int64_t chunk = 0) {
    const int64_t T = int64_t(ids.size()), V = m.info().vocab_size;
    std::vector<float> out(size_t(T * V));
    if (chunk == 0) chunk = T;
    for (int64_t t = 0; t < T; t += chunk) {
        const int64_t n = std::min(chunk, T - t);
        Tensor lg = Tensor::view_of(out.data() + t * V, {n, V}, DType::F32, Device::cpu(), nullptr);
        m.forward(std::span<const int32_t>(ids).subspan(size_t(t), size_t(n)), st, LogitRows::All, lg);
    }
    return out;
}

// The same from a fresh cache.
inline std::vector<float> chunked_logits(const LanguageModel& m, const std::vector<int32_t>& ids, int64_t chunk = 0) {
    auto st = m.new_state();
    return chunked_logits(m, *st, ids, chunk);
}

}  // namespace stac::test

// In a TEST_CASE: skips it, saying so, when the SmolLM2 directory is absent (exit 77 under CTest:
// reported as Skipped).
#define STAC_REQUIRE_SMOLLM2()                                                                                      \
    do {                                                                                                            \
        if (!std::filesystem::exists(stac::test::smollm2_dir() / "reference.json")) {                              \
            MESSAGE("SKIPPED: no " << stac::test::smollm2_dir().string()                                            \
                                   << " (make it with scripts/reference/make_smollm2_dir.py)");                        \
            if (const char* e = std::getenv("STAC_CTEST"); e && e[0] == '1') std::_Exit(77);                        \
            return;                                                                                                 \
        }                                                                                                           \
    } while (0)
