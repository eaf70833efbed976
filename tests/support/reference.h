// Access to reference data written by tests/reference/*.py (PyTorch) into SEG_REFERENCE_DIR.
//
// Where the build found a python3 that imports torch (SEG_REFERENCE_REQUIRED,
// tests/CMakeLists.txt), the references must be there: a missing file fails the test that asked for
// it. Elsewhere the test records a skip naming the file, and the binary exits with code 77, which
// CTest shows as skipped, never as passed.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace seg::test {

std::filesystem::path reference_dir();
std::filesystem::path reference_path(const std::string& name);

// True when the build found python3-torch: missing reference files are failures, not skips.
bool reference_required();

// True when the reference file exists. Otherwise returns false after recording a failure naming the
// file (references required) or a skip (not required); the caller returns from its test.
bool have_reference(const std::string& name);

// Records that the current test was skipped, with the reason; the binary then exits with 77.
void record_skip(const std::string& reason);
bool any_skipped();
std::vector<std::string> skipped_reasons();

}  // namespace seg::test
