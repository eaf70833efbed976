// Kernel lab: the elementwise family and the fused optimiser step on full-size shapes, next to
// PyTorch (benchmarks/cuda/elementwise_peer.py, same shapes, same GPU).
//
// Cases (f32):
//   broadcast_add   (8,64,256,512) + (1,64,1,1)            per-channel bias, a broadcast binary op
//   relu_backward   gx = x > 0 ? gy : 0 over (8,64,256,512)
//   sum_nhw         sum over (n,h,w) of (8,64,256,512)     a bias gradient
//   transpose_copy  (8,64,256,512).transpose(2,3) made contiguous
//   adam_step       one Adam step over ResNet-101's parameters (~42.5M floats in 312 tensors)
// Versions: v1 is a naive kernel written here (one thread per element with 64-bit div/mod index
// math; one block per output; one launch per tensor), v2 is the engine's kernel called through
// the registry on preallocated buffers. Every version is checked against the CPU result (exactly,
// except the sum: f64 accumulation in a different order, relative 1e-6) before it is timed.
// Times are medians of CUDA-event timings after an L2 flush (benchmarks/cuda/lab.h); GB/s counts
// the bytes each op must move once (inputs read, outputs written).
//
// Usage: bench_elementwise [--no-peer] [--iters N]
#include <cuda_runtime.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "benchmarks/cuda/lab.h"
#include "engine/cuda/cuda_context.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/optim/optimizer.h"
#include "kernels/common/optim.h"

using namespace seg;

namespace {

// ---- v1 kernels --------------------------------------------------------------------------------

// out = a + b over 4-d sizes with per-operand strides; 64-bit div/mod for every element.
__global__ void add_naive_kernel(const float* a, const float* b, float* out, int64_t n, int64_t s1,
                                 int64_t s2, int64_t s3, int64_t b0, int64_t b1, int64_t b2,
                                 int64_t b3) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t i3 = i % s3, r3 = i / s3;
  const int64_t i2 = r3 % s2, r2 = r3 / s2;
  const int64_t i1 = r2 % s1, i0 = r2 / s1;
  out[i] = a[i] + b[i0 * b0 + i1 * b1 + i2 * b2 + i3 * b3];
}

__global__ void relu_backward_naive_kernel(const float* x, const float* gy, float* gx, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) gx[i] = x[i] > 0.0f ? gy[i] : 0.0f;
}

// One block per channel of (n, c, hw): a block-wide f64 tree over n * hw elements.
__global__ void sum_nhw_naive_kernel(const float* x, float* y, int64_t n, int64_t c, int64_t hw) {
  __shared__ double part[256];
  const int64_t ch = blockIdx.x;
  double acc = 0.0;
  for (int64_t k = threadIdx.x; k < n * hw; k += blockDim.x)
    acc += x[(k / hw) * c * hw + ch * hw + k % hw];
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) y[ch] = static_cast<float>(part[0]);
}

// dst (b, w, h) contiguous = src (b, h, w) contiguous transposed: writes coalesced, reads strided.
__global__ void transpose_naive_kernel(const float* src, float* dst, int64_t batch, int64_t h,
                                       int64_t w) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= batch * h * w) return;
  const int64_t hi = i % h, r = i / h;
  const int64_t wi = r % w, bi = r / w;
  dst[i] = src[(bi * h + hi) * w + wi];
}

// One tensor's Adam update (the engine's per-element math), one launch per tensor.
__global__ void adam_naive_kernel(float* p, const float* g, float* m, float* v, int64_t n,
                                  OptimScalars<float> s) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) adam_update<float, false, false, false, false>(s, p[i], g[i], m[i], v[i], nullptr);
}

unsigned int blocks(int64_t n, int threads) {
  return static_cast<unsigned int>((n + threads - 1) / threads);
}

// ---- helpers -----------------------------------------------------------------------------------

struct Version {
  std::string name;
  std::function<void()> run;
};

// The parameter shapes of torchvision's ResNet-101 without the classifier (DeepLabv3's backbone).
std::vector<Shape> resnet101_shapes() {
  std::vector<Shape> s = {{64, 3, 7, 7}, {64}, {64}};
  const int blocks_per_layer[4] = {3, 4, 23, 3};
  int64_t in = 64;
  for (int layer = 0; layer < 4; ++layer) {
    const int64_t width = int64_t{64} << layer, out = width * 4;
    for (int b = 0; b < blocks_per_layer[layer]; ++b) {
      s.push_back({width, in, 1, 1});
      s.push_back({width});
      s.push_back({width});
      s.push_back({width, width, 3, 3});
      s.push_back({width});
      s.push_back({width});
      s.push_back({out, width, 1, 1});
      s.push_back({out});
      s.push_back({out});
      if (b == 0) {
        s.push_back({out, in, 1, 1});
        s.push_back({out});
        s.push_back({out});
      }
      in = out;
    }
  }
  return s;
}

