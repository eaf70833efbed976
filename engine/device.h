// Device: where a tensor's storage lives. CPU is always available; CUDA devices when the CUDA backend
// is built and a GPU is present.
#pragma once

#include <string>

#include "kernels/common/types.h"

namespace seg {

class DeviceContext;

// A device, and for a GPU the context (engine/device_context.h) that owns its streams, library
// handles and memory. Tensors made from a Device with a context allocate from that context; a CUDA
// Device without one (as parsed from a config) names the GPU but cannot allocate until resolved
// with a context: there is no global registry of contexts.
struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;
  DeviceContext* context = nullptr;  // not owned; null for the CPU

  static Device cpu() { return Device{DeviceType::cpu, 0, nullptr}; }
  static Device cuda(int index = 0, DeviceContext* context = nullptr) {
    return Device{DeviceType::cuda, index, context};
  }
  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  // The same device (the context is how it is reached, not what it is).
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  std::string str() const;  // "cpu", "cuda:0"
};

// Parses "cpu", "cuda", "cuda:1".
Device parse_device(const std::string& s);

// Number of usable CUDA devices: 0 when the CUDA backend is not built or no GPU is present.
int cuda_device_count();

// True when this binary was built with the CUDA backend.
bool cuda_built();

}  // namespace seg
