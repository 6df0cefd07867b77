// A progress bar for long steps (calibration, evaluation): redrawn in place on a terminal, a
// start and an end line otherwise, always on stderr so stdout stays machine-readable.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace stac {

class Progress {
public:
    // enabled = false prints nothing (library use, --quiet).
    Progress(std::string label, int64_t total, bool enabled = true);
    ~Progress();
    void update(int64_t done);
    void finish();

private:
    std::string label_;
    int64_t total_, done_ = 0;
    bool enabled_, tty_, finished_ = false;
    std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace stac
