// bench_tokenizer: BPE encode throughput. Prints one JSON object.
// Usage: bench_tokenizer [--file TEXT_FILE] [--repeats N] [--model DIR]
//   default text: 1 MiB of the GPL-3 text from /usr/share/common-licenses (Debian base-files),
//   repeated; the tokenizer: DIR's (tokenizer.json or vocab.json + merges.txt), by default the
//   project's GPT-2 copy in models/gpt2-tokenizer.
#include <cstdio>
#include <cstring>
#include <string>

#include <nlohmann/json.hpp>

#include "bench/bench_util.h"
#include "core/error.h"
#include "core/json_file.h"
#include "models/model_dir.h"

int main(int argc, char** argv) {
    try {
        std::string file = "/usr/share/common-licenses/GPL-3";
        int repeats = 7;
        std::string dir = std::string(STAC_DATA_DIR) + "/models/gpt2-tokenizer";
        for (int i = 1; i < argc; ++i) {
            if (!std::strcmp(argv[i], "--file") && i + 1 < argc) file = argv[++i];
            else if (!std::strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = std::max(1, std::atoi(argv[++i]));
            else if (!std::strcmp(argv[i], "--model") && i + 1 < argc) dir = argv[++i];
            else {
                std::fprintf(stderr, "usage: bench_tokenizer [--file TEXT_FILE] [--repeats N] [--model DIR]\n");
                return 2;
            }
        }
        std::string text = stac::read_text_file(file);
        if (text.empty()) stac::fail("{}: empty", file);
        while (text.size() < (1u << 20)) text += text;
        text.resize(1u << 20);
        const auto tok = stac::load_tokenizer(dir);
        if (!tok) stac::fail("{}: has no tokenizer files", dir);
        size_t n = 0;
        const auto t = stac::bench::time_it([&] { n = tok->encode(text).size(); }, 1, repeats);
        const nlohmann::json j = {{"bench", "tokenizer_encode"},
                                  {"text", file},
                                  {"tokenizer", dir},
                                  {"bytes", text.size()},
                                  {"tokens", n},
                                  {"repeats", t.repeats},
                                  {"median_ms", t.median * 1e3},
                                  {"min_ms", t.min * 1e3},
                                  {"max_ms", t.max * 1e3},
                                  {"mib_per_s", double(text.size()) / (1 << 20) / t.median}};
        std::puts(j.dump(2).c_str());
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_tokenizer: error: %s\n", e.what());
        return 1;
    }
}
