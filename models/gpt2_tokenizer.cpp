// Gpt2Tokenizer: loading vocab.json/merges.txt and tiktoken's ranks (the pre-tokenizer and the merge loop are shared: byte_level.h, bpe.h).
#include "models/gpt2_tokenizer.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "core/error.h"
#include "models/bpe.h"
#include "models/byte_level.h"

namespace stac {

namespace fs = std::filesystem;

namespace {

constexpr uint32_t kNoRank = kNoBpeRank;
constexpr std::string_view kEndOfText = "<|endoftext|>";

// vocab.json and merges.txt spell each byte as one printable character (byte_level.h).
std::optional<std::string> from_data_gym(std::string_view s) { return byte_level_to_bytes(s); }
std::string to_data_gym(std::string_view bytes) { return bytes_to_byte_level(bytes); }

std::string read_file(const fs::path& path) {
    std::error_code ec;
    if (fs::is_directory(path, ec)) fail("{}: is a directory, expected a file", path.string());
    std::ifstream f(path, std::ios::binary);
    if (!f) fail("{}: cannot open: {}", path.string(), std::strerror(errno));
    std::ostringstream ss;
    ss << f.rdbuf();
    if (f.bad()) fail("{}: read error", path.string());
    return std::move(ss).str();
}

// vocab.json must be one flat object {"token": id, ...}; SAX so that duplicate keys and
// non-integer ids are seen and named (a DOM parse keeps the last duplicate silently).
class VocabReader final : public nlohmann::json_sax<nlohmann::json> {
public:
    std::vector<std::pair<std::string, int64_t>> entries;  // (data-gym spelling, id)
    std::string error;

    bool null() override { return not_an_id("null"); }
    bool boolean(bool) override { return not_an_id("a boolean"); }
    bool number_integer(number_integer_t v) override { return id(v); }
    bool number_unsigned(number_unsigned_t v) override {
        return id(v > uint64_t(std::numeric_limits<int64_t>::max()) ? -1 : int64_t(v));
    }
    bool number_float(number_float_t, const string_t& s) override {
        return not_an_id("the number " + s);
    }
    bool string(string_t&) override { return not_an_id("a string"); }
    bool binary(binary_t&) override { return not_an_id("binary data"); }
    bool start_object(std::size_t) override {
        if (depth_++ == 0) return true;
        return not_an_id("an object");
    }
    bool end_object() override {
        --depth_;
        return true;
    }
    bool start_array(std::size_t) override { return not_an_id("an array"); }
    bool end_array() override { return true; }
    bool key(string_t& k) override {
        key_ = k;
        return true;
    }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
        error = e.what();
        return false;
    }

private:
    bool not_an_id(const std::string& what) {
        error = depth_ == 0 ? fmt::format("the top level is {}, expected an object {{\"token\": id, ...}}", what)
                            : fmt::format("token \"{}\" has {}, expected an integer id", key_, what);
        return false;
    }
    bool id(int64_t v) {
        if (depth_ == 0) return not_an_id("a number");
        entries.emplace_back(key_, v);
        return true;
    }
    int depth_ = 0;
    std::string key_;
};

}  // namespace

// ------------------------------------------------------------------ the tokenizer

struct Gpt2Tokenizer::Impl {
    // Token bytes in id order, one allocation: token id is arena[offset[id], offset[id + 1]).
    std::string arena;
    std::vector<uint32_t> offset;  // [V + 1]

    // rank: BPE priority, lower merges first. Single bytes get 0..255 (never compared: pairs
    // are two bytes or more), merges.txt line i makes rank 256 + i; kNoRank marks tokens that
    // BPE never makes (<|endoftext|>, and any vocab entry no merge produces).
    struct Entry {
        uint32_t rank;
        int32_t id;
    };
    std::unordered_map<std::string_view, Entry> by_bytes;  // views into arena
    std::array<int32_t, 256> byte_id{};
    std::optional<int32_t> eot;

    int32_t vocab_size() const { return static_cast<int32_t>(offset.size() - 1); }

    std::string_view bytes_of(int32_t id) const {
        if (id < 0 || id >= vocab_size())
            fail("GPT-2 tokenizer: token id {} is outside the vocabulary [0, {})", id, vocab_size());
        return std::string_view(arena).substr(offset[id], offset[id + 1] - offset[id]);
    }

    uint32_t rank(std::string_view bytes) const {
        const auto it = by_bytes.find(bytes);
        return it == by_bytes.end() ? kNoRank : it->second.rank;
    }

    // The id of a part that BPE produced (a byte, or bytes some merge made: always present).
    int32_t id_of_part(std::string_view bytes) const {
        if (bytes.size() == 1) return byte_id[static_cast<uint8_t>(bytes[0])];
        return by_bytes.find(bytes)->second.id;
    }

    using Scratch = BpeScratch;

