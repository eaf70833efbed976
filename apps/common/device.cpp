#include "apps/common/device.h"

#include "engine/error.h"
#ifdef SEG_WITH_CUDA
#include "engine/cuda/cuda_context.h"
#endif

namespace seg::app {

AppDevice::AppDevice(const std::string& name) {
  const Device parsed = parse_device(name);
  if (parsed.is_cpu()) {
    device_ = Device::cpu();
    description_ = "cpu";
    return;
  }
  SEG_CHECK(cuda_built(), "train.device '", name,
            "': this build has no CUDA backend (configure where nvcc is found)");
  const int count = cuda_device_count();
  SEG_CHECK(parsed.index < count, "train.device '", name, "': ",
            count == 0 ? std::string("no GPU is present")
                       : "only " + std::to_string(count) + " GPU(s) are present");
#ifdef SEG_WITH_CUDA
  auto ctx = cuda::CudaContext::create(parsed.index);
  description_ = parsed.str() + " (" + ctx->properties().name + ")";
  device_ = ctx->device();
  context_ = std::move(ctx);
#endif
}

AppDevice::~AppDevice() = default;

Allocator& AppDevice::batch_allocator() {
#ifdef SEG_WITH_CUDA
  if (context_) return static_cast<cuda::CudaContext&>(*context_).pinned_allocator();
#endif
  return cpu_allocator();
}

std::string AppDevice::describe() const {
  return description_;
}

void AppDevice::synchronize() {
  if (context_) context_->synchronize();
}

}  // namespace seg::app
