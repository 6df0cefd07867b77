#include "convert/spiking_llama.h"

#include <algorithm>
#include <cmath>

#include "convert/spiking_layerwise.h"
#include "kernels/kernels.h"

namespace stac {

SpikingLlama::SpikingLlama(std::shared_ptr<const LanguageModel> base, SnnSpec spec, RunOptions run)
    : SpikingModel(std::move(spec)), base_(std::dynamic_pointer_cast<const LlamaModel>(base)) {
    if (!base_) fail("spiking Llama: the base model is {}, not a Llama", base ? base->info().architecture : "missing");
    const LlamaConfig& c = base_->config();
    check_spec(site_layout(*base_));
    if (spec_.activation != Activation::Silu)
        fail("spiking Llama: activation must be silu (the SiLU gate), the spec says otherwise");
    const int64_t H = c.n_head, G = c.n_kv_head, D = c.head_dim();
    const LlamaWeights& W = base_->weights();
    layers_.resize(size_t(c.n_layer));
    for (int l = 0; l < int(c.n_layer); ++l) {
        const LlamaLayer& w = W.layers[size_t(l)];
        Layer& e = layers_[size_t(l)];
        const auto& s = spec_.layers[size_t(l)];
        if (spec_.sites.has(SiteKind::AttnIn)) e.qkv = ExactLinear::build(w.wqkv, Tensor(), s[size_t(SiteKind::AttnIn)]);
        if (spec_.sites.has(SiteKind::AttnOut)) e.o = ExactLinear::build(w.wo, Tensor(), s[size_t(SiteKind::AttnOut)]);
        if (spec_.sites.has(SiteKind::MlpIn)) e.gate_up = ExactLinear::build(w.w_gate_up, Tensor(), s[size_t(SiteKind::MlpIn)]);
        if (spec_.sites.has(SiteKind::MlpAct)) e.down = ExactLinear::build(w.w_down, Tensor(), s[size_t(SiteKind::MlpAct)]);
        if (spec_.sites.attention()) {
            const AttentionMults m = AttentionMults::build(s[size_t(SiteKind::Q)], s[size_t(SiteKind::K)], s[size_t(SiteKind::V)],
                                                           s[size_t(SiteKind::Probs)], H, G, D, 1.0f / std::sqrt(float(D)));
            e.qk_mult = m.qk, e.pv_mult = m.pv;
        }
    }
    if (spec_.sites.has(SiteKind::LmHeadIn)) lm_head_ = ExactLinear::build_head(W.lm_head, spec_.lm_head_in);
    set_run_options(run);
}

std::unique_ptr<SpikingModel> SpikingLlama::to(Device device) const {
    if (!device.is_cpu()) fail("spiking Llama: runs on the CPU only, not on {} (use --device cpu)", device.str());
    return std::make_unique<SpikingLlama>(*this);
}

void SpikingLlama::check_run_options(const RunOptions& run) const {
    if (run.mode == RunMode::Snn && run.schedule == Schedule::Streaming)
        fail("the streaming schedule is not built for Llama models (use --schedule layerwise)");
}

std::unique_ptr<ModelState> SpikingLlama::new_state(int64_t capacity) const {
    const LlamaConfig& c = base_->config();
    if (capacity <= 0) capacity = c.n_positions;
    if (capacity > c.n_positions)
        fail("cache capacity {} exceeds the model's max_position_embeddings = {}", capacity, c.n_positions);
    return std::make_unique<SnnState>(c.n_layer, c.n_kv_head, c.head_dim(), capacity,
                                      count_caches(), run_.timesteps, Device::cpu());
}

void SpikingLlama::count_ann_macs(SpikeStats& stats, int64_t T, int64_t P, int64_t R) const {
    const LlamaConfig& c = base_->config();
    const int64_t C = c.hidden, I = c.intermediate, H = c.n_head, G = c.n_kv_head, D = c.head_dim(), V = c.vocab_size;
    const int64_t keys = T * P + T * (T + 1) / 2;  // query-key pairs
    const int64_t per_layer = T * (C * c.qkv_width() + H * D * C + C * 2 * I + I * C)  // the four linear layers
                              + 2 * H * keys * D                                     // QK^T and PV
                              + 2 * T * C * kNormMacs + H * keys * kSoftmaxMacs + T * I * kSiluGateMacs
                              + T * (H + G) * D * 2;  // RoPE
    stats.ann_macs += c.n_layer * per_layer + R * C * kNormMacs + R * C * V;
}

void SpikingLlama::forward(std::span<const int32_t> ids, ModelState& state, LogitRows rows, const Tensor& logits) const {
    SnnState* st = &snn_state(state);
    const int64_t T = int64_t(ids.size()), P = st->length(), R = logit_row_count(rows, T);
    check_forward_args(info(), ids, P, st->capacity(), rows, logits, "spiking llama");

    const LlamaConfig& cfg = base_->config();
    const LlamaWeights& W = base_->weights();
    const int64_t C = cfg.hidden, H = cfg.n_head, G = cfg.n_kv_head, D = cfg.head_dim(), I = cfg.intermediate;
    const int S = run_.timesteps;
    const bool snn = run_.mode == RunMode::Snn;
    const int64_t KN = std::max({cfg.qkv_width(), 2 * I, C});  // widest linear output

    // x: [T, C] residual; h: [T, C]; qkv: [T, (H + 2G) D]; att: [T, H D]; gu: [T, 2I]; mlp: [T, I]
    const Tensor x = st->buf(kX, {T, C}, DType::F32), h = st->buf(kH, {T, C}, DType::F32),
                 qkv = st->buf(kQkv, {T, cfg.qkv_width()}, DType::F32), att = st->buf(kAtt, {T, H * D}, DType::F32),
                 gu = st->buf(kGu, {T, 2 * I}, DType::F32), mlp = st->buf(kMlp, {T, I}, DType::F32);
    LayerwiseRun run{spec_, *st, run_.mode, snn && run_.path == SpikePath::Spike, S, T, P,
                     LayerwiseRun::scratch(*st, T, std::max({C, H * D, I}) + KN)};

    kernels::embedding(x, ids, P, W.embed, Tensor());
    for (int l = 0; l < int(cfg.n_layer); ++l) {
        const LlamaLayer& w = W.layers[size_t(l)];
        const Layer& e = layers_[size_t(l)];
        kernels::rmsnorm(h, x, w.attn_norm, cfg.rms_norm_eps);
        run.linear(l, SiteKind::AttnIn, h, w.wqkv, Tensor(), e.qkv, qkv);
        // RoPE on the summed q and k at the absolute positions P.. (linear per position).
        kernels::rope(qkv, H + G, D, P, cfg.rope_theta);
        run.attention(l, qkv, H, G, D, 1.0f / std::sqrt(float(D)), AttentionMults{e.qk_mult, e.pv_mult}, att);
        run.linear(l, SiteKind::AttnOut, att, w.wo, Tensor(), e.o, h);
        kernels::add(x, h);
        kernels::rmsnorm(h, x, w.mlp_norm, cfg.rms_norm_eps);
        run.linear(l, SiteKind::MlpIn, h, w.w_gate_up, Tensor(), e.gate_up, gu);
        kernels::silu_gate(mlp, gu);
        run.linear(l, SiteKind::MlpAct, mlp, w.w_down, Tensor(), e.down, h);
        kernels::add(x, h);
        if (snn) st->stats.snn_macs += 2 * T * C * kNormMacs + T * I * kSiluGateMacs + T * (H + G) * D * 2;  // norms, gate, RoPE
    }
    // Final RMSNorm and the head for the rows that need logits (all rows when observing).
    if (st->observer) {
        const Tensor hall = st->buf(kH, {T, C}, DType::F32);
        kernels::rmsnorm(hall, x, W.norm, cfg.rms_norm_eps);
        st->observer->observe(-1, SiteKind::LmHeadIn, hall.data<float>(), T, C);
    }
    if (R > 0) {
        const Tensor hr = st->buf(kH, {R, C}, DType::F32);
        kernels::rmsnorm(hr, x.slice_rows(T - R, T), W.norm, cfg.rms_norm_eps);
        if (snn) st->stats.snn_macs += R * C * kNormMacs;
        run.head(hr, W.lm_head, lm_head_, logits);
    }
    st->len_ = P + T;
    if (snn) {
        st->stats.tokens += T;
        count_ann_macs(st->stats, T, P, R);
    }
}

}  // namespace stac
