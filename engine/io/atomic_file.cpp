#include "engine/io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "engine/error.h"

namespace seg {

AtomicFile::AtomicFile(std::filesystem::path path, std::string what)
    : path_(std::move(path)), what_(std::move(what)) {
  tmp_ = path_.string() + ".tmp." + std::to_string(::getpid());
  file_ = std::fopen(tmp_.c_str(), "wb");
  SEG_CHECK(file_ != nullptr, what_, " ", path_.string(), ": cannot create the temporary file ",
            tmp_, ": ", std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (file_) std::fclose(file_);
  if (!committed_) std::remove(tmp_.c_str());
}

void AtomicFile::fail(const std::string& step) {
  const std::string reason = std::strerror(errno);
  if (file_) std::fclose(file_);
  file_ = nullptr;
  std::remove(tmp_.c_str());
  throw Error(what_ + " " + path_.string() + ": " + step + " " + tmp_ + " failed: " + reason +
              " (the previous file, if any, is unchanged)");
}

void AtomicFile::write(const void* data, size_t bytes) {
  SEG_CHECK(file_ != nullptr && !committed_, what_, " ", path_.string(),
            ": write after commit or failure");
  if (bytes != 0 && std::fwrite(data, 1, bytes, file_) != bytes) fail("writing to");
}

void AtomicFile::commit() {
  SEG_CHECK(file_ != nullptr && !committed_, what_, " ", path_.string(), ": committed twice");
  if (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0) fail("flushing");
  const int close_rc = std::fclose(file_);
  file_ = nullptr;
  if (close_rc != 0) fail("closing");
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) fail("renaming into place");
  committed_ = true;
  // Make the rename itself durable (best effort: some file systems refuse fsync on folders).
  const std::filesystem::path dir = path_.has_parent_path() ? path_.parent_path() : ".";
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dir_fd >= 0) {
    (void)::fsync(dir_fd);
    ::close(dir_fd);
  }
}

void write_file_atomically(const std::filesystem::path& path, const std::string& text,
                           const std::string& what) {
  AtomicFile f(path, what);
  f.write(text);
  f.commit();
}

}  // namespace seg
