// Convolution benchmark: conv2d / conv_transpose2d forward + backward (input, weight and bias
// gradients, through autograd) at ResNet- and UNet-like shapes, f32 on the CPU, next to PyTorch
// (benchmarks/conv_peer.py, run through /usr/bin/python3 with the same shapes, thread count, warmup
// and iterations).
//
// Usage: bench_conv [--threads N] [--warmup W] [--iters I] [--peer PATH] [--no-peer] [--cpu-time]
//
// Design notes
// - Times are medians over the iterations. One step is: forward, backward with a fixed upstream
//   gradient, gradients dropped before the next step (PyTorch's peer sets .grad = None likewise),
//   so neither side pays for accumulating into an old gradient.
// - GFLOP/s counts 2 * MACs of the forward, times 3 for forward + input gradient + weight gradient
//   (the bias gradient is a reduction, not counted).
// - Batch 1 and sizes picked so that the whole run (ours and PyTorch's) takes under a minute on a
//   2-core machine; the shapes are the hot layers of the models at reduced resolution.
// - --threads sets OpenMP's and OpenBLAS's thread counts (default: OpenMP's current maximum), and
//   the peer gets the same number through torch.set_num_threads.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "benchmarks/bench_util.h"
#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops.h"

using namespace seg;

namespace {

using bench::median;

struct Shape2d {
  std::string name;
  bool transposed;
  int64_t n, c, h, w, k, r, s, stride, pad, dil, output_pad;

