#include "convert/spiking_gpt2.h"

#include <cmath>
#include <cstring>

#include "kernels/kernels.h"
#include "kernels/spiking.h"

namespace stac {

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
    if (k == SiteKind::MlpAct) return activation != Activation::Relu;  // the unsigned neuron is the ReLU
    return true;
}

// ---------------------------------------------------------------- telemetry

namespace {
constexpr double kMacJoules = 4.6e-12, kAcJoules = 0.9e-12;  // 45 nm, Horowitz 2014
// MACs per element of the operations that stay dense in the spiking model.
constexpr int64_t kLnMacs = 5, kSoftmaxMacs = 3, kGeluMacs = 8;
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
    if (before.layers.size() != layers.size()) return *this;
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

// ---------------------------------------------------------------- state

namespace {
// Scratch slots of one forward; each grows to the largest request and is then reused.
enum Slot : int {
    kX, kH, kQkv, kAtt, kMlp, kQf, kKf, kVf,         // float activations
    kCounts, kSpikes, kNq, kNk, kNv, kQs, kKs, kVs,  // counts and spike trains (I8)
    kScoresI, kScoresF, kNp, kPs, kOi, kRun,         // attention
    kDbl,                                            // F64 scratch of the exact linear layers
    kLogits,                                         // device logits before their copy to the host
    kStreamBase,                                     // first slot of the streaming schedule's state
};
}  // namespace

class SnnState final : public ModelState {
public:
    SnnState(const Gpt2Config& cfg, int64_t cap, bool count_caches, Device device)
        : cap_(cap), counts_(count_caches), device_(device) {
        const int64_t H = cfg.n_head, D = cfg.head_dim();
        for (int64_t l = 0; l < cfg.n_layer; ++l) {
            const DType dt = count_caches ? DType::I8 : DType::F32;
            k.push_back(Tensor::zeros({H, cap, D}, dt, device));
            v.push_back(Tensor::zeros({H, cap, D}, dt, device));
        }
        slots_.resize(kStreamBase);
    }
    int64_t length() const override { return len_; }
    int64_t capacity() const override { return cap_; }
    void clear() override { len_ = 0; }
    void truncate(int64_t n) override {
        if (n < 0 || n > len_) fail("cannot truncate a cache of {} tokens to {}", len_, n);
        len_ = n;
    }
    bool count_caches() const { return counts_; }
    Device device() const { return device_; }

    // A view of `shape` in slot i, reallocated only when it needs more than `reserve` elements
    // (pass the largest size this slot will see for the chunk, e.g. with the cache capacity).
    Tensor buf(int i, const Shape& shape, DType dt, int64_t reserve = 0) {
        const size_t need = size_t(std::max(shape.numel(), reserve)) * dtype_size(dt);
        if (size_t(i) >= slots_.size()) slots_.resize(size_t(i) + 1);
        auto& s = slots_[size_t(i)];
        if (!s || s->bytes() < need) s = Storage::allocate(need, device_);
        return Tensor::view_of(s, 0, shape, dt);
    }

