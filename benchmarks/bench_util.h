// Helpers shared by the benchmarks: wall-clock timing and medians, the command line of the CPU
// benchmarks, and running a PyTorch peer script in the same run.
#pragma once

#include <omp.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

extern "C" void openblas_set_num_threads(int num_threads);
extern "C" int openblas_get_num_threads(void);

namespace seg::bench {

inline double now_ms() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double, std::milli>(clock::now().time_since_epoch()).count();
}

// Milliseconds of CPU time used by this process (all its threads).
inline double process_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) * 1e-6;
}

// Wall-clock milliseconds, or with `cpu_time` the process's CPU time: with one thread on a shared
// machine, time slices given to other processes then do not count.
inline double clock_ms(bool cpu_time) {
  return cpu_time ? process_cpu_ms() : now_ms();
}

// The median (the mean of the middle two for an even count); 0 for no values.
inline double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

// The Python that holds PyTorch: $SEG_PYTHON; else Debian's /usr/bin/python3 (python3-torch, what
// the test command installs) where it exists; else python3 from the PATH.
inline std::string peer_python() {
  const char* p = std::getenv("SEG_PYTHON");
  if (p != nullptr && *p != '\0') return p;
  return std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
}

// `s` in single quotes for the shell.
inline std::string shell_quote(const std::string& s) {
  std::string out(1, '\'');
  for (char ch : s) {
    if (ch == '\'') {
      out.append("'\\''");
    } else {
      out.push_back(ch);
    }
  }
  out.push_back('\'');
  return out;
}

// Runs the command `argv` (through the shell, each word quoted) and parses the last line of its
// output that starts with '{' as a JSON object. False, with the reason in `info`, when it cannot
// run, prints no JSON, or reports {"error": ...}.
inline bool run_json_command(const std::vector<std::string>& argv, nlohmann::json& result,
                             std::string& info) {
  std::string cmd;
  for (const std::string& a : argv) cmd.append(cmd.empty() ? "" : " ").append(shell_quote(a));
  cmd.append(" 2>&1");
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) {
    info = "could not start " + (argv.empty() ? std::string("(nothing)") : argv[0]);
    return false;
  }
  std::string out;
  char buf[4096];
  size_t got;
  while ((got = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, got);
  const int raw = pclose(pipe);
  const int status = WIFEXITED(raw) ? WEXITSTATUS(raw) : raw;
  std::string last;
  for (size_t begin = 0; begin < out.size();) {
    size_t end = out.find('\n', begin);
    if (end == std::string::npos) end = out.size();
    if (out[begin] == '{') last = out.substr(begin, end - begin);
    begin = end + 1;
  }
  result = nlohmann::json::parse(last, nullptr, /*allow_exceptions=*/false);
  if (last.empty() || result.is_discarded() || !result.is_object()) {
    std::string words;
    for (size_t i = 0; i < argv.size() && i < 2; ++i) words.append(i ? " " : "").append(argv[i]);
    info = words + " printed no JSON (exit status " + std::to_string(status) +
           "): " + out.substr(0, 300);
    return false;
  }
  if (result.contains("error")) {
    info =
        result["error"].is_string() ? result["error"].get<std::string>() : result["error"].dump();
    return false;
  }
  return true;
}

// Runs `python script args...` (peer_python()) through run_json_command. False, with the reason in
// `info`, when the script is missing, cannot run, prints no JSON, or reports {"error": ...}.
inline bool run_peer_script(const std::string& script, const std::vector<std::string>& args,
                            nlohmann::json& result, std::string& info) {
  if (!std::filesystem::exists(script)) {
    info = "peer script " + script + " not found";
    return false;
  }
  std::vector<std::string> argv{peer_python(), script};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_json_command(argv, result, info);
}

// Bytes of a "Vm..." field of /proc/self/status (VmRSS: resident now; VmHWM: the resident peak);
// 0 where it cannot be read.
inline size_t proc_status_bytes(const char* field) {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  size_t kib = 0;
  const size_t len = std::strlen(field);
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, field, len) == 0 && line[len] == ':') {
      kib = static_cast<size_t>(std::strtoull(line + len + 1, nullptr, 10));
      break;
    }
  }
  std::fclose(f);
  return kib * 1024;
}

// Resets VmHWM to the current resident set (Linux: "5" to /proc/self/clear_refs). False when the
// kernel does not allow it (the peak then covers the whole process).
inline bool reset_peak_rss() {
  FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (f == nullptr) return false;
  const bool ok = std::fputs("5", f) >= 0;
  return std::fclose(f) == 0 && ok;
}

