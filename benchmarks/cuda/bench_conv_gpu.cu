// Kernel lab: conv2d / conv_transpose2d through cuDNN (forward, and forward + backward) at
// ResNet-101 / DeepLabv3 and UNet shapes at Cityscapes scale, and the fused ASPP projection against
// a materialised concatenation + 1x1 conv, each beside PyTorch on the same GPU
// (benchmarks/cuda/conv_gpu_peer.py, same shapes, same TF32 setting, same timing method).
//
// Usage: bench_conv_gpu [--warmup W] [--iters I] [--no-peer] [--quick] [--no-validate]
//
// Design notes
// - f32 with TF32 tensor cores on: the CudaContext's default, and PyTorch's default for cuDNN
//   convolutions (torch.backends.cudnn.allow_tf32 is True); the peer also allows TF32 in its GEMMs
//   (torch.backends.cuda.matmul.allow_tf32) so that the ASPP rows compare like with like.
// - Ops are timed through the engine's front-ends, as training runs them: "fwd" is the op under
//   no_grad, "step" is forward + backward (input, weight and bias gradients) through autograd with
//   a fixed upstream gradient, leaf gradients dropped before each step (the peer sets .grad = None).
//   CUDA events after an L2 flush, median over the iterations (benchmarks/cuda/lab.h); the warmup
//   includes each shape's first call, where cuDNN's algorithm search runs (the peer sets
//   torch.backends.cudnn.benchmark = True for the same reason).
// - FLOPs: 2 * multiply-adds of the forward; a step counts 3x (forward, input gradient, weight
//   gradient; the bias gradient is a reduction). % of peak is against lab.h's estimate of the
//   device's dense TF32 tensor-core rate.
// - Validation (kernel-lab rule: every version checked against the CPU): each geometry at batch 1
//   and at most 64 x 128 output positions (full channel counts), output and all gradients, GPU
//   against the CPU in f32: TF32 off within 1e-4 of the largest value (the parity tolerance), TF32
//   on within 1e-2 (10-bit mantissa products). The full-size fused and materialised ASPP results
//   are also compared with each other on the GPU.
// - ASPP: DeepLabv3's projection (4 spatial branches of 256 channels + image pooling 256 -> 256) at
//   output stride 8 and 16 of a 1024 x 2048 frame, batch 8: ours fused (aspp_projection: GEMMs
//   accumulating into one output, the pooled branch as a per-image bias), ours materialised
//   (cat + expand + conv2d 1x1 through cuDNN), and PyTorch's cat + conv2d. FLOPs are those of the
//   1x1 conv over all C input channels, so the rates compare directly.
// - The PyTorch peer runs first, once for every case, before this process holds device memory.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "benchmarks/cuda/lab.h"
#include "engine/autograd.h"
#include "engine/cuda/cuda_context.h"
#include "engine/ops.h"

using namespace seg;

namespace {

struct ConvCase {
  std::string name;
  bool transposed;
  int64_t n, c, h, w, k, r, s, stride, pad, dil, output_pad;

