// The spiking SmolLM2-135M-Instruct (not in CI: test suite "long", skipped when the directory of
// scripts/reference/make_smollm2_dir.py is absent):
//   build/stac_tests -ts=long -tc='snn-smollm2*'     (STAC_SMOLLM2_DIR overrides the directory)
// Converts the real model from the built-in calibration prompts and checks, on 30 layers of GQA
// 9:3 with RoPE: float mode = the Llama forward, SNN (spike and count paths) = QANN bit for bit
// batched and through the cache, and its fidelity on held-out text. The full table (L, S sweep)
// is made by the commands in docs/SNN.md.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "convert/convert.h"
#include "convert/evaluate.h"
#include "core/json_file.h"
#include "models/model_dir.h"
#include "tests/helpers.h"

using namespace stac;
using namespace stac::test;

namespace {

std::vector<float> logits_of(const LanguageModel& m, const std::vector<int32_t>& ids, int64_t first_chunk = 0) {
    const int64_t T = int64_t(ids.size()), V = m.info().vocab_size;
    std::vector<float> out(size_t(T * V));
    auto st = m.new_state(T);
    int64_t t = 0;
    while (t < T) {  // first_chunk tokens, then one at a time (as a conversation feeds them); 0: one pass
        const int64_t n = first_chunk == 0 ? T : (t == 0 ? first_chunk : 1);
        Tensor lg = Tensor::view_of(out.data() + t * V, {n, V}, DType::F32, Device::cpu(), nullptr);
        m.forward(std::span<const int32_t>(ids).subspan(size_t(t), size_t(n)), *st, LogitRows::All, lg);
        t += n;
    }
    return out;
}

}  // namespace

