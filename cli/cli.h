// The stac command line: a small option parser with generated --help, and helpers shared by the
// subcommands. Exit codes: 0 success, 1 error (stac::Error), 2 bad usage (UsageError).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "convert/spiking_model.h"
#include "models/language_model.h"
#include "models/sampler.h"
#include "models/tokenizer.h"

namespace stac::cli {

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class ArgParser {
public:
    ArgParser(std::string command, std::string synopsis, std::string description);
    // An option taking a value ("--name VALUE" or "--name=VALUE"); def is shown in --help.
    ArgParser& option(const std::string& name, const std::string& metavar, const std::string& help,
                      const std::string& def = "");
    ArgParser& flag(const std::string& name, const std::string& help);
    // Free arguments, described in --help.
    ArgParser& positionals(const std::string& metavar, const std::string& help);

    // Parses argv[first..]; returns false when --help was asked (help already printed to stdout).
    bool parse(int argc, char** argv, int first);

    bool has(const std::string& name) const;  // given on the command line (or a flag set)
    bool knows(const std::string& name) const { return find(name) != nullptr; }  // an option of this command
    std::string get(const std::string& name) const;  // value or default ("" if none)
    int64_t get_int(const std::string& name, int64_t lo, int64_t hi) const;
    double get_double(const std::string& name) const;
    const std::vector<std::string>& args() const { return args_; }
    std::string help() const;

private:
    struct Opt {
        std::string name, metavar, help, def;
        bool is_flag = false;
    };
    const Opt* find(const std::string& name) const;
    std::string command_, synopsis_, description_, pos_metavar_, pos_help_;
    bool takes_positionals_ = false;
    std::vector<Opt> opts_;
    std::map<std::string, std::string> values_;
    std::vector<std::string> args_;
};

// "1,2,3" or "[1, 2, 3]" -> ids (UsageError on anything else)
std::vector<int32_t> parse_id_list(const std::string& text, const std::string& option);
// The same list syntax for integer options, each in [lo, hi] (UsageError naming --option otherwise).
std::vector<int> parse_int_list(const std::string& text, const std::string& option, int lo, int hi);

// Options every model-taking command shares: --model, --threads, --device and --weights-dtype.
void add_model_option(ArgParser& p);
// Where --device and --weights-dtype put the model. UsageError for malformed values; stac::Error
// naming the device when it is not compiled in, missing or busy (unless !require_present: then the
// caller's move to the device checks it, e.g. after an SNN directory said which model it holds).
Placement placement_from(const ArgParser& p, bool require_present = true);
// For commands that run on the CPU only so far: checks the device exists, then refuses a GPU clearly.
void require_cpu(const ArgParser& p, const char* command);
// Sets the kernels' thread count from --threads, if given (model_dir_from does it too).
void apply_threads(const ArgParser& p);
void add_sampling_options(ArgParser& p, const SamplingOptions& defaults);
// How a converted SNN directory runs: --path, --schedule, --timesteps, --qann.
void add_snn_options(ArgParser& p);
SamplingOptions sampling_from(const ArgParser& p);

// A model directory opened for a command: the model and, if the directory has one, its tokenizer.
struct OpenModel {
    std::filesystem::path dir;
    std::shared_ptr<LanguageModel> model;   // what runs: the float model, or the SNN (or its QANN)
    std::shared_ptr<SpikingModel> snn;      // set when dir is an SNN directory (GPT-2 or Llama)
    std::unique_ptr<Tokenizer> tokenizer;
    Placement placement;                    // where the model runs
    std::string describe() const;           // "gpt2 float" / "SNN layerwise spike S=16 L=8" ...
    const Tokenizer& need_tokenizer(const std::string& why) const;  // throws naming the directory
};
// The model directory of --model ($STAC_MODEL, else the bundled model); applies --threads.
std::filesystem::path model_dir_from(const ArgParser& p);
OpenModel open_model(const ArgParser& p);

// The prompt ids of --prompt TEXT or --ids LIST (exactly one of them).
std::vector<int32_t> prompt_ids(const ArgParser& p, const OpenModel& m);

std::string json_float_array(const float* x, int64_t n);
std::string json_int_array(const int32_t* x, int64_t n);

int cmd_generate(int argc, char** argv);
int cmd_chat(int argc, char** argv);
int cmd_tokenize(int argc, char** argv);
int cmd_logits(int argc, char** argv);
int cmd_inspect(int argc, char** argv);
int cmd_convert(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_test_conversation(int argc, char** argv);
int cmd_demo(int argc, char** argv);
int cmd_bench(int argc, char** argv);

// The bundled default model of this source tree (empty when it is not there).
std::filesystem::path bundled_model_dir();

}  // namespace stac::cli