bool same_bits(const Tensor& cpu, const Tensor& gpu) {
  const Tensor a = cpu.contiguous(), b = gpu.to(Device::cpu()).contiguous();
  return a.sizes() == b.sizes() &&
         std::memcmp(a.data_ptr(), b.data_ptr(),
                     static_cast<size_t>(a.numel()) * dtype_size(a.dtype())) == 0;
}

bool close(const Tensor& cpu, const Tensor& gpu, double rel) {
  const std::vector<float> a = to_vector<float>(cpu), b = to_vector<float>(gpu);
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::abs(a[i] - b[i]) > rel * (std::abs(a[i]) + 1e-3)) return false;
  }
  return true;
}

struct Report {
  const bench::DevicePeak* peak;
  double torch_ms = -1.0;
  void line(const std::string& bench_case, const std::string& version, double bytes, double ms,
            bool last) {
    const double gbs = bytes / (ms * 1e-3) / 1e9;
    std::printf("  %-10s %9.3f ms  %s", version.c_str(), ms,
                bench::bandwidth_str(bytes, ms, *peak).c_str());
    if (last && torch_ms > 0)
      std::printf("   torch %8.3f ms  ratio %.2fx", torch_ms, torch_ms / ms);
    std::printf("\n");
    if (last) {
      char rate[32];
      std::snprintf(rate, sizeof rate, "%.0f GB/s", gbs);
      bench::table_row("elementwise", bench_case, ms, rate, 100.0 * gbs / peak->bandwidth_gbs,
                       torch_ms);
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  bool peer = true;
  int iters = 20;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--no-peer") == 0) {
      peer = false;
    } else if (std::strcmp(argv[i], "--iters") == 0 && i + 1 < argc) {
      iters = std::atoi(argv[++i]);
    }
  }
  if (cuda_device_count() == 0) {
    std::printf("bench_elementwise: needs a CUDA GPU; none found, nothing to do\n");
    return 0;
  }
  auto context = cuda::CudaContext::create(0);
  const Device gpu = context->device();
  cudaStream_t stream = context->compute_stream();
  const bench::DevicePeak peak = bench::device_peak(0);
  bench::L2Flusher flusher(peak.l2_bytes);
  std::printf("bench_elementwise on %s: %d SMs, HBM %.0f GB/s peak\n", peak.name.c_str(),
              peak.sm_count, peak.bandwidth_gbs);

  const Shape act = {8, 64, 256, 512};
  const int64_t n = shape_numel(act);
  const std::vector<Shape> params = resnet101_shapes();
  int64_t param_count = 0;
  for (const Shape& s : params) param_count += shape_numel(s);

  // PyTorch on the same shapes.
  nlohmann::json torch_ms = nlohmann::json::object();
  if (peer) {
    nlohmann::json args;
    args["act"] = act;
    args["params"] = params;
    args["warmup"] = 3;
    args["iters"] = iters;
    nlohmann::json result;
    std::string info;
    if (bench::run_peer(std::string(SEG_SOURCE_DIR) + "/benchmarks/cuda/elementwise_peer.py", args,
                        result, info)) {
      torch_ms = result["results"];
      std::printf("PyTorch %s on %s\n", result.value("torch", "?").c_str(),
                  result.value("device", "?").c_str());
    } else {
      std::printf("PyTorch peer unavailable: %s\n", info.c_str());
    }
  }
  auto peer_ms = [&](const char* key) {
    return torch_ms.contains(key) && torch_ms[key].is_number() ? torch_ms[key].get<double>() : -1.0;
  };
  auto timed = [&](const std::function<void()>& fn) {
    return bench::time_ms(fn, stream, flusher, 3, iters);
  };

  Generator gen(1);
  const Tensor x_cpu = randn(act, gen);
  const Tensor x = x_cpu.to(gpu);
  int failures = 0;
  auto validate = [&](bool ok, const std::string& what) {
    if (!ok) {
      std::printf("  %s: MISMATCH with the CPU result\n", what.c_str());
      ++failures;
    }
    return ok;
  };

