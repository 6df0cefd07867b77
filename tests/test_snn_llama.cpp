// Spiking Llama on the transformers fixtures (tests/fixtures/llama: GQA 6:2 tied f32, MHA untied
// f32, GQA 8:2 bf16 in shards): float mode = the Llama forward; in the layer-wise schedule SNN
// (spike path) = SNN (count path) = QANN bit for bit, batched and chunk by chunk through the cache
// of key/value-head counts; multi-turn cached = one-shot; save -> load; refusals; the stac program
// (convert, inspect, logits, generate, eval, chat, test-conversation, bench) on a Llama SNN directory.
#include <doctest/doctest.h>

#include <fstream>
#include <functional>
#include <random>

#include "convert/convert.h"
#include "convert/temporal_spike_processor.h"
#include "core/safetensors.h"
#include "models/llama.h"
#include "models/model_dir.h"
#include "tests/helpers.h"

using namespace stac;
using namespace stac::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const char* kFixtures[] = {"tiny-gqa-tied-f32", "tiny-mha-untied-f32", "tiny-gqa-bf16-sharded"};

fs::path llama_dir(const std::string& name) { return fixtures() / "llama" / name; }
std::shared_ptr<const LanguageModel> load_llama(const std::string& name) { return LlamaModel::load(llama_dir(name)); }

SnnSpec calibrated(const std::shared_ptr<const LanguageModel>& base, ConvertOptions o, uint64_t seed) {
    o.progress = false;
    return convert_model_on(base, random_token_samples(6, 24, base->info().vocab_size, seed), o);
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A tiny random Llama with the GPT-2 tokenizer's 50,257-token vocabulary (tied head), so that the
// stac program can convert it from text and talk to it: config.json, model.safetensors in Hugging
// Face's names and [out, in] layout, vocab.json + merges.txt.
void make_llama_text_model(const fs::path& dir) {
    fs::create_directories(dir);
    LlamaConfig c;
    c.n_layer = 2, c.hidden = 8, c.n_head = 4, c.n_kv_head = 2, c.intermediate = 16, c.n_positions = 64;
    c.vocab_size = 50257, c.tie_word_embeddings = true;
    write_json_file(dir / "config.json", c.to_json());
    uint64_t seed = 3;
    auto rnd = [&](Shape s, float scale = 0.5f, float offset = 0.0f) {
        Tensor t = Tensor::empty(s, DType::F32);
        const auto v = random_floats(size_t(t.numel()), seed++, scale);
        for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = v[size_t(i)] + offset;
        return t;
    };
    const int64_t C = 8, D = 2, I = 16;
    std::vector<std::pair<std::string, Tensor>> ts = {{"model.embed_tokens.weight", rnd({50257, C})},
                                                      {"model.norm.weight", rnd({C}, 0.2f, 1.0f)}};
    for (int l = 0; l < 2; ++l) {
        const std::string p = fmt::format("model.layers.{}.", l);
        ts.insert(ts.end(), {{p + "input_layernorm.weight", rnd({C}, 0.2f, 1.0f)},
                             {p + "self_attn.q_proj.weight", rnd({4 * D, C})},
                             {p + "self_attn.k_proj.weight", rnd({2 * D, C})},
                             {p + "self_attn.v_proj.weight", rnd({2 * D, C})},
                             {p + "self_attn.o_proj.weight", rnd({C, 4 * D})},
                             {p + "post_attention_layernorm.weight", rnd({C}, 0.2f, 1.0f)},
                             {p + "mlp.gate_proj.weight", rnd({I, C})},
                             {p + "mlp.up_proj.weight", rnd({I, C})},
                             {p + "mlp.down_proj.weight", rnd({C, I})}});
    }
    save_safetensors(dir / "model.safetensors", ts, {{"format", "pt"}});
    for (const char* f : {"vocab.json", "merges.txt"}) fs::copy_file(repo_root() / "models" / "gpt2-tokenizer" / f, dir / f);
}

}  // namespace

