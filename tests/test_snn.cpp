// Spiking GPT-2 end to end on fixture models: float mode = the ANN, and in the layer-wise schedule
// SNN (spike path) = SNN (count path) = QANN, bit for bit (DESIGN §5; the proof is in docs/SNN.md);
// spike statistics and observers per conversation.
#include <doctest/doctest.h>

#include <random>

#include "convert/convert.h"
#include "models/model_dir.h"
#include "models/session.h"
#include "tests/helpers.h"

using namespace stac;
using namespace stac::test;
using nlohmann::json;

namespace {

std::shared_ptr<const Gpt2Model> load_base(const char* name) { return Gpt2Model::load(gpt2_fixture(name)); }

// Thresholds for L = 8 from six random samples of 24 tokens.
SnnSpec calibrated_l8(const std::shared_ptr<const Gpt2Model>& base) {
    ConvertOptions o;
    o.levels = 8;
    o.progress = false;
    return convert_model_on(base, random_token_samples(6, 24, int(base->config().vocab_size), 3), o);
}

}  // namespace

TEST_CASE("snn: float mode reproduces the GPT-2 forward") {
    for (const char* name : {"tiny-gelu-f32", "tiny-relu-f16", "tiny-gelu-bf16-published"}) {
        CAPTURE(name);
        const auto base = load_base(name);
        ConvertOptions o;
        o.sites = SiteSet::none();
        o.simplified = true;
        SpikingGpt2 f(base, simplified_spec(*base, o), {RunMode::Float, Schedule::LayerWise, SpikePath::Count, 1});
        const auto ids = random_token_samples(1, 20, int(base->config().vocab_size), 5)[0];
        const auto a = chunked_logits(*base, ids), b = chunked_logits(f, ids);
        CHECK(max_abs_diff(a.data(), b.data(), a.size()) <= 1e-5f);
    }
}

TEST_CASE("snn: layer-wise SNN equals the QANN bit for bit on both paths") {
    struct Case {
        const char* model;
        bool per_channel;
        const char* sites;
        bool simplified;
        int L, S;
        bool token_scale = false;
    };
    for (const Case& c : {Case{"tiny-gelu-f32", true, "default", false, 8, 8}, Case{"tiny-gelu-f32", false, "all", false, 4, 9},
                          Case{"tiny-relu-f16", true, "all", false, 16, 16}, Case{"tiny-gelu-bf16-published", true, "default", true, 6, 12},
                          Case{"tiny-untied-f32", true, "attn_in,mlp_in,mlp_act", false, 8, 8},
                          // Token scaling: biases added after the factor, the unsigned ReLU neuron, probabilities, the head.
                          Case{"tiny-gelu-f32", true, "default", false, 8, 8, true}, Case{"tiny-relu-f16", true, "all", false, 6, 12, true},
                          Case{"tiny-gelu-bf16-published", false, "all", true, 4, 4, true}}) {
        CAPTURE(c.model);
        CAPTURE(c.sites);
        CAPTURE(c.token_scale);
        const auto base = load_base(c.model);
        const int V = int(base->config().vocab_size);
        ConvertOptions o;
        o.levels = c.L;
        o.timesteps = c.S;
        o.per_channel = c.per_channel;
        o.sites = SiteSet::parse(c.sites);
        o.simplified = c.simplified;
        o.token_scale = c.token_scale;
        o.progress = false;
        const SnnSpec spec = c.simplified ? simplified_spec(*base, o) : convert_model_on(base, random_token_samples(6, 24, V, 1), o);
        CHECK(spec.token_scale == c.token_scale);
        SpikingGpt2 qann(base, spec, {RunMode::Qann, Schedule::LayerWise, SpikePath::Count, c.S});
        SpikingGpt2 count(base, spec, {RunMode::Snn, Schedule::LayerWise, SpikePath::Count, c.S});
        SpikingGpt2 spike(base, spec, {RunMode::Snn, Schedule::LayerWise, SpikePath::Spike, c.S});
        const auto ids = random_token_samples(1, 21, V, 9)[0];
        const auto count_st = count.new_state(), spike_st = spike.new_state();
        const auto q = chunked_logits(qann, ids), n = chunked_logits(count, *count_st, ids), s = chunked_logits(spike, *spike_st, ids);
        CHECK(max_abs_diff(q.data(), n.data(), q.size()) == 0.0f);
        CHECK(max_abs_diff(q.data(), s.data(), q.size()) == 0.0f);
        // The same through the KV cache: SNN and QANN fed the same chunks agree bit for bit; against
        // the batched pass only float rounding of the dense ops (GEMM blocking changes with T) differs.
        const auto s4 = chunked_logits(spike, ids, 4), q4 = chunked_logits(qann, ids, 4), n1 = chunked_logits(count, ids, 1), q1 = chunked_logits(qann, ids, 1);
        CHECK(max_abs_diff(q4.data(), s4.data(), q.size()) == 0.0f);
        CHECK(max_abs_diff(q1.data(), n1.data(), q.size()) == 0.0f);
        CHECK(max_abs_diff(q.data(), s4.data(), q.size()) <= 1e-4f);
        CHECK(max_abs_diff(q.data(), n1.data(), q.size()) <= 1e-4f);
        // And it is not the float network: quantization changes the logits.
        const auto f = chunked_logits(*base, ids);
        CHECK(max_abs_diff(q.data(), f.data(), q.size()) > 1e-4f);
        // The spikes are real, and both paths fired the same number of them.
        const SpikeStats &ns = count.stats(*count_st), &ss = spike.stats(*spike_st);
        CHECK(ns.total_spikes() > 0);
        CHECK(ss.total_spikes() == ns.total_spikes());
        CHECK(ns.firing_rate() > 0.0);
        CHECK(ns.firing_rate() < 1.0);
    }
}

