// Device discovery for every CUDA build. A binary built with CUDA runs on a machine without a
// GPU: discovery then reports 0 devices and every tensor stays on the CPU.
#include <cuda_runtime.h>

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


}  // namespace seg