  int64_t out_h() const {
    return transposed ? (h - 1) * stride - 2 * pad + dil * (r - 1) + output_pad + 1
                      : (h + 2 * pad - dil * (r - 1) - 1) / stride + 1;
  }
  int64_t out_w() const {
    return transposed ? (w - 1) * stride - 2 * pad + dil * (s - 1) + output_pad + 1
                      : (w + 2 * pad - dil * (s - 1) - 1) / stride + 1;
  }
  // Multiply-adds x 2 of the forward: every conv output position (for a transposed conv, every
  // input position) times c * k * r * s.
  double forward_flops() const {
    const double pixels = transposed ? static_cast<double>(n * h * w)
                                     : static_cast<double>(n * out_h() * out_w());
    return 2.0 * pixels * static_cast<double>(c * k * r * s);
  }
  Shape weight_shape() const { return transposed ? Shape{c, k, r, s} : Shape{k, c, r, s}; }
  nlohmann::json json() const {
    return {{"kind", "conv"}, {"transposed", transposed}, {"n", n}, {"c", c}, {"h", h},
            {"w", w}, {"k", k}, {"r", r}, {"s", s}, {"stride", stride}, {"pad", pad},
            {"dil", dil}, {"output_pad", output_pad}};
  }
};

struct AsppCase {
  std::string name;
  int64_t n, h, w;
  int64_t branches = 4, width = 256, pooled = 256, k = 256;
  int64_t channels() const { return branches * width + pooled; }
  double forward_flops() const {
    return 2.0 * static_cast<double>(n * h * w) * static_cast<double>(k * channels());
  }
  nlohmann::json json() const {
    return {{"kind", "aspp"}, {"n", n}, {"h", h}, {"w", w}, {"branches", branches},
            {"width", width}, {"pooled", pooled}, {"k", k}};
  }
};

struct Timing {
  double fwd_ms = 0.0, step_ms = 0.0;
};

// Normal values drawn on the host and copied to `device`: the same values on every device (for the
// validation runs).
Tensor random_on(const Shape& shape, Generator& gen, Device device, double scale = 1.0) {
  Tensor t = randn(shape, gen);
  if (scale != 1.0) t.mul_(scale);
  return t.to(device);
}

// Normal values drawn on the device itself (the timed runs' large inputs; values do not matter).
Tensor random_device(const Shape& shape, Generator& gen, Device device, double scale = 1.0) {
  Tensor t = randn(shape, gen, DType::f32, device);
  if (scale != 1.0) t.mul_(scale);
  return t;
}

Tensor leaf(Tensor t) {
  t.set_requires_grad(true);
  return t;
}

Tensor run_conv(const ConvCase& cs, const Tensor& x, const Tensor& w, const Tensor& b) {
  if (cs.transposed) {
    return conv_transpose2d(x, w, b,
                            ConvTranspose2dOptions::make(cs.stride, cs.pad, cs.output_pad, cs.dil));
  }
  return conv2d(x, w, b, Conv2dOptions::make(cs.stride, cs.pad, cs.dil));
}

// max |a - b| / max |a| (a the reference), on the host.
double normalised_error(const Tensor& ref, const Tensor& other) {
  std::vector<double> a = to_vector<double>(ref), b = to_vector<double>(other);
  if (a.size() != b.size()) return INFINITY;
  double worst = 0.0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(b[i])) return INFINITY;
    scale = std::max(scale, std::abs(a[i]));
    worst = std::max(worst, std::abs(a[i] - b[i]));
  }
  return worst / scale;
}

// The case at batch 1 and at most 64 x 128 output positions.
ConvCase validation_case(const ConvCase& cs) {
  ConvCase v = cs;
  v.n = 1;
  if (cs.transposed) {
    v.h = std::min<int64_t>(cs.h, 64);
    v.w = std::min<int64_t>(cs.w, 128);
  } else {
    const int64_t extent_h = cs.dil * (cs.r - 1) + 1, extent_w = cs.dil * (cs.s - 1) + 1;
    v.h = std::min(cs.h, std::max<int64_t>(63 * cs.stride + extent_h - 2 * cs.pad, 1));
    v.w = std::min(cs.w, std::max<int64_t>(127 * cs.stride + extent_w - 2 * cs.pad, 1));
    v.h = std::max(v.h, extent_h - 2 * cs.pad);
    v.w = std::max(v.w, extent_w - 2 * cs.pad);
  }
  return v;
}

// Output and gradients of x, weight, bias for one conv on `device`, from the same host values.
std::vector<Tensor> conv_results(const ConvCase& cs, Device device, uint64_t seed) {
  Generator gen(seed);
  const double wscale = 1.0 / std::sqrt(static_cast<double>(cs.c * cs.r * cs.s));
  Tensor x = leaf(random_on({cs.n, cs.c, cs.h, cs.w}, gen, device));
  Tensor w = leaf(random_on(cs.weight_shape(), gen, device, wscale));
  Tensor b = leaf(random_on({cs.k}, gen, device));
  Tensor gy = random_on({cs.n, cs.k, cs.out_h(), cs.out_w()}, gen, device);
  Tensor y = run_conv(cs, x, w, b);
  y.backward(gy);
  return {y.to(Device::cpu()), x.grad().to(Device::cpu()), w.grad().to(Device::cpu()),
          b.grad().to(Device::cpu())};
}

// Worst normalised error over the output and the three gradients.
double validate_conv(const ConvCase& cs, cuda::CudaContext& gpu, bool tf32) {
  const ConvCase v = validation_case(cs);
  gpu.set_allow_tf32(tf32);
  const std::vector<Tensor> ref = conv_results(v, Device::cpu(), 11);
  const std::vector<Tensor> got = conv_results(v, gpu.device(), 11);
  gpu.set_allow_tf32(true);
  double worst = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, normalised_error(ref[i], got[i]));
  return worst;
}

