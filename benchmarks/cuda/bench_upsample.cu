// Kernel lab: bilinear upsampling (upsample_bilinear2d), forward and backward, at Cityscapes sizes,
// align_corners both ways, f32, next to PyTorch's F.interpolate (upsample_peer.py, same shapes, same
// timing rules).
//
// Versions
//   v1  naive: forward one thread per output with 64-bit index splits and both taps recomputed;
//       backward a scatter with float atomicAdd (nondeterministic: the baseline the gather replaces).
//   v2  the engine's kernels (kernels/cuda/upsample.cu): tiled forward with shared row taps; backward
//       a fused per-band gather, deterministic, gy read once.
// Every version is validated against the CPU kernel on the first image of each case before timing.
//
// Usage: bench_upsample [--warmup W] [--iters I] [--no-peer]
//
// Bytes counted: forward x + y, backward gy + gx (the essential traffic); GB/s and % of the
// device's HBM peak follow from the median time (CUDA events, L2 flushed before every call).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "benchmarks/cuda/lab.h"
#include "engine/cuda/cuda_context.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "kernels/common/upsample.h"

using namespace seg;
using namespace seg::bench;

namespace {

struct Case {
  std::string name;
  int64_t n, c, h, w, p, q;
  bool align_corners;
};

constexpr int kBlock = 256;

// ---- v1: naive kernels ----

__global__ void v1_forward(const float* __restrict__ x, float* __restrict__ y, const UpsampleShape s,
                           const float scale_h, const float scale_w, const int64_t total) {
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; o < total;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = o % s.q, r = o / s.q, i = r % s.p, plane = r / s.p;
    const BilinearTap<float> a = bilinear_tap<float>(i, s.h, scale_h, s.align_corners);
    const BilinearTap<float> b = bilinear_tap<float>(j, s.w, scale_w, s.align_corners);
    const float* x0 = x + (plane * s.h + a.i0) * s.w;
    const float* x1 = x + (plane * s.h + a.i1) * s.w;
    y[o] = bilinear_blend(a.w0, bilinear_blend(b.w0, x0[b.i0], b.w1, x0[b.i1]), a.w1,
                          bilinear_blend(b.w0, x1[b.i0], b.w1, x1[b.i1]));
  }
}

// gx must be zeroed first.
__global__ void v1_backward(const float* __restrict__ gy, float* __restrict__ gx, const UpsampleShape s,
                            const float scale_h, const float scale_w, const int64_t total) {
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; o < total;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = o % s.q, r = o / s.q, i = r % s.p, plane = r / s.p;
    const BilinearTap<float> a = bilinear_tap<float>(i, s.h, scale_h, s.align_corners);
    const BilinearTap<float> b = bilinear_tap<float>(j, s.w, scale_w, s.align_corners);
    const float g = gy[o];
    float* g0 = gx + (plane * s.h + a.i0) * s.w;
    float* g1 = gx + (plane * s.h + a.i1) * s.w;
    atomicAdd(g0 + b.i0, a.w0 * b.w0 * g);
    atomicAdd(g0 + b.i1, a.w0 * b.w1 * g);
    atomicAdd(g1 + b.i0, a.w1 * b.w0 * g);
    atomicAdd(g1 + b.i1, a.w1 * b.w1 * g);
  }
}

int v1_grid(int64_t total) {
  return static_cast<int>(std::min<int64_t>((total + kBlock - 1) / kBlock, 132 * 8 * 4));
}

UpsampleShape shape_of(const Case& k, int64_t n) {
  UpsampleShape s;
  s.n = n;
  s.c = k.c;
  s.h = k.h;
  s.w = k.w;
  s.p = k.p;
  s.q = k.q;
  s.align_corners = k.align_corners;
  return s;
}

// Forward and backward of one version on (x, gy) -> (y, gx), queued on the context's stream.
struct Version {
  std::string name;
  void (*forward)(const UpsampleShape& s, const Tensor& x, const Tensor& y, cudaStream_t stream);
  void (*backward)(const UpsampleShape& s, const Tensor& gy, const Tensor& gx, cudaStream_t stream);
};

