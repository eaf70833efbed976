// ASPP projection benchmark (CPU): DeepLabv3's 1x1 projection of cat(4 branches, image pooling)
// at DeepLabv3-ResNet101 shapes, forward + backward, f32, three ways in the same run:
//   fused  our aspp_projection (per-branch GEMMs accumulating into one output, the pooled branch
//          a per-(image, channel) bias; the (n, 1280, h, w) concatenation never exists);
//   cat    our materialised path: cat(branches + pooled expanded over h, w) then conv2d 1x1 with
//          the same weight (the op's definition);
//   torch  PyTorch doing the materialised computation (benchmarks/conv_peer.py's "aspp" shapes,
//          run through /usr/bin/python3, or $SEG_PYTHON, with the same shapes, thread count, warmup
//          and iterations): torchvision's ASPP head concatenates the pooled branch after bringing
//          it to (h, w) and runs a 1x1 conv without bias.
//
// Usage: bench_aspp [--threads N] [--warmup W] [--iters I] [--peer PATH] [--no-peer] [--cpu-time]
//
// Design notes
// - Check before timing: at every full shape, fused and cat get the same inputs and the same
//   upstream gradient; the output and the gradients of every branch, of pooled and of the weight
//   must agree within kCheckTolerance (max |a - b| / max |b|, per tensor). A failed check is
//   printed, the shape is still timed, and the exit status is 1.
// - Times are medians over the iterations. One step is: forward, backward with a fixed upstream
//   gradient through autograd, leaf gradients dropped before the next step (the peer sets
//   .grad = None likewise). fwd = the forward under no_grad.
// - GFLOP/s counts the definition's work for every variant: 2 * n*h*w * k * C (C = 1280 input
//   channels) for the forward, 3x for a step (forward, input gradient, weight gradient), so that
//   the rates compare directly. The fused op does less: the pooled channels cost k*p per image
//   instead of k*p*h*w in the forward and in the input gradient, i.e. about 4/5 of those FLOPs.
// - The pooled branch is given as (n, 256) and expanded (a stride-0 view) before cat on both
//   materialised sides; torchvision upsamples its (n, 256, 1, 1) map bilinearly, which from a 1x1
//   map gives the same values: either way cat writes the broadcast out.
// - Shape by shape, ours then the peer's, so that a change in the shared machine's speed during
//   the run affects a row's three variants alike; fused and cat alternate iteration by iteration.
// - --threads sets OpenMP's and OpenBLAS's thread counts (default: OpenMP's current maximum); the
//   peer gets the same number through torch.set_num_threads.
#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "benchmarks/bench_util.h"
#include "engine/autograd.h"
#include "engine/ops.h"

using namespace seg;

namespace {

using bench::median;

// fused against cat, both f32 on the CPU: the same products summed in another order (four
// 256-deep GEMMs plus a rank-1 bias term against one 1280-deep GEMM; the pooled gradient summed
// over h*w before W_p^T instead of after). f32 rounding of sums of up to 1280 (outputs, input
// gradients) or n*h*w <= 32768 (weight gradient) products of O(1) values stays near 1e-6 of the
// largest value; 1e-4 leaves a wide margin, while a wrong, missing or doubled term (a branch, the
// pooled bias, a column block of the weight) moves the result by O(1e-1) of it.
constexpr double kCheckTolerance = 1e-4;

struct AsppShape {
  std::string name;
  int64_t n, h, w;
  int64_t branches = 4, width = 256, pooled = 256, k = 256;  // DeepLabv3-ResNet101's ASPP

  int64_t channels() const { return branches * width + pooled; }  // C = 1280
  // The definition's multiply-adds x 2: a 1x1 conv over all C channels at every position.
  double forward_flops() const {
    return 2.0 * static_cast<double>(n * h * w) * static_cast<double>(k * channels());
  }
  double concat_bytes() const { return 4.0 * static_cast<double>(n * channels() * h * w); }
  std::string spec() const {
    char buf[160];
    std::snprintf(buf, sizeof(buf), "%ld,%ld,%ld,%ld,%ld,%ld,%ld", long(n), long(h), long(w),
                  long(branches), long(width), long(pooled), long(k));
    return buf;
  }
};

struct Timing {
  double step_ms = 0.0;  // forward + backward through autograd
  double fwd_ms = 0.0;   // forward only, no grad
};

struct AsppInputs {
  std::vector<Tensor> branches;  // each (n, width, h, w)
  Tensor pooled;                 // (n, pooled)
  Tensor weight;                 // (k, C)
};

// Leaves that require grad; the weight scaled as a trained 1x1 conv's (outputs of O(1)).
AsppInputs make_inputs(const AsppShape& s, uint64_t seed) {
  Generator gen(seed);
  AsppInputs in;
  for (int64_t i = 0; i < s.branches; ++i) {
    in.branches.push_back(randn({s.n, s.width, s.h, s.w}, gen).set_requires_grad(true));
  }
  in.pooled = randn({s.n, s.pooled}, gen).set_requires_grad(true);
  Tensor weight = randn({s.k, s.channels()}, gen);
  weight.mul_(1.0 / std::sqrt(static_cast<double>(s.channels())));
  in.weight = weight.set_requires_grad(true);
  return in;
}

Tensor forward_fused(const AsppInputs& in) {
  return aspp_projection(in.branches, in.pooled, in.weight);
}

// The definition: the concatenation materialised, then one 1x1 convolution.
Tensor forward_cat(const AsppInputs& in) {
  const Tensor& b0 = in.branches[0];
  const int64_t n = b0.size(0), h = b0.size(2), w = b0.size(3), p = in.pooled.size(1);
  std::vector<Tensor> parts = in.branches;
  parts.push_back(in.pooled.view({n, p, 1, 1}).expand({n, p, h, w}));  // (n, p, h, w), stride 0
  const Tensor x = cat(parts, 1);                                      // (n, C, h, w)
  return conv2d(x, in.weight.view({in.weight.size(0), in.weight.size(1), 1, 1}));  // (n, k, h, w)
}

void zero_grads(AsppInputs& in) {
  for (Tensor& b : in.branches) b.zero_grad();
  in.pooled.zero_grad();
  in.weight.zero_grad();
}

// max |got - want| / max |want|; infinite on a NaN or a size mismatch.
double normalised_error(const Tensor& got, const Tensor& want) {
  const std::vector<float> a = to_vector<float>(got), b = to_vector<float>(want);
  if (a.size() != b.size()) return INFINITY;
  double worst = 0.0, scale = 1e-30;
  for (size_t i = 0; i < b.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]));
  }
  return worst / scale;
}

