// Fuzz target of the experiment config (apps/common/config.h) and the segmentation experiment's
// reader (apps/common/segmentation.h). An input is JSON text, optionally followed by a NUL byte and
// newline-separated `--set` assignments. Whatever the bytes, the reader either accepts the config
// or throws a seg::Error: any other exception escaping, a crash or a sanitizer report is a bug. An
// accepted config's resolved form must read back to the same resolved form.
// Seeds: tests/fuzz/corpus/config (copies of configs/*.json, one with --set lines, one with init).
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "apps/common/config.h"
#include "apps/common/segmentation.h"
#include "engine/error.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  try {
    seg::app::Config config = seg::app::Config::parse(input.substr(0, nul), "fuzz.json");
    if (nul != std::string::npos) {
      std::istringstream sets(input.substr(nul + 1));
      std::string line;
      while (std::getline(sets, line)) config.apply_override(line);
    }
    seg::app::read_segmentation_experiment(config);
    config.check_all_read();
    seg::app::Config again = seg::app::Config::from_json(config.resolved(), "resolved");
    seg::app::read_segmentation_experiment(again);
    again.check_all_read();
    FUZZ_CHECK(again.resolved() == config.resolved());
  } catch (const seg::Error&) {
  }
  return 0;
}
