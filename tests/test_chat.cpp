// Chat template tests: ChatML ids token by token against transformers' apply_chat_template with
// SmolLM2-Instruct's template (fixture from scripts/reference/make_hf_tokenizer_fixtures.py), the
// format choice, and a ChatML ChatSession whose cache holds exactly the template's ids.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "helpers.h"
#include "models/chat.h"
#include "models/gpt2_tokenizer.h"
#include "models/hf_tokenizer.h"
#include "models/model_dir.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const json& chat_fixture() {
    static const json j = stac::read_json_file(stac::test::fixtures() / "tokenizer" / "hf_chat.json");
    return j;
}

// The "smollm2" tokenizer of hf_tokenizers.json (1000 ids: fits the tiny GPT-2 fixture models).
const stac::HfTokenizer& smollm2_tok() {
    static const stac::HfTokenizer tok = [] {
        const json all = stac::read_json_file(stac::test::fixtures() / "tokenizer" / "hf_tokenizers.json");
        for (const auto& v : all.at("variants")) {
            if (v.at("name") != "smollm2") continue;
            const fs::path p = fs::temp_directory_path() / ("stac-chat-tok-" + std::to_string(::getpid()) + ".json");
            std::ofstream(p, std::ios::binary) << v.at("tokenizer").dump();
            stac::HfTokenizer t = stac::HfTokenizer::load(p);
            fs::remove(p);
            return t;
        }
        throw stac::Error("no smollm2 variant");
    }();
    return tok;
}

std::vector<stac::ChatMessage> messages_of(const json& c) {
    std::vector<stac::ChatMessage> m;
    for (const auto& x : c.at("messages")) m.push_back({x.at("role").get<std::string>(), x.at("content").get<std::string>()});
    return m;
}

void check_conversations(const stac::Tokenizer& tok, const json& conversations) {
    for (const auto& c : conversations) {
        INFO(c.at("name").get<std::string>());
        const auto want = c.at("ids").get<std::vector<int32_t>>();
        const auto got = stac::chatml_ids(tok, messages_of(c), true);
        CHECK(got == want);
        CHECK(tok.decode(got) == c.at("text").get<std::string>());
    }
}

}  // namespace

TEST_CASE("chat: ChatML ids equal transformers' apply_chat_template with SmolLM2's template") {
    const json& f = chat_fixture();
    REQUIRE(f.at("transformers_version") == "4.40.2");
    // The template the C++ implements by hand; a different template in the fixture must fail here.
    const std::string tmpl = f.at("chat_template").get<std::string>();
    CHECK(tmpl.find("'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'") != std::string::npos);
    CHECK(tmpl.find(std::string(stac::kChatMLDefaultSystem)) != std::string::npos);
    REQUIRE(f.at("conversations").size() >= 5);
    check_conversations(smollm2_tok(), f.at("conversations"));
}

TEST_CASE("chat: the format follows the tokenizer") {
    CHECK(stac::chat_format_for(smollm2_tok()) == stac::ChatFormat::ChatML);
    const auto gpt2 = stac::Gpt2Tokenizer::load_dir(stac::test::repo_root() / "models" / "gpt2-tokenizer");
    CHECK(stac::chat_format_for(gpt2) == stac::ChatFormat::UserAssistant);
    const std::vector<stac::ChatMessage> m = {{"user", "hi"}};
    CHECK_THROWS_WITH_AS(stac::chatml_ids(gpt2, m, true), doctest::Contains("<|im_start|>"), stac::Error);
}

