// HfTokenizer: reading tokenizer.json, added-token matching, the pre-tokenizer steps, and
// Hugging Face's pair-ranked BPE over the shared merge loop (models/bpe.h).
#include "models/hf_tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>
#include <utility>

#include "core/error.h"
#include "core/json_file.h"
#include "models/bpe.h"
#include "models/byte_level.h"

namespace stac {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The GPT-2 pattern as Hugging Face's ByteLevel writes it, and as tiktoken writes it: a Split
// with either is the scanner of byte_level.h.
constexpr std::string_view kGpt2PatternHf =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kGpt2PatternTiktoken =
    R"('(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Duplicate keys anywhere in the file are refused: a DOM parse would keep one silently (a vocab
// with a repeated spelling, an added token with two ids).
class DuplicateKeyFinder final : public nlohmann::json_sax<json> {
public:
    std::string duplicate, where;  // the repeated key, and the path of the object holding it

    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t&) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool start_object(std::size_t) override { return open(true); }
    bool start_array(std::size_t) override { return open(false); }
    bool end_object() override { return close(); }
    bool end_array() override { return close(); }
    bool key(string_t& k) override {
        Frame& f = frames_.back();
        if (!f.keys.insert(k).second) {
            duplicate = k;
            for (size_t i = 0; i + 1 < frames_.size(); ++i) {
                if (i) where += '.';
                where += frames_[i].object ? std::string_view(frames_[i].last) : std::string_view("[...]");
            }
            return false;
        }
        f.last = k;
        return true;
    }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }

private:
    struct Frame {
        std::set<std::string> keys;
        std::string last;  // the key being read
        bool object;
    };
    std::vector<Frame> frames_;
    bool open(bool object) {
        frames_.push_back({{}, {}, object});
        return true;
    }
    bool close() {
        frames_.pop_back();
        return true;
    }
};

std::string type_of(const json& j) {
    if (j.is_object() && j.contains("type") && j["type"].is_string()) return j["type"].get<std::string>();
    return j.is_object() ? "(no type)" : std::string(j.type_name());
}

bool is_null_or_absent(const json& obj, const char* key) { return !obj.contains(key) || obj[key].is_null(); }

bool get_bool(const std::string& file, const json& obj, const char* key, bool dflt, const std::string& where) {
    if (is_null_or_absent(obj, key)) return dflt;
    if (!obj[key].is_boolean()) fail("{}: {}.{} is {}, expected true or false", file, where, key, obj[key].dump());
    return obj[key].get<bool>();
}

// Rust's char::is_numeric: general category Nd, Nl or No.
bool is_numeric(char32_t cp) {
    switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
        case UTF8PROC_CATEGORY_ND:
        case UTF8PROC_CATEGORY_NL:
        case UTF8PROC_CATEGORY_NO: return true;
        default: return false;
    }
}

struct PreStep {
    enum Kind { Digits, Gpt2Split, ByteLevel } kind;
    bool individual_digits = false;  // Digits
    bool add_prefix_space = false;   // ByteLevel
    bool use_regex = true;           // ByteLevel
};

