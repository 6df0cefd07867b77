// stac convert and stac eval: ANN -> SNN conversion, and fidelity / energy of the result.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "convert/convert.h"
#include "convert/evaluate.h"
#include "core/error.h"
#include "core/json_file.h"
#include "core/sha256.h"
#include "models/model_dir.h"
#include "cli/cli.h"
#include "cli/svg_plot.h"

namespace stac::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The built-in QANN = SNN check after a conversion: one prompt through both, layer-wise.
float self_check(const std::shared_ptr<const LanguageModel>& base, const SnnSpec& spec, const Tokenizer* tok) {
    std::vector<int32_t> ids;
    const int64_t V = base->info().vocab_size;
    if (tok) ids = tok->encode(builtin_calibration_prompts()[1], {.allow_special = false});
    if (ids.empty() || int64_t(ids.size()) > base->info().n_positions)
        for (int i = 0; i < 8; ++i) ids.push_back(int32_t(i % V));
    const int64_t T = int64_t(ids.size());
    const auto q = make_spiking_model(base, spec, {RunMode::Qann, Schedule::LayerWise, SpikePath::Count, spec.timesteps});
    const auto s = make_spiking_model(base, spec, {RunMode::Snn, Schedule::LayerWise, SpikePath::Spike, spec.timesteps});
    Tensor a = Tensor::empty({T, V}, DType::F32), b = Tensor::empty({T, V}, DType::F32);
    auto sa = q->new_state(T), sb = s->new_state(T);
    q->forward(ids, *sa, LogitRows::All, a);
    s->forward(ids, *sb, LogitRows::All, b);
    float m = 0;
    for (int64_t i = 0; i < T * V; ++i) m = std::max(m, std::fabs(a.data<float>()[i] - b.data<float>()[i]));
    return m;
}

}  // namespace

