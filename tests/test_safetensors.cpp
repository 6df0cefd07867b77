// safetensors: writer/reader round trip, a file written by Python's safetensors package, and every
// malformed file the reader must refuse with an error naming the file and the problem.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "tests/helpers.h"

using namespace stac;
namespace fs = std::filesystem;
using stac::test::TempDir;

namespace {

std::string le64(uint64_t n) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[size_t(i)] = char((n >> (8 * i)) & 0xFF);
    return s;
}

void write_bytes(const fs::path& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    REQUIRE(out.good());
}

std::string read_bytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// [u64 len][header][data], with the header written as given (no padding added).
std::string st_file(const std::string& header, size_t data_bytes, char fill = '\x11') {
    return le64(header.size()) + header + std::string(data_bytes, fill);
}

// Runs `f`, which must throw stac::Error; returns the message (or a marker that fails the checks).
template <typename F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    } catch (const std::exception& e) {
        return std::string("<not a stac::Error> ") + e.what();
    }
    return "<no exception>";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Opening `path` throws stac::Error whose message names the path and every one of `words`.
void check_open_fails(const fs::path& path, std::initializer_list<std::string> words) {
    const std::string msg = error_of([&] { (void)SafetensorsFile::open(path); });
    INFO("file: ", path.filename().string(), "\nmessage: ", msg);
    CHECK_FALSE(contains(msg, "<no exception>"));
    CHECK_FALSE(contains(msg, "<not a stac::Error>"));
    CHECK(contains(msg, path.string()));
    for (const auto& w : words) {
        INFO("expected word: ", w);
        CHECK(contains(msg, w));
    }
}

// Writes `header` + `data_bytes` of data as `name` in `dir` and checks opening it fails naming `words`.
void check_header_fails(const TempDir& dir, const std::string& name, const std::string& header, size_t data_bytes,
                        std::initializer_list<std::string> words) {
    const fs::path p = dir / (name + ".safetensors");
    write_bytes(p, st_file(header, data_bytes));
    check_open_fails(p, words);
}

template <typename T>
Tensor filled(const Shape& shape, std::mt19937& rng) {
    Tensor t = Tensor::empty(shape, dtype_of<T>::value);
    auto* p = static_cast<uint8_t*>(t.raw());
    for (size_t i = 0; i < t.nbytes(); ++i) p[i] = uint8_t(rng());
    return t;
}

Tensor filled16(const Shape& shape, DType dt, std::mt19937& rng) {
    Tensor t = Tensor::empty(shape, dt);
    auto* p = t.raw_data<uint16_t>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = uint16_t(rng());
    return t;
}

}  // namespace