void parse_pre_tokenizer(const std::string& file, const json& j, const std::string& where,
                         std::vector<PreStep>& steps) {
    const std::string type = type_of(j);
    if (type == "Sequence") {
        if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array())
            fail("{}: {}.pretokenizers is missing or not an array", file, where);
        for (size_t i = 0; i < j["pretokenizers"].size(); ++i)
            parse_pre_tokenizer(file, j["pretokenizers"][i], fmt::format("{}.pretokenizers[{}]", where, i), steps);
    } else if (type == "ByteLevel") {
        // Hugging Face's defaults when a field is absent: add_prefix_space true, use_regex true.
        steps.push_back({PreStep::ByteLevel, false, get_bool(file, j, "add_prefix_space", true, where),
                         get_bool(file, j, "use_regex", true, where)});
    } else if (type == "Digits") {
        steps.push_back({PreStep::Digits, get_bool(file, j, "individual_digits", false, where)});
    } else if (type == "Split") {
        const json& pat = j.contains("pattern") ? j["pattern"] : json();
        std::string regex;
        if (pat.is_object() && pat.contains("Regex") && pat["Regex"].is_string()) regex = pat["Regex"].get<std::string>();
        if (regex != kGpt2PatternHf && regex != kGpt2PatternTiktoken)
            fail("{}: {}.pattern {} is not supported (stac implements the Split regex of GPT-2's "
                 "byte-level pre-tokenizer only)",
                 file, where, pat.dump());
        const std::string behavior = j.contains("behavior") && j["behavior"].is_string() ? j["behavior"].get<std::string>() : "";
        if (behavior != "Isolated")
            fail("{}: {}.behavior \"{}\" is not supported (Isolated only)", file, where, behavior);
        if (get_bool(file, j, "invert", false, where)) fail("{}: {}.invert true is not supported", file, where);
        steps.push_back({PreStep::Gpt2Split});
    } else {
        fail("{}: {} of type {} is not supported (supported: ByteLevel, Digits, Split with the GPT-2 "
             "pattern, Sequence of these)",
             file, where, type);
    }
}

}  // namespace

// ------------------------------------------------------------------ the tokenizer

struct HfTokenizer::Impl {
    std::string file;  // for messages
    // Token bytes in id order, one allocation: token id is arena[offset[id], offset[id + 1]).
    std::string arena;
    std::vector<uint32_t> offset;  // [V + 1]

    // Vocabulary tokens whose spelling is byte-level, by their bytes: what BPE can make.
    std::unordered_map<std::string_view, int32_t> bpe_token;
    std::array<int32_t, 256> byte_id{};  // -1: the vocabulary has no token for this byte
    bool all_bytes = true;
    // (left id, right id) -> merges index.
    std::unordered_map<uint64_t, uint32_t> pair_rank;
    bool ignore_merges = false;

    struct Added {
        std::string content;
        int32_t id;
        bool special, normalized;
    };
    std::vector<Added> added;                     // in file order
    std::array<bool, 256> added_first_byte{};     // a cheap filter for the match scan
    std::unordered_map<std::string_view, int32_t> added_by_content;

    std::vector<PreStep> steps;
    std::optional<int32_t> eos;

    int32_t vocab_size() const { return static_cast<int32_t>(offset.size() - 1); }

    std::string_view bytes_of(int32_t id) const {
        if (id < 0 || id >= vocab_size())
            fail("{}: token id {} is outside the vocabulary [0, {})", file, id, vocab_size());
        return std::string_view(arena).substr(offset[id], offset[id + 1] - offset[id]);
    }

    // The id of a part BPE made (a byte, or the result of a merge: always a token).
    int32_t id_of_part(std::string_view bytes) const {
        if (bytes.size() == 1) return byte_id[static_cast<uint8_t>(bytes[0])];
        return bpe_token.find(bytes)->second;
    }

    auto pair_rank_of(std::string_view piece) const {
        return [this, piece](uint32_t start, uint32_t mid, uint32_t end) {
            const auto l = static_cast<uint32_t>(id_of_part(piece.substr(start, mid - start)));
            const auto r = static_cast<uint32_t>(id_of_part(piece.substr(mid, end - mid)));
            const auto it = pair_rank.find((uint64_t(l) << 32) | r);
            return it == pair_rank.end() ? kNoBpeRank : it->second;
        };
    }
    auto emit_into(std::string_view piece, std::vector<int32_t>& out) const {
        return [this, piece, &out](uint32_t start, uint32_t end) {
            out.push_back(id_of_part(piece.substr(start, end - start)));
        };
    }