void v1_fwd(const UpsampleShape& s, const Tensor& x, const Tensor& y, cudaStream_t stream) {
  const int64_t total = s.n * s.c * s.p * s.q;
  v1_forward<<<v1_grid(total), kBlock, 0, stream>>>(
      x.data<float>(), y.data<float>(), s, bilinear_scale<float>(s.h, s.p, s.align_corners),
      bilinear_scale<float>(s.w, s.q, s.align_corners), total);
  SEG_CUDA_LAUNCH_CHECK();
}
void v1_bwd(const UpsampleShape& s, const Tensor& gy, const Tensor& gx, cudaStream_t stream) {
  const int64_t total = s.n * s.c * s.p * s.q;
  SEG_CUDA_CHECK(cudaMemsetAsync(gx.data_ptr(), 0, sizeof(float) * static_cast<size_t>(gx.numel()), stream));
  v1_backward<<<v1_grid(total), kBlock, 0, stream>>>(
      gy.data<float>(), gx.data<float>(), s, bilinear_scale<float>(s.h, s.p, s.align_corners),
      bilinear_scale<float>(s.w, s.q, s.align_corners), total);
  SEG_CUDA_LAUNCH_CHECK();
}
void v2_fwd(const UpsampleShape& s, const Tensor& x, const Tensor& y, cudaStream_t) {
  kernels_for<OpId::upsample_bilinear2d>(x.device()).forward(exec_context(x), s, view_of(x), view_of(y));
}
void v2_bwd(const UpsampleShape& s, const Tensor& gy, const Tensor& gx, cudaStream_t) {
  kernels_for<OpId::upsample_bilinear2d>(gy.device()).backward(exec_context(gy), s, view_of(gy), view_of(gx));
}

// max |a - b| / max |b|
double rel_error(const Tensor& got, const Tensor& want) {
  const std::vector<float> a = to_vector<float>(got), b = to_vector<float>(want);
  double err = 0.0, scale = 0.0;
  for (size_t i = 0; i < b.size(); ++i) {
    scale = std::max(scale, static_cast<double>(std::abs(b[i])));
    const double e = std::abs(static_cast<double>(a[i]) - b[i]);
    err = std::isnan(e) ? INFINITY : std::max(err, e);
  }
  return err / std::max(scale, 1e-30);
}

// f32 sums of up to ~4 (p / h) (q / w) products in a different order than the CPU's.
constexpr double kBackwardTol = 1e-5;

}  // namespace

