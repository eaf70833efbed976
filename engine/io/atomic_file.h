// AtomicFile: writes a file so that readers see the old contents or the new, never a mix.
//
// The bytes go to "<path>.tmp.<pid>"; commit() flushes them to the disk (fsync), renames the
// temporary file over `path` and makes the rename durable (fsync of the folder, best effort). A
// failure at any point (a full disk, a file-size limit, a missing folder) throws a seg::Error
// naming the file, the step and the system's reason, removes the temporary file and leaves the
// previous file at `path`, if any, unchanged. Destroying an AtomicFile that was not committed
// removes the temporary file too (an exception on the way out loses nothing).
#pragma once

#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <string>

namespace seg {

class AtomicFile {
 public:
  // `what` names the file's role in messages ("checkpoint", "safetensors file").
  AtomicFile(std::filesystem::path path, std::string what);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t bytes);
  void write(const std::string& text) { write(text.data(), text.size()); }
  // Makes the new contents the file's; no write may follow.
  void commit();

 private:
  [[noreturn]] void fail(const std::string& step);

  std::filesystem::path path_;
  std::string what_;
  std::string tmp_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

// Writes `text` to `path` through an AtomicFile.
void write_file_atomically(const std::filesystem::path& path, const std::string& text,
                           const std::string& what);

}  // namespace seg
