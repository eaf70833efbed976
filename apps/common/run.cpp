#include "apps/common/run.h"

#include <atomic>
#include <csignal>
#include <cstdio>
#include <sstream>
#include <vector>

#include "engine/error.h"
#include "engine/io/atomic_file.h"

namespace seg::app {

using nlohmann::json;
namespace fs = std::filesystem;

// ---- RunDir ----

RunDir::RunDir(fs::path path, bool resume) : path_(std::move(path)) {
  std::error_code ec;
  if (resume) {
    SEG_CHECK(fs::is_directory(path_, ec), "--resume: run directory ", path_.string(),
              " does not exist");
    SEG_CHECK(fs::exists(checkpoint("last"), ec), "--resume: run directory ", path_.string(),
              " holds no checkpoint (", checkpoint("last").filename().string(), ")");
  } else {
    SEG_CHECK(!fs::exists(config_path(), ec) && !fs::exists(checkpoint("last"), ec),
              "run directory ", path_.string(),
              " already holds a run: continue it with --resume, or choose another --run");
    fs::create_directories(path_, ec);
    SEG_CHECK(!ec && fs::is_directory(path_), "cannot create the run directory ", path_.string(),
              ": ", ec.message());
  }
  metrics_.open(metrics_path(), std::ios::app);
  SEG_CHECK(metrics_.good(), "cannot open ", metrics_path().string(), " for writing");
}

void RunDir::write_config(const json& resolved) const {
  write_file_atomically(config_path(), resolved.dump(2) + "\n", "run config");
}

void RunDir::truncate_metrics(int64_t iteration) {
  metrics_.close();
  std::ifstream in(metrics_path());
  std::string kept, line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    json record;
    try {
      record = json::parse(line);
    } catch (const json::exception&) {
      continue;  // a line cut short by a kill
    }
    if (record.contains("iteration") && record["iteration"].is_number_integer() &&
        record["iteration"].get<int64_t>() > iteration) {
      continue;
    }
    kept += line + "\n";
  }
  in.close();
  write_file_atomically(metrics_path(), kept, "metrics log");
  metrics_.open(metrics_path(), std::ios::app);
  SEG_CHECK(metrics_.good(), "cannot open ", metrics_path().string(), " for writing");
}

void RunDir::log(const json& record) {
  metrics_ << record.dump() << "\n";
  metrics_.flush();
  SEG_CHECK(metrics_.good(), "writing ", metrics_path().string(), " failed");
}

// ---- StopSignals ----

namespace {

std::atomic<int> g_stop_signal{0};
using Handler = void (*)(int);
Handler g_previous_int = SIG_DFL, g_previous_term = SIG_DFL;

extern "C" void on_stop_signal(int signal) {
  int expected = 0;
  g_stop_signal.compare_exchange_strong(expected, signal);
  std::signal(signal, SIG_DFL);  // a second one ends the process
}

}  // namespace

StopSignals::StopSignals() {
  g_stop_signal = 0;
  g_previous_int = std::signal(SIGINT, on_stop_signal);
  g_previous_term = std::signal(SIGTERM, on_stop_signal);
}

StopSignals::~StopSignals() {
  std::signal(SIGINT, g_previous_int);
  std::signal(SIGTERM, g_previous_term);
}

int StopSignals::received() const {
  return g_stop_signal.load();
}

const char* StopSignals::name(int signal) {
  return signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : "a signal";
}

// ---- progress ----

std::string format_duration(double seconds) {
  if (!(seconds >= 0.0)) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60));
  } else if (s >= 60) {
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%llds", static_cast<long long>(s));
  }
  return buf;
}

ProgressMeter::ProgressMeter(int64_t total_steps, int64_t done)
    : total_(total_steps), done_(done) {}

void ProgressMeter::step(int64_t images) {
  ++steps_;
  images_ += images;
}

double ProgressMeter::images_per_second() const {
  const double s = std::chrono::duration<double>(Clock::now() - start_).count();
  return s > 0.0 ? static_cast<double>(images_) / s : 0.0;
}

double ProgressMeter::eta_seconds() const {
  if (steps_ == 0) return -1.0;
  const double s = std::chrono::duration<double>(Clock::now() - start_).count();
  return s / static_cast<double>(steps_) * static_cast<double>(total_ - done_ - steps_);
}

}  // namespace seg::app
