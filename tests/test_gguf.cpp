// GGUF: the reader (header, metadata of every value type, tensor infos, alignment, bounds), the
// dequantization of F32/F16/BF16/Q8_0/Q4_0/Q4_1 against the PyPI gguf package, llama GGUF files
// as models (parity with transformers), and the refusal of malformed files, built byte by byte here.
#include <doctest/doctest.h>

#include <cstring>
#include <fstream>
#include <set>

#include "core/gguf.h"
#include "core/json_file.h"
#include "core/safetensors.h"
#include "models/gguf_model.h"
#include "models/model_dir.h"
#include "tests/helpers.h"

using namespace stac;
using namespace stac::test;
using nlohmann::json;

namespace {

std::filesystem::path gguf_fixture(const std::string& name) { return fixtures() / "gguf" / name; }

// Writes GGUF bytes by hand, so each test can break exactly one thing.
struct GgufBuilder {
    std::string out;
    void u32(uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }
    void u64(uint64_t v) { out.append(reinterpret_cast<const char*>(&v), 8); }
    void str(const std::string& s) { u64(s.size()), out += s; }
    void header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) { out += "GGUF", u32(version), u64(n_tensors), u64(n_kv); }
    void kv_string(const std::string& k, const std::string& v) { str(k), u32(8), str(v); }
    void kv_u32(const std::string& k, uint32_t v) { str(k), u32(4), u32(v); }
    void tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
        str(name), u32(uint32_t(ne.size()));
        for (uint64_t d : ne) u64(d);
        u32(type), u64(offset);
    }
    void pad(size_t align = 32) { out.resize((out.size() + align - 1) / align * align, '\0'); }
    void data(size_t n, char c = 0) { out.append(n, c); }
    std::filesystem::path write(const TempDir& tmp, const std::string& name = "m.gguf") const {
        std::ofstream(tmp / name, std::ios::binary) << out;
        return tmp / name;
    }
};

// One well-formed file: an F32 [2, 4] tensor "a" and an F16 [8] tensor "b" (4 + 16 data bytes).
GgufBuilder good_file() {
    GgufBuilder b;
    b.header(3, 2, 1);
    b.kv_string("general.architecture", "test");
    b.tensor("a", {4, 2}, 0, 0);
    b.tensor("b", {8}, 1, 32);
    b.pad();
    b.data(32), b.data(16);
    return b;
}