TEST_CASE("snn-smollm2: the spiking SmolLM2-135M-Instruct equals its QANN bit for bit - fidelity on held-out text" *
          doctest::test_suite("long")) {
    STAC_REQUIRE_SMOLLM2();
    const auto dir = smollm2_dir();
    const std::shared_ptr<const LanguageModel> base = load_language_model(dir);
    const auto tok = load_tokenizer(dir);
    REQUIRE(tok);
    ConvertOptions o;
    o.levels = 32, o.timesteps = 32, o.num_samples = 16, o.max_length = 64, o.progress = false;
    auto t0 = std::chrono::steady_clock::now();
    const SnnSpec spec = convert_model(base, tok.get(), o);
    MESSAGE("converted in " << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s");
    CHECK(spec.architecture == "llama");
    CHECK(spec.site(0, SiteKind::K).scale.size() == 3 * 64);  // 3 key/value heads of 64

    // The ChatML prompt of the reference (37 tokens).
    const std::vector<int32_t> ids = load_reference(dir)[0].ids;
    const auto fmode = make_spiking_model(base, spec, {RunMode::Float, Schedule::LayerWise, SpikePath::Count, 1});
    const auto f = logits_of(*base, ids), ff = logits_of(*fmode, ids);
    CHECK(max_abs_diff(f.data(), ff.data(), f.size()) <= 1e-3f);

    const auto qann = make_spiking_model(base, spec, {RunMode::Qann, Schedule::LayerWise, SpikePath::Count, 32});
    const auto count = make_spiking_model(base, spec, {RunMode::Snn, Schedule::LayerWise, SpikePath::Count, 32});
    const auto spike = make_spiking_model(base, spec, {RunMode::Snn, Schedule::LayerWise, SpikePath::Spike, 32});
    const auto spike_st = spike->new_state(int64_t(ids.size()));
    const auto q = logits_of(*qann, ids), n = logits_of(*count, ids), s = chunked_logits(*spike, *spike_st, ids);
    CHECK(max_abs_diff(q.data(), n.data(), q.size()) == 0.0f);
    CHECK(max_abs_diff(q.data(), s.data(), q.size()) == 0.0f);
    // Through the cache of key/value-head counts, as a conversation feeds it: 30 tokens, then 1 by 1.
    const auto qc = logits_of(*qann, ids, 30), sc = logits_of(*spike, ids, 30);
    CHECK(max_abs_diff(qc.data(), sc.data(), q.size()) == 0.0f);
    CHECK(max_abs_diff(q.data(), sc.data(), q.size()) <= 1e-3f);
    const SpikeStats& ss = spike->stats(*spike_st);
    MESSAGE("spike path, " << ids.size() << " tokens: firing rate " << ss.firing_rate() << ", "
                           << double(ss.total_spikes()) / double(ids.size()) << " spikes per token");

    // Fidelity on the first 256 tokens of the bundled held-out text (Debian fortunes and dictionaries).
    std::vector<int32_t> text = tok->encode(read_text_file(repo_root() / "models" / "bundled" / "heldout.txt"), {.allow_special = false});
    text.resize(256);
    const Evaluation ev = evaluate(*base, qann.get(), count.get(), text_windows(text, 256), false);
    MESSAGE("held-out 256 tokens, L = S = 32: perplexity float " << ev.ann.perplexity() << ", QANN " << ev.qann->perplexity()
                                                                 << ", SNN " << ev.snn->perplexity() << "; top-1 agreement SNN "
                                                                 << ev.snn->agreement());
    CHECK(ev.snn->max_abs_vs_ref == 0.0f);
    CHECK(ev.snn->perplexity() == ev.qann->perplexity());
    CHECK(ev.ann.perplexity() < 100.0);  // the float model knows English
    CHECK(std::isfinite(ev.snn->perplexity()));
    CHECK(ev.snn->agreement() > 0.2);  // far above chance (1 / 49152), far below 1 at L = 32

    // Token scaling (the Llama default) against static thresholds from the same calibration: the
    // outlier activations of this model (mlp_act reaches several times its calibrated maximum on
    // held-out text) and the small attention probabilities are what static thresholds lose.
    CHECK(spec.token_scale);
    ConvertOptions off = o;
    off.token_scale = false;
    const auto qstatic = make_spiking_model(base, convert_model(base, tok.get(), off),
                                            {RunMode::Qann, Schedule::LayerWise, SpikePath::Count, 32});
    const Evaluation es = evaluate(*base, qstatic.get(), nullptr, text_windows(text, 256), false);
    MESSAGE("QANN L = 32, static thresholds: perplexity " << es.qann->perplexity() << ", top-1 agreement "
                                                           << es.qann->agreement() << "; token-scaled: "
                                                           << ev.qann->perplexity() << ", " << ev.qann->agreement());
    CHECK(ev.qann->perplexity() < es.qann->perplexity());
    CHECK(ev.qann->agreement() > es.qann->agreement());
    CHECK(ev.qann->perplexity() < 1.5 * ev.ann.perplexity());
}

TEST_CASE("snn-smollm2: in a chat the token-scaled SNN keeps the float predictions - static thresholds lose them" *
          doctest::test_suite("long")) {
    STAC_REQUIRE_SMOLLM2();
    const auto dir = smollm2_dir();
    const std::shared_ptr<const LanguageModel> base = load_language_model(dir);
    const auto tok = load_tokenizer(dir);
    REQUIRE(tok);
    // Five three-turn ChatML conversations with the float model's own greedy replies
    // (scripts/reference/make_chat_eval.sh; 981 tokens), scored teacher-forced in windows of 512.
    const std::vector<int32_t> ids =
        tok->encode(read_text_file(fixtures() / "smollm2" / "chat-eval.txt"), {.allow_special = true});
    REQUIRE(ids.size() > 900);
    CHECK(std::count(ids.begin(), ids.end(), 1) == 35);  // <|im_start|>: 5 x (system + 3 x (user + assistant))
    const auto windows = text_windows(ids, 512);
    ConvertOptions o;  // the defaults: token scaling (Llama), built-in prompts plain and as ChatML
    o.levels = 64, o.timesteps = 64, o.progress = false;
    const SnnSpec scaled = convert_model(base, tok.get(), o);
    CHECK(scaled.calibration["builtin_chat"] == true);
    CHECK(scaled.calibration["samples"] == 64);
    o.token_scale = false;
    const SnnSpec fixed = convert_model(base, tok.get(), o);
    const RunOptions qann{RunMode::Qann, Schedule::LayerWise, SpikePath::Count, 64};
    const auto a = make_spiking_model(base, scaled, qann), b = make_spiking_model(base, fixed, qann);
    const Evaluation es = evaluate(*base, a.get(), nullptr, windows, false), ef = evaluate(*base, b.get(), nullptr, windows, false);
    MESSAGE("chat, L = 64: float perplexity " << es.ann.perplexity() << "; token-scaled QANN " << es.qann->perplexity()
                                              << ", top-1 " << es.qann->agreement() << ", KL " << es.qann->mean_kl()
                                              << "; static " << ef.qann->perplexity() << ", " << ef.qann->agreement() << ", "
                                              << ef.qann->mean_kl());
    // Measured 0.905 / 0.062 (token-scaled) and 0.675 / 0.614 (static); docs/SNN.md.
    CHECK(es.qann->agreement() > 0.85);
    CHECK(es.qann->mean_kl() < 0.1);
    CHECK(ef.qann->agreement() < es.qann->agreement() - 0.1);
    CHECK(es.qann->perplexity() < 1.15 * es.ann.perplexity());
}