int cmd_convert(int argc, char** argv) {
    ArgParser p("convert", "--model DIR --out SNNDIR [options]",
                "Converts a GPT-2 or a Llama (SmolLM2) into a spiking network (DESIGN §5) and writes an SNN directory: the model's files\n"
                "plus snn_config.json and snn.safetensors (thresholds per site, per channel where chosen). Runs the\n"
                "float model over calibration text (the built-in prompts, plus --calib) and sets each site's\n"
                "threshold from the --percentile of |x|. Given an SNN directory as --model, only re-times it\n"
                "(--timesteps; levels drop to S when S < L, and it says what fidelity is lost) or re-levels it (--levels).");
    add_model_option(p);
    p.option("out", "SNNDIR", "where to write the SNN directory");
    p.option("timesteps", "S", "timesteps per token chunk (S >= L keeps the layer-wise SNN equal to its QANN)", "16");
    p.option("levels", "L", "quantization levels per site: counts in [-L, L] (signed) or [0, L], L <= 127", "8");
    p.option("activation", "keep|relu", "keep GELU (a temporal-difference operator) or replace it by ReLU (GPT-2; Llama keeps its SiLU gate)", "keep");
    p.option("granularity", "channel|tensor", "thresholds per channel (Q, K, V: per head) or per tensor", "channel");
    p.option("percentile", "P", "percentile of |x| a site's largest count stands for (100 = max)", "99.9");
    p.option("sites", "LIST", "spiking sites: default, all, none, or a list of attn_in, attn (q,k,v,probs), attn_out, mlp_in, mlp_act, lm_head_in", "default");
    p.option("token-scale", "auto|on|off",
             "per-token adaptive thresholds at every site but q, k, v: each token's largest value lands on the top count, "
             "so outlier activations are kept, not clipped (layer-wise only; auto: on for Llama, off for GPT-2)", "auto");
    p.option("schedule", "layerwise|streaming", "the schedule the SNN runs in by default (streaming: GPT-2 only)", "layerwise");
    p.option("calib", "FILE", "more calibration text (samples split at blank lines, or lines)");
    p.option("num-samples", "N", "calibration samples in all (built-in prompts first: 32, and for a ChatML chat model the same 32 as conversations)", "128");
    p.option("max-length", "N", "tokens per calibration sample at most", "128");
    p.flag("simplified", "thresholds from the weights alone, no calibration data (lower fidelity; GPT-2 only)");
    p.flag("quiet", "no progress bar or summary");
    if (!p.parse(argc, argv, 2)) return 0;
    require_cpu(p, "convert");
    if (!p.has("out")) throw UsageError("--out SNNDIR is required");
    const fs::path dir = model_dir_from(p), out = p.get("out");
    const bool quiet = p.has("quiet");
    const auto t0 = std::chrono::steady_clock::now();

    if (is_snn_dir(dir)) {  // timestep calibration of an existing SNN
        for (const char* o : {"activation", "granularity", "percentile", "sites", "token-scale", "calib", "num-samples", "max-length"})
            if (p.has(o)) throw UsageError(fmt::format("--{} needs a float model; {} is already an SNN (only --timesteps, --levels, --schedule apply)", o, dir.string()));
        LoadedSnn l = load_snn_model(dir);
        if (p.has("levels")) set_levels(l.spec, int(p.get_int("levels", 1, spiking_max_levels())));
        std::string note;
        if (p.has("timesteps")) note = calibrate_timesteps(l.spec, int(p.get_int("timesteps", 1, 4096)));
        if (p.has("schedule")) l.spec.schedule = schedule_from_name(p.get("schedule"));
        save_snn_model(out, dir, l.spec);
        if (!note.empty()) std::fprintf(stderr, "note: %s\n", note.c_str());
        if (!quiet) fmt::print("wrote {}: S = {}, L = {}, {} schedule\n", out.string(), l.spec.timesteps, l.spec.levels, schedule_name(l.spec.schedule));
        return 0;
    }

    ConvertOptions o;
    o.timesteps = int(p.get_int("timesteps", 1, 4096));
    o.levels = int(p.get_int("levels", 1, spiking_max_levels()));
    const std::string act = p.get("activation");
    if (act == "relu") o.activation = Activation::Relu;
    else if (act != "keep" && act != "gelu") throw UsageError(fmt::format("--activation '{}': use keep or relu", act));
    const std::string gran = p.get("granularity");
    if (gran != "channel" && gran != "tensor") throw UsageError(fmt::format("--granularity '{}': use channel or tensor", gran));
    o.per_channel = gran == "channel";
    o.percentile = float(p.get_double("percentile"));
    try {
        o.sites = SiteSet::parse(p.get("sites"));
        o.schedule = schedule_from_name(p.get("schedule"));
    } catch (const Error& e) {
        throw UsageError(e.what());
    }
    const std::string ts = p.get("token-scale");
    if (ts == "on" || ts == "off") o.token_scale = ts == "on";
    else if (ts != "auto") throw UsageError(fmt::format("--token-scale '{}': use auto, on or off", ts));
    if (p.has("calib")) o.calib_file = fs::path(p.get("calib"));
    o.num_samples = int(p.get_int("num-samples", 1, 1 << 20));
    o.max_length = int(p.get_int("max-length", 2, 1 << 20));
    o.simplified = p.has("simplified");
    o.progress = !quiet;
    if (o.timesteps < o.levels)
        std::fprintf(stderr, "warning: S = %d < L = %d: spike counts cannot reach the top levels; the SNN will not equal its QANN\n",
                     o.timesteps, o.levels);

    std::shared_ptr<const LanguageModel> base = load_language_model(dir);
    if (const auto* g = dynamic_cast<const Gpt2Model*>(base.get()); g && act == "gelu" && g->config().activation == Activation::Relu)
        throw UsageError("--activation gelu: the model uses ReLU; GELU cannot be put back (use keep)");
    const auto tok = load_tokenizer(dir);
    const SnnSpec spec = convert_model(base, tok.get(), o);
    save_snn_model(out, dir, spec);
    const float check = self_check(base, spec, tok.get());
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!quiet) {
        fmt::print("wrote {} in {:.1f} s\n", out.string(), secs);
        fmt::print("  S = {} timesteps, L = {} levels, {} schedule, activation {}, {} thresholds at the {}th percentile\n",
                   spec.timesteps, spec.levels, schedule_name(spec.schedule), activation_name(spec.activation),
                   spec.per_channel ? "per-channel" : "per-tensor", spec.percentile);
        fmt::print("  sites: {}{}\n", spec.sites.str(), spec.token_scale ? ", token-scaled (all but q, k, v)" : "");
        fmt::print("  calibration: {}\n", spec.calibration.dump());
        fmt::print("  check: layer-wise SNN (spike path) vs QANN on a built-in prompt: max |logit diff| = {}\n", check);
    }
    if (check != 0.0f && spec.timesteps >= spec.levels)
        fail("self-check failed: the layer-wise SNN differs from its QANN by {} (please report this)", check);
    return 0;
}

