#include "engine/device.h"

#include "engine/error.h"

namespace seg {

#ifdef SEG_WITH_CUDA
int cuda_runtime_device_count();  // kernels/cuda/runtime.cu
#endif

std::string Device::str() const {
  return is_cpu() ? "cpu" : "cuda:" + std::to_string(index);
}

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda") return Device::cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    std::string idx = s.substr(5);
    SEG_CHECK(!idx.empty() && idx.find_first_not_of("0123456789") == std::string::npos,
              "invalid device '", s, "' (expected cpu, cuda or cuda:N)");
    return Device::cuda(std::stoi(idx));
  }
  SEG_CHECK(false, "invalid device '", s, "' (expected cpu, cuda or cuda:N)");
  return Device::cpu();
}

bool cuda_built() {
#ifdef SEG_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef SEG_WITH_CUDA
  return cuda_runtime_device_count();
#else
  return 0;
#endif
}

}  // namespace seg
