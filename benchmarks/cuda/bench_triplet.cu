// Kernel lab: the triplet margin loss (the temporal-position pretext task: 2048-d ResNet embeddings),
// forward and backward, f32, p = 2 and p = 1, next to PyTorch's F.triplet_margin_loss
// (triplet_peer.py, same shapes, same timing rules).
//
// Versions
//   v1  naive: forward one thread per sample looping over d (the warp's loads are d * 4 bytes
//       apart: uncoalesced); backward one thread per element (coalesced, the per-sample scalars
//       re-read per element).
//   v2  the engine's fused kernels (kernels/cuda/loss.cu): a warp (d <= 1024) or a block per
//       sample, coalesced, fixed-order reductions in f64; backward in the same mapping.
// Both are validated against the CPU kernels before timing.
//
// Usage: bench_triplet [--warmup W] [--iters I] [--no-peer]
//
// Bytes counted: forward reads anchor, positive, negative (3 n d) and writes 3 n; backward reads
// 3 n d (+ 3 n) and writes the three gradients (3 n d).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
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
// f64 arithmetic on both sides; the distances round to f32 at the end (a few ulps of 1e-7 where the
// summation orders differ), and the gradients follow from them.
constexpr double kTol = 1e-5;

struct Case {
  std::string name;
  int64_t n, d;
  int p;
  double margin;
};

template <int P>
__global__ void v1_forward(const TripletShape s, const float* __restrict__ a, const float* __restrict__ pos,
                           const float* __restrict__ neg, float* __restrict__ loss, float* __restrict__ dap,
                           float* __restrict__ dan) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < s.n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    double sap = 0.0, san = 0.0;
    for (int64_t k = 0; k < s.d; ++k) {
      const double ak = a[i * s.d + k];
      sap += triplet_norm_term(ak - static_cast<double>(pos[i * s.d + k]) + s.eps, P);
      san += triplet_norm_term(ak - static_cast<double>(neg[i * s.d + k]) + s.eps, P);
    }
    const float fap = static_cast<float>(triplet_norm_finish(sap, P));
    const float fan = static_cast<float>(triplet_norm_finish(san, P));
    dap[i] = fap;
    dan[i] = fan;
    const double h = triplet_hinge(static_cast<double>(fap), static_cast<double>(fan), s.margin);
    loss[i] = static_cast<float>(h < 0.0 ? 0.0 : h);
  }
}

template <int P>
__global__ void v1_backward(const TripletShape s, const float* __restrict__ a, const float* __restrict__ pos,
                            const float* __restrict__ neg, const float* __restrict__ dap,
                            const float* __restrict__ dan, const float* __restrict__ scale,
                            float* __restrict__ ga, float* __restrict__ gp, float* __restrict__ gn) {
  const int64_t total = s.n * s.d;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / s.d;
    const double d_ap = dap[i], d_an = dan[i];
    const double g = triplet_active(triplet_hinge(d_ap, d_an, s.margin)) ? static_cast<double>(scale[0]) : 0.0;
    const double ak = a[e];
    const double t_ap = ak - static_cast<double>(pos[e]) + s.eps;
    const double t_an = ak - static_cast<double>(neg[e]) + s.eps;
    const double u_ap = g * triplet_norm_grad(t_ap, d_ap, P);
    const double u_an = g * triplet_norm_grad(t_an, d_an, P);
    ga[e] = static_cast<float>(u_ap - u_an);
    gp[e] = static_cast<float>(-u_ap);
    gn[e] = static_cast<float>(u_an);
  }
}

struct Buffers {
  TripletShape s;
  Tensor a, p, n, loss, dap, dan, scale, ga, gp, gn;
  Buffers(const Case& k, const Tensor& a_, const Tensor& p_, const Tensor& n_, Device dev) {
    s.n = k.n;
    s.d = k.d;
    s.p = k.p;
    s.margin = k.margin;
    a = a_;
    p = p_;
    n = n_;
    loss = empty({k.n}, DType::f32, dev);
    dap = empty({k.n}, DType::f32, dev);
    dan = empty({k.n}, DType::f32, dev);
    scale = full({}, 1.0 / static_cast<double>(k.n), DType::f32, dev);
    ga = empty(a.sizes(), DType::f32, dev);
    gp = empty(a.sizes(), DType::f32, dev);
    gn = empty(a.sizes(), DType::f32, dev);
  }
};