    // tiktoken ranks a pair by the bytes it makes; the split point does not matter.
    auto byte_rank(std::string_view piece) const {
        return [this, piece](uint32_t start, uint32_t, uint32_t end) { return rank(piece.substr(start, end - start)); };
    }
    auto emit_into(std::string_view piece, std::vector<int32_t>& out) const {
        return [this, piece, &out](uint32_t start, uint32_t end) {
            out.push_back(id_of_part(piece.substr(start, end - start)));
        };
    }
    void bpe_scan(std::string_view piece, Scratch& sc, std::vector<int32_t>& out) const {
        bpe_merge_scan(uint32_t(piece.size()), byte_rank(piece), sc, emit_into(piece, out));
    }
    void bpe_heap(std::string_view piece, Scratch& sc, std::vector<int32_t>& out) const {
        bpe_merge_heap(uint32_t(piece.size()), byte_rank(piece), sc, emit_into(piece, out));
    }

    void encode_piece(std::string_view piece, Scratch& sc, std::vector<int32_t>& out) const {
        if (piece.size() == 1) {
            out.push_back(byte_id[static_cast<uint8_t>(piece[0])]);
            return;
        }
        if (const auto it = by_bytes.find(piece); it != by_bytes.end() && it->second.rank != kNoRank) {
            out.push_back(it->second.id);  // tiktoken's shortcut: a piece that is a token
            return;
        }
        if (piece.size() < kHeapMinBytes) {
            bpe_scan(piece, sc, out);
        } else {
            bpe_heap(piece, sc, out);
        }
    }

    void encode_ordinary(std::string_view text, Scratch& sc, std::vector<int32_t>& out) const {
        for_each_gpt2_piece(text, [&](std::string_view piece) { encode_piece(piece, sc, out); });
    }
};

Gpt2Tokenizer::Gpt2Tokenizer(std::unique_ptr<const Impl> impl) : impl_(std::move(impl)) {}
Gpt2Tokenizer::Gpt2Tokenizer(Gpt2Tokenizer&&) noexcept = default;
Gpt2Tokenizer& Gpt2Tokenizer::operator=(Gpt2Tokenizer&&) noexcept = default;
Gpt2Tokenizer::~Gpt2Tokenizer() = default;

Gpt2Tokenizer Gpt2Tokenizer::load_dir(const fs::path& dir) {
    return load(dir / "vocab.json", dir / "merges.txt");
}

Gpt2Tokenizer Gpt2Tokenizer::load(const fs::path& vocab_json, const fs::path& merges_txt) {
    const std::string vpath = vocab_json.string();
    const std::string mpath = merges_txt.string();
    auto impl = std::make_unique<Impl>();

    // ---- vocab.json: data-gym spelling -> id, ids exactly 0..N-1
    {
        const std::string text = read_file(vocab_json);
        VocabReader reader;
        if (!nlohmann::json::sax_parse(text, &reader) || !reader.error.empty())
            fail("{}: not a GPT-2 vocab.json: {}", vpath,
                 reader.error.empty() ? std::string("bad JSON") : reader.error);
        const size_t n = reader.entries.size();
        if (n < 256) fail("{}: has {} tokens, expected at least the 256 bytes", vpath, n);
        if (n > size_t(std::numeric_limits<int32_t>::max()))
            fail("{}: has {} tokens, more than int32 ids can hold", vpath, n);
        std::vector<std::string> bytes(n);
        std::vector<const std::string*> spelling(n, nullptr);
        for (const auto& [key, id] : reader.entries) {
            if (id < 0 || id >= int64_t(n))
                fail("{}: token \"{}\" has id {}, expected ids 0..{} (one per token)", vpath, key, id, n - 1);
            if (spelling[id])
                fail("{}: id {} is given to both \"{}\" and \"{}\"", vpath, id, *spelling[id], key);
            std::optional<std::string> b = from_data_gym(key);
            if (!b)
                fail("{}: token \"{}\" (id {}) has a character outside GPT-2's byte alphabet", vpath, key, id);
            if (b->empty()) fail("{}: token id {} is the empty string", vpath, id);
            spelling[id] = &key;
            bytes[id] = std::move(*b);
        }
        impl->offset.reserve(n + 1);
        impl->offset.push_back(0);
        for (const auto& b : bytes) {
            impl->arena += b;
            impl->offset.push_back(static_cast<uint32_t>(impl->arena.size()));
        }
        impl->by_bytes.reserve(n);
        for (size_t id = 0; id < n; ++id) {
            const auto [it, fresh] =
                impl->by_bytes.emplace(impl->bytes_of(int32_t(id)), Impl::Entry{kNoRank, int32_t(id)});
            if (!fresh)
                fail("{}: token \"{}\" appears twice (ids {} and {})", vpath, *spelling[id], it->second.id, id);
        }
    }
    for (int b = 0; b < 256; ++b) {
        const std::string one(1, static_cast<char>(b));
        const auto it = impl->by_bytes.find(one);
        if (it == impl->by_bytes.end())
            fail("{}: no token for byte 0x{:02X} (\"{}\"); byte-level BPE needs all 256", vpath, b,
                 to_data_gym(one));
        it->second.rank = static_cast<uint32_t>(b);
        impl->byte_id[b] = it->second.id;
    }
    if (const auto it = impl->by_bytes.find(kEndOfText); it != impl->by_bytes.end()) impl->eot = it->second.id;

    // ---- merges.txt: line i (after "#version") makes rank 256 + i
    {
        const std::string text = read_file(merges_txt);
        std::string_view rest = text;
        uint32_t line_no = 0, merges = 0;
        std::vector<uint32_t> line_of_merge;  // for the duplicate-merge message
        while (!rest.empty()) {
            const size_t eol = rest.find('\n');
            std::string_view line = rest.substr(0, eol);
            rest.remove_prefix(eol == std::string_view::npos ? rest.size() : eol + 1);
            ++line_no;
            if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
            if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
            const size_t sp = line.find(' ');
            if (sp == 0 || sp == std::string_view::npos || sp + 1 == line.size() ||
                line.find(' ', sp + 1) != std::string_view::npos)
                fail("{}: line {}: \"{}\" is not two tokens separated by one space", mpath, line_no, line);
            const std::string_view left = line.substr(0, sp), right = line.substr(sp + 1);
            std::string merged;
            for (const std::string_view part : {left, right}) {
                const std::optional<std::string> b = from_data_gym(part);
                if (!b)
                    fail("{}: line {}: \"{}\" has a character outside GPT-2's byte alphabet", mpath,
                         line_no, part);
                if (!impl->by_bytes.contains(*b))
                    fail("{}: line {}: \"{}\" is not a token of {}", mpath, line_no, part, vpath);
                merged += *b;
            }
            const auto it = impl->by_bytes.find(merged);
            if (it == impl->by_bytes.end())
                fail("{}: line {}: merging \"{}\" and \"{}\" makes \"{}\", which is not a token of {}",
                     mpath, line_no, left, right, to_data_gym(merged), vpath);
            if (merged == kEndOfText)
                fail("{}: line {}: makes the special token {}, which BPE must never produce", mpath,
                     line_no, kEndOfText);
            if (it->second.rank != kNoRank)
                fail("{}: line {}: \"{}\" is made twice (line {} made it before)", mpath, line_no,
                     to_data_gym(merged), line_of_merge[it->second.rank - 256]);
            it->second.rank = 256 + merges++;
            line_of_merge.push_back(line_no);
        }
        if (merges == 0) fail("{}: has no merges", mpath);
    }
    return Gpt2Tokenizer(std::move(impl));
}