TEST_CASE("snn-llama: float mode reproduces the Llama forward") {
    for (const char* name : kFixtures) {
        CAPTURE(name);
        const auto base = load_llama(name);
        ConvertOptions o;
        o.sites = SiteSet::none();
        const auto f = make_spiking_model(base, calibrated(base, o, 2), {RunMode::Float, Schedule::LayerWise, SpikePath::Count, 1});
        const auto ids = random_token_samples(1, 20, base->info().vocab_size, 5)[0];
        const auto a = chunked_logits(*base, ids), b = chunked_logits(*f, ids);
        CHECK(max_abs_diff(a.data(), b.data(), a.size()) <= 1e-5f);
        // With no site spiking, the QANN and the SNN are the float model too.
        const auto q = make_spiking_model(base, f->spec(), {RunMode::Qann, Schedule::LayerWise, SpikePath::Count, 8});
        const auto qa = chunked_logits(*q, ids);
        CHECK(max_abs_diff(a.data(), qa.data(), a.size()) <= 1e-5f);
    }
}

TEST_CASE("snn-llama: layer-wise SNN equals the QANN bit for bit on both paths, batched and through the cache") {
    struct Case {
        const char* model;
        bool per_channel;
        const char* sites;
        int L, S;
        bool token_scale = true;  // the Llama default
    };
    for (const Case& c : {Case{"tiny-gqa-tied-f32", true, "default", 8, 8}, Case{"tiny-gqa-tied-f32", false, "all", 4, 9},
                          Case{"tiny-mha-untied-f32", true, "all", 16, 16}, Case{"tiny-gqa-bf16-sharded", true, "default", 6, 12},
                          Case{"tiny-mha-untied-f32", true, "attn_in,mlp_in,mlp_act", 8, 8},
                          Case{"tiny-gqa-bf16-sharded", true, "attn,lm_head_in", 8, 8},
                          // Static thresholds (--token-scale off).
                          Case{"tiny-gqa-tied-f32", true, "default", 8, 8, false}, Case{"tiny-mha-untied-f32", false, "all", 6, 12, false}}) {
        CAPTURE(c.model);
        CAPTURE(c.sites);
        CAPTURE(c.token_scale);
        const auto base = load_llama(c.model);
        const int64_t V = base->info().vocab_size;
        ConvertOptions o;
        o.levels = c.L;
        o.timesteps = c.S;
        o.per_channel = c.per_channel;
        o.sites = SiteSet::parse(c.sites);
        if (!c.token_scale) o.token_scale = false;  // unset: on for a Llama
        const SnnSpec spec = calibrated(base, o, 1);
        CHECK(spec.token_scale == c.token_scale);
        CHECK(spec.architecture == "llama");
        CHECK(spec.activation == Activation::Silu);
        const auto qann = make_spiking_model(base, spec, {RunMode::Qann, Schedule::LayerWise, SpikePath::Count, c.S});
        const auto count = make_spiking_model(base, spec, {RunMode::Snn, Schedule::LayerWise, SpikePath::Count, c.S});
        const auto spike = make_spiking_model(base, spec, {RunMode::Snn, Schedule::LayerWise, SpikePath::Spike, c.S});
        const auto ids = random_token_samples(1, 21, V, 9)[0];
        const auto count_st = count->new_state(), spike_st = spike->new_state();
        const auto q = chunked_logits(*qann, ids), n = chunked_logits(*count, *count_st, ids), s = chunked_logits(*spike, *spike_st, ids);
        CHECK(max_abs_diff(q.data(), n.data(), q.size()) == 0.0f);
        CHECK(max_abs_diff(q.data(), s.data(), q.size()) == 0.0f);
        // Through the cache of key/value-head counts: SNN and QANN fed the same chunks agree bit for
        // bit; against the batched pass only float rounding of the dense ops differs.
        const auto s4 = chunked_logits(*spike, ids, 4), q4 = chunked_logits(*qann, ids, 4), n1 = chunked_logits(*count, ids, 1), q1 = chunked_logits(*qann, ids, 1);
        CHECK(max_abs_diff(q4.data(), s4.data(), q.size()) == 0.0f);
        CHECK(max_abs_diff(q1.data(), n1.data(), q.size()) == 0.0f);
        CHECK(max_abs_diff(q.data(), s4.data(), q.size()) <= 1e-4f);
        CHECK(max_abs_diff(q.data(), n1.data(), q.size()) <= 1e-4f);
        // It is not the float network: quantization changes the logits.
        const auto f = chunked_logits(*base, ids);
        CHECK(max_abs_diff(q.data(), f.data(), q.size()) > 1e-4f);
        // The spikes are real, both paths fired the same number, and telemetry is counted.
        const SpikeStats &ns = count->stats(*count_st), &ss = spike->stats(*spike_st);
        CHECK(ns.total_spikes() > 0);
        CHECK(ss.total_spikes() == ns.total_spikes());
        CHECK(ns.firing_rate() > 0.0);
        CHECK(ns.firing_rate() < 1.0);
        CHECK(ns.ann_macs > 0);
        CHECK(ns.total_synops() > 0);
        const json js = ns.to_json(true);
        bool saw_k = false;
        for (const json& site : js["sites"]) saw_k |= site["site"] == "k" && site["neurons"].get<int64_t>() > 0;
        CHECK(saw_k == SiteSet::parse(c.sites).attention());
    }
}

