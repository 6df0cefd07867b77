// The ANN -> SNN pipeline (DESIGN §3, §5): SNN directories saved, loaded and refused, timestep and
// level changes, site sets, calibration statistics and data, conversion, the TemporalSpikeProcessor
// (DESIGN §4 for conversations) and the fidelity evaluation.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <random>

#include "convert/convert.h"
#include "convert/evaluate.h"
#include "convert/temporal_spike_processor.h"
#include "core/json_file.h"
#include "core/safetensors.h"
#include "models/chat.h"
#include "models/gpt2_tokenizer.h"
#include "models/hf_tokenizer.h"
#include "models/session.h"
#include "tests/helpers.h"

using namespace stac;
using namespace stac::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::shared_ptr<const Gpt2Model> load_base(const fs::path& dir) { return Gpt2Model::load(dir); }

std::vector<int32_t> random_ids(int n, int vocab, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<int32_t> out;
    for (int i = 0; i < n; ++i) out.push_back(int32_t(rng() % uint64_t(vocab)));
    return out;
}

std::vector<std::vector<int32_t>> random_samples(int n, int len, int vocab, uint64_t seed) {
    std::vector<std::vector<int32_t>> out;
    for (int i = 0; i < n; ++i) out.push_back(random_ids(len, vocab, seed * 1000 + uint64_t(i)));
    return out;
}

// All-position logits [T, V] of one batched pass from an empty cache.
std::vector<float> logits_all(const LanguageModel& m, const std::vector<int32_t>& ids) {
    const int64_t T = int64_t(ids.size()), V = m.info().vocab_size;
    Tensor out = Tensor::empty({T, V}, DType::F32);
    auto st = m.new_state(T);
    m.forward(ids, *st, LogitRows::All, out);
    return {out.data<float>(), out.data<float>() + T * V};
}

