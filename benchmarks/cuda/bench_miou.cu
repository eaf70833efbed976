// Kernel lab: the segmentation metric - argmax over 19 class logits and the (19, 19) confusion
// matrix with ignore label 255 - at Cityscapes sizes, f32: logits at label size, and logits at 1/8
// of it upsampled on the fly (DeepLabv3's output stride 8), next to PyTorch (miou_peer.py: argmax +
// torch.bincount, F.interpolate first for the upsampled path; same shapes, same timing rules).
//
// Versions
//   v1  unfused: (upsampled path) the engine's upsample_bilinear2d materialises the full-resolution
//       logits; then one thread per pixel takes the argmax and adds 1 to the global i64 matrix with
//       a 64-bit atomic (all pixels of a class contend for one counter).
//   v2  the engine's fused kernel (kernels/cuda/metrics.cu): argmax of the (upsampled on the fly)
//       logits, per-block shared-memory histograms with warp-aggregated integer atomics, merged
//       into the matrix once per block.
// Both are validated against the CPU kernel (exact equality of the matrices) on the first image.
//
// Usage: bench_miou [--warmup W] [--iters I] [--no-peer]
//
// Bytes counted: the logits read and the labels read (v1: plus the upsampled logits written and
// read back). The upsampled path reads little and computes 19 four-tap blends per pixel: its share
// of the HBM peak is low by nature; its time is the figure to compare.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "benchmarks/cuda/lab.h"
#include "engine/cuda/cuda_context.h"
#include "engine/dispatch.h"
#include "engine/ops.h"

using namespace seg;
using namespace seg::bench;

namespace {

constexpr int kBlock = 256;
constexpr int64_t kIgnore = 255;

struct Case {
  std::string name;
  int64_t n, c, h, w, label_h, label_w;
  bool align_corners;
};

// v1: argmax per pixel of full-resolution logits (n, c, hw), one global atomic per counted pixel.
__global__ void v1_confusion(const float* __restrict__ x, const int32_t* __restrict__ labels,
                             unsigned long long* __restrict__ confusion, const int64_t n, const int64_t c,
                             const int64_t hw) {
  const int64_t total = n * hw;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t y = labels[idx];
    if (y == kIgnore || y < 0 || y >= c) continue;
    const int64_t img = idx / hw, pix = idx - img * hw;
    const float* px = x + img * c * hw + pix;
    float best = px[0];
    int best_k = 0;
    for (int64_t k = 1; k < c; ++k) {
      const float v = px[k * hw];
      if (!(v <= best) && !(best != best)) {
        best = v;
        best_k = static_cast<int>(k);
      }
    }
    atomicAdd(confusion + y * c + best_k, 1ull);
  }
}

Tensor random_labels(int64_t n, int64_t h, int64_t w, int64_t c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  // Cityscapes-like imbalance: a few classes take most pixels (contention on their counters).
  std::discrete_distribution<int32_t> cls({30, 8, 20, 1, 1, 2, 1, 1, 14, 2, 4, 1, 1, 6, 1, 1, 1, 1, 1});
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<int32_t> v(static_cast<size_t>(n * h * w));
  for (int32_t& x : v) {
    x = u(rng) < 0.1 ? static_cast<int32_t>(kIgnore) : std::min<int32_t>(static_cast<int32_t>(c - 1), cls(rng));
  }
  return from_vector(v, {n, h, w});
}

ConfusionShape shape_of(const Case& k, int64_t n) {
  ConfusionShape s;
  s.n = n;
  s.c = k.c;
  s.h = k.h;
  s.w = k.w;
  s.label_h = k.label_h;
  s.label_w = k.label_w;
  s.ignore_index = kIgnore;
  s.align_corners = k.align_corners;
  return s;
}

struct Buffers {
  ConfusionShape s;
  Tensor logits, labels, upsampled, confusion, bad;
};

void v2_run(Buffers& b) {
  kernels_for<OpId::confusion_matrix>(b.logits.device())
      .accumulate(exec_context(b.logits), b.s, view_of(b.logits), view_of(b.labels), view_of(b.confusion),
                  view_of(b.bad));
}

void v1_run(Buffers& b, cudaStream_t stream, int sm_count) {
  const float* full = b.logits.data<float>();
  if (b.s.h != b.s.label_h || b.s.w != b.s.label_w) {
    UpsampleShape us;
    us.n = b.s.n;
    us.c = b.s.c;
    us.h = b.s.h;
    us.w = b.s.w;
    us.p = b.s.label_h;
    us.q = b.s.label_w;
    us.align_corners = b.s.align_corners;
    kernels_for<OpId::upsample_bilinear2d>(b.logits.device())
        .forward(exec_context(b.logits), us, view_of(b.logits), view_of(b.upsampled));
    full = b.upsampled.data<float>();
  }
  const int64_t hw = b.s.label_h * b.s.label_w;
  const int grid = static_cast<int>(std::min<int64_t>((b.s.n * hw + kBlock - 1) / kBlock, sm_count * 32));
  v1_confusion<<<grid, kBlock, 0, stream>>>(full, b.labels.data<int32_t>(),
                                            reinterpret_cast<unsigned long long*>(b.confusion.data<int64_t>()),
                                            b.s.n, b.s.c, hw);
  SEG_CUDA_LAUNCH_CHECK();
}

