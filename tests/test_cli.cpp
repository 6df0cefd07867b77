// The stac program: exit codes (0 ok, 1 error, 2 usage), messages, and its JSON against the fixtures.
#include <doctest/doctest.h>

#include "core/safetensors.h"
#include "models/gpt2.h"
#include "tests/helpers.h"

using namespace stac;
using namespace stac::test;
using nlohmann::json;

TEST_CASE("cli: help and usage errors") {
    CliRun r = run_stac({"--help"});
    CHECK(r.rc == 0);
    for (const char* c : {"generate", "chat", "tokenize", "logits", "inspect"}) CHECK(r.out.find(c) != std::string::npos);
    CHECK(run_stac({}).rc == 2);
    r = run_stac({"frobnicate"});
    CHECK(r.rc == 2);
    CHECK(r.err.find("unknown command 'frobnicate'") != std::string::npos);
    for (const char* c : {"generate", "chat", "tokenize", "logits", "inspect"}) {
        r = run_stac({c, "--help"});
        CHECK(r.rc == 0);
        CHECK(r.out.find(std::string("Usage: stac ") + c) != std::string::npos);
    }
    const std::string m = gpt2_fixture("tiny-gelu-f32").string();
    r = run_stac({"logits", "--model", m, "--bogus"});
    CHECK(r.rc == 2);
    CHECK(r.err.find("unknown option --bogus") != std::string::npos);
    r = run_stac({"logits", "--model", m});
    CHECK(r.rc == 2);
    CHECK(r.err.find("exactly one of --prompt TEXT and --ids LIST") != std::string::npos);
    r = run_stac({"logits", "--model", m, "--ids", "1,abc"});
    CHECK(r.rc == 2);
    CHECK(r.err.find("'abc' is not a token id") != std::string::npos);
    r = run_stac({"generate", "--model", m, "--ids", "1", "--top-p", "2"});
    CHECK(r.rc == 2);
    CHECK(r.err.find("--top-p") != std::string::npos);
    // Without --model: $STAC_MODEL, else the bundled model of the source tree.
    setenv("STAC_MODEL", "/nonexistent/from-env", 1);
    r = run_stac({"logits", "--ids", "1"});
    unsetenv("STAC_MODEL");
    CHECK(r.rc == 1);
    CHECK(r.err.find("/nonexistent/from-env") != std::string::npos);
    r = run_stac({"inspect", "--json"});
    if (std::filesystem::exists(repo_root() / "models/bundled/gpt2-fortunes/config.json")) {
        CHECK(r.rc == 0);
        CHECK(r.out.find("models/bundled/gpt2-fortunes") != std::string::npos);
    } else {
        CHECK(r.rc == 2);
        CHECK(r.err.find("--model") != std::string::npos);
    }
}

