// Hugging Face tokenizer.json tests: ids bit-exact with tokenizers 0.19.1 on three pipelines
// (fixtures from scripts/reference/make_hf_tokenizer_fixtures.py), both merges formats, round trips,
// the two BPE loops, refusals naming the field, load_tokenizer's choice, and the real SmolLM2
// tokenizer (long; skipped when its directory is absent).
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "helpers.h"
#include "models/hf_tokenizer.h"
#include "models/model_dir.h"

namespace fs = std::filesystem;
using nlohmann::json;
using stac::HfTokenizer;

namespace {

const json& fixture() {
    static const json j = stac::read_json_file(stac::test::fixtures() / "tokenizer" / "hf_tokenizers.json");
    return j;
}

const json& variant(const std::string& name) {
    for (const auto& v : fixture().at("variants"))
        if (v.at("name") == name) return v;
    FAIL("no variant " << name);
    throw;
}

void write_json(const fs::path& path, const json& j) {
    std::ofstream f(path, std::ios::binary);
    f << j.dump();
}

HfTokenizer load_json(const stac::test::TempDir& dir, const json& j, const std::string& name = "tokenizer.json") {
    write_json(dir / name, j);
    return HfTokenizer::load(dir / name);
}

std::string show(const std::vector<int32_t>& ids) {
    std::string s = "[";
    for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
    return s + "]";
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const stac::Error& e) {
        return e.what();
    }
    return "(no stac::Error thrown)";
}

// Exact ids for every case (texts in cases, ids in rec), specials on and off; returns the number
// of cases compared.
size_t check_cases(const HfTokenizer& tok, const json& cases, const json& rec, const std::string& label) {
    size_t failed = 0, n = 0;
    REQUIRE(rec.at("ids").size() == cases.size());
    for (size_t i = 0; i < cases.size(); ++i) {
        const json& c = cases[i];
        const std::string text = c.at("text").get<std::string>();
        const auto want = rec.at("ids")[i].get<std::vector<int32_t>>();
        const json& off = rec.at("ids_specials_as_text");
        const auto want_text = off.contains(std::to_string(i)) ? off[std::to_string(i)].get<std::vector<int32_t>>() : want;
        const auto got = tok.encode(text, {.allow_special = true});
        const auto got_text = tok.encode(text, {.allow_special = false});
        ++n;
        if (got != want || got_text != want_text) {
            if (++failed <= 8)
                FAIL_CHECK(label << " " << c.at("name").get<std::string>() << ":\n  got      " << show(got) << " / "
                                 << show(got_text) << "\n  expected " << show(want) << " / " << show(want_text));
        }
    }
    CHECK_MESSAGE(failed == 0, label << ": " << failed << " of " << n << " cases differ");
    return n;
}

}  // namespace

TEST_CASE("hf-tokenizer: ids equal Hugging Face tokenizers on every fixture case, all three pipelines") {
    REQUIRE(fixture().at("tokenizers_version") == "0.19.1");
    stac::test::TempDir dir;
    size_t total = 0;
    for (const char* name : {"smollm2", "bytelevel", "split", "dropped"}) {
        const json& v = variant(name);
        const HfTokenizer tok = load_json(dir, v.at("tokenizer"));
        int64_t max_id = -1;
        for (const auto& [k, id] : v.at("tokenizer").at("model").at("vocab").items()) max_id = std::max<int64_t>(max_id, id);
        for (const auto& a : v.at("tokenizer").at("added_tokens")) max_id = std::max<int64_t>(max_id, a.at("id"));
        CHECK(tok.vocab_size() == max_id + 1);
        total += check_cases(tok, fixture().at("cases"), v, name);
    }
    CHECK(total > 1000);
}

TEST_CASE("hf-tokenizer: merges as [left, right] pairs (tokenizers >= 0.20) give the same ids") {
    json t = variant("smollm2").at("tokenizer");
    for (auto& m : t["model"]["merges"]) {
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ');
        m = json::array({s.substr(0, sp), s.substr(sp + 1)});
    }
    stac::test::TempDir dir;
    check_cases(load_json(dir, t), fixture().at("cases"), variant("smollm2"), "smollm2 (pair merges)");
}