Timing time_conv(const ConvCase& cs, cuda::CudaContext& gpu, bench::L2Flusher& flusher, int warmup,
                 int iters) {
  Generator gen(1);
  const Device dev = gpu.device();
  const double wscale = 1.0 / std::sqrt(static_cast<double>(cs.c * cs.r * cs.s));
  Tensor x = leaf(random_device({cs.n, cs.c, cs.h, cs.w}, gen, dev));
  Tensor w = leaf(random_device(cs.weight_shape(), gen, dev, wscale));
  Tensor b = leaf(random_device({cs.k}, gen, dev));
  Tensor gy = random_device({cs.n, cs.k, cs.out_h(), cs.out_w()}, gen, dev);
  const cudaStream_t stream = gpu.compute_stream();
  Timing t;
  t.fwd_ms = bench::time_ms(
      [&]() {
        NoGradGuard no_grad;
        Tensor y = run_conv(cs, x, w, b);
      },
      stream, flusher, warmup, iters);
  t.step_ms = bench::time_ms(
      [&]() {
        x.zero_grad();
        w.zero_grad();
        b.zero_grad();
        run_conv(cs, x, w, b).backward(gy);
      },
      stream, flusher, warmup, iters);
  return t;
}

// ---- ASPP ----

struct AsppInputs {
  std::vector<Tensor> branches;
  Tensor pooled, weight;
};

// Host-drawn values (the same on every device) unless `on_device`.
AsppInputs aspp_inputs(const AsppCase& a, Device dev, uint64_t seed, bool on_device) {
  Generator gen(seed);
  auto draw = [&](const Shape& shape, double scale) {
    return on_device ? random_device(shape, gen, dev, scale) : random_on(shape, gen, dev, scale);
  };
  AsppInputs in;
  for (int64_t i = 0; i < a.branches; ++i) {
    in.branches.push_back(leaf(draw({a.n, a.width, a.h, a.w}, 1.0)));
  }
  in.pooled = leaf(draw({a.n, a.pooled}, 1.0));
  in.weight = leaf(draw({a.k, a.channels()}, 1.0 / std::sqrt(static_cast<double>(a.channels()))));
  return in;
}

Tensor aspp_fused(const AsppInputs& in) { return aspp_projection(in.branches, in.pooled, in.weight); }

Tensor aspp_materialised(const AsppInputs& in) {
  const Tensor& b0 = in.branches[0];
  const int64_t n = b0.size(0), h = b0.size(2), w = b0.size(3), p = in.pooled.size(1);
  std::vector<Tensor> parts = in.branches;
  parts.push_back(in.pooled.view({n, p, 1, 1}).expand({n, p, h, w}));
  return conv2d(cat(parts, 1), in.weight.view({in.weight.size(0), in.weight.size(1), 1, 1}));
}

void zero_grads(const AsppInputs& in) {
  for (const Tensor& b : in.branches) Tensor(b).zero_grad();
  Tensor(in.pooled).zero_grad();
  Tensor(in.weight).zero_grad();
}

// Output and every gradient of one variant, copied to the host.
std::vector<Tensor> aspp_results(const AsppCase& a, Device dev, bool fused, uint64_t seed) {
  AsppInputs in = aspp_inputs(a, dev, seed, /*on_device=*/false);
  Generator gen(seed + 1);
  Tensor gy = random_on({a.n, a.k, a.h, a.w}, gen, dev);
  Tensor y = fused ? aspp_fused(in) : aspp_materialised(in);
  y.backward(gy);
  std::vector<Tensor> out{y.to(Device::cpu())};
  for (const Tensor& b : in.branches) out.push_back(b.grad().to(Device::cpu()));
  out.push_back(in.pooled.grad().to(Device::cpu()));
  out.push_back(in.weight.grad().to(Device::cpu()));
  return out;
}

double worst_error(const std::vector<Tensor>& ref, const std::vector<Tensor>& got) {
  double worst = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, normalised_error(ref[i], got[i]));
  return worst;
}