TEST_CASE("chat: a ChatML session caches exactly the template's ids, replies in place of the assistant contents") {
    const auto model = stac::load_language_model(stac::test::gpt2_fixture("tiny-gelu-f32"));
    const stac::Tokenizer& tok = smollm2_tok();
    REQUIRE(tok.vocab_size() <= model->info().vocab_size);
    stac::ChatSession chat(*model, tok, stac::SamplingOptions{}, 0, "Be brief.");
    REQUIRE(chat.format() == stac::ChatFormat::ChatML);
    const auto r1 = chat.turn("Hi", 6);
    const int64_t after_turn1 = chat.session().position();
    const auto r2 = chat.turn("Why?", 6);
    CHECK(r1.ids.size() <= 6);
    CHECK(r1.text == tok.decode(r1.ids));

    // Take the replies' tokens out: what is left is the conversation with empty replies, which
    // transformers renders as the "session" fixture.
    const std::vector<int32_t> all(chat.session().tokens().begin(), chat.session().tokens().end());
    REQUIRE(int64_t(all.size()) >= after_turn1);
    std::vector<int32_t> rest(all.begin(), all.begin() + (after_turn1 - int64_t(r1.ids.size())));
    rest.insert(rest.end(), all.begin() + after_turn1, all.end() - int64_t(r2.ids.size()));
    CHECK(std::vector<int32_t>(all.begin() + (after_turn1 - int64_t(r1.ids.size())), all.begin() + after_turn1) == r1.ids);
    CHECK(std::vector<int32_t>(all.end() - int64_t(r2.ids.size()), all.end()) == r2.ids);
    json session_case;
    for (const auto& c : chat_fixture().at("conversations"))
        if (c.at("name") == "session") session_case = c;
    REQUIRE(session_case.is_object());
    CHECK(rest == session_case.at("ids").get<std::vector<int32_t>>());

    // Cached turns are exact: one forward over the whole transcript gives the same last logits.
    stac::Session fresh(*model);
    fresh.feed(all);
    const auto a = chat.session().logits(), b = fresh.logits();
    float max_diff = 0;
    for (size_t i = 0; i < a.size(); ++i) max_diff = std::max(max_diff, std::abs(a[i] - b[i]));
    CHECK(max_diff <= 1e-4f);

    // After reset the system message comes first again.
    chat.reset();
    chat.turn("Hi", 1);
    const auto again = chat.session().tokens();
    CHECK(std::vector<int32_t>(again.begin(), again.begin() + 5) == std::vector<int32_t>(all.begin(), all.begin() + 5));
}

TEST_CASE("chat: ChatML on the real SmolLM2 tokenizer" * doctest::test_suite("long")) {
    const char* env = std::getenv("STAC_SMOLLM2_DIR");
    const fs::path dir = env ? fs::path(env) : stac::test::repo_root() / "build-smollm2" / "SmolLM2-135M-Instruct";
    const fs::path rec = stac::test::fixtures() / "tokenizer" / "hf_smollm2_real.json";
    if (!fs::exists(dir / "tokenizer.json")) {
        MESSAGE("skipped: no " << (dir / "tokenizer.json").string());
        return;
    }
    const auto tok = stac::load_tokenizer(dir);
    REQUIRE(tok);
    CHECK(stac::chat_format_for(*tok) == stac::ChatFormat::ChatML);
    check_conversations(*tok, stac::read_json_file(rec).at("conversations"));
}

TEST_CASE("chat: stac chat and tokenize on a model directory with tokenizer.json") {
    stac::test::TempDir dir;
    stac::test::copy_model(stac::test::gpt2_fixture("tiny-gelu-f32"), dir.path());
    const json all = stac::read_json_file(stac::test::fixtures() / "tokenizer" / "hf_tokenizers.json");
    std::ofstream(dir / "tokenizer.json", std::ios::binary) << all.at("variants")[0].at("tokenizer").dump();
    auto r = stac::test::run_stac({"tokenize", "--model", dir.path().string(), "<|im_start|>user 123"});
    CHECK(r.rc == 0);
    const auto ids = json::parse(r.out).get<std::vector<int32_t>>();
    CHECK(ids == smollm2_tok().encode("<|im_start|>user 123"));
    CHECK(ids.front() == 1);
    r = stac::test::run_stac({"chat", "--model", dir.path().string(), "--max-new-tokens", "4", "--system", "Be brief."},
                             "Hi\nWhy?\n");
    CHECK(r.rc == 0);
    size_t replies = 0;
    for (size_t at = 0; (at = r.out.find("Assistant:", at)) != std::string::npos; at += 10) ++replies;
    CHECK(replies == 2);
    r = stac::test::run_stac({"inspect", "--model", dir.path().string()});
    CHECK(r.out.find("Hugging Face byte-level BPE, 1000 tokens (tokenizer.json)") != std::string::npos);
}
