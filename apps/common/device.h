// The device an app runs on, resolved from the config's "cpu" / "cuda" / "cuda:N": for a GPU, the
// app's own CudaContext (streams, handles, caching allocator), which outlives every tensor of the
// run. The loader stacks batches in the context's pinned memory, so copies to the GPU are
// asynchronous.
#pragma once

#include <memory>
#include <string>

#include "engine/device.h"
#include "engine/device_context.h"
#include "engine/storage.h"

namespace seg::app {

class AppDevice {
 public:
  // Errors name the value and say why (no CUDA backend in this build, no such GPU).
  explicit AppDevice(const std::string& name);
  ~AppDevice();
  AppDevice(const AppDevice&) = delete;
  AppDevice& operator=(const AppDevice&) = delete;

  Device device() const { return device_; }
  // Where the loader stacks batches: pinned host memory for a GPU, the CPU allocator otherwise.
  Allocator& batch_allocator();
  std::string describe() const;
  void synchronize();

 private:
  Device device_;
  std::unique_ptr<DeviceContext> context_;
  std::string description_;
};

}  // namespace seg::app