Timing time_aspp(const AsppCase& a, bool fused, cuda::CudaContext& gpu, bench::L2Flusher& flusher,
                 int warmup, int iters) {
  const Device dev = gpu.device();
  AsppInputs in = aspp_inputs(a, dev, 3, /*on_device=*/true);
  Generator gen(4);
  Tensor gy = random_device({a.n, a.k, a.h, a.w}, gen, dev);
  auto forward = [&]() { return fused ? aspp_fused(in) : aspp_materialised(in); };
  const cudaStream_t stream = gpu.compute_stream();
  Timing t;
  t.fwd_ms = bench::time_ms(
      [&]() {
        NoGradGuard no_grad;
        Tensor y = forward();
      },
      stream, flusher, warmup, iters);
  t.step_ms = bench::time_ms(
      [&]() {
        zero_grads(in);
        forward().backward(gy);
      },
      stream, flusher, warmup, iters);
  return t;
}

std::string tflops_str(double flops, double ms) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f TFLOP/s", flops / (ms * 1e-3) / 1e12);
  return buf;
}

double percent(double flops, double ms, double peak_tflops) {
  return peak_tflops > 0 ? 100.0 * flops / (ms * 1e-3) / 1e12 / peak_tflops : 0.0;
}

}  // namespace

int main(int argc, char** argv) {
  int warmup = 3, iters = 20;
  bool use_peer = true, quick = false, validate = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--warmup" && i + 1 < argc) {
      warmup = std::atoi(argv[++i]);
    } else if (a == "--iters" && i + 1 < argc) {
      iters = std::atoi(argv[++i]);
    } else if (a == "--no-peer") {
      use_peer = false;
    } else if (a == "--quick") {
      quick = true;
    } else if (a == "--no-validate") {
      validate = false;
    } else {
      std::fprintf(stderr,
                   "usage: bench_conv_gpu [--warmup W] [--iters I] [--no-peer] [--quick] "
                   "[--no-validate]\n");
      return 2;
    }
  }
  if (!bench::lab_has_gpu("bench_conv_gpu")) return 0;

  // name, transposed, n, c, h, w, k, r, s, stride, pad, dil, output_pad
  std::vector<ConvCase> convs = {
      // ResNet-101 / DeepLabv3 (output stride 8) on 1024 x 2048 frames, batch 8.
      {"resnet stem 7x7 s2 3->64 @1024x2048", false, 8, 3, 1024, 2048, 64, 7, 7, 2, 3, 1, 0},
      {"resnet 1x1 256->64 @256x512", false, 8, 256, 256, 512, 64, 1, 1, 1, 0, 1, 0},
      {"resnet 3x3 64->64 @256x512", false, 8, 64, 256, 512, 64, 3, 3, 1, 1, 1, 0},
      {"resnet 3x3 s2 128->128 @256x512", false, 8, 128, 256, 512, 128, 3, 3, 2, 1, 1, 0},
      {"resnet 3x3 d2 256->256 @128x256", false, 8, 256, 128, 256, 256, 3, 3, 1, 2, 2, 0},
      {"resnet 3x3 d4 512->512 @128x256", false, 8, 512, 128, 256, 512, 3, 3, 1, 4, 4, 0},
      {"aspp 3x3 d12 256->256 @128x256", false, 8, 256, 128, 256, 256, 3, 3, 1, 12, 12, 0},
      {"aspp 3x3 d12 2048->256 @128x256", false, 8, 2048, 128, 256, 256, 3, 3, 1, 12, 12, 0},
      {"aspp 1x1 2048->256 @128x256", false, 8, 2048, 128, 256, 256, 1, 1, 1, 0, 1, 0},
      // UNet on 512 x 1024 crops, batch 8.
      {"unet 3x3 3->64 @512x1024", false, 8, 3, 512, 1024, 64, 3, 3, 1, 1, 1, 0},
      {"unet 3x3 64->64 @512x1024", false, 8, 64, 512, 1024, 64, 3, 3, 1, 1, 1, 0},
      {"unet 3x3 128->128 @256x512", false, 8, 128, 256, 512, 128, 3, 3, 1, 1, 1, 0},
      {"unet 3x3 512->512 @64x128", false, 8, 512, 64, 128, 512, 3, 3, 1, 1, 1, 0},
      {"unet up 2x2 s2 1024->512 @32x64", true, 8, 1024, 32, 64, 512, 2, 2, 2, 0, 1, 0},
      {"unet up 2x2 s2 128->64 @256x512", true, 8, 128, 256, 512, 64, 2, 2, 2, 0, 1, 0},
      {"unet out 1x1 64->19 @512x1024", false, 8, 64, 512, 1024, 19, 1, 1, 1, 0, 1, 0},
  };
  std::vector<AsppCase> aspps = {
      {"aspp projection OS8 5x256 @128x256", 8, 128, 256},
      {"aspp projection OS16 5x256 @64x128", 8, 64, 128},
  };
  if (quick) {
    convs = {convs[2], convs[6], convs[10], convs[14]};
    aspps = {aspps[1]};
  }

  // ---- PyTorch first, before this process holds device memory ----
  nlohmann::json peer_result;
  std::string peer_info = "disabled by --no-peer";
  bool peer_ok = false;
  if (use_peer) {
    nlohmann::json args;
    args["warmup"] = warmup;
    args["iters"] = iters;
    args["tf32"] = true;
    args["cases"] = nlohmann::json::array();
    for (const ConvCase& c : convs) args["cases"].push_back(c.json());
    for (const AsppCase& a : aspps) args["cases"].push_back(a.json());
    const std::string script =
        (std::filesystem::path(SEG_SOURCE_DIR) / "benchmarks/cuda/conv_gpu_peer.py").string();
    peer_ok = bench::run_peer(script, args, peer_result, peer_info);
    if (peer_ok && (!peer_result.contains("results") ||
                    peer_result["results"].size() != convs.size() + aspps.size())) {
      peer_ok = false;
      peer_info = "peer returned the wrong number of results";
    }
    if (peer_ok) {
      const auto& cudnn = peer_result["cudnn"];
      peer_info = "PyTorch " + peer_result.value("torch", std::string("?")) + ", cuDNN " +
                  (cudnn.is_number_integer() ? std::to_string(cudnn.get<int64_t>()) : "?");
    }
  }
  auto torch_timing = [&](size_t i) {
    Timing t{-1.0, -1.0};
    if (peer_ok) {
      const auto& r = peer_result["results"][i];
      t.fwd_ms = r.value("fwd_ms", -1.0);
      t.step_ms = r.value("step_ms", -1.0);
    }
    return t;
  };

  auto gpu = cuda::CudaContext::create(0);  // TF32 on: PyTorch's cuDNN default
  const bench::DevicePeak peak = bench::device_peak(0);
  bench::L2Flusher flusher(peak.l2_bytes);
  std::printf("bench_conv_gpu: %s, %d SMs, peak TF32 %.0f TFLOP/s (estimate), FP32 %.1f TFLOP/s\n",
              peak.name.c_str(), peak.sm_count, peak.tf32_tflops, peak.fp32_tflops);
  std::printf("f32 with TF32 tensor cores, warmup %d, %d iterations (median, L2 flushed)\n", warmup,
              iters);
  std::printf("peer: %s\n", peer_ok ? peer_info.c_str() : ("unavailable (" + peer_info + ")").c_str());
  std::printf(
      "fwd = forward under no_grad; step = forward + backward (input, weight, bias gradients);\n"
      "TFLOP/s: 2 x MACs (x3 for a step); ratio = PyTorch time / ours (> 1: we are faster)\n\n");

  bool all_valid = true;
  std::printf("%-38s %9s %11s %5s %9s %11s %5s %9s %9s %6s %6s %s\n", "conv (batch 8, f32+TF32)",
              "fwd ms", "fwd rate", "%pk", "step ms", "step rate", "%pk", "torch fwd", "torch stp",
              "r.fwd", "r.stp", "check");
  for (size_t i = 0; i < convs.size(); ++i) {
    const ConvCase& cs = convs[i];
    std::string check = "-";
    if (validate) {
      const double strict = validate_conv(cs, *gpu, false), loose = validate_conv(cs, *gpu, true);
      const bool ok = strict <= 1e-4 && loose <= 1e-2;
      all_valid = all_valid && ok;
      char buf[96];
      std::snprintf(buf, sizeof buf, "%s (%.1e, tf32 %.1e)", ok ? "ok" : "FAILED", strict, loose);
      check = buf;
    }
    const Timing ours = time_conv(cs, *gpu, flusher, warmup, iters);
    const Timing torch = torch_timing(i);
    const double f = cs.forward_flops(), fs = 3.0 * f;
    std::printf("%-38s %9.3f %11s %5.0f %9.3f %11s %5.0f %9.3f %9.3f %6.2f %6.2f %s\n",
                cs.name.c_str(), ours.fwd_ms, tflops_str(f, ours.fwd_ms).c_str(),
                percent(f, ours.fwd_ms, peak.tf32_tflops), ours.step_ms,
                tflops_str(fs, ours.step_ms).c_str(), percent(fs, ours.step_ms, peak.tf32_tflops),
                torch.fwd_ms, torch.step_ms, torch.fwd_ms > 0 ? torch.fwd_ms / ours.fwd_ms : 0.0,
                torch.step_ms > 0 ? torch.step_ms / ours.step_ms : 0.0, check.c_str());
    std::fflush(stdout);
    bench::table_row("conv_gpu", cs.name + " fwd", ours.fwd_ms, tflops_str(f, ours.fwd_ms),
                     percent(f, ours.fwd_ms, peak.tf32_tflops), torch.fwd_ms);
    bench::table_row("conv_gpu", cs.name + " step", ours.step_ms, tflops_str(fs, ours.step_ms),
                     percent(fs, ours.step_ms, peak.tf32_tflops), torch.step_ms);
  }

  std::printf("\n%-38s %-13s %9s %11s %5s %9s %11s %5s %9s %9s %6s %6s\n",
              "aspp projection (batch 8)", "variant", "fwd ms", "fwd rate", "%pk", "step ms",
              "step rate", "%pk", "torch fwd", "torch stp", "r.fwd", "r.stp");
  for (size_t i = 0; i < aspps.size(); ++i) {
    const AsppCase& a = aspps[i];
    if (validate) {
      // Fused against materialised at full size on the GPU, both TF32 off; and the fused op
      // against the CPU on a small map with the same channel counts.
      gpu->set_allow_tf32(false);
      const double gpu_vs_gpu = worst_error(aspp_results(a, gpu->device(), false, 21),
                                            aspp_results(a, gpu->device(), true, 21));
      AsppCase small = a;
      small.n = 2;
      small.h = 9;
      small.w = 13;
      const double gpu_vs_cpu = worst_error(aspp_results(small, Device::cpu(), true, 22),
                                            aspp_results(small, gpu->device(), true, 22));
      gpu->set_allow_tf32(true);
      const bool ok = gpu_vs_gpu <= 1e-4 && gpu_vs_cpu <= 1e-4;
      all_valid = all_valid && ok;
      std::printf("%-38s check %s: fused vs materialised (GPU, full size) %.1e, fused GPU vs CPU %.1e\n",
                  a.name.c_str(), ok ? "ok" : "FAILED", gpu_vs_gpu, gpu_vs_cpu);
    }
    const Timing fused = time_aspp(a, true, *gpu, flusher, warmup, iters);
    const Timing mat = time_aspp(a, false, *gpu, flusher, warmup, iters);
    const Timing torch = torch_timing(convs.size() + i);
    const double f = a.forward_flops(), fs = 3.0 * f;
    for (int v = 0; v < 2; ++v) {
      const Timing& t = v == 0 ? fused : mat;
      const char* variant = v == 0 ? "fused" : "cat+conv1x1";
      std::printf("%-38s %-13s %9.3f %11s %5.0f %9.3f %11s %5.0f %9.3f %9.3f %6.2f %6.2f\n",
                  a.name.c_str(), variant, t.fwd_ms, tflops_str(f, t.fwd_ms).c_str(),
                  percent(f, t.fwd_ms, peak.tf32_tflops), t.step_ms,
                  tflops_str(fs, t.step_ms).c_str(), percent(fs, t.step_ms, peak.tf32_tflops),
                  torch.fwd_ms, torch.step_ms, torch.fwd_ms > 0 ? torch.fwd_ms / t.fwd_ms : 0.0,
                  torch.step_ms > 0 ? torch.step_ms / t.step_ms : 0.0);
      bench::table_row("conv_gpu", a.name + " " + variant + " fwd", t.fwd_ms,
                       tflops_str(f, t.fwd_ms), percent(f, t.fwd_ms, peak.tf32_tflops), torch.fwd_ms);
      bench::table_row("conv_gpu", a.name + " " + variant + " step", t.step_ms,
                       tflops_str(fs, t.step_ms), percent(fs, t.step_ms, peak.tf32_tflops),
                       torch.step_ms);
    }
    const double concat_bytes =
        static_cast<double>(a.n * a.channels() * a.h * a.w) * 4.0;  // f32 (n, C, h, w)
    std::printf("%-38s (the fused op never holds the %.2f GB concatenation)\n", "", concat_bytes / 1e9);
    std::fflush(stdout);
  }
  if (validate) std::printf("\nvalidation: %s\n", all_valid ? "all ok" : "FAILURES (see the check columns)");
  return validate && !all_valid ? 1 : 0;
}