  // Output spatial size.
  int64_t out_h() const {
    return transposed ? (h - 1) * stride - 2 * pad + dil * (r - 1) + output_pad + 1
                      : (h + 2 * pad - dil * (r - 1) - 1) / stride + 1;
  }
  int64_t out_w() const {
    return transposed ? (w - 1) * stride - 2 * pad + dil * (s - 1) + output_pad + 1
                      : (w + 2 * pad - dil * (s - 1) - 1) / stride + 1;
  }
  // Multiply-adds of the forward: every (input pixel or output pixel of the conv) x c x k x r x s.
  double forward_flops() const {
    const double pixels =
        transposed ? static_cast<double>(n * h * w) : static_cast<double>(n * out_h() * out_w());
    return 2.0 * pixels * static_cast<double>(c * k * r * s);
  }
  std::string spec() const {
    char buf[256];
    std::snprintf(buf, sizeof(buf), "%s:%ld,%ld,%ld,%ld,%ld,%ld,%ld,%ld,%ld,%ld,%ld",
                  transposed ? "conv_transpose2d" : "conv2d", long(n), long(c), long(h), long(w),
                  long(k), long(r), long(s), long(stride), long(pad), long(dil), long(output_pad));
    return buf;
  }
};

struct Timing {
  double median_ms = 0.0;  // forward + backward through autograd
  double fwd_ms = 0.0;     // forward only, no grad
  double kernel_ms = 0.0;  // the four kernel calls of a step on preallocated buffers (ours only)
};

Timing time_ours(const Shape2d& sh, int warmup, int iters, bool cpu_time) {
  auto tick = [cpu_time]() { return bench::clock_ms(cpu_time); };
  Generator gen(1);
  Tensor x = randn({sh.n, sh.c, sh.h, sh.w}, gen).set_requires_grad(true);
  Tensor weight =
      sh.transposed ? randn({sh.c, sh.k, sh.r, sh.s}, gen) : randn({sh.k, sh.c, sh.r, sh.s}, gen);
  weight.set_requires_grad(true);
  Tensor bias = randn({sh.k}, gen).set_requires_grad(true);
  auto forward = [&]() {
    if (sh.transposed) {
      return conv_transpose2d(
          x, weight, bias, ConvTranspose2dOptions::make(sh.stride, sh.pad, sh.output_pad, sh.dil));
    }
    return conv2d(x, weight, bias, Conv2dOptions::make(sh.stride, sh.pad, sh.dil));
  };
  Tensor gy = randn({sh.n, sh.k, sh.out_h(), sh.out_w()}, gen);
  auto step = [&]() {
    x.zero_grad();
    weight.zero_grad();
    bias.zero_grad();
    forward().backward(gy);
  };
  for (int i = 0; i < warmup; ++i) step();
  std::vector<double> times, fwd;
  for (int i = 0; i < iters; ++i) {
    const double t0 = tick();
    step();
    times.push_back(tick() - t0);
  }
  {
    NoGradGuard no_grad;
    for (int i = 0; i < iters; ++i) {
      const double t0 = tick();
      Tensor y = forward();
      fwd.push_back(tick() - t0);
    }
  }
  // The kernels alone: what a step costs without the engine's allocations and autograd.
  const auto& kern = kernels_for<OpId::conv2d>(x.device());
  Conv2dShape cs;  // the conv (for a transposed conv: the conv whose backward_input it is)
  cs.n = sh.n;
  cs.c = sh.transposed ? sh.k : sh.c;
  cs.h = sh.transposed ? sh.out_h() : sh.h;
  cs.w = sh.transposed ? sh.out_w() : sh.w;
  cs.k = sh.transposed ? sh.c : sh.k;
  cs.r = sh.r;
  cs.s = sh.s;
  cs.p = sh.transposed ? sh.h : sh.out_h();
  cs.q = sh.transposed ? sh.w : sh.out_w();
  cs.stride_h = cs.stride_w = sh.stride;
  cs.pad_h = cs.pad_w = sh.pad;
  cs.dil_h = cs.dil_w = sh.dil;
  Tensor conv_in = empty({cs.n, cs.c, cs.h, cs.w}), conv_out = empty({cs.n, cs.k, cs.p, cs.q});
  Tensor g_in = empty_like(conv_in), g_out = empty_like(conv_out), gw = empty_like(weight);
  Tensor gb = empty_like(bias);
  conv_in.fill_(0.5);
  conv_out.fill_(0.25);
  Conv2dShape bias_shape = cs;  // bias of the op's output: conv's k, or a transposed conv's c
  if (sh.transposed) {
    bias_shape.k = cs.c;
    bias_shape.p = cs.h;
    bias_shape.q = cs.w;
  }
  const ExecContext ctx = exec_context(x);
  auto kernels = [&]() {
    if (sh.transposed) {
      kern.backward_input(ctx, cs, view_of(conv_out), view_of(weight), view_of(bias),
                          view_of(g_in));
      kern.forward(ctx, cs, view_of(g_in), view_of(weight), View{}, view_of(g_out));
      kern.backward_weight(ctx, cs, view_of(g_in), view_of(conv_out), view_of(gw));
      kern.backward_bias(ctx, bias_shape, view_of(g_in), view_of(gb));
    } else {
      kern.forward(ctx, cs, view_of(conv_in), view_of(weight), view_of(bias), view_of(conv_out));
      kern.backward_input(ctx, cs, view_of(conv_out), view_of(weight), View{}, view_of(g_in));
      kern.backward_weight(ctx, cs, view_of(conv_in), view_of(conv_out), view_of(gw));
      kern.backward_bias(ctx, bias_shape, view_of(conv_out), view_of(gb));
    }
  };
  for (int i = 0; i < warmup; ++i) kernels();
  std::vector<double> kt;
  for (int i = 0; i < iters; ++i) {
    const double t0 = tick();
    kernels();
    kt.push_back(tick() - t0);
  }
  return Timing{median(times), median(fwd), median(kt)};
}

}  // namespace