TEST_CASE("snn-llama: GQA keeps only the key/value heads in the count cache - S < L breaks exactness as documented") {
    const auto base = load_llama("tiny-gqa-tied-f32");  // 6 query heads, 2 key/value heads, D = 8
    ConvertOptions o;
    o.levels = 8, o.timesteps = 8;
    const SnnSpec spec = calibrated(base, o, 4);
    // Q and K/V thresholds: per head, H D = 48 and G D = 16 channels.
    CHECK(spec.site(0, SiteKind::Q).scale.size() == 48);
    CHECK(spec.site(0, SiteKind::K).scale.size() == 16);
    CHECK(spec.site(0, SiteKind::V).scale.size() == 16);
    CHECK(spec.site(1, SiteKind::AttnOut).scale.size() == 48);
    CHECK(spec.site(1, SiteKind::MlpAct).scale.size() == 128);
    CHECK_FALSE(spec.site_signed(SiteKind::Probs));
    CHECK(spec.site_signed(SiteKind::MlpAct));  // silu(g) * u is signed
    for (int64_t h = 0; h < 2; ++h)
        for (int64_t d = 1; d < 8; ++d) CHECK(spec.site(0, SiteKind::K).clip[size_t(h * 8 + d)] == spec.site(0, SiteKind::K).clip[size_t(h * 8)]);
    // At S < L the count cannot reach the top levels: the SNN differs from its QANN (what
    // calibrate_timesteps warns about), while S >= L stays exact.
    const auto ids = random_token_samples(1, 16, base->info().vocab_size, 6)[0];
    const auto q = chunked_logits(*make_spiking_model(base, spec, {RunMode::Qann, Schedule::LayerWise, SpikePath::Count, 8}), ids);
    const auto s3 = chunked_logits(*make_spiking_model(base, spec, {RunMode::Snn, Schedule::LayerWise, SpikePath::Spike, 3}), ids);
    const auto s20 = chunked_logits(*make_spiking_model(base, spec, {RunMode::Snn, Schedule::LayerWise, SpikePath::Spike, 20}), ids);
    CHECK(max_abs_diff(q.data(), s3.data(), q.size()) > 0.0f);
    CHECK(max_abs_diff(q.data(), s20.data(), q.size()) == 0.0f);
}