// The 1-, 5- and 15-minute load averages, "2.10 1.80 1.50" ("?" where unreadable).
inline std::string load_average() {
  FILE* f = std::fopen("/proc/loadavg", "r");
  if (f == nullptr) return "?";
  double a = 0, b = 0, c = 0;
  const int got = std::fscanf(f, "%lf %lf %lf", &a, &b, &c);
  std::fclose(f);
  if (got != 3) return "?";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.2f %.2f %.2f", a, b, c);
  return buf;
}

// The command line of the CPU layer benchmarks:
//   NAME [--threads N] [--warmup W] [--iters I] [--peer PATH] [--no-peer] [--cpu-time]
// Bad input prints the usage and exits with status 2. --cpu-time times with the process's CPU
// time instead of the wall clock (both sides; meaningful with --threads 1 on a loaded machine). The
// thread count (default: OpenMP's current maximum) is set for OpenMP and OpenBLAS here, and the
// peer gets it through torch.set_num_threads.
struct CpuBenchArgs {
  int threads = 1, warmup = 2, iters = 10;
  bool use_peer = true;
  bool cpu_time = false;
  std::string peer;
};

inline CpuBenchArgs parse_cpu_bench_args(int argc, char** argv, const char* name,
                                         const std::string& default_peer) {
  CpuBenchArgs a;
  a.threads = omp_get_max_threads();
  a.peer = default_peer;
  auto usage = [&]() {
    std::fprintf(stderr,
                 "usage: %s [--threads N] [--warmup W] [--iters I] [--peer PATH] [--no-peer] "
                 "[--cpu-time]\n",
                 name);
    std::exit(2);
  };
  for (int i = 1; i < argc; ++i) {
    const std::string opt = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage();
      return argv[++i];
    };
    try {
      if (opt == "--threads") {
        a.threads = std::stoi(next());
      } else if (opt == "--warmup") {
        a.warmup = std::stoi(next());
      } else if (opt == "--iters") {
        a.iters = std::stoi(next());
      } else if (opt == "--peer") {
        a.peer = next();
      } else if (opt == "--no-peer") {
        a.use_peer = false;
      } else if (opt == "--cpu-time") {
        a.cpu_time = true;
      } else {
        usage();
      }
    } catch (const std::logic_error&) {  // std::stoi: not a number
      usage();
    }
  }
  if (a.threads < 1 || a.warmup < 0 || a.iters < 1) usage();
  omp_set_num_threads(a.threads);
  openblas_set_num_threads(a.threads);
  return a;
}

// "OpenMP 2, OpenBLAS 2": the thread counts in effect.
inline std::string cpu_threads_str() {
  return "OpenMP " + std::to_string(omp_get_max_threads()) + ", OpenBLAS " +
         std::to_string(openblas_get_num_threads());
}

// A note when OPENBLAS_CORETYPE restricts OpenBLAS to one core type's kernels (e.g. AVX2 only):
// the figures are then not the processor's best.
inline void print_openblas_coretype_note() {
  if (const char* core = std::getenv("OPENBLAS_CORETYPE")) {
    std::printf(
        "note: OPENBLAS_CORETYPE=%s is set: OpenBLAS uses that core's kernels, not the best for "
        "this processor (unset it to compare at full speed)\n",
        core);
  }
}

// What benchmarks/conv_peer.py measured for one shape: median forward + backward and forward-only
// milliseconds.
struct PeerTiming {
  double step_ms = 0.0;
  double fwd_ms = 0.0;
};

// Runs benchmarks/conv_peer.py (or `args.peer`) on one shape spec ("conv2d:...", "aspp:...") with
// the benchmark's thread count, warmup and iterations. False, with the reason in `info`, when it
// fails; on success `info` names PyTorch's version, the Python and the thread count.
inline bool run_layer_peer(const CpuBenchArgs& args, const std::string& spec, PeerTiming& out,
                           std::string& info) {
  nlohmann::json j;
  std::vector<std::string> peer_args{"--threads", std::to_string(args.threads),
                                     "--warmup",  std::to_string(args.warmup),
                                     "--iters",   std::to_string(args.iters)};
  if (args.cpu_time) peer_args.push_back("--cpu-time");
  peer_args.push_back(spec);
  if (!run_peer_script(args.peer, peer_args, j, info)) {
    return false;
  }
  const nlohmann::json& results = j["results"];
  if (!results.is_array() || results.size() != 1 || !results[0].contains("median_ms")) {
    info = "peer returned " + j.dump().substr(0, 200) + " for 1 shape";
    return false;
  }
  out = PeerTiming{results[0]["median_ms"].get<double>(), results[0]["fwd_ms"].get<double>()};
  info = "PyTorch " + j.value("torch", std::string("?")) + " (" + peer_python() + "), " +
         std::to_string(j.value("threads", 0)) + " threads, mkldnn " +
         (j.value("mkldnn", false) ? "available" : "unavailable");
  return true;
}

}  // namespace seg::bench
