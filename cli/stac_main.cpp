// stac: the command-line program. Each subcommand has --help; exit 0 on success, 1 on error, 2 on bad usage.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include <fmt/format.h>

#include "core/error.h"
#include "cli/cli.h"

namespace {

const char* kHelp = R"(stac: GPT-2-family language models on the CPU or an NVIDIA GPU (--device cuda), and converted into
spiking neural networks.

Usage: stac <command> [options]      (stac <command> --help for each command's options)

Commands:
  demo       the main job: convert the model to an SNN, chat with it next to the float model, report
  generate   continue a prompt, streaming tokens as they come
  chat       multi-turn conversation on stdin/stdout (User:/Assistant:, or ChatML), KV cache kept across turns
  tokenize   text to token ids as a JSON array (--decode: ids back to text)
  logits     JSON logits of every position for --ids or --prompt (--incremental: through the KV cache)
  inspect    a model directory's config, parameter count, dtypes, bytes and tokenizer
  convert    ANN -> SNN (GPT-2 or Llama): calibrate, set thresholds, write an SNN directory (or re-time one)
  eval       perplexity, agreement and KL of the QANN and SNN against the ANN, spikes and energy (--sweep)
  test-conversation   checks positions, masks and cached multi-turn = one-shot for ANN, QANN and SNN
  bench      tokens per second (pp512, tg128, ...) of the ANN (f32, bf16), QANN and SNN paths, JSON out

The model is a Hugging Face GPT-2 directory (config.json, model.safetensors, vocab.json, merges.txt),
a Hugging Face Llama directory (SmolLM2; docs/LLAMA.md), a llama .gguf file (token ids only),
or an SNN directory made by stac convert (the same files plus snn_config.json and snn.safetensors),
given with --model DIR or the STAC_MODEL environment variable; without either, the bundled model
(models/bundled/gpt2-fortunes of this source tree: a small GPT-2 trained on Debian's fortunes).
)";

struct Command {
    const char* name;
    int (*run)(int, char**);
};

const Command kCommands[] = {
    {"generate", stac::cli::cmd_generate}, {"chat", stac::cli::cmd_chat},       {"tokenize", stac::cli::cmd_tokenize},
    {"logits", stac::cli::cmd_logits},     {"inspect", stac::cli::cmd_inspect},   {"convert", stac::cli::cmd_convert},
    {"eval", stac::cli::cmd_eval},         {"test-conversation", stac::cli::cmd_test_conversation},
    {"demo", stac::cli::cmd_demo},         {"bench", stac::cli::cmd_bench},
};

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fputs(kHelp, stderr);
        return 2;
    }
    const std::string cmd = argv[1];
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
        std::fputs(kHelp, stdout);
        return 0;
    }
    if (cmd == "--version") {
        std::puts("stac 0.1.0");
        return 0;
    }
    for (const Command& c : kCommands) {
        if (cmd != c.name) continue;
        try {
            return c.run(argc, argv);
        } catch (const stac::cli::UsageError& e) {
            std::fprintf(stderr, "stac %s: %s\nTry 'stac %s --help'.\n", c.name, e.what(), c.name);
            return 2;
        } catch (const stac::Error& e) {
            std::fflush(stdout);
            std::fprintf(stderr, "stac %s: error: %s\n", c.name, e.what());
            return 1;
        } catch (const std::exception& e) {
            std::fflush(stdout);
            std::fprintf(stderr, "stac %s: error: %s\n", c.name, e.what());
            return 1;
        }
    }
    std::fprintf(stderr, "stac: unknown command '%s'\n\n%s", cmd.c_str(), kHelp);
    return 2;
}