    void encode_piece(std::string_view piece, BpeScratch& sc, std::vector<int32_t>& out) const {
        if (ignore_merges) {
            if (const auto it = bpe_token.find(piece); it != bpe_token.end()) {
                out.push_back(it->second);
                return;
            }
        }
        // Hugging Face drops a character that has no token (unk_token null, no byte fallback);
        // its neighbours become adjacent and may merge. SmolLM2 lacks 21 bytes (0x04, 0x1D, ...).
        std::string kept;
        if (!all_bytes &&
            std::any_of(piece.begin(), piece.end(), [&](char c) { return byte_id[static_cast<uint8_t>(c)] < 0; })) {
            for (const char c : piece)
                if (byte_id[static_cast<uint8_t>(c)] >= 0) kept.push_back(c);
            piece = kept;
            if (piece.empty()) return;
        }
        if (piece.size() == 1) {
            out.push_back(byte_id[static_cast<uint8_t>(piece[0])]);
            return;
        }
        const auto n = static_cast<uint32_t>(piece.size());
        if (piece.size() < kHeapMinBytes) {
            bpe_merge_scan(n, pair_rank_of(piece), sc, emit_into(piece, out));
        } else {
            bpe_merge_heap(n, pair_rank_of(piece), sc, emit_into(piece, out));
        }
    }

    // Runs pre-tokenizer steps [k, end) on piece, then BPE on each final piece. Each step works
    // on each piece on its own and keeps their order, so depth first gives the pieces Hugging
    // Face's step-by-step passes give.
    template <typename Leaf>
    void pre_tokenize(size_t k, std::string_view piece, Leaf&& leaf) const {
        if (piece.empty()) return;
        if (k == steps.size()) {
            leaf(piece);
            return;
        }
        const PreStep& st = steps[k];
        switch (st.kind) {
            case PreStep::Digits: {
                // Isolated: each numeric character alone; Contiguous: runs of them together.
                size_t p = 0, start = 0;
                bool in_digits = false;
                while (p < piece.size()) {
                    char32_t cp = 0;
                    size_t len = utf8_decode(piece.substr(p), &cp);
                    const bool digit = len != 0 && is_numeric(cp);
                    if (len == 0) len = 1;
                    if (digit && st.individual_digits) {
                        pre_tokenize(k + 1, piece.substr(start, p - start), leaf);
                        pre_tokenize(k + 1, piece.substr(p, len), leaf);
                        start = p + len;
                    } else if (digit != in_digits && p > start) {
                        pre_tokenize(k + 1, piece.substr(start, p - start), leaf);
                        start = p;
                    }
                    in_digits = digit && !st.individual_digits;
                    p += len;
                }
                pre_tokenize(k + 1, piece.substr(start), leaf);
                break;
            }
            case PreStep::Gpt2Split:
                for_each_gpt2_piece(piece, [&](std::string_view q) { pre_tokenize(k + 1, q, leaf); });
                break;
            case PreStep::ByteLevel: {
                std::string spaced;
                if (st.add_prefix_space && piece.front() != ' ') {
                    spaced = " ";
                    spaced += piece;
                    piece = spaced;
                }
                if (st.use_regex) {
                    for_each_gpt2_piece(piece, [&](std::string_view q) { pre_tokenize(k + 1, q, leaf); });
                } else {
                    pre_tokenize(k + 1, piece, leaf);
                }
                break;
            }
        }
    }

    void encode_ordinary(std::string_view text, BpeScratch& sc, std::vector<int32_t>& out) const {
        pre_tokenize(0, text, [&](std::string_view piece) { encode_piece(piece, sc, out); });
    }

    // Hugging Face's find_matches for one pass: at each start, the longest added token of this
    // pass that begins there, the leftmost start winning; matches do not overlap. A special
    // token found while specials are off is skipped, its text left to the gap around it.
    template <typename Gap, typename Match>
    void split_pass(std::string_view text, bool normalized, bool allow_special, Gap&& gap, Match&& match) const {
        size_t gap_start = 0, p = 0;
        while (p < text.size()) {
            const Added* best = nullptr;
            if (added_first_byte[static_cast<uint8_t>(text[p])]) {
                for (const Added& a : added) {
                    if (a.normalized != normalized || a.content.size() > text.size() - p) continue;
                    if ((!best || a.content.size() > best->content.size()) &&
                        text.compare(p, a.content.size(), a.content) == 0)
                        best = &a;
                }
            }
            if (!best) {
                ++p;
                continue;
            }
            if (best->special && !allow_special) {
                p += best->content.size();
                continue;
            }
            if (p > gap_start) gap(text.substr(gap_start, p - gap_start));
            match(best->id);
            p += best->content.size();
            gap_start = p;
        }
        if (gap_start < text.size()) gap(text.substr(gap_start));
    }
};

