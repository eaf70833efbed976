#include "tests/support/parity.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <sstream>

#include "tests/support/reference.h"

#ifdef SEG_WITH_CUDA
#include "engine/cuda/cuda_context.h"
#endif

namespace seg::test {

#ifdef SEG_WITH_CUDA
namespace {
cuda::CudaContext* test_context() {
  static std::unique_ptr<cuda::CudaContext> ctx = [] {
    cuda::CudaContextOptions options;
    options.allow_tf32 = false;
    options.guard_bytes = kGuardBytes;
    return cuda::CudaContext::create(0, options);
  }();
  return ctx.get();
}
}  // namespace
#endif

bool have_gpu() {
#ifdef SEG_WITH_CUDA
  if (cuda_device_count() > 0) return true;
  record_skip("no GPU present: GPU tests skipped");
#else
  record_skip("built without CUDA: GPU tests skipped");
#endif
  return false;
}

Device gpu_device() {
#ifdef SEG_WITH_CUDA
  return test_context()->device();
#else
  SEG_CHECK(false, "gpu_device: built without CUDA");
  return Device::cpu();
#endif
}

int64_t gpu_guard_violations() {
#ifdef SEG_WITH_CUDA
  return test_context()->device_allocator().guard_violations();
#else
  return 0;
#endif
}

std::string gpu_guard_reports() {
  std::string out;
#ifdef SEG_WITH_CUDA
  for (const std::string& r : test_context()->device_allocator().guard_reports()) out += r + "; ";
#endif
  return out;
}

void gpu_synchronize() {
#ifdef SEG_WITH_CUDA
  test_context()->synchronize();
#endif
}

void gpu_set_allow_tf32(bool allow) {
#ifdef SEG_WITH_CUDA
  test_context()->set_allow_tf32(allow);
#else
  (void)allow;
#endif
}

ParityResult compare_parity(const Tensor& cpu, const Tensor& gpu, double tolerance) {
  ParityResult r;
  std::ostringstream os;
  if (cpu.sizes() != gpu.sizes() || cpu.dtype() != gpu.dtype()) {
    os << "cpu " << cpu.str() << " vs gpu " << gpu.str();
    r.ok = false;
    r.message = os.str();
    return r;
  }
  std::vector<double> a = to_vector<double>(cpu), b = to_vector<double>(gpu);
  const bool exact = !is_floating(cpu.dtype());
  double scale = 0.0, err = 0.0;
  size_t worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isfinite(a[i])) scale = std::max(scale, std::abs(a[i]));
  }
  for (size_t i = 0; i < a.size(); ++i) {
    const bool fa = std::isfinite(a[i]), fb = std::isfinite(b[i]);
    if (fa != fb || (!fa && !(std::isnan(a[i]) && std::isnan(b[i])) && a[i] != b[i])) {
      os << "element " << i << ": cpu " << a[i] << " vs gpu " << b[i];
      r.ok = false;
      r.message = os.str();
      return r;
    }
    if (!fa) continue;
    const double e = std::abs(a[i] - b[i]);
    if (e > err) {
      err = e;
      worst = i;
    }
  }
  r.normalised_error = err / std::max(scale, 1e-30);
  r.ok = exact ? err == 0.0 : r.normalised_error <= tolerance;
  if (!r.ok) {
    os.precision(9);
    os << "normalised error " << r.normalised_error << " (tolerance " << (exact ? 0.0 : tolerance)
       << "), worst at element " << worst << ": cpu " << a[worst] << " vs gpu " << b[worst];
    r.message = os.str();
  }
  return r;
}

}  // namespace seg::test
