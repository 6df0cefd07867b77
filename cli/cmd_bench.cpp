// stac bench: end-to-end speed, named as llama-bench names it: prompt processing (ppN: N tokens in
// one batched pass from an empty cache, logits for the last one) and token generation (tgN: N
// single-token steps from an empty cache, logits every step), in tokens per second, for the float
// ANN (f32 and bf16 weights), the QANN, and the SNN (count and spike paths, several S).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench/bench_util.h"
#include "convert/convert.h"
#include "core/error.h"
#include "core/parallel.h"
#include "kernels/cpu/gemm.h"
#include "models/llama.h"
#include "models/model_dir.h"
#include "cli/cli.h"

namespace stac::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct BenchTest {
    std::string name;  // "pp512", "tg128"
    bool prompt;       // pp: one batched pass; tg: one token at a time
    int64_t n;
};

BenchTest parse_test(const std::string& s) {
    if ((s.rfind("pp", 0) == 0 || s.rfind("tg", 0) == 0) && s.size() > 2) {
        try {
            size_t used = 0;
            const long long n = std::stoll(s.substr(2), &used);
            if (used == s.size() - 2 && n > 0) return {s, s[0] == 'p', n};
        } catch (...) {
        }
    }
    throw UsageError(fmt::format("--tests: '{}' is not ppN or tgN (e.g. pp512, tg128)", s));
}

std::vector<std::string> split_list(const std::string& s) {
    std::vector<std::string> out;
    size_t b = 0;
    while (b <= s.size()) {
        const size_t e = std::min(s.find(',', b), s.size());
        if (e > b) out.push_back(s.substr(b, e - b));
        b = e + 1;
    }
    return out;
}

std::string cpu_model_name() {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("model name", 0) == 0) {
            const size_t c = line.find(':');
            if (c != std::string::npos) return line.substr(line.find_first_not_of(' ', c + 1));
        }
    return "unknown";
}

// One measured configuration: a model to run and how.
struct Run {
    std::string name;     // "ann-f32", "snn-spike"
    int timesteps = 0;    // SNN runs
    std::shared_ptr<LanguageModel> model;
    WeightFormat format = WeightFormat::F32;  // ANN runs
};

}  // namespace

