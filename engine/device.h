// Device: where a tensor's storage lives. CPU is always available; CUDA devices when the CUDA backend
// is built and a GPU is present.
#pragma once

#include <string>

#include "kernels/common/types.h"

namespace seg {

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return Device{DeviceType::cpu, 0}; }
  static Device cuda(int index = 0) { return Device{DeviceType::cuda, index}; }
  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  bool operator==(const Device&) const = default;
  std::string str() const;  // "cpu", "cuda:0"
};

// Parses "cpu", "cuda", "cuda:1".
Device parse_device(const std::string& s);

// Number of usable CUDA devices: 0 when the CUDA backend is not built or no GPU is present.
int cuda_device_count();

// True when this binary was built with the CUDA backend.
bool cuda_built();

}  // namespace seg
