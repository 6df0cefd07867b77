// bench_gpu: GPU throughput of stac. Prints one JSON object:
//   - GPT-2 124M shape (random weights): prompt processing (tokens/s for a --prompt-token chunk) and
//     decode (tokens/s, one token per forward through the KV cache, logits copied to the host as
//     generation does), for f32, f16 and bf16 weight matrices;
//   - kernel timings: the GEMM of c_attn at T = 1, attention (prefill and split-cache decode),
//     LayerNorm, the fused multi-step neuron, and the spiking linear layer three ways (count-path
//     DGEMM, spike accumulate, S folded into DGEMM rows) to choose between them.
// Exits 1 with a message when no GPU is present (or the build has no CUDA).
// Usage: bench_gpu [--device cuda:N] [--prompt-tokens N] [--decode-tokens N] [--repeats N]
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <random>
#include <string>

#include <nlohmann/json.hpp>

#include "bench/bench_util.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include "kernels/spiking.h"
#include "models/gpt2.h"
#ifdef STAC_WITH_CUDA
#include "kernels/cuda/ops.h"
#endif

using namespace stac;
using nlohmann::json;

namespace {

// Fills `n` floats with N(0, scale) cheaply (a 124M-parameter model in about a second).
void fill_random(float* p, int64_t n, uint64_t seed, float scale) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    float table[4096];
    for (float& x : table) x = d(rng);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; ++i) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = table[(s >> 33) & 4095];
    }
}

// GPT-2 weights of `cfg` with random values in one host arena (LayerNorm gains 1, biases small).
Gpt2Weights random_gpt2(const Gpt2Config& cfg) {
    const int64_t C = cfg.n_embd, I = cfg.inner(), V = cfg.vocab_size;
    std::vector<std::pair<Tensor*, Shape>> want;
    Gpt2Weights w;
    w.layers.resize(size_t(cfg.n_layer));
    want = {{&w.wte, {V, C}}, {&w.wpe, {cfg.n_positions, C}}, {&w.lnf_g, {C}}, {&w.lnf_b, {C}}};
    for (auto& L : w.layers)
        want.insert(want.end(), {{&L.ln1_g, {C}}, {&L.ln1_b, {C}}, {&L.attn_w, {C, 3 * C}}, {&L.attn_b, {3 * C}},
                                 {&L.proj_w, {C, C}}, {&L.proj_b, {C}}, {&L.ln2_g, {C}}, {&L.ln2_b, {C}},
                                 {&L.fc_w, {C, I}}, {&L.fc_b, {I}}, {&L.fc_proj_w, {I, C}}, {&L.fc_proj_b, {C}}});
    size_t total = 0;
    for (auto& [t, s] : want) total += (size_t(s.numel()) * 4 + 63) / 64 * 64;
    w.arena = Storage::allocate(total, Device::cpu());
    size_t off = 0;
    uint64_t seed = 1;
    for (auto& [t, s] : want) {
        *t = Tensor::view_of(w.arena, off, s, DType::F32);
        const bool gain = s.rank() == 1 && (t == &w.lnf_g || std::any_of(w.layers.begin(), w.layers.end(), [&](const Gpt2Layer& L) {
                                                 return t == &L.ln1_g || t == &L.ln2_g;
                                             }));
        if (gain) std::fill(t->data<float>(), t->data<float>() + s.numel(), 1.0f);
        else fill_random(t->data<float>(), s.numel(), seed++, s.rank() == 1 ? 0.01f : 0.02f);
        off += (size_t(s.numel()) * 4 + 63) / 64 * 64;
    }
    w.lm_head = w.wte;
    w.source_dtype = "random";
    return w;
}

json timing_json(const bench::Timing& t, double work, const char* unit) {
    return {{"median_ms", t.median * 1e3}, {"min_ms", t.min * 1e3}, {"max_ms", t.max * 1e3}, {"repeats", t.repeats},
            {unit, work / t.median}};
}

}  // namespace

