#include "convert/calibration.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/json_file.h"
#include "models/chat.h"

namespace stac {

// ---------------------------------------------------------------- histogram

AbsHistogram::AbsHistogram(int bins_per_octave)
    : per_octave_(bins_per_octave), bins_(size_t((kMaxExp - kMinExp) * bins_per_octave), 0u) {}

void AbsHistogram::add(float a) {
    a = std::fabs(a);
    if (!std::isfinite(a)) return;
    ++count_;
    max_ = std::max(max_, a);
    if (a == 0.0f) {
        ++zeros_;
        return;
    }
    const double pos = (std::log2(double(a)) - kMinExp) * per_octave_;
    const int64_t i = std::clamp<int64_t>(int64_t(std::floor(pos)), 0, int64_t(bins_.size()) - 1);
    ++bins_[size_t(i)];
}

void AbsHistogram::merge(const AbsHistogram& o) {
    if (o.per_octave_ != per_octave_) fail("calibration: cannot merge histograms of different resolution");
    for (size_t i = 0; i < bins_.size(); ++i) bins_[i] += o.bins_[i];
    zeros_ += o.zeros_;
    count_ += o.count_;
    max_ = std::max(max_, o.max_);
}

float AbsHistogram::percentile(double p) const {
    if (count_ == 0) return 0.0f;
    if (p >= 100.0) return max_;
    const double target = p / 100.0 * double(count_);
    double cum = double(zeros_);
    if (cum >= target) return 0.0f;
    for (size_t i = 0; i < bins_.size(); ++i) {
        cum += bins_[i];
        if (cum >= target) {
            const double upper = std::exp2(double(kMinExp) + double(i + 1) / per_octave_);
            return float(std::min(upper, double(max_)));
        }
    }
    return max_;
}

// ---------------------------------------------------------------- calibrator

Calibrator::Calibrator(int n_layer, bool per_channel)
    : n_layer_(n_layer), per_channel_(per_channel), stats_(size_t(n_layer + 1) * kSiteKinds) {}

SiteStats& Calibrator::at(int layer, SiteKind site) {
    const int l = layer < 0 ? n_layer_ : layer;
    if (l > n_layer_) fail("calibration: layer {} out of range", layer);
    return stats_[size_t(l) * kSiteKinds + size_t(site)];
}

const SiteStats& Calibrator::stats(int layer, SiteKind site) const {
    return const_cast<Calibrator*>(this)->at(layer, site);
}

bool Calibrator::seen(int layer, SiteKind site) const { return stats(layer, site).tensor.count() > 0; }

void Calibrator::observe(int layer, SiteKind site, const float* x, int64_t rows, int64_t cols) {
    SiteStats& s = at(layer, site);
    const bool unsigned_site = site == SiteKind::Probs;  // the only site whose sign is fixed by the math
    const bool channels = per_channel_ && site != SiteKind::Probs;
    if (channels && s.channels.empty()) s.channels.assign(size_t(cols), AbsHistogram(16));
    if (channels && int64_t(s.channels.size()) != cols)
        fail("calibration: site {} of layer {} changed width from {} to {}", site_name(site), layer, s.channels.size(), cols);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) {
            float v = x[r * cols + c];
            if (unsigned_site && v < 0) v = 0;
            s.tensor.add(v);
            if (channels) s.channels[size_t(c)].add(v);
        }
}

// ---------------------------------------------------------------- calibration data

