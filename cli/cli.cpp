#include "cli/cli.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

#include "core/error.h"
#include "core/parallel.h"
#include "models/gpt2.h"
#include "convert/convert.h"
#include "models/model_dir.h"

namespace stac::cli {

namespace fs = std::filesystem;

ArgParser::ArgParser(std::string command, std::string synopsis, std::string description)
    : command_(std::move(command)), synopsis_(std::move(synopsis)), description_(std::move(description)) {
    flag("help", "show this help and exit");
}

ArgParser& ArgParser::option(const std::string& name, const std::string& metavar, const std::string& help,
                             const std::string& def) {
    opts_.push_back({name, metavar, help, def, false});
    return *this;
}

ArgParser& ArgParser::flag(const std::string& name, const std::string& help) {
    opts_.push_back({name, "", help, "", true});
    return *this;
}

ArgParser& ArgParser::positionals(const std::string& metavar, const std::string& help) {
    takes_positionals_ = true;
    pos_metavar_ = metavar;
    pos_help_ = help;
    return *this;
}

const ArgParser::Opt* ArgParser::find(const std::string& name) const {
    for (const Opt& o : opts_)
        if (o.name == name) return &o;
    return nullptr;
}

bool ArgParser::parse(int argc, char** argv, int first) {
    bool only_positionals = false;
    for (int i = first; i < argc; ++i) {
        std::string a = argv[i];
        if (only_positionals || a.size() < 2 || a[0] != '-' || (a[1] != '-' && !(a == "-h"))) {
            if (!takes_positionals_) throw UsageError(fmt::format("unexpected argument '{}'", a));
            args_.push_back(a);
            continue;
        }
        if (a == "--") {
            only_positionals = true;
            continue;
        }
        if (a == "-h") a = "--help";
        std::string name = a.substr(2), value;
        bool has_value = false;
        if (const auto eq = name.find('='); eq != std::string::npos) {
            value = name.substr(eq + 1);
            name.resize(eq);
            has_value = true;
        }
        const Opt* o = find(name);
        if (!o) throw UsageError(fmt::format("unknown option --{}", name));
        if (o->is_flag) {
            if (has_value) throw UsageError(fmt::format("option --{} takes no value", name));
            values_.insert_or_assign(name, std::string(1, '1'));  // not = "1": GCC 12 -Wrestrict false positive
        } else {
            if (!has_value) {
                if (i + 1 >= argc) throw UsageError(fmt::format("option --{} needs a value ({})", name, o->metavar));
                value = argv[++i];
            }
            values_[name] = value;
        }
    }
    if (has("help")) {
        std::fputs(help().c_str(), stdout);
        return false;
    }
    return true;
}

bool ArgParser::has(const std::string& name) const { return values_.count(name) != 0; }

std::string ArgParser::get(const std::string& name) const {
    if (auto it = values_.find(name); it != values_.end()) return it->second;
    const Opt* o = find(name);
    return o ? o->def : std::string();
}

int64_t ArgParser::get_int(const std::string& name, int64_t lo, int64_t hi) const {
    const std::string s = get(name);
    int64_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size())
        throw UsageError(fmt::format("--{} expects an integer, got '{}'", name, s));
    if (v < lo || v > hi) throw UsageError(fmt::format("--{} = {} is out of range [{}, {}]", name, v, lo, hi));
    return v;
}

double ArgParser::get_double(const std::string& name) const {
    const std::string s = get(name);
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0' || !std::isfinite(v))
        throw UsageError(fmt::format("--{} expects a number, got '{}'", name, s));
    return v;
}