int main(int argc, char** argv) {
  const bench::CpuBenchArgs args = bench::parse_cpu_bench_args(
      argc, argv, "bench_conv", std::string(SEG_SOURCE_DIR) + "/benchmarks/conv_peer.py");
  const int threads = args.threads, warmup = args.warmup, iters = args.iters;

  // name, transposed, n, c, h, w, k, r, s, stride, pad, dil, output_pad
  const std::vector<Shape2d> shapes = {
      {"resnet 3x3 64->64 @128x256", false, 1, 64, 128, 256, 64, 3, 3, 1, 1, 1, 0},
      {"resnet 1x1 256->64 @128x256", false, 1, 256, 128, 256, 64, 1, 1, 1, 0, 1, 0},
      {"resnet 3x3 s2 128->128 @128x256", false, 1, 128, 128, 256, 128, 3, 3, 2, 1, 1, 0},
      {"resnet 7x7 s2 stem 3->64 @512x1024", false, 1, 3, 512, 1024, 64, 7, 7, 2, 3, 1, 0},
      {"aspp 3x3 d12 256->256 @64x128", false, 1, 256, 64, 128, 256, 3, 3, 1, 12, 12, 0},
      {"unet 3x3 64->64 @256x512", false, 1, 64, 256, 512, 64, 3, 3, 1, 1, 1, 0},
      {"unet 3x3 128->128 @128x256", false, 1, 128, 128, 256, 128, 3, 3, 1, 1, 1, 0},
      {"unet up 2x2 s2 128->64 @128x256", true, 1, 128, 128, 256, 64, 2, 2, 2, 0, 1, 0},
  };

  std::printf("bench_conv: f32, CPU, %d threads (%s), warmup %d, %d iterations, median times\n",
              threads, bench::cpu_threads_str().c_str(), warmup, iters);
  std::printf(
      "step = forward + backward (input, weight, bias gradients) through autograd; GFLOP/s = "
      "3 x forward FLOPs / step time;\nfwd = forward without grad; kern = the step's four "
      "kernel calls alone, on preallocated buffers (ours only)\n\n");
  bench::print_openblas_coretype_note();
  if (args.cpu_time) std::printf("times: the process's CPU time (--cpu-time), both sides\n");
  std::fflush(stdout);

  // Shape by shape, ours then the peer's, so that a change in the machine's speed during the run
  // (it is shared) affects both sides of a row alike.
  bool peer_ok = args.use_peer;
  std::string info = "disabled by --no-peer";
  double total_ours = 0.0, total_theirs = 0.0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const Shape2d& s = shapes[i];
    const Timing ours = time_ours(s, warmup, iters, args.cpu_time);
    bench::PeerTiming theirs;
    if (peer_ok && !bench::run_layer_peer(args, s.spec(), theirs, info)) {
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
      std::printf("%-36s %9s %8s %9s %9s", "shape (batch 1)", "ours ms", "GFLOP/s", "fwd ms",
                  "kern ms");
      if (peer_ok) std::printf(" %9s %8s %9s %7s", "torch ms", "GFLOP/s", "fwd ms", "ratio");
      std::printf("\n");
    }
    const double flops = 3.0 * s.forward_flops();
    std::printf("%-36s %9.1f %8.1f %9.1f %9.1f", s.name.c_str(), ours.median_ms,
                flops / ours.median_ms * 1e-6, ours.fwd_ms, ours.kernel_ms);
    total_ours += ours.median_ms;
    if (peer_ok) {
      std::printf(" %9.1f %8.1f %9.1f %7.2f", theirs.step_ms, flops / theirs.step_ms * 1e-6,
                  theirs.fwd_ms, theirs.step_ms / ours.median_ms);
      total_theirs += theirs.step_ms;
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  std::printf("%-36s %9.1f", "total", total_ours);
  if (peer_ok) {
    std::printf(" %8s %9s %9s %9.1f %8s %9s %7.2f", "", "", "", total_theirs, "", "",
                total_theirs / total_ours);
  }
  std::printf("\n");
  if (peer_ok) std::printf("\nratio = torch time / our time (> 1: we are faster)\n");
  return 0;
}