TEST_CASE("snn-llama: multi-turn conversation through TemporalSpikeProcessor equals one-shot") {
    const auto base = load_llama("tiny-mha-untied-f32");
    ConvertOptions o;
    o.levels = 8, o.timesteps = 8;
    const SnnSpec spec = calibrated(base, o, 8);
    std::shared_ptr<const SpikingModel> snn = make_spiking_model(base, spec, {RunMode::Snn, Schedule::LayerWise, SpikePath::Spike, 8});
    const auto qann = make_spiking_model(base, spec, {RunMode::Qann, Schedule::LayerWise, SpikePath::Count, 8});
    const auto turns = random_token_samples(3, 7, base->info().vocab_size, 12);
    std::vector<int32_t> all;
    for (const auto& t : turns) all.insert(all.end(), t.begin(), t.end());
    const int64_t V = base->info().vocab_size;
    const auto one_shot = chunked_logits(*snn, all), q_one = chunked_logits(*qann, all);
    CHECK(max_abs_diff(one_shot.data(), q_one.data(), one_shot.size()) == 0.0f);

    TemporalSpikeProcessor tsp(snn);
    size_t off = 0;
    float worst = 0;
    for (size_t k = 0; k < turns.size(); ++k) {
        const TspOutput out = tsp.forward(turns[k], {}, true, 0, LogitRows::All);
        for (size_t i = 0; i < turns[k].size(); ++i) CHECK(out.position_ids[i] == int32_t(off + i));  // positions continue
        worst = std::max(worst, max_abs_diff(out.logits.data<float>(), one_shot.data() + off * size_t(V), turns[k].size() * size_t(V)));
        CHECK(out.stats.total_spikes() > 0);
        off += turns[k].size();
    }
    CHECK(worst <= 1e-4f);
    // A second conversation runs beside it, and a reset forgets only its own.
    tsp.forward(turns[0], {}, true, 1);
    CHECK(tsp.cache_length(0) == int64_t(all.size()));
    CHECK(tsp.cache_length(1) == int64_t(turns[0].size()));
    tsp.reset_cache(1);
    CHECK(tsp.cache_length(1) == 0);
    CHECK(tsp.cache_length(0) == int64_t(all.size()));
}

TEST_CASE("snn-llama: save -> load round-trips the spec and the logits (single file and shards)") {
    for (const std::string name : {"tiny-gqa-tied-f32", "tiny-gqa-bf16-sharded"}) {
        CAPTURE(name);
        TempDir tmp;
        const fs::path src = tmp / "src", out = tmp / "snn";
        fs::create_directories(src);
        for (const auto& e : fs::directory_iterator(llama_dir(name)))
            if (!e.path().filename().string().starts_with("reference")) fs::copy_file(e.path(), src / e.path().filename());
        std::shared_ptr<const LanguageModel> base = load_language_model(src);
        ConvertOptions o;
        o.levels = 8, o.timesteps = 8, o.sites = SiteSet::parse("all");
        const SnnSpec spec = calibrated(base, o, 3);
        save_snn_model(out, src, spec);
        CHECK(is_snn_dir(out));
        const json cfg = read_json_file(out / "snn_config.json");
        CHECK(cfg["architecture"] == "llama");
        CHECK(cfg["activation"] == "silu");
        CHECK(cfg["source_model"]["sha256"] == source_weights_sha256(src));
        const LoadedSnn l = load_snn_model(out);
        CHECK(l.spec.architecture == "llama");
        CHECK(l.spec.sites == spec.sites);
        CHECK(l.spec.site(1, SiteKind::K).scale == spec.site(1, SiteKind::K).scale);
        const auto ids = random_token_samples(1, 12, base->info().vocab_size, 4)[0];
        const RunOptions r{RunMode::Snn, Schedule::LayerWise, SpikePath::Spike, 8};
        const auto mem = chunked_logits(*make_spiking_model(base, spec, r), ids), disk = chunked_logits(*l.make(r), ids);
        CHECK(max_abs_diff(mem.data(), disk.data(), mem.size()) == 0.0f);

        // The weights it was converted from are checked: a changed shard / file is refused by name.
        const std::string weights = fs::exists(out / "model.safetensors") ? "model.safetensors" : "model-00003-of-00007.safetensors";
        {
            std::fstream f(out / weights, std::ios::in | std::ios::out | std::ios::binary);
            f.seekg(-2, std::ios::end);
            const char b = char(f.get() ^ 0x40);  // flip one bit of a weight
            f.seekp(-2, std::ios::end);
            f.put(b);
        }
        const std::string err = error_of([&] { load_snn_model(out); });
        INFO(err);
        CHECK(contains(err, "is not the model this SNN was converted from"));
        // A snn_config.json that claims another architecture is refused.
        fs::remove_all(out);
        save_snn_model(out, src, spec);
        json j = read_json_file(out / "snn_config.json");
        j["architecture"] = "gpt2";
        write_json_file(out / "snn_config.json", j);
        CHECK(contains(error_of([&] { load_snn_model(out); }), "converted from a gpt2 model, but config.json describes a llama"));
        j["architecture"] = "llama";
        j["activation"] = "gelu_new";
        write_json_file(out / "snn_config.json", j);
        CHECK(contains(error_of([&] { load_snn_model(out); }), "does not fit a llama model"));
        // Token scaling is recorded; a directory from before it existed (no key) loads with it off, and
        // runs what it was converted to run: static thresholds.
        j["activation"] = "silu";
        CHECK(j["token_scale"] == true);
        CHECK(l.spec.token_scale);
        j.erase("token_scale");
        write_json_file(out / "snn_config.json", j);
        const LoadedSnn old = load_snn_model(out);
        CHECK_FALSE(old.spec.token_scale);
        const auto stat = chunked_logits(*old.make(r), ids);
        CHECK(max_abs_diff(mem.data(), stat.data(), mem.size()) > 0.0f);
        j["token_scale"] = "yes";
        write_json_file(out / "snn_config.json", j);
        CHECK(contains(error_of([&] { load_snn_model(out); }), "\"token_scale\" must be true or false"));
    }
}