std::string ArgParser::help() const {
    std::string h = fmt::format("Usage: stac {} {}\n\n{}\n", command_, synopsis_, description_);
    if (takes_positionals_) h += fmt::format("\nArguments:\n  {:<28} {}\n", pos_metavar_, pos_help_);
    h += "\nOptions:\n";
    for (const Opt& o : opts_) {
        const std::string left = o.is_flag ? "--" + o.name : "--" + o.name + " " + o.metavar;
        std::string right = o.help;
        if (!o.def.empty()) right += fmt::format(" (default: {})", o.def);
        h += fmt::format("  {:<28} {}\n", left, right);
    }
    return h;
}

namespace {
// "1,2,3" or "[1, 2, 3]" -> int32 values; `what` names one element in messages.
std::vector<int32_t> parse_int32_list(const std::string& text, const std::string& option, const char* what) {
    std::vector<int32_t> ids;
    std::string t = text;
    if (!t.empty() && t.front() == '[') t = t.substr(1);
    if (!t.empty() && t.back() == ']') t.pop_back();
    size_t i = 0;
    while (i < t.size()) {
        while (i < t.size() && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n')) ++i;
        size_t j = i;
        while (j < t.size() && t[j] != ',') ++j;
        std::string tok = t.substr(i, j - i);
        while (!tok.empty() && (tok.back() == ' ' || tok.back() == '\t' || tok.back() == '\n')) tok.pop_back();
        int64_t v = 0;
        const auto [end, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), v);
        if (tok.empty() || ec != std::errc() || end != tok.data() + tok.size() || v < INT32_MIN || v > INT32_MAX)
            throw UsageError(fmt::format("--{}: '{}' is not {} (expected a list like 1,2,3)", option, tok, what));
        ids.push_back(int32_t(v));
        i = j + 1;
    }
    if (ids.empty()) throw UsageError(fmt::format("--{}: the list is empty (expected a list like 1,2,3)", option));
    return ids;
}
}  // namespace

std::vector<int32_t> parse_id_list(const std::string& text, const std::string& option) {
    return parse_int32_list(text, option, "a token id");
}

std::vector<int> parse_int_list(const std::string& text, const std::string& option, int lo, int hi) {
    std::vector<int> out;
    for (int32_t v : parse_int32_list(text, option, "an integer")) {
        if (v < lo || v > hi) throw UsageError(fmt::format("--{}: {} is out of range [{}, {}]", option, v, lo, hi));
        out.push_back(int(v));
    }
    return out;
}

void add_model_option(ArgParser& p) {
    p.option("model", "DIR", "model or SNN directory (Hugging Face GPT-2 or Llama layout), or a .gguf file (llama; token ids only); default: $STAC_MODEL, else the bundled model");
    p.option("threads", "N", "CPU threads for the kernels (default: all cores)");
    p.option("device", "cpu|cuda[:N]", "where the model runs (a GPU needs a CUDA build; convert, demo and test-conversation run on the CPU; a Llama runs on a GPU with f32 weights, a Llama SNN on the CPU only)", "cpu");
    p.option("weights-dtype", "f32|f16|bf16", "dtype of a float GPT-2's weight matrices, with f32 activations and sums either way: bf16 on the CPU uses the AVX-512 BF16 kernels (half the bytes per decode step); f16 needs a GPU", "f32");
}

Placement placement_from(const ArgParser& p, bool require_present) {
    Placement where;
    try {
        where.device = Device::parse(p.get("device"));
    } catch (const Error& e) {
        throw UsageError(std::string("--device: ") + e.what());
    }
    const std::string w = p.get("weights-dtype");
    if (w == "f32") where.weights = DType::F32;
    else if (w == "f16") where.weights = DType::F16;
    else if (w == "bf16") where.weights = DType::BF16;
    else throw UsageError(fmt::format("--weights-dtype: '{}' is not f32, f16 or bf16", w));
    if (where.device.is_cpu() && where.weights == DType::F16)
        throw UsageError("--weights-dtype f16 needs --device cuda (the CPU computes from f32 or bf16 weights)");
    if (require_present) require_device(where.device);
    return where;
}

