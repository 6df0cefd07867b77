#include "convert/convert.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/json_file.h"
#include "core/progress.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "models/model_dir.h"

namespace stac {

namespace fs = std::filesystem;
using nlohmann::json;

std::string activation_name(Activation a) {
    switch (a) {
        case Activation::GeluTanh: return "gelu_new";
        case Activation::GeluErf: return "gelu";
        case Activation::Relu: return "relu";
        case Activation::Silu: return "silu";
    }
    return "?";
}

namespace {

Activation activation_from(const std::string& name, const std::string& source) {
    if (name == "gelu_new" || name == "gelu_pytorch_tanh") return Activation::GeluTanh;
    if (name == "gelu") return Activation::GeluErf;
    if (name == "relu") return Activation::Relu;
    if (name == "silu") return Activation::Silu;
    fail("{}: activation \"{}\" is not one of gelu_new, gelu, relu, silu", source, name);
}

void check_options(const ConvertOptions& o) {
    if (o.levels < 1 || o.levels > spiking_max_levels())
        fail("--levels {} is out of range [1, {}] (counts are int8)", o.levels, spiking_max_levels());
    if (o.timesteps < 1 || o.timesteps > 4096) fail("--timesteps {} is out of range [1, 4096]", o.timesteps);
    if (!(o.percentile > 0.0f && o.percentile <= 100.0f)) fail("--percentile {} must be in (0, 100]", o.percentile);
    if (o.schedule == Schedule::Streaming && !o.sites.attention())
        fail("the streaming schedule needs the attention sites (q, k, v, probs)");
}

// A spec with everything but the thresholds.
SnnSpec empty_spec(const SiteLayout& layout, const ConvertOptions& opt) {
    SnnSpec s;
    s.architecture = layout.architecture;
    s.timesteps = opt.timesteps;
    s.levels = opt.levels;
    s.schedule = opt.schedule;
    s.activation = opt.activation.value_or(layout.activation);
    s.per_channel = opt.per_channel;
    s.percentile = opt.percentile;
    s.simplified = opt.simplified;
    s.sites = opt.sites;
    s.token_scale = opt.token_scale.value_or(layout.architecture == "llama");
    if (s.token_scale && s.schedule == Schedule::Streaming)
        fail("token scaling needs the layer-wise schedule (a token's factor needs its whole input first): use "
             "--token-scale off with --schedule streaming");
    s.layers.resize(size_t(layout.n_layer));
    return s;
}

// Per-head: the head's D channels share the largest clip (Q, K, V thresholds are per head, so the
// attention products stay integer).
void share_per_head(std::vector<float>& clip, int64_t D) {
    for (size_t h = 0; h < clip.size(); h += size_t(D)) {
        float m = 0;
        for (size_t d = 0; d < size_t(D); ++d) m = std::max(m, clip[h + d]);
        for (size_t d = 0; d < size_t(D); ++d) clip[h + d] = m;
    }
}

bool is_qkv(SiteKind k) { return k == SiteKind::Q || k == SiteKind::K || k == SiteKind::V; }

void finish_site(SnnSpec& s, SiteQuant& q, SiteKind k) {
    // A channel calibration never saw away from 0 (a ReLU unit that never fires, say) has clip 0;
    // any positive threshold keeps it silent on such inputs. It gets the site's largest clip (or 1
    // when the whole site saw only zeros), so every threshold is positive and finite.
    float largest = 0;
    for (float c : q.clip)
        if (std::isfinite(c)) largest = std::max(largest, c);
    for (float& c : q.clip)
        if (!(c > 0) || !std::isfinite(c)) c = largest > 0 ? largest : 1.0f;
    q.kind = k;
    q.is_signed = s.site_signed(k);
    q.set_levels(s.levels);
}

}  // namespace

SnnSpec spec_from_calibration(const SiteLayout& layout, const Calibrator& cal, const ConvertOptions& opt) {
    SnnSpec s = empty_spec(layout, opt);
    const int64_t D = layout.head_dim;
    auto fill = [&](int l, SiteKind k) {
        if (!s.sites.has(k)) return;
        if (!cal.seen(l, k)) fail("calibration saw nothing at site {} of layer {}", site_name(k), l);
        const SiteStats& st = cal.stats(l, k);
        SiteQuant& q = s.site(l, k);
        if (opt.per_channel && k != SiteKind::Probs) {
            if (is_qkv(k)) {
                // Merge each head's channel histograms, so the head threshold is a percentile of the head.
                q.clip.assign(st.channels.size(), 0.0f);
                for (size_t h = 0; h < st.channels.size(); h += size_t(D)) {
                    AbsHistogram merged = st.channels[h];
                    for (size_t d = 1; d < size_t(D); ++d) merged.merge(st.channels[h + d]);
                    const float c = merged.percentile(opt.percentile);
                    for (size_t d = 0; d < size_t(D); ++d) q.clip[h + d] = c;
                }
            } else {
                for (const AbsHistogram& ch : st.channels) q.clip.push_back(ch.percentile(opt.percentile));
            }
        } else {
            q.clip = {st.tensor.percentile(opt.percentile)};
        }
        finish_site(s, q, k);
    };
    for (int l = 0; l < int(layout.n_layer); ++l)
        for (SiteKind k : kBlockSites) fill(l, k);
    fill(-1, SiteKind::LmHeadIn);
    return s;
}

SnnSpec simplified_spec(const Gpt2Model& base, const ConvertOptions& opt) {
    const Gpt2Config& cfg = base.config();
    const Gpt2Weights& W = base.weights();
    SnnSpec s = empty_spec(site_layout(base), opt);
    const int64_t C = cfg.n_embd, I = cfg.inner(), D = cfg.head_dim();
    // A LayerNorm output is g * z + b with z ~ N(0, 1): clip at 3 sigma.
    auto ln_clip = [&](const Tensor& g, const Tensor& b) {
        std::vector<float> c(static_cast<size_t>(g.numel()));
        for (int64_t i = 0; i < g.numel(); ++i) c[size_t(i)] = 3.0f * std::fabs(g.data<float>()[i]) + std::fabs(b.data<float>()[i]);
        return c;
    };
    // A projection of that output: |mean| + 3 sigma per output column.
    auto proj_clip = [&](const Tensor& g, const Tensor& bln, const Tensor& w, const Tensor& bias) {
        const int64_t K = w.dim(0), N = w.dim(1);
        std::vector<float> c(static_cast<size_t>(N));
        for (int64_t j = 0; j < N; ++j) {
            double mean = bias.data<float>()[j], var = 0;
            for (int64_t i = 0; i < K; ++i) {
                const double wij = w.data<float>()[i * N + j];
                mean += wij * bln.data<float>()[i];
                var += wij * wij * double(g.data<float>()[i]) * g.data<float>()[i];
            }
            c[size_t(j)] = float(std::fabs(mean) + 3.0 * std::sqrt(var));
        }
        return c;
    };
    auto set = [&](int l, SiteKind k, std::vector<float> clip) {
        if (!s.sites.has(k)) return;
        if (!opt.per_channel || k == SiteKind::Probs) clip = {*std::max_element(clip.begin(), clip.end())};
        else if (is_qkv(k)) share_per_head(clip, D);
        SiteQuant& q = s.site(l, k);
        q.clip = std::move(clip);
        finish_site(s, q, k);
    };
    for (int l = 0; l < int(cfg.n_layer); ++l) {
        const Gpt2Layer& w = W.layers[size_t(l)];
        const std::vector<float> qkv = proj_clip(w.ln1_g, w.ln1_b, w.attn_w, w.attn_b);
        const std::vector<float> q(qkv.begin(), qkv.begin() + C), k(qkv.begin() + C, qkv.begin() + 2 * C),
            v(qkv.begin() + 2 * C, qkv.end());
        set(l, SiteKind::AttnIn, ln_clip(w.ln1_g, w.ln1_b));
        set(l, SiteKind::Q, q);
        set(l, SiteKind::K, k);
        set(l, SiteKind::V, v);
        set(l, SiteKind::Probs, {1.0f});
        set(l, SiteKind::AttnOut, v);  // a convex combination of value rows
        set(l, SiteKind::MlpIn, ln_clip(w.ln2_g, w.ln2_b));
        set(l, SiteKind::MlpAct, proj_clip(w.ln2_g, w.ln2_b, w.fc_w, w.fc_b));
        (void)I;
    }
    set(-1, SiteKind::LmHeadIn, ln_clip(W.lnf_g, W.lnf_b));
    s.calibration = {{"source", "simplified (thresholds from the weights, no data)"}};
    return s;
}

namespace {
// What a conversion of this architecture cannot do, refused by name.
void check_options_for(const SiteLayout& layout, const ConvertOptions& opt) {
    if (layout.architecture == "gpt2") return;
    if (opt.simplified)
        fail("--simplified estimates thresholds from LayerNorm gains and biases (GPT-2 only); convert this {} model "
             "with calibration data",
             layout.architecture);
    if (opt.activation && *opt.activation != layout.activation)
        fail("--activation {}: a {} model's MLP is a SiLU gate, kept as it is (only GPT-2's GELU can become ReLU)",
             activation_name(*opt.activation), layout.architecture);
    if (opt.schedule == Schedule::Streaming)
        fail("the streaming schedule is not built for {} models (use --schedule layerwise)", layout.architecture);
}
}  // namespace

SnnSpec convert_model(const std::shared_ptr<const LanguageModel>& base, const Tokenizer* tok, const ConvertOptions& opt) {
    check_options(opt);
    const SiteLayout layout = site_layout(*base);
    check_options_for(layout, opt);
    if (opt.simplified) return simplified_spec(dynamic_cast<const Gpt2Model&>(*base), opt);
    if (!tok)
        fail("calibration needs the model's tokenizer (vocab.json + merges.txt, or tokenizer.json); {}",
             layout.architecture == "gpt2" ? "convert with --simplified to go without data"
                                           : "or calibrate from token ids (convert_model_on)");
    const auto data = create_calibration_data(*tok, opt.calib_file, opt.num_samples,
                                              int(std::min<int64_t>(opt.max_length, layout.n_positions)));
    SnnSpec s = convert_model_on(base, data, opt);
    s.calibration["builtin_prompts"] = builtin_calibration_prompts().size();
    s.calibration["builtin_chat"] = chat_format_for(*tok) == ChatFormat::ChatML;  // the prompts again as ChatML conversations
    s.calibration["file"] = opt.calib_file ? json(opt.calib_file->string()) : json(nullptr);
    return s;
}

SnnSpec convert_model_on(const std::shared_ptr<const LanguageModel>& base, const std::vector<std::vector<int32_t>>& data,
                         const ConvertOptions& opt) {
    check_options(opt);
    const SiteLayout layout = site_layout(*base);
    check_options_for(layout, opt);
    if (data.empty()) fail("calibration: no samples");
    // Run the float network (with the chosen activation) and watch every site.
    ConvertOptions none = opt;
    none.sites = SiteSet::none();
    const auto ann = make_spiking_model(base, empty_spec(layout, none), RunOptions{RunMode::Float, Schedule::LayerWise, SpikePath::Count, 1});
    Calibrator cal(int(layout.n_layer), opt.per_channel);
    Progress bar("calibrating", int64_t(data.size()), opt.progress);
    for (size_t i = 0; i < data.size(); ++i) {
        if (int64_t(data[i].size()) > layout.n_positions)
            fail("calibration sample {} has {} tokens, more than n_positions = {}", i, data[i].size(), layout.n_positions);
        auto st = ann->new_state(int64_t(data[i].size()));
        ann->set_observer(*st, &cal);
        ann->forward(data[i], *st, LogitRows::None, Tensor());
        cal.tokens += data[i].size();
        bar.update(int64_t(i + 1));
    }
    bar.finish();
    SnnSpec s = spec_from_calibration(layout, cal, opt);
    s.calibration = {{"samples", data.size()}, {"tokens", cal.tokens}, {"max_length", opt.max_length}};
    return s;
}

void set_levels(SnnSpec& spec, int levels) {
    if (levels < 1 || levels > spiking_max_levels()) fail("levels {} out of range [1, {}]", levels, spiking_max_levels());
    spec.levels = levels;
    for (auto& layer : spec.layers)
        for (SiteQuant& q : layer)
            if (!q.clip.empty()) q.set_levels(levels);
    if (!spec.lm_head_in.clip.empty()) spec.lm_head_in.set_levels(levels);
    spec.timesteps = std::max(spec.timesteps, levels);
}

std::string calibrate_timesteps(SnnSpec& spec, int timesteps) {
    if (timesteps < 1 || timesteps > 4096) fail("timesteps {} out of range [1, 4096]", timesteps);
    std::string note;
    if (timesteps < spec.levels) {
        note = fmt::format(
            "S = {} < L = {}: levels reduced to {} so that the spike counts still reach them; every threshold grows "
            "by {:.3g}x (coarser quantization, lower fidelity)",
            timesteps, spec.levels, timesteps, double(spec.levels) / timesteps);
        set_levels(spec, timesteps);
    }
    spec.timesteps = timesteps;
    return note;
}

// ---------------------------------------------------------------- SNN directories

namespace {

const char* kSnnConfig = "snn_config.json";
const char* kSnnWeights = "snn.safetensors";

std::string site_key(int layer, SiteKind k) {
    return layer < 0 ? std::string(site_name(k)) : fmt::format("h.{}.{}", layer, site_name(k));
}

// The weight files of a model directory: model.safetensors, or the index of a sharded checkpoint
// and its shards (from its weight_map).
std::vector<std::string> weight_files(const fs::path& dir) {
    if (fs::exists(dir / "model.safetensors")) return {"model.safetensors"};
    const fs::path index = dir / "model.safetensors.index.json";
    if (!fs::exists(index)) fail("{}: has neither model.safetensors nor model.safetensors.index.json", dir.string());
    const json j = read_json_file(index);
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
        fail("{}: has no \"weight_map\" object", index.string());
    std::set<std::string> shards;
    for (const auto& [name, file] : j["weight_map"].items()) {
        if (!file.is_string()) fail("{}: weight_map[\"{}\"] is not a file name", index.string(), name);
        const std::string f = file.get<std::string>();
        if (f.empty() || f.find('/') != std::string::npos || f.find('\\') != std::string::npos || f == "." || f == "..")
            fail("{}: shard name \"{}\" is not a plain file name", index.string(), f);
        shards.insert(f);
    }
    std::vector<std::string> out = {"model.safetensors.index.json"};
    out.insert(out.end(), shards.begin(), shards.end());
    return out;
}

}  // namespace

bool is_snn_dir(const fs::path& dir) { return fs::exists(dir / kSnnConfig); }

std::string source_weights_sha256(const fs::path& dir) {
    const std::vector<std::string> files = weight_files(dir);
    if (files.size() == 1) return sha256_file(dir / files[0]);
    std::string all;  // "name sha256\n" of the index and every shard, in order
    for (const std::string& f : files) all += f + " " + sha256_file(dir / f) + "\n";
    return sha256_hex(all);
}

void save_snn_model(const fs::path& out_dir, const fs::path& source_dir, const SnnSpec& spec) {
    if (spec.token_scale && spec.schedule == Schedule::Streaming)
        fail("a token-scaled SNN cannot run the streaming schedule (a token's factor needs its whole input first); keep "
             "--schedule layerwise");
    std::error_code ec;
    if (fs::exists(out_dir, ec)) {
        if (!fs::is_directory(out_dir)) fail("{}: exists and is not a directory", out_dir.string());
        const bool empty = fs::is_empty(out_dir);
        if (!empty && !is_snn_dir(out_dir))
            fail("{}: exists and is not an SNN directory; refusing to write into it", out_dir.string());
    }
    fs::create_directories(out_dir, ec);
    if (ec) fail("{}: cannot create: {}", out_dir.string(), ec.message());
    if (fs::equivalent(out_dir, source_dir, ec)) fail("--out must differ from the source model directory");
    // Copies, not hard links: an edit in one directory must never change the other.
    std::vector<std::string> files = weight_files(source_dir);
    for (const char* f : {"config.json", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                          "special_tokens_map.json", "generation_config.json"})
        files.emplace_back(f);
    for (const std::string& f : files) {
        const fs::path src = source_dir / f;
        if (!fs::exists(src)) continue;
        fs::copy_file(src, out_dir / f, fs::copy_options::overwrite_existing, ec);
        if (ec) fail("{}: cannot copy {}: {}", out_dir.string(), src.string(), ec.message());
    }

    std::vector<std::pair<std::string, Tensor>> ts;
    auto add = [&](int l, SiteKind k) {
        if (!spec.sites.has(k)) return;
        const SiteQuant& q = spec.site(l, k);
        Tensor clip = Tensor::empty({int64_t(q.clip.size())}, DType::F32), thr = Tensor::empty({int64_t(q.scale.size())}, DType::F32);
        std::copy(q.clip.begin(), q.clip.end(), clip.data<float>());
        std::copy(q.scale.begin(), q.scale.end(), thr.data<float>());
        ts.emplace_back(site_key(l, k) + ".clip", clip);
        ts.emplace_back(site_key(l, k) + ".threshold", thr);
    };
    for (int l = 0; l < int(spec.layers.size()); ++l)
        for (SiteKind k : kBlockSites) add(l, k);
    add(-1, SiteKind::LmHeadIn);
    save_safetensors(out_dir / kSnnWeights, ts, {{"format", "stac-snn"}});

    std::vector<std::string> sites;
    for (int k = 0; k < kSiteKinds; ++k)
        if (spec.sites.has(SiteKind(k))) sites.emplace_back(site_name(SiteKind(k)));
    const std::vector<std::string> wf = weight_files(out_dir);
    const json cfg = {{"format", "stac-snn"},
                      {"version", 1},
                      {"architecture", spec.architecture},
                      {"timesteps", spec.timesteps},
                      {"levels", spec.levels},
                      {"schedule", std::string(schedule_name(spec.schedule))},
                      {"activation", activation_name(spec.activation)},
                      {"granularity", spec.per_channel ? "channel" : "tensor"},
                      {"percentile", spec.percentile},
                      {"sites", sites},
                      {"token_scale", spec.token_scale},
                      {"simplified", spec.simplified},
                      {"n_layer", spec.layers.size()},
                      {"calibration", spec.calibration},
                      {"source_model", {{"file", wf[0]}, {"sha256", source_weights_sha256(out_dir)}}},
                      {"created_by", "stac 0.1.0"}};
    write_json_file(out_dir / kSnnConfig, cfg);
}

LoadedSnn load_snn_model(const fs::path& dir) {
    const fs::path cfg_path = dir / kSnnConfig;
    const std::string src = cfg_path.string();
    const json j = read_json_file(cfg_path);
    auto need = [&](const char* key, auto check, const char* what) -> const json& {
        if (!j.contains(key)) fail("{}: missing \"{}\"", src, key);
        if (!check(j[key])) fail("{}: \"{}\" must be {}, found {}", src, key, what, j[key].dump());
        return j[key];
    };
    auto is_int = [](const json& v) { return v.is_number_integer(); };
    auto is_str = [](const json& v) { return v.is_string(); };
    if (!j.is_object()) fail("{}: expected a JSON object", src);
    if (need("format", is_str, "a string") != "stac-snn") fail("{}: format is {}, expected \"stac-snn\"", src, j["format"].dump());
    if (need("version", is_int, "an integer") != 1) fail("{}: version {} is not supported (1)", src, j["version"].dump());

    LoadedSnn out;
    out.base = load_language_model(dir);
    const SiteLayout layout = site_layout(*out.base);
    SnnSpec& s = out.spec;
    // Written since Llama support; SNN directories from before are GPT-2's.
    s.architecture = j.contains("architecture") ? need("architecture", is_str, "a string").get<std::string>() : "gpt2";
    if (s.architecture != layout.architecture)
        fail("{}: converted from a {} model, but config.json describes a {}", src, s.architecture, layout.architecture);
    s.timesteps = need("timesteps", is_int, "an integer").get<int>();
    s.levels = need("levels", is_int, "an integer").get<int>();
    if (s.levels < 1 || s.levels > spiking_max_levels()) fail("{}: levels {} out of range [1, {}]", src, s.levels, spiking_max_levels());
    if (s.timesteps < 1 || s.timesteps > 4096) fail("{}: timesteps {} out of range [1, 4096]", src, s.timesteps);
    try {
        s.schedule = schedule_from_name(need("schedule", is_str, "a string").get<std::string>());
    } catch (const Error& e) {
        fail("{}: {}", src, e.what());
    }
    s.activation = activation_from(need("activation", is_str, "a string").get<std::string>(), src);
    const std::string gran = need("granularity", is_str, "a string");
    if (gran != "channel" && gran != "tensor") fail("{}: granularity \"{}\" is not channel or tensor", src, gran);
    s.per_channel = gran == "channel";
    s.percentile = need("percentile", [](const json& v) { return v.is_number(); }, "a number").get<float>();
    s.simplified = need("simplified", [](const json& v) { return v.is_boolean(); }, "true or false").get<bool>();
    // Written since token scaling exists; SNN directories from before have none.
    s.token_scale = j.contains("token_scale") && need("token_scale", [](const json& v) { return v.is_boolean(); }, "true or false").get<bool>();
    if (s.token_scale && s.schedule == Schedule::Streaming)
        fail("{}: a token-scaled SNN cannot default to the streaming schedule", src);
    const json& sites = need("sites", [](const json& v) { return v.is_array(); }, "an array of site names");
    std::string list;
    for (const json& n : sites) {
        if (!n.is_string()) fail("{}: site names must be strings, found {}", src, n.dump());
        if (!list.empty()) list += ',';
        list += n.get<std::string>();
    }
    try {
        s.sites = list.empty() ? SiteSet::none() : SiteSet::parse(list);
    } catch (const Error& e) {
        fail("{}: {}", src, e.what());
    }
    if (need("n_layer", is_int, "an integer") != layout.n_layer)
        fail("{}: n_layer {} does not match config.json ({})", src, j["n_layer"].dump(), layout.n_layer);
    if ((s.architecture == "llama") != (s.activation == Activation::Silu))
        fail("{}: activation {} does not fit a {} model", src, activation_name(s.activation), s.architecture);
    if (j.contains("calibration")) s.calibration = j["calibration"];
    const json& sm = need("source_model", [](const json& v) { return v.is_object(); }, "an object");
    if (!sm.contains("sha256") || !sm["sha256"].is_string()) fail("{}: source_model has no sha256", src);
    const std::string have = source_weights_sha256(dir);
    if (have != sm["sha256"].get<std::string>())
        fail("{}: {} (sha256 {}) is not the model this SNN was converted from (sha256 {})", dir.string(),
             weight_files(dir)[0], have.substr(0, 16), sm["sha256"].get<std::string>().substr(0, 16));

    // Thresholds: every enabled site has clip and threshold of the right width; nothing else.
    const fs::path wpath = dir / kSnnWeights;
    const SafetensorsFile f = SafetensorsFile::open(wpath);
    std::set<std::string> expected;
    s.layers.resize(size_t(layout.n_layer));
    auto load = [&](int l, SiteKind k) {
        if (!s.sites.has(k)) return;
        const int64_t width = layout.width[size_t(k)];
        SiteQuant& q = s.site(l, k);
        const std::string key = site_key(l, k);
        for (const char* part : {".clip", ".threshold"}) {
            const std::string name = key + part;
            expected.insert(name);
            const SafetensorsEntry* e = f.find(name);
            if (!e) fail("{}: missing tensor {}", wpath.string(), name);
            if (e->dtype_name != "F32") fail("{}: tensor {} has dtype {}, expected F32", wpath.string(), name, e->dtype_name);
            const bool ok_shape = e->shape.size() == 1 && (e->shape[0] == 1 || (e->shape[0] == width && k != SiteKind::Probs));
            if (!ok_shape)
                fail("{}: tensor {} has shape {}, expected [1]{}", wpath.string(), name, e->shape_str(),
                     k == SiteKind::Probs ? "" : fmt::format(" or [{}]", width));
            const Tensor t = f.tensor(name);
            std::vector<float> v(t.data<float>(), t.data<float>() + t.numel());
            for (float x : v)
                if (!(x > 0.0f) || !std::isfinite(x))
                    fail("{}: tensor {} holds {}, thresholds must be positive and finite", wpath.string(), name, x);
            if (std::string(part) == ".clip") q.clip = std::move(v);
            else q.scale = std::move(v);
        }
        if (q.scale.size() != q.clip.size())
            fail("{}: {}.clip and {}.threshold differ in shape", wpath.string(), key, key);
        const std::vector<float> stored = q.scale;
        finish_site(s, q, k);
        for (size_t i = 0; i < stored.size(); ++i)
            if (std::fabs(stored[i] - q.scale[i]) > 1e-6f * q.scale[i])
                fail("{}: {}.threshold[{}] = {} is not clip / levels = {}", wpath.string(), key, i, stored[i], q.scale[i]);
        if (is_qkv(k) && q.clip.size() > 1)
            for (size_t i = 0; i < q.clip.size(); ++i)
                if (q.clip[i] != q.clip[i - i % size_t(layout.head_dim)])
                    fail("{}: {}.clip is not constant within each head (per-head thresholds)", wpath.string(), key);
    };
    for (int l = 0; l < int(layout.n_layer); ++l)
        for (SiteKind k : kBlockSites) load(l, k);
    load(-1, SiteKind::LmHeadIn);
    for (const auto& e : f.entries())
        if (!expected.count(e.name)) fail("{}: unexpected tensor {}", wpath.string(), e.name);
    return out;
}

}  // namespace stac