TEST_CASE("safetensors: round trip of every dtype and ranks 0..4 with metadata") {
    TempDir dir;
    std::mt19937 rng(99);
    Tensor base = filled<float>({5, 3}, rng);
    const std::vector<std::pair<std::string, Tensor>> tensors = {
        {"scalar.f32", filled<float>({}, rng)},
        {"vec.f16", filled16({7}, DType::F16, rng)},
        {"mat.bf16", filled16({3, 5}, DType::BF16, rng)},
        {"cube.i32", filled<int32_t>({2, 3, 4}, rng)},
        {"hyper.i8", filled<int8_t>({2, 1, 3, 2}, rng)},
        {"empty.u8", filled<uint8_t>({3, 0}, rng)},
        {"odd.u8", filled<uint8_t>({5}, rng)},  // leaves later tensors at odd data offsets
        {"after_odd.f32", filled<float>({1, 2}, rng)},
        {"slice.f32", base.slice_rows(2, 4)},   // a view with a storage offset saves its own rows
        {"h.0.attn.c_attn.weight", filled16({4, 4}, DType::F16, rng)},
    };
    const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "ünïcödé \"quoted\""}, {"empty", ""}};
    const fs::path path = dir / "model.safetensors";
    save_safetensors(path, tensors, meta);
    REQUIRE(fs::exists(path));
    CHECK_FALSE(fs::exists(path.string() + ".tmp"));

    // Raw layout, read independently of the reader: header length padded to 8, data packed in order.
    const std::string raw = read_bytes(path);
    REQUIRE(raw.size() >= 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(raw[size_t(i)]);
    CHECK(n % 8 == 0);
    size_t total = 0;
    for (const auto& [name, t] : tensors) total += t.nbytes();
    CHECK(raw.size() == 8 + n + total);
    const auto header = nlohmann::json::parse(raw.substr(8, n));
    CHECK(header.at("__metadata__").at("note") == "ünïcödé \"quoted\"");
    size_t off = 0;
    for (const auto& [name, t] : tensors) {
        CAPTURE(name);
        CHECK(header.at(name).at("data_offsets").at(0).get<size_t>() == off);
        CHECK(std::memcmp(raw.data() + 8 + n + off, t.raw(), t.nbytes()) == 0);
        off += t.nbytes();
    }

    const auto f = SafetensorsFile::open(path);
    CHECK(f.path() == path);
    CHECK(f.metadata() == meta);
    CHECK(f.entries().size() == tensors.size());
    for (const auto& [name, t] : tensors) {
        CAPTURE(name);
        const SafetensorsEntry* e = f.find(name);
        REQUIRE(e != nullptr);
        CHECK(e->name == name);
        REQUIRE(e->dtype.has_value());
        CHECK(*e->dtype == t.dtype());
        CHECK(e->dtype_name == std::string(dtype_name(t.dtype())));
        CHECK(Shape::from(e->shape) == t.shape());
        CHECK(e->shape_str() == t.shape().str());
        CHECK(e->nbytes() == t.nbytes());
        CHECK(std::memcmp(f.bytes(*e), t.raw(), t.nbytes()) == 0);
        const Tensor v = f.tensor(name);
        CHECK(v.dtype() == t.dtype());
        CHECK(v.shape() == t.shape());
        CHECK(v.device() == Device::cpu());
        CHECK(reinterpret_cast<uintptr_t>(v.raw()) % dtype_size(v.dtype()) == 0);
        CHECK(std::memcmp(v.raw(), t.raw(), t.nbytes()) == 0);
    }
    CHECK(f.find("absent") == nullptr);
    // the rank-0 tensor is one element
    CHECK(f.tensor("scalar.f32").numel() == 1);
    CHECK(f.tensor("empty.u8").numel() == 0);

    // A tensor view outlives the SafetensorsFile it came from (the mapping is shared).
    Tensor kept;
    {
        const auto g = SafetensorsFile::open(path);
        kept = g.tensor("cube.i32");
    }
    CHECK(std::memcmp(kept.raw(), tensors[3].second.raw(), kept.nbytes()) == 0);

    // Saving without metadata writes no __metadata__; an empty list of tensors is a valid file.
    const fs::path bare = dir / "bare.safetensors";
    save_safetensors(bare, {});
    const auto b = SafetensorsFile::open(bare);
    CHECK(b.entries().empty());
    CHECK(b.metadata().empty());
    CHECK(fs::file_size(bare) % 8 == 0);
}