void require_cpu(const ArgParser& p, const char* command) {
    const Placement where = placement_from(p);
    if (!where.device.is_cpu())
        fail("--device {}: {} runs on the CPU only so far (on a GPU: generate, chat, logits, inspect, eval)",
             where.device.str(), command);
}

void apply_threads(const ArgParser& p) {
    if (p.has("threads")) set_num_threads(int(p.get_int("threads", 1, 1024)));
}

void add_sampling_options(ArgParser& p, const SamplingOptions& d) {
    p.option("temperature", "T", "sampling temperature; 0 = greedy", fmt::format("{}", d.temperature));
    p.option("top-k", "K", "sample from the K most likely tokens; 0 = off", fmt::format("{}", d.top_k));
    p.option("top-p", "P", "nucleus sampling: smallest set with probability >= P; 1 = off", fmt::format("{}", d.top_p));
    p.option("repetition-penalty", "R", "divide (or multiply, if negative) logits of tokens already in the context by R; 1 = off",
             fmt::format("{}", d.repetition_penalty));
    p.option("seed", "S", "random seed (same seed, same tokens)", fmt::format("{}", d.seed));
}

SamplingOptions sampling_from(const ArgParser& p) {
    SamplingOptions s;
    s.temperature = float(p.get_double("temperature"));
    s.top_k = int(p.get_int("top-k", 0, INT32_MAX));
    s.top_p = float(p.get_double("top-p"));
    s.repetition_penalty = float(p.get_double("repetition-penalty"));
    s.seed = uint64_t(p.get_int("seed", 0, INT64_MAX));
    try {
        s.validate();
    } catch (const Error& e) {
        throw UsageError(e.what());
    }
    return s;
}

void add_snn_options(ArgParser& p) {
    p.option("path", "spike|count", "for an SNN directory: run the S-step spike loop, or one GEMM per layer on the spike counts (layer-wise only; same result)", "spike");
    p.option("schedule", "layerwise|streaming", "for an SNN directory: the schedule (default: the one it was converted for)");
    p.option("timesteps", "S", "for an SNN directory: timesteps per token chunk (default: its snn_config.json)");
    p.flag("qann", "for an SNN directory: run its quantized ANN instead of the spiking network");
}

std::string OpenModel::describe() const {
    const std::string where = placement.device.is_cpu()
                                  ? std::string()
                                  : fmt::format(" on {} ({} weights)", placement.device.str(), dtype_name(placement.weights));
    if (!snn) return "float ANN" + where;
    const RunOptions& r = snn->run_options();
    if (r.mode == RunMode::Qann) return fmt::format("QANN (L = {}){}", snn->spec().levels, where);
    return fmt::format("SNN, {} schedule, {} path, S = {}, L = {}{}", schedule_name(r.schedule), spike_path_name(r.path),
                       r.timesteps, snn->spec().levels, where);
}

const Tokenizer& OpenModel::need_tokenizer(const std::string& why) const {
    std::error_code ec;
    if (!tokenizer && fs::is_regular_file(dir, ec))
        fail("{}: a GGUF file carries no tokenizer stac reads, needed {}; give token ids (--ids), or make a model "
             "directory with tokenizer files from it (scripts/reference/make_smollm2_dir.py)", dir.string(), why);
    if (!tokenizer) fail("{}: has no tokenizer files (tokenizer.json, or vocab.json + merges.txt), needed {}", dir.string(), why);
    return *tokenizer;
}

fs::path bundled_model_dir() {
    const fs::path d = fs::path(STAC_DATA_DIR) / "models" / "bundled" / "gpt2-fortunes";
    std::error_code ec;
    return fs::exists(d / "config.json", ec) ? d : fs::path();
}

fs::path model_dir_from(const ArgParser& p) {
    apply_threads(p);
    if (p.has("model")) return p.get("model");
    if (const char* env = std::getenv("STAC_MODEL"); env && *env) return env;
    if (fs::path d = bundled_model_dir(); !d.empty()) return d;
    throw UsageError("no model given: pass --model DIR (or set STAC_MODEL)");
}

