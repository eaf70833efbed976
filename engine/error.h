// Errors: every failure the user can cause is a seg::Error whose message names the op, file, key or
// tensor involved and the problem, e.g. "conv2d: input (1,3,8,8) has 3 channels, weight (4,2,3,3)
// expects 2".
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace seg {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// "(2,3,4)"
std::string shape_str(const std::vector<int64_t>& sizes);

namespace detail {
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace seg

// SEG_CHECK(cond, "conv2d: ", "input ", shape_str(x.sizes()), " ...") throws seg::Error when cond is false.
#define SEG_CHECK(cond, ...)                                          \
  do {                                                                \
    if (!(cond)) throw ::seg::Error(::seg::detail::concat(__VA_ARGS__)); \
  } while (0)

// For broken invariants inside the engine (not user errors): names the source location.
#define SEG_ASSERT(cond)                                                                          \
  do {                                                                                            \
    if (!(cond))                                                                                  \
      throw ::seg::Error(::seg::detail::concat("internal error: ", #cond, " at ", __FILE__, ":", \
                                               __LINE__));                                        \
  } while (0)