std::vector<float> to_vec(const Tensor& t) { return {t.data<float>(), t.data<float>() + t.numel()}; }

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// The message of the stac::Error that load_snn_model throws, or "" when it loads.
std::string load_error(const fs::path& dir) {
    try {
        load_snn_model(dir);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

// A calibrated spec of a fixture (random ids as data).
SnnSpec calibrated(const std::shared_ptr<const Gpt2Model>& base, ConvertOptions o, uint64_t seed = 1) {
    o.progress = false;
    return convert_model_on(base, random_samples(4, 20, int(base->config().vocab_size), seed), o);
}

// Every (layer, site) of a spec whose site is on: layer -1 is the LM head input.
void for_each_site(const SnnSpec& s, const std::function<void(int, SiteKind)>& f) {
    for (int l = 0; l < int(s.layers.size()); ++l)
        for (SiteKind k : kBlockSites)
            if (s.sites.has(k)) f(l, k);
    if (s.sites.has(SiteKind::LmHeadIn)) f(-1, SiteKind::LmHeadIn);
}

void copy_dir(const fs::path& from, const fs::path& to) {
    fs::create_directories(to);
    for (const auto& e : fs::directory_iterator(from)) fs::copy_file(e.path(), to / e.path().filename());
}

// Rewrites snn.safetensors of `dir` after `edit` changed its tensors (copies, in file order).
void rewrite_snn(const fs::path& dir, const std::function<void(std::vector<std::pair<std::string, Tensor>>&)>& edit) {
    std::vector<std::pair<std::string, Tensor>> ts;
    {
        const SafetensorsFile f = SafetensorsFile::open(dir / "snn.safetensors");
        for (const auto& e : f.entries()) ts.emplace_back(e.name, f.tensor(e.name).clone());
    }
    edit(ts);
    save_safetensors(dir / "snn.safetensors", ts, {{"format", "stac-snn"}});
}

Tensor& tensor_named(std::vector<std::pair<std::string, Tensor>>& ts, const std::string& name) {
    for (auto& [n, t] : ts)
        if (n == name) return t;
    FAIL("no tensor " << name);
    static Tensor none;
    return none;
}

void edit_config(const fs::path& dir, const std::function<void(json&)>& edit) {
    json j = read_json_file(dir / "snn_config.json");
    edit(j);
    write_json_file(dir / "snn_config.json", j);
}

}  // namespace

TEST_CASE("convert: save_snn_model -> load_snn_model round-trips the spec and the logits") {
    TempDir tmp;
    copy_model(gpt2_fixture("tiny-gelu-f32"), tmp / "src");
    const auto base = load_base(tmp / "src");
    const int V = int(base->config().vocab_size);

    ConvertOptions a;
    a.levels = 8, a.timesteps = 12, a.sites = SiteSet::parse("all"), a.percentile = 99.0f;
    ConvertOptions b;
    b.levels = 5, b.timesteps = 7, b.per_channel = false, b.schedule = Schedule::Streaming, b.simplified = true;
    b.activation = Activation::Relu;
    ConvertOptions c;
    c.levels = 3, c.timesteps = 3, c.sites = SiteSet::parse("attn_in,mlp_in,mlp_act");
    int n = 0;
    for (const ConvertOptions& o : {a, b, c}) {
        CAPTURE(n);
        const SnnSpec spec = o.simplified ? simplified_spec(*base, o) : calibrated(base, o, 7);
        const fs::path out = tmp / ("snn" + std::to_string(n++));
        save_snn_model(out, tmp / "src", spec);
        for (const char* f : {"config.json", "model.safetensors", "snn_config.json", "snn.safetensors"})
            CHECK(fs::exists(out / f));
        CHECK(is_snn_dir(out));
        CHECK_FALSE(is_snn_dir(tmp / "src"));

        const LoadedSnn l = load_snn_model(out);
        const SnnSpec& r = l.spec;
        CHECK(r.levels == spec.levels);
        CHECK(r.timesteps == spec.timesteps);
        CHECK(r.schedule == spec.schedule);
        CHECK(r.activation == spec.activation);
        CHECK(r.per_channel == spec.per_channel);
        CHECK(r.percentile == spec.percentile);
        CHECK(r.simplified == spec.simplified);
        CHECK(r.sites == spec.sites);
        CHECK(r.calibration == spec.calibration);
        REQUIRE(r.layers.size() == spec.layers.size());
        int sites = 0;
        for_each_site(spec, [&](int layer, SiteKind k) {
            CAPTURE(layer);
            CAPTURE(site_name(k));
            const SiteQuant &x = spec.site(layer, k), &y = r.site(layer, k);
            CHECK(y.kind == x.kind);
            CHECK(y.is_signed == x.is_signed);
            CHECK(y.levels == x.levels);
            CHECK(bit_equal(y.clip, x.clip));
            CHECK(bit_equal(y.scale, x.scale));
            CHECK(bit_equal(y.inv, x.inv));
            ++sites;
        });
        CHECK(sites == int(spec.layers.size()) * (o.sites.has(SiteKind::Q) ? 8 : 3) + (o.sites.has(SiteKind::LmHeadIn) ? 1 : 0));

        // The model the SNN was converted from, and the logits of its QANN and SNN.
        const auto ids = random_ids(13, V, 11);
        CHECK(bit_equal(logits_all(*l.base, ids), logits_all(*base, ids)));
        for (RunMode mode : {RunMode::Qann, RunMode::Snn}) {
            const RunOptions run{mode, spec.schedule, SpikePath::Spike, spec.timesteps};
            const SpikingGpt2 mem(base, spec, run), disk(l.base, r, run);
            CHECK(bit_equal(logits_all(disk, ids), logits_all(mem, ids)));
        }
    }

    // Saving again over an SNN directory is allowed; over anything else, refused.
    const SnnSpec s = simplified_spec(*base, b);
    CHECK_NOTHROW(save_snn_model(tmp / "snn0", tmp / "src", s));
    CHECK(load_snn_model(tmp / "snn0").spec.levels == 5);
    fs::create_directories(tmp / "other");
    std::ofstream(tmp / "other" / "notes.txt") << "mine";
    try {
        save_snn_model(tmp / "other", tmp / "src", s);
        FAIL("wrote into a non-SNN directory");
    } catch (const Error& e) {
        CHECK(contains(e.what(), (tmp / "other").string()));
        CHECK(contains(e.what(), "not an SNN directory"));
    }
    CHECK_FALSE(fs::exists(tmp / "other" / "snn_config.json"));
    CHECK_THROWS_AS(save_snn_model(tmp / "src", tmp / "src", s), Error);
}

TEST_CASE("convert: malformed SNN directories are refused, naming the file and the problem") {
    TempDir tmp;
    copy_model(gpt2_fixture("tiny-gelu-f32"), tmp / "src");
    const auto base = load_base(tmp / "src");
    ConvertOptions o;
    o.levels = 8, o.timesteps = 8;
    const SnnSpec spec = calibrated(base, o, 3);
    save_snn_model(tmp / "good", tmp / "src", spec);
    REQUIRE(load_error(tmp / "good").empty());
    const int64_t D = base->config().head_dim(), C = base->config().n_embd;

    int n = 0;
    // A copy of the good directory, changed by `edit`; the load error must contain every part.
    auto refused = [&](const std::function<void(const fs::path&)>& edit, const std::vector<std::string>& parts) {
        const fs::path dir = tmp / ("bad" + std::to_string(n++));
        copy_dir(tmp / "good", dir);
        edit(dir);
        const std::string msg = load_error(dir);
        CAPTURE(msg);
        CHECK_FALSE(msg.empty());
        for (const auto& p : parts) {
            CAPTURE(p);
            CHECK(contains(msg, p));
        }
    };
    const std::string cfg = (tmp / "bad").string();  // every copy's path starts with this

    SUBCASE("snn_config.json") {
        for (const char* key : {"format", "version", "timesteps", "levels", "schedule", "activation", "granularity",
                                "percentile", "simplified", "sites", "n_layer", "source_model"})
            refused([&](const fs::path& d) { edit_config(d, [&](json& j) { j.erase(key); }); },
                    {cfg, "snn_config.json", fmt::format("missing \"{}\"", key)});
        refused([](const fs::path& d) { edit_config(d, [](json& j) { j["format"] = "onnx"; }); },
                {"snn_config.json", "format is \"onnx\", expected \"stac-snn\""});
        refused([](const fs::path& d) { edit_config(d, [](json& j) { j["version"] = 2; }); },
                {"snn_config.json", "version 2 is not supported"});
        refused([](const fs::path& d) { edit_config(d, [](json& j) { j["levels"] = 0; }); },
                {"snn_config.json", "levels 0 out of range"});
        refused([](const fs::path& d) { edit_config(d, [](json& j) { j["levels"] = 500; }); },
                {"snn_config.json", "levels 500 out of range"});
        refused([](const fs::path& d) { edit_config(d, [](json& j) { j["levels"] = "8"; }); },
                {"snn_config.json", "\"levels\" must be an integer"});
        refused([](const fs::path& d) { edit_config(d, [](json& j) { j["timesteps"] = 0; }); },
                {"snn_config.json", "timesteps 0 out of range"});
        refused([](const fs::path& d) { edit_config(d, [](json& j) { j["schedule"] = "sometimes"; }); },
                {"snn_config.json", "unknown schedule 'sometimes'"});
        refused([](const fs::path& d) { edit_config(d, [](json& j) { j["activation"] = "swish"; }); },
                {"snn_config.json", "activation \"swish\""});
        refused([](const fs::path& d) { edit_config(d, [](json& j) { j["sites"].push_back("mlp_out"); }); },
                {"snn_config.json", "unknown site 'mlp_out'"});
        refused([](const fs::path& d) { edit_config(d, [](json& j) { j["n_layer"] = 3; }); },
                {"snn_config.json", "n_layer 3 does not match config.json (2)"});
        refused([](const fs::path& d) { edit_config(d, [](json& j) { j["source_model"].erase("sha256"); }); },
                {"snn_config.json", "source_model has no sha256"});
    }
    SUBCASE("model.safetensors changed after conversion") {
        refused(
            [](const fs::path& d) {
                // Rewrite one weight (a new file: the copy is never a link to the fixture).
                std::vector<std::pair<std::string, Tensor>> ts;
                {
                    const SafetensorsFile f = SafetensorsFile::open(d / "model.safetensors");
                    for (const auto& e : f.entries()) ts.emplace_back(e.name, f.tensor(e.name).clone());
                }
                int changed = 0;
                for (auto& [name, t] : ts)
                    if (name.find("h.1.mlp.c_fc.bias") != std::string::npos) t.data<float>()[3] += 0.25f, ++changed;
                REQUIRE(changed == 1);
                save_safetensors(d / "model.safetensors", ts, {{"format", "pt"}});
            },
            {cfg, "model.safetensors", "is not the model this SNN was converted from"});
    }
    SUBCASE("snn.safetensors") {
        const std::string st = "snn.safetensors";
        refused([](const fs::path& d) { rewrite_snn(d, [](auto& ts) { std::erase_if(ts, [](auto& p) { return p.first == "h.1.q.threshold"; }); }); },
                {cfg, st, "missing tensor h.1.q.threshold"});
        refused([](const fs::path& d) { rewrite_snn(d, [](auto& ts) { tensor_named(ts, "h.0.attn_in.clip") = Tensor::zeros({3}, DType::F32); }); },
                {st, "tensor h.0.attn_in.clip has shape [3], expected [1] or [64]"});
        refused([](const fs::path& d) { rewrite_snn(d, [](auto& ts) { tensor_named(ts, "h.0.probs.clip") = Tensor::zeros({64}, DType::F32); }); },
                {st, "tensor h.0.probs.clip has shape [64], expected [1]"});
        refused([](const fs::path& d) { rewrite_snn(d, [](auto& ts) { tensor_named(ts, "h.0.v.clip") = tensor_named(ts, "h.0.v.clip").to(DType::F16); }); },
                {st, "tensor h.0.v.clip has dtype F16, expected F32"});
        refused(
            [](const fs::path& d) {
                rewrite_snn(d, [](auto& ts) {
                    Tensor one = Tensor::empty({1}, DType::F32);
                    one.data<float>()[0] = 0.5f;
                    tensor_named(ts, "h.1.mlp_in.threshold") = one;
                });
            },
            {st, "h.1.mlp_in.clip and h.1.mlp_in.threshold differ in shape"});
        refused([](const fs::path& d) { rewrite_snn(d, [](auto& ts) { tensor_named(ts, "h.0.mlp_act.threshold").template data<float>()[5] *= 1.01f; }); },
                {st, "h.0.mlp_act.threshold[5] = ", "is not clip / levels"});
        refused([](const fs::path& d) { rewrite_snn(d, [](auto& ts) { tensor_named(ts, "h.0.v.threshold").template data<float>()[0] *= -1.0f; }); },
                {st, "tensor h.0.v.threshold holds -", "thresholds must be positive and finite"});
        refused([](const fs::path& d) { rewrite_snn(d, [](auto& ts) { tensor_named(ts, "h.1.attn_out.threshold").template data<float>()[3] = NAN; }); },
                {st, "tensor h.1.attn_out.threshold holds nan"});
        refused([](const fs::path& d) { rewrite_snn(d, [](auto& ts) { tensor_named(ts, "h.1.k.clip").template data<float>()[0] = INFINITY; }); },
                {st, "tensor h.1.k.clip holds inf"});
        refused([](const fs::path& d) { rewrite_snn(d, [](auto& ts) { tensor_named(ts, "h.0.probs.clip").template data<float>()[0] = 0.0f; }); },
                {st, "tensor h.0.probs.clip holds 0"});
        refused([](const fs::path& d) { rewrite_snn(d, [](auto& ts) { ts.emplace_back("h.0.mlp_out.clip", Tensor::zeros({1}, DType::F32)); }); },
                {st, "unexpected tensor h.0.mlp_out.clip"});
        // The LM-head input site is off in this conversion: its tensors are unexpected.
        refused([](const fs::path& d) { rewrite_snn(d, [](auto& ts) { ts.emplace_back("lm_head_in.clip", Tensor::zeros({1}, DType::F32)); }); },
                {st, "unexpected tensor lm_head_in.clip"});
        // Q's thresholds are per head: one channel of a head changed (its threshold kept = clip / L).
        refused(
            [&](const fs::path& d) {
                rewrite_snn(d, [&](auto& ts) {
                    float* clip = tensor_named(ts, "h.1.q.clip").template data<float>();
                    float* thr = tensor_named(ts, "h.1.q.threshold").template data<float>();
                    const size_t i = size_t(D) + 2;  // inside the second head
                    clip[i] *= 0.5f;
                    thr[i] = clip[i] / 8.0f;
                });
            },
            {st, "h.1.q.clip is not constant within each head"});
    }
    SUBCASE("a per-head edit that keeps heads constant loads") {
        // The same edit applied to a whole head is legal, and the threshold follows.
        const fs::path dir = tmp / "head";
        copy_dir(tmp / "good", dir);
        rewrite_snn(dir, [&](auto& ts) {
            float* clip = tensor_named(ts, "h.1.q.clip").template data<float>();
            float* thr = tensor_named(ts, "h.1.q.threshold").template data<float>();
            for (int64_t i = D; i < 2 * D; ++i) clip[i] *= 0.5f, thr[i] = clip[i] / 8.0f;
        });
        const LoadedSnn l = load_snn_model(dir);
        const SiteQuant& q = l.spec.site(1, SiteKind::Q);
        REQUIRE(int64_t(q.clip.size()) == C);
        CHECK(q.clip[size_t(D)] == spec.site(1, SiteKind::Q).clip[size_t(D)] * 0.5f);
        CHECK(q.clip[0] == spec.site(1, SiteKind::Q).clip[0]);
    }
}

TEST_CASE("convert: calibrate_timesteps and set_levels") {
    const auto base = load_base(gpt2_fixture("tiny-gelu-f32"));
    const int V = int(base->config().vocab_size);
    ConvertOptions o;
    o.levels = 8, o.timesteps = 16, o.sites = SiteSet::parse("all");
    const SnnSpec spec = calibrated(base, o, 5);

    // S >= L: nothing lost, thresholds unchanged.
    for (int S : {8, 12, 100}) {
        SnnSpec s = spec;
        CHECK(calibrate_timesteps(s, S).empty());
        CHECK(s.timesteps == S);
        CHECK(s.levels == 8);
        for_each_site(s, [&](int l, SiteKind k) { CHECK(bit_equal(s.site(l, k).scale, spec.site(l, k).scale)); });
    }

    // S < L: levels drop to S, every threshold grows by L / S, and the note says so.
    SnnSpec s = spec;
    const std::string note = calibrate_timesteps(s, 4);
    CAPTURE(note);
    CHECK(contains(note, "S = 4 < L = 8"));
    CHECK(contains(note, "levels reduced to 4"));
    CHECK(contains(note, "2x"));
    CHECK(s.levels == 4);
    CHECK(s.timesteps == 4);
    int checked = 0;
    for_each_site(s, [&](int l, SiteKind k) {
        const SiteQuant &now = s.site(l, k), &was = spec.site(l, k);
        CHECK(now.levels == 4);
        CHECK(bit_equal(now.clip, was.clip));
        REQUIRE(now.scale.size() == was.scale.size());
        for (size_t i = 0; i < now.scale.size(); ++i) {
            CHECK(now.scale[i] == now.clip[i] / 4.0f);
            CHECK(std::fabs(now.scale[i] / was.scale[i] - 2.0f) <= 1e-6f);
            CHECK(now.inv[i] == 1.0f / now.scale[i]);
            ++checked;
        }
    });
    CHECK(checked > 0);

    // The re-timed layer-wise SNN still equals its QANN bit for bit, on both paths; and the QANN
    // changed (coarser levels).
    const auto ids = random_ids(17, V, 21);
    const SpikingGpt2 q(base, s, {RunMode::Qann, Schedule::LayerWise, SpikePath::Count, 4});
    const SpikingGpt2 spike(base, s, {RunMode::Snn, Schedule::LayerWise, SpikePath::Spike, 4});
    const SpikingGpt2 count(base, s, {RunMode::Snn, Schedule::LayerWise, SpikePath::Count, 4});
    const auto lq = logits_all(q, ids);
    CHECK(bit_equal(logits_all(spike, ids), lq));
    CHECK(bit_equal(logits_all(count, ids), lq));
    const SpikingGpt2 q8(base, spec, {RunMode::Qann, Schedule::LayerWise, SpikePath::Count, 16});
    const auto lq8 = logits_all(q8, ids);
    CHECK(max_abs_diff(lq.data(), lq8.data(), lq.size()) > 0.0f);

    // set_levels: thresholds = clip / L; S rises to L only when below it.
    SnnSpec t = spec;
    set_levels(t, 5);
    CHECK(t.levels == 5);
    CHECK(t.timesteps == 16);
    for_each_site(t, [&](int l, SiteKind k) {
        const SiteQuant& x = t.site(l, k);
        CHECK(x.levels == 5);
        for (size_t i = 0; i < x.clip.size(); ++i) CHECK(x.scale[i] == x.clip[i] / 5.0f);
        CHECK(x.n_max() == 5);
        CHECK(x.n_min() == (x.is_signed ? -5 : 0));
    });
    set_levels(t, 40);
    CHECK(t.timesteps == 40);
    CHECK(t.site(0, SiteKind::MlpAct).scale[0] == t.site(0, SiteKind::MlpAct).clip[0] / 40.0f);
    CHECK_THROWS_AS(set_levels(t, 0), Error);
    CHECK_THROWS_AS(set_levels(t, spiking_max_levels() + 1), Error);
    CHECK_THROWS_AS(calibrate_timesteps(t, 0), Error);
    CHECK(t.levels == 40);  // a refused change leaves the spec as it was
}

TEST_CASE("convert: SiteSet::parse") {
    const SiteSet d = SiteSet::parse("default");
    for (SiteKind k : kBlockSites) CHECK(d.has(k));
    CHECK_FALSE(d.has(SiteKind::LmHeadIn));
    CHECK(d == SiteSet::defaults());
    CHECK(d.attention());

    const SiteSet all = SiteSet::parse("all");
    for (int k = 0; k < kSiteKinds; ++k) CHECK(all.has(SiteKind(k)));
    CHECK(all.str() == "attn_in,q,k,v,probs,attn_out,mlp_in,mlp_act,lm_head_in");

    const SiteSet none = SiteSet::parse("none");
    for (int k = 0; k < kSiteKinds; ++k) CHECK_FALSE(none.has(SiteKind(k)));
    CHECK(none == SiteSet::none());
    CHECK(none.str() == "none");
    CHECK_FALSE(none.attention());

    auto only = [](const SiteSet& s, std::vector<SiteKind> want) {
        for (int k = 0; k < kSiteKinds; ++k)
            if (s.has(SiteKind(k)) != (std::find(want.begin(), want.end(), SiteKind(k)) != want.end())) return false;
        return true;
    };
    CHECK(only(SiteSet::parse("attn_in,mlp_act"), {SiteKind::AttnIn, SiteKind::MlpAct}));
    CHECK(only(SiteSet::parse("mlp_act,attn_in"), {SiteKind::AttnIn, SiteKind::MlpAct}));
    CHECK(only(SiteSet::parse("attn"), {SiteKind::Q, SiteKind::K, SiteKind::V, SiteKind::Probs}));
    CHECK(only(SiteSet::parse("lm_head_in,attn,attn_in"),
               {SiteKind::Q, SiteKind::K, SiteKind::V, SiteKind::Probs, SiteKind::AttnIn, SiteKind::LmHeadIn}));
    CHECK(only(SiteSet::parse("q,k,v,probs"), {SiteKind::Q, SiteKind::K, SiteKind::V, SiteKind::Probs}));
    CHECK(SiteSet::parse("attn_in,attn_in") == SiteSet::parse("attn_in"));
    for (const char* text : {"default", "all", "attn_in,mlp_act", "attn,lm_head_in", "mlp_in"})
        CHECK(SiteSet::parse(SiteSet::parse(text).str()) == SiteSet::parse(text));
    for (int k = 0; k < kSiteKinds; ++k) {
        CHECK(site_from_name(site_name(SiteKind(k))) == SiteKind(k));
        CHECK_FALSE(site_description(SiteKind(k)).empty());
    }

    auto error = [](const char* text) -> std::string {
        try {
            SiteSet::parse(text);
        } catch (const Error& e) {
            return e.what();
        }
        return "";
    };
    CHECK(contains(error("mlp_out"), "unknown site 'mlp_out'"));
    CHECK(contains(error("attn_in,Q"), "unknown site 'Q'"));
    CHECK(contains(error("attn_in,,mlp_in"), "unknown site ''"));
    CHECK_FALSE(error("").empty());
    CHECK(contains(error("q"), "q, k, v and probs go together"));
    CHECK(contains(error("q,k,v"), "go together"));
    CHECK(contains(error("attn_in,probs"), "go together"));
}

TEST_CASE("convert: AbsHistogram percentiles against exact sorted percentiles") {
    std::mt19937_64 rng(42);
    std::lognormal_distribution<float> logn(0.0f, 2.0f);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    const size_t n = 20000;
    std::vector<float> xs(n);
    for (auto& x : xs) {
        const float r = u(rng);
        x = r < 0.2f ? 0.0f : (r < 0.6f ? -1.0f : 1.0f) * logn(rng);  // 20% zeros, both signs
    }
    std::vector<float> sorted(n);
    std::transform(xs.begin(), xs.end(), sorted.begin(), [](float x) { return std::fabs(x); });
    std::sort(sorted.begin(), sorted.end());

    for (int bpo : {64, 16, 4}) {
        CAPTURE(bpo);
        AbsHistogram h(bpo), a(bpo), b(bpo);
        for (size_t i = 0; i < n; ++i) {
            h.add(xs[i]);
            (i % 3 ? a : b).add(xs[i]);
        }
        h.add(NAN), h.add(INFINITY), h.add(-INFINITY);  // not counted
        a.merge(b);
        CHECK(h.count() == n);
        CHECK(a.count() == n);
        CHECK(h.max() == sorted.back());
        CHECK(h.percentile(100) == sorted.back());
        CHECK(a.percentile(100) == sorted.back());
        const double res = std::exp2(1.0 / bpo);
        for (double p : {0.5, 10.0, 19.0, 20.5, 25.0, 50.0, 90.0, 99.0, 99.9, 99.99}) {
            CAPTURE(p);
            // The p-th percentile: the smallest value with at least p% of the values at or below it.
            const double target = p / 100.0 * double(n);
            const float exact = sorted[size_t(std::ceil(target)) - 1];
            const float got = h.percentile(p);
            CAPTURE(exact);
            CAPTURE(got);
            if (exact == 0.0f) {
                CHECK(got == 0.0f);
            } else {
                // The upper edge of exact's bin, capped at the maximum (the 1e-6 covers log2 rounding at an edge).
                CHECK(double(got) >= double(exact) * (1 - 1e-6));
                CHECK(double(got) <= double(exact) * res * (1 + 1e-6));
                CHECK(got <= h.max());
            }
            CHECK(a.percentile(p) == got);  // merging loses nothing
        }
    }
    AbsHistogram empty(64);
    CHECK(empty.percentile(50) == 0.0f);
    CHECK(empty.percentile(100) == 0.0f);
    AbsHistogram coarse(16);
    CHECK_THROWS_AS(coarse.merge(AbsHistogram(64)), Error);
    // One value: every percentile is that value (the bin edge is capped at the maximum).
    AbsHistogram one(64);
    one.add(-3.0f);
    CHECK(one.percentile(1) == 3.0f);
    CHECK(one.percentile(100) == 3.0f);
}

TEST_CASE("convert: a chat model (ChatML) also calibrates on the built-in prompts as conversations") {
    // SmolLM2's tokenizer.json (tests/fixtures/tokenizer/hf_tokenizers.json, variant "smollm2").
    TempDir tmp;
    const json all = read_json_file(fixtures() / "tokenizer" / "hf_tokenizers.json");
    for (const auto& v : all.at("variants"))
        if (v.at("name") == "smollm2") std::ofstream(tmp / "tokenizer.json", std::ios::binary) << v.at("tokenizer").dump();
    const HfTokenizer tok = HfTokenizer::load(tmp / "tokenizer.json");
    REQUIRE(chat_format_for(tok) == ChatFormat::ChatML);
    const auto& builtin = builtin_calibration_prompts();
    const size_t B = builtin.size();
    const auto d = create_calibration_data(tok, std::nullopt, 1000, 1000);
    REQUIRE(d.size() == 2 * B);
    const int32_t im_start = tok.encode("<|im_start|>", {.allow_special = true})[0];
    for (size_t i = 0; i < B; ++i) {
        CAPTURE(builtin[i]);
        CHECK(d[i] == tok.encode(builtin[i], {.allow_special = false}));  // the plain prompts first
        const auto m = builtin_chat_messages(builtin[i]);
        CHECK(d[B + i] == chatml_ids(tok, m, m.back().role == "user"));
        CHECK(d[B + i][0] == im_start);
    }
    // A "User: ...\nAssistant: ..." prompt becomes a user and an assistant message after the
    // template's default system message; any other prompt one user message.
    const auto qa = builtin_chat_messages("User: What is 2 + 2?\nAssistant: 4.");
    REQUIRE(qa.size() == 3);
    CHECK(qa[0].role == "system");
    CHECK(qa[0].content == kChatMLDefaultSystem);
    CHECK((qa[1].role == "user" && qa[1].content == "What is 2 + 2?"));
    CHECK((qa[2].role == "assistant" && qa[2].content == "4."));
    const auto one = builtin_chat_messages("The quick brown fox.");
    REQUIRE(one.size() == 2);
    CHECK((one[1].role == "user" && one[1].content == "The quick brown fox."));
    // The file's samples come after both; num_samples counts every sample.
    std::ofstream(tmp / "f.txt") << "one\n\ntwo\n";
    const auto f = create_calibration_data(tok, tmp / "f.txt", 1000, 1000);
    REQUIRE(f.size() == 2 * B + 2);
    CHECK(f[2 * B] == tok.encode("one", {.allow_special = false}));
    CHECK(create_calibration_data(tok, tmp / "f.txt", int(B) + 3, 1000).size() == B + 3);
    // max_length cuts the conversations too.
    for (const auto& ids : create_calibration_data(tok, std::nullopt, 1000, 5)) CHECK(ids.size() <= 5);
}

TEST_CASE("convert: create_calibration_data") {
    const Gpt2Tokenizer tok = Gpt2Tokenizer::load_dir(repo_root() / "models" / "gpt2-tokenizer");
    const auto& builtin = builtin_calibration_prompts();
    const int B = int(builtin.size());
    REQUIRE(B > 5);
    auto enc = [&](const std::string& t) { return tok.encode(t, {.allow_special = false}); };
    TempDir tmp;

    // Built-in prompts first, cut to max_length.
    const auto five = create_calibration_data(tok, std::nullopt, 5, 1000);
    REQUIRE(five.size() == 5);
    for (int i = 0; i < 5; ++i) CHECK(five[size_t(i)] == enc(builtin[size_t(i)]));
    const auto cut = create_calibration_data(tok, std::nullopt, 1000, 4);
    CHECK(int(cut.size()) == B);
    for (int i = 0; i < B; ++i) {
        const auto full = enc(builtin[size_t(i)]);
        CHECK(cut[size_t(i)] == std::vector<int32_t>(full.begin(), full.begin() + std::min<size_t>(4, full.size())));
    }

    // A file with blank lines: one sample per paragraph (extra blank lines are no sample).
    const fs::path para = tmp / "para.txt";
    std::ofstream(para) << "The first paragraph,\nover two lines.\n\nThe second one.\n\n\n\nA third, after more blank lines.\n";
    const auto p = create_calibration_data(tok, para, 1000, 1000);
    REQUIRE(int(p.size()) == B + 3);
    CHECK(p[size_t(B)] == enc("The first paragraph,\nover two lines."));
    CHECK(p[size_t(B) + 1] == enc("The second one."));
    CHECK(p[size_t(B) + 2] == enc("A third, after more blank lines.\n"));
    // num_samples counts the built-in prompts too.
    CHECK(int(create_calibration_data(tok, para, B + 2, 1000).size()) == B + 2);
    const auto pc = create_calibration_data(tok, para, 1000, 3);
    REQUIRE(int(pc.size()) == B + 3);
    const auto second = enc("The second one.");
    REQUIRE(second.size() > 3);
    CHECK(pc[size_t(B) + 1] == std::vector<int32_t>(second.begin(), second.begin() + 3));

    // Without blank lines: one sample per line.
    const fs::path lines = tmp / "lines.txt";
    std::ofstream(lines) << "alpha beta\ngamma\n   \ndelta epsilon zeta";
    const auto l = create_calibration_data(tok, lines, 1000, 1000);
    REQUIRE(int(l.size()) == B + 3);
    CHECK(l[size_t(B)] == enc("alpha beta"));
    CHECK(l[size_t(B) + 1] == enc("gamma"));
    CHECK(l[size_t(B) + 2] == enc("delta epsilon zeta"));

    // Errors.
    CHECK_THROWS_AS(create_calibration_data(tok, std::nullopt, 0, 128), Error);
    CHECK_THROWS_AS(create_calibration_data(tok, std::nullopt, 8, 1), Error);
    const fs::path empty = tmp / "empty.txt", blank = tmp / "blank.txt";
    std::ofstream(empty) << "";
    std::ofstream(blank) << "\n\n  \n\n\t\n";
    for (const fs::path& f : {empty, blank}) {
        try {
            create_calibration_data(tok, f, 64, 128);
            FAIL("accepted " << f);
        } catch (const Error& e) {
            CHECK(contains(e.what(), f.string()));
            CHECK(contains(e.what(), "no text to calibrate on"));
        }
    }
    try {
        create_calibration_data(tok, tmp / "missing.txt", 64, 128);
        FAIL("accepted a missing file");
    } catch (const Error& e) {
        CHECK(contains(e.what(), (tmp / "missing.txt").string()));
    }
}

TEST_CASE("convert: convert_model without data, simplified thresholds, granularity") {
    const auto base = load_base(gpt2_fixture("tiny-gelu-f32"));
    const Gpt2Config& cfg = base->config();
    const int64_t C = cfg.n_embd, D = cfg.head_dim(), I = cfg.inner();

    ConvertOptions o;
    o.progress = false;
    try {
        convert_model(base, nullptr, o);
        FAIL("converted without a tokenizer");
    } catch (const Error& e) {
        CHECK(contains(e.what(), "--simplified"));
        CHECK(contains(e.what(), "tokenizer"));
    }

    // Option checks come first.
    for (auto bad : std::vector<std::function<void(ConvertOptions&)>>{
             [](ConvertOptions& x) { x.levels = 0; }, [](ConvertOptions& x) { x.levels = spiking_max_levels() + 1; },
             [](ConvertOptions& x) { x.timesteps = 0; }, [](ConvertOptions& x) { x.percentile = 0; },
             [](ConvertOptions& x) { x.percentile = 100.5f; },
             [](ConvertOptions& x) { x.schedule = Schedule::Streaming, x.sites = SiteSet::parse("attn_in,mlp_in"); }}) {
        ConvertOptions x = o;
        x.simplified = true;
        bad(x);
        CHECK_THROWS_AS(convert_model(base, nullptr, x), Error);
    }
    CHECK_THROWS_AS(convert_model_on(base, {}, o), Error);  // no samples

    auto width = [&](SiteKind k) { return k == SiteKind::Probs ? 1 : k == SiteKind::MlpAct ? I : C; };
    for (bool per_channel : {true, false}) {
        CAPTURE(per_channel);
        ConvertOptions s = o;
        s.simplified = true;
        s.per_channel = per_channel;
        s.sites = SiteSet::parse("all");
        const SnnSpec spec = convert_model(base, nullptr, s);
        CHECK(spec.simplified);
        int sites = 0;
        for_each_site(spec, [&](int l, SiteKind k) {
            CAPTURE(l);
            CAPTURE(site_name(k));
            const SiteQuant& q = spec.site(l, k);
            CHECK(int64_t(q.clip.size()) == (per_channel ? width(k) : 1));
            CHECK(q.scale.size() == q.clip.size());
            for (size_t i = 0; i < q.clip.size(); ++i) {
                CHECK(std::isfinite(q.clip[i]));
                CHECK(q.clip[i] > 0.0f);
                CHECK(q.scale[i] == q.clip[i] / 8.0f);
            }
            if (per_channel && (k == SiteKind::Q || k == SiteKind::K || k == SiteKind::V))
                for (size_t i = 0; i < q.clip.size(); ++i) CHECK(q.clip[i] == q.clip[i - i % size_t(D)]);
            ++sites;
        });
        CHECK(sites == int(cfg.n_layer) * 8 + 1);
        // ln_1's output: 3 |g| + |b| per channel (its largest, per tensor).
        const Gpt2Layer& w = base->weights().layers[1];
        float m = 0;
        for (int64_t i = 0; i < C; ++i) {
            const float c = 3.0f * std::fabs(w.ln1_g.data<float>()[i]) + std::fabs(w.ln1_b.data<float>()[i]);
            m = std::max(m, c);
            if (per_channel) CHECK(spec.site(1, SiteKind::AttnIn).clip[size_t(i)] == doctest::Approx(c).epsilon(1e-6));
        }
        if (!per_channel) CHECK(spec.site(1, SiteKind::AttnIn).clip[0] == doctest::Approx(m).epsilon(1e-6));
        CHECK(spec.site(0, SiteKind::Probs).clip[0] == 1.0f);
    }

    // Calibrated at the 100th percentile: a per-tensor clip is the largest per-channel clip (both the max).
    ConvertOptions pc = o, pt = o;
    pc.percentile = pt.percentile = 100.0f;
    pc.sites = pt.sites = SiteSet::parse("all");
    pt.per_channel = false;
    const SnnSpec sc = calibrated(base, pc, 9), stt = calibrated(base, pt, 9);
    for_each_site(sc, [&](int l, SiteKind k) {
        CAPTURE(l);
        CAPTURE(site_name(k));
        const SiteQuant &c = sc.site(l, k), &t = stt.site(l, k);
        REQUIRE(t.clip.size() == 1);
        CHECK(int64_t(c.clip.size()) == width(k));
        CHECK(t.clip[0] == *std::max_element(c.clip.begin(), c.clip.end()));
    });
    CHECK(sc.calibration["samples"] == 4);
    CHECK(sc.calibration["tokens"] == 80);
}

TEST_CASE("convert: TemporalSpikeProcessor conversations") {
    const auto base = load_base(gpt2_fixture("tiny-gelu-f32"));
    const int V = int(base->config().vocab_size);
    ConvertOptions o;
    o.levels = 8, o.timesteps = 8;
    const SnnSpec spec = calibrated(base, o, 13);
    const auto snn = std::make_shared<SpikingGpt2>(base, spec, RunOptions{RunMode::Snn, Schedule::LayerWise, SpikePath::Spike, 8});
    const auto a = random_ids(6, V, 1), b = random_ids(5, V, 2), c = random_ids(4, V, 3);
    auto cat = [](std::vector<int32_t> x, const std::vector<int32_t>& y) {
        x.insert(x.end(), y.begin(), y.end());
        return x;
    };
    auto iota = [](int32_t from, int32_t n) {
        std::vector<int32_t> v(static_cast<size_t>(n));
        for (int32_t i = 0; i < n; ++i) v[size_t(i)] = from + i;
        return v;
    };
    auto last_row = [&](const std::vector<int32_t>& ids) {
        const auto all = logits_all(*snn, ids);
        return std::vector<float>(all.end() - V, all.end());
    };

    SUBCASE("positions continue across calls; statistics per call") {
        TemporalSpikeProcessor tsp(snn);
        CHECK(tsp.timesteps() == 8);
        CHECK(tsp.max_context_length() == base->config().n_positions);
        const TspOutput x = tsp.forward(a);
        CHECK(x.position_ids == iota(0, 6));
        CHECK(x.logits.shape() == Shape{1, V});
        CHECK_FALSE(x.window.window_shifted());
        const TspOutput y = tsp.forward(b);
        CHECK(y.position_ids == iota(6, 5));
        CHECK(tsp.cache_length(0) == 11);
        CHECK(tsp.position_ids(0) == iota(0, 11));
        // Cached = the same chunks through a Session of the model (every row computed, as the
        // processor does), bit for bit; = one shot, to rounding.
        Session s(*snn);
        Tensor ra = Tensor::empty({6, V}, DType::F32), rb = Tensor::empty({5, V}, DType::F32);
        s.feed_all(a, ra);
        s.feed_all(b, rb);
        CHECK(bit_equal(to_vec(y.logits), std::vector<float>(s.logits().begin(), s.logits().end())));
        CHECK(bit_equal(to_vec(x.logits), to_vec(ra.slice_rows(5, 6))));
        // Statistics of each call: its own tokens and spikes; the conversation's add them up, and
        // the Session above, which ran the same chunks on its own state, counted the same.
        CHECK(x.stats.tokens == 6);
        CHECK(y.stats.tokens == 5);
        CHECK(x.stats.total_spikes() > 0);
        CHECK(y.stats.total_spikes() > 0);
        CHECK(x.stats.total_synops() >= x.stats.total_spikes());
        CHECK(x.stats.firing_rate() > 0.0);
        CHECK(x.stats.firing_rate() < 1.0);
        SpikeStats sum = x.stats;
        sum.add(y.stats);
        CHECK(tsp.stats(0).to_json(true) == sum.to_json(true));
        CHECK(snn->stats(s.state()).to_json(true) == sum.to_json(true));
        CHECK(tsp.stats(0).tokens == 11);
        CHECK(tsp.stats(7).tokens == 0);  // no such conversation
        const auto one = last_row(cat(a, b));
        CHECK(max_abs_diff(y.logits.data<float>(), one.data(), size_t(V)) <= 1e-4f);
    }
    SUBCASE("an attention mask with zeros equals sending only the unmasked ids") {
        std::vector<int32_t> padded;
        std::vector<uint8_t> mask;
        for (size_t i = 0; i < a.size(); ++i) {
            padded.push_back(int32_t(i * 7 % size_t(V))), mask.push_back(0);
            padded.push_back(a[i]), mask.push_back(1);
        }
        padded.push_back(0), mask.push_back(0);
        TemporalSpikeProcessor p(snn), q(snn);
        const TspOutput x = p.forward(padded, mask), y = q.forward(a);
        CHECK(bit_equal(to_vec(x.logits), to_vec(y.logits)));
        CHECK(x.position_ids == iota(0, 6));
        CHECK(x.stats.tokens == 6);
        CHECK(p.cache_length(0) == 6);
        // And the conversation continues as if the padding had never been sent.
        CHECK(bit_equal(to_vec(p.forward(b).logits), to_vec(q.forward(b).logits)));
        CHECK_THROWS_AS(p.forward(a, std::vector<uint8_t>(3, 1)), Error);
        CHECK_THROWS_AS(p.forward(b, std::vector<uint8_t>(b.size(), 0)), Error);
        CHECK(p.cache_length(0) == 11);  // refused calls change nothing
    }
    SUBCASE("use_cache = false leaves the conversation's cache untouched; reset_cache") {
        TemporalSpikeProcessor tsp(snn), ref(snn);
        tsp.forward(a);
        ref.forward(a);
        const TspOutput alone = tsp.forward(b, {}, false);
        CHECK(tsp.cache_length(0) == 6);
        CHECK(alone.position_ids == iota(0, 5));
        CHECK(bit_equal(to_vec(alone.logits), to_vec(TemporalSpikeProcessor(snn).forward(b).logits)));
        CHECK(bit_equal(to_vec(tsp.forward(c).logits), to_vec(ref.forward(c).logits)));
        CHECK(tsp.cache_length(0) == 10);
        // use_cache = false on a conversation that does not exist creates none.
        tsp.forward(c, {}, false, 9);
        CHECK(tsp.conversations() == 1);
        CHECK(tsp.cache_length(9) == 0);

        tsp.reset_cache(0);
        CHECK(tsp.cache_length(0) == 0);
        CHECK(tsp.position_ids(0).empty());
        const TspOutput again = tsp.forward(c);
        CHECK(again.position_ids == iota(0, 4));
        CHECK(bit_equal(to_vec(again.logits), to_vec(TemporalSpikeProcessor(snn).forward(c).logits)));
    }
    SUBCASE("two batch ids are independent") {
        TemporalSpikeProcessor tsp(snn), one(snn), two(snn);
        std::vector<float> l1, l2;
        tsp.forward(a, {}, true, 1);
        tsp.forward(c, {}, true, 2);
        l1 = to_vec(tsp.forward(b, {}, true, 1).logits);
        l2 = to_vec(tsp.forward(a, {}, true, 2).logits);
        one.forward(a);
        two.forward(c);
        CHECK(bit_equal(l1, to_vec(one.forward(b).logits)));
        CHECK(bit_equal(l2, to_vec(two.forward(a).logits)));
        CHECK_FALSE(bit_equal(l1, l2));
        CHECK(tsp.conversations() == 2);
        CHECK(tsp.cache_length(1) == 11);
        CHECK(tsp.cache_length(2) == 10);
        tsp.reset_cache(1);
        CHECK(tsp.conversations() == 1);
        CHECK(tsp.cache_length(1) == 0);
        CHECK(tsp.cache_length(2) == 10);
        tsp.reset_all();
        CHECK(tsp.conversations() == 0);
    }
    SUBCASE("interleaved conversations on one model: each call and each conversation counts only its own spikes") {
        // Conversations 1 and 2 of one processor, and a second processor, all on one model, their
        // calls interleaved; against each conversation run alone on a model of its own. The
        // model's counters used to be shared: a conversation's totals then held the others' too.
        TemporalSpikeProcessor tsp(snn), other(snn);
        const TspOutput x1 = tsp.forward(a, {}, true, 1);
        const TspOutput x2 = tsp.forward(c, {}, true, 2);
        const SpikeStats one_after_a = tsp.stats(1);
        other.forward(b);
        const TspOutput y2 = tsp.forward(a, {}, true, 2);
        CHECK(tsp.stats(1).to_json(true) == one_after_a.to_json(true));  // 2's calls and the other processor's left 1 alone
        const TspOutput y1 = tsp.forward(b, {}, true, 1);
        const TspOutput z = other.forward(c, {}, false);

        const auto own = std::make_shared<SpikingGpt2>(base, spec, snn->run_options());
        TemporalSpikeProcessor one(own), two(own), three(own);
        const TspOutput r1a = one.forward(a), r1b = one.forward(b), r2c = two.forward(c), r2a = two.forward(a);
        const TspOutput rz = three.forward(c);
        CHECK(x1.stats.to_json(true) == r1a.stats.to_json(true));
        CHECK(y1.stats.to_json(true) == r1b.stats.to_json(true));
        CHECK(x2.stats.to_json(true) == r2c.stats.to_json(true));
        CHECK(y2.stats.to_json(true) == r2a.stats.to_json(true));
        CHECK(z.stats.to_json(true) == rz.stats.to_json(true));  // use_cache = false: a fresh state of its own
        CHECK(tsp.stats(1).to_json(true) == one.stats(0).to_json(true));
        CHECK(tsp.stats(2).to_json(true) == two.stats(0).to_json(true));
        CHECK(tsp.stats(1).tokens == 11);
        CHECK(tsp.stats(2).tokens == 10);
        CHECK(other.stats(0).tokens == 5);
        CHECK(y1.stats.total_spikes() > 0);
        // A reset conversation starts counting again.
        tsp.reset_cache(1);
        CHECK(tsp.stats(1).total_spikes() == 0);
        CHECK(tsp.forward(a, {}, true, 1).stats.to_json(true) == r1a.stats.to_json(true));
    }
    SUBCASE("LogitRows::All: [T, V] whose last row is the Last result") {
        TemporalSpikeProcessor p(snn), q(snn);
        p.forward(a), q.forward(a);
        const TspOutput all = p.forward(b, {}, true, 0, LogitRows::All);
        const TspOutput last = q.forward(b);
        REQUIRE(all.logits.shape() == Shape{5, V});
        const auto rows = to_vec(all.logits);
        CHECK(bit_equal(std::vector<float>(rows.end() - V, rows.end()), to_vec(last.logits)));
        // Every row is the logits of that position (one shot over the prefix, to rounding).
        const auto one = logits_all(*snn, cat(a, b));
        CHECK(max_abs_diff(rows.data(), one.data() + 6 * size_t(V), rows.size()) <= 1e-4f);
    }
    SUBCASE("a window overflow drops the oldest tokens and re-encodes the kept window") {
        CHECK_THROWS_AS(TemporalSpikeProcessor(snn, base->config().n_positions + 1), Error);
        TemporalSpikeProcessor tsp(snn, 10);
        CHECK(tsp.max_context_length() == 10);
        CHECK_FALSE(tsp.forward(a).window.window_shifted());
        const TspOutput x = tsp.forward(b, {}, true, 0, LogitRows::All);  // 6 + 5 = 11 > 10
        CHECK(x.window.dropped == 1);
        CHECK(x.window.reencoded == 10);
        CHECK(tsp.cache_length(0) == 10);
        CHECK(x.position_ids == iota(5, 5));
        const auto ab = cat(a, b);
        const std::vector<int32_t> kept(ab.begin() + 1, ab.end());
        const auto one = logits_all(*snn, kept);
        CHECK(bit_equal(to_vec(x.logits), std::vector<float>(one.begin() + 5 * V, one.end())));
        // A chunk longer than the window: only its newest tokens are kept; the others get no logits.
        const auto long_chunk = random_ids(12, V, 4);
        const TspOutput y = tsp.forward(long_chunk, {}, true, 0, LogitRows::All);
        CHECK(y.window.dropped == 10 + 12 - 10);
        CHECK(tsp.cache_length(0) == 10);
        CHECK(y.position_ids == std::vector<int32_t>{-1, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
        const auto rows = to_vec(y.logits);
        CHECK(std::isnan(rows[0]));
        CHECK(std::isnan(rows[size_t(V) + 7]));
        const auto tail = logits_all(*snn, std::vector<int32_t>(long_chunk.begin() + 2, long_chunk.end()));
        CHECK(bit_equal(std::vector<float>(rows.begin() + 2 * V, rows.end()), tail));
    }
}

TEST_CASE("convert: evaluate() perplexity, agreement, KL and the SNN against its QANN") {
    const auto base = load_base(gpt2_fixture("tiny-gelu-f32"));
    const int V = int(base->config().vocab_size);
    const auto text = random_ids(50, V, 77);

    const auto windows = text_windows(text, 16);
    REQUIRE(windows.size() == 4);  // 16, 16, 16, 2
    CHECK(windows[3] == std::vector<int32_t>(text.end() - 2, text.end()));
    CHECK(text_windows(std::vector<int32_t>(text.begin(), text.begin() + 49), 16).size() == 3);  // a 1-token tail is dropped
    CHECK_THROWS_AS(text_windows(text, 1), Error);

    ConvertOptions o;
    o.levels = 8, o.timesteps = 8;
    const SnnSpec spec = calibrated(base, o, 17);
    const SpikingGpt2 qann(base, spec, {RunMode::Qann, Schedule::LayerWise, SpikePath::Count, 8});
    const SpikingGpt2 snn(base, spec, {RunMode::Snn, Schedule::LayerWise, SpikePath::Spike, 8});

    // Perplexity computed here from the ANN's logits.
    double nll = 0;
    int64_t scored = 0, positions = 0;
    for (const auto& w : windows) {
        const auto L = logits_all(*base, w);
        for (size_t t = 0; t < w.size(); ++t, ++positions) {
            if (t + 1 == w.size()) continue;
            const float* row = L.data() + t * size_t(V);
            double m = -INFINITY, s = 0;
            for (int v = 0; v < V; ++v) m = std::max(m, double(row[v]));
            for (int v = 0; v < V; ++v) s += std::exp(double(row[v]) - m);
            nll += m + std::log(s) - double(row[w[t + 1]]);
            ++scored;
        }
    }
    const double ppl = std::exp(nll / double(scored));

    const Evaluation ev = evaluate(*base, &qann, &snn, windows, false);
    CHECK(ev.ann.positions == positions);
    CHECK(ev.ann.scored == scored);
    CHECK(ev.ann.agreement() == 1.0);
    CHECK(ev.ann.kl == 0.0);
    CHECK(ev.ann.perplexity() == doctest::Approx(ppl).epsilon(1e-9));
    CHECK(ev.ann.perplexity() > 1.0);
    REQUIRE(ev.qann);
    REQUIRE(ev.snn);
    CHECK(ev.snn->positions == positions);
    CHECK(ev.snn->max_abs_vs_ref == 0.0f);  // layer-wise SNN = QANN, bit for bit
    CHECK(ev.snn->nll == ev.qann->nll);
    CHECK(ev.snn->kl == ev.qann->kl);
    CHECK(ev.snn->agree == ev.qann->agree);
    CHECK(ev.qann->kl > 0.0);  // quantization moves the logits
    CHECK(ev.qann->agreement() >= 0.0);
    CHECK(ev.qann->agreement() <= 1.0);
    CHECK(std::isfinite(ev.qann->perplexity()));
    const json j = ev.snn->to_json();
    CHECK(j["positions"] == positions);
    CHECK(j["max_abs_logit_diff_vs_reference"] == 0.0);
    // The SNN's spikes: those of every window, each on a state of its own.
    SpikeStats sum;
    for (const auto& w : windows) {
        const auto ws = snn.new_state();
        chunked_logits(snn, *ws, w);
        sum.add(snn.stats(*ws));
    }
    CHECK(ev.spikes.tokens == 50);
    CHECK(ev.spikes.timesteps == 8);
    CHECK(ev.spikes.total_spikes() > 0);
    CHECK(ev.spikes.to_json(true) == sum.to_json(true));

    // The ANN as its own "QANN": the KL is really computed and is 0 (up to the f32 rounding of the
    // ANN's stored log-probabilities), agreement 1, the same perplexity.
    const Evaluation self = evaluate(*base, base.get(), nullptr, windows, false);
    REQUIRE(self.qann);
    CHECK_FALSE(self.snn);
    CHECK(self.qann->mean_kl() < 1e-6);
    CHECK(self.qann->agreement() == 1.0);
    CHECK(self.qann->perplexity() == self.ann.perplexity());
    // The streaming SNN (not exact at S = 8) is measured against the QANN.
    const SpikingGpt2 stream(base, spec, {RunMode::Snn, Schedule::Streaming, SpikePath::Spike, 8});
    const Evaluation st = evaluate(*base, &qann, &stream, windows, false);
    CHECK(st.snn->max_abs_vs_ref > 0.0f);
    // A window longer than the model's context is refused.
    CHECK_THROWS_AS(evaluate(*base, nullptr, nullptr, {random_ids(int(base->config().n_positions) + 1, V, 1)}, false), Error);
}