TEST_CASE("snn-llama: what is not built for Llama is refused by name") {
    const auto base = load_llama("tiny-gqa-tied-f32");
    ConvertOptions o;
    o.progress = false;
    const SnnSpec spec = calibrated(base, o, 5);
    const auto data = random_token_samples(2, 8, base->info().vocab_size, 1);
    CHECK(contains(error_of([&] { make_spiking_model(base, spec, {RunMode::Snn, Schedule::Streaming, SpikePath::Spike, 8}); }),
                   "streaming schedule is not built for Llama"));
    ConvertOptions s = o;
    s.schedule = Schedule::Streaming;
    CHECK(contains(error_of([&] { convert_model_on(base, data, s); }), "streaming schedule is not built for llama"));
    ConvertOptions r = o;
    r.activation = Activation::Relu;
    CHECK(contains(error_of([&] { convert_model_on(base, data, r); }), "SiLU gate"));
    ConvertOptions simp = o;
    simp.simplified = true;
    CHECK(contains(error_of([&] { convert_model(base, nullptr, simp); }), "--simplified"));
    CHECK(contains(error_of([&] { convert_model(base, nullptr, o); }), "calibration needs the model's tokenizer"));
    // The architectures do not mix.
    const std::shared_ptr<const LanguageModel> gpt2 = Gpt2Model::load(gpt2_fixture("tiny-gelu-f32"));
    CHECK(contains(error_of([&] { SpikingGpt2(base, spec); }), "not a GPT-2"));
    CHECK(contains(error_of([&] { SpikingLlama(gpt2, spec); }), "not a Llama"));
    CHECK(contains(error_of([&] { make_spiking_model(load_llama("tiny-mha-untied-f32"), spec); }), "thresholds"));
    // A state made for the float caches cannot be used after switching to counts.
    auto m = make_spiking_model(base, spec, {RunMode::Float, Schedule::LayerWise, SpikePath::Count, 8});
    auto st = m->new_state(8);
    m->set_run_options({RunMode::Snn, Schedule::LayerWise, SpikePath::Spike, 8});
    const std::vector<int32_t> ids = {1, 2};
    CHECK(contains(error_of([&] { m->forward(ids, *st, LogitRows::None, Tensor()); }), "make a new state"));
    CHECK(contains(error_of([&] { m->new_state(65); }), "max_position_embeddings"));
    // A spiking Llama runs on the CPU only: a GPU is refused by name, with or without one present.
    CHECK(m->device() == Device::cpu());
    CHECK(m->to(Device::cpu())->device() == Device::cpu());
    CHECK(contains(error_of([&] { m->to(Device::cuda(0)); }), "runs on the CPU only"));
}

