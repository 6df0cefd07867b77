// stac::Error: the one exception type of the library; messages name the file, object and expectation.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#if !defined(__CUDACC__)  // fmt 9's compile-time format checks do not build under nvcc
#include <fmt/format.h>
#endif

namespace stac {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& what) : std::runtime_error(what) {}
};

#if !defined(__CUDACC__)
// fail("{}: tensor {} has shape {}, expected {}", file, name, got, want)
template <typename... Args>
[[noreturn]] inline void fail(fmt::format_string<Args...> f, Args&&... args) {
    throw Error(fmt::format(f, std::forward<Args>(args)...));
}
#endif

}  // namespace stac
