// Batch norm on CUDA against the CPU beyond outputs and gradients: the running statistics after
// several training steps (contiguous and strided buffers, with and without affine, (n, c) and
// (n, c, h, w)), and evaluation with those statistics; gradients with an epsilon and momentum other
// than the defaults (cuDNN's backward is not given the epsilon) and with only the parameter
// gradients wanted. Every test runs through cuDNN and through our own kernels
// (SEG_BN_OWN_KERNELS=1, read by the kernels at every call) (label gpu).
#include <doctest/doctest.h>

#include <cstdlib>
#include <optional>
#include <string>

#include "engine/ops.h"
#include "tests/support/parity.h"

using namespace seg;
using namespace seg::test;

namespace {

struct Stats {
  Tensor mean, var;
};

// Three training steps then one evaluation, on `device`; returns the last output and the stats.
Tensor run(const Shape& shape, bool affine, bool strided_stats, Device device, Stats& stats) {
  Generator g(11);
  const int64_t c = shape[1];
  Tensor w = affine ? (randn({c}, g) * 0.5 + 1.0).to(device) : Tensor();
  Tensor b = affine ? randn({c}, g).to(device) : Tensor();
  Tensor mean_store = zeros({c, 2}, DType::f32, device);
  Tensor var_store = ones({c, 2}, DType::f32, device);
  stats.mean = strided_stats ? mean_store.select(1, 1) : zeros({c}, DType::f32, device);
  stats.var = strided_stats ? var_store.select(1, 0) : ones({c}, DType::f32, device);
  Tensor y;
  for (int step = 0; step < 3; ++step) {
    Tensor x = (randn(shape, g) * 2.0 + 3.0).to(device);
    y = batch_norm2d(x, w, b, stats.mean, stats.var, /*training=*/true, 0.1, 1e-5);
  }
  Tensor x = (randn(shape, g) * 2.0 + 3.0).to(device);
  return batch_norm2d(x, w, b, stats.mean, stats.var, /*training=*/false, 0.1, 1e-5);
}

// Sets SEG_BN_OWN_KERNELS for one scope (own = true: our kernels; false: cuDNN where it can),
// restoring what the environment held.
class KernelChoice {
 public:
  explicit KernelChoice(bool own) {
    if (const char* v = std::getenv(kName)) saved_ = v;
    if (own) {
      setenv(kName, "1", 1);
    } else {
      unsetenv(kName);
    }
  }
  ~KernelChoice() {
    if (saved_) {
      setenv(kName, saved_->c_str(), 1);
    } else {
      unsetenv(kName);
    }
  }
  KernelChoice(const KernelChoice&) = delete;
  KernelChoice& operator=(const KernelChoice&) = delete;

 private:
  static constexpr const char* kName = "SEG_BN_OWN_KERNELS";
  std::optional<std::string> saved_;
};

struct Step {
  Tensor y, gx, gw, gb, mean, var;
};

// One training step with running statistics, then sum(y * r) backward, on `device`. The data's
// variance (0.09) is of the order of eps = 0.1, so an epsilon lost anywhere shows in every value.
Step train_step(const Shape& shape, bool x_grad, Device device) {
  constexpr double kMomentum = 0.3, kEps = 0.1;
  Generator g(23);
  const int64_t c = shape[1];
  auto leaf = [device](const Tensor& t, bool grad) {
    Tensor v = t.to(device).detach();
    v.set_requires_grad(grad);
    return v;
  };
  Tensor x = leaf(randn(shape, g) * 0.3 + 2.0, x_grad);
  Tensor w = leaf(randn({c}, g) * 0.5 + 1.0, true);
  Tensor b = leaf(randn({c}, g), true);
  Tensor r = randn(shape, g).to(device);
  Step s;
  s.mean = (randn({c}, g) * 0.1).to(device);
  s.var = (rand({c}, g) + 0.5).to(device);
  s.y = batch_norm2d(x, w, b, s.mean, s.var, /*training=*/true, kMomentum, kEps);
  sum(s.y * r).backward();
  if (x_grad) s.gx = x.grad();
  s.gw = w.grad();
  s.gb = b.grad();
  return s;
}

void check(const Tensor& cpu, const Tensor& gpu, const char* what) {
  REQUIRE_MESSAGE(gpu.defined(), what, ": undefined on the GPU");
  ParityResult r = compare_parity(cpu.contiguous(), gpu.contiguous());
  CHECK_MESSAGE(r.ok, what, ": ", r.message);
}

}  // namespace

TEST_CASE("batch norm running statistics and evaluation match the CPU") {
  if (!have_gpu()) return;
  for (bool own : {false, true}) {
    KernelChoice choice(own);
    for (const Shape& shape : {Shape{4, 37, 61, 53}, Shape{2, 5, 1, 1}, Shape{517, 33}, Shape{1, 3, 7, 9}}) {
      for (bool affine : {true, false}) {
        for (bool strided : {false, true}) {
          CAPTURE(own);
          CAPTURE(shape_str(shape));
          CAPTURE(affine);
          CAPTURE(strided);
          Stats cpu, gpu;
          Tensor y_cpu = run(shape, affine, strided, Device::cpu(), cpu);
          Tensor y_gpu = run(shape, affine, strided, gpu_device(), gpu);
          check(cpu.mean, gpu.mean, "running_mean");
          check(cpu.var, gpu.var, "running_var");
          check(y_cpu, y_gpu, "eval output");
        }
      }
    }
  }
  gpu_synchronize();
  CHECK_MESSAGE(gpu_guard_violations() == 0, "out-of-bounds writes: ", gpu_guard_reports());
}

TEST_CASE("batch norm gradients with eps 0.1 and momentum 0.3, and with only the parameter gradients") {
  if (!have_gpu()) return;
  for (bool own : {false, true}) {
    KernelChoice choice(own);
    for (const Shape& shape : {Shape{4, 37, 61, 53}, Shape{517, 33}, Shape{2, 5, 1, 1}}) {
      for (bool x_grad : {true, false}) {  // without gx: the sums-only backward
        CAPTURE(own);
        CAPTURE(shape_str(shape));
        CAPTURE(x_grad);
        const Step cpu = train_step(shape, x_grad, Device::cpu());
        const Step gpu = train_step(shape, x_grad, gpu_device());
        check(cpu.y, gpu.y, "output");
        if (x_grad) check(cpu.gx, gpu.gx, "gradient of x");
        check(cpu.gw, gpu.gw, "gradient of weight");
        check(cpu.gb, gpu.gb, "gradient of bias");
        check(cpu.mean, gpu.mean, "running_mean");
        check(cpu.var, gpu.var, "running_var");
      }
    }
  }
  gpu_synchronize();
  CHECK_MESSAGE(gpu_guard_violations() == 0, "out-of-bounds writes: ", gpu_guard_reports());
}