TEST_CASE("cli: errors exit 1 with a message naming the problem") {
    const std::string m = gpt2_fixture("tiny-gelu-f32").string();
    CliRun r = run_stac({"logits", "--model", "/nonexistent/model", "--ids", "1"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("/nonexistent/model: model directory not found") != std::string::npos);
    r = run_stac({"logits", "--model", m, "--ids", "1,99999"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("token id 99999") != std::string::npos);
    r = run_stac({"generate", "--model", m, "--prompt", "hello"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("has no tokenizer files") != std::string::npos);
    std::vector<std::string> many;
    r = run_stac({"logits", "--model", m, "--ids", join_ids(std::vector<int32_t>(65, 1))});
    CHECK(r.rc == 1);
    CHECK(r.err.find("exceed the model's context of 64") != std::string::npos);

    TempDir tmp;
    copy_model(gpt2_fixture("tiny-gelu-f32"), tmp / "m");
    std::filesystem::resize_file(tmp / "m" / "model.safetensors", 1000);
    r = run_stac({"inspect", "--model", (tmp / "m").string()});
    CHECK(r.rc == 1);
    CHECK(r.err.find("model.safetensors") != std::string::npos);
    CHECK(r.out.empty());
}

TEST_CASE("cli: logits JSON equals transformers, batched and --incremental") {
    const auto dir = gpt2_fixture("tiny-relu-f16");
    const auto ref = load_reference(dir);
    const auto& c = ref.at(1);
    for (bool inc : {false, true}) {
        std::vector<std::string> args = {"logits", "--model", dir.string(), "--ids", join_ids(c.ids)};
        if (inc) args.push_back("--incremental");
        const CliRun r = run_stac(args);
        REQUIRE(r.rc == 0);
        const json j = json::parse(r.out);
        CHECK(j["incremental"] == inc);
        CHECK(j["ids"].get<std::vector<int32_t>>() == c.ids);
        const auto rows = j["logits"].get<std::vector<std::vector<float>>>();
        REQUIRE(rows.size() == c.ids.size());
        float worst = 0;
        for (size_t t = 0; t < rows.size(); ++t)
            worst = std::max(worst, max_abs_diff(rows[t].data(), c.logits.data() + t * size_t(c.vocab), size_t(c.vocab)));
        CHECK(worst <= 1e-4f);
        // greedy = argmax per position of the reference logits
        const auto greedy = j["greedy"].get<std::vector<int32_t>>();
        for (size_t t = 0; t < rows.size(); ++t) {
            const float* row = c.logits.data() + t * size_t(c.vocab);
            CHECK(greedy[t] == int32_t(std::max_element(row, row + c.vocab) - row));
        }
    }
}

TEST_CASE("cli: generate --json continues greedily as transformers does") {
    for (const char* name : {"tiny-gelu-f32", "tiny-gelu-bf16-published"}) {
        const auto dir = gpt2_fixture(name);
        for (const auto& c : load_reference(dir)) {
            if (c.greedy.empty()) continue;
            const CliRun r = run_stac({"generate", "--model", dir.string(), "--ids", join_ids(c.ids), "--max-new-tokens",
                                std::to_string(c.greedy.size()), "--json", "--quiet"});
            REQUIRE(r.rc == 0);
            CHECK(json::parse(r.out)["new_ids"].get<std::vector<int32_t>>() == c.greedy);
        }
    }
}

TEST_CASE("cli: inspect, tokenize and chat on a model with the GPT-2 tokenizer") {
    TempDir tmp;
    const auto dir = tmp / "text-model";
    make_text_model(dir);
    CliRun r = run_stac({"inspect", "--model", dir.string(), "--json"});
    REQUIRE(r.rc == 0);
    const json j = json::parse(r.out);
    CHECK(j["parameters"] == 50257 * 8 + 64 * 8 + (4 * 8 + 8 * 24 + 24 + 64 + 8 + 8 * 32 + 32 + 32 * 8 + 8) + 16);
    CHECK(j["tokenizer"]["vocab_size"] == 50257);

    // Token ids recorded by tiktoken (tests/fixtures/tokenizer).
    const json cases = read_json_file(fixtures() / "tokenizer" / "gpt2_tiktoken.json")["cases"];
    int checked = 0;
    for (const auto& c : cases) {
        const std::string text = c["text"];
        if (text.empty() || text.size() > 200 || text[0] == '-' || !c["allow_special"].get<bool>()) continue;
        if (++checked > 5) break;
        r = run_stac({"tokenize", "--model", dir.string(), "--", text});
        REQUIRE(r.rc == 0);
        CHECK(json::parse(r.out).get<std::vector<int32_t>>() == c["ids"].get<std::vector<int32_t>>());
        r = run_stac({"tokenize", "--model", dir.string(), "--decode", c["ids"].dump()});
        CHECK(r.out == text + "\n");
    }
    CHECK(checked > 0);
    r = run_stac({"tokenize", "--model", dir.string()}, "Hello world");
    CHECK(r.out == "[15496,995]\n");

    // Two turns, a reset, a third: three replies, exit 0.
    r = run_stac({"chat", "--model", dir.string(), "--max-new-tokens", "5", "--seed", "3"}, "Hi there\nHow are you?\n/reset\nAgain\n");
    CHECK(r.rc == 0);
    size_t replies = 0;
    for (size_t p = r.out.find("Assistant:"); p != std::string::npos; p = r.out.find("Assistant:", p + 1)) ++replies;
    CHECK(replies == 3);
    CHECK(r.out.find("[conversation reset]") != std::string::npos);
    // Same seed, same transcript.
    CHECK(run_stac({"chat", "--model", dir.string(), "--max-new-tokens", "5", "--seed", "3"}, "Hi there\nHow are you?\n/reset\nAgain\n").out == r.out);
    // A context too small for the turns: the window moves and says so, nothing crashes.
    r = run_stac({"chat", "--model", dir.string(), "--max-new-tokens", "8", "--max-context", "16"},
             "one two three four five six\nseven eight nine ten\n");
    CHECK(r.rc == 0);
    CHECK(r.err.find("context window full") != std::string::npos);
}

TEST_CASE("cli: --device cuda runs on a GPU, or fails clearly (exit 1) where there is none - bad values are usage errors") {
    const std::string m = gpt2_fixture("tiny-gelu-f32").string();
    CliRun r = run_stac({"logits", "--model", m, "--ids", "1,2", "--device", "gpu"});
    CHECK(r.rc == 2);
    CHECK(r.err.find("unknown device 'gpu'") != std::string::npos);
    r = run_stac({"logits", "--model", m, "--ids", "1,2", "--weights-dtype", "f16"});
    CHECK(r.rc == 2);
    CHECK(r.err.find("needs --device cuda") != std::string::npos);
    r = run_stac({"logits", "--model", m, "--ids", "1,2", "--device", "cuda", "--weights-dtype", "f8"});
    CHECK(r.rc == 2);
    r = run_stac({"convert", "--model", m, "--out", "/nonexistent/x", "--device", "cuda:0"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("cuda:0") != std::string::npos);
    if (cuda_device_count() == 0) {
        for (const char* cmd : {"logits", "generate"}) {
            r = run_stac({cmd, "--model", m, "--ids", "1,2", "--device", "cuda"});
            CHECK(r.rc == 1);
            CHECK(r.err.find(cuda_compiled() ? "device cuda:0: no CUDA GPU is available" : "no CUDA support") != std::string::npos);
            CHECK(r.out.empty());
        }
        TempDir tmp;  // eval runs an SNN directory over text: convert a model with a tokenizer first
        make_text_model(tmp / "text");
        REQUIRE(run_stac({"convert", "--model", (tmp / "text").string(), "--out", (tmp / "snn").string(), "--simplified", "--quiet"}).rc == 0);
        r = run_stac({"eval", "--model", (tmp / "snn").string(), "--device", "cuda:0", "--quiet"});
        CHECK(r.rc == 1);
        CHECK(r.err.find("cuda:0") != std::string::npos);
    } else {
        // The GPU's logits agree with the CPU's (the JSON prints them; compare the greedy ids).
        const CliRun c = run_stac({"logits", "--model", m, "--ids", "1,2,3,4"});
        r = run_stac({"logits", "--model", m, "--ids", "1,2,3,4", "--device", "cuda"});
        CHECK(r.rc == 0);
        const auto jc = nlohmann::json::parse(c.out), jg = nlohmann::json::parse(r.out);
        CHECK(jg["greedy"] == jc["greedy"]);
        r = run_stac({"logits", "--model", m, "--ids", "1,2,3,4", "--device", "cuda:99"});
        CHECK(r.rc == 1);
        CHECK(r.err.find("GPU(s) present") != std::string::npos);
    }
}

TEST_CASE("cli: stac bench measures pp/tg for each run and thread count and writes JSON - bad tests are refused") {
    const auto dir = gpt2_fixture("tiny-gelu-f32");
    const CliRun r = run_stac({"bench", "--model", dir.string(), "--runs", "ann-f32,ann-bf16,qann,snn-count,snn-spike",
                               "--timesteps", "4", "--levels", "4", "--tests", "pp8,tg3", "--threads-list", "1,2",
                               "--repeats", "2", "--warmup", "0", "--json", "-", "--quiet"});
    REQUIRE(r.rc == 0);
    const auto j = nlohmann::json::parse(r.out);
    // 5 runs x 2 tests x 2 thread counts, each a positive median inside [min, max].
    REQUIRE(j["results"].size() == 20);
    for (const auto& x : j["results"]) {
        const auto& t = x["tokens_per_s"];
        CHECK(t["median"].get<double>() > 0);
        CHECK(t["min"].get<double>() <= t["median"].get<double>());
        CHECK(t["median"].get<double>() <= t["max"].get<double>());
        CHECK((x["test"] == "pp8" || x["test"] == "tg3"));
    }
    CHECK(j["model"]["n_layer"].get<int>() > 0);
    const CliRun bad = run_stac({"bench", "--model", dir.string(), "--tests", "pp0"});
    CHECK(bad.rc == 2);
    CHECK(bad.err.find("pp0") != std::string::npos);
    const CliRun run = run_stac({"bench", "--model", dir.string(), "--runs", "ann-f64"});
    CHECK(run.rc == 2);
    CHECK(run.err.find("ann-f64") != std::string::npos);
}
