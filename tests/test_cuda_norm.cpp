// Batch norm on CUDA against the CPU beyond outputs and gradients: the running statistics after
// several training steps (contiguous and strided buffers, with and without affine, (n, c) and
// (n, c, h, w)), and evaluation with those statistics (label gpu).
#include <doctest/doctest.h>

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

}  // namespace

TEST_CASE("batch norm running statistics and evaluation match the CPU") {
  if (!have_gpu()) return;
  for (const Shape& shape : {Shape{4, 37, 61, 53}, Shape{2, 5, 1, 1}, Shape{517, 33}, Shape{1, 3, 7, 9}}) {
    for (bool affine : {true, false}) {
      for (bool strided : {false, true}) {
        CAPTURE(shape_str(shape));
        CAPTURE(affine);
        CAPTURE(strided);
        Stats cpu, gpu;
        Tensor y_cpu = run(shape, affine, strided, Device::cpu(), cpu);
        Tensor y_gpu = run(shape, affine, strided, gpu_device(), gpu);
        ParityResult m = compare_parity(cpu.mean.contiguous(), gpu.mean.contiguous());
        CHECK_MESSAGE(m.ok, "running_mean: ", m.message);
        ParityResult v = compare_parity(cpu.var.contiguous(), gpu.var.contiguous());
        CHECK_MESSAGE(v.ok, "running_var: ", v.message);
        ParityResult y = compare_parity(y_cpu, y_gpu);
        CHECK_MESSAGE(y.ok, "eval output: ", y.message);
      }
    }
  }
  gpu_synchronize();
  CHECK_MESSAGE(gpu_guard_violations() == 0, "out-of-bounds writes: ", gpu_guard_reports());
}