  // ---- broadcast add ----
  {
    std::printf("broadcast_add (8,64,256,512) + (1,64,1,1)\n");
    const Tensor b_cpu = randn({1, 64, 1, 1}, gen);
    const Tensor b = b_cpu.to(gpu);
    const Tensor ref = add(x_cpu, b_cpu);
    Tensor out = empty(act, DType::f32, gpu);
    const Tensor be = b.expand(act);
    const std::vector<Version> versions = {
        {"v1 naive",
         [&] {
           add_naive_kernel<<<blocks(n, 256), 256, 0, stream>>>(
               x.data<float>(), b.data<float>(), out.data<float>(), n, 64, 256, 512, 0, 1, 0, 0);
         }},
        {"v2 engine",
         [&] {
           kernels_for<OpId::add>(gpu).forward(exec_context(out), BinaryOp::add, view_of(x),
                                               view_of(be), view_of(out));
         }},
    };
    Report r{&peak, peer_ms("broadcast_add")};
    for (size_t v = 0; v < versions.size(); ++v) {
      versions[v].run();
      context->synchronize();
      if (!validate(same_bits(ref, out), versions[v].name)) continue;
      r.line("broadcast_add (8,64,256,512)+(1,64,1,1)", versions[v].name, 8.0 * n,
             timed(versions[v].run), v + 1 == versions.size());
    }
  }

  // ---- relu backward ----
  {
    std::printf("relu_backward (8,64,256,512)\n");
    const Tensor gy_cpu = randn(act, gen);
    const Tensor gy = gy_cpu.to(gpu);
    Tensor ref = empty(act);
    kernels_for<OpId::relu>(Device::cpu())
        .backward(exec_context(ref), UnaryOp::relu, 0.0, view_of(x_cpu), View{}, view_of(gy_cpu),
                  view_of(ref));
    Tensor gx = empty(act, DType::f32, gpu);
    const std::vector<Version> versions = {
        {"v1 naive",
         [&] {
           relu_backward_naive_kernel<<<blocks(n, 256), 256, 0, stream>>>(
               x.data<float>(), gy.data<float>(), gx.data<float>(), n);
         }},
        {"v2 engine",
         [&] {
           kernels_for<OpId::relu>(gpu).backward(exec_context(gx), UnaryOp::relu, 0.0, view_of(x),
                                                 View{}, view_of(gy), view_of(gx));
         }},
    };
    Report r{&peak, peer_ms("relu_backward")};
    for (size_t v = 0; v < versions.size(); ++v) {
      versions[v].run();
      context->synchronize();
      if (!validate(same_bits(ref, gx), versions[v].name)) continue;
      r.line("relu_backward (8,64,256,512)", versions[v].name, 12.0 * n, timed(versions[v].run),
             v + 1 == versions.size());
    }
  }

  // ---- sum over (n, h, w) ----
  {
    std::printf("sum_nhw (8,64,256,512) -> (1,64,1,1)\n");
    const Tensor ref = sum(x_cpu, {0, 2, 3}, true);
    Tensor y = empty({1, 64, 1, 1}, DType::f32, gpu);
    const std::vector<Version> versions = {
        {"v1 naive",
         [&] {
           sum_nhw_naive_kernel<<<64, 256, 0, stream>>>(x.data<float>(), y.data<float>(), 8, 64,
                                                        256 * 512);
         }},
        {"v2 engine",
         [&] { kernels_for<OpId::sum>(gpu).sum(exec_context(y), view_of(x), view_of(y)); }},
    };
    Report r{&peak, peer_ms("sum_nhw")};
    for (size_t v = 0; v < versions.size(); ++v) {
      versions[v].run();
      context->synchronize();
      if (!validate(close(ref, y, 1e-6), versions[v].name)) continue;
      r.line("sum_nhw (8,64,256,512)->(1,64,1,1)", versions[v].name, 4.0 * n,
             timed(versions[v].run), v + 1 == versions.size());
    }
  }

