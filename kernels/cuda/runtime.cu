// CUDA runtime entry points the engine needs in every CUDA build: device discovery and the
// registration of CUDA kernels. A binary built with CUDA runs on a machine without a GPU: device
// discovery then reports 0 devices and every tensor stays on the CPU.
#include <cuda_runtime.h>

#include "kernels/common/registry.h"

namespace seg {

int cuda_runtime_device_count() {
  int count = 0;
  // No driver, no device, or a driver too old for this runtime: no usable GPU.
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error state
    return 0;
  }
  return count;
}

void register_cuda_kernels(KernelRegistry&) {
  // The CUDA kernel families are registered here as they are written; until then every op on a
  // CUDA device reports that it has no kernels for that device.
}

}  // namespace seg