TEST_CASE("hf-tokenizer: decode(encode(x)) == x, streamed decoding, token lookups") {
    stac::test::TempDir dir;
    const HfTokenizer tok = load_json(dir, variant("smollm2").at("tokenizer"));
    for (const auto& c : fixture().at("cases")) {
        const std::string text = c.at("text").get<std::string>();
        INFO(c.at("name").get<std::string>());
        CHECK(tok.decode(tok.encode(text)) == text);
        CHECK(tok.decode(tok.encode(text, {.allow_special = false})) == text);
        stac::Utf8StreamDecoder dec;
        std::string streamed;
        for (const int32_t id : tok.encode(text)) streamed += dec.push(tok.token_bytes(id));
        CHECK(streamed + dec.flush() == text);
    }
    // Any bytes round-trip, invalid UTF-8 included (each bad byte is an "other" character).
    std::mt19937 rng(5);
    for (int i = 0; i < 300; ++i) {
        std::string s(rng() % 40, '\0');
        for (char& ch : s) ch = static_cast<char>(rng() % 6 == 0 ? '0' + rng() % 10 : rng() % 256);
        CHECK(tok.decode(tok.encode(s)) == s);
    }
    CHECK(tok.token_id("<|im_start|>") == 1);
    CHECK(tok.token_id("<|im_end|>") == 2);
    CHECK(tok.token_bytes(2) == "<|im_end|>");
    CHECK(tok.eos_id() == 0);  // no tokenizer_config.json: <|endoftext|>
    CHECK(tok.token_id(" the").has_value());
    CHECK_FALSE(tok.token_id("no such token here").has_value());
    CHECK(error_of([&] { tok.decode(std::vector<int32_t>{5, 1000}); }).find("cannot decode id 1000 (position 1)") !=
          std::string::npos);
    CHECK(error_of([&] { (void)tok.token_bytes(-1); }).find("outside the vocabulary") != std::string::npos);
}

TEST_CASE("hf-tokenizer: pre-tokenizer pieces of each pipeline") {
    stac::test::TempDir dir;
    using V = std::vector<std::string>;
    const HfTokenizer smol = load_json(dir, variant("smollm2").at("tokenizer"), "a.json");
    CHECK(smol.pre_tokenize("abc 123x") == V{"abc", " ", "1", "2", "3", "x"});  // digits first, one by one
    CHECK(smol.pre_tokenize("a  b") == V{"a", " ", " b"});
    CHECK(smol.pre_tokenize("end \n") == V{"end", " \n"});
    const HfTokenizer bl = load_json(dir, variant("bytelevel").at("tokenizer"), "b.json");
    CHECK(bl.pre_tokenize("hi there") == V{" hi", " there"});  // add_prefix_space
    CHECK(bl.pre_tokenize(" x") == V{" x"});
    const HfTokenizer sp = load_json(dir, variant("split").at("tokenizer"), "c.json");
    CHECK(sp.pre_tokenize("x 12345y") == V{"x", " ", "12345", "y"});  // Split, then digit runs
}

TEST_CASE("hf-tokenizer: heap BPE agrees with the reference scan") {
    stac::test::TempDir dir;
    const HfTokenizer tok = load_json(dir, variant("smollm2").at("tokenizer"));
    std::mt19937 rng(11);
    const std::string alphabet = "the quick brown fox jumps over a lazy dog Licensee shall ";
    for (int i = 0; i < 300; ++i) {
        std::string p(1 + rng() % 200, ' ');
        for (char& ch : p) ch = rng() % 8 == 0 ? char(rng() % 256) : alphabet[rng() % alphabet.size()];
        const auto ref = tok.bpe_reference(p);
        REQUIRE(tok.bpe_heap(p) == ref);
        CHECK(tok.decode(ref) == p);
    }
}