const std::vector<const char*>& builtin_calibration_prompts() {
    static const std::vector<const char*> kPrompts = {
        "The quick brown fox jumps over the lazy dog.",
        "Once upon a time, in a small village by the sea, there lived an old fisherman and his wife.",
        "User: Hello! How are you today?\nAssistant: I am fine, thank you. How can I help you?",
        "The meaning of life is a question that philosophers have asked for thousands of years.",
        "In 1969, Neil Armstrong became the first person to walk on the Moon.",
        "To make a cup of tea, boil the water, warm the pot, add the leaves and wait four minutes.",
        "Machine learning models learn patterns from data instead of following explicit rules.",
        "It was the best of times, it was the worst of times, it was the age of wisdom.",
        "User: Can you tell me a joke?\nAssistant: Why did the scarecrow win an award? Because he was outstanding in his field.",
        "The weather today will be cloudy with a chance of rain in the afternoon and clear skies at night.",
        "A spiking neuron integrates its input current and fires when its membrane crosses a threshold.",
        "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
        "Dear Sir or Madam, I am writing to inquire about the position advertised in your newsletter.",
        "Never trust a computer you can't throw out a window.",
        "He who laughs last thinks slowest.",
        "The stock market rose by 2.5 percent on Monday, led by gains in technology shares.",
        "Water boils at 100 degrees Celsius at sea level, but at a lower temperature on a mountain.",
        "User: What is the capital of France?\nAssistant: The capital of France is Paris.",
        "She opened the door slowly and saw that the room was filled with old books and dusty maps.",
        "Q: What do you call a bear with no teeth?\nA: A gummy bear.",
        "The committee will meet on Thursday to discuss the budget for the next fiscal year.",
        "Happiness is not something ready made. It comes from your own actions.",
        "The train to London leaves at half past nine from platform four.",
        "Photosynthesis converts light energy into chemical energy stored in glucose.",
        "User: Tell me something interesting.\nAssistant: Octopuses have three hearts and blue blood.",
        "All that glitters is not gold; all that wander are not lost.",
        "The recipe calls for two cups of flour, one egg, a pinch of salt and a cup of milk.",
        "If you can't explain it simply, you don't understand it well enough.",
        "The old castle on the hill had been empty for a hundred years, or so the villagers said.",
        "Error: file not found. Please check the path and try again.",
        "A journey of a thousand miles begins with a single step.",
        "The museum is open from ten in the morning until six in the evening, except on Mondays.",
    };
    return kPrompts;
}

std::vector<ChatMessage> builtin_chat_messages(std::string_view prompt) {
    std::vector<ChatMessage> m = {{"system", std::string(kChatMLDefaultSystem)}};
    const std::string_view user = "User: ", assistant = "\nAssistant: ";
    const size_t a = prompt.find(assistant);
    if (prompt.starts_with(user) && a != std::string_view::npos) {
        m.push_back({"user", std::string(prompt.substr(user.size(), a - user.size()))});
        m.push_back({"assistant", std::string(prompt.substr(a + assistant.size()))});
    } else {
        m.push_back({"user", std::string(prompt)});
    }
    return m;
}

std::vector<std::vector<int32_t>> create_calibration_data(const Tokenizer& tok,
                                                          const std::optional<std::filesystem::path>& file,
                                                          int num_samples, int max_length) {
    if (num_samples < 1) fail("calibration: --num-samples must be at least 1, got {}", num_samples);
    if (max_length < 2) fail("calibration: --max-length must be at least 2, got {}", max_length);
    std::vector<std::string> texts;
    for (const char* p : builtin_calibration_prompts()) texts.emplace_back(p);
    // For a chat model (ChatML), the built-in prompts again as conversations, after the plain ones.
    std::vector<std::vector<int32_t>> chat;
    if (chat_format_for(tok) == ChatFormat::ChatML)
        for (const char* p : builtin_calibration_prompts()) {
            const auto m = builtin_chat_messages(p);
            chat.push_back(chatml_ids(tok, m, m.back().role == "user"));  // a user turn ends at the reply prompt
        }
    if (file) {
        std::string all = read_text_file(*file);
        // CRLF files split like LF files (and samples keep no stray carriage returns).
        all.erase(std::remove(all.begin(), all.end(), '\r'), all.end());
        const bool paragraphs = all.find("\n\n") != std::string::npos;
        size_t i = 0;
        std::vector<std::string> from_file;
        while (i < all.size()) {
            size_t j = paragraphs ? all.find("\n\n", i) : all.find('\n', i);
            if (j == std::string::npos) j = all.size();
            std::string piece = all.substr(i, j - i);
            const bool blank = piece.find_first_not_of(" \t\r\n") == std::string::npos;
            if (!blank) from_file.push_back(std::move(piece));
            i = j + (paragraphs ? 2 : 1);
        }
        if (from_file.empty()) fail("{}: no text to calibrate on", file->string());
        texts.insert(texts.end(), from_file.begin(), from_file.end());
    }
    std::vector<std::vector<int32_t>> out;
    auto take = [&](std::vector<int32_t> ids) {
        if (ids.empty() || int(out.size()) >= num_samples) return;
        if (int(ids.size()) > max_length) ids.resize(size_t(max_length));
        out.push_back(std::move(ids));
    };
    const size_t n_builtin = builtin_calibration_prompts().size();
    for (size_t i = 0; i < texts.size(); ++i) {
        take(tok.encode(texts[i], {.allow_special = false}));
        if (i + 1 == n_builtin)
            for (auto& c : chat) take(std::move(c));
    }
    if (out.empty()) fail("calibration: no samples");
    return out;
}

}  // namespace stac
