// A run directory and what a long job shows while it runs.
//
// Design notes
// - A run directory holds config.json (the resolved config that ran), metrics.jsonl (one JSON
//   object per line: training windows, validations, resumes; flushed line by line so a killed run
//   keeps what it logged), and the checkpoints last.safetensors and best.safetensors (written
//   atomically). A new run refuses a folder that already holds one (naming it); --resume requires
//   last.safetensors and rewrites metrics.jsonl without the records past the checkpoint's
//   iteration, so that the log reads as one uninterrupted run.
// - StopSignals turns SIGINT and SIGTERM into a flag that the training loop checks between steps:
//   the step in progress finishes, a checkpoint is saved, and the app exits with 128 + the signal.
//   A second signal of the same kind ends the process at once (the default action is restored
//   after the first). The flag is the one piece of process-wide state: a signal handler cannot
//   reach anything else.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace seg::app {

class RunDir {
 public:
  RunDir(std::filesystem::path path, bool resume);

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path checkpoint(const std::string& name) const {
    return path_ / (name + ".safetensors");
  }
  std::filesystem::path config_path() const { return path_ / "config.json"; }
  std::filesystem::path metrics_path() const { return path_ / "metrics.jsonl"; }

  void write_config(const nlohmann::json& resolved) const;
  // Keeps only the records of metrics.jsonl whose "iteration" is at most `iteration` (resume).
  void truncate_metrics(int64_t iteration);
  // Appends one record to metrics.jsonl (flushed).
  void log(const nlohmann::json& record);

 private:
  std::filesystem::path path_;
  std::ofstream metrics_;
};

class StopSignals {
 public:
  StopSignals();   // installs the handlers
  ~StopSignals();  // restores the previous ones
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  // 0, or the first signal received (SIGINT or SIGTERM).
  int received() const;
  static const char* name(int signal);
};

// "1h02m", "3m05s", "12s".
std::string format_duration(double seconds);

// Throughput and ETA over the steps of one run (not counting time before start()).
class ProgressMeter {
 public:
  // `total_steps` of `images_per_step`; `done` already taken (a resumed run).
  ProgressMeter(int64_t total_steps, int64_t done);
  void step(int64_t images);
  double images_per_second() const;
  // Seconds left at the average pace so far; negative before the first step.
  double eta_seconds() const;

 private:
  using Clock = std::chrono::steady_clock;
  int64_t total_, done_, steps_ = 0, images_ = 0;
  Clock::time_point start_ = Clock::now();
};

}  // namespace seg::app
