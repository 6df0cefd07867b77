#include "convert/spiking_gpt2.h"

#include <cmath>
#include <cstring>

#include "convert/spiking_layerwise.h"
#include "kernels/kernels.h"
#include "kernels/spiking.h"

namespace stac {

// ---------------------------------------------------------------- model

SpikingGpt2::SpikingGpt2(std::shared_ptr<const LanguageModel> base, SnnSpec spec, RunOptions run)
    : SpikingModel(std::move(spec)), base_(std::dynamic_pointer_cast<const Gpt2Model>(base)) {
    if (!base_) fail("spiking GPT-2: the base model is {}, not a GPT-2", base ? base->info().architecture : "missing");
    const Gpt2Config& c = base_->config();
    check_spec(site_layout(*base_));
    const int64_t H = c.n_head, D = c.head_dim();

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
            const AttentionMults m = AttentionMults::build(s[size_t(SiteKind::Q)], s[size_t(SiteKind::K)], s[size_t(SiteKind::V)],
                                                           s[size_t(SiteKind::Probs)], H, H, D, c.attn_scale(l));
            e.qk_mult = m.qk, e.pv_mult = m.pv;
        }
    }
    // The tied head as a [C, V] matrix fed by the spiking site after ln_f.
    if (spec_.sites.has(SiteKind::LmHeadIn)) lm_head_ = ExactLinear::build_head(W.lm_head, spec_.lm_head_in);
    set_run_options(run);
}