    std::vector<Tensor> k, v;  // per layer [H, cap, D]: counts (I8) of finished tokens, or floats
    int64_t len_ = 0;

private:
    int64_t cap_;
    bool counts_;
    Device device_;
    std::vector<std::shared_ptr<Storage>> slots_;
};

// ---------------------------------------------------------------- model

SpikingGpt2::SpikingGpt2(std::shared_ptr<const Gpt2Model> base, SnnSpec spec, RunOptions run)
    : base_(std::move(base)), spec_(std::move(spec)) {
    const Gpt2Config& c = base_->config();
    if (int64_t(spec_.layers.size()) != c.n_layer)
        fail("spiking model: {} layers of thresholds for a {}-layer GPT-2", spec_.layers.size(), c.n_layer);
    if (spec_.levels < 1 || spec_.levels > spiking_max_levels())
        fail("spiking model: levels {} out of range [1, {}]", spec_.levels, spiking_max_levels());
    const int64_t C = c.n_embd, H = c.n_head, D = c.head_dim(), I = c.inner();
    auto check_site = [&](int l, SiteKind k, int64_t width) {
        if (!spec_.sites.has(k)) return;
        const SiteQuant& q = spec_.site(l, k);
        const int64_t n = int64_t(q.scale.size());
        if (q.levels != spec_.levels || q.is_signed != spec_.site_signed(k) || (n != 1 && n != width) ||
            int64_t(q.inv.size()) != n || !q.inv_t.defined())
            fail("spiking model: site {} of layer {} has {} thresholds, levels {}, {}; expected 1 or {} thresholds, "
                 "levels {}, {}",
                 site_name(k), l, n, q.levels, q.is_signed ? "signed" : "unsigned", width, spec_.levels,
                 spec_.site_signed(k) ? "signed" : "unsigned");
    };
    for (int l = 0; l < int(c.n_layer); ++l) {
        check_site(l, SiteKind::AttnIn, C);
        for (SiteKind k : {SiteKind::Q, SiteKind::K, SiteKind::V}) check_site(l, k, C);
        check_site(l, SiteKind::Probs, 1);
        check_site(l, SiteKind::AttnOut, C);
        check_site(l, SiteKind::MlpIn, C);
        check_site(l, SiteKind::MlpAct, I);
    }
    check_site(-1, SiteKind::LmHeadIn, C);

    const Gpt2Weights& W = base_->weights();
    layers_.resize(size_t(c.n_layer));
    for (int l = 0; l < int(c.n_layer); ++l) {
        const Gpt2Layer& w = W.layers[size_t(l)];
        Layer& e = layers_[size_t(l)];
        const auto& s = spec_.layers[size_t(l)];
        if (spec_.sites.has(SiteKind::AttnIn)) e.attn = ExactLinear::build(w.attn_w, w.attn_b, s[size_t(SiteKind::AttnIn)]);
        if (spec_.sites.has(SiteKind::AttnOut)) e.proj = ExactLinear::build(w.proj_w, w.proj_b, s[size_t(SiteKind::AttnOut)]);
        if (spec_.sites.has(SiteKind::MlpIn)) e.fc = ExactLinear::build(w.fc_w, w.fc_b, s[size_t(SiteKind::MlpIn)]);
        if (spec_.sites.has(SiteKind::MlpAct)) e.fc_proj = ExactLinear::build(w.fc_proj_w, w.fc_proj_b, s[size_t(SiteKind::MlpAct)]);
        if (spec_.sites.attention()) {
            // Per-head products of thresholds (Q/K/V thresholds are constant within a head).
            e.qk_mult = Tensor::empty({H}, DType::F32);
            e.pv_mult = Tensor::empty({H}, DType::F32);
            const SiteQuant &q = s[size_t(SiteKind::Q)], &k = s[size_t(SiteKind::K)], &v = s[size_t(SiteKind::V)],
                            &p = s[size_t(SiteKind::Probs)];
            auto head_scale = [&](const SiteQuant& x, int64_t h) { return x.scale[x.scale.size() == 1 ? 0 : size_t(h * D)]; };
            for (int64_t h = 0; h < H; ++h) {
                e.qk_mult.data<float>()[h] = head_scale(q, h) * head_scale(k, h) * c.attn_scale(l);
                e.pv_mult.data<float>()[h] = p.scale[0] * head_scale(v, h);
            }
        }
    }
    if (spec_.sites.has(SiteKind::LmHeadIn)) {
        // The tied head as a [C, V] matrix fed by the spiking site after ln_f.
        const Tensor& E = W.lm_head;
        const int64_t V = E.dim(0);
        Tensor wt = Tensor::empty({C, V}, DType::F32);
        for (int64_t v = 0; v < V; ++v)
            for (int64_t i = 0; i < C; ++i) wt.data<float>()[i * V + v] = E.data<float>()[v * C + i];
        lm_head_ = ExactLinear::build(wt, Tensor(), spec_.lm_head_in);
    }
    set_run_options(run);
    reset_stats();
}

std::unique_ptr<SpikingGpt2> SpikingGpt2::to(Device device) const {
    if (device == this->device()) return std::make_unique<SpikingGpt2>(*this);
    if (!this->device().is_cpu()) fail("spiking model: moving between devices goes through the CPU");
    require_device(device);
    auto m = std::make_unique<SpikingGpt2>(*this);
    m->base_ = base_->to({device, DType::F32});
    auto up = [&](Tensor& t) {
        if (t.defined()) t = t.to(device);
    };
    for (Layer& e : m->layers_) {
        for (ExactLinear* x : {&e.attn, &e.proj, &e.fc, &e.fc_proj}) up(x->w), up(x->mult), up(x->bias);
        up(e.qk_mult), up(e.pv_mult);
    }
    up(m->lm_head_.w), up(m->lm_head_.mult), up(m->lm_head_.bias);
    for (auto& layer : m->spec_.layers)
        for (SiteQuant& q : layer) up(q.inv_t);
    up(m->spec_.lm_head_in.inv_t);
    synchronize(device);
    return m;
}

int spiking_max_levels() { return 127; }

void SpikingGpt2::set_run_options(const RunOptions& run) {
    if (run.timesteps < 1 || run.timesteps > 4096) fail("timesteps {} out of range [1, 4096]", run.timesteps);
    if (run.mode == RunMode::Snn && run.schedule == Schedule::Streaming && run.path == SpikePath::Count)
        fail("the count path exists only in the layer-wise schedule (use --path spike with --schedule streaming)");
    if (run.mode == RunMode::Snn && run.schedule == Schedule::Streaming && !spec_.sites.attention())
        fail("the streaming schedule needs the attention sites (q, k, v, probs)");
    run_ = run;
    if (stats_.timesteps != run.timesteps) reset_stats();
}

void SpikingGpt2::reset_stats() const { stats_.reset(int(base_->config().n_layer), run_.timesteps); }

std::unique_ptr<ModelState> SpikingGpt2::new_state(int64_t capacity) const {
    const Gpt2Config& c = base_->config();
    if (capacity <= 0) capacity = c.n_positions;
    if (capacity > c.n_positions) fail("cache capacity {} exceeds the model's n_positions = {}", capacity, c.n_positions);
    return std::make_unique<SnnState>(c, capacity, run_.mode != RunMode::Float && spec_.sites.attention(), device());
}

void SpikingGpt2::forward(std::span<const int32_t> ids, ModelState& state, LogitRows rows, const Tensor& logits) const {
    auto* st = dynamic_cast<SnnState*>(&state);
    if (!st) fail("spiking forward: the state was not made by this model");
    const bool want_counts = run_.mode != RunMode::Float && spec_.sites.attention();
    if (st->count_caches() != want_counts)
        fail("spiking forward: the state was made for {} caches; make a new state after changing the run mode",
             st->count_caches() ? "count" : "float");
    const int64_t T = int64_t(ids.size()), P = st->length(), R = logit_row_count(rows, T);
    check_forward_args(info(), ids, P, st->capacity(), rows, logits, "spiking");
    if (st->device() != device()) fail("spiking forward: the state is on {}, the model on {}", st->device().str(), device().str());
    if (!device().is_cpu() && observer_)
        fail("spiking model on {}: site observers (calibration) run on the CPU only", device().str());
    if (run_.mode == RunMode::Snn && run_.schedule == Schedule::Streaming) forward_streaming(ids, *st, rows, logits);
    else forward_layerwise(ids, *st, rows, logits);
    if (run_.mode == RunMode::Snn) {
        stats_.tokens += T;
        count_ann_macs(T, P, R);
    }
}

void SpikingGpt2::count_ann_macs(int64_t T, int64_t P, int64_t R) const {
    const Gpt2Config& c = base_->config();
    const int64_t C = c.n_embd, I = c.inner(), H = c.n_head, D = c.head_dim(), V = c.vocab_size;
    const int64_t keys = T * P + T * (T + 1) / 2;  // query-key pairs
    int64_t per_layer = T * (C * 3 * C + C * C + C * I + I * C)  // the four linear layers
                        + 2 * H * keys * D                         // QK^T and PV
                        + 2 * T * C * kLnMacs + H * keys * kSoftmaxMacs;
    if (c.activation != Activation::Relu) per_layer += T * I * kGeluMacs;
    stats_.ann_macs += c.n_layer * per_layer + R * C * kLnMacs + R * C * V;
}

// ---------------------------------------------------------------- layer-wise schedule

namespace {

struct Ctx {
    const SpikingGpt2* m;
    SnnState* st;
    const SnnSpec* spec;
    RunMode mode;
    bool spike;
    int S;
    SiteObserver* obs;
    SpikeStats* stats;
};

// Counts of site (l, k) for x: [T, N]: the quantizer (QANN) or the neurons (SNN; spikes too on the
// spike path). Records neurons and spikes.
int64_t site_counts(Ctx& c, int l, SiteKind k, const Tensor& x, const Tensor& counts, const Tensor& spikes) {
    const SiteQuant& q = c.spec->site(l, k);
    const kernels::SiteBounds b{q.inv_t, q.n_min(), q.n_max()};
    if (c.mode == RunMode::Qann) {
        kernels::quantize(counts, x, b);
        return 0;
    }
    const int64_t events = kernels::neurons_layerwise(counts, spikes, x, b, c.S);
    auto& t = c.stats->layers[size_t(l < 0 ? c.stats->layers.size() - 1 : size_t(l))][size_t(k)];
    t.neurons += x.numel();
    t.spikes += events;
    return events;
}

}  // namespace

void SpikingGpt2::forward_layerwise(std::span<const int32_t> ids, SnnState& st, LogitRows rows,
                                    const Tensor& logits) const {
    const Gpt2Config& cfg = base_->config();
    const Gpt2Weights& W = base_->weights();
    const int64_t T = int64_t(ids.size()), P = st.length(), L = P + T, C = cfg.n_embd, H = cfg.n_head,
                  D = cfg.head_dim(), I = cfg.inner(), cap = st.capacity();
    const int S = run_.timesteps;
    Ctx c{this, &st, &spec_, run_.mode, run_.mode == RunMode::Snn && run_.path == SpikePath::Spike, S, observer_, &stats_};
    const bool quant = run_.mode != RunMode::Float;
    const int64_t KN = std::max(3 * C, I);  // widest linear output / input

    // x: [T, C] residual; h: [T, C]; qkv: [T, 3C]; att: [T, C]; mlp: [T, I]
    const Tensor x = st.buf(kX, {T, C}, DType::F32), h = st.buf(kH, {T, C}, DType::F32),
                 qkv = st.buf(kQkv, {T, 3 * C}, DType::F32), att = st.buf(kAtt, {T, C}, DType::F32),
                 mlp = st.buf(kMlp, {T, I}, DType::F32);
    // The CPU's f64 scratch of the exact linear layers (the GPU kernels draw their own).
    const bool on_cpu = st.device().is_cpu();
    const Tensor dbl = on_cpu ? st.buf(kDbl, {T * (std::max(C, I) + KN)}, DType::F64) : Tensor();

    // A linear layer fed by site (l, k): float GEMM when the site is off (or in Float mode), else
    // exact on counts (count path, QANN) or on spikes (spike path).
    auto site_linear = [&](int l, SiteKind k, const Tensor& in, const Tensor& w, const Tensor& b, const ExactLinear& e,
                           const Tensor& out) {
        const int64_t K = in.dim(1), N = out.dim(1);
        if (observer_) observer_->observe(l, k, in.data<float>(), T, K);
        if (!quant || !spec_.sites.has(k)) {
            kernels::linear(out, in, w, b);
            return;
        }
        const Tensor counts = st.buf(kCounts, {T, K}, DType::I8);
        const Tensor spikes = c.spike ? st.buf(kSpikes, {S, T, K}, DType::I8) : Tensor();
        const int64_t events = site_counts(c, l, k, in, counts, spikes);
        if (c.spike) kernels::linear_spikes(out, spikes, e.w, e.mult, e.bias, dbl);
        else kernels::linear_counts(out, counts, e.w, e.mult, e.bias, dbl);
        if (run_.mode == RunMode::Snn) {
            stats_.layers[size_t(l)][size_t(k)].synops += events * N;
            stats_.snn_macs += T * N;  // float(acc) * mult + b
        }
    };

    kernels::embedding(x, ids, P, W.wte, W.wpe);
    for (int l = 0; l < int(cfg.n_layer); ++l) {
        const Gpt2Layer& w = W.layers[size_t(l)];
        const Layer& e = layers_[size_t(l)];
        kernels::layernorm(h, x, w.ln1_g, w.ln1_b, cfg.layer_norm_epsilon);
        site_linear(l, SiteKind::AttnIn, h, w.attn_w, w.attn_b, e.attn, qkv);

        // Split q, k, v into contiguous [T, C] buffers (sites and observers see one tensor each).
        const Tensor qf = st.buf(kQf, {T, C}, DType::F32), kf = st.buf(kKf, {T, C}, DType::F32),
                     vf = st.buf(kVf, {T, C}, DType::F32);
        const bool quant_attn = quant && spec_.sites.attention();
        if (observer_ || quant_attn) kernels::split_qkv(qf, kf, vf, qkv);
        if (observer_) {
            observer_->observe(l, SiteKind::Q, qf.data<float>(), T, C);
            observer_->observe(l, SiteKind::K, kf.data<float>(), T, C);
            observer_->observe(l, SiteKind::V, vf.data<float>(), T, C);
        }
        const Tensor scores = st.buf(kScoresF, {H, T, L}, DType::F32, H * T * cap);
        if (!quant_attn) {
            kernels::kv_append(st.k[size_t(l)], st.v[size_t(l)], qkv, P);
            kernels::attention_scores(scores, qkv, st.k[size_t(l)], P, cfg.attn_scale(l));
            kernels::softmax_causal(scores, P);
            if (observer_) {  // only the causal entries are probabilities
                const float* p = scores.data<float>();
                for (int64_t r = 0; r < H * T; ++r) observer_->observe(l, SiteKind::Probs, p + r * L, 1, P + r % T + 1);
            }
            kernels::attention_pv(att, scores, st.v[size_t(l)], P);
        } else {
            const Tensor nq = st.buf(kNq, {T, C}, DType::I8), nk = st.buf(kNk, {T, C}, DType::I8),
                         nv = st.buf(kNv, {T, C}, DType::I8);
            const Tensor qs = c.spike ? st.buf(kQs, {S, T, C}, DType::I8) : Tensor(),
                         ks = c.spike ? st.buf(kKs, {S, T, C}, DType::I8) : Tensor(),
                         vs = c.spike ? st.buf(kVs, {S, T, C}, DType::I8) : Tensor();
            const int64_t eq = site_counts(c, l, SiteKind::Q, qf, nq, qs);
            const int64_t ek = site_counts(c, l, SiteKind::K, kf, nk, ks);
            const int64_t ev = site_counts(c, l, SiteKind::V, vf, nv, vs);
            kernels::kv_append_counts(st.k[size_t(l)], st.v[size_t(l)], nk, nv, P);
            const Tensor si = st.buf(kScoresI, {H, T, L}, DType::I32, H * T * cap);
            const Tensor run = on_cpu ? st.buf(kRun, {H * T * L + 2 * T * C}, DType::I32, H * T * cap + 2 * T * C) : Tensor();
            if (c.spike) kernels::scores_spikes(si, qs, ks, st.k[size_t(l)], P, run);
            else kernels::scores_counts(si, nq, st.k[size_t(l)], P);
            kernels::dequantize_heads(scores, si, e.qk_mult);
            kernels::softmax_causal(scores, P);
            const Tensor np = st.buf(kNp, {H, T, L}, DType::I8, H * T * cap);
            const Tensor ps = c.spike ? st.buf(kPs, {S, H, T, L}, DType::I8, int64_t(S) * H * T * cap) : Tensor();
            const int64_t ep = site_counts(c, l, SiteKind::Probs, scores.reshape({H * T, L}), np.reshape({H * T, L}),
                                           c.spike ? ps.reshape({S, H * T, L}) : Tensor());
            const Tensor oi = st.buf(kOi, {T, C}, DType::I32);
            if (c.spike) kernels::pv_spikes(oi, ps, vs, st.v[size_t(l)], P, run);
            else kernels::pv_counts(oi, np, st.v[size_t(l)], P);
            kernels::dequantize_heads(att, oi, e.pv_mult);
            if (run_.mode == RunMode::Snn) {
                // Fan-out: a query spike meets every visible key, a key or value spike every chunk
                // query that sees it, a probability spike one value row (D).
                const double keys = double(P) + double(T + 1) / 2, queries = double(T + 1) / 2;
                auto& t = stats_.layers[size_t(l)];
                t[size_t(SiteKind::Q)].synops += int64_t(double(eq) * keys);
                t[size_t(SiteKind::K)].synops += int64_t(double(ek) * queries);
                t[size_t(SiteKind::V)].synops += int64_t(double(ev) * queries);
                t[size_t(SiteKind::Probs)].synops += ep * D;
                const int64_t pairs = T * P + T * (T + 1) / 2;
                stats_.snn_macs += H * pairs * (1 + kSoftmaxMacs) + T * C;  // dequantize + softmax, dequantize PV
            }
        }
        site_linear(l, SiteKind::AttnOut, att, w.proj_w, w.proj_b, e.proj, h);
        kernels::add(x, h);
        kernels::layernorm(h, x, w.ln2_g, w.ln2_b, cfg.layer_norm_epsilon);
        site_linear(l, SiteKind::MlpIn, h, w.fc_w, w.fc_b, e.fc, mlp);
        // The activation: a float op, except that the unsigned neuron of a ReLU site is the ReLU.
        const bool relu_by_neuron = quant && spec_.sites.has(SiteKind::MlpAct) && spec_.activation == Activation::Relu;
        if (!relu_by_neuron) kernels::activation(mlp, spec_.activation);
        if (run_.mode == RunMode::Snn) {
            stats_.snn_macs += 2 * T * C * kLnMacs;
            if (spec_.activation != Activation::Relu) stats_.snn_macs += T * I * kGeluMacs;
        }
        site_linear(l, SiteKind::MlpAct, mlp, w.fc_proj_w, w.fc_proj_b, e.fc_proj, h);
        kernels::add(x, h);
    }
    head(st, x, T, rows, logits);
    st.len_ = P + T;
}

// Final LayerNorm and the LM head for the rows that need logits (all rows when observing).
void SpikingGpt2::head(SnnState& st, const Tensor& x, int64_t T, LogitRows rows, const Tensor& logits) const {
    const Gpt2Config& cfg = base_->config();
    const Gpt2Weights& W = base_->weights();
    const int64_t R = logit_row_count(rows, T), C = cfg.n_embd, V = cfg.vocab_size;
    if (observer_) {
        const Tensor hall = st.buf(kH, {T, C}, DType::F32);
        kernels::layernorm(hall, x, W.lnf_g, W.lnf_b, cfg.layer_norm_epsilon);
        observer_->observe(-1, SiteKind::LmHeadIn, hall.data<float>(), T, C);
    }
    if (R == 0) return;
    const Tensor hr = st.buf(kH, {R, C}, DType::F32);
    kernels::layernorm(hr, x.slice_rows(T - R, T), W.lnf_g, W.lnf_b, cfg.layer_norm_epsilon);
    const bool site = run_.mode != RunMode::Float && spec_.sites.has(SiteKind::LmHeadIn);
    if (run_.mode == RunMode::Snn) stats_.snn_macs += R * C * kLnMacs + (site ? R * V : R * C * V);
    // A model on a GPU writing host logits computes them on the device, then copies them once.
    const bool here = logits.device() == st.device();
    const Tensor out = here ? logits : st.buf(kLogits, {R, V}, DType::F32);
    if (!site) {
        kernels::matmul_nt(out, hr, W.lm_head);
        if (!here) copy_bytes(logits.raw(), logits.device(), out.raw(), out.device(), out.nbytes());
        return;
    }
    const int S = run_.timesteps;
    const bool spike = run_.mode == RunMode::Snn && run_.path == SpikePath::Spike;
    Ctx c{this, &st, &spec_, run_.mode, spike, S, observer_, &stats_};
    const Tensor counts = st.buf(kCounts, {R, C}, DType::I8);
    const Tensor spikes = spike ? st.buf(kSpikes, {S, R, C}, DType::I8) : Tensor();
    const Tensor dbl = st.device().is_cpu() ? st.buf(kDbl, {R * (C + V)}, DType::F64) : Tensor();
    const int64_t events = site_counts(c, -1, SiteKind::LmHeadIn, hr, counts, spikes);
    if (spike) kernels::linear_spikes(out, spikes, lm_head_.w, lm_head_.mult, Tensor(), dbl);
    else kernels::linear_counts(out, counts, lm_head_.w, lm_head_.mult, Tensor(), dbl);
    if (!here) copy_bytes(logits.raw(), logits.device(), out.raw(), out.device(), out.nbytes());
    if (run_.mode == RunMode::Snn) stats_.layers.back()[size_t(SiteKind::LmHeadIn)].synops += events * V;
}

// ---------------------------------------------------------------- streaming schedule

// All layers advance one timestep together; every neuron integrates what arrives in that step.
// Linear layers and residual adds act on each step's spikes (biases and the embedding arrive as
// constant currents of 1/S per step); LayerNorm, softmax, GELU and the attention products are
// temporal-difference operators: each emits f(X_t) - f(X_{t-1}) of its running input X_t.
// The chunk's key/value counts are the neurons' running counters, visible to the chunk's queries
// at every step and stored in the cache when the S steps end.
void SpikingGpt2::forward_streaming(std::span<const int32_t> ids, SnnState& st, LogitRows rows,
                                    const Tensor& logits) const {
    const Gpt2Config& cfg = base_->config();
    const Gpt2Weights& W = base_->weights();
    const int64_t T = int64_t(ids.size()), P = st.length(), L = P + T, C = cfg.n_embd, H = cfg.n_head,
                  I = cfg.inner(), cap = st.capacity();
    const int S = run_.timesteps;
    const float inv_s = 1.0f / float(S);
    int slot = kStreamBase;
    auto B = [&](const Shape& shape, DType dt, int64_t reserve = 0) { return st.buf(slot++, shape, dt, reserve); };
    auto Z = [&](const Shape& shape, DType dt, int64_t reserve = 0) {
        Tensor t = B(shape, dt, reserve);
        zero_bytes(t.raw(), t.device(), t.nbytes());
        return t;
    };
    struct Neurons {
        Tensor v, n, spikes;
    };
    auto neurons = [&](const Shape& shape, int64_t reserve = 0) {
        Neurons x{B(shape, DType::F64, reserve), Z(shape, DType::I32, reserve), B(shape, DType::I8, reserve)};
        kernels::fill(x.v, 0.5);  // half a threshold, as the layer-wise neuron
        return x;
    };
    struct LayerState {
        Tensor x1, y1, p1, x2, y2, p2;   // LayerNorm TD operators: running input, output, emitted so far
        Tensor d1, d2, du;               // the running inputs in double (x1, x2, u are their f32 values)
        Tensor u, g, pg;                 // GELU TD operator on the MLP pre-activation
        Tensor sf, ps;                   // softmax TD: probabilities now and emitted so far [H, T, L]
        Tensor of, po;                   // PV product TD: value now and emitted so far [T, C]
        Neurons a, q, k, v, p, o, m, h;  // the sites
        Tensor b_attn, b_proj, b_fc, b_fcp;  // biases / S
    };
    std::vector<LayerState> ls(size_t(cfg.n_layer));
    for (int l = 0; l < int(cfg.n_layer); ++l) {
        LayerState& x = ls[size_t(l)];
        x.x1 = B({T, C}, DType::F32), x.y1 = B({T, C}, DType::F32), x.p1 = Z({T, C}, DType::F32);
        x.x2 = B({T, C}, DType::F32), x.y2 = B({T, C}, DType::F32), x.p2 = Z({T, C}, DType::F32);
        x.u = B({T, I}, DType::F32), x.g = B({T, I}, DType::F32), x.pg = Z({T, I}, DType::F32);
        x.d1 = Z({T, C}, DType::F64), x.d2 = Z({T, C}, DType::F64), x.du = Z({T, I}, DType::F64);
        x.sf = B({H, T, L}, DType::F32, H * T * cap), x.ps = Z({H, T, L}, DType::F32, H * T * cap);
        x.of = B({T, C}, DType::F32), x.po = Z({T, C}, DType::F32);
        x.a = neurons({T, C}), x.q = neurons({T, C}), x.k = neurons({T, C}), x.v = neurons({T, C});
        x.p = neurons({H * T, L}, H * T * cap), x.o = neurons({T, C}), x.m = neurons({T, C}), x.h = neurons({T, I});
        const Gpt2Layer& w = W.layers[size_t(l)];
        x.b_attn = B({3 * C}, DType::F32), x.b_proj = B({C}, DType::F32), x.b_fc = B({I}, DType::F32),
        x.b_fcp = B({C}, DType::F32);
        kernels::scaled_copy(x.b_attn, w.attn_b, inv_s), kernels::scaled_copy(x.b_proj, w.proj_b, inv_s);
        kernels::scaled_copy(x.b_fc, w.fc_b, inv_s), kernels::scaled_copy(x.b_fcp, w.fc_proj_b, inv_s);
    }
    // Per-step signals, reused by every layer.
    const Tensor emb = B({T, C}, DType::F32), emb_step = B({T, C}, DType::F32), rf = B({T, C}, DType::F32),
                 rfd = Z({T, C}, DType::F64),
                 inc = B({T, C}, DType::F32), e = B({T, C}, DType::F32), y = B({T, C}, DType::F32),
                 qkv_inc = B({T, 3 * C}, DType::F32), qi = B({T, C}, DType::F32), ki = B({T, C}, DType::F32),
                 vi = B({T, C}, DType::F32), u_inc = B({T, I}, DType::F32), eg = B({T, I}, DType::F32),
                 nq = B({T, C}, DType::I8), nk = B({T, C}, DType::I8), nv = B({T, C}, DType::I8),
                 np = B({H, T, L}, DType::I8, H * T * cap), si = B({H, T, L}, DType::I32, H * T * cap),
                 ep = B({H, T, L}, DType::F32, H * T * cap), oi = B({T, C}, DType::I32), eo = B({T, C}, DType::F32),
                 acc = B({T * std::max(3 * C, I)}, DType::F64);
    kernels::embedding(emb, ids, P, W.wte, W.wpe);
    kernels::scaled_copy(emb_step, emb, inv_s);

    // One step of site (l, k) on this step's input increment `in` [T, K], feeding a linear layer
    // whose per-step output goes to `out` [T, N] (bias already divided by S).
    auto site_step = [&](int l, SiteKind k, Neurons& n, const Tensor& in, const Tensor& w, const Tensor& b_step,
                         const ExactLinear& ex, const Tensor& out, bool first) {
        const int64_t K = in.dim(1), N = out.dim(1);
        if (!spec_.sites.has(k)) {
            kernels::linear(out, in, w, b_step);
            return;
        }
        const SiteQuant& q = spec_.site(l, k);
        const int64_t events = kernels::neurons_step(n.v, n.n, n.spikes, in, {q.inv_t, q.n_min(), q.n_max()});
        kernels::linear_spikes(out, n.spikes.reshape({1, T, K}), ex.w, ex.mult, b_step, acc);
        auto& t = stats_.layers[size_t(l)][size_t(k)];
        if (first) t.neurons += T * K;
        t.spikes += events;
        t.synops += events * N;
        stats_.snn_macs += T * N;
    };
    auto attn_site = [&](int l, SiteKind k, Neurons& n, const Tensor& in, bool first) {
        const SiteQuant& q = spec_.site(l, k);
        const int64_t events = kernels::neurons_step(n.v, n.n, n.spikes, in, {q.inv_t, q.n_min(), q.n_max()});
        auto& t = stats_.layers[size_t(l)][size_t(k)];
        if (first) t.neurons += in.numel();
        t.spikes += events;
        return events;
    };

    const int64_t pairs = T * P + T * (T + 1) / 2;
    for (int s = 0; s < S; ++s) {
        const bool first = s == 0;
        kernels::scaled_copy(inc, emb_step, 1.0f);  // the residual stream's increment entering layer 0
        for (int l = 0; l < int(cfg.n_layer); ++l) {
            const Gpt2Layer& w = W.layers[size_t(l)];
            const Layer& ex = layers_[size_t(l)];
            LayerState& x = ls[size_t(l)];
            // ln_1 as a TD operator on the running residual
            kernels::accumulate(x.d1, inc, x.x1);
            kernels::layernorm(x.y1, x.x1, w.ln1_g, w.ln1_b, cfg.layer_norm_epsilon);
            kernels::td_emit(e, x.y1, x.p1);
            site_step(l, SiteKind::AttnIn, x.a, e, w.attn_w, x.b_attn, ex.attn, qkv_inc, first);
            kernels::split_qkv(qi, ki, vi, qkv_inc);
            const int64_t eq = attn_site(l, SiteKind::Q, x.q, qi, first);
            const int64_t ek = attn_site(l, SiteKind::K, x.k, ki, first);
            const int64_t ev = attn_site(l, SiteKind::V, x.v, vi, first);
            kernels::narrow_counts(nq, x.q.n), kernels::narrow_counts(nk, x.k.n), kernels::narrow_counts(nv, x.v.n);
            kernels::kv_append_counts(st.k[size_t(l)], st.v[size_t(l)], nk, nv, P);  // the chunk's running counts
            // scores and softmax as a TD operator of the running counts
            kernels::scores_counts(si, nq, st.k[size_t(l)], P);
            kernels::dequantize_heads(x.sf, si, ex.qk_mult);
            kernels::softmax_causal(x.sf, P);
            kernels::td_emit(ep, x.sf, x.ps);
            const int64_t epv = attn_site(l, SiteKind::Probs, x.p, ep.reshape({H * T, L}), first);
            kernels::narrow_counts(np, x.p.n);
            // PV as a TD operator of the running probability and value counts
            kernels::pv_counts(oi, np, st.v[size_t(l)], P);
            kernels::dequantize_heads(x.of, oi, ex.pv_mult);
            kernels::td_emit(eo, x.of, x.po);
            const double keys = double(P) + double(T + 1) / 2, queries = double(T + 1) / 2;
            auto& tl = stats_.layers[size_t(l)];
            tl[size_t(SiteKind::Q)].synops += int64_t(double(eq) * keys);
            tl[size_t(SiteKind::K)].synops += int64_t(double(ek) * queries);
            tl[size_t(SiteKind::V)].synops += int64_t(double(ev) * queries);
            tl[size_t(SiteKind::Probs)].synops += epv * cfg.head_dim();
            stats_.snn_macs += H * pairs * (1 + kSoftmaxMacs) + T * C + 2 * T * C * kLnMacs;
            site_step(l, SiteKind::AttnOut, x.o, eo, w.proj_w, x.b_proj, ex.proj, y, first);
            kernels::add(inc, y);
            // ln_2 and the MLP
            kernels::accumulate(x.d2, inc, x.x2);
            kernels::layernorm(x.y2, x.x2, w.ln2_g, w.ln2_b, cfg.layer_norm_epsilon);
            kernels::td_emit(e, x.y2, x.p2);
            site_step(l, SiteKind::MlpIn, x.m, e, w.fc_w, x.b_fc, ex.fc, u_inc, first);
            const bool relu_by_neuron = spec_.sites.has(SiteKind::MlpAct) && spec_.activation == Activation::Relu;
            const Tensor* hin = &u_inc;
            if (!relu_by_neuron) {
                kernels::accumulate(x.du, u_inc, x.u);
                kernels::scaled_copy(x.g, x.u, 1.0f);
                kernels::activation(x.g, spec_.activation);
                kernels::td_emit(eg, x.g, x.pg);
                hin = &eg;
                if (spec_.activation != Activation::Relu) stats_.snn_macs += T * I * kGeluMacs;
            }
            site_step(l, SiteKind::MlpAct, x.h, *hin, w.fc_proj_w, x.b_fcp, ex.fc_proj, y, first);
            kernels::add(inc, y);
        }
        kernels::accumulate(rfd, inc, rf);
    }
    head(st, rf, T, rows, logits);
    st.len_ = P + T;
}

}  // namespace stac