int main(int argc, char** argv) {
    try {
        Device dev = Device::cuda(0);
        int prompt_tokens = 128, decode_tokens = 128, repeats = 5;
        for (int i = 1; i < argc; ++i) {
            auto next = [&] {
                if (i + 1 >= argc) fail("{} needs a value", argv[i]);
                return std::string(argv[++i]);
            };
            if (!std::strcmp(argv[i], "--device")) dev = Device::parse(next());
            else if (!std::strcmp(argv[i], "--prompt-tokens")) prompt_tokens = std::max(1, std::stoi(next()));
            else if (!std::strcmp(argv[i], "--decode-tokens")) decode_tokens = std::max(1, std::stoi(next()));
            else if (!std::strcmp(argv[i], "--repeats")) repeats = std::max(1, std::stoi(next()));
            else {
                std::fprintf(stderr, "usage: bench_gpu [--device cuda:N] [--prompt-tokens N] [--decode-tokens N] [--repeats N]\n");
                return 2;
            }
        }
        if (!dev.is_cuda()) fail("bench_gpu measures a GPU: --device must be cuda or cuda:N");
        require_device(dev);  // the clear message without a GPU or without a CUDA build
        json out = {{"bench", "gpu"}, {"device", dev.str()}, {"device_name", device_description(dev)}};

        // ---- GPT-2 124M shape, random weights
        Gpt2Config cfg;  // the defaults are GPT-2 small: 12 layers, 768 wide, 12 heads, 1024 positions, 50257 tokens
        const Gpt2Model host_model(cfg, random_gpt2(cfg));
        json e2e = json::array();
        const int64_t V = cfg.vocab_size;
        std::vector<int32_t> prompt(static_cast<size_t>(prompt_tokens), 0);
        for (int i = 0; i < prompt_tokens; ++i) prompt[size_t(i)] = int32_t((i * 7919) % V);
        for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
            const auto m = host_model.to({dev, dt});
            auto st = m->new_state(prompt_tokens + decode_tokens);
            Tensor logits = Tensor::empty({1, V}, DType::F32);
            const auto prefill = bench::time_it(
                [&] {
                    st->clear();
                    m->forward(prompt, *st, LogitRows::Last, logits);
                },
                1, repeats);
            // Decode: after the prompt, one token per forward; each repeat decodes decode_tokens
            // tokens. With CUDA graphs (the default) and without, to show what the graph saves.
            json row = {{"model", "gpt2-124M (random weights)"},
                        {"weights", std::string(dtype_name(dt))},
                        {"prompt", timing_json(prefill, prompt_tokens, "tokens_per_s")},
                        {"prompt_tokens", prompt_tokens},
                        {"decode_tokens", decode_tokens},
                        {"decode_context", {prompt_tokens, prompt_tokens + decode_tokens}}};
            for (bool graphs : {true, false}) {
                m->set_cuda_graphs(graphs);
                auto sd = m->new_state(prompt_tokens + decode_tokens);
                m->forward(prompt, *sd, LogitRows::Last, logits);
                const auto decode = bench::time_it(
                    [&] {
                        sd->truncate(prompt_tokens);
                        for (int i = 0; i < decode_tokens; ++i) {
                            const int32_t id[1] = {int32_t((i * 31 + 7) % V)};
                            m->forward(id, *sd, LogitRows::Last, logits);
                        }
                    },
                    1, repeats);
                row[graphs ? "decode" : "decode_no_graph"] = timing_json(decode, decode_tokens, "tokens_per_s");
                std::fprintf(stderr, "gpt2-124M %s: prompt %.0f tok/s, decode %.1f tok/s (%s CUDA graph)\n",
                             std::string(dtype_name(dt)).c_str(), prompt_tokens / prefill.median,
                             decode_tokens / decode.median, graphs ? "with" : "without");
            }
            e2e.push_back(row);
        }
        out["gpt2"] = e2e;

        // ---- kernels
        json k = json::object();
        auto on = [&](Shape s, uint64_t seed, float scale = 1.0f) {
            Tensor t = Tensor::empty(s, DType::F32);
            fill_random(t.data<float>(), t.numel(), seed, scale);
            return t.to(dev);
        };
        auto timed = [&](auto&& f) { return bench::time_it([&] { f(); synchronize(dev); }, 3, std::max(repeats, 10)); };
        {
            const int64_t C = 768;
            const Tensor x = on({1, C}, 1), w = on({C, 3 * C}, 2, 0.02f), b = on({3 * C}, 3);
            Tensor o = Tensor::empty({1, 3 * C}, DType::F32, dev);
            for (DType dt : {DType::F32, DType::F16}) {
                const Tensor wd = dt == DType::F32 ? w : w.to(Device::cpu()).to(dt).to(dev);
                const auto t = timed([&] { kernels::linear(o, x, wd, b); });
                k[std::string("linear_T1_768x2304_") + std::string(dtype_name(dt))] =
                    timing_json(t, double(wd.nbytes()) / 1e9, "weight_GB_per_s");
            }
        }
        {
            const int64_t H = 12, D = 64, cap = 1024, C = H * D;
            const Tensor kc = on({H, cap, D}, 4), vc = on({H, cap, D}, 5);
            for (int64_t T : {int64_t(1), int64_t(512)}) {
                const int64_t P = T == 1 ? cap - 1 : 0;
                const Tensor qkv = on({T, 3 * C}, 6);
                Tensor o = Tensor::empty({T, C}, DType::F32, dev);
                const auto t = timed([&] { kernels::attention(o, qkv, kc, vc, P, 0.125f, Tensor()); });
                k[T == 1 ? "attention_decode_L1024" : "attention_prefill_T512"] =
                    timing_json(t, double(H) * T * (P + T + 1) / (T == 1 ? 1 : 2) * D * 4 / 1e9, "GFLOP_per_s");
            }
            const Tensor x = on({512, C}, 7), g = on({C}, 8), bb = on({C}, 9);
            Tensor o = Tensor::empty({512, C}, DType::F32, dev);
            k["layernorm_512x768"] = timing_json(timed([&] { kernels::layernorm(o, x, g, bb, 1e-5f); }),
                                                 2.0 * x.nbytes() / 1e9, "GB_per_s");
        }
        {
            const int64_t T = 128, N = 3072;
            const int S = 16;
            const Tensor x = on({T, N}, 10, 4.0f), inv = on({1}, 11);
            Tensor counts = Tensor::empty({T, N}, DType::I8, dev), spikes = Tensor::empty({S, T, N}, DType::I8, dev);
            const kernels::SiteBounds bnd{inv, -8, 8};
            k["neurons_layerwise_128x3072_S16"] = timing_json(
                timed([&] { kernels::neurons_layerwise(counts, spikes, x, bnd, S); }), double(T) * N * S / 1e9,
                "Gneuron_steps_per_s");
            // The spiking linear layer (c_fc shape) three ways, on the spikes just made.
            const int64_t K = N, Nout = 768;
            Tensor wd = Tensor::empty({K, Nout}, DType::F64);
            for (int64_t i = 0; i < wd.numel(); ++i) wd.data<double>()[i] = double(int64_t(i * 2654435761u % 4001) - 2000);
            const Tensor wg = wd.to(dev), mult = on({Nout}, 12, 1e-3f), bias = on({Nout}, 13);
            Tensor o = Tensor::empty({T, Nout}, DType::F32, dev);
            k["linear_counts_128x3072x768"] = timing_json(
                timed([&] { kernels::linear_counts(o, counts, wg, mult, bias, Tensor()); }), double(T) * K * Nout * 2 / 1e9,
                "GFLOP_per_s");
            k["linear_spikes_accumulate_S16"] = timing_json(
                timed([&] { kernels::linear_spikes(o, spikes, wg, mult, bias, Tensor()); }), double(T) * K * Nout * 2 / 1e9,
                "count_GFLOP_equiv_per_s");
#ifdef STAC_WITH_CUDA
            k["linear_spikes_folded_S16"] = timing_json(timed([&] {
                                                            cuda::linear_spikes(dev.index, o.raw_data<float>(), spikes.raw_data<int8_t>(), S, T, K,
                                                                                wg.raw_data<double>(), Nout, mult.raw_data<float>(),
                                                                                bias.raw_data<float>(), cuda::SpikeLinear::Folded);
                                                        }),
                                                        double(T) * K * Nout * 2 / 1e9, "count_GFLOP_equiv_per_s");
#endif
        }
        out["kernels"] = k;
        std::puts(out.dump(2).c_str());
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_gpu: error: %s\n", e.what());
        return 1;
    }
}
