// stac::Gpt2Tokenizer: OpenAI's GPT-2 byte-level BPE (vocab.json + merges.txt), bit-exact with
// tiktoken's "gpt2" encoding; and the GPT-2 pre-tokenizer it runs before BPE.
//
// Semantics are tiktoken's (0.7.0), checked by tests/fixtures/tokenizer/gpt2_tiktoken.json:
// - Pre-tokenizer: the pattern '(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   with Rust regex Unicode classes, run by hand (gpt2_split). \s is the Unicode White_Space
//   property (25 code points: U+0009..000D, U+0020, U+0085, and the Zs/Zl/Zp characters);
//   U+001C..001F, U+200B, U+FEFF are not \s. Classes come from utf8proc (Unicode 15.0, the
//   version tiktoken's regex crate has). The contractions are lower case only ("'S" is not one).
// - BPE: repeatedly merge the adjacent pair whose *concatenated bytes* have the lowest rank
//   (not the pair's line in merges.txt, as Hugging Face does), the leftmost on a tie (equal ranks
//   mean equal bytes, e.g. "aaaa"). Rank = the line of merges.txt that makes those bytes, which
//   is what tiktoken's data_gym_to_mergeable_bpe_ranks builds (and, for GPT-2's files, equals
//   the token id). A piece that is itself a token becomes that token without BPE, as in tiktoken.
// - "<|endoftext|>" (50256) is special: with allow_special it splits the text, and the parts
//   between are encoded on their own (a space before it is a piece of its own, not " <|...").
// - Not valid UTF-8 (tiktoken takes only str, so this is stac's rule): each byte of an
//   ill-formed sequence (Unicode Table 3-7: stray continuation bytes, C0/C1/F5..FF, overlongs,
//   encoded surrogates, > U+10FFFF, truncated sequences) is one character of the "other" class
//   [^\s\p{L}\p{N}]. Nothing is replaced or dropped, so decode(encode(x)) == x for any bytes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "models/byte_level.h"  // gpt2_split, gpt2_char_class: the pre-tokenizer
#include "models/tokenizer.h"

namespace stac {

class Gpt2Tokenizer final : public Tokenizer {
public:
    // vocab_json: {"<data-gym token>": id, ...} with ids 0..N-1, every byte present;
    // merges_txt: "#version" line, then one "<left> <right>" per line, highest priority first.
    // Throws stac::Error naming the file and the entry that is wrong.
    static Gpt2Tokenizer load(const std::filesystem::path& vocab_json,
                              const std::filesystem::path& merges_txt);
    static Gpt2Tokenizer load_dir(const std::filesystem::path& dir);  // dir/vocab.json, dir/merges.txt

    Gpt2Tokenizer(Gpt2Tokenizer&&) noexcept;
    Gpt2Tokenizer& operator=(Gpt2Tokenizer&&) noexcept;
    ~Gpt2Tokenizer() override;

    std::vector<int32_t> encode(std::string_view text, EncodeOptions opt = {}) const override;
    std::string decode(std::span<const int32_t> ids) const override;
    std::string_view token_bytes(int32_t id) const override;
    int32_t vocab_size() const override;
    std::optional<int32_t> eos_id() const override;
    std::optional<int32_t> token_id(std::string_view token_bytes) const override;

    // BPE of one piece, without the whole-piece shortcut, two ways (models/bpe.h): the plain scan
    // (tiktoken's _byte_pair_merge), which encode() uses for pieces under kHeapMinBytes, and the
    // min-heap version for longer pieces, such as a long digit run or a base64 blob.
    static constexpr size_t kHeapMinBytes = 64;
    std::vector<int32_t> bpe_reference(std::string_view piece) const;
    std::vector<int32_t> bpe_heap(std::string_view piece) const;

private:
    struct Impl;
    explicit Gpt2Tokenizer(std::unique_ptr<const Impl> impl);
    std::unique_ptr<const Impl> impl_;  // one pointer: moves are cheap, views into it stay valid
};

}  // namespace stac