TEST_CASE("snn: the streaming schedule approaches the QANN as S grows") {
    // Not exact at a fixed S (DESIGN §5): neurons fire before their input is complete and negative
    // spikes undo the overshoot. With charge conserved (double membranes and running sums) every
    // count settles on the QANN's once the inputs stop changing, so a long enough run agrees.
    const auto base = load_base("tiny-gelu-f32");
    const int V = int(base->config().vocab_size);
    const SnnSpec spec = calibrated_l8(base);
    SpikingGpt2 qann(base, spec, {RunMode::Qann, Schedule::LayerWise, SpikePath::Count, 8});
    const auto ids = random_token_samples(1, 12, V, 4)[0];
    const auto q = chunked_logits(qann, ids);
    auto agreement = [&](const std::vector<float>& a) {
        int same = 0;
        for (size_t t = 0; t < ids.size(); ++t) {
            const float* ra = a.data() + t * size_t(V);
            const float* rq = q.data() + t * size_t(V);
            same += std::max_element(ra, ra + V) - ra == std::max_element(rq, rq + V) - rq;
        }
        return double(same) / double(ids.size());
    };
    float first = -1, last = 0;
    double last_agreement = 0;
    for (int S : {8, 32, 128, 512, 2048}) {
        SpikingGpt2 stream(base, spec, {RunMode::Snn, Schedule::Streaming, SpikePath::Spike, S});
        const auto stream_st = stream.new_state();
        const auto s = chunked_logits(stream, *stream_st, ids);
        last = max_abs_diff(s.data(), q.data(), q.size());
        if (first < 0) first = last;
        last_agreement = agreement(s);
        MESSAGE("streaming S=" << S << ": top-1 agreement with the QANN " << agreement(s) << ", max |logit diff| " << last
                               << ", firing rate " << stream.stats(*stream_st).firing_rate());
        if (S == 512) {
            // The layer-wise neurons fire exactly |count| times; streaming ones fire more, because
            // spikes sent before the input was complete are undone by spikes of the other sign.
            SpikingGpt2 lw(base, spec, {RunMode::Snn, Schedule::LayerWise, SpikePath::Count, S});
            const auto lw_st = lw.new_state();
            chunked_logits(lw, *lw_st, ids);
            CHECK(stream.stats(*stream_st).total_spikes() > lw.stats(*lw_st).total_spikes());
        }
    }
    CHECK(last_agreement == 1.0);
    CHECK(last < first / 2);
}