  // ---- transposed copy ----
  {
    std::printf("transpose_copy (8,64,256,512).transpose(2,3).contiguous()\n");
    const Tensor ref = x_cpu.transpose(2, 3).contiguous();
    Tensor out = empty({8, 64, 512, 256}, DType::f32, gpu);
    const Tensor src = x.transpose(2, 3);
    const std::vector<Version> versions = {
        {"v1 naive",
         [&] {
           transpose_naive_kernel<<<blocks(n, 256), 256, 0, stream>>>(
               x.data<float>(), out.data<float>(), 8 * 64, 256, 512);
         }},
        {"v2 engine",
         [&] { kernels_for<OpId::copy>(gpu).copy(exec_context(out), view_of(src), view_of(out)); }},
    };
    Report r{&peak, peer_ms("transpose_copy")};
    for (size_t v = 0; v < versions.size(); ++v) {
      versions[v].run();
      context->synchronize();
      if (!validate(same_bits(ref, out), versions[v].name)) continue;
      r.line("transpose_copy (8,64,256,512)^T(2,3)", versions[v].name, 8.0 * n,
             timed(versions[v].run), v + 1 == versions.size());
    }
  }

  // ---- Adam over ResNet-101's parameters ----
  {
    std::printf("adam_step over %zu tensors, %.1fM floats\n", params.size(), param_count / 1e6);
    OptimHyper h = to_hyper(AdamOptions{});
    h.bias_correction1 = 1.0 - std::pow(h.beta1, 3.0);
    h.bias_correction2 = 1.0 - std::pow(h.beta2, 3.0);
    const OptimScalars<float> scalars(h);
    // (param, grad, exp_avg, exp_avg_sq) per tensor, on both devices.
    std::vector<std::array<Tensor, 4>> cpu, dev;
    for (const Shape& s : params) {
      std::array<Tensor, 4> c = {randn(s, gen), randn(s, gen), mul_scalar(randn(s, gen), 0.1),
                                 rand(s, gen)};
      std::array<Tensor, 4> d;
      for (int k = 0; k < 4; ++k) d[k] = c[k].to(gpu);
      cpu.push_back(c);
      dev.push_back(d);
    }
    auto views = [](const std::vector<std::array<Tensor, 4>>& t) {
      std::vector<OptimTensor> v;
      for (const auto& a : t) {
        OptimTensor o;
        o.param = view_of(a[0]);
        o.grad = view_of(a[1]);
        o.state0 = view_of(a[2]);
        o.state1 = view_of(a[3]);
        v.push_back(o);
      }
      return v;
    };
    const std::vector<OptimTensor> dev_views = views(dev);
    // The reference: one CPU step from the same state, on copies.
    std::vector<std::array<Tensor, 4>> ref;
    for (const auto& c : cpu) ref.push_back({c[0].clone(), c[1], c[2].clone(), c[3].clone()});
    kernels_for<OpId::optimizer_step>(Device::cpu())
        .step(exec_context(ref[0][0]), OptimKind::adam, h, views(ref).data(),
              static_cast<int64_t>(ref.size()));
    auto reset = [&] {
      for (size_t i = 0; i < cpu.size(); ++i) {
        for (int k : {0, 2, 3}) dev[i][k].copy_(cpu[i][k]);
      }
    };
    auto check = [&] {
      bool ok = true;
      for (size_t i = 0; i < ref.size() && ok; ++i) {
        for (int k : {0, 2, 3}) ok = ok && same_bits(ref[i][k], dev[i][k]);
      }
      return ok;
    };
    const std::vector<Version> versions = {
        {"v1 per-tensor",
         [&] {
           for (const auto& d : dev) {
             const int64_t m = d[0].numel();
             adam_naive_kernel<<<blocks(m, 256), 256, 0, stream>>>(
                 d[0].data<float>(), d[1].data<float>(), d[2].data<float>(), d[3].data<float>(), m,
                 scalars);
           }
         }},
        {"v2 fused",
         [&] {
           kernels_for<OpId::optimizer_step>(gpu).step(exec_context(dev[0][0]), OptimKind::adam, h,
                                                       dev_views.data(),
                                                       static_cast<int64_t>(dev_views.size()));
         }},
    };
    const double bytes = 28.0 * static_cast<double>(param_count);  // read p, g, m, v; write p, m, v
    Report r{&peak, peer_ms("adam_fused")};
    for (size_t v = 0; v < versions.size(); ++v) {
      reset();
      versions[v].run();
      context->synchronize();
      if (!validate(check(), versions[v].name)) continue;
      r.line("adam_step resnet101 (42.5M, 312 tensors)", versions[v].name, bytes,
             timed(versions[v].run), v + 1 == versions.size());
    }
    const double foreach_ms = peer_ms("adam_foreach");
    if (foreach_ms > 0) std::printf("  torch foreach (not fused): %.3f ms\n", foreach_ms);
  }
  if (failures) std::printf("%d version(s) did not match the CPU\n", failures);
  return failures ? 1 : 0;
}
