// Golden tests on the bundled model (models/bundled/): fixed prompts give transformers' greedy
// continuations, and stac's held-out perplexity equals the training script's figure
// (tests/fixtures/bundled/golden.json, written by scripts/bundled/train_bundled_model.py).
#include <doctest/doctest.h>

#include <cmath>

#include "convert/convert.h"
#include "convert/evaluate.h"
#include "core/sha256.h"
#include "models/generate.h"
#include "models/gpt2.h"
#include "models/model_dir.h"
#include "tests/helpers.h"

using namespace stac;
using namespace stac::test;
using nlohmann::json;

namespace {
json golden() { return read_json_file(fixtures() / "bundled" / "golden.json"); }
}  // namespace

TEST_CASE("bundled: greedy continuations equal transformers' on the bundled models") {
    const json g = golden();
    REQUIRE(g["models"].size() >= 1);
    for (const auto& [name, m] : g["models"].items()) {
        CAPTURE(name);
        const auto dir = repo_root() / m["path"].get<std::string>();
        REQUIRE(sha256_file(dir / "model.safetensors") == m["model_safetensors_sha256"].get<std::string>());
        const auto model = load_language_model(dir);
        const auto tok = load_tokenizer(dir);
        REQUIRE(tok);
        for (const auto& c : m["greedy"]) {
            CAPTURE(c["prompt"].get<std::string>());
            const auto ids = tok->encode(c["prompt"].get<std::string>(), {.allow_special = false});
            CHECK(ids == c["prompt_ids"].get<std::vector<int32_t>>());
            Session s(*model);
            Sampler greedy(SamplingOptions{}, model->info().vocab_size);
            std::vector<int32_t> got;
            GenerateOptions opt;
            opt.max_new_tokens = c["max_new_tokens"].get<int64_t>();
            generate(s, greedy, ids, opt, [&](int32_t id) {
                got.push_back(id);
                return true;
            });
            // The script records the smallest top-1/top-2 logit gap along the path; all are far above
            // stac's ~1e-6 difference from transformers, so the paths must agree exactly.
            REQUIRE(c["min_top2_gap"].get<double>() > 1e-4);
            CHECK(got == c["new_ids"].get<std::vector<int32_t>>());
            CHECK(tok->decode(got) == c["text"].get<std::string>());
        }
    }
}

TEST_CASE("bundled: held-out perplexity equals the training script's figure" * doctest::test_suite("long")) {
    const json g = golden();
    const std::string text = read_text_file(repo_root() / g["heldout"]["path"].get<std::string>());
    REQUIRE(sha256_hex(text) == g["heldout"]["sha256"].get<std::string>());
    for (const auto& [name, m] : g["models"].items()) {
        CAPTURE(name);
        const auto dir = repo_root() / m["path"].get<std::string>();
        const auto model = load_language_model(dir);
        const auto ids = load_tokenizer(dir)->encode(text, {.allow_special = false});
        CHECK(int64_t(ids.size()) == m["heldout"]["tokens"].get<int64_t>());
        const auto windows = text_windows(ids, m["heldout"]["window"].get<int64_t>());
        const Evaluation ev = evaluate(*model, nullptr, nullptr, windows, false);
        CHECK(ev.ann.scored == m["heldout"]["scored"].get<int64_t>());
        const double ref = m["heldout"]["perplexity"].get<double>();
        MESSAGE(name << ": held-out perplexity stac " << ev.ann.perplexity() << ", transformers " << ref);
        CHECK(std::fabs(ev.ann.perplexity() - ref) <= 1e-5 * ref);
    }
}

TEST_CASE("bundled: the ReLU model converts, saves and loads (units that never fired get a positive threshold)") {
    // Some of this model's ReLU units never fire on the calibration prompts: their clip is 0, which
    // an SNN directory cannot hold. Conversion must give them a usable threshold.
    const auto dir = repo_root() / "models" / "bundled" / "gpt2-fortunes-relu";
    std::shared_ptr<const Gpt2Model> base = Gpt2Model::load(dir);
    const auto tok = load_tokenizer(dir);
    ConvertOptions opt;
    opt.progress = false;
    opt.num_samples = 8;
    const SnnSpec spec = convert_model(base, tok.get(), opt);
    for (int l = 0; l < int(base->config().n_layer); ++l)
        for (float c : spec.site(l, SiteKind::MlpAct).clip) {
            CAPTURE(l);
            CAPTURE(c);
            REQUIRE((c > 0 && std::isfinite(c)));
        }
    TempDir tmp;
    save_snn_model(tmp / "snn", dir, spec);
    const LoadedSnn back = load_snn_model(tmp / "snn");
    CHECK(back.spec.site(0, SiteKind::MlpAct).clip == spec.site(0, SiteKind::MlpAct).clip);
}
