#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace stac {

Progress::Progress(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), tty_(isatty(STDERR_FILENO) != 0) {
    start_ = last_ = std::chrono::steady_clock::now();
    if (enabled_ && !tty_) std::fprintf(stderr, "%s: %lld steps...\n", label_.c_str(), static_cast<long long>(total_));
    update(0);
}

Progress::~Progress() { finish(); }

void Progress::update(int64_t done) {
    done_ = done;
    if (!enabled_ || !tty_) return;
    const auto now = std::chrono::steady_clock::now();
    if (done != 0 && done < total_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const int width = 30;
    const int fill = total_ > 0 ? int(double(done) / double(total_) * width) : width;
    std::string bar(size_t(fill), '#');
    bar.append(size_t(width - fill), '.');
    const double secs = std::chrono::duration<double>(now - start_).count();
    std::fprintf(stderr, "\r%s [%s] %lld/%lld %.1fs", label_.c_str(), bar.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total_), secs);
    std::fflush(stderr);
}

void Progress::finish() {
    if (finished_) return;
    finished_ = true;
    if (!enabled_) return;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (tty_) {
        update(total_);
        std::fprintf(stderr, "\n");
    } else {
        std::fprintf(stderr, "%s: done in %.1f s\n", label_.c_str(), secs);
    }
}

}  // namespace stac
