// Running the apps (build/apps) as programs from tests, with their output captured.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace seg::test {

struct AppResult {
  int status = -1;  // exit code, or 128 + signal
  std::string output;
};

// Runs `args` (args[0] names an app under build/apps) with stdout and stderr captured. When
// `kill_after` is non-empty, sends SIGTERM once a line of output contains it.
AppResult run_app(const std::vector<std::string>& args, const std::string& kill_after = "");

// The records of a run's metrics.jsonl whose "type" is `type`, in order.
std::vector<nlohmann::json> run_metrics(const std::filesystem::path& run_dir,
                                        const std::string& type);

}  // namespace seg::test