Buffers make_buffers(const Case& k, int64_t n, const Tensor& x, const Tensor& labels, Device dev) {
  Buffers b;
  b.s = shape_of(k, n);
  b.logits = x;
  b.labels = labels;
  const bool resize = k.h != k.label_h || k.w != k.label_w;
  if (resize) b.upsampled = empty({n, k.c, k.label_h, k.label_w}, DType::f32, dev);
  b.confusion = zeros({k.c, k.c}, DType::i64, dev);
  b.bad = zeros({}, DType::i32, dev);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  const LabArgs args = parse_lab_args(argc, argv, "bench_miou");
  const int warmup = args.warmup, iters = args.iters;
  const bool peer = args.peer;
  if (!lab_has_gpu("bench_miou")) return 0;
  auto ctx = cuda::CudaContext::create(0);
  const Device gpu = ctx->device();
  cudaStream_t stream = ctx->compute_stream();
  const DevicePeak peak = device_peak(0);
  L2Flusher flusher(peak.l2_bytes);
  print_lab_device("bench_miou", peak);

  const std::vector<Case> cases = {
      {"full-res logits", 8, 19, 1024, 2048, 1024, 2048, false},
      {"os8 logits upsampled", 8, 19, 128, 256, 1024, 2048, false},
      {"os8 logits upsampled ac", 8, 19, 128, 256, 1024, 2048, true},
  };
  struct Row {
    std::string case_name, version;
    double ms, bytes;
  };
  std::vector<Row> rows;
  bool all_valid = true;
  Generator gen(5);
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& k = cases[ci];
    {
      Tensor x = randn({1, k.c, k.h, k.w}, gen);
      Tensor lab = random_labels(1, k.label_h, k.label_w, k.c, 100 + ci);
      Buffers cpu = make_buffers(k, 1, x, lab, Device::cpu());
      v2_run(cpu);
      const std::vector<int64_t> want = to_vector<int64_t>(cpu.confusion);
      Buffers g1 = make_buffers(k, 1, x.to(gpu), lab.to(gpu), gpu);
      Buffers g2 = make_buffers(k, 1, x.to(gpu), lab.to(gpu), gpu);
      v1_run(g1, stream, peak.sm_count);
      v2_run(g2);
      const bool ok1 = to_vector<int64_t>(g1.confusion) == want;
      const bool ok2 = to_vector<int64_t>(g2.confusion) == want && g2.bad.item() == 0.0;
      all_valid &= ok1 && ok2;
      std::printf("  validate %-24s v1 %s, v2 %s\n", k.name.c_str(), ok1 ? "ok" : "MISMATCH", ok2 ? "ok" : "MISMATCH");
    }
    Tensor x = randn({k.n, k.c, k.h, k.w}, gen, DType::f32, gpu);
    Tensor lab = random_labels(k.n, k.label_h, k.label_w, k.c, 200 + ci).to(gpu);
    Buffers b = make_buffers(k, k.n, x, lab, gpu);
    const double logits_bytes = 4.0 * static_cast<double>(x.numel());
    const double label_bytes = 4.0 * static_cast<double>(lab.numel());
    const double upsampled_bytes = b.upsampled.defined() ? 8.0 * static_cast<double>(b.upsampled.numel()) : 0.0;
    rows.push_back({k.name, "v1", time_ms([&] { v1_run(b, stream, peak.sm_count); }, stream, flusher, warmup, iters),
                    logits_bytes + label_bytes + upsampled_bytes});
    rows.push_back({k.name, "v2", time_ms([&] { v2_run(b); }, stream, flusher, warmup, iters),
                    logits_bytes + label_bytes});
  }

  std::vector<double> torch_ms(cases.size(), -1.0);
  if (peer) {
    nlohmann::json args;
    args["warmup"] = warmup;
    args["iters"] = iters;
    for (const Case& k : cases) {
      args["cases"].push_back({{"n", k.n}, {"c", k.c}, {"h", k.h}, {"w", k.w}, {"label_h", k.label_h},
                               {"label_w", k.label_w}, {"align_corners", k.align_corners},
                               {"ignore_index", kIgnore}});
    }
    nlohmann::json result;
    std::string info;
    if (run_peer(std::string(SEG_SOURCE_DIR) + "/benchmarks/cuda/miou_peer.py", args, result, info)) {
      std::printf("PyTorch %s\n", result.value("torch", "?").c_str());
      for (size_t i = 0; i < cases.size(); ++i) torch_ms[i] = result["results"][i]["ms"].get<double>();
    } else {
      std::printf("PyTorch peer did not run: %s\n", info.c_str());
    }
  }

  std::printf("\n%-26s %-3s %10s  %-32s %10s %8s\n", "case", "ver", "ms", "bandwidth", "torch ms", "torch/us");
  for (const Row& r : rows) {
    size_t ci = 0;
    while (cases[ci].name != r.case_name) ++ci;
    const double t = torch_ms[ci];
    std::printf("%-26s %-3s %10.3f  %-32s %10.3f %8.2f\n", r.case_name.c_str(), r.version.c_str(), r.ms,
                bandwidth_str(r.bytes, r.ms, peak).c_str(), t, t > 0 ? t / r.ms : 0.0);
    const double gbs = r.bytes / (r.ms * 1e-3) / 1e9;
    char rate[32];
    std::snprintf(rate, sizeof rate, "%.0f GB/s", gbs);
    table_row("miou", r.case_name + " " + r.version, r.ms, rate, 100.0 * gbs / peak.bandwidth_gbs, t);
  }
  if (!all_valid) {
    std::printf("\nbench_miou: a version does not match the CPU kernel\n");
    return 1;
  }
  return 0;
}
