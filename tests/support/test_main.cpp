// doctest main shared by every test binary. A binary in which a test recorded a skip (a missing
// reference file, a missing GPU) and nothing failed exits with 77: CTest reports it as skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include "tests/support/reference.h"

namespace seg::test {

namespace {
struct SkipLog {
  std::mutex mutex;
  std::vector<std::string> reasons;
};
SkipLog& skip_log() {
  static SkipLog log;
  return log;
}
}  // namespace

std::filesystem::path reference_dir() { return SEG_REFERENCE_DIR; }

std::filesystem::path reference_path(const std::string& name) { return reference_dir() / name; }

bool reference_required() {
  return SEG_REFERENCE_REQUIRED != 0;
}

bool have_reference(const std::string& name) {
  if (std::filesystem::exists(reference_path(name))) return true;
  if (reference_required()) {
    FAIL_CHECK("missing reference " << reference_path(name).string()
                                    << ": python3-torch is installed (" << SEG_REFERENCE_PYTHON
                                    << " imports torch), so tests/reference/make_all.py (the "
                                       "reference_data test) must write it");
  } else {
    record_skip("missing reference " + reference_path(name).string() +
                " (written by tests/reference/*.py with Debian's python3-torch)");
  }
  return false;
}

void record_skip(const std::string& reason) {
  std::lock_guard<std::mutex> lock(skip_log().mutex);
  skip_log().reasons.push_back(reason);
}

bool any_skipped() { return !skip_log().reasons.empty(); }

std::vector<std::string> skipped_reasons() {
  std::lock_guard<std::mutex> lock(skip_log().mutex);
  return skip_log().reasons;
}

}  // namespace seg::test

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  int failed = context.run();
  if (context.shouldExit()) return failed;
  if (seg::test::any_skipped()) {
    for (const std::string& r : seg::test::skipped_reasons()) std::printf("SKIPPED: %s\n", r.c_str());
  }
  if (failed == 0 && seg::test::any_skipped()) return 77;
  return failed;
}