int main(int argc, char** argv) {
  const LabArgs args = parse_lab_args(argc, argv, "bench_upsample");
  const int warmup = args.warmup, iters = args.iters;
  const bool peer = args.peer;
  if (!lab_has_gpu("bench_upsample")) return 0;
  auto ctx = cuda::CudaContext::create(0);
  const Device gpu = ctx->device();
  cudaStream_t stream = ctx->compute_stream();
  const DevicePeak peak = device_peak(0);
  L2Flusher flusher(peak.l2_bytes);
  print_lab_device("bench_upsample", peak);

  const std::vector<Case> cases = {
      {"deeplab logits 8x", 8, 19, 128, 256, 1024, 2048, false},
      {"deeplab logits 8x ac", 8, 19, 128, 256, 1024, 2048, true},
      {"unet up 2x ac", 8, 64, 256, 512, 512, 1024, true},
      {"unet up 2x", 8, 64, 256, 512, 512, 1024, false},
  };
  const std::vector<Version> versions = {{"v1", &v1_fwd, &v1_bwd}, {"v2", &v2_fwd, &v2_bwd}};

  struct Row {
    std::string case_name, version, dir;
    double ms, bytes;
  };
  std::vector<Row> rows;
  bool all_valid = true;
  Generator gen(1);
  for (const Case& k : cases) {
    // Validation on the first image against the CPU kernel.
    {
      const UpsampleShape s1 = shape_of(k, 1);
      Tensor x = randn({1, k.c, k.h, k.w}, gen);
      Tensor gy = randn({1, k.c, k.p, k.q}, gen);
      Tensor y_cpu = empty({1, k.c, k.p, k.q}), gx_cpu = empty({1, k.c, k.h, k.w});
      const auto& cpu = kernels_for<OpId::upsample_bilinear2d>(Device::cpu());
      cpu.forward(exec_context(x), s1, view_of(x), view_of(y_cpu));
      cpu.backward(exec_context(gy), s1, view_of(gy), view_of(gx_cpu));
      Tensor xg = x.to(gpu), gyg = gy.to(gpu);
      for (const Version& v : versions) {
        Tensor y = empty({1, k.c, k.p, k.q}, DType::f32, gpu), gx = empty({1, k.c, k.h, k.w}, DType::f32, gpu);
        v.forward(s1, xg, y, stream);
        v.backward(s1, gyg, gx, stream);
        const double ef = rel_error(y, y_cpu), eb = rel_error(gx, gx_cpu);
        const bool ok = ef <= 1e-6 && eb <= kBackwardTol;
        all_valid &= ok;
        std::printf("  validate %-22s %s: forward %.2e, backward %.2e %s\n", k.name.c_str(), v.name.c_str(), ef,
                    eb, ok ? "ok" : "MISMATCH");
      }
    }
    const UpsampleShape s = shape_of(k, k.n);
    Tensor x = randn({k.n, k.c, k.h, k.w}, gen, DType::f32, gpu);
    Tensor gy = randn({k.n, k.c, k.p, k.q}, gen, DType::f32, gpu);
    Tensor y = empty({k.n, k.c, k.p, k.q}, DType::f32, gpu), gx = empty({k.n, k.c, k.h, k.w}, DType::f32, gpu);
    const double small = 4.0 * static_cast<double>(x.numel()), big = 4.0 * static_cast<double>(y.numel());
    for (const Version& v : versions) {
      rows.push_back({k.name, v.name, "fwd", time_ms([&] { v.forward(s, x, y, stream); }, stream, flusher, warmup, iters),
                      small + big});
      rows.push_back({k.name, v.name, "bwd", time_ms([&] { v.backward(s, gy, gx, stream); }, stream, flusher, warmup, iters),
                      small + big});
    }
  }

  // PyTorch on the same shapes.
  std::vector<double> torch_fwd(cases.size(), -1.0), torch_bwd(cases.size(), -1.0);
  if (peer) {
    nlohmann::json args;
    args["warmup"] = warmup;
    args["iters"] = iters;
    for (const Case& k : cases) {
      args["cases"].push_back({{"n", k.n}, {"c", k.c}, {"h", k.h}, {"w", k.w}, {"p", k.p}, {"q", k.q},
                               {"align_corners", k.align_corners}});
    }
    nlohmann::json result;
    std::string info;
    if (run_peer(std::string(SEG_SOURCE_DIR) + "/benchmarks/cuda/upsample_peer.py", args, result, info)) {
      std::printf("PyTorch %s\n", result.value("torch", "?").c_str());
      for (size_t i = 0; i < cases.size(); ++i) {
        torch_fwd[i] = result["results"][i]["fwd_ms"].get<double>();
        torch_bwd[i] = result["results"][i]["bwd_ms"].get<double>();
      }
    } else {
      std::printf("PyTorch peer did not run: %s\n", info.c_str());
    }
  }

  std::printf("\n%-22s %-3s %-3s %10s  %-32s %10s %8s\n", "case", "ver", "dir", "ms", "bandwidth", "torch ms",
              "torch/us");
  for (const Row& r : rows) {
    size_t ci = 0;
    while (cases[ci].name != r.case_name) ++ci;
    const double t = r.dir == "fwd" ? torch_fwd[ci] : torch_bwd[ci];
    std::printf("%-22s %-3s %-3s %10.3f  %-32s %10.3f %8.2f\n", r.case_name.c_str(), r.version.c_str(),
                r.dir.c_str(), r.ms, bandwidth_str(r.bytes, r.ms, peak).c_str(), t, t > 0 ? t / r.ms : 0.0);
    const double gbs = r.bytes / (r.ms * 1e-3) / 1e9;
    char rate[32];
    std::snprintf(rate, sizeof rate, "%.0f GB/s", gbs);
    table_row("upsample", r.case_name + " " + r.dir + " " + r.version, r.ms, rate, 100.0 * gbs / peak.bandwidth_gbs, t);
  }
  if (!all_valid) {
    std::printf("\nbench_upsample: a version does not match the CPU kernel\n");
    return 1;
  }
  return 0;
}