// ---------------------------------------------------------------- eval

int cmd_eval(int argc, char** argv) {
    ArgParser p("eval", "--model DIR [--snn SNNDIR] [--text FILE] [options]",
                "Measures an SNN against its float ANN over a text: perplexity (ANN, QANN, SNN side by side), top-1\n"
                "agreement and KL divergence against the ANN, the largest logit difference against the QANN, and\n"
                "spikes, synaptic operations and the energy estimate (DESIGN §5). --model may itself be the SNN\n"
                "directory. The text is cut into windows of --window tokens, each run from an empty cache.\n"
                "--sweep adds a table over L and S (layer-wise, and streaming for GPT-2), written with --json and drawn with --plot.");
    add_model_option(p);
    p.option("snn", "SNNDIR", "the converted model (default: --model, if it is an SNN directory)");
    p.option("text", "FILE", "evaluation text (default: models/bundled/heldout.txt of this source tree, if present)");
    p.option("max-tokens", "N", "use at most the first N tokens of the text", "2048");
    p.option("window", "N", "tokens per window (0 = n_positions)", "0");
    add_snn_options(p);
    p.flag("special", "the text's special tokens (<|im_start|>, <|endoftext|>, ...) are control tokens, as in a chat transcript");
    p.flag("sweep", "also evaluate a grid of levels and timesteps, in both schedules");
    p.option("levels-list", "LIST", "levels of the sweep", "4,8,16,32");
    p.option("json", "FILE", "write all results as JSON");
    p.option("plot", "FILE.svg", "draw fidelity and energy against S (with --sweep)");
    p.flag("quiet", "no progress bars");
    if (!p.parse(argc, argv, 2)) return 0;
    // Checked before any work: a bad list is a usage error, not a failure after the evaluation.
    const std::vector<int> sweep_levels = parse_int_list(p.get("levels-list"), "levels-list", 1, spiking_max_levels());
    // The models run where --device says (the SNN is built on the CPU, then uploaded).
    const Placement where = placement_from(p, false);  // checked by SpikingModel::to (a Llama SNN: CPU only)
    if (where.weights != DType::F32) throw UsageError("--weights-dtype: eval runs from f32 weights (the SNN's exact layers need them)");
    const bool quiet = p.has("quiet");

    // The SNN, and the ANN it came from (the same weights, checked by sha256 when loading).
    const fs::path model_dir = model_dir_from(p);
    const fs::path snn_dir = p.has("snn") ? fs::path(p.get("snn")) : model_dir;
    if (!is_snn_dir(snn_dir))
        throw UsageError(fmt::format("{} is not an SNN directory: convert it with stac convert, then pass --snn", snn_dir.string()));
    if (p.has("snn") && !is_snn_dir(model_dir)) {
        // --model is the float source: it must be the very model the SNN was converted from.
        const json cfg = read_json_file(snn_dir / "snn_config.json");
        const std::string want = cfg.value("/source_model/sha256"_json_pointer, std::string());
        if (source_weights_sha256(model_dir) != want)
            fail("{}: the weights are not the model {} was converted from", model_dir.string(), snn_dir.string());
    }
    LoadedSnn l = load_snn_model(snn_dir);
    const auto tok = load_tokenizer(snn_dir);
    if (!tok) fail("{}: has no tokenizer files; eval needs text", snn_dir.string());
    RunOptions run;
    run.timesteps = p.has("timesteps") ? int(p.get_int("timesteps", 1, 4096)) : l.spec.timesteps;
    try {
        run.schedule = p.has("schedule") ? schedule_from_name(p.get("schedule")) : l.spec.schedule;
        run.path = spike_path_from_name(p.get("path"));
    } catch (const Error& e) {
        throw UsageError(e.what());
    }
    if (run.schedule == Schedule::Streaming && run.path == SpikePath::Count && !p.has("qann"))
        throw UsageError("--path count exists only in the layer-wise schedule (use --path spike with --schedule streaming)");
    fs::path text_path = p.has("text") ? fs::path(p.get("text")) : fs::path(STAC_DATA_DIR) / "models/bundled/heldout.txt";
    if (!p.has("text") && !fs::exists(text_path)) throw UsageError("give --text FILE (no bundled held-out text in this tree)");
    const std::string text = read_text_file(text_path);
    std::vector<int32_t> ids = tok->encode(text, {.allow_special = p.has("special")});
    const int64_t max_tokens = p.get_int("max-tokens", 2, int64_t(1) << 30);
    if (int64_t(ids.size()) > max_tokens) ids.resize(size_t(max_tokens));
    int64_t window = p.get_int("window", 0, l.base->info().n_positions);
    if (window == 0) window = l.base->info().n_positions;
    const auto windows = text_windows(ids, window);
    if (windows.empty()) fail("{}: too little text to evaluate", text_path.string());

    // Built on the CPU, then moved to --device (a Llama SNN runs on the CPU only and refuses a GPU);
    // the ANN is the QANN's base model, on the same device.
    const auto qann = l.make({RunMode::Qann, Schedule::LayerWise, SpikePath::Count, run.timesteps})->to(where.device);
    const LanguageModel& ann = qann->ann();
    std::unique_ptr<SpikingModel> snn;
    if (!p.has("qann")) snn = l.make(RunOptions{RunMode::Snn, run.schedule, run.path, run.timesteps})->to(where.device);
    const Evaluation ev = evaluate(ann, qann.get(), snn.get(), windows, !quiet);

    json out = {{"snn", snn_dir.string()},
                {"text", text_path.string()},
                {"tokens", ids.size()},
                {"windows", windows.size()},
                {"window", window},
                {"levels", l.spec.levels},
                {"timesteps", run.timesteps},
                {"schedule", std::string(schedule_name(run.schedule))},
                {"path", std::string(spike_path_name(run.path))},
                {"ann", ev.ann.to_json()},
                {"qann", ev.qann->to_json()}};
    fmt::print("{}: {} tokens in {} windows of {} ({})\n", text_path.string(), ids.size(), windows.size(), window, snn_dir.string());
    fmt::print("{:<34} {:>10} {:>10} {:>10} {:>14} {:>8}\n", "model", "perplexity", "top-1 agr", "mean KL", "max|d| vs QANN", "seconds");
    fmt::print("{:<34} {:>10.3f} {:>10} {:>10} {:>14} {:>8.1f}\n", "ANN (float)", ev.ann.perplexity(), "-", "-", "-", ev.ann.seconds);
    fmt::print("{:<34} {:>10.3f} {:>10.4f} {:>10.4f} {:>14} {:>8.1f}\n", fmt::format("QANN (L = {})", l.spec.levels),
               ev.qann->perplexity(), ev.qann->agreement(), ev.qann->mean_kl(), "-", ev.qann->seconds);
    if (snn) {
        const SpikeStats& ss = ev.spikes;
        fmt::print("{:<34} {:>10.3f} {:>10.4f} {:>10.4f} {:>14.3g} {:>8.1f}\n",
                   fmt::format("SNN ({}, {}, S = {})", schedule_name(run.schedule), spike_path_name(run.path), run.timesteps),
                   ev.snn->perplexity(), ev.snn->agreement(), ev.snn->mean_kl(), ev.snn->max_abs_vs_ref, ev.snn->seconds);
        const double per_tok = ss.tokens ? 1.0 / double(ss.tokens) : 0;
        fmt::print("spikes: firing rate {:.4f}, {:.4g} spikes and {:.4g} synaptic ops per token\n", ss.firing_rate(),
                   double(ss.total_spikes()) * per_tok, double(ss.total_synops()) * per_tok);
        fmt::print("energy per token: SNN {:.4g} uJ ({:.4g} MACs + {:.4g} ACs) vs ANN {:.4g} uJ ({:.4g} MACs): ratio {:.3f}\n",
                   ss.snn_energy_joules() * per_tok * 1e6, double(ss.snn_macs) * per_tok, double(ss.total_synops()) * per_tok,
                   ss.ann_energy_joules() * per_tok * 1e6, double(ss.ann_macs) * per_tok,
                   ss.snn_energy_joules() / std::max(ss.ann_energy_joules(), 1e-30));
        out["snn_result"] = ev.snn->to_json();
        out["spikes"] = ss.to_json(true);
    }

    if (p.has("sweep")) {
        const std::vector<int>& levels = sweep_levels;
        json rows = json::array();
        std::vector<Series> agree_series, ppl_series, energy_series;
        fmt::print("\nsweep ({} windows): schedule, L, S -> top-1 agreement with the ANN, perplexity, max|d| vs QANN, firing rate, energy ratio\n",
                   windows.size());
        auto row = [&](Schedule sch, int L, int S, Series& sa, Series& sp, Series& se) {
            SnnSpec spec = l.spec;
            set_levels(spec, L);
            const std::string note = calibrate_timesteps(spec, S);
            const auto q = make_spiking_model(l.base, spec, {RunMode::Qann, Schedule::LayerWise, SpikePath::Count, S})->to(where.device);
            const auto s = make_spiking_model(l.base, spec, {RunMode::Snn, sch, sch == Schedule::LayerWise ? SpikePath::Count : SpikePath::Spike, S})
                               ->to(where.device);
            const Evaluation e = evaluate(ann, q.get(), s.get(), windows, false);
            const SpikeStats& ss = e.spikes;
            const double ratio = ss.snn_energy_joules() / std::max(ss.ann_energy_joules(), 1e-30);
            fmt::print("  {:<10} L = {:<3} S = {:<4} {:>8.4f} {:>10.3f} {:>10.3g} {:>8.4f} {:>8.3f}{}\n", schedule_name(sch), L, S,
                       e.snn->agreement(), e.snn->perplexity(), e.snn->max_abs_vs_ref, ss.firing_rate(), ratio,
                       note.empty() ? "" : "  (levels reduced to S)");
            rows.push_back({{"schedule", std::string(schedule_name(sch))}, {"levels", L}, {"effective_levels", spec.levels},
                            {"timesteps", S}, {"snn", e.snn->to_json()}, {"qann", e.qann->to_json()},
                            {"firing_rate", ss.firing_rate()}, {"energy_ratio", ratio},
                            {"snn_energy_joules_per_token", ss.snn_energy_joules() / std::max<double>(1, double(ss.tokens))}});
            sa.x.push_back(S), sa.y.push_back(e.snn->agreement());
            sp.x.push_back(S), sp.y.push_back(e.snn->perplexity());
            se.x.push_back(S), se.y.push_back(ratio);
        };
        for (int L : levels) {
            Series sa{fmt::format("layer-wise L={}", L), {}, {}}, sp = sa, se = sa;
            for (int S : {std::max(1, L / 2), L, 2 * L}) row(Schedule::LayerWise, L, S, sa, sp, se);
            agree_series.push_back(sa), ppl_series.push_back(sp), energy_series.push_back(se);
        }
        if (l.spec.sites.attention() && l.spec.architecture == "gpt2" && !l.spec.token_scale) {  // streaming: GPT-2 only, no token scaling
            const int L = l.spec.levels;
            Series sa{fmt::format("streaming L={}", L), {}, {}}, sp = sa, se = sa;
            for (int S : {L, 2 * L, 4 * L, 8 * L}) row(Schedule::Streaming, L, S, sa, sp, se);
            agree_series.push_back(sa), ppl_series.push_back(sp), energy_series.push_back(se);
        }
        out["sweep"] = rows;
        if (p.has("plot")) {
            const std::string svg = svg_chart(
                fmt::format("{}: fidelity and energy against timesteps S (ANN perplexity {:.2f})", snn_dir.filename().string(), ev.ann.perplexity()),
                {Panel{"top-1 agreement with the ANN", "timesteps S", "agreement", true, agree_series},
                 Panel{"perplexity", "timesteps S", "perplexity", true, ppl_series},
                 Panel{"energy: SNN / ANN (45 nm)", "timesteps S", "ratio", true, energy_series}});
            std::ofstream(p.get("plot")) << svg;
            if (!quiet) std::fprintf(stderr, "wrote %s\n", p.get("plot").c_str());
        }
    } else if (p.has("plot")) {
        throw UsageError("--plot needs --sweep");
    }
    if (p.has("json")) write_json_file(p.get("json"), out);
    return 0;
}

}  // namespace stac::cli
