#include "tests/support/test_util.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <system_error>

namespace seg::test {

TempDir::TempDir(const std::string& tag) {
  static std::atomic<int> counter{0};
  path = std::filesystem::temp_directory_path() /
         ("seg_test_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  std::filesystem::remove_all(path);
  std::filesystem::create_directories(path);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

std::string stderr_of(const std::function<void()>& f) {
  TempDir dir("stderr");
  const std::filesystem::path file = dir / "stderr.txt";
  std::fflush(stderr);
  const int saved = ::dup(2);
  std::FILE* sink = std::fopen(file.c_str(), "w");
  if (saved < 0 || sink == nullptr) throw std::runtime_error("stderr_of: cannot redirect stderr");
  ::dup2(::fileno(sink), 2);
  auto restore = [&] {
    std::fflush(stderr);
    ::dup2(saved, 2);
    ::close(saved);
    std::fclose(sink);
  };
  try {
    f();
  } catch (...) {
    restore();
    throw;
  }
  restore();
  const std::vector<unsigned char> bytes = file_bytes(file);
  return std::string(bytes.begin(), bytes.end());
}

std::vector<unsigned char> file_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good()) throw std::runtime_error(path.string() + ": cannot read");
  return std::vector<unsigned char>((std::istreambuf_iterator<char>(in)),
                                    std::istreambuf_iterator<char>());
}

void write_bytes(const std::filesystem::path& path, const std::vector<unsigned char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

}  // namespace seg::test
