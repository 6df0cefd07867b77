#include "models/generate.h"

#include <chrono>

namespace stac {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

GenerateStats generate(Session& session, Sampler& sampler, std::span<const int32_t> prompt, const GenerateOptions& opt,
                       const std::function<bool(int32_t)>& on_token) {
    GenerateStats st;
    st.prompt_tokens = int64_t(prompt.size());
    if (!prompt.empty()) {
        const auto t0 = std::chrono::steady_clock::now();
        const FeedResult r = session.feed(prompt);
        st.prefill_seconds = seconds_since(t0);
        if (r.window_shifted() && opt.on_window_shift) opt.on_window_shift(r);
    }
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < opt.max_new_tokens; ++i) {
        const int32_t id = sampler.sample(session.logits(), session.tokens());
        if (opt.stop_id && id == *opt.stop_id) {
            st.stopped_by_id = true;
            break;
        }
        ++st.new_tokens;
        const bool more = on_token(id);
        if (!more) st.stopped_by_callback = true;
        const bool last = !more || i + 1 == opt.max_new_tokens;
        if (last && !opt.feed_last) break;
        const int32_t one[1] = {id};
        const FeedResult r = session.feed(one);
        if (r.window_shifted() && opt.on_window_shift) opt.on_window_shift(r);
        if (last) break;
    }
    st.decode_seconds = seconds_since(t0);
    return st;
}

}  // namespace stac