int cmd_bench(int argc, char** argv) {
    ArgParser p("bench", "[--model DIR | --shape gpt2|distilgpt2] [options]",
                "End-to-end speed in tokens per second, named as llama-bench names it: ppN = N prompt tokens in\n"
                "one batched pass from an empty cache (logits for the last one only), tgN = N tokens generated one\n"
                "at a time from an empty cache (logits every step). Each figure: warm-up runs, then timed repeats\n"
                "(until --repeats or --max-seconds), reported as median, min and max tokens/s.\n"
                "Runs: ann-f32 and ann-bf16 (the float model with f32 or bf16 matrices; bf16: GPT-2 only), qann (the quantized\n"
                "network), snn-count and snn-spike (the layer-wise SNN, count path and S-step spike path, at each\n"
                "S of --timesteps). On a float model the QANN/SNN are converted first (calibrated on random\n"
                "tokens: speed does not depend on what the thresholds are). On an SNN directory its own spec is\n"
                "used. Token ids are random. Tests longer than the model's n_positions are skipped.");
    add_model_option(p);
    p.option("shape", "gpt2|distilgpt2", "random weights of this shape instead of a model directory (124M and 82M parameters)");
    p.option("runs", "LIST", "what to run", "ann-f32,ann-bf16,qann,snn-count,snn-spike");
    p.option("tests", "LIST", "ppN and tgN tests", "pp128,pp512,tg128");
    p.option("threads-list", "LIST", "thread counts to measure", "1,2");
    p.option("timesteps", "LIST", "S of the SNN runs", "8,16,32");
    p.option("levels", "L", "levels of the conversion (float models)", "8");
    p.option("warmup", "N", "untimed runs before timing", "1");
    p.option("repeats", "N", "timed runs (at most)", "5");
    p.option("max-seconds", "X", "stop repeating a figure once its timed runs took X seconds (at least one run)", "20");
    p.option("seed", "N", "seed of the random weights and token ids", "1");
    p.option("json", "FILE", "also write all figures as JSON (- for stdout, then the table goes to stderr)");
    p.flag("quiet", "no progress lines");
    if (!p.parse(argc, argv, 2)) return 0;

    require_cpu(p, "bench (bench/bench_gpu measures a GPU)");
    if (p.has("threads")) throw UsageError("--threads: stac bench measures each count of --threads-list");
    if (p.has("weights-dtype"))
        throw UsageError("--weights-dtype: stac bench measures both weight formats through --runs (ann-f32, ann-bf16)");
    const auto runs_wanted = split_list(p.get("runs"));
    for (const auto& r : runs_wanted)
        if (r != "ann-f32" && r != "ann-bf16" && r != "qann" && r != "snn-count" && r != "snn-spike")
            throw UsageError(fmt::format("--runs: unknown run '{}' (ann-f32, ann-bf16, qann, snn-count, snn-spike)", r));
    std::vector<BenchTest> tests;
    for (const auto& t : split_list(p.get("tests"))) tests.push_back(parse_test(t));
    if (tests.empty()) throw UsageError("--tests is empty");
    const auto threads_list = parse_int_list(p.get("threads-list"), "threads-list", 1, 1024);
    const auto s_list = parse_int_list(p.get("timesteps"), "timesteps", 1, 4096);
    const int warmup = int(p.get_int("warmup", 0, 100)), repeats = int(p.get_int("repeats", 1, 1000));
    const double max_seconds = p.get_double("max-seconds");
    const uint64_t seed = uint64_t(p.get_int("seed", 0, INT64_MAX));
    const bool json_stdout = p.get("json") == "-";
    std::FILE* table = json_stdout ? stderr : stdout;
    const bool quiet = p.has("quiet");

    // The model: a GPT-2 (which can also hold bf16 matrices) or a Llama.
    std::shared_ptr<LanguageModel> base;
    std::shared_ptr<Gpt2Model> gpt2;  // base, when it is a GPT-2
    std::optional<SnnSpec> snn_spec;
    std::string model_desc;
    if (p.has("shape")) {
        if (p.has("model")) throw UsageError("give --model or --shape, not both");
        Gpt2Config cfg;  // gpt2 (124M)
        if (p.get("shape") == "distilgpt2") cfg.n_layer = 6;
        else if (p.get("shape") != "gpt2") throw UsageError("--shape: expected gpt2 or distilgpt2");
        apply_threads(p);
        base = std::make_shared<Gpt2Model>(cfg, Gpt2Weights::random(cfg, seed));
        model_desc = fmt::format("{} shape, random weights (seed {})", p.get("shape"), seed);
    } else {
        const fs::path dir = model_dir_from(p);
        if (is_snn_dir(dir)) {
            LoadedSnn l = load_snn_model(dir);
            base = std::const_pointer_cast<LanguageModel>(l.base);
            snn_spec = std::move(l.spec);
        } else {
            base = load_language_model(dir);
        }
        model_desc = dir.string();
    }
    gpt2 = std::dynamic_pointer_cast<Gpt2Model>(base);
    const SiteLayout layout = site_layout(*base);  // refuses what cannot be converted
    const int64_t V = base->info().vocab_size, n_positions = base->info().n_positions;
    const int64_t parameters = gpt2 ? gpt2->weights().parameter_count()
                                    : std::dynamic_pointer_cast<LlamaModel>(base)->weights().parameter_count();
    std::vector<std::string> runs_to_do;
    for (const auto& r : runs_wanted) {
        if (r == "ann-bf16" && !gpt2) {
            if (p.has("runs")) throw UsageError(fmt::format("--runs ann-bf16: bf16 matrices are a GPT-2 option; {} is {}", model_desc, layout.architecture));
            continue;  // not in the default list for other architectures
        }
        runs_to_do.push_back(r);
    }
    std::mt19937_64 rng(seed);
    auto random_ids = [&](int64_t n) {
        std::vector<int32_t> ids(static_cast<size_t>(n));
        for (auto& id : ids) id = int32_t(rng() % uint64_t(V));
        return ids;
    };

    const bool need_snn = std::any_of(runs_to_do.begin(), runs_to_do.end(), [](const std::string& r) { return r == "qann" || r.rfind("snn", 0) == 0; });
    if (need_snn && !snn_spec) {
        ConvertOptions o;
        o.levels = int(p.get_int("levels", 1, spiking_max_levels()));
        o.timesteps = std::max<int>(o.levels, int(s_list.front()));
        o.progress = !quiet;
        std::vector<std::vector<int32_t>> data;
        for (int i = 0; i < 4; ++i) data.push_back(random_ids(std::min<int64_t>(64, n_positions)));
        snn_spec = convert_model_on(base, data, o);
    }

    // The configurations, in the order asked.
    std::vector<Run> runs;
    for (const auto& r : runs_to_do) {
        if (r == "ann-f32" || r == "ann-bf16")
            runs.push_back({r, 0, base, r == "ann-f32" ? WeightFormat::F32 : WeightFormat::BF16});
        else if (r == "qann") {
            RunOptions o;
            o.mode = RunMode::Qann;
            runs.push_back({r, 0, make_spiking_model(base, *snn_spec, o)});
        } else {
            for (int64_t S : s_list) {
                RunOptions o;
                o.mode = RunMode::Snn;
                o.path = r == "snn-count" ? SpikePath::Count : SpikePath::Spike;
                o.timesteps = int(S);
                runs.push_back({r, int(S), make_spiking_model(base, *snn_spec, o)});
            }
        }
    }

    json results = json::array();
    const int64_t n_embd = layout.width[size_t(SiteKind::AttnIn)], n_head = layout.width[size_t(SiteKind::Q)] / layout.head_dim;
    fmt::print(table, "model: {} ({}, n_layer {}, n_embd {}, vocab {}, {} parameters)\n", model_desc, layout.architecture,
               layout.n_layer, n_embd, V, parameters);
    fmt::print(table, "{:<16} {:>7} {:>8} {:>12} {:>12} {:>12} {:>7}\n", "run", "threads", "test", "median t/s",
               "min t/s", "max t/s", "repeats");
    for (int64_t threads : threads_list) {
        set_num_threads(int(threads));
        for (Run& run : runs) {
            if (gpt2) gpt2->set_weight_format(run.format);
            const std::string label = run.timesteps ? fmt::format("{} S={}", run.name, run.timesteps) : run.name;
            for (const BenchTest& t : tests) {
                if (t.n > n_positions) {
                    fmt::print(table, "{:<16} {:>7} {:>8}   skipped: {} tokens exceed n_positions = {}\n", label, threads,
                               t.name, t.n, n_positions);
                    continue;
                }
                if (!quiet) std::fprintf(stderr, "bench: %s, %lld threads, %s ...\n", label.c_str(), (long long)threads, t.name.c_str());
                auto state = run.model->new_state(t.n);
                Tensor logits = Tensor::empty({1, V}, DType::F32);
                const std::vector<int32_t> ids = random_ids(t.n);
                auto once = [&] {
                    state->clear();
                    if (t.prompt) {
                        run.model->forward(ids, *state, LogitRows::Last, logits);
                    } else {
                        for (int64_t i = 0; i < t.n; ++i)
                            run.model->forward(std::span<const int32_t>(&ids[size_t(i)], 1), *state, LogitRows::Last, logits);
                    }
                };
                for (int i = 0; i < warmup; ++i) once();
                std::vector<double> secs;
                double spent = 0;
                while (int(secs.size()) < repeats && (secs.empty() || spent < max_seconds)) {
                    const auto t0 = std::chrono::steady_clock::now();
                    once();
                    secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
                    spent += secs.back();
                }
                const bench::Timing tm = bench::summarize(secs);
                const double tps_med = double(t.n) / tm.median, tps_min = double(t.n) / tm.max, tps_max = double(t.n) / tm.min;
                fmt::print(table, "{:<16} {:>7} {:>8} {:>12.2f} {:>12.2f} {:>12.2f} {:>7}\n", label, threads, t.name,
                           tps_med, tps_min, tps_max, tm.repeats);
                std::fflush(table);
                json r = {{"run", run.name},
                          {"threads", threads},
                          {"test", t.name},
                          {"n_tokens", t.n},
                          {"repeats", tm.repeats},
                          {"warmup", warmup},
                          {"tokens_per_s", {{"median", tps_med}, {"min", tps_min}, {"max", tps_max}}},
                          {"seconds", {{"median", tm.median}, {"min", tm.min}, {"max", tm.max}}}};
                if (run.timesteps) r["timesteps"] = run.timesteps;
                if (run.name == "ann-bf16") r["bf16_kernel"] = cpu::bf16_kernel_name();
                results.push_back(r);
            }
        }
    }
    if (gpt2) gpt2->set_weight_format(WeightFormat::F32);

    if (p.has("json")) {
        json out = {{"bench", "stac bench"},
                    {"machine", {{"cpu", cpu_model_name()},
                                 {"hardware_threads", std::thread::hardware_concurrency()},
                                 {"openmp", threads_available()},
                                 {"avx512bf16", cpu::cpu_has_avx512bf16()}}},
                    {"model", {{"source", model_desc},
                               {"architecture", layout.architecture},
                               {"n_layer", layout.n_layer},
                               {"n_embd", n_embd},
                               {"n_head", n_head},
                               {"vocab_size", V},
                               {"parameters", parameters}}},
                    {"results", results}};
        if (snn_spec) out["snn"] = {{"levels", snn_spec->levels}, {"sites", snn_spec->sites.str()}};
        if (json_stdout) std::puts(out.dump(2).c_str());
        else {
            std::ofstream f(p.get("json"));
            if (!f) fail("{}: cannot write", p.get("json"));
            f << out.dump(2) << "\n";
        }
    }
    return 0;
}

}  // namespace stac::cli