std::string open_error(const std::filesystem::path& p) {
    try {
        GgufFile::open(p);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST_CASE("gguf: metadata of every value type reads back as the gguf package wrote it") {
    const GgufFile f = GgufFile::open(gguf_fixture("llama-mixed.gguf"));
    const json j = read_json_file(gguf_fixture("llama-mixed.json"));
    CHECK(f.version() == j["gguf_version"][0].get<uint32_t>());
    CHECK(f.alignment() == 32);
    CHECK(f.data_offset() % 32 == 0);
    CHECK(f.get_string("general.architecture") == "llama");
    const json& v = j["values"];
    for (const char* k : {"test.u8", "test.i8", "test.u16", "test.i16", "test.u32", "test.i32", "test.u64", "test.i64"}) {
        CAPTURE(k);
        CHECK(f.get_int(k) == v[k].get<int64_t>());
    }
    CHECK(f.get("test.u8")->type == GgufValueType::U8);
    CHECK(f.get("test.i64")->type == GgufValueType::I64);
    CHECK(f.get_float("test.f32") == 0.25);
    CHECK(f.get_float("test.f64") == v["test.f64"].get<double>());
    CHECK(f.get("test.bool")->b);
    CHECK(f.get_string("test.string") == v["test.string"].get<std::string>());
    const GgufValue& strs = f.get_array("test.strings");
    CHECK(strs.elem_type == GgufValueType::String);
    REQUIRE(strs.arr.size() == 4);
    for (size_t i = 0; i < 4; ++i) CHECK(strs.arr[i].s == v["test.strings"][i].get<std::string>());
    const GgufValue& ints = f.get_array("test.ints");
    REQUIRE(ints.arr.size() == 3);
    CHECK(ints.arr[1].i == -1);
    // typed lookups name the key and the type found
    CHECK_THROWS_WITH_AS(f.get_int("test.string"), doctest::Contains("metadata test.string is a string, expected an integer"), Error);
    CHECK_THROWS_WITH_AS(f.get_string("nope"), doctest::Contains("missing metadata nope"), Error);
}

TEST_CASE("gguf: every tensor dequantizes as the gguf package does (F32, F16, BF16, Q8_0, Q4_0, Q4_1)") {
    const GgufFile f = GgufFile::open(gguf_fixture("llama-mixed.gguf"));
    const json j = read_json_file(gguf_fixture("llama-mixed.json"));
    const SafetensorsFile exp = SafetensorsFile::open(gguf_fixture("llama-mixed.expected.safetensors"));
    std::set<std::string> types;
    REQUIRE(f.tensors().size() == j["types"].size());
    for (const GgufTensorInfo& t : f.tensors()) {
        CAPTURE(t.name);
        CHECK(t.type_name() == j["types"][t.name].get<std::string>());
        types.insert(t.type_name());
        const Tensor want = exp.tensor(t.name);
        REQUIRE(want.shape() == Shape::from(t.shape()));
        std::vector<float> got(size_t(t.numel()));
        f.dequantize(t, got.data());
        float scale = 1e-30f;
        for (int64_t i = 0; i < want.numel(); ++i) scale = std::max(scale, std::fabs(want.data<float>()[i]));
        CHECK(max_abs_diff(got.data(), want.data<float>(), got.size()) <= 1e-6f * scale);
    }
    CHECK(types == std::set<std::string>{"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"});
}

TEST_CASE("gguf: an F32 llama GGUF gives transformers' logits (llama.cpp's q/k row order undone)") {
    const auto model = load_language_model(gguf_fixture("llama-f32.gguf"));
    CHECK(model->info().architecture == "llama");
    const auto dir = fixtures() / "llama" / "tiny-gqa-tied-f32";
    const auto hf = LlamaConfig::load(dir / "config.json");
    const auto& m = dynamic_cast<const LlamaModel&>(*model);
    CHECK(m.config().n_kv_head == hf.n_kv_head);
    CHECK(m.config().rope_theta == hf.rope_theta);
    CHECK(m.config().rms_norm_eps == hf.rms_norm_eps);
    CHECK(m.config().n_positions == hf.n_positions);
    CHECK(m.config().tie_word_embeddings);
    for (const auto& c : load_reference(dir)) {
        const int64_t T = int64_t(c.ids.size()), V = c.vocab;
        auto st = model->new_state();
        Tensor logits = Tensor::empty({T, V}, DType::F32);
        model->forward(c.ids, *st, LogitRows::All, logits);
        CHECK(max_abs_diff(logits.data<float>(), c.logits.data(), c.logits.size()) <= 1e-4f);
    }
}

TEST_CASE("gguf: a quantized llama GGUF runs exactly as the checkpoint of its dequantized weights") {
    // The Hugging Face checkpoint of what the gguf package dequantizes (q/k rows put back by the
    // reference script), next to the fixture's config.json: stac must compute bit-identical logits.
    TempDir tmp;
    const json j = read_json_file(gguf_fixture("llama-mixed.json"));
    const SafetensorsFile exp = SafetensorsFile::open(gguf_fixture("llama-mixed.expected.safetensors"));
    std::vector<std::pair<std::string, Tensor>> ts;
    for (const auto& [gg, hf] : j["hf_names"].items()) {
        const std::string h = hf.get<std::string>();
        ts.emplace_back(h, exp.find("hf." + h) ? exp.tensor("hf." + h) : exp.tensor(gg));
    }
    std::filesystem::copy_file(fixtures() / "llama" / "tiny-gqa-bf16-sharded" / "config.json", tmp / "config.json");
    save_safetensors(tmp / "model.safetensors", ts);
    const auto from_hf = load_language_model(tmp.path());
    const auto from_gguf = load_language_model(gguf_fixture("llama-mixed.gguf"));
    CHECK(dynamic_cast<const LlamaModel&>(*from_gguf).weights().source_dtype == "BF16+F16+F32+Q4_0+Q4_1+Q8_0");
    CHECK(!dynamic_cast<const LlamaModel&>(*from_gguf).config().tie_word_embeddings);
    const std::vector<int32_t> ids = {5, 17, 200, 3, 99, 42, 7, 7, 128, 255, 0, 64};
    const int64_t T = int64_t(ids.size()), V = from_hf->info().vocab_size;
    Tensor a = Tensor::empty({T, V}, DType::F32), b = Tensor::empty({T, V}, DType::F32);
    auto sa = from_hf->new_state(), sb = from_gguf->new_state();
    from_hf->forward(ids, *sa, LogitRows::All, a);
    from_gguf->forward(ids, *sb, LogitRows::All, b);
    CHECK(max_abs_diff(a.data<float>(), b.data<float>(), size_t(T * V)) == 0.0f);
    // and the quantization did change the model: its logits are not the bf16 checkpoint's
    const auto bf16 = load_language_model(fixtures() / "llama" / "tiny-gqa-bf16-sharded");
    auto sc = bf16->new_state();
    Tensor c = Tensor::empty({T, V}, DType::F32);
    bf16->forward(ids, *sc, LogitRows::All, c);
    CHECK(max_abs_diff(a.data<float>(), c.data<float>(), size_t(T * V)) > 1e-3f);
}

TEST_CASE("gguf: malformed files are refused, naming the file and the problem") {
    TempDir tmp;
    CHECK(open_error(good_file().write(tmp)).empty());
    const GgufFile ok = GgufFile::open(good_file().write(tmp));
    CHECK(ok.tensors().size() == 2);
    CHECK(ok.find("b")->shape() == std::vector<int64_t>{8});
    CHECK(ok.find("a")->shape() == std::vector<int64_t>{2, 4});
    CHECK(ok.data_offset() % 32 == 0);

    SUBCASE("magic, version, endianness") {
        GgufBuilder b = good_file();
        b.out[0] = 'X';
        CHECK(open_error(b.write(tmp)).find("not a GGUF file") != std::string::npos);
        b = good_file();
        b.out[4] = 1;
        CHECK(open_error(b.write(tmp)).find("version 1 is not supported") != std::string::npos);
        b = good_file();
        b.out[4] = 0, b.out[7] = 3;
        CHECK(open_error(b.write(tmp)).find("big-endian") != std::string::npos);
        std::ofstream(tmp / "short.gguf") << "GGUF";
        CHECK(open_error(tmp / "short.gguf").find("too short") != std::string::npos);
    }
    SUBCASE("counts and lengths that cannot fit") {
        GgufBuilder b;
        b.header(3, uint64_t(1) << 40, 0);
        b.data(64);
        CHECK(open_error(b.write(tmp)).find("tensor count") != std::string::npos);
        b = {};
        b.header(3, 0, 1);
        b.u64(uint64_t(1) << 60);  // key length
        b.data(16);
        const std::string e = open_error(b.write(tmp));
        CHECK(e.find("metadata key 0") != std::string::npos);
        CHECK(e.find("past the end") != std::string::npos);
        b = {};
        b.header(3, 0, 1);
        b.str("big.array"), b.u32(9), b.u32(4), b.u64(uint64_t(1) << 30);
        b.data(16);
        CHECK(open_error(b.write(tmp)).find("metadata big.array claims 1073741824 elements") != std::string::npos);
    }
    SUBCASE("truncated anywhere: every prefix is refused") {
        const std::string full = good_file().out;
        for (size_t n = 0; n < full.size(); n += 7) {
            std::ofstream(tmp / "t.gguf", std::ios::binary) << full.substr(0, n);
            CAPTURE(n);
            CHECK(!open_error(tmp / "t.gguf").empty());
        }
    }
    SUBCASE("bad metadata: unknown type, duplicate key, bad bool, bad alignment") {
        GgufBuilder b;
        b.header(3, 0, 1);
        b.str("k"), b.u32(13), b.u32(0);
        CHECK(open_error(b.write(tmp)).find("metadata k has unknown value type 13") != std::string::npos);
        b = {};
        b.header(3, 0, 2);
        b.kv_u32("k", 1), b.kv_u32("k", 2);
        CHECK(open_error(b.write(tmp)).find("metadata key k appears more than once") != std::string::npos);
        b = {};
        b.header(3, 0, 1);
        b.str("flag"), b.u32(7), b.out += '\x02';
        CHECK(open_error(b.write(tmp)).find("bool") != std::string::npos);
        b = {};
        b.header(3, 0, 1);
        b.kv_u32("general.alignment", 24);
        CHECK(open_error(b.write(tmp)).find("not a power of two") != std::string::npos);
    }
    SUBCASE("bad tensor infos") {
        auto one = [&](const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t off, size_t data) {
            GgufBuilder b;
            b.header(3, 1, 0);
            b.tensor(name, std::move(ne), type, off);
            b.pad(), b.data(data);
            return open_error(b.write(tmp));
        };
        CHECK(one("w", {4, 1, 1, 1, 1}, 0, 0, 64).find("tensor w has 5 dimensions") != std::string::npos);
        CHECK(one("w", {4, 0}, 0, 0, 64).find("tensor w has dimension 1 = 0") != std::string::npos);
        CHECK(one("w", {4}, 99, 0, 64).find("tensor w has unknown ggml type 99") != std::string::npos);
        CHECK(one("w", {48}, 2, 0, 64).find("row of 48 elements, not a multiple of the block size 32") != std::string::npos);
        CHECK(one("w", {4}, 0, 8, 64).find("offset 8, not a multiple of the alignment 32") != std::string::npos);
        CHECK(one("w", {32, 2}, 0, 0, 64).find("tensor w (256 bytes at data offset 0) runs past the end") != std::string::npos);
        CHECK(one("", {4}, 0, 0, 64).find("empty name") != std::string::npos);
        GgufBuilder b;
        b.header(3, 2, 0);
        b.tensor("x", {16}, 0, 0), b.tensor("y", {16}, 0, 32);
        b.pad(), b.data(96);
        CHECK(open_error(b.write(tmp)).find("tensors x and y overlap") != std::string::npos);
        b = {};
        b.header(3, 2, 0);
        b.tensor("x", {4}, 0, 0), b.tensor("x", {4}, 0, 32);
        b.pad(), b.data(64);
        CHECK(open_error(b.write(tmp)).find("tensor x appears more than once") != std::string::npos);
    }
    SUBCASE("a type stac knows but does not dequantize is refused when read, by name") {
        GgufBuilder b;
        b.header(3, 1, 0);
        b.tensor("k6", {256}, 14, 0);  // Q6_K: one block of 210 bytes
        b.pad(), b.data(224);
        const GgufFile f = GgufFile::open(b.write(tmp));
        std::vector<float> dst(256);
        CHECK_THROWS_WITH_AS(f.dequantize(*f.find("k6"), dst.data()), doctest::Contains("tensor k6 has type Q6_K, which stac does not dequantize"),
                             Error);
    }
    SUBCASE("the real fixture, truncated") {
        const std::string full = slurp(gguf_fixture("llama-f32.gguf"));
        std::ofstream(tmp / "cut.gguf", std::ios::binary) << full.substr(0, full.size() - 100);
        const std::string e = open_error(tmp / "cut.gguf");
        CHECK(e.find("cut.gguf") != std::string::npos);
        CHECK(e.find("runs past the end") != std::string::npos);
    }
}

TEST_CASE("gguf: models from GGUF check their metadata and tensors") {
    TempDir tmp;
    auto model_error = [&](const GgufBuilder& b) {
        try {
            load_language_model(b.write(tmp));
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    GgufBuilder b;
    b.header(3, 0, 1);
    b.kv_string("general.architecture", "mamba");
    CHECK(model_error(b).find("general.architecture \"mamba\" is not supported from GGUF") != std::string::npos);
    b = {};
    b.header(3, 0, 1);
    b.kv_string("general.architecture", "llama");
    CHECK(model_error(b).find("missing metadata llama.block_count") != std::string::npos);
    b = {};
    b.header(3, 0, 0);
    CHECK(model_error(b).find("missing metadata general.architecture") != std::string::npos);

    // The real file with one tensor renamed: refused by the Llama loader under its GGUF name.
    std::string bytes = slurp(gguf_fixture("llama-f32.gguf"));
    const auto at = bytes.find("blk.1.ffn_up.weight");
    REQUIRE(at != std::string::npos);
    bytes.replace(at, 19, "blk.1.ffn_UP.weight");
    std::ofstream(tmp / "renamed.gguf", std::ios::binary) << bytes;
    std::string e;
    try {
        load_language_model(tmp / "renamed.gguf");
    } catch (const Error& x) {
        e = x.what();
    }
    CHECK(e.find("renamed.gguf") != std::string::npos);
    CHECK(e.find("blk.1.ffn_UP.weight") != std::string::npos);
}

TEST_CASE("gguf: stac logits runs a .gguf on token ids and explains that it has no tokenizer") {
    const auto path = gguf_fixture("llama-f32.gguf").string();
    const CliRun ok = run_stac({"logits", "--model", path, "--ids", "1,2,3"});
    CHECK(ok.rc == 0);
    CHECK(ok.out.find("\"logits\"") != std::string::npos);
    const CliRun text = run_stac({"logits", "--model", path, "--prompt", "hello"});
    CHECK(text.rc == 1);
    CHECK(text.err.find("GGUF file carries no tokenizer") != std::string::npos);
}
