// stac test-conversation: the prototype's test_conversational_snn, as checks that pass or fail.
#include <cmath>
#include <cstdio>
#include <random>

#include <fmt/format.h>

#include "convert/convert.h"
#include "convert/temporal_spike_processor.h"
#include "core/error.h"
#include "models/generate.h"
#include "models/model_dir.h"
#include "cli/cli.h"

namespace stac::cli {

namespace {

struct Checker {
    int failed = 0, passed = 0;
    void report(bool ok, const std::string& what, const std::string& detail) {
        (ok ? passed : failed)++;
        fmt::print("[{}] {}{}\n", ok ? "PASS" : "FAIL", what, detail.empty() ? "" : " (" + detail + ")");
        std::fflush(stdout);
    }
};

float max_diff(const float* a, const float* b, int64_t n) {
    float m = 0;
    for (int64_t i = 0; i < n; ++i) {
        if (std::isnan(a[i]) != std::isnan(b[i])) return INFINITY;
        if (!std::isnan(a[i])) m = std::max(m, std::fabs(a[i] - b[i]));
    }
    return m;
}

int64_t argmax(const float* x, int64_t n) { return std::max_element(x, x + n) - x; }

// Last-token logits of one fresh forward over `window`.
std::vector<float> one_shot(const LanguageModel& m, const std::vector<int32_t>& window) {
    auto st = m.new_state(int64_t(window.size()));
    Tensor row = Tensor::empty({1, m.info().vocab_size}, DType::F32);
    m.forward(window, *st, LogitRows::Last, row);
    return {row.data<float>(), row.data<float>() + row.numel()};
}

}  // namespace

int cmd_test_conversation(int argc, char** argv) {
    ArgParser p("test-conversation", "--model DIR [options]",
                "Checks what multi-turn conversation relies on, for the float ANN and, for an SNN directory, its QANN\n"
                "and SNN (layer-wise, spike path; a float model gets an in-memory --simplified conversion): positions\n"
                "continue across turns; padding masked out equals not sent; cached multi-turn logits equal one forward\n"
                "over the same window; the context-window policy; conversations side by side; and a simulated greedy\n"
                "conversation with the cache equals recomputing from scratch. Prints each check; exits 1 if any fails.");
    add_model_option(p);
    p.option("tolerance", "T", "largest |logit difference| accepted between cached and one-shot runs", "1e-4");
    p.option("timesteps", "S", "for an SNN directory: timesteps (default: its snn_config.json)");
    if (!p.parse(argc, argv, 2)) return 0;
    require_cpu(p, "test-conversation");
    const double tol = p.get_double("tolerance");
    const std::filesystem::path dir = model_dir_from(p);

    std::shared_ptr<const LanguageModel> base;
    SnnSpec spec;
    std::string origin;
    if (is_snn_dir(dir)) {
        LoadedSnn l = load_snn_model(dir);
        base = l.base;
        spec = std::move(l.spec);
        origin = "SNN directory";
    } else {
        base = load_language_model(dir);
        ConvertOptions o;
        o.progress = false;
        if (const auto* g = dynamic_cast<const Gpt2Model*>(base.get())) {
            o.simplified = true;
            spec = simplified_spec(*g, o);
            origin = "float model, simplified in-memory conversion";
        } else {  // no weight-only thresholds for this architecture: calibrate on pseudo-random ids
            std::mt19937 rng(11);
            std::vector<std::vector<int32_t>> data(4);
            for (auto& d : data)
                for (int i = 0; i < 16; ++i) d.push_back(int32_t(rng() % uint32_t(base->info().vocab_size)));
            spec = convert_model_on(base, data, o);
            origin = "float model, in-memory conversion calibrated on pseudo-random ids";
        }
    }
    const int S = p.has("timesteps") ? int(p.get_int("timesteps", 1, 4096)) : spec.timesteps;
    const auto tok = load_tokenizer(dir);
    const int64_t V = base->info().vocab_size, n_pos = base->info().n_positions;
    std::shared_ptr<const SpikingModel> snn = make_spiking_model(base, spec, RunOptions{RunMode::Snn, Schedule::LayerWise, SpikePath::Spike, S});
    const auto qann_model = make_spiking_model(base, spec, {RunMode::Qann, Schedule::LayerWise, SpikePath::Count, S});
    const SpikingModel& qann = *qann_model;
    fmt::print("{}: {} ({} layers, n_positions {}), S = {}, L = {}\n", dir.string(), origin, spec.layers.size(), n_pos, S,
               spec.levels);

    // Three turns: the chat template when there is a tokenizer, else fixed pseudo-random ids.
    std::vector<std::vector<int32_t>> turns;
    if (tok && tok->vocab_size() <= V) {
        for (const char* t : {"User: Hello there!\nAssistant:", " Hi! How can I help?\nUser: Tell me a story.\nAssistant:",
                              " Once upon a time there was a fox.\nUser: Thanks!\nAssistant:"})
            turns.push_back(tok->encode(t, {.allow_special = false}));
    } else {
        std::mt19937 rng(7);
        for (int n : {6, 5, 7}) {
            turns.emplace_back();
            for (int i = 0; i < n; ++i) turns.back().push_back(int32_t(rng() % uint32_t(V)));
        }
    }
    int64_t total = 0;
    for (auto& t : turns) total += int64_t(t.size());
    while (total > n_pos / 2 && turns.size() > 1) total -= int64_t(turns.back().size()), turns.pop_back();
    for (auto& t : turns)
        if (int64_t(t.size()) > n_pos / 4) t.resize(size_t(std::max<int64_t>(1, n_pos / 4)));

    Checker c;
    const std::vector<std::pair<std::string, const LanguageModel*>> models = {
        {"ANN", base.get()}, {"QANN", &qann}, {"SNN", snn.get()}};

    // 1. positions continue across turns (TemporalSpikeProcessor)
    {
        TemporalSpikeProcessor tsp(snn);
        int64_t len = 0;
        bool ok = true;
        std::string detail;
        for (const auto& t : turns) {
            const TspOutput o = tsp.forward(t);
            for (size_t i = 0; i < t.size(); ++i) ok &= o.position_ids[i] == int32_t(len + int64_t(i));
            len += int64_t(t.size());
            ok &= tsp.cache_length(0) == len && int64_t(tsp.position_ids(0).size()) == len;
        }
        detail = fmt::format("{} turns, {} tokens, positions 0..{}", turns.size(), len, len - 1);
        c.report(ok, "position ids continue across turns, never reset", detail);
    }
    // 2. attention mask: padding left out equals never sent
    {
        TemporalSpikeProcessor a(snn), b(snn);
        std::vector<int32_t> padded;
        std::vector<uint8_t> mask;
        for (int32_t id : turns[0]) {
            padded.push_back(0), mask.push_back(0);  // a pad token before every real one
            padded.push_back(id), mask.push_back(1);
        }
        const TspOutput x = a.forward(padded, mask), y = b.forward(turns[0]);
        const float d = max_diff(x.logits.data<float>(), y.logits.data<float>(), V);
        c.report(d == 0.0f && a.cache_length(0) == int64_t(turns[0].size()), "masked padding equals tokens not sent",
                 fmt::format("max |d| = {}", d));
    }
    // 3. cached multi-turn = one-shot over the same window, for every model
    for (const auto& [name, m] : models) {
        Session s(*m);
        std::vector<int32_t> window;
        float worst = 0;
        bool same_top = true;
        for (const auto& t : turns) {
            s.feed(t);
            window.insert(window.end(), t.begin(), t.end());
            const auto ref = one_shot(*m, window);
            worst = std::max(worst, max_diff(s.logits().data(), ref.data(), V));
            same_top &= argmax(s.logits().data(), V) == argmax(ref.data(), V);
        }
        c.report(worst <= tol && same_top, fmt::format("{}: cached multi-turn logits equal one-shot over the same window", name),
                 fmt::format("max |d| = {:.3g}, same top-1: {}", worst, same_top ? "yes" : "no"));
    }
    // 4. the context-window policy
    {
        const int64_t maxc = std::max<int64_t>(4, std::min<int64_t>(n_pos, total) - 2);
        TemporalSpikeProcessor tsp(snn, maxc);
        std::vector<int32_t> hist;
        FeedResult last;
        for (const auto& t : turns) {
            last = tsp.forward(t).window;
            hist.insert(hist.end(), t.begin(), t.end());
        }
        const std::vector<int32_t> window(hist.end() - std::min<int64_t>(maxc, int64_t(hist.size())), hist.end());
        TemporalSpikeProcessor fresh(snn);
        const TspOutput again = tsp.forward(std::vector<int32_t>{turns[0][0]});
        std::vector<int32_t> w2(window.begin() + 1, window.end());
        w2.push_back(turns[0][0]);
        const auto ref = one_shot(*snn, w2);
        const float d = max_diff(again.logits.data<float>(), ref.data(), V);
        c.report(tsp.cache_length(0) <= maxc && d <= tol,
                 fmt::format("window policy: past {} tokens the newest are kept and re-encoded from position 0", maxc),
                 fmt::format("cache {} tokens, max |d| vs one-shot = {:.3g}", tsp.cache_length(0), d));
    }
    // 5. conversations side by side
    {
        TemporalSpikeProcessor tsp(snn);
        for (size_t i = 0; i < turns.size(); ++i) {
            tsp.forward(turns[i], {}, true, 1);
            tsp.forward(turns[turns.size() - 1 - i], {}, true, 2);
        }
        std::vector<int32_t> w1, w2;
        for (size_t i = 0; i < turns.size(); ++i) {
            w1.insert(w1.end(), turns[i].begin(), turns[i].end());
            w2.insert(w2.end(), turns[turns.size() - 1 - i].begin(), turns[turns.size() - 1 - i].end());
        }
        const TspOutput a = tsp.forward(std::vector<int32_t>{turns[0][0]}, {}, true, 1);
        const TspOutput b = tsp.forward(std::vector<int32_t>{turns[0][0]}, {}, true, 2);
        w1.push_back(turns[0][0]), w2.push_back(turns[0][0]);
        const float d1 = max_diff(a.logits.data<float>(), one_shot(*snn, w1).data(), V);
        const float d2 = max_diff(b.logits.data<float>(), one_shot(*snn, w2).data(), V);
        tsp.reset_cache(1);
        c.report(d1 <= tol && d2 <= tol && tsp.cache_length(1) == 0 && tsp.cache_length(2) == int64_t(w2.size()),
                 "two conversations side by side stay independent; reset_cache frees one",
                 fmt::format("max |d| = {:.3g}, {:.3g}", d1, d2));
    }
    // 6. a simulated greedy conversation: cached generation = recomputing the whole window each step
    {
        Session s(*snn);
        Sampler greedy(SamplingOptions{}, V);
        std::vector<int32_t> window;
        bool same = true;
        int64_t generated = 0;
        for (const auto& t : turns) {
            if (int64_t(window.size() + t.size()) + 4 > n_pos) break;
            window.insert(window.end(), t.begin(), t.end());
            GenerateOptions g;
            g.max_new_tokens = 4;
            g.feed_last = true;
            generate(s, greedy, t, g, [&](int32_t id) {
                const auto ref = one_shot(*snn, window);
                same &= argmax(ref.data(), V) == id;
                window.push_back(id);
                ++generated;
                return true;
            });
        }
        c.report(same && generated > 0, "simulated conversation: cached greedy replies equal recomputing from scratch",
                 fmt::format("{} tokens generated over {} turns", generated, turns.size()));
    }
    fmt::print("{} passed, {} failed\n", c.passed, c.failed);
    return c.failed == 0 ? 0 : 1;
}

}  // namespace stac::cli