TEST_CASE("hf-tokenizer: refusals name the file and the field") {
    stac::test::TempDir dir;
    const json good = variant("smollm2").at("tokenizer");
    auto refused = [&](const std::function<void(json&)>& edit) {
        json t = good;
        edit(t);
        write_json(dir / "bad.json", t);
        return error_of([&] { HfTokenizer::load(dir / "bad.json"); });
    };
    auto has = [](const std::string& msg, const std::string& part) {
        INFO(msg);
        CHECK(msg.find(part) != std::string::npos);
        CHECK(msg.find("bad.json") != std::string::npos);
    };
    has(refused([](json& t) { t["normalizer"] = {{"type", "NFC"}}; }), "normalizer of type NFC");
    has(refused([](json& t) { t["model"]["type"] = "WordPiece"; }), "model of type WordPiece");
    has(refused([](json& t) { t["model"]["dropout"] = 0.1; }), "model.dropout");
    has(refused([](json& t) { t["model"]["continuing_subword_prefix"] = "##"; }), "model.continuing_subword_prefix");
    has(refused([](json& t) { t["post_processor"] = {{"type", "TemplateProcessing"}}; }), "post_processor of type TemplateProcessing");
    has(refused([](json& t) { t["decoder"] = {{"type", "Metaspace"}}; }), "decoder of type Metaspace");
    has(refused([](json& t) { t["truncation"] = {{"max_length", 5}}; }), "truncation");
    has(refused([](json& t) { t["pre_tokenizer"]["pretokenizers"][0] = {{"type", "Whitespace"}}; }),
        "pre_tokenizer.pretokenizers[0] of type Whitespace");
    has(refused([](json& t) {
            t["pre_tokenizer"]["pretokenizers"][0] = {
                {"type", "Split"}, {"pattern", {{"Regex", "\\p{N}{1,3}"}}}, {"behavior", "Isolated"}, {"invert", false}};
        }),
        "pre_tokenizer.pretokenizers[0].pattern");
    has(refused([](json& t) { t["pre_tokenizer"] = {{"type", "Digits"}, {"individual_digits", true}}; }),
        "must end with one ByteLevel step");
    has(refused([](json& t) { t["pre_tokenizer"] = nullptr; }), "pre_tokenizer is null");
    has(refused([](json& t) { t["added_tokens"][1]["lstrip"] = true; }), "added_tokens[1] (\"<|im_start|>\") has lstrip true");
    has(refused([](json& t) { t["added_tokens"][1]["id"] = 7; }), "model.vocab gives it id 1");
    has(refused([](json& t) { t["model"]["merges"][3] = "Ġ"; }), "model.merges[3]");
    has(refused([](json& t) { t["model"]["merges"][3] = json::array({"Ġ"}); }), "model.merges[3]");
    has(refused([](json& t) { t["model"]["merges"][4] = "zzzq t"; }), "\"zzzq\" is not in model.vocab");
    has(refused([](json& t) { t["model"]["merges"][5] = t["model"]["merges"][0]; }), "repeats model.merges[0]");
    has(refused([](json& t) { t["model"]["vocab"].erase("a"); }), "no token has id");
    has(refused([](json& t) { t["model"]["vocab"]["a"] = -3; }), "token \"a\" has id -3");
    has(refused([](json& t) { t["model"]["vocab"]["zz-new"] = t["model"]["vocab"]["a"]; }), "is given to both");
    has(refused([](json& t) { t["model"].erase("merges"); }), "model.merges is missing");
    // A duplicate key is seen in the text itself (a JSON object keeps only one).
    {
        std::string text = good.dump();
        const std::string key = "\"Ġthe\":";
        const size_t at = text.find(key);
        REQUIRE(at != std::string::npos);
        text.insert(at, "\"Ġthe\":1,");
        std::ofstream(dir / "bad.json", std::ios::binary) << text;
        has(error_of([&] { HfTokenizer::load(dir / "bad.json"); }), "key \"Ġthe\" appears twice in model.vocab");
    }
    {
        std::ofstream(dir / "bad.json", std::ios::binary) << "{\"model\": ";
        has(error_of([&] { HfTokenizer::load(dir / "bad.json"); }), "not valid JSON");
    }
    CHECK(error_of([&] { HfTokenizer::load(dir / "missing.json"); }).find("missing.json") != std::string::npos);
}