TEST_CASE("safetensors: a failed save leaves no file") {
    TempDir dir;
    const Tensor t = Tensor::zeros({2}, DType::F32);

    const fs::path nowhere = dir / "no-such-dir" / "x.safetensors";
    CHECK_THROWS_AS(save_safetensors(nowhere, {{"t", t}}), Error);
    CHECK_FALSE(fs::exists(dir / "no-such-dir"));

    const fs::path p = dir / "dup.safetensors";
    CHECK_THROWS_WITH_AS(save_safetensors(p, {{"t", t}, {"t", t}}), doctest::Contains("'t'"), Error);
    CHECK_THROWS_AS(save_safetensors(p, {{"__metadata__", t}}), Error);
    CHECK_THROWS_WITH_AS(save_safetensors(p, {{"u", Tensor()}}), doctest::Contains("undefined"), Error);
    CHECK_FALSE(fs::exists(p));

    // The target is a directory: the write succeeds, the rename cannot; nothing may be left behind.
    const fs::path d = dir / "is-a-dir";
    fs::create_directories(d / "child");
    CHECK_THROWS_AS(save_safetensors(d, {{"t", t}}), Error);
    CHECK(fs::is_directory(d / "child"));
    CHECK_FALSE(fs::exists(d.string() + ".tmp"));

    std::vector<fs::path> left;
    for (const auto& e : fs::directory_iterator(dir.path())) left.push_back(e.path().filename());
    INFO("left in the temp dir: ", left.size());
    CHECK(left.size() == 1);  // only is-a-dir
}

TEST_CASE("safetensors: a file written by Python's safetensors matches reference.json") {
    const fs::path model = stac::test::gpt2_fixture("tiny-gelu-f32");
    const fs::path st = model / "reference.safetensors", js = model / "reference.json";
    if (!fs::exists(st) || !fs::exists(js)) {
        MESSAGE("fixture ", st.string(), " is not there yet: skipping the independent-writer check");
        return;
    }
    std::ifstream in(js);
    const auto ref = nlohmann::json::parse(in);
    REQUIRE(ref.contains("cases"));
    REQUIRE(ref["cases"].size() > 0);

    const auto f = SafetensorsFile::open(st);
    CHECK(f.metadata().count("format") == 1);
    for (size_t k = 0; k < ref["cases"].size(); ++k) {
        const std::string c = "case" + std::to_string(k);
        CAPTURE(c);
        const auto ids = ref["cases"][k]["ids"].get<std::vector<int64_t>>();
        const Tensor t = f.tensor(c + ".ids");
        REQUIRE(t.dtype() == DType::I32);
        REQUIRE(t.shape() == Shape{int64_t(ids.size())});
        for (size_t i = 0; i < ids.size(); ++i) CHECK(t.data<int32_t>()[i] == ids[i]);

        const SafetensorsEntry* e = f.find(c + ".logits");
        REQUIRE(e != nullptr);
        CHECK(e->dtype_name == "F32");
        const Tensor l = f.tensor(c + ".logits");
        CHECK(l.dtype() == DType::F32);
        CHECK(l.shape() == Shape{int64_t(ids.size()), 1000});
        CHECK(std::isfinite(l.data<float>()[0]));
    }
}

