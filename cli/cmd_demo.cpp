// stac demo: the main job — convert a model to a spiking network, hold a short scripted conversation
// with the SNN next to the float model, and print fidelity, spike and energy figures.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "convert/convert.h"
#include "convert/evaluate.h"
#include "core/error.h"
#include "core/json_file.h"
#include "models/chat.h"
#include "models/model_dir.h"
#include "cli/cli.h"

namespace stac::cli {

namespace fs = std::filesystem;

int cmd_demo(int argc, char** argv) {
    ArgParser p("demo", "[--model DIR] [--out SNNDIR | --snn SNNDIR] [options]",
                "The main job. Converts the model (default: the bundled one) to a spiking network with a progress\n"
                "bar, holds a short scripted conversation with the SNN next to the float model (greedy, the same\n"
                "turns), and prints a report: perplexity and top-1 agreement of the ANN, QANN and SNN on held-out\n"
                "text, firing rate, synaptic operations and the energy estimate.");
    add_model_option(p);
    p.option("out", "SNNDIR", "where to write the converted model", "stac-demo-snn");
    p.option("snn", "SNNDIR", "use this converted model instead of converting");
    p.option("timesteps", "S", "timesteps of the conversion", "16");
    p.option("levels", "L", "levels of the conversion", "8");
    p.option("path", "spike|count", "SNN execution path (the same numbers; spike runs the S-step loop)", "spike");
    p.option("max-new-tokens", "N", "tokens per reply", "24");
    p.option("text", "FILE", "held-out text (default: models/bundled/heldout.txt of this source tree)");
    p.option("eval-tokens", "N", "tokens of held-out text to evaluate", "1024");
    if (!p.parse(argc, argv, 2)) return 0;
    require_cpu(p, "demo");
    const auto t0 = std::chrono::steady_clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };

    // 1. The SNN: convert (or load).
    fs::path snn_dir;
    if (p.has("snn")) {
        snn_dir = p.get("snn");
    } else {
        const fs::path src = model_dir_from(p);
        if (is_snn_dir(src)) throw UsageError(fmt::format("{} is already an SNN: pass it as --snn", src.string()));
        snn_dir = p.get("out");
        ConvertOptions o;
        o.timesteps = int(p.get_int("timesteps", 1, 4096));
        o.levels = int(p.get_int("levels", 1, spiking_max_levels()));
        fmt::print("== converting {} to a spiking network (S = {}, L = {}) into {}\n", src.string(), o.timesteps, o.levels,
                   snn_dir.string());
        std::fflush(stdout);
        std::shared_ptr<const LanguageModel> base = load_language_model(src);
        const auto tok = load_tokenizer(src);
        const SnnSpec spec = convert_model(base, tok.get(), o);
        save_snn_model(snn_dir, src, spec);
        fmt::print("   calibrated on {} samples ({} tokens) in {:.1f} s\n", spec.calibration.value("samples", 0),
                   spec.calibration.value("tokens", 0), elapsed());
    }
    LoadedSnn l = load_snn_model(snn_dir);
    const auto tok = load_tokenizer(snn_dir);
    if (!tok) fail("{}: has no tokenizer files; the demo talks in text", snn_dir.string());
    RunOptions run{RunMode::Snn, Schedule::LayerWise, SpikePath::Spike, l.spec.timesteps};
    try {
        run.path = spike_path_from_name(p.get("path"));
    } catch (const Error& e) {
        throw UsageError(e.what());
    }
    std::shared_ptr<SpikingModel> snn = l.make(run);
    const int64_t max_new = p.get_int("max-new-tokens", 1, 1024);