TEST_CASE("hf-tokenizer: bytes without a token are dropped as Hugging Face drops them, never with unk or fallback") {
    stac::test::TempDir dir;
    const json& v = variant("dropped");
    const HfTokenizer tok = load_json(dir, v.at("tokenizer"));
    const std::string text = "a\x04" "b\x1d" "c";
    CHECK(tok.decode(tok.encode(text)) == "abc");
    for (const char* key : {"unk_token", "byte_fallback"}) {
        json t = v.at("tokenizer");
        t["model"][key] = std::string(key) == "unk_token" ? json("<|endoftext|>") : json(true);
        write_json(dir / "bad.json", t);
        const std::string msg = error_of([&] { HfTokenizer::load(dir / "bad.json"); });
        INFO(msg);
        CHECK(msg.find(std::string("model.") + key) != std::string::npos);
        CHECK(msg.find("no token for byte 0x04") != std::string::npos);
    }
}

TEST_CASE("hf-tokenizer: load_tokenizer prefers tokenizer.json and reads eos_token from tokenizer_config.json") {
    stac::test::TempDir dir;
    write_json(dir / "tokenizer.json", variant("smollm2").at("tokenizer"));
    // GPT-2 files beside it are ignored when tokenizer.json is there.
    fs::copy_file(stac::test::repo_root() / "models" / "gpt2-tokenizer" / "vocab.json", dir / "vocab.json");
    fs::copy_file(stac::test::repo_root() / "models" / "gpt2-tokenizer" / "merges.txt", dir / "merges.txt");
    auto tok = stac::load_tokenizer(dir.path());
    REQUIRE(tok);
    CHECK(tok->vocab_size() == 1000);
    CHECK(tok->eos_id() == 0);
    write_json(dir / "tokenizer_config.json", {{"eos_token", "<|im_end|>"}});
    CHECK(stac::load_tokenizer(dir.path())->eos_id() == 2);
    write_json(dir / "tokenizer_config.json", {{"eos_token", {{"content", "<|im_start|>"}}}});
    CHECK(stac::load_tokenizer(dir.path())->eos_id() == 1);
    write_json(dir / "tokenizer_config.json", {{"eos_token", "<nope>"}});
    CHECK(error_of([&] { stac::load_tokenizer(dir.path()); }).find("\"<nope>\"") != std::string::npos);
}

TEST_CASE("hf-tokenizer: the real SmolLM2-135M-Instruct tokenizer.json matches recorded ids" * doctest::test_suite("long")) {
    const char* env = std::getenv("STAC_SMOLLM2_DIR");
    const fs::path dir = env ? fs::path(env) : stac::test::repo_root() / "build-smollm2" / "SmolLM2-135M-Instruct";
    const fs::path rec = stac::test::fixtures() / "tokenizer" / "hf_smollm2_real.json";
    if (!fs::exists(dir / "tokenizer.json") || !fs::exists(rec)) {
        MESSAGE("skipped: no " << (dir / "tokenizer.json").string()
                               << " (make it with scripts/reference/make_smollm2_dir.py, or set STAC_SMOLLM2_DIR)");
        return;
    }
    const HfTokenizer tok = HfTokenizer::load_dir(dir);
    CHECK(tok.vocab_size() == 49152);
    const json j = stac::read_json_file(rec);
    CHECK(check_cases(tok, j.at("cases"), j, "SmolLM2") > 300);
    // Where Hugging Face's decode gives the text back, stac's does too (SmolLM2 lacks 21 bytes).
    const json& lossy = j.at("lossy");
    for (size_t i = 0; i < j.at("cases").size(); ++i) {
        const std::string text = j.at("cases")[i].at("text").get<std::string>();
        if (std::find(lossy.begin(), lossy.end(), json(i)) == lossy.end()) CHECK(tok.decode(tok.encode(text)) == text);
    }
    CHECK(lossy.size() < 60);
}