void v2_forward(Buffers& b) {
  kernels_for<OpId::triplet_margin_loss>(b.a.device())
      .forward(exec_context(b.a), b.s, view_of(b.a), view_of(b.p), view_of(b.n), view_of(b.loss), view_of(b.dap),
               view_of(b.dan));
}
void v2_backward(Buffers& b) {
  kernels_for<OpId::triplet_margin_loss>(b.a.device())
      .backward(exec_context(b.a), b.s, view_of(b.a), view_of(b.p), view_of(b.n), view_of(b.dap), view_of(b.dan),
                view_of(b.scale), view_of(b.ga), view_of(b.gp), view_of(b.gn));
}
void v1_forward_run(Buffers& b, cudaStream_t stream, int sm_count) {
  const int grid = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((b.s.n + kBlock - 1) / kBlock, sm_count * 32)));
  if (b.s.p == 1) {
    v1_forward<1><<<grid, kBlock, 0, stream>>>(b.s, b.a.data<float>(), b.p.data<float>(), b.n.data<float>(),
                                               b.loss.data<float>(), b.dap.data<float>(), b.dan.data<float>());
  } else {
    v1_forward<2><<<grid, kBlock, 0, stream>>>(b.s, b.a.data<float>(), b.p.data<float>(), b.n.data<float>(),
                                               b.loss.data<float>(), b.dap.data<float>(), b.dan.data<float>());
  }
  SEG_CUDA_LAUNCH_CHECK();
}
void v1_backward_run(Buffers& b, cudaStream_t stream, int sm_count) {
  const int grid = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((b.s.n * b.s.d + kBlock - 1) / kBlock, sm_count * 32)));
  auto* fn = b.s.p == 1 ? &v1_backward<1> : &v1_backward<2>;
  fn<<<grid, kBlock, 0, stream>>>(b.s, b.a.data<float>(), b.p.data<float>(), b.n.data<float>(), b.dap.data<float>(),
                                  b.dan.data<float>(), b.scale.data<float>(), b.ga.data<float>(), b.gp.data<float>(),
                                  b.gn.data<float>());
  SEG_CUDA_LAUNCH_CHECK();
}

double rel_error(const Tensor& got, const Tensor& want) {
  const std::vector<float> x = to_vector<float>(got), y = to_vector<float>(want);
  double err = 0.0, scale = 0.0;
  for (size_t i = 0; i < y.size(); ++i) {
    scale = std::max(scale, static_cast<double>(std::abs(y[i])));
    const double e = std::abs(static_cast<double>(x[i]) - y[i]);
    err = std::isnan(e) ? INFINITY : std::max(err, e);
  }
  return err / std::max(scale, 1e-30);
}

double max_error(const Buffers& got, const Buffers& want) {
  return std::max({rel_error(got.loss, want.loss), rel_error(got.dap, want.dap), rel_error(got.dan, want.dan),
                   rel_error(got.ga, want.ga), rel_error(got.gp, want.gp), rel_error(got.gn, want.gn)});
}

}  // namespace

