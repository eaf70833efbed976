// Kernel lab: cross entropy with ignore_index 255 fused with log-softmax over the class dim of
// (n, 19, h, w) logits, forward and backward, at Cityscapes sizes, f32, next to PyTorch's
// F.cross_entropy(ignore_index=255) (cross_entropy_peer.py, same shapes, same timing rules).
//
// Versions
//   v1  unfused, as PyTorch does it: log_softmax over dim 1 (the engine's softmax kernel) writes
//       the whole (n, c, h, w) log-probability tensor, a second kernel gathers -w[y] * logp[y];
//       backward g * w[y] * (exp(logp) - onehot) from the saved log-probabilities.
//   v2  the engine's fused kernels (kernels/cuda/softmax.cu): forward per-position loss, weight and
//       log-sum-exp in one pass over the logits; backward one pass from the saved lse.
//   op  the engine's cross_entropy() with reduction 'mean' through autograd: forward (kernel, sums,
//       the bad-label check that reads one integer on the host) + backward (scale on the device).
// Kernels are validated against the CPU kernels on the first image of each case before timing.
//
// Usage: bench_cross_entropy [--warmup W] [--iters I] [--no-peer]
//
// Bytes counted: forward logits + labels + loss, wsum, lse (v1: + the log-probabilities written
// and read back); backward logits (v1: log-probabilities) + labels + lse + glogits.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "benchmarks/cuda/lab.h"
#include "engine/autograd.h"
#include "engine/cuda/cuda_context.h"
#include "engine/dispatch.h"
#include "engine/ops.h"

using namespace seg;
using namespace seg::bench;

namespace {

constexpr int kBlock = 256;
constexpr int64_t kIgnore = 255;
// f32 exponentials and sums in different orders than the CPU's (which sums in f64).
constexpr double kTol = 1e-5;

struct Case {
  std::string name;
  int64_t n, c, h, w;
};

int grid_for(int64_t threads, int sm_count) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((threads + kBlock - 1) / kBlock, sm_count * 32)));
}

// v1 forward, second kernel: loss = -logp[y], wsum = 1 (0 where ignored), lse unused.
__global__ void v1_nll(const float* __restrict__ logp, const int32_t* __restrict__ labels,
                       float* __restrict__ loss, float* __restrict__ wsum, const int64_t positions,
                       const int64_t c, const int64_t inner) {
  for (int64_t pos = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; pos < positions;
       pos += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t y = labels[pos];
    const bool valid = y != kIgnore && y >= 0 && y < c;
    const int64_t o = pos / inner, i = pos - o * inner;
    loss[pos] = valid ? -logp[(o * c + y) * inner + i] : 0.0f;
    wsum[pos] = valid ? 1.0f : 0.0f;
  }
}

// v1 backward: g = scale * (exp(logp) - onehot), 0 where ignored.
__global__ void v1_backward(const float* __restrict__ logp, const int32_t* __restrict__ labels,
                            const float* __restrict__ scale, float* __restrict__ g, const int64_t positions,
                            const int64_t c, const int64_t inner) {
  for (int64_t pos = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; pos < positions;
       pos += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t y = labels[pos];
    const bool valid = y != kIgnore && y >= 0 && y < c;
    const float coef = valid ? scale[0] : 0.0f;
    const int64_t o = pos / inner, i = pos - o * inner;
    for (int64_t k = 0; k < c; ++k) {
      const int64_t e = (o * c + k) * inner + i;
      g[e] = coef * (expf(logp[e]) - (k == y ? 1.0f : 0.0f));
    }
  }
}

Tensor random_labels(int64_t n, int64_t h, int64_t w, int64_t c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> cls(0, static_cast<int32_t>(c - 1));
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<int32_t> v(static_cast<size_t>(n * h * w));
  for (int32_t& x : v) x = u(rng) < 0.1 ? static_cast<int32_t>(kIgnore) : cls(rng);
  return from_vector(v, {n, h, w});
}

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

// The buffers of one case on one device: logits (n, c, h, w), labels (n, h, w), per-position
// loss, wsum, lse (n, h * w), log-probabilities (v1), glogits, a scalar scale.
struct Buffers {
  CrossEntropyShape s;
  Tensor logits, labels, loss, wsum, lse, logp, glogits, scale, bad;
  Buffers(const Case& k, int64_t n, const Tensor& x, const Tensor& lab, Device dev) {
    s.n = n;
    s.c = k.c;
    s.inner = k.h * k.w;
    s.ignore_index = kIgnore;
    logits = x;
    labels = lab;
    loss = empty({n, s.inner}, DType::f32, dev);
    wsum = empty({n, s.inner}, DType::f32, dev);
    lse = empty({n, s.inner}, DType::f32, dev);
    logp = empty(x.sizes(), DType::f32, dev);
    glogits = empty(x.sizes(), DType::f32, dev);
    scale = full({}, 1.0 / static_cast<double>(n * s.inner), DType::f32, dev);
    bad = zeros({}, DType::i32, dev);
  }
};