std::unique_ptr<SpikingModel> SpikingGpt2::to(Device device) const {
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

void SpikingGpt2::check_run_options(const RunOptions& run) const {
    if (run.mode == RunMode::Snn && run.schedule == Schedule::Streaming && !spec_.sites.attention())
        fail("the streaming schedule needs the attention sites (q, k, v, probs)");
}

std::unique_ptr<ModelState> SpikingGpt2::new_state(int64_t capacity) const {
    const Gpt2Config& c = base_->config();
    if (capacity <= 0) capacity = c.n_positions;
    if (capacity > c.n_positions) fail("cache capacity {} exceeds the model's n_positions = {}", capacity, c.n_positions);
    return std::make_unique<SnnState>(c.n_layer, c.n_head, c.head_dim(), capacity,
                                      count_caches(), run_.timesteps, device());
}

void SpikingGpt2::forward(std::span<const int32_t> ids, ModelState& state, LogitRows rows, const Tensor& logits) const {
    SnnState* st = &snn_state(state);
    const int64_t T = int64_t(ids.size()), P = st->length(), R = logit_row_count(rows, T);
    check_forward_args(info(), ids, P, st->capacity(), rows, logits, "spiking");
    if (run_.mode == RunMode::Snn && run_.schedule == Schedule::Streaming) forward_streaming(ids, *st, rows, logits);
    else forward_layerwise(ids, *st, rows, logits);
    if (run_.mode == RunMode::Snn) {
        st->stats.tokens += T;
        count_ann_macs(st->stats, T, P, R);
    }
}

void SpikingGpt2::count_ann_macs(SpikeStats& stats, int64_t T, int64_t P, int64_t R) const {
    const Gpt2Config& c = base_->config();
    const int64_t C = c.n_embd, I = c.inner(), H = c.n_head, D = c.head_dim(), V = c.vocab_size;
    const int64_t keys = T * P + T * (T + 1) / 2;  // query-key pairs
    int64_t per_layer = T * (C * 3 * C + C * C + C * I + I * C)  // the four linear layers
                        + 2 * H * keys * D                         // QK^T and PV
                        + 2 * T * C * kNormMacs + H * keys * kSoftmaxMacs;
    if (c.activation != Activation::Relu) per_layer += T * I * kGeluMacs;
    stats.ann_macs += c.n_layer * per_layer + R * C * kNormMacs + R * C * V;
}

// ---------------------------------------------------------------- layer-wise schedule

void SpikingGpt2::forward_layerwise(std::span<const int32_t> ids, SnnState& st, LogitRows rows,
                                    const Tensor& logits) const {
    const Gpt2Config& cfg = base_->config();
    const Gpt2Weights& W = base_->weights();
    const int64_t T = int64_t(ids.size()), P = st.length(), C = cfg.n_embd, H = cfg.n_head, D = cfg.head_dim(),
                  I = cfg.inner();
    const int S = run_.timesteps;
    const bool quant = run_.mode != RunMode::Float;
    const int64_t KN = std::max(3 * C, I);  // widest linear output / input

    // x: [T, C] residual; h: [T, C]; qkv: [T, 3C]; att: [T, C]; mlp: [T, I]
    const Tensor x = st.buf(kX, {T, C}, DType::F32), h = st.buf(kH, {T, C}, DType::F32),
                 qkv = st.buf(kQkv, {T, 3 * C}, DType::F32), att = st.buf(kAtt, {T, C}, DType::F32),
                 mlp = st.buf(kMlp, {T, I}, DType::F32);
    LayerwiseRun run{spec_, st, run_.mode, run_.mode == RunMode::Snn && run_.path == SpikePath::Spike, S, T, P,
                     LayerwiseRun::scratch(st, T, std::max(C, I) + KN)};

    kernels::embedding(x, ids, P, W.wte, W.wpe);
    for (int l = 0; l < int(cfg.n_layer); ++l) {
        const Gpt2Layer& w = W.layers[size_t(l)];
        const Layer& e = layers_[size_t(l)];
        kernels::layernorm(h, x, w.ln1_g, w.ln1_b, cfg.layer_norm_epsilon);
        run.linear(l, SiteKind::AttnIn, h, w.attn_w, w.attn_b, e.attn, qkv);
        run.attention(l, qkv, H, H, D, cfg.attn_scale(l), AttentionMults{e.qk_mult, e.pv_mult}, att);
        run.linear(l, SiteKind::AttnOut, att, w.proj_w, w.proj_b, e.proj, h);
        kernels::add(x, h);
        kernels::layernorm(h, x, w.ln2_g, w.ln2_b, cfg.layer_norm_epsilon);
        run.linear(l, SiteKind::MlpIn, h, w.fc_w, w.fc_b, e.fc, mlp);
        // The activation: a float op, except that the unsigned neuron of a ReLU site is the ReLU.
        const bool relu_by_neuron = quant && spec_.sites.has(SiteKind::MlpAct) && spec_.activation == Activation::Relu;
        if (!relu_by_neuron) kernels::activation(mlp, spec_.activation);
        if (run_.mode == RunMode::Snn) {
            st.stats.snn_macs += 2 * T * C * kNormMacs;
            if (spec_.activation != Activation::Relu) st.stats.snn_macs += T * I * kGeluMacs;
        }
        run.linear(l, SiteKind::MlpAct, mlp, w.fc_proj_w, w.fc_proj_b, e.fc_proj, h);
        kernels::add(x, h);
    }
    head(st, x, T, rows, logits);
    st.len_ = P + T;
}

// Final LayerNorm and the LM head for the rows that need logits (all rows when observing).
void SpikingGpt2::head(SnnState& st, const Tensor& x, int64_t T, LogitRows rows, const Tensor& logits) const {
    const Gpt2Config& cfg = base_->config();
    const Gpt2Weights& W = base_->weights();
    const int64_t R = logit_row_count(rows, T), C = cfg.n_embd;
    if (st.observer) {
        const Tensor hall = st.buf(kH, {T, C}, DType::F32);
        kernels::layernorm(hall, x, W.lnf_g, W.lnf_b, cfg.layer_norm_epsilon);
        st.observer->observe(-1, SiteKind::LmHeadIn, hall.data<float>(), T, C);
    }
    if (R == 0) return;
    const Tensor hr = st.buf(kH, {R, C}, DType::F32);
    kernels::layernorm(hr, x.slice_rows(T - R, T), W.lnf_g, W.lnf_b, cfg.layer_norm_epsilon);
    if (run_.mode == RunMode::Snn) st.stats.snn_macs += R * C * kNormMacs;
    LayerwiseRun run{spec_, st, run_.mode, run_.mode == RunMode::Snn && run_.path == SpikePath::Spike, run_.timesteps,
                     R, st.length(), Tensor()};
    run.head(hr, W.lm_head, lm_head_, logits);
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
        auto& t = st.stats.layers[size_t(l)][size_t(k)];
        if (first) t.neurons += T * K;
        t.spikes += events;
        t.synops += events * N;
        st.stats.snn_macs += T * N;
    };
    auto attn_site = [&](int l, SiteKind k, Neurons& n, const Tensor& in, bool first) {
        const SiteQuant& q = spec_.site(l, k);
        const int64_t events = kernels::neurons_step(n.v, n.n, n.spikes, in, {q.inv_t, q.n_min(), q.n_max()});
        auto& t = st.stats.layers[size_t(l)][size_t(k)];
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
            auto& tl = st.stats.layers[size_t(l)];
            tl[size_t(SiteKind::Q)].synops += int64_t(double(eq) * keys);
            tl[size_t(SiteKind::K)].synops += int64_t(double(ek) * queries);
            tl[size_t(SiteKind::V)].synops += int64_t(double(ev) * queries);
            tl[size_t(SiteKind::Probs)].synops += epv * cfg.head_dim();
            st.stats.snn_macs += H * pairs * (1 + kSoftmaxMacs) + T * C + 2 * T * C * kNormMacs;
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
                if (spec_.activation != Activation::Relu) st.stats.snn_macs += T * I * kGeluMacs;
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
