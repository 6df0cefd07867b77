#include "convert/evaluate.h"

#include <chrono>
#include <cmath>

#include "core/error.h"
#include "core/progress.h"

namespace stac {

std::vector<std::vector<int32_t>> text_windows(std::span<const int32_t> ids, int64_t window) {
    if (window < 2) fail("evaluation window {} is too short (at least 2 tokens)", window);
    std::vector<std::vector<int32_t>> out;
    for (size_t i = 0; i < ids.size(); i += size_t(window)) {
        const size_t n = std::min(size_t(window), ids.size() - i);
        if (n >= 2) out.emplace_back(ids.begin() + long(i), ids.begin() + long(i + n));
    }
    return out;
}

double Fidelity::perplexity() const { return scored ? std::exp(nll / double(scored)) : NAN; }
double Fidelity::agreement() const { return positions ? double(agree) / double(positions) : NAN; }
double Fidelity::mean_kl() const { return positions ? kl / double(positions) : NAN; }

nlohmann::json Fidelity::to_json() const {
    return {{"positions", positions}, {"scored", scored},       {"mean_nll", scored ? nll / double(scored) : NAN},
            {"perplexity", perplexity()}, {"top1_agreement", agreement()}, {"mean_kl", mean_kl()},
            {"max_abs_logit_diff_vs_reference", max_abs_vs_ref}, {"seconds", seconds}};
}

namespace {

// log-softmax of one row into out: exponentials in f32 (vectorizable), their sum in double.
void log_softmax(const float* x, int64_t V, std::vector<double>& out) {
    float m = -INFINITY;
    for (int64_t v = 0; v < V; ++v) m = std::max(m, x[v]);
    double s = 0;
    for (int64_t v = 0; v < V; ++v) s += double(std::exp(x[v] - m));
    const double lse = double(m) + std::log(s);
    for (int64_t v = 0; v < V; ++v) out[size_t(v)] = double(x[v]) - lse;
}

int64_t argmax(const float* x, int64_t V) {
    int64_t b = 0;
    for (int64_t v = 1; v < V; ++v)
        if (x[v] > x[b]) b = v;
    return b;
}

// Returns the state it ran on (for its spike statistics).
std::unique_ptr<ModelState> all_logits(const LanguageModel& m, const std::vector<int32_t>& ids, Tensor& out) {
    auto st = m.new_state(int64_t(ids.size()));
    m.forward(ids, *st, LogitRows::All, out);
    return st;
}

}  // namespace

Evaluation evaluate(const LanguageModel& ann, const LanguageModel* qann, const SpikingModel* snn,
                    const std::vector<std::vector<int32_t>>& windows, bool progress) {
    const int64_t V = ann.info().vocab_size;
    Evaluation ev;
    if (qann) ev.qann = Fidelity{};
    if (snn) {
        ev.snn = Fidelity{};
        ev.spikes.reset(int(snn->spec().layers.size()), snn->run_options().timesteps);
    }
    Progress bar("evaluating", int64_t(windows.size()), progress);
    std::vector<double> lm(static_cast<size_t>(V));
    std::vector<float> ann_logp;  // [T, V] the ANN's log-probabilities of the current window, computed once
    std::vector<double> ann_nll;  // [T] the ANN's -log p(next token), in double
    // Scores one model's logits of a window against the ANN's log-probabilities (ann_logp).
    auto score = [&](Fidelity& f, const std::vector<int32_t>& ids, const Tensor& logits, bool is_ann, const Tensor* ref) {
        const int64_t T = int64_t(ids.size());
        const float* L = logits.data<float>();
        for (int64_t t = 0; t < T; ++t) {
            const float* row = L + t * V;
            const float* la = ann_logp.data() + t * V;
            if (is_ann) {  // the ANN's own log-probabilities are already there
                if (t + 1 < T) {
                    f.nll += ann_nll[size_t(t)];
                    ++f.scored;
                }
                ++f.agree, ++f.positions;
                continue;
            }
            log_softmax(row, V, lm);
            if (t + 1 < T) {
                f.nll -= lm[size_t(ids[size_t(t + 1)])];
                ++f.scored;
            }
            double kl = 0;
            for (int64_t v = 0; v < V; ++v) kl += double(std::exp(la[v])) * (double(la[v]) - lm[size_t(v)]);
            f.kl += std::max(0.0, kl);
            f.agree += argmax(row, V) == argmax(la, V);
            ++f.positions;
            if (ref) {
                const float* r = ref->data<float>() + t * V;
                for (int64_t v = 0; v < V; ++v) f.max_abs_vs_ref = std::max(f.max_abs_vs_ref, std::fabs(row[v] - r[v]));
            }
        }
    };
    auto timed = [](auto&& f) {
        const auto t0 = std::chrono::steady_clock::now();
        f();
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    for (size_t w = 0; w < windows.size(); ++w) {
        const auto& ids = windows[w];
        const int64_t T = int64_t(ids.size());
        if (T > ann.info().n_positions) fail("evaluation window of {} tokens exceeds n_positions = {}", T, ann.info().n_positions);
        Tensor a = Tensor::empty({T, V}, DType::F32);
        ev.ann.seconds += timed([&] { all_logits(ann, ids, a); });
        ann_logp.resize(size_t(T * V));
        ann_nll.assign(size_t(T), 0.0);
        for (int64_t t = 0; t < T; ++t) {
            log_softmax(a.data<float>() + t * V, V, lm);
            for (int64_t v = 0; v < V; ++v) ann_logp[size_t(t * V + v)] = float(lm[size_t(v)]);
            if (t + 1 < T) ann_nll[size_t(t)] = -lm[size_t(ids[size_t(t + 1)])];
        }
        score(ev.ann, ids, a, true, nullptr);
        Tensor q;
        if (qann) {
            q = Tensor::empty({T, V}, DType::F32);
            ev.qann->seconds += timed([&] { all_logits(*qann, ids, q); });
            score(*ev.qann, ids, q, false, nullptr);
        }
        if (snn) {
            Tensor s = Tensor::empty({T, V}, DType::F32);
            std::unique_ptr<ModelState> st;
            ev.snn->seconds += timed([&] { st = all_logits(*snn, ids, s); });
            ev.spikes.add(snn->stats(*st));
            score(*ev.snn, ids, s, false, qann ? &q : nullptr);
        }
        bar.update(int64_t(w + 1));
    }
    bar.finish();
    return ev;
}

}  // namespace stac
