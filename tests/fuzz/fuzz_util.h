// Shared by the fuzz targets (tests/fuzz/fuzz_*.cpp, libFuzzer).
//
// Design notes
// - A target feeds its input to a reader and catches seg::Error, the one way a reader may refuse
//   input; anything else (another exception, a crash, a sanitizer report, a leak, an allocation
//   over libFuzzer's -malloc_limit_mb) is a finding. FUZZ_CHECK states what an accepted input must
//   satisfy and aborts, with the condition, when it does not.
// - MemFile hands path-based readers the input as a file without touching the disk: a memfd,
//   reached as /proc/self/fd/N, rewritten for every input.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#define FUZZ_CHECK(cond)                                                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "FUZZ_CHECK failed: %s at %s:%d\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)

namespace seg::fuzz {

// An in-memory file with a path, for readers that take one.
class MemFile {
 public:
  explicit MemFile(const char* name) : fd_(::memfd_create(name, 0)) { FUZZ_CHECK(fd_ >= 0); }
  ~MemFile() { ::close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;

  // Replaces the contents with [data, data + size); returns the path that reads them.
  std::filesystem::path write(const uint8_t* data, size_t size) {
    FUZZ_CHECK(::ftruncate(fd_, 0) == 0);
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::pwrite(fd_, data + done, size - done, static_cast<off_t>(done));
      FUZZ_CHECK(n > 0);
      done += static_cast<size_t>(n);
    }
    return "/proc/self/fd/" + std::to_string(fd_);
  }

 private:
  int fd_;
};

}  // namespace seg::fuzz