struct CheckResult {
  double out = 0.0, branches = 0.0, pooled = 0.0, weight = 0.0;  // worst normalised errors
  bool ok() const {
    return out <= kCheckTolerance && branches <= kCheckTolerance && pooled <= kCheckTolerance &&
           weight <= kCheckTolerance;
  }
};

// fused against cat on the same inputs and upstream gradient, at the full shape.
CheckResult check_fused_against_cat(const AsppShape& s) {
  AsppInputs in = make_inputs(s, 11);
  Generator gen(12);
  const Tensor gy = randn({s.n, s.k, s.h, s.w}, gen);  // (n, k, h, w)
  const Tensor y_cat = forward_cat(in);
  y_cat.backward(gy);
  std::vector<Tensor> g_cat;  // gradients of the branches, pooled, weight
  for (const Tensor& b : in.branches) g_cat.push_back(b.grad());
  g_cat.push_back(in.pooled.grad());
  g_cat.push_back(in.weight.grad());
  zero_grads(in);
  const Tensor y_fused = forward_fused(in);
  y_fused.backward(gy);
  CheckResult r;
  r.out = normalised_error(y_fused, y_cat);
  for (size_t i = 0; i < in.branches.size(); ++i)
    r.branches = std::max(r.branches, normalised_error(in.branches[i].grad(), g_cat[i]));
  r.pooled = normalised_error(in.pooled.grad(), g_cat[in.branches.size()]);
  r.weight = normalised_error(in.weight.grad(), g_cat[in.branches.size() + 1]);
  return r;
}

// Ours, fused (index 0) and cat (index 1), their iterations interleaved (fused, cat, fused,
// ...): on a shared machine, load that comes and goes then falls on both variants alike.
std::array<Timing, 2> time_ours(const AsppShape& s, int warmup, int iters, bool cpu_time) {
  auto tick = [cpu_time]() { return bench::clock_ms(cpu_time); };
  std::array<AsppInputs, 2> in = {make_inputs(s, 1), make_inputs(s, 1)};
  Generator gen(2);
  const Tensor gy = randn({s.n, s.k, s.h, s.w}, gen);  // (n, k, h, w)
  auto forward = [&](int v) { return v == 0 ? forward_fused(in[0]) : forward_cat(in[1]); };
  auto step = [&](int v) {
    zero_grads(in[v]);
    forward(v).backward(gy);
  };
  for (int i = 0; i < warmup; ++i) {
    for (int v = 0; v < 2; ++v) step(v);
  }
  std::array<std::vector<double>, 2> steps, fwd;
  for (int i = 0; i < iters; ++i) {
    for (int v = 0; v < 2; ++v) {
      const double t0 = tick();
      step(v);
      steps[v].push_back(tick() - t0);
    }
  }
  for (int v = 0; v < 2; ++v) zero_grads(in[v]);
  {
    NoGradGuard no_grad;
    for (int i = 0; i < iters; ++i) {
      for (int v = 0; v < 2; ++v) {
        const double t0 = tick();
        const Tensor y = forward(v);
        fwd[v].push_back(tick() - t0);
      }
    }
  }
  return {Timing{median(steps[0]), median(fwd[0])}, Timing{median(steps[1]), median(fwd[1])}};
}

}  // namespace