TEST_CASE("snn: each conversation keeps its own spike statistics and its own observer") {
    // A loaded model is immutable (STYLE 11): what a conversation fires is counted in its state, and
    // another conversation on the same model neither sees nor changes it.
    const auto base = load_base("tiny-gelu-f32");
    const int V = int(base->config().vocab_size);
    const SnnSpec spec = calibrated_l8(base);
    SpikingGpt2 snn(base, spec, {RunMode::Snn, Schedule::LayerWise, SpikePath::Spike, 8});
    const auto ids = random_token_samples(3, 9, V, 11);
    auto counted = [&](Session& s) { return snn.stats(s.state()).to_json(true); };
    // Alone: conversation A's two turns and conversation B's one, each on a state of its own.
    Session alone_a(snn), alone_b(snn);
    alone_a.feed(ids[0]);
    const json a_first = counted(alone_a);
    alone_a.feed(ids[1]);
    alone_b.feed(ids[2]);
    // Interleaved on the same model.
    Session a(snn), b(snn);
    CHECK(snn.stats(a.state()).total_spikes() == 0);
    CHECK(snn.stats(a.state()).timesteps == 8);
    a.feed(ids[0]);
    b.feed(ids[2]);
    CHECK(counted(a) == a_first);  // B's turn left A's counts alone
    a.feed(ids[1]);
    CHECK(counted(a) == counted(alone_a));
    CHECK(counted(b) == counted(alone_b));
    CHECK(snn.stats(a.state()).tokens == 18);
    CHECK(snn.stats(b.state()).tokens == 9);
    CHECK(snn.stats(b.state()).total_spikes() > 0);
    // They describe the conversation, not its cache: an emptied cache adds to them; reset_stats
    // starts them over.
    a.reset();
    a.feed(ids[2]);
    CHECK(snn.stats(a.state()).tokens == 27);
    snn.reset_stats(a.state());
    CHECK(snn.stats(a.state()).tokens == 0);
    CHECK(snn.stats(a.state()).total_spikes() == 0);
    CHECK(snn.stats(b.state()).tokens == 9);
    // At another S the next forward starts the state's counts over (rates at two S do not add).
    RunOptions r = snn.run_options();
    r.timesteps = 16;
    snn.set_run_options(r);
    CHECK(snn.stats(b.state()).timesteps == 8);
    b.feed(ids[0]);
    CHECK(snn.stats(b.state()).timesteps == 16);
    CHECK(snn.stats(b.state()).tokens == 9);
    // A state the spiking model did not make has none.
    const auto float_state = base->new_state();
    CHECK_THROWS_AS(snn.stats(*float_state), Error);

    // An observer (calibration) watches the conversation it was set on, and no other.
    SpikingGpt2 f(base, spec, {RunMode::Float, Schedule::LayerWise, SpikePath::Count, 1});
    Calibrator cal(int(base->config().n_layer), false);
    const auto watched = f.new_state(), other = f.new_state();
    f.set_observer(*watched, &cal);
    chunked_logits(f, *other, ids[0]);
    CHECK_FALSE(cal.seen(0, SiteKind::AttnIn));
    chunked_logits(f, *watched, ids[0]);
    CHECK(cal.seen(0, SiteKind::AttnIn));
    CHECK(cal.seen(int(base->config().n_layer) - 1, SiteKind::Probs));
    CHECK(cal.seen(-1, SiteKind::LmHeadIn));
    CHECK_THROWS_AS(f.set_observer(*float_state, &cal), Error);
}