void v2_forward(Buffers& b) {
  kernels_for<OpId::cross_entropy>(b.logits.device())
      .forward(exec_context(b.logits), b.s, view_of(b.logits), view_of(b.labels), View(), view_of(b.loss),
               view_of(b.wsum), view_of(b.lse), view_of(b.bad));
}
void v2_backward(Buffers& b) {
  kernels_for<OpId::cross_entropy>(b.logits.device())
      .backward(exec_context(b.logits), b.s, view_of(b.logits), view_of(b.labels), View(), view_of(b.lse),
                view_of(b.scale), view_of(b.glogits));
}
void v1_forward(Buffers& b, cudaStream_t stream, int sm_count) {
  SoftmaxShape ss;
  ss.outer = b.s.n;
  ss.dim = b.s.c;
  ss.inner = b.s.inner;
  kernels_for<OpId::log_softmax>(b.logits.device())
      .forward(exec_context(b.logits), ss, /*log=*/true, view_of(b.logits), view_of(b.logp));
  const int64_t positions = b.s.n * b.s.inner;
  v1_nll<<<grid_for(positions, sm_count), kBlock, 0, stream>>>(b.logp.data<float>(), b.labels.data<int32_t>(),
                                                               b.loss.data<float>(), b.wsum.data<float>(),
                                                               positions, b.s.c, b.s.inner);
  SEG_CUDA_LAUNCH_CHECK();
}
void v1_backward_run(Buffers& b, cudaStream_t stream, int sm_count) {
  const int64_t positions = b.s.n * b.s.inner;
  v1_backward<<<grid_for(positions, sm_count), kBlock, 0, stream>>>(
      b.logp.data<float>(), b.labels.data<int32_t>(), b.scale.data<float>(), b.glogits.data<float>(), positions,
      b.s.c, b.s.inner);
  SEG_CUDA_LAUNCH_CHECK();
}

}  // namespace

