// Access to reference data written by tests/reference/*.py (PyTorch) into SEG_REFERENCE_DIR.
//
// A test whose reference file is missing calls skip_missing_reference(): it reports the missing
// file and the test binary exits with code 77, which CTest shows as skipped, never as passed.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace seg::test {

std::filesystem::path reference_dir();
std::filesystem::path reference_path(const std::string& name);

// True when the reference file exists; otherwise records a skip naming the file and returns false.
bool have_reference(const std::string& name);

// Records that the current test was skipped, with the reason; the binary then exits with 77.
void record_skip(const std::string& reason);
bool any_skipped();
std::vector<std::string> skipped_reasons();

}  // namespace seg::test