HfTokenizer::HfTokenizer(std::unique_ptr<const Impl> impl) : impl_(std::move(impl)) {}
HfTokenizer::HfTokenizer(HfTokenizer&&) noexcept = default;
HfTokenizer& HfTokenizer::operator=(HfTokenizer&&) noexcept = default;
HfTokenizer::~HfTokenizer() = default;

HfTokenizer HfTokenizer::load_dir(const fs::path& dir) {
    std::optional<std::string> eos;
    const fs::path cfg_path = dir / "tokenizer_config.json";
    std::error_code ec;
    if (fs::exists(cfg_path, ec)) {
        const json cfg = read_json_file(cfg_path);
        const json e = cfg.is_object() && cfg.contains("eos_token") ? cfg["eos_token"] : json();
        if (e.is_string()) {
            eos = e.get<std::string>();
        } else if (e.is_object() && e.contains("content") && e["content"].is_string()) {
            eos = e["content"].get<std::string>();  // the AddedToken form
        } else if (!e.is_null()) {
            fail("{}: eos_token is {}, expected a string or {{\"content\": ...}}", cfg_path.string(), e.dump());
        }
    }
    HfTokenizer tok = load(dir / "tokenizer.json", eos);
    return tok;
}

HfTokenizer HfTokenizer::load(const fs::path& path, std::optional<std::string> eos_token) {
    const std::string file = path.string();
    const std::string text = read_text_file(path);
    {
        DuplicateKeyFinder dup;
        if (!json::sax_parse(text, &dup)) {
            if (!dup.duplicate.empty())
                fail("{}: key \"{}\" appears twice in {}", file, dup.duplicate, dup.where.empty() ? "the top level" : dup.where);
        }
    }
    json j;
    try {
        j = json::parse(text);
    } catch (const json::exception& e) {
        fail("{}: not valid JSON: {}", file, e.what());
    }
    if (!j.is_object()) fail("{}: the top level is {}, expected a tokenizer.json object", file, j.type_name());
    auto impl = std::make_unique<Impl>();
    impl->file = file;

    for (const char* key : {"truncation", "padding"})
        if (!is_null_or_absent(j, key))
            fail("{}: {} is {}; not supported (stac encodes whole texts), expected null", file, key, j[key].dump());
    if (!is_null_or_absent(j, "normalizer"))
        fail("{}: normalizer of type {} is not supported (only null)", file, type_of(j["normalizer"]));
    if (!is_null_or_absent(j, "post_processor") && type_of(j["post_processor"]) != "ByteLevel")
        fail("{}: post_processor of type {} is not supported (null or ByteLevel: stac's encode adds no tokens)",
             file, type_of(j["post_processor"]));
    if (!is_null_or_absent(j, "decoder") && type_of(j["decoder"]) != "ByteLevel")
        fail("{}: decoder of type {} is not supported (null or ByteLevel)", file, type_of(j["decoder"]));

    // ---- pre_tokenizer: byte-level, ByteLevel last
    if (is_null_or_absent(j, "pre_tokenizer"))
        fail("{}: pre_tokenizer is null; stac supports byte-level BPE, which needs a ByteLevel pre-tokenizer", file);
    parse_pre_tokenizer(file, j["pre_tokenizer"], "pre_tokenizer", impl->steps);
    {
        const auto& st = impl->steps;
        const auto n_byte_level = std::count_if(st.begin(), st.end(), [](const PreStep& s) { return s.kind == PreStep::ByteLevel; });
        if (n_byte_level != 1 || st.back().kind != PreStep::ByteLevel)
            fail("{}: pre_tokenizer must end with one ByteLevel step (it has {} ByteLevel step{}, the last is {}): "
                 "stac supports byte-level BPE only",
                 file, n_byte_level, n_byte_level == 1 ? "" : "s",
                 st.back().kind == PreStep::ByteLevel ? "ByteLevel" : st.back().kind == PreStep::Digits ? "Digits" : "Split");
    }

    // ---- model
    if (!j.contains("model") || !j["model"].is_object()) fail("{}: model is missing or not an object", file);
    const json& m = j["model"];
    if (type_of(m) != "BPE") fail("{}: model of type {} is not supported (BPE only)", file, type_of(m));
    if (!is_null_or_absent(m, "dropout") && !(m["dropout"].is_number() && m["dropout"].get<double>() == 0.0))
        fail("{}: model.dropout is {}; not supported (expected null)", file, m["dropout"].dump());
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
        if (!is_null_or_absent(m, key) && !(m[key].is_string() && m[key].get<std::string>().empty()))
            fail("{}: model.{} is {}; not supported (expected null)", file, key, m[key].dump());
    impl->ignore_merges = get_bool(file, m, "ignore_merges", false, "model");
    if (!m.contains("vocab") || !m["vocab"].is_object()) fail("{}: model.vocab is missing or not an object", file);
    if (!m.contains("merges") || !m["merges"].is_array()) fail("{}: model.merges is missing or not an array", file);

    std::unordered_map<std::string, int32_t> vocab;
    const json& jv = m["vocab"];
    vocab.reserve(jv.size());
    int64_t max_id = -1;
    for (const auto& [key, val] : jv.items()) {
        if (!val.is_number_integer() || val.get<int64_t>() < 0 || val.get<int64_t>() > std::numeric_limits<int32_t>::max() - 1)
            fail("{}: model.vocab: token \"{}\" has id {}, expected a non-negative integer", file, key, val.dump());
        vocab.emplace(key, static_cast<int32_t>(val.get<int64_t>()));
        max_id = std::max<int64_t>(max_id, val.get<int64_t>());
    }

    // ---- added_tokens
    if (!is_null_or_absent(j, "added_tokens")) {
        if (!j["added_tokens"].is_array()) fail("{}: added_tokens is not an array", file);
        const json& ja = j["added_tokens"];
        for (size_t i = 0; i < ja.size(); ++i) {
            const json& a = ja[i];
            const std::string where = fmt::format("added_tokens[{}]", i);
            if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || a["id"].get<int64_t>() < 0 ||
                a["id"].get<int64_t>() > std::numeric_limits<int32_t>::max() - 1 || !a.contains("content") ||
                !a["content"].is_string())
                fail("{}: {} is {}, expected {{\"id\": n, \"content\": \"...\", ...}}", file, where, a.dump());
            Impl::Added t{a["content"].get<std::string>(), static_cast<int32_t>(a["id"].get<int64_t>()),
                          get_bool(file, a, "special", false, where), get_bool(file, a, "normalized", false, where)};
            for (const char* key : {"lstrip", "rstrip", "single_word"})
                if (get_bool(file, a, key, false, where))
                    fail("{}: {} (\"{}\") has {} true; not supported", file, where, t.content, key);
            if (t.content.empty()) fail("{}: {} has empty content", file, where);
            if (const auto it = vocab.find(t.content); it != vocab.end() && it->second != t.id)
                fail("{}: {} \"{}\" has id {}, but model.vocab gives it id {}", file, where, t.content, t.id, it->second);
            for (const auto& b : impl->added)
                if (b.id == t.id || b.content == t.content)
                    fail("{}: {} (\"{}\", id {}) repeats the id or content of \"{}\" (id {})", file, where, t.content,
                         t.id, b.content, b.id);
            max_id = std::max<int64_t>(max_id, t.id);
            impl->added.push_back(std::move(t));
        }
    }

    // ---- ids 0..V-1, each one token
    const size_t V = size_t(max_id + 1);
    std::vector<std::string> bytes(V);
    std::vector<uint8_t> kind(V, 0);  // 0 none, 1 model.vocab, 2 added
    std::vector<std::string> spelled(V);
    for (const auto& [key, id] : vocab) {
        if (kind[id]) fail("{}: model.vocab: id {} is given to both \"{}\" and \"{}\"", file, id, spelled[id], key);
        kind[id] = 1;
        spelled[id] = key;
    }
    for (const auto& a : impl->added) {
        if (kind[a.id] == 1 && spelled[a.id] != a.content)
            fail("{}: added token \"{}\" has id {}, which model.vocab gives to \"{}\"", file, a.content, a.id, spelled[a.id]);
        kind[a.id] = 2;
        spelled[a.id] = a.content;
    }
    for (size_t id = 0; id < V; ++id)
        if (!kind[id]) fail("{}: no token has id {} (ids must be 0..{} without gaps)", file, id, V - 1);
    std::vector<bool> byte_level(V, false);
    for (size_t id = 0; id < V; ++id) {
        if (kind[id] == 2) {
            bytes[id] = spelled[id];
            continue;
        }
        if (std::optional<std::string> b = byte_level_to_bytes(spelled[id])) {
            if (b->empty()) fail("{}: model.vocab: id {} is the empty string", file, id);
            bytes[id] = std::move(*b);
            byte_level[id] = true;
        } else {
            bytes[id] = spelled[id];  // never made by BPE; decodes as its own UTF-8
        }
    }
    impl->offset.reserve(V + 1);
    impl->offset.push_back(0);
    for (const auto& b : bytes) {
        impl->arena += b;
        impl->offset.push_back(static_cast<uint32_t>(impl->arena.size()));
    }
    impl->bpe_token.reserve(V);
    for (size_t id = 0; id < V; ++id) {
        if (!byte_level[id]) continue;
        impl->bpe_token.emplace(impl->bytes_of(int32_t(id)), int32_t(id));  // spellings are unique, so bytes are
    }
    std::string missing;  // the first few bytes without a token, for the message
    for (int b = 0; b < 256; ++b) {
        const std::string one(1, static_cast<char>(b));
        const auto it = impl->bpe_token.find(one);
        impl->byte_id[b] = it == impl->bpe_token.end() ? -1 : it->second;
        if (it != impl->bpe_token.end()) continue;
        impl->all_bytes = false;
        if (missing.size() < 40) missing += fmt::format("{}0x{:02X} (\"{}\")", missing.empty() ? "" : ", ", b, bytes_to_byte_level(one));
    }
    // Missing bytes are dropped from the text, as Hugging Face does when there is neither an unk
    // token nor byte fallback; with those, it would emit tokens stac does not model.
    if (!impl->all_bytes) {
        for (const char* key : {"unk_token"})
            if (!is_null_or_absent(m, key))
                fail("{}: model.{} is set and model.vocab has no token for byte {}...; not supported", file, key, missing);
        if (get_bool(file, m, "byte_fallback", false, "model"))
            fail("{}: model.byte_fallback is true and model.vocab has no token for byte {}...; not supported", file, missing);
    }
    for (const auto& a : impl->added) {
        impl->added_first_byte[static_cast<uint8_t>(a.content[0])] = true;
        impl->added_by_content.emplace(impl->bytes_of(a.id), a.id);
    }

    // ---- merges: "left right" or [left, right]; index i is the pair's rank
    {
        const json& jm = m["merges"];
        impl->pair_rank.reserve(jm.size());
        std::unordered_map<uint64_t, size_t> seen;
        for (size_t i = 0; i < jm.size(); ++i) {
            const json& e = jm[i];
            std::string left, right;
            if (e.is_string()) {
                const std::string s = e.get<std::string>();
                const size_t sp = s.find(' ');
                if (sp == 0 || sp == std::string::npos || sp + 1 == s.size() || s.find(' ', sp + 1) != std::string::npos)
                    fail("{}: model.merges[{}] \"{}\" is not two tokens separated by one space", file, i, s);
                left = s.substr(0, sp);
                right = s.substr(sp + 1);
            } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
                left = e[0].get<std::string>();
                right = e[1].get<std::string>();
            } else {
                fail("{}: model.merges[{}] is {}, expected \"left right\" or [\"left\", \"right\"]", file, i, e.dump());
            }
            const auto l = vocab.find(left), r = vocab.find(right), lr = vocab.find(left + right);
            for (const auto& [it, what] : {std::pair{l, &left}, std::pair{r, &right}})
                if (it == vocab.end()) fail("{}: model.merges[{}]: \"{}\" is not in model.vocab", file, i, *what);
            if (lr == vocab.end())
                fail("{}: model.merges[{}]: merging \"{}\" and \"{}\" makes \"{}\", which is not in model.vocab", file,
                     i, left, right, left + right);
            // A merge of tokens that are not byte-level spellings can never apply to byte-level text.
            if (!byte_level[l->second] || !byte_level[r->second]) continue;
            const uint64_t key = (uint64_t(uint32_t(l->second)) << 32) | uint32_t(r->second);
            if (const auto [it, fresh] = seen.emplace(key, i); !fresh)
                fail("{}: model.merges[{}] (\"{}\" \"{}\") repeats model.merges[{}]", file, i, left, right, it->second);
            impl->pair_rank.emplace(key, static_cast<uint32_t>(i));
        }
    }

    // ---- end of sequence
    const std::string eos = eos_token.value_or("<|endoftext|>");
    if (const auto it = impl->added_by_content.find(eos); it != impl->added_by_content.end()) {
        impl->eos = it->second;
    } else if (const auto v = vocab.find(eos); v != vocab.end()) {
        impl->eos = v->second;
    } else if (eos_token) {
        fail("{}: the end-of-sequence token \"{}\" (tokenizer_config.json eos_token) is not in the vocabulary", file, eos);
    }
    return HfTokenizer(std::move(impl));
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text, EncodeOptions opt) const {
    const Impl& im = *impl_;
    std::vector<int32_t> out;
    out.reserve(text.size() / 4 + 16);
    BpeScratch sc;
    auto ordinary = [&](std::string_view gap) { im.encode_ordinary(gap, sc, out); };
    auto added = [&](int32_t id) { out.push_back(id); };
    // Pass 1: tokens with normalized false; pass 2, inside the gaps: normalized true.
    im.split_pass(
        text, false, opt.allow_special,
        [&](std::string_view gap) { im.split_pass(gap, true, opt.allow_special, ordinary, added); }, added);
    return out;
}