std::vector<int32_t> Gpt2Tokenizer::encode(std::string_view text, EncodeOptions opt) const {
    const Impl& im = *impl_;
    std::vector<int32_t> out;
    out.reserve(text.size() / 4 + 16);
    Impl::Scratch sc;
    if (!opt.allow_special || !im.eot) {
        im.encode_ordinary(text, sc, out);
        return out;
    }
    // Specials split the text; the parts between are encoded on their own, as tiktoken does.
    size_t start = 0;
    for (size_t at; (at = text.find(kEndOfText, start)) != std::string_view::npos;
         start = at + kEndOfText.size()) {
        im.encode_ordinary(text.substr(start, at - start), sc, out);
        out.push_back(*im.eot);
    }
    im.encode_ordinary(text.substr(start), sc, out);
    return out;
}

std::string Gpt2Tokenizer::decode(std::span<const int32_t> ids) const {
    size_t total = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= vocab_size())
            fail("GPT-2 tokenizer: cannot decode id {} (position {}): outside the vocabulary [0, {})",
                 ids[i], i, vocab_size());
        total += impl_->offset[ids[i] + 1] - impl_->offset[ids[i]];
    }
    std::string out;
    out.reserve(total);
    for (const int32_t id : ids) out += impl_->bytes_of(id);
    return out;
}

std::string_view Gpt2Tokenizer::token_bytes(int32_t id) const { return impl_->bytes_of(id); }

int32_t Gpt2Tokenizer::vocab_size() const { return impl_->vocab_size(); }

std::optional<int32_t> Gpt2Tokenizer::eos_id() const { return impl_->eot; }

std::optional<int32_t> Gpt2Tokenizer::token_id(std::string_view bytes) const {
    const auto it = impl_->by_bytes.find(bytes);
    if (it == impl_->by_bytes.end()) return std::nullopt;
    return it->second.id;
}

std::vector<int32_t> Gpt2Tokenizer::bpe_reference(std::string_view piece) const {
    std::vector<int32_t> out;
    Impl::Scratch sc;
    if (!piece.empty()) impl_->bpe_scan(piece, sc, out);
    return out;
}

std::vector<int32_t> Gpt2Tokenizer::bpe_heap(std::string_view piece) const {
    std::vector<int32_t> out;
    Impl::Scratch sc;
    if (!piece.empty()) impl_->bpe_heap(piece, sc, out);
    return out;
}

}  // namespace stac
