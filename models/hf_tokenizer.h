// stac::HfTokenizer: a Hugging Face tokenizer.json of the byte-level BPE kind (GPT-2 style, and
// SmolLM2's digits-then-byte-level), bit-exact with Hugging Face tokenizers 0.19.1.
//
// What is read (anything else is refused with a stac::Error naming the field):
// - model: type BPE; vocab {"spelling": id}; merges as "left right" strings or [left, right]
//   pairs (tokenizers >= 0.20 writes pairs); ignore_merges. dropout must be null;
//   continuing_subword_prefix and end_of_word_suffix null or "". A byte without a token in the
//   vocabulary (SmolLM2 lacks 21: 0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xC0, 0xC1, 0xF1, 0xF2,
//   0xF5..0xFF) is dropped from the text, as Hugging Face does when unk_token is null and
//   byte_fallback false; with missing bytes, unk_token or byte_fallback are refused. Otherwise
//   unk_token, fuse_unk and byte_fallback never matter.
// - pre_tokenizer: ByteLevel (add_prefix_space, use_regex: the GPT-2 pattern of byte_level.h),
//   alone or last in a Sequence after Digits (individual_digits or runs) and/or Split with the
//   GPT-2 pattern (behavior Isolated, not inverted). Other regexes are refused, not approximated.
// - normalizer null; post_processor null or ByteLevel (it only trims offsets); decoder null or
//   ByteLevel; truncation and padding null.
// - added_tokens: {id, content, special, normalized}; lstrip, rstrip and single_word must be
//   false. They are found in the text before pre-tokenization, as Hugging Face does: first the
//   tokens with normalized false, then (in the gaps) those with normalized true; each pass takes
//   the leftmost match and, among matches there, the longest (aho-corasick LeftmostLongest).
//
// Semantics, as tokenizers 0.19.1 (checked by tests/fixtures/tokenizer/hf_*.json):
// - BPE merges the adjacent pair (left token, right token) with the lowest merges index, the
//   leftmost on a tie (Hugging Face's rule; tiktoken's differs: see gpt2_tokenizer.h). No whole-
//   piece shortcut unless ignore_merges is true.
// - Digits splits off characters of general category N* (Rust's char::is_numeric), each alone
//   with individual_digits, else as runs; ByteLevel's add_prefix_space puts a space before every
//   piece it gets that does not start with one (so with it, decode(encode(x)) is " " + x).
// - EncodeOptions::allow_special false is tokenizers' encode_special_tokens: added tokens marked
//   special are matched but then left as text; non-special added tokens still split.
// - A token's bytes: for added tokens their content; for vocab tokens the byte-level spelling
//   decoded (a spelling with characters outside the 256, which BPE can never produce, is its own
//   UTF-8, as Hugging Face's ByteLevel decoder falls back to).
// - Not valid UTF-8 input (tokenizers takes only str): as GPT-2's rule, each byte of an
//   ill-formed sequence is one "other" character (not a digit, not a letter, not space).
// - decode(encode(x)) == x for any bytes x when the vocabulary has all 256 bytes (else the
//   dropped bytes are missing, as in Hugging Face).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "models/tokenizer.h"

namespace stac {

class HfTokenizer final : public Tokenizer {
public:
    // eos_token: the end-of-sequence token's content (tokenizer_config.json's eos_token); when
    // not given, "<|endoftext|>" if the vocabulary has it. Throws stac::Error naming the file and
    // the field that is wrong or not supported.
    static HfTokenizer load(const std::filesystem::path& tokenizer_json,
                            std::optional<std::string> eos_token = std::nullopt);
    // dir/tokenizer.json, with eos_token from dir/tokenizer_config.json when that file has one.
    static HfTokenizer load_dir(const std::filesystem::path& dir);

    HfTokenizer(HfTokenizer&&) noexcept;
    HfTokenizer& operator=(HfTokenizer&&) noexcept;
    ~HfTokenizer() override;

    std::vector<int32_t> encode(std::string_view text, EncodeOptions opt = {}) const override;
    std::string decode(std::span<const int32_t> ids) const override;
    std::string_view token_bytes(int32_t id) const override;
    int32_t vocab_size() const override;
    std::optional<int32_t> eos_id() const override;
    std::optional<int32_t> token_id(std::string_view token_bytes) const override;

    // The pieces the pre-tokenizer makes of text that has no added tokens in it (prefix spaces
    // included), and the BPE of one piece by the plain scan and by the heap (models/bpe.h);
    // encode() uses the scan below kHeapMinBytes. For tests.
    static constexpr size_t kHeapMinBytes = 64;
    std::vector<std::string> pre_tokenize(std::string_view text) const;
    std::vector<int32_t> bpe_reference(std::string_view piece) const;
    std::vector<int32_t> bpe_heap(std::string_view piece) const;

private:
    struct Impl;
    explicit HfTokenizer(std::unique_ptr<const Impl> impl);
    std::unique_ptr<const Impl> impl_;
};

}  // namespace stac
