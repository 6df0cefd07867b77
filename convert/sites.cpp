#include "convert/sites.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace stac {

namespace {
constexpr std::array<std::string_view, kSiteKinds> kNames = {"attn_in", "q",        "k",       "v",         "probs",
                                                             "attn_out", "mlp_in", "mlp_act", "lm_head_in"};
constexpr std::array<std::string_view, kSiteKinds> kWhat = {
    "input of attn.c_attn (after ln_1)",
    "attention queries",
    "attention keys",
    "attention values",
    "attention probabilities (after softmax)",
    "input of attn.c_proj (attention output)",
    "input of mlp.c_fc (after ln_2)",
    "MLP hidden activation (after GELU/ReLU)",
    "input of the LM head (after ln_f)",
};
constexpr std::array<std::string_view, kSiteKinds> kWhatLlama = {
    "input of the fused q|k|v projection (after input_layernorm)",
    "attention queries (after the rotary embedding)",
    "attention keys of the key/value heads (after the rotary embedding)",
    "attention values of the key/value heads",
    "attention probabilities (after softmax)",
    "input of o_proj (attention output)",
    "input of the fused gate|up projection (after post_attention_layernorm)",
    "MLP hidden activation silu(gate) * up (input of down_proj)",
    "input of the LM head (after the final norm)",
};
}  // namespace

std::string_view site_name(SiteKind k) { return kNames[size_t(k)]; }
std::string_view site_description(SiteKind k) { return kWhat[size_t(k)]; }
std::string_view site_description(SiteKind k, std::string_view architecture) {
    return architecture == "llama" ? kWhatLlama[size_t(k)] : kWhat[size_t(k)];
}

std::optional<SiteKind> site_from_name(std::string_view name) {
    for (size_t i = 0; i < kNames.size(); ++i)
        if (kNames[i] == name) return SiteKind(i);
    return std::nullopt;
}

SiteSet SiteSet::defaults() {
    SiteSet s;
    for (SiteKind k : kBlockSites) s.on[size_t(k)] = true;
    return s;
}

SiteSet SiteSet::none() { return {}; }

SiteSet SiteSet::parse(std::string_view text) {
    if (text == "default") return defaults();
    SiteSet s;
    if (text == "all") {
        s = defaults();
        s.on[size_t(SiteKind::LmHeadIn)] = true;
        return s;
    }
    if (text == "none") return s;
    size_t i = 0;
    while (i <= text.size()) {
        size_t j = text.find(',', i);
        if (j == std::string_view::npos) j = text.size();
        const std::string_view name = text.substr(i, j - i);
        if (name == "attn") {
            for (SiteKind k : {SiteKind::Q, SiteKind::K, SiteKind::V, SiteKind::Probs}) s.on[size_t(k)] = true;
        } else if (const auto k = site_from_name(name)) {
            s.on[size_t(*k)] = true;
        } else {
            fail("unknown site '{}' (sites: attn_in, q, k, v, probs (or attn for all four), attn_out, mlp_in, "
                 "mlp_act, lm_head_in; or default, all, none)",
                 name);
        }
        i = j + 1;
    }
    const int attn = s.has(SiteKind::Q) + s.has(SiteKind::K) + s.has(SiteKind::V) + s.has(SiteKind::Probs);
    if (attn != 0 && attn != 4) fail("sites q, k, v and probs go together (use 'attn'), got '{}'", text);
    return s;
}

std::string SiteSet::str() const {
    std::string out;
    for (size_t i = 0; i < kNames.size(); ++i)
        if (on[i]) {
            if (!out.empty()) out += ',';
            out += kNames[i];
        }
    return out.empty() ? "none" : out;
}

void SiteQuant::set_levels(int L) {
    levels = L;
    scale.resize(clip.size());
    inv.resize(clip.size());
    for (size_t i = 0; i < clip.size(); ++i) {
        // Conversion gives channels that never fired a positive clip (convert.cpp, finish_site).
        const float c = clip[i];
        if (!(c > 0.0f) || !std::isfinite(c))
            fail("site {}: clip[{}] = {} (thresholds must be positive and finite)", site_name(kind), i, c);
        scale[i] = c / float(L);
        inv[i] = 1.0f / scale[i];
    }
    inv_t = Tensor::empty({int64_t(inv.size())}, DType::F32);
    std::copy(inv.begin(), inv.end(), inv_t.data<float>());
}

}  // namespace stac