std::vector<std::string> HfTokenizer::pre_tokenize(std::string_view text) const {
    std::vector<std::string> pieces;
    impl_->pre_tokenize(0, text, [&](std::string_view piece) { pieces.emplace_back(piece); });
    return pieces;
}

std::string HfTokenizer::decode(std::span<const int32_t> ids) const {
    size_t total = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= vocab_size())
            fail("{}: cannot decode id {} (position {}): outside the vocabulary [0, {})", impl_->file, ids[i], i,
                 vocab_size());
        total += impl_->offset[ids[i] + 1] - impl_->offset[ids[i]];
    }
    std::string out;
    out.reserve(total);
    for (const int32_t id : ids) out += impl_->bytes_of(id);
    return out;
}

std::string_view HfTokenizer::token_bytes(int32_t id) const { return impl_->bytes_of(id); }

int32_t HfTokenizer::vocab_size() const { return impl_->vocab_size(); }

std::optional<int32_t> HfTokenizer::eos_id() const { return impl_->eos; }

std::optional<int32_t> HfTokenizer::token_id(std::string_view bytes) const {
    if (const auto it = impl_->added_by_content.find(bytes); it != impl_->added_by_content.end()) return it->second;
    if (const auto it = impl_->bpe_token.find(bytes); it != impl_->bpe_token.end()) return it->second;
    return std::nullopt;
}

std::vector<int32_t> HfTokenizer::bpe_reference(std::string_view piece) const {
    std::vector<int32_t> out;
    BpeScratch sc;
    if (!piece.empty()) bpe_merge_scan(uint32_t(piece.size()), impl_->pair_rank_of(piece), sc, impl_->emit_into(piece, out));
    return out;
}

std::vector<int32_t> HfTokenizer::bpe_heap(std::string_view piece) const {
    std::vector<int32_t> out;
    BpeScratch sc;
    if (!piece.empty()) bpe_merge_heap(uint32_t(piece.size()), impl_->pair_rank_of(piece), sc, impl_->emit_into(piece, out));
    return out;
}

}  // namespace stac
