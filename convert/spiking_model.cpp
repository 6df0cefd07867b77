#include "convert/spiking_model.h"

#include <algorithm>
#include <cmath>

#include "convert/spiking_gpt2.h"
#include "convert/spiking_layerwise.h"
#include "convert/spiking_llama.h"
#include "kernels/kernels.h"
#include "kernels/spiking.h"

namespace stac {

int spiking_max_levels() { return 127; }

// ---------------------------------------------------------------- names

std::string_view run_mode_name(RunMode m) {
    return m == RunMode::Float ? "float" : m == RunMode::Qann ? "qann" : "snn";
}
std::string_view schedule_name(Schedule s) { return s == Schedule::LayerWise ? "layerwise" : "streaming"; }
std::string_view spike_path_name(SpikePath p) { return p == SpikePath::Spike ? "spike" : "count"; }

Schedule schedule_from_name(std::string_view s) {
    if (s == "layerwise" || s == "layer-wise") return Schedule::LayerWise;
    if (s == "streaming") return Schedule::Streaming;
    fail("unknown schedule '{}' (layerwise or streaming)", s);
}

SpikePath spike_path_from_name(std::string_view s) {
    if (s == "spike") return SpikePath::Spike;
    if (s == "count") return SpikePath::Count;
    fail("unknown path '{}' (spike or count)", s);
}

bool SnnSpec::site_signed(SiteKind k) const {
    if (k == SiteKind::Probs) return false;
    if (k == SiteKind::MlpAct) return activation != Activation::Relu;  // the unsigned neuron is the ReLU; silu(g) * u is signed
    return true;
}

// ---------------------------------------------------------------- telemetry

namespace {
constexpr double kMacJoules = 4.6e-12, kAcJoules = 0.9e-12;  // 45 nm, Horowitz 2014
}  // namespace

void SpikeStats::reset(int n_layer, int S) {
    timesteps = S;
    tokens = 0;
    layers.assign(size_t(n_layer + 1), {});
    snn_macs = ann_macs = 0;
}

void SpikeStats::add(const SpikeStats& o) {
    if (layers.size() != o.layers.size()) {
        *this = o;
        return;
    }
    tokens += o.tokens;
    snn_macs += o.snn_macs;
    ann_macs += o.ann_macs;
    for (size_t l = 0; l < layers.size(); ++l)
        for (size_t k = 0; k < size_t(kSiteKinds); ++k) {
            layers[l][k].neurons += o.layers[l][k].neurons;
            layers[l][k].spikes += o.layers[l][k].spikes;
            layers[l][k].synops += o.layers[l][k].synops;
        }
}

SpikeStats SpikeStats::since(const SpikeStats& before) const {
    if (before.layers.size() != layers.size() || before.timesteps != timesteps) return *this;
    SpikeStats d = *this;
    d.tokens -= before.tokens, d.snn_macs -= before.snn_macs, d.ann_macs -= before.ann_macs;
    for (size_t l = 0; l < layers.size(); ++l)
        for (size_t k = 0; k < size_t(kSiteKinds); ++k) {
            d.layers[l][k].neurons -= before.layers[l][k].neurons;
            d.layers[l][k].spikes -= before.layers[l][k].spikes;
            d.layers[l][k].synops -= before.layers[l][k].synops;
        }
    return d;
}

int64_t SpikeStats::total(int64_t SiteTelemetry::*field) const {
    int64_t n = 0;
    for (const auto& l : layers)
        for (const auto& s : l) n += s.*field;
    return n;
}
int64_t SpikeStats::total_spikes() const { return total(&SiteTelemetry::spikes); }
int64_t SpikeStats::total_synops() const { return total(&SiteTelemetry::synops); }
int64_t SpikeStats::total_neurons() const { return total(&SiteTelemetry::neurons); }
double SpikeStats::firing_rate() const {
    const double denom = double(total_neurons()) * std::max(timesteps, 1);
    return denom > 0 ? double(total_spikes()) / denom : 0.0;
}
double SpikeStats::snn_energy_joules() const { return double(snn_macs) * kMacJoules + double(total_synops()) * kAcJoules; }
double SpikeStats::ann_energy_joules() const { return double(ann_macs) * kMacJoules; }

nlohmann::json SpikeStats::to_json(bool per_site) const {
    nlohmann::json j = {{"timesteps", timesteps},
                        {"tokens", tokens},
                        {"neurons", total_neurons()},
                        {"spikes", total_spikes()},
                        {"firing_rate", firing_rate()},
                        {"synaptic_ops", total_synops()},
                        {"snn_macs", snn_macs},
                        {"ann_macs", ann_macs},
                        {"snn_energy_joules", snn_energy_joules()},
                        {"ann_energy_joules", ann_energy_joules()},
                        {"energy_ratio", ann_energy_joules() > 0 ? snn_energy_joules() / ann_energy_joules() : 0.0}};
    if (per_site) {
        nlohmann::json sites = nlohmann::json::array();
        for (size_t l = 0; l < layers.size(); ++l)
            for (size_t k = 0; k < size_t(kSiteKinds); ++k) {
                const SiteTelemetry& s = layers[l][k];
                if (s.neurons == 0) continue;
                sites.push_back({{"layer", l + 1 == layers.size() ? -1 : int64_t(l)},
                                 {"site", site_name(SiteKind(k))},
                                 {"neurons", s.neurons},
                                 {"spikes", s.spikes},
                                 {"firing_rate", double(s.spikes) / (double(s.neurons) * std::max(timesteps, 1))},
                                 {"synaptic_ops", s.synops}});
            }
        j["sites"] = sites;
    }
    return j;
}

// ---------------------------------------------------------------- exact linear layers

ExactLinear ExactLinear::build(const Tensor& weight, const Tensor& bias, const SiteQuant& input) {
    const int64_t K = weight.dim(0), N = weight.dim(1);
    if (input.scale.size() != 1 && int64_t(input.scale.size()) != K)
        fail("exact linear: {} thresholds for {} inputs", input.scale.size(), K);
    const float* W = weight.data<float>();
    ExactLinear e;
    e.w = Tensor::empty({K, N}, DType::F64);
    e.mult = Tensor::empty({N}, DType::F32);
    double* w = e.w.data<double>();
    float* mult = e.mult.data<float>();
    std::vector<double> colmax(size_t(N), 0.0);
    auto s_of = [&](int64_t i) { return double(input.scale[input.scale.size() == 1 ? 0 : size_t(i)]); };
    for (int64_t i = 0; i < K; ++i)
        for (int64_t j = 0; j < N; ++j) colmax[size_t(j)] = std::max(colmax[size_t(j)], std::fabs(double(W[i * N + j]) * s_of(i)));
    constexpr double kLimit = double((1 << 23) - 1);
    std::vector<int> k(size_t(N), 0);
    for (int64_t j = 0; j < N; ++j) {
        const double m = colmax[size_t(j)];
        k[size_t(j)] = m > 0 ? std::clamp(int(std::floor(std::log2(kLimit / m))), -100, 100) : 0;
        while (m * std::ldexp(1.0, k[size_t(j)]) > kLimit) --k[size_t(j)];  // guard log2 rounding
        mult[j] = float(std::ldexp(1.0, -k[size_t(j)]));
    }
    for (int64_t i = 0; i < K; ++i)
        for (int64_t j = 0; j < N; ++j)
            w[i * N + j] = std::nearbyint(double(W[i * N + j]) * s_of(i) * std::ldexp(1.0, k[size_t(j)]));
    if (bias.defined()) e.bias = bias;
    return e;
}

ExactLinear ExactLinear::build_head(const Tensor& head, const SiteQuant& input) {
    const int64_t V = head.dim(0), C = head.dim(1);
    Tensor wt = Tensor::empty({C, V}, DType::F32);  // [C, V]
    const float* E = head.data<float>();
    float* d = wt.data<float>();
    for (int64_t v = 0; v < V; ++v)
        for (int64_t i = 0; i < C; ++i) d[i * V + v] = E[v * C + i];
    return build(wt, Tensor(), input);
}

// ---------------------------------------------------------------- the interface

void SpikingModel::set_run_options(const RunOptions& run) {
    if (run.timesteps < 1 || run.timesteps > 4096) fail("timesteps {} out of range [1, 4096]", run.timesteps);
    if (run.mode == RunMode::Snn && run.schedule == Schedule::Streaming && run.path == SpikePath::Count)
        fail("the count path exists only in the layer-wise schedule (use --path spike with --schedule streaming)");
    check_run_options(run);
    if (run.mode == RunMode::Snn && run.schedule == Schedule::Streaming && spec_.token_scale)
        fail("the streaming schedule cannot run a token-scaled SNN (a token's factor needs its whole input first); "
             "use --schedule layerwise, or convert with --token-scale off");
    run_ = run;
}

SnnState& SpikingModel::snn_state(ModelState& state) const {
    auto* st = dynamic_cast<SnnState*>(&state);
    if (!st) fail("spiking forward: the state was not made by this model");
    if (st->count_caches() != count_caches())
        fail("spiking forward: the state was made for {} caches; make a new state after changing the run mode",
             st->count_caches() ? "count" : "float");
    if (st->device() != device()) fail("spiking forward: the state is on {}, the model on {}", st->device().str(), device().str());
    if (st->stats.timesteps != run_.timesteps) st->stats.reset(int(spec_.layers.size()), run_.timesteps);
    return *st;
}

const SpikeStats& SpikingModel::stats(const ModelState& state) const {
    const auto* st = dynamic_cast<const SnnState*>(&state);
    if (!st) fail("spike statistics: the state was not made by a spiking model");
    if (st->stats.layers.size() != spec_.layers.size() + 1)
        fail("spike statistics: the state counts {} layers, the model has {}", int64_t(st->stats.layers.size()) - 1,
             spec_.layers.size());
    return st->stats;
}

void SpikingModel::reset_stats(ModelState& state) const {
    snn_state(state).stats.reset(int(spec_.layers.size()), run_.timesteps);
}

void SpikingModel::set_observer(ModelState& state, SiteObserver* o) const {
    if (o && !device().is_cpu())
        fail("spiking model on {}: site observers (calibration) run on the CPU only", device().str());
    snn_state(state).observer = o;
}

void SpikingModel::check_spec(const SiteLayout& layout) const {
    if (spec_.architecture != layout.architecture)
        fail("spiking model: thresholds converted for a {} model, given a {}", spec_.architecture, layout.architecture);
    if (int64_t(spec_.layers.size()) != layout.n_layer)
        fail("spiking model: {} layers of thresholds for a {}-layer {}", spec_.layers.size(), layout.n_layer,
             layout.architecture);
    if (spec_.levels < 1 || spec_.levels > spiking_max_levels())
        fail("spiking model: levels {} out of range [1, {}]", spec_.levels, spiking_max_levels());
    auto check_site = [&](int l, SiteKind k) {
        if (!spec_.sites.has(k)) return;
        const SiteQuant& q = spec_.site(l, k);
        const int64_t n = int64_t(q.scale.size()), width = layout.width[size_t(k)];
        if (q.levels != spec_.levels || q.is_signed != spec_.site_signed(k) || (n != 1 && n != width) ||
            int64_t(q.inv.size()) != n || !q.inv_t.defined())
            fail("spiking model: site {} of layer {} has {} thresholds, levels {}, {}; expected 1 or {} thresholds, "
                 "levels {}, {}",
                 site_name(k), l, n, q.levels, q.is_signed ? "signed" : "unsigned", width, spec_.levels,
                 spec_.site_signed(k) ? "signed" : "unsigned");
    };
    for (int l = 0; l < int(layout.n_layer); ++l)
        for (SiteKind k : kBlockSites) check_site(l, k);
    check_site(-1, SiteKind::LmHeadIn);
}

SiteLayout site_layout(const LanguageModel& base) {
    SiteLayout s;
    auto fill = [&](int64_t C, int64_t Hq, int64_t Gkv, int64_t D, int64_t I) {
        s.head_dim = D;
        s.width[size_t(SiteKind::AttnIn)] = C;
        s.width[size_t(SiteKind::Q)] = Hq * D;
        s.width[size_t(SiteKind::K)] = Gkv * D;
        s.width[size_t(SiteKind::V)] = Gkv * D;
        s.width[size_t(SiteKind::Probs)] = 1;
        s.width[size_t(SiteKind::AttnOut)] = Hq * D;
        s.width[size_t(SiteKind::MlpIn)] = C;
        s.width[size_t(SiteKind::MlpAct)] = I;
        s.width[size_t(SiteKind::LmHeadIn)] = C;
    };
    if (const auto* g = dynamic_cast<const Gpt2Model*>(&base)) {
        const Gpt2Config& c = g->config();
        s.architecture = "gpt2", s.n_layer = c.n_layer, s.n_positions = c.n_positions;
        fill(c.n_embd, c.n_head, c.n_head, c.head_dim(), c.inner());
        s.activation = c.activation;
    } else if (const auto* m = dynamic_cast<const LlamaModel*>(&base)) {
        const LlamaConfig& c = m->config();
        s.architecture = "llama", s.n_layer = c.n_layer, s.n_positions = c.n_positions;
        fill(c.hidden, c.n_head, c.n_kv_head, c.head_dim(), c.intermediate);
        s.activation = Activation::Silu;
    } else {
        fail("spiking conversion supports gpt2 and llama models, not {}", base.info().architecture);
    }
    return s;
}

std::unique_ptr<SpikingModel> make_spiking_model(std::shared_ptr<const LanguageModel> base, SnnSpec spec, RunOptions run) {
    if (!base) fail("spiking model: no base model");
    if (std::dynamic_pointer_cast<const Gpt2Model>(base)) return std::make_unique<SpikingGpt2>(std::move(base), std::move(spec), run);
    if (std::dynamic_pointer_cast<const LlamaModel>(base))
        return std::make_unique<SpikingLlama>(std::move(base), std::move(spec), run);
    fail("spiking conversion supports gpt2 and llama models, not {}", base->info().architecture);
}

// ---------------------------------------------------------------- layer-wise pieces

AttentionMults AttentionMults::build(const SiteQuant& q, const SiteQuant& k, const SiteQuant& v, const SiteQuant& p,
                                     int64_t H, int64_t G, int64_t D, float scale) {
    AttentionMults m;
    m.qk = Tensor::empty({H}, DType::F32);
    m.pv = Tensor::empty({H}, DType::F32);
    // Q/K/V thresholds are constant within a head: channel h*D stands for head h.
    auto head_scale = [&](const SiteQuant& x, int64_t h) { return x.scale[x.scale.size() == 1 ? 0 : size_t(h * D)]; };
    const int64_t group = H / G;
    for (int64_t h = 0; h < H; ++h) {
        m.qk.data<float>()[h] = head_scale(q, h) * head_scale(k, h / group) * scale;
        m.pv.data<float>()[h] = p.scale[0] * head_scale(v, h / group);
    }
    return m;
}

int64_t LayerwiseRun::counts(int l, SiteKind k, const Tensor& x_in, const Tensor& counts, const Tensor& spikes) {
    const SiteQuant& q = spec.site(l, k);
    const kernels::SiteBounds b{q.inv_t, q.n_min(), q.n_max()};
    Tensor x = x_in;
    row_scale = Tensor();
    if (spec.token_scaled(k)) {
        // The probability rows reach [H T, P + T]: reserve for the cache's capacity like the scores.
        const int64_t R = x_in.dim(0), N = x_in.dim(1), cap = st.capacity();
        const bool probs = k == SiteKind::Probs;
        row_scale = st.buf(probs ? kRowP : kRow, {R}, DType::F32);
        x = st.buf(kXs, {R, N}, DType::F32, probs ? R * cap : 0);
        kernels::token_scale(row_scale, x, x_in, b);
        if (mode == RunMode::Snn) st.stats.snn_macs += R * N;  // x / r
    }
    if (mode == RunMode::Qann) {
        kernels::quantize(counts, x, b);
        return 0;
    }
    const int64_t events = kernels::neurons_layerwise(counts, spikes, x, b, S);
    auto& t = st.stats.layers[l < 0 ? st.stats.layers.size() - 1 : size_t(l)][size_t(k)];
    t.neurons += x.numel();
    t.spikes += events;
    return events;
}

void LayerwiseRun::linear(int l, SiteKind k, const Tensor& in, const Tensor& w, const Tensor& b, const ExactLinear& e,
                          const Tensor& out) {
    const int64_t K = in.dim(1), N = out.dim(1);
    if (SiteObserver* obs = st.observer) obs->observe(l, k, in.data<float>(), T, K);
    if (!quant() || !spec.sites.has(k)) {
        kernels::linear(out, in, w, b);
        return;
    }
    const Tensor c = st.buf(kCounts, {T, K}, DType::I8);
    const Tensor sp = spike ? st.buf(kSpikes, {S, T, K}, DType::I8) : Tensor();
    const int64_t events = counts(l, k, in, c, sp);
    // A token-scaled input: the layer runs without its bias, then out * r + b.
    const Tensor bias = row_scale.defined() ? Tensor() : e.bias;
    if (spike) kernels::linear_spikes(out, sp, e.w, e.mult, bias, dbl);
    else kernels::linear_counts(out, c, e.w, e.mult, bias, dbl);
    if (row_scale.defined()) kernels::rescale_rows(out, row_scale, e.bias);
    if (mode == RunMode::Snn) {
        st.stats.layers[size_t(l)][size_t(k)].synops += events * N;
        st.stats.snn_macs += T * N * (row_scale.defined() ? 2 : 1);  // float(acc) * mult + b (and * r)
    }
}

void LayerwiseRun::attention(int l, const Tensor& qkv, int64_t H, int64_t G, int64_t D, float scale,
                             const AttentionMults& m, const Tensor& att) {
    const int64_t L = P + T, Cq = H * D, Ckv = G * D, cap = st.capacity();
    SiteObserver* const obs = st.observer;
    // Split q, k, v into contiguous buffers (sites and observers see one tensor each).
    // qf: [T, H D]; kf, vf: [T, G D]
    const Tensor qf = st.buf(kQf, {T, Cq}, DType::F32), kf = st.buf(kKf, {T, Ckv}, DType::F32),
                 vf = st.buf(kVf, {T, Ckv}, DType::F32);
    const bool quant_attn = quant() && spec.sites.attention();
    if (obs || quant_attn) kernels::split_qkv(qf, kf, vf, qkv);
    if (obs) {
        obs->observe(l, SiteKind::Q, qf.data<float>(), T, Cq);
        obs->observe(l, SiteKind::K, kf.data<float>(), T, Ckv);
        obs->observe(l, SiteKind::V, vf.data<float>(), T, Ckv);
    }
    const Tensor scores = st.buf(kScoresF, {H, T, L}, DType::F32, H * T * cap);
    if (!quant_attn) {
        kernels::kv_append(st.k[size_t(l)], st.v[size_t(l)], qkv, P);
        kernels::attention_scores(scores, qkv, st.k[size_t(l)], P, scale);
        kernels::softmax_causal(scores, P);
        if (obs) {  // only the causal entries are probabilities
            const float* p = scores.data<float>();
            for (int64_t r = 0; r < H * T; ++r) obs->observe(l, SiteKind::Probs, p + r * L, 1, P + r % T + 1);
        }
        kernels::attention_pv(att, scores, st.v[size_t(l)], P);
        return;
    }
    const Tensor nq = st.buf(kNq, {T, Cq}, DType::I8), nk = st.buf(kNk, {T, Ckv}, DType::I8),
                 nv = st.buf(kNv, {T, Ckv}, DType::I8);
    const Tensor qs = spike ? st.buf(kQs, {S, T, Cq}, DType::I8) : Tensor(),
                 ks = spike ? st.buf(kKs, {S, T, Ckv}, DType::I8) : Tensor(),
                 vs = spike ? st.buf(kVs, {S, T, Ckv}, DType::I8) : Tensor();
    const int64_t eq = counts(l, SiteKind::Q, qf, nq, qs);
    const int64_t ek = counts(l, SiteKind::K, kf, nk, ks);
    const int64_t ev = counts(l, SiteKind::V, vf, nv, vs);
    kernels::kv_append_counts(st.k[size_t(l)], st.v[size_t(l)], nk, nv, P);
    const Tensor si = st.buf(kScoresI, {H, T, L}, DType::I32, H * T * cap);
    // The CPU's running sums of the spike products (the GPU keeps them in registers).
    const Tensor run = st.device().is_cpu()
                           ? st.buf(kRun, {H * T * L + T * (Cq + Ckv)}, DType::I32, H * T * cap + T * (Cq + Ckv))
                           : Tensor();
    if (spike) kernels::scores_spikes(si, qs, ks, st.k[size_t(l)], P, run);
    else kernels::scores_counts(si, nq, st.k[size_t(l)], P);
    kernels::dequantize_heads(scores, si, m.qk);
    kernels::softmax_causal(scores, P);
    const Tensor np = st.buf(kNp, {H, T, L}, DType::I8, H * T * cap);
    const Tensor ps = spike ? st.buf(kPs, {S, H, T, L}, DType::I8, int64_t(S) * H * T * cap) : Tensor();
    const int64_t ep = counts(l, SiteKind::Probs, scores.reshape({H * T, L}), np.reshape({H * T, L}),
                              spike ? ps.reshape({S, H * T, L}) : Tensor());
    const Tensor oi = st.buf(kOi, {T, Cq}, DType::I32);
    if (spike) kernels::pv_spikes(oi, ps, vs, st.v[size_t(l)], P, run);
    else kernels::pv_counts(oi, np, st.v[size_t(l)], P);
    kernels::dequantize_heads(att, oi, m.pv);
    if (row_scale.defined()) kernels::rescale_head_rows(att, row_scale.reshape({H, T}));
    if (mode == RunMode::Snn) {
        if (row_scale.defined()) st.stats.snn_macs += T * Cq;  // * r
        // Fan-out: a query spike meets every visible key, a key or value spike every chunk query
        // that sees it (in each of the H / G query heads of its group), a probability spike one
        // value row (D).
        const double keys = double(P) + double(T + 1) / 2, queries = double(T + 1) / 2 * double(H / G);
        auto& t = st.stats.layers[size_t(l)];
        t[size_t(SiteKind::Q)].synops += int64_t(double(eq) * keys);
        t[size_t(SiteKind::K)].synops += int64_t(double(ek) * queries);
        t[size_t(SiteKind::V)].synops += int64_t(double(ev) * queries);
        t[size_t(SiteKind::Probs)].synops += ep * D;
        const int64_t pairs = T * P + T * (T + 1) / 2;
        st.stats.snn_macs += H * pairs * (1 + kSoftmaxMacs) + T * Cq;  // dequantize + softmax, dequantize PV
    }
}

void LayerwiseRun::head(const Tensor& hr, const Tensor& head, const ExactLinear& e, const Tensor& logits) {
    const int64_t R = hr.dim(0), C = hr.dim(1), V = head.dim(0);
    const bool site = quant() && spec.sites.has(SiteKind::LmHeadIn);
    if (mode == RunMode::Snn) st.stats.snn_macs += site ? R * V : R * C * V;
    const bool here = logits.device() == st.device();
    const Tensor out = here ? logits : st.buf(kLogits, {R, V}, DType::F32);
    auto deliver = [&] {
        if (!here) copy_bytes(logits.raw(), logits.device(), out.raw(), out.device(), out.nbytes());
    };
    if (!site) {
        kernels::matmul_nt(out, hr, head);
        deliver();
        return;
    }
    const Tensor c = st.buf(kCounts, {R, C}, DType::I8);
    const Tensor sp = spike ? st.buf(kSpikes, {S, R, C}, DType::I8) : Tensor();
    const Tensor d = scratch(st, R, C + V);
    const int64_t events = counts(-1, SiteKind::LmHeadIn, hr, c, sp);
    if (spike) kernels::linear_spikes(out, sp, e.w, e.mult, Tensor(), d);
    else kernels::linear_counts(out, c, e.w, e.mult, Tensor(), d);
    if (row_scale.defined()) kernels::rescale_rows(out, row_scale, Tensor());
    deliver();
    if (mode == RunMode::Snn) st.stats.layers.back()[size_t(SiteKind::LmHeadIn)].synops += events * V;
}

}  // namespace stac
