// Kernel-lab helpers shared by the CUDA benchmarks: timing with CUDA events after an L2 flush, the
// device's peak figures, and the PyTorch peer run in the same process's run.
//
// Timing: every timed call is preceded by a write of twice the L2 size, so the kernel reads its
// inputs from HBM as it would in training; the reported time is the median over iterations.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "benchmarks/bench_util.h"
#include "engine/device.h"
#include "kernels/cuda/cuda_check.h"

namespace seg::bench {

struct DevicePeak {
  std::string name;
  double bandwidth_gbs = 0.0;    // HBM, from memory clock and bus width (double data rate)
  double fp32_tflops = 0.0;      // CUDA cores, FMA = 2 flops
  double tf32_tflops = 0.0;      // tensor cores, dense (estimate from the architecture)
  int sm_count = 0;
  size_t l2_bytes = 0;
};

inline DevicePeak device_peak(int device) {
  cudaDeviceProp p{};
  SEG_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  int mem_clock_khz = 0, bus_bits = 0, clock_khz = 0;
  SEG_CUDA_CHECK(cudaDeviceGetAttribute(&mem_clock_khz, cudaDevAttrMemoryClockRate, device));
  SEG_CUDA_CHECK(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device));
  SEG_CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, device));
  DevicePeak d;
  d.name = p.name;
  d.sm_count = p.multiProcessorCount;
  d.l2_bytes = static_cast<size_t>(p.l2CacheSize);
  d.bandwidth_gbs = 2.0 * mem_clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
  const int fp32_lanes = p.major >= 8 ? 128 : 64;  // FP32 FMA units per SM
  d.fp32_tflops = 2.0 * fp32_lanes * d.sm_count * clock_khz * 1e3 / 1e12;
  // Dense TF32 tensor-core rate relative to FP32 CUDA cores: 8x on sm_80, ~7.4x on sm_90.
  d.tf32_tflops = p.major >= 9 ? d.fp32_tflops * 7.4 : (p.major == 8 ? d.fp32_tflops * 8.0 : 0.0);
  return d;
}

class L2Flusher {
 public:
  explicit L2Flusher(size_t l2_bytes) : bytes_(std::max<size_t>(2 * l2_bytes, size_t{1} << 20)) {
    SEG_CUDA_CHECK(cudaMalloc(&buffer_, bytes_));
  }
  ~L2Flusher() { cudaFree(buffer_); }
  L2Flusher(const L2Flusher&) = delete;
  L2Flusher& operator=(const L2Flusher&) = delete;
  void flush(cudaStream_t stream) { SEG_CUDA_CHECK(cudaMemsetAsync(buffer_, 0, bytes_, stream)); }

 private:
  size_t bytes_;
  void* buffer_ = nullptr;
};

// Median milliseconds of `fn()` (which queues work on `stream`) over `iters` runs after `warmup`.
template <class F>
double time_ms(F&& fn, cudaStream_t stream, L2Flusher& flusher, int warmup = 3, int iters = 20) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start, stop;
  SEG_CUDA_CHECK(cudaEventCreate(&start));
  SEG_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> times;
  for (int i = 0; i < iters; ++i) {
    flusher.flush(stream);
    SEG_CUDA_CHECK(cudaEventRecord(start, stream));
    fn();
    SEG_CUDA_CHECK(cudaEventRecord(stop, stream));
    SEG_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    SEG_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Runs `python script 'args-json'` (benchmarks/bench_util.h) and parses the JSON object it prints.
// Returns false (with the reason in `info`) when the peer cannot run.
inline bool run_peer(const std::string& script, const nlohmann::json& args, nlohmann::json& result,
                     std::string& info) {
  return run_peer_script(script, {args.dump()}, result, info);
}

// The command line of a kernel-lab benchmark: NAME [--warmup W] [--iters I] [--no-peer]. Bad input
// prints the usage and exits with status 2.
struct LabArgs {
  int warmup = 3, iters = 20;
  bool peer = true;
};

inline LabArgs parse_lab_args(int argc, char** argv, const char* name) {
  LabArgs a;
  for (int i = 1; i < argc; ++i) {
    const std::string opt = argv[i];
    if (opt == "--warmup" && i + 1 < argc) {
      a.warmup = std::atoi(argv[++i]);
    } else if (opt == "--iters" && i + 1 < argc) {
      a.iters = std::atoi(argv[++i]);
    } else if (opt == "--no-peer") {
      a.peer = false;
    } else {
      a.iters = 0;
      break;
    }
  }
  if (a.warmup < 0 || a.iters < 1) {
    std::fprintf(stderr, "usage: %s [--warmup W] [--iters I] [--no-peer]\n", name);
    std::exit(2);
  }
  return a;
}

// False, after saying so, when the machine has no GPU: a lab benchmark then measures nothing and
// exits with status 0 (the GPU check's table shows no rows for it).
inline bool lab_has_gpu(const char* name) {
  if (cuda_device_count() > 0) return true;
  std::printf("%s: needs a GPU (none found); nothing measured\n", name);
  return false;
}

// The benchmark's first line: the device and the peaks its rates are measured against.
inline void print_lab_device(const char* name, const DevicePeak& peak) {
  std::printf("%s on %s: HBM peak %.0f GB/s, %d SMs\n", name, peak.name.c_str(), peak.bandwidth_gbs,
              peak.sm_count);
}

// "123.4 GB/s (56% of peak)"
inline std::string bandwidth_str(double bytes, double ms, const DevicePeak& peak) {
  const double gbs = bytes / (ms * 1e-3) / 1e9;
  char buf[96];
  std::snprintf(buf, sizeof buf, "%8.1f GB/s (%3.0f%% of peak)", gbs, 100.0 * gbs / peak.bandwidth_gbs);
  return buf;
}

// One machine-readable row for the GPU check's summary table (benchmarks/gpu_check.sh collects
// every line that starts with "TABLE|"): the benchmark, the case, our time, our rate as text
// ("2650 GB/s" or "310 TFLOP/s"), the share of the device's peak in percent, and PyTorch's time
// (<= 0 when the peer did not run).
inline void table_row(const std::string& bench, const std::string& case_name, double ms,
                      const std::string& rate, double percent_of_peak, double torch_ms) {
  std::printf("TABLE|%s|%s|%.3f|%s|%.0f|%.3f|%.2f\n", bench.c_str(), case_name.c_str(), ms, rate.c_str(),
              percent_of_peak, torch_ms, torch_ms > 0 ? torch_ms / ms : 0.0);
}

}  // namespace seg::bench
