// Inside convert/: the cache and scratch of a spiking model, and the layer-wise schedule's pieces
// that every architecture runs the same way — a site's neurons (or quantizer), a linear layer fed
// by a site, the attention block on floats or counts/spikes (grouped-query aware), the LM head.
// Letters: T tokens in a chunk, P cached, L = P + T keys, H query heads, G key/value heads, D head
// dim, K inputs, N outputs, V vocabulary, S timesteps, cap cache capacity.
#pragma once

#include <memory>
#include <vector>

#include "convert/spiking_model.h"
#include "core/error.h"

namespace stac {

// Scratch slots of one forward; each grows to the largest request and is then reused.
enum Slot : int {
    kX, kH, kQkv, kAtt, kMlp, kGu, kQf, kKf, kVf,    // float activations
    kCounts, kSpikes, kNq, kNk, kNv, kQs, kKs, kVs,  // counts and spike trains (I8)
    kScoresI, kScoresF, kNp, kPs, kOi, kRun,         // attention
    kDbl,                                            // F64 scratch of the exact linear layers (CPU)
    kRow, kRowP, kXs,                                // token scaling: row factors (sites, probabilities), scaled input
    kLogits,                                         // device logits before their copy to the host
    kStreamBase,                                     // first slot of the streaming schedule's state
};

// The state of one conversation: per layer K and V of the G key/value heads, as counts (I8) of
// finished tokens when the attention sites spike, else floats; the forward's scratch; all on the
// model's device. Beside them, on the host, what the conversation counted (spike statistics at S
// timesteps) and who watches its sites (calibration): clear() and truncate() empty the cache
// only, so a window shift or a /reset adds to the same statistics.
class SnnState final : public ModelState {
public:
    SnnState(int64_t n_layer, int64_t G, int64_t D, int64_t cap, bool count_caches, int S, Device device)
        : cap_(cap), counts_(count_caches), device_(device) {
        const DType dt = count_caches ? DType::I8 : DType::F32;
        for (int64_t l = 0; l < n_layer; ++l) {
            k.push_back(Tensor::zeros({G, cap, D}, dt, device));
            v.push_back(Tensor::zeros({G, cap, D}, dt, device));
        }
        slots_.resize(kStreamBase);
        stats.reset(int(n_layer), S);
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

    std::vector<Tensor> k, v;  // per layer [G, cap, D]: counts (I8) of finished tokens, or floats
    int64_t len_ = 0;
    SpikeStats stats;                  // every forward on this state adds to it
    SiteObserver* observer = nullptr;  // sees the float values at every site (Float mode, CPU)

private:
    int64_t cap_;
    bool counts_;
    Device device_;
    std::vector<std::shared_ptr<Storage>> slots_;
};

// The per-layer thresholds products of the attention on counts: score = int * qk_mult[h],
// PV = int * pv_mult[h], per query head h (key/value head h / (H / G)).
struct AttentionMults {
    Tensor qk;  // F32 [H]: s_q(h) s_k(g) * attention scale
    Tensor pv;  // F32 [H]: s_p s_v(g)
    static AttentionMults build(const SiteQuant& q, const SiteQuant& k, const SiteQuant& v, const SiteQuant& p, int64_t H,
                                int64_t G, int64_t D, float scale);
};

// One layer-wise forward of T tokens on top of P cached ones (DESIGN §5): what a site does in
// each run mode, and the telemetry it records (in st.stats; st.observer sees the sites).
struct LayerwiseRun {
    const SnnSpec& spec;
    SnnState& st;
    RunMode mode;
    bool spike;  // SNN on the spike path
    int S;
    int64_t T, P;
    // F64 scratch of the exact linear layers on the CPU (at least T * (K + N) for every layer);
    // undefined on a GPU, whose kernels draw their own (see scratch()).
    Tensor dbl;

    // The F64 scratch of T * KN for a state on the CPU, else undefined.
    static Tensor scratch(SnnState& st, int64_t T, int64_t KN) {
        return st.device().is_cpu() ? st.buf(kDbl, {T * KN}, DType::F64) : Tensor();
    }

    bool quant() const { return mode != RunMode::Float; }
    // Counts of site (l, k) (l = -1: the LM head input) for x: [R, N]: the quantizer (QANN) or the
    // neurons (SNN; spikes [S, R, N] too on the spike path). Records neurons and spikes; returns the events.
    // A token-scaled site first divides each row by its factor, left in row_scale ([R]) for the
    // consumer to multiply back; otherwise row_scale is undefined.
    int64_t counts(int l, SiteKind k, const Tensor& x, const Tensor& counts, const Tensor& spikes);
    Tensor row_scale = Tensor();
    // out: [T, N] = a linear layer fed by site (l, k) with input in: [T, K]: the float GEMM when the
    // site is off (or in Float mode), else exact on counts (count path, QANN) or spikes (spike path).
    void linear(int l, SiteKind k, const Tensor& in, const Tensor& w, const Tensor& b, const ExactLinear& e,
                const Tensor& out);
    // att: [T, H D] = causal attention of qkv: [T, (H + 2G) D] (q | k | v, positions already
    // applied) over the cache of layer l, appending this chunk's K and V to it. Float: the
    // probabilities in float (observed for calibration); quantized (attention sites on): Q, K, V and
    // the probabilities as counts, the two products as integers (spike path: temporal differences
    // of the spike trains), dequantized by `m`.
    void attention(int l, const Tensor& qkv, int64_t H, int64_t G, int64_t D, float scale, const AttentionMults& m,
                   const Tensor& att);
    // logits: [R, V] = hr: [R, C] · head^T, head: [V, C]; through the lm_head_in site when it is on.
    // A state on a GPU writing host logits computes them on the device, then copies them once.
    void head(const Tensor& hr, const Tensor& head, const ExactLinear& e, const Tensor& logits);
};

}  // namespace stac