TEST_CASE("snn-llama: the stac program converts a Llama and runs logits, generate, eval, chat, test-conversation, bench on it") {
    TempDir tmp;
    const fs::path src = tmp / "llama", snn = tmp / "snn";
    make_llama_text_model(src);
    CliRun r = run_stac({"convert", "--model", src.string(), "--out", snn.string(), "--num-samples", "8", "--max-length", "32",
                         "--levels", "8", "--timesteps", "8"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    CHECK(contains(r.out, "max |logit diff| = 0"));
    const json cfg = read_json_file(snn / "snn_config.json");
    CHECK(cfg["architecture"] == "llama");
    CHECK(cfg["calibration"]["samples"] == 8);

    // inspect describes the float Llama and its SNN.
    r = run_stac({"inspect", "--model", snn.string(), "--json"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    const json ins = json::parse(r.out);
    CHECK(ins["architecture"] == "llama");
    CHECK(ins["n_kv_head"] == 2);
    CHECK(ins["parameters"] == 50257 * 8 + 8 + 2 * (8 + 8 * 8 + 2 * 4 * 8 + 8 * 8 + 8 + 3 * 16 * 8));
    CHECK(ins["snn"]["levels"] == 8);
    CHECK(ins["snn"]["activation"] == "silu");
    CHECK(ins["snn"]["token_scale"] == true);  // the Llama default
    CHECK(ins["file_bytes"].get<int64_t>() == int64_t(fs::file_size(snn / "model.safetensors")));
    r = run_stac({"inspect", "--model", src.string()});
    INFO(r.err);
    CHECK(r.rc == 0);
    CHECK(contains(r.out, "4 query heads over 2 key/value heads"));

    // logits: the SNN on both paths equals its QANN; the float directory gives the float model.
    auto logits = [&](std::vector<std::string> extra) {
        std::vector<std::string> a = {"logits", "--model", snn.string(), "--ids", "464,2068,7586,21831,18045"};
        a.insert(a.end(), extra.begin(), extra.end());
        const CliRun x = run_stac(a);
        INFO(x.err);
        REQUIRE(x.rc == 0);
        return json::parse(x.out)["logits"].get<std::vector<std::vector<float>>>();
    };
    const auto spike = logits({}), count = logits({"--path", "count"}), qann = logits({"--qann"}), inc = logits({"--incremental"});
    CHECK(spike == qann);
    CHECK(count == qann);
    for (size_t t = 0; t < spike.size(); ++t) CHECK(max_abs_diff(spike[t].data(), inc[t].data(), spike[t].size()) <= 1e-4f);
    r = run_stac({"logits", "--model", snn.string(), "--ids", "1,2", "--schedule", "streaming"});
    CHECK(r.rc != 0);
    CHECK(contains(r.err, "streaming schedule is not built for Llama"));
    r = run_stac({"logits", "--model", snn.string(), "--ids", "1,2", "--device", "cuda"});
    CHECK(r.rc != 0);
    CHECK(contains(r.err, "runs on the CPU only"));

    r = run_stac({"generate", "--model", snn.string(), "--prompt", "Once upon a time", "--max-new-tokens", "5", "--temperature", "0"});
    INFO(r.err);
    CHECK(r.rc == 0);

    const fs::path text = tmp / "text.txt", out_json = tmp / "eval.json";
    std::ofstream(text) << "The little town sat at the bottom of a green valley, where two rivers met and the road to the "
                           "coast began. Every morning the baker opened his shop before sunrise, and the smell of fresh "
                           "bread drifted down the main street.\n";
    r = run_stac({"eval", "--model", snn.string(), "--text", text.string(), "--json", out_json.string(), "--quiet"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    const json ev = read_json_file(out_json);
    CHECK(ev["snn_result"]["max_abs_logit_diff_vs_reference"] == 0.0);
    CHECK(ev["snn_result"]["perplexity"] == ev["qann"]["perplexity"]);
    CHECK(ev["spikes"]["spikes"].get<int64_t>() > 0);
    // --sweep runs the layer-wise grid only (no streaming rows for Llama).
    r = run_stac({"eval", "--model", snn.string(), "--text", text.string(), "--max-tokens", "16", "--sweep", "--levels-list", "4",
                  "--json", out_json.string(), "--quiet"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    CHECK(read_json_file(out_json)["sweep"].size() == 3);
    r = run_stac({"eval", "--model", snn.string(), "--text", text.string(), "--device", "cuda", "--quiet"});
    CHECK(r.rc != 0);
    CHECK(contains(r.err, "runs on the CPU only"));

    r = run_stac({"chat", "--model", snn.string(), "--max-new-tokens", "3", "--temperature", "0"}, "Hello\nHow are you?\n");
    INFO(r.err);
    CHECK(r.rc == 0);

    r = run_stac({"test-conversation", "--model", snn.string()});
    INFO(r.out);
    CHECK(r.rc == 0);
    CHECK(contains(r.out, " 0 failed"));
    r = run_stac({"test-conversation", "--model", src.string()});  // a float Llama: an in-memory calibrated conversion
    INFO(r.out);
    CHECK(r.rc == 0);
    CHECK(contains(r.out, "calibrated on pseudo-random ids"));

    r = run_stac({"convert", "--model", src.string(), "--out", (tmp / "no").string(), "--simplified"});
    CHECK(r.rc == 1);
    CHECK(contains(r.err, "--simplified"));
    r = run_stac({"convert", "--model", src.string(), "--out", (tmp / "no").string(), "--activation", "relu"});
    CHECK(r.rc == 1);
    CHECK(contains(r.err, "SiLU gate"));
    // bench: the float Llama, its QANN and SNN; bf16 matrices are a GPT-2 option (left out by
    // default, refused when asked for).
    r = run_stac({"bench", "--model", snn.string(), "--runs", "ann-f32,qann,snn-count,snn-spike", "--tests", "pp8,tg2",
                  "--threads-list", "1", "--timesteps", "8", "--warmup", "0", "--repeats", "1", "--json", "-", "--quiet"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    const json b = json::parse(r.out);
    CHECK(b["model"]["architecture"] == "llama");
    CHECK(b["model"]["n_head"] == 4);
    CHECK(b["results"].size() == 4 * 2);
    for (const json& x : b["results"]) CHECK(x["tokens_per_s"]["median"].get<double>() > 0);
    r = run_stac({"bench", "--model", src.string(), "--tests", "pp4", "--threads-list", "1", "--timesteps", "8", "--warmup", "0",
                  "--repeats", "1", "--json", "-", "--quiet"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    CHECK(json::parse(r.out)["results"].size() == 4);  // ann-f32, qann, snn-count, snn-spike: no ann-bf16
    r = run_stac({"bench", "--model", src.string(), "--runs", "ann-bf16", "--tests", "pp4"});
    CHECK(r.rc == 2);
    CHECK(contains(r.err, "GPT-2 option"));

    // Re-timing a Llama SNN directory keeps it a Llama SNN.
    r = run_stac({"convert", "--model", snn.string(), "--out", (tmp / "snn4").string(), "--timesteps", "4", "--quiet"});
    INFO(r.err);
    CHECK(r.rc == 0);
    CHECK(read_json_file(tmp / "snn4" / "snn_config.json")["levels"] == 4);
    CHECK(load_snn_model(tmp / "snn4").spec.architecture == "llama");
}