int main(int argc, char** argv) {
  const LabArgs args = parse_lab_args(argc, argv, "bench_triplet");
  const int warmup = args.warmup, iters = args.iters;
  const bool peer = args.peer;
  if (!lab_has_gpu("bench_triplet")) return 0;
  auto ctx = cuda::CudaContext::create(0);
  const Device gpu = ctx->device();
  cudaStream_t stream = ctx->compute_stream();
  const DevicePeak peak = device_peak(0);
  L2Flusher flusher(peak.l2_bytes);
  print_lab_device("bench_triplet", peak);

  // Positives at spread 0.5 and negatives at spread 1 around the anchor: the margins put the hinge
  // near the middle of the distance gap (d(a, p) ~ 0.5 sqrt(d) or 0.4 d, d(a, n) twice that), so
  // about half the samples are active and the validation sees non-zero gradients.
  const std::vector<Case> cases = {
      {"pretext batch 256 d2048 p2", 256, 2048, 2, 22.6},
      {"n8192 d2048 p2", 8192, 2048, 2, 22.6},
      {"n8192 d2048 p1", 8192, 2048, 1, 817.0},
      {"n65536 d129 p2", 65536, 129, 2, 5.7},
  };
  struct Row {
    std::string case_name, what;
    double ms, bytes, torch_ms;
  };
  std::vector<Row> rows;
  bool all_valid = true;
  Generator gen(9);
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& k = cases[ci];
    Tensor a = randn({k.n, k.d}, gen);
    Tensor p = add(a, mul_scalar(randn({k.n, k.d}, gen), 0.5));
    Tensor n = add(a, randn({k.n, k.d}, gen));
    Buffers cpu(k, a, p, n, Device::cpu());
    v2_forward(cpu);
    v2_backward(cpu);
    Buffers b(k, a.to(gpu), p.to(gpu), n.to(gpu), gpu);
    v1_forward_run(b, stream, peak.sm_count);
    v1_backward_run(b, stream, peak.sm_count);
    const double e1 = max_error(b, cpu);
    v2_forward(b);
    v2_backward(b);
    const double e2 = max_error(b, cpu);
    const bool ok = e1 <= kTol && e2 <= kTol;
    all_valid &= ok;
    std::printf("  validate %-28s v1 %.2e, v2 %.2e %s\n", k.name.c_str(), e1, e2, ok ? "ok" : "MISMATCH");
    const double in_bytes = 12.0 * static_cast<double>(k.n * k.d);
    rows.push_back({k.name, "v1 fwd", time_ms([&] { v1_forward_run(b, stream, peak.sm_count); }, stream, flusher, warmup, iters),
                    in_bytes + 12.0 * k.n, -1});
    rows.push_back({k.name, "v1 bwd", time_ms([&] { v1_backward_run(b, stream, peak.sm_count); }, stream, flusher, warmup, iters),
                    2 * in_bytes + 12.0 * k.n, -1});
    rows.push_back({k.name, "v2 fwd", time_ms([&] { v2_forward(b); }, stream, flusher, warmup, iters),
                    in_bytes + 12.0 * k.n, -1});
    rows.push_back({k.name, "v2 bwd", time_ms([&] { v2_backward(b); }, stream, flusher, warmup, iters),
                    2 * in_bytes + 12.0 * k.n, -1});
  }

  if (peer) {
    nlohmann::json args;
    args["warmup"] = warmup;
    args["iters"] = iters;
    for (const Case& k : cases) {
      args["cases"].push_back({{"n", k.n}, {"d", k.d}, {"p", k.p}, {"margin", k.margin}});
    }
    nlohmann::json result;
    std::string info;
    if (run_peer(std::string(SEG_SOURCE_DIR) + "/benchmarks/cuda/triplet_peer.py", args, result, info)) {
      std::printf("PyTorch %s\n", result.value("torch", "?").c_str());
      for (Row& r : rows) {
        size_t ci = 0;
        while (cases[ci].name != r.case_name) ++ci;
        r.torch_ms = result["results"][ci][r.what.find("fwd") != std::string::npos ? "fwd_ms" : "bwd_ms"].get<double>();
      }
    } else {
      std::printf("PyTorch peer did not run: %s\n", info.c_str());
    }
  }

  std::printf("\n%-28s %-7s %10s  %-32s %10s %8s\n", "case", "version", "ms", "bandwidth", "torch ms", "torch/us");
  for (const Row& r : rows) {
    std::printf("%-28s %-7s %10.3f  %-32s %10.3f %8.2f\n", r.case_name.c_str(), r.what.c_str(), r.ms,
                bandwidth_str(r.bytes, r.ms, peak).c_str(), r.torch_ms, r.torch_ms > 0 ? r.torch_ms / r.ms : 0.0);
    const double gbs = r.bytes / (r.ms * 1e-3) / 1e9;
    char rate[32];
    std::snprintf(rate, sizeof rate, "%.0f GB/s", gbs);
    table_row("triplet", r.case_name + " " + r.what, r.ms, rate, 100.0 * gbs / peak.bandwidth_gbs, r.torch_ms);
  }
  if (!all_valid) {
    std::printf("\nbench_triplet: a version does not match the CPU kernels\n");
    return 1;
  }
  return 0;
}