int main(int argc, char** argv) {
  const LabArgs args = parse_lab_args(argc, argv, "bench_cross_entropy");
  const int warmup = args.warmup, iters = args.iters;
  const bool peer = args.peer;
  if (!lab_has_gpu("bench_cross_entropy")) return 0;
  auto ctx = cuda::CudaContext::create(0);
  const Device gpu = ctx->device();
  cudaStream_t stream = ctx->compute_stream();
  const DevicePeak peak = device_peak(0);
  L2Flusher flusher(peak.l2_bytes);
  print_lab_device("bench_cross_entropy", peak);

  const std::vector<Case> cases = {
      {"cityscapes full frames", 8, 19, 1024, 2048},
      {"deeplab crops 768", 16, 19, 768, 768},
  };
  struct Row {
    std::string case_name, what;
    double ms, bytes;
    double torch_ms;
  };
  std::vector<Row> rows;
  bool all_valid = true;
  Generator gen(3);
  std::vector<nlohmann::json> peer_cases;
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& k = cases[ci];
    // Validation on the first image against the CPU kernels.
    {
      Tensor x = randn({1, k.c, k.h, k.w}, gen);
      Tensor lab = random_labels(1, k.h, k.w, k.c, 7 + ci);
      Buffers cpu(k, 1, x, lab, Device::cpu());
      v2_forward(cpu);
      v2_backward(cpu);
      Buffers g1(k, 1, x.to(gpu), lab.to(gpu), gpu), g2(k, 1, x.to(gpu), lab.to(gpu), gpu);
      v1_forward(g1, stream, peak.sm_count);
      v1_backward_run(g1, stream, peak.sm_count);
      v2_forward(g2);
      v2_backward(g2);
      const double e1 = std::max(rel_error(g1.loss, cpu.loss), rel_error(g1.glogits, cpu.glogits));
      const double e2 = std::max({rel_error(g2.loss, cpu.loss), rel_error(g2.lse, cpu.lse),
                                  rel_error(g2.wsum, cpu.wsum), rel_error(g2.glogits, cpu.glogits)});
      const bool ok = e1 <= kTol && e2 <= kTol && g2.bad.item() == 0.0;
      all_valid &= ok;
      std::printf("  validate %-24s v1 %.2e, v2 %.2e %s\n", k.name.c_str(), e1, e2, ok ? "ok" : "MISMATCH");
    }
    Tensor x = randn({k.n, k.c, k.h, k.w}, gen, DType::f32, gpu);
    Tensor lab = random_labels(k.n, k.h, k.w, k.c, 11 + ci).to(gpu);
    Buffers b(k, k.n, x, lab, gpu);
    const double logits_bytes = 4.0 * static_cast<double>(x.numel());
    const double pos_bytes = 4.0 * static_cast<double>(k.n * k.h * k.w);
    rows.push_back({k.name, "v1 fwd",
                    time_ms([&] { v1_forward(b, stream, peak.sm_count); }, stream, flusher, warmup, iters),
                    3 * logits_bytes + 3 * pos_bytes, -1});
    rows.push_back({k.name, "v1 bwd",
                    time_ms([&] { v1_backward_run(b, stream, peak.sm_count); }, stream, flusher, warmup, iters),
                    2 * logits_bytes + pos_bytes, -1});
    rows.push_back({k.name, "v2 fwd", time_ms([&] { v2_forward(b); }, stream, flusher, warmup, iters),
                    logits_bytes + 4 * pos_bytes, -1});
    rows.push_back({k.name, "v2 bwd", time_ms([&] { v2_backward(b); }, stream, flusher, warmup, iters),
                    2 * logits_bytes + 2 * pos_bytes, -1});
    // The whole op through autograd ('mean').
    Tensor xl = x.detach();
    xl.set_requires_grad(true);
    CrossEntropyOptions o;
    o.ignore_index = kIgnore;
    rows.push_back({k.name, "op fwd",
                    time_ms(
                        [&] {
                          NoGradGuard no_grad;
                          cross_entropy(xl, lab, o);
                        },
                        stream, flusher, warmup, iters),
                    logits_bytes + 4 * pos_bytes, -1});
    rows.push_back({k.name, "op fwd+bwd",
                    time_ms(
                        [&] {
                          xl.zero_grad();
                          cross_entropy(xl, lab, o).backward();
                        },
                        stream, flusher, warmup, iters),
                    3 * logits_bytes + 6 * pos_bytes, -1});
    peer_cases.push_back({{"n", k.n}, {"c", k.c}, {"h", k.h}, {"w", k.w}, {"ignore_index", kIgnore}});
  }

  if (peer) {
    nlohmann::json args;
    args["warmup"] = warmup;
    args["iters"] = iters;
    args["cases"] = peer_cases;
    nlohmann::json result;
    std::string info;
    if (run_peer(std::string(SEG_SOURCE_DIR) + "/benchmarks/cuda/cross_entropy_peer.py", args, result, info)) {
      std::printf("PyTorch %s\n", result.value("torch", "?").c_str());
      for (Row& r : rows) {
        size_t ci = 0;
        while (cases[ci].name != r.case_name) ++ci;
        const nlohmann::json& t = result["results"][ci];
        if (r.what.find("fwd+bwd") != std::string::npos) r.torch_ms = t["step_ms"].get<double>();
        else if (r.what.find("fwd") != std::string::npos) r.torch_ms = t["fwd_ms"].get<double>();
        else r.torch_ms = t["bwd_ms"].get<double>();
      }
    } else {
      std::printf("PyTorch peer did not run: %s\n", info.c_str());
    }
  }

  std::printf("\n%-24s %-11s %10s  %-32s %10s %8s\n", "case", "version", "ms", "bandwidth", "torch ms", "torch/us");
  for (const Row& r : rows) {
    std::printf("%-24s %-11s %10.3f  %-32s %10.3f %8.2f\n", r.case_name.c_str(), r.what.c_str(), r.ms,
                bandwidth_str(r.bytes, r.ms, peak).c_str(), r.torch_ms, r.torch_ms > 0 ? r.torch_ms / r.ms : 0.0);
    const double gbs = r.bytes / (r.ms * 1e-3) / 1e9;
    char rate[32];
    std::snprintf(rate, sizeof rate, "%.0f GB/s", gbs);
    table_row("cross_entropy", r.case_name + " " + r.what, r.ms, rate, 100.0 * gbs / peak.bandwidth_gbs, r.torch_ms);
  }
  if (!all_valid) {
    std::printf("\nbench_cross_entropy: a version does not match the CPU kernels\n");
    return 1;
  }
  return 0;
}