    // 2. A scripted conversation, float and spiking side by side.
    fmt::print("\n== a scripted conversation: the float ANN and the SNN ({} path, S = {}, L = {}), greedy\n",
               spike_path_name(run.path), l.spec.timesteps, l.spec.levels);
    SamplingOptions greedy;
    greedy.repetition_penalty = 1.3f;
    ChatSession ann_chat(*l.base, *tok, greedy), snn_chat(*snn, *tok, greedy);
    for (const char* line : {"Hello! Who are you?", "Tell me something funny.", "What is the meaning of life?"}) {
        fmt::print("User: {}\n", line);
        const auto a = ann_chat.turn(line, max_new);
        fmt::print("  ANN: {}\n", a.text);
        std::fflush(stdout);
        const auto s = snn_chat.turn(line, max_new);
        fmt::print("  SNN: {}\n", s.text);
        std::fflush(stdout);
    }
    const SpikeStats chat_stats = snn->stats(snn_chat.session().state());

    // 3. Fidelity on held-out text.
    const fs::path text_path = p.has("text") ? fs::path(p.get("text")) : fs::path(STAC_DATA_DIR) / "models/bundled/heldout.txt";
    std::vector<int32_t> ids;
    if (fs::exists(text_path)) ids = tok->encode(read_text_file(text_path), {.allow_special = false});
    else
        for (const char* t : builtin_calibration_prompts()) {
            auto v = tok->encode(std::string(t) + "\n", {.allow_special = false});
            ids.insert(ids.end(), v.begin(), v.end());
        }
    const int64_t n_eval = p.get_int("eval-tokens", 2, int64_t(1) << 30);
    if (int64_t(ids.size()) > n_eval) ids.resize(size_t(n_eval));
    const auto windows = text_windows(ids, std::min<int64_t>(l.base->info().n_positions, 1024));
    fmt::print("\n== held-out text: {} tokens of {}\n", ids.size(), fs::exists(text_path) ? text_path.string() : "the built-in prompts");
    std::fflush(stdout);
    const auto qann = l.make({RunMode::Qann, Schedule::LayerWise, SpikePath::Count, l.spec.timesteps});
    const Evaluation ev = evaluate(*l.base, qann.get(), snn.get(), windows, true);
    const SpikeStats& ss = ev.spikes;
    const double per = ss.tokens ? 1.0 / double(ss.tokens) : 0.0;

    fmt::print("\n== report: {} as an SNN ({} schedule, {} path, S = {}, L = {}, {} sites)\n", snn_dir.string(),
               schedule_name(run.schedule), spike_path_name(run.path), l.spec.timesteps, l.spec.levels, l.spec.sites.str());
    fmt::print("  {:<14} {:>11} {:>14} {:>9}\n", "", "perplexity", "top-1 vs ANN", "mean KL");
    fmt::print("  {:<14} {:>11.3f} {:>14} {:>9}\n", "ANN (float)", ev.ann.perplexity(), "-", "-");
    fmt::print("  {:<14} {:>11.3f} {:>14.4f} {:>9.4f}\n", "QANN", ev.qann->perplexity(), ev.qann->agreement(), ev.qann->mean_kl());
    fmt::print("  {:<14} {:>11.3f} {:>14.4f} {:>9.4f}   max |SNN - QANN| logit = {}\n", "SNN", ev.snn->perplexity(),
               ev.snn->agreement(), ev.snn->mean_kl(), ev.snn->max_abs_vs_ref);
    fmt::print("  spikes: firing rate {:.4f}; per token {:.4g} spikes, {:.4g} synaptic ops (ACs), {:.4g} MACs left\n",
               ss.firing_rate(), double(ss.total_spikes()) * per, double(ss.total_synops()) * per, double(ss.snn_macs) * per);
    fmt::print("  energy per token: SNN {:.4g} uJ vs ANN {:.4g} uJ (ratio {:.3f}; 45 nm: 4.6 pJ/MAC, 0.9 pJ/AC)\n",
               ss.snn_energy_joules() * per * 1e6, ss.ann_energy_joules() * per * 1e6,
               ss.snn_energy_joules() / std::max(ss.ann_energy_joules(), 1e-30));
    fmt::print("  conversation: {} SNN tokens, firing rate {:.4f}\n", chat_stats.tokens, chat_stats.firing_rate());
    fmt::print("  done in {:.1f} s\n", elapsed());
    return 0;
}

}  // namespace stac::cli
