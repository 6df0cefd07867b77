// The real pretrained model, SmolLM2-135M-Instruct (not in CI: test suite "long", skipped when its
// directory is absent). Make the directory with scripts/reference/make_smollm2_dir.py, then:
//   build/stac_tests -ts=long -tc='smollm2*'     (STAC_SMOLLM2_DIR overrides the directory)
#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>

#include "core/json_file.h"
#include "models/generate.h"
#include "models/model_dir.h"
#include "models/session.h"
#include "tests/helpers.h"

using namespace stac;
using namespace stac::test;

namespace {

}  // namespace

TEST_CASE("smollm2: logits match transformers on the dequantized SmolLM2-135M-Instruct - GGUF loads the same" *
          doctest::test_suite("long")) {
    STAC_REQUIRE_SMOLLM2();
    const auto dir = smollm2_dir();
    auto t0 = std::chrono::steady_clock::now();
    const auto model = load_language_model(dir);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto cases = load_reference(dir);
    const int64_t V = model->info().vocab_size;
    std::vector<std::vector<float>> batched;
    for (const auto& c : cases) {
        const int64_t T = int64_t(c.ids.size());
        REQUIRE(c.vocab == V);
        auto st = model->new_state();
        Tensor logits = Tensor::empty({T, V}, DType::F32);
        t0 = std::chrono::steady_clock::now();
        model->forward(c.ids, *st, LogitRows::All, logits);
        const double fwd_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const float d = max_abs_diff(logits.data<float>(), c.logits.data(), c.logits.size());
        MESSAGE("T = " << T << ": max |stac - transformers| = " << d << " (batched; load " << load_s << " s, forward "
                       << fwd_s << " s)");
        CHECK(d <= 1e-3f);
        batched.emplace_back(logits.data<float>(), logits.data<float>() + T * V);
        // as a conversation would feed it: chunks of 17, one token at a time at the end
        Session s(*model);
        float worst = 0;
        int64_t t = 0;
        while (t < T) {
            const int64_t n = t + 17 < T - 4 ? 17 : 1;
            s.feed(std::span<const int32_t>(c.ids).subspan(size_t(t), size_t(n)));
            t += n;
            worst = std::max(worst, max_abs_diff(s.logits().data(), c.logits.data() + (t - 1) * V, size_t(V)));
        }
        MESSAGE("T = " << T << ": max |stac - transformers| = " << worst << " (cached, chunks of 17 then 1)");
        CHECK(worst <= 1e-3f);
        if (!c.greedy.empty()) {
            Session g(*model);
            Sampler greedy(SamplingOptions{}, V);
            std::vector<int32_t> got;
            GenerateOptions opt;
            opt.max_new_tokens = int64_t(c.greedy.size());
            generate(g, greedy, c.ids, opt, [&](int32_t id) {
                got.push_back(id);
                return true;
            });
            // transformers stops at <|im_end|>; compare what both produced
            got.resize(std::min(got.size(), c.greedy.size()));
            CHECK(std::vector<int32_t>(c.greedy.begin(), c.greedy.begin() + int64_t(got.size())) == got);
        }
    }
    // The GGUF itself, loaded directly: the same model.
    const auto j = read_json_file(dir / "reference.json");
    const std::filesystem::path gguf = j.value("gguf", "");
    if (gguf.empty() || !std::filesystem::exists(gguf)) {
        MESSAGE("the GGUF " << gguf.string() << " is not there: skipping the direct GGUF load");
        return;
    }
    const auto direct = load_language_model(gguf);
    const auto& c = cases[0];
    const int64_t T = int64_t(c.ids.size());
    auto st = direct->new_state();
    Tensor logits = Tensor::empty({T, V}, DType::F32);
    direct->forward(c.ids, *st, LogitRows::All, logits);
    const float d = max_abs_diff(logits.data<float>(), batched[0].data(), batched[0].size());
    MESSAGE("GGUF loaded directly vs the directory: max |diff| = " << d);
    CHECK(d <= 1e-5f);
}