int main(int argc, char** argv) {
  const bench::CpuBenchArgs args = bench::parse_cpu_bench_args(
      argc, argv, "bench_aspp", std::string(SEG_SOURCE_DIR) + "/benchmarks/conv_peer.py");
  const int threads = args.threads, warmup = args.warmup, iters = args.iters;

  // DeepLabv3-ResNet101's ASPP projection: 4 x (n, 256, h, w) + pooled (n, 256) -> (n, 256, h, w).
  // name, n, h, w
  const std::vector<AsppShape> shapes = {
      {"OS8 512x1024 crops, n2 @64x128", 2, 64, 128},
      {"OS16 512x1024 crops, n2 @32x64", 2, 32, 64},
      {"OS16 513x1025, n1 @33x65", 1, 33, 65},
      {"OS8 1024x2048 frame, n1 @128x256", 1, 128, 256},
  };

  std::printf(
      "bench_aspp: ASPP projection 4x256 + pooled 256 -> 256 (weight (256, 1280)), f32, CPU, "
      "%d threads (%s), warmup %d, %d iterations, median times\n",
      threads, bench::cpu_threads_str().c_str(), warmup, iters);
  std::printf(
      "fused = aspp_projection; cat = cat(branches, pooled expanded) + conv2d 1x1 (ours); torch = "
      "the same cat + conv2d 1x1 in PyTorch\nms = forward + backward (every input and the weight) "
      "through autograd; fwd = forward without grad;\nGFLOP/s = 3 x the definition's forward FLOPs "
      "(1x1 conv over all 1280 channels) / step time\n");
  bench::print_openblas_coretype_note();
  if (args.cpu_time) std::printf("times: the process's CPU time (--cpu-time), both sides\n");
  std::printf("\n");
  std::fflush(stdout);

  bool peer_ok = args.use_peer, all_ok = true;
  std::string info = "disabled by --no-peer";
  double total_fused = 0.0, total_cat = 0.0, total_torch = 0.0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const AsppShape& s = shapes[i];
    const CheckResult check = check_fused_against_cat(s);
    all_ok = all_ok && check.ok();
    const std::array<Timing, 2> ours = time_ours(s, warmup, iters, args.cpu_time);
    const Timing& fused = ours[0];
    const Timing& mat = ours[1];
    bench::PeerTiming torch;
    if (peer_ok && !bench::run_layer_peer(args, "aspp:" + s.spec(), torch, info)) {
      peer_ok = false;
      if (i > 0)
        std::printf("(PyTorch peer failed: %s; our figures only from here)\n", info.c_str());
    }
    if (i == 0) {
      if (peer_ok) {
        std::printf("peer: %s\n\n", info.c_str());
      } else {
        std::printf("PyTorch peer unavailable (%s): our figures only\n\n", info.c_str());
      }
      std::printf("%-34s %9s %7s %7s | %9s %7s %7s |", "shape", "fused ms", "GFLOP/s", "fwd ms",
                  "cat ms", "GFLOP/s", "fwd ms");
      if (peer_ok) std::printf(" %9s %7s %7s |", "torch ms", "GFLOP/s", "fwd ms");
      std::printf(" %8s", "cat/fus");
      if (peer_ok) std::printf(" %9s %9s", "torch/fus", "torch/cat");
      std::printf("  check (fused vs cat)\n");
    }
    const double flops = 3.0 * s.forward_flops();
    std::printf("%-34s %9.1f %7.1f %7.1f | %9.1f %7.1f %7.1f |", s.name.c_str(), fused.step_ms,
                flops / fused.step_ms * 1e-6, fused.fwd_ms, mat.step_ms, flops / mat.step_ms * 1e-6,
                mat.fwd_ms);
    if (peer_ok) {
      std::printf(" %9.1f %7.1f %7.1f |", torch.step_ms, flops / torch.step_ms * 1e-6,
                  torch.fwd_ms);
    }
    std::printf(" %8.2f", mat.step_ms / fused.step_ms);
    if (peer_ok) {
      std::printf(" %9.2f %9.2f", torch.step_ms / fused.step_ms, torch.step_ms / mat.step_ms);
    }
    std::printf("  %s (out %.1e, gx %.1e, gpool %.1e, gw %.1e)\n", check.ok() ? "ok" : "FAILED",
                check.out, check.branches, check.pooled, check.weight);
    std::printf("%-34s fwd cat/fus %.2f; the fused op never holds the %.0f MB concatenation\n", "",
                mat.fwd_ms / fused.fwd_ms, s.concat_bytes() / 1e6);
    std::fflush(stdout);
    total_fused += fused.step_ms;
    total_cat += mat.step_ms;
    total_torch += torch.step_ms;
  }
  std::printf("%-34s %9.1f %7s %7s | %9.1f %7s %7s |", "total", total_fused, "", "", total_cat, "",
              "");
  if (peer_ok) std::printf(" %9.1f %7s %7s |", total_torch, "", "");
  std::printf(" %8.2f", total_cat / total_fused);
  if (peer_ok) std::printf(" %9.2f %9.2f", total_torch / total_fused, total_torch / total_cat);
  std::printf(
      "\n\nratio A/B = A's step time / B's (> 1: B is faster); check = max |fused - cat| / "
      "max |cat| per tensor, tolerance %.0e\n",
      kCheckTolerance);
  if (!all_ok) {
    std::printf("bench_aspp: fused and cat disagree (see the check column)\n");
    return 1;
  }
  return 0;
}
