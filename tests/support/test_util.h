// Small helpers shared by the tests: temporary folders, error messages, file bytes.
#pragma once

#include <exception>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace seg::test {

// A fresh, empty folder under the system's temporary folder, removed with everything in it when the
// object goes. Its name has the tag, the process id and a per-process counter, so tests running in
// parallel (ctest -j) or twice in one test never share one.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag = "tmp");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::filesystem::path operator/(const std::string& name) const { return path / name; }
};

// The message of the exception that `f` throws, or "" when it throws none.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// What `f` writes to the process's stderr (file descriptor 2), which is restored afterwards (also
// when `f` throws).
std::string stderr_of(const std::function<void()>& f);

// The whole file; throws when it cannot be read.
std::vector<unsigned char> file_bytes(const std::filesystem::path& path);
// Writes `bytes` to `path`, replacing it.
void write_bytes(const std::filesystem::path& path, const std::vector<unsigned char>& bytes);

}  // namespace seg::test
