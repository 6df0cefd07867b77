// Spiking sites (DESIGN §5): the tensors that travel as spikes, their quantizers and thresholds.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "kernels/math.h"

namespace stac {

// The sites of a GPT-2 block, in data-flow order, and the optional input of the LM head.
enum class SiteKind : uint8_t { AttnIn, Q, K, V, Probs, AttnOut, MlpIn, MlpAct, LmHeadIn };
inline constexpr int kSiteKinds = 9;
inline constexpr std::array<SiteKind, 8> kBlockSites = {SiteKind::AttnIn, SiteKind::Q,       SiteKind::K,
                                                        SiteKind::V,      SiteKind::Probs,   SiteKind::AttnOut,
                                                        SiteKind::MlpIn,  SiteKind::MlpAct};

// "attn_in", "q", "k", "v", "probs", "attn_out", "mlp_in", "mlp_act", "lm_head_in"
std::string_view site_name(SiteKind k);
std::optional<SiteKind> site_from_name(std::string_view name);
// What the site is, for --help and docs: "input of attn.c_attn (after ln_1)", ... (GPT-2), or in
// the terms of `architecture` ("gpt2", "llama": "input of the fused q|k|v projection (after
// input_layernorm)", ...).
std::string_view site_description(SiteKind k);
std::string_view site_description(SiteKind k, std::string_view architecture);

// The set of sites a conversion makes spiking. q, k, v and probs go together (the attention
// products are computed on counts only when all four are spiking).
struct SiteSet {
    std::array<bool, kSiteKinds> on{};
    bool has(SiteKind k) const { return on[size_t(k)]; }
    bool attention() const { return has(SiteKind::Q); }
    static SiteSet defaults();  // every block site, not the LM head input
    static SiteSet none();
    // "all", "default", or a comma list of names ("attn" stands for q,k,v,probs); throws stac::Error
    static SiteSet parse(std::string_view text);
    std::string str() const;  // comma list of names
    bool operator==(const SiteSet&) const = default;
};

// Where the sites of an architecture are: the width (channels) of each site. GPT-2: attn_in,
// q, k, v, attn_out, mlp_in, lm_head_in are C wide, mlp_act I; Llama: q and attn_out H D, k and v
// G D (grouped-query attention keeps G key/value heads), mlp_act I (the SiLU-gate product). Q, K
// and V thresholds are per head of head_dim channels; probs has one threshold.
struct SiteLayout {
    std::string architecture;  // "gpt2", "llama"
    int64_t n_layer = 0;
    int64_t head_dim = 0;
    std::array<int64_t, kSiteKinds> width{};
    int64_t n_positions = 0;
    Activation activation = Activation::GeluTanh;  // the model's own (Llama: Silu, inside the gate product)
};

// One site of one layer, ready to run: bounds and thresholds (scales).
struct SiteQuant {
    SiteKind kind = SiteKind::AttnIn;
    bool is_signed = true;
    int levels = 0;            // L: counts in [-L, L] (signed) or [0, L]
    std::vector<float> clip;   // calibration: the |x| the largest count stands for; 1 (tensor) or per channel
    std::vector<float> scale;  // threshold s = clip / L, per tensor or per channel
    std::vector<float> inv;    // 1 / s
    Tensor inv_t;              // the same as an F32 tensor, for the kernels
    int n_min() const { return is_signed ? -levels : 0; }
    int n_max() const { return levels; }
    bool per_channel() const { return scale.size() > 1; }
    // Sets levels and recomputes scale and inv from clip.
    void set_levels(int L);
};

}  // namespace stac