TEST_CASE("safetensors: malformed files throw errors naming the file and the problem") {
    TempDir dir;
    const std::string ok_entry = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

    SUBCASE("too short or wrong length") {
        const fs::path empty = dir / "empty.safetensors";
        write_bytes(empty, "");
        check_open_fails(empty, {"0 bytes", "too short"});
        const fs::path seven = dir / "seven.safetensors";
        write_bytes(seven, "1234567");
        check_open_fails(seven, {"7 bytes", "too short"});

        const fs::path past = dir / "past.safetensors";
        write_bytes(past, le64(100) + "{}      ");
        check_open_fails(past, {"100", "past the end"});

        const fs::path huge = dir / "huge.safetensors";
        write_bytes(huge, le64(SafetensorsFile::kMaxHeaderBytes + 1) + "{}      ");
        check_open_fails(huge, {std::to_string(SafetensorsFile::kMaxHeaderBytes + 1), "limit"});
        const fs::path max64 = dir / "max64.safetensors";
        write_bytes(max64, le64(~uint64_t(0)) + "{}      ");
        check_open_fails(max64, {"limit"});
    }

    SUBCASE("header JSON") {
        check_header_fails(dir, "notjson", R"({"w": )", 8, {"not valid JSON"});
        check_header_fails(dir, "zerolen", "", 8, {"not valid JSON"});
        check_header_fails(dir, "trailing", "{} x", 0, {"not valid JSON"});
        check_header_fails(dir, "array", "[1, 2]", 0, {"not a JSON object"});
        check_header_fails(dir, "string", R"("hello")", 0, {"not a JSON object"});
        check_header_fails(dir, "number", "42      ", 0, {"not a JSON object"});
        check_header_fails(dir, "utf8_ff", "{\"w\xff\": " + ok_entry + "}", 8, {"JSON", "UTF-8"});
        check_header_fails(dir, "utf8_overlong", "{\"w\xc0\x80\": " + ok_entry + "}", 8, {"JSON", "UTF-8"});
        check_header_fails(dir, "utf8_surrogate", "{\"w\xed\xa0\x80\": " + ok_entry + "}", 8, {"JSON", "UTF-8"});
        check_header_fails(dir, "utf8_truncated", "{\"__metadata__\": {\"k\": \"\xe2\x82\"}}", 0, {"JSON", "UTF-8"});
    }

    SUBCASE("entries") {
        check_header_fails(dir, "entry_array", R"({"h.0.mlp.c_fc.weight": [1, 2]})", 8, {"tensor h.0.mlp.c_fc.weight", "not an object"});
        check_header_fails(dir, "entry_string", R"({"h.0.mlp.c_fc.weight": "F32"})", 8, {"tensor h.0.mlp.c_fc.weight", "not an object"});
        check_header_fails(dir, "no_dtype", R"({"h.0.mlp.c_fc.weight": {"shape":[2],"data_offsets":[0,8]}})", 8, {"tensor h.0.mlp.c_fc.weight", "dtype"});
        check_header_fails(dir, "dtype_number", R"({"h.0.mlp.c_fc.weight": {"dtype":4,"shape":[2],"data_offsets":[0,8]}})", 8, {"tensor h.0.mlp.c_fc.weight", "dtype"});
        check_header_fails(dir, "no_shape", R"({"h.0.mlp.c_fc.weight": {"dtype":"F32","data_offsets":[0,8]}})", 8, {"tensor h.0.mlp.c_fc.weight", "shape"});
        check_header_fails(dir, "shape_object", R"({"h.0.mlp.c_fc.weight": {"dtype":"F32","shape":{"a":2},"data_offsets":[0,8]}})", 8, {"tensor h.0.mlp.c_fc.weight", "shape"});
        check_header_fails(dir, "no_offsets", R"({"h.0.mlp.c_fc.weight": {"dtype":"F32","shape":[2]}})", 8, {"tensor h.0.mlp.c_fc.weight", "data_offsets"});
        check_header_fails(dir, "three_offsets", R"({"h.0.mlp.c_fc.weight": {"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})", 8, {"tensor h.0.mlp.c_fc.weight", "data_offsets"});
        check_header_fails(dir, "f17", R"({"h.0.mlp.c_fc.weight": {"dtype":"F17","shape":[2],"data_offsets":[0,8]}})", 8, {"tensor h.0.mlp.c_fc.weight", "F17"});
        check_header_fails(dir, "shape_neg", R"({"h.0.mlp.c_fc.weight": {"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, {"tensor h.0.mlp.c_fc.weight", "shape"});
        check_header_fails(dir, "shape_float", R"({"h.0.mlp.c_fc.weight": {"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8, {"tensor h.0.mlp.c_fc.weight", "shape"});
        check_header_fails(dir, "shape_string", R"({"h.0.mlp.c_fc.weight": {"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8, {"tensor h.0.mlp.c_fc.weight", "shape"});
        check_header_fails(dir, "shape_absurd", R"({"h.0.mlp.c_fc.weight": {"dtype":"F32","shape":[4294967296,4294967296,8],"data_offsets":[0,8]}})", 8, {"tensor h.0.mlp.c_fc.weight", "shape"});
        check_header_fails(dir, "offsets_neg", R"({"h.0.mlp.c_fc.weight": {"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", 8, {"tensor h.0.mlp.c_fc.weight", "data_offsets"});
        check_header_fails(dir, "offsets_float", R"({"h.0.mlp.c_fc.weight": {"dtype":"F32","shape":[2],"data_offsets":[0,8.0]}})", 8, {"tensor h.0.mlp.c_fc.weight", "data_offsets"});
        check_header_fails(dir, "begin_after_end", R"({"h.0.mlp.c_fc.weight": {"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8, {"tensor h.0.mlp.c_fc.weight", "begin after end"});
        check_header_fails(dir, "past_data", R"({"h.0.mlp.c_fc.weight": {"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 8, {"tensor h.0.mlp.c_fc.weight", "past the end of the data"});
        check_header_fails(dir, "bytes_mismatch", R"({"h.0.mlp.c_fc.weight": {"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, {"tensor h.0.mlp.c_fc.weight", "12 bytes", "8 bytes"});
        check_header_fails(dir, "bytes_mismatch_bf16", R"({"h.0.mlp.c_fc.weight": {"dtype":"BF16","shape":[2,2],"data_offsets":[0,16]}})", 16, {"tensor h.0.mlp.c_fc.weight", "8 bytes", "16 bytes"});
        check_header_fails(dir, "overlap",
                           R"({"alpha": {"dtype":"F32","shape":[2],"data_offsets":[0,8]}, "beta": {"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                           12, {"alpha", "beta", "overlap"});
        check_header_fails(dir, "same_range",
                           R"({"alpha": {"dtype":"U8","shape":[4],"data_offsets":[0,4]}, "beta": {"dtype":"I8","shape":[4],"data_offsets":[0,4]}})",
                           4, {"tensors alpha", "beta", "overlap"});
        // an empty tensor sorted between two overlapping ones must not hide the overlap
        check_header_fails(dir, "overlap_around_empty",
                           R"({"alpha": {"dtype":"F32","shape":[4],"data_offsets":[0,16]},
                               "beta": {"dtype":"F32","shape":[0],"data_offsets":[4,4]},
                               "gamma": {"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                           16, {"alpha", "gamma", "overlap"});
        check_header_fails(dir, "duplicate",
                           R"({"h.0.mlp.c_fc.weight": {"dtype":"F32","shape":[2],"data_offsets":[0,8]}, "h.0.mlp.c_fc.weight": {"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                           16, {"'h.0.mlp.c_fc.weight'", "more than once"});
        check_header_fails(dir, "extra_field", R"({"h.0.mlp.c_fc.weight": {"dtype":"F32","shape":[2],"data_offsets":[0,8],"stride":[1]}})", 8, {"tensor h.0.mlp.c_fc.weight", "unknown field", "stride"});
        check_header_fails(dir, "meta_number", R"({"__metadata__": {"k": 1}, "w": )" + ok_entry + "}", 8, {"__metadata__", "'k'", "not a string"});
        check_header_fails(dir, "meta_null", R"({"__metadata__": {"k": null}})", 0, {"__metadata__", "not a string"});
        check_header_fails(dir, "meta_array", R"({"__metadata__": ["k", "v"]})", 0, {"__metadata__", "not an object"});
    }

    SUBCASE("truncated file") {
        std::mt19937 rng(5);
        const fs::path good = dir / "good.safetensors";
        save_safetensors(good, {{"a", filled<float>({4, 4}, rng)}, {"b", filled<int32_t>({3}, rng)}});
        REQUIRE_NOTHROW(SafetensorsFile::open(good));
        const std::string bytes = read_bytes(good);
        for (size_t chop : {size_t(1), size_t(4), size_t(12)}) {
            const fs::path cut = dir / ("cut" + std::to_string(chop) + ".safetensors");
            write_bytes(cut, bytes.substr(0, bytes.size() - chop));
            check_open_fails(cut, {"past the end of the data", "truncated"});
        }
        const fs::path header_cut = dir / "header_cut.safetensors";
        write_bytes(header_cut, bytes.substr(0, 20));
        check_open_fails(header_cut, {"past the end"});
    }

    SUBCASE("not a file") {
        const fs::path d = dir / "a-directory.safetensors";
        fs::create_directories(d);
        check_open_fails(d, {"not a regular file"});
        check_open_fails(dir / "missing.safetensors", {"cannot open", "No such file"});
    }
}

TEST_CASE("safetensors: dtypes stac does not hold, missing names and misaligned data") {
    TempDir dir;

    // BOOL (and I64, rank 5) are valid safetensors: the file opens, only tensor() refuses them.
    const std::string header =
        R"({"flags": {"dtype":"BOOL","shape":[3],"data_offsets":[0,3]},)"
        R"( "wide": {"dtype":"I64","shape":[1],"data_offsets":[8,16]},)"
        R"( "deep": {"dtype":"U8","shape":[1,1,1,1,2],"data_offsets":[16,18]}})";
    const fs::path p = dir / "bool.safetensors";
    write_bytes(p, st_file(header, 18, '\x01'));
    const auto f = SafetensorsFile::open(p);
    REQUIRE(f.entries().size() == 3);
    const SafetensorsEntry* e = f.find("flags");
    REQUIRE(e != nullptr);
    CHECK(e->dtype_name == "BOOL");
    CHECK_FALSE(e->dtype.has_value());
    CHECK(e->shape == std::vector<int64_t>{3});
    CHECK(e->nbytes() == 3);
    CHECK(f.bytes(*e)[2] == 1);

    std::string msg = error_of([&] { (void)f.tensor("flags"); });
    CHECK(contains(msg, p.string()));
    CHECK(contains(msg, "flags"));
    CHECK(contains(msg, "BOOL"));
    msg = error_of([&] { (void)f.tensor("wide"); });
    CHECK(contains(msg, "I64"));
    msg = error_of([&] { (void)f.tensor("deep"); });
    CHECK(contains(msg, "deep"));
    CHECK(contains(msg, "rank 5"));
    msg = error_of([&] { (void)f.tensor("missing"); });
    CHECK(contains(msg, p.string()));
    CHECK(contains(msg, "missing"));

    // A header whose length is not a multiple of 8 puts the data at an odd address in the mapping:
    // the reader must still return correct values (by copying).
    const float vals[3] = {1.5f, -2.25f, 3.0e38f};
    const uint16_t halves[2] = {0x3C00, 0xFBFF};
    std::string hdr = R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"h":{"dtype":"F16","shape":[2],"data_offsets":[12,16]}})";
    if (hdr.size() % 2 == 0) hdr += " ";  // odd header length: the data section starts at an odd file offset
    REQUIRE(hdr.size() % 8 != 0);
    std::string data;
    data.append(reinterpret_cast<const char*>(vals), sizeof vals);
    data.append(reinterpret_cast<const char*>(halves), sizeof halves);
    const fs::path q = dir / "unaligned.safetensors";
    write_bytes(q, le64(hdr.size()) + hdr + data);
    const auto g = SafetensorsFile::open(q);
    const Tensor x = g.tensor("x");
    REQUIRE(x.shape() == Shape{3});
    CHECK(reinterpret_cast<uintptr_t>(x.raw()) % 4 == 0);
    CHECK(x.data<float>()[0] == 1.5f);
    CHECK(x.data<float>()[1] == -2.25f);
    CHECK(x.data<float>()[2] == 3.0e38f);
    const Tensor h = g.tensor("h");  // also at an odd address
    CHECK(reinterpret_cast<uintptr_t>(h.raw()) % 2 == 0);
    CHECK(h.raw_data<uint16_t>()[0] == 0x3C00);
    CHECK(h.raw_data<uint16_t>()[1] == 0xFBFF);
    CHECK(h.to(DType::F32).data<float>()[1] == -65504.0f);
}