OpenModel open_model(const ArgParser& p) {
    OpenModel m;
    m.dir = model_dir_from(p);
    // The device is checked when the model moves there (load_language_model, SpikingModel::to), so
    // that a Llama SNN says it runs on the CPU only whether or not a GPU is present.
    if (p.knows("device")) m.placement = placement_from(p, false);
    if (is_snn_dir(m.dir)) {
        LoadedSnn l = load_snn_model(m.dir);
        RunOptions run;
        run.timesteps = l.spec.timesteps;
        run.schedule = l.spec.schedule;
        if (p.knows("path")) {
            try {
                run.path = spike_path_from_name(p.get("path"));
                if (p.has("schedule")) run.schedule = schedule_from_name(p.get("schedule"));
            } catch (const Error& e) {
                throw UsageError(e.what());
            }
            if (p.has("timesteps")) run.timesteps = int(p.get_int("timesteps", 1, 4096));
            if (p.has("qann")) run.mode = RunMode::Qann;
            if (run.mode == RunMode::Snn && run.schedule == Schedule::Streaming && run.path == SpikePath::Count)
                throw UsageError("--path count exists only in the layer-wise schedule (use --path spike with --schedule streaming)");
            if (run.timesteps < l.spec.levels && run.mode == RunMode::Snn)
                std::fprintf(stderr, "warning: S = %d < L = %d: spike counts cannot reach the top levels (convert with "
                                     "--timesteps or lower --levels to keep SNN = QANN)\n",
                             run.timesteps, l.spec.levels);
        }
        if (m.placement.weights != DType::F32)
            throw UsageError("--weights-dtype: an SNN directory runs from f32 weights (its exact integer layers need them)");
        m.snn = l.make(run);
        if (!m.placement.device.is_cpu()) m.snn = m.snn->to(m.placement.device);  // a Llama SNN refuses a GPU
        m.model = m.snn;
    } else {
        if (p.knows("path") && (p.has("qann") || p.has("schedule") || p.has("timesteps") || p.has("path")))
            throw UsageError(fmt::format("--path, --schedule, --timesteps and --qann apply to SNN directories; {} is a float model",
                                         m.dir.string()));
        m.model = load_language_model(m.dir, m.placement);
    }
    m.tokenizer = load_tokenizer(m.dir);
    if (m.tokenizer && m.tokenizer->vocab_size() > m.model->info().vocab_size)
        fail("{}: the tokenizer has {} tokens but the model's vocab_size is {}", m.dir.string(),
             m.tokenizer->vocab_size(), m.model->info().vocab_size);
    return m;
}

std::vector<int32_t> prompt_ids(const ArgParser& p, const OpenModel& m) {
    if (p.has("prompt") == p.has("ids")) throw UsageError("give exactly one of --prompt TEXT and --ids LIST");
    if (p.has("ids")) return parse_id_list(p.get("ids"), "ids");
    std::vector<int32_t> ids = m.need_tokenizer("for --prompt").encode(p.get("prompt"));
    if (ids.empty()) throw UsageError("--prompt is empty");
    return ids;
}

std::string json_float_array(const float* x, int64_t n) {
    std::string s = "[";
    for (int64_t i = 0; i < n; ++i) {
        if (i) s += ',';
        if (std::isfinite(x[i])) fmt::format_to(std::back_inserter(s), "{}", x[i]);
        else s += "null";  // JSON has no inf/NaN
    }
    return s + "]";
}

std::string json_int_array(const int32_t* x, int64_t n) {
    std::string s = "[";
    for (int64_t i = 0; i < n; ++i) fmt::format_to(std::back_inserter(s), "{}{}", i ? "," : "", x[i]);
    return s + "]";
}

}  // namespace stac::cli
