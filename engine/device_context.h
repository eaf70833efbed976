// DeviceContext: everything one rank needs to run on one accelerator: its allocator, the state its
// kernels receive (streams, library handles, workspace), and copies to and from the host. Owned by
// the application (one per rank), outliving every tensor allocated through it; never global.
#pragma once

#include <cstddef>

#include "engine/device.h"
#include "engine/storage.h"

namespace seg {

class DeviceContext {
 public:
  virtual ~DeviceContext() = default;
  // This device, carrying this context.
  virtual Device device() = 0;
  virtual Allocator& allocator() = 0;
  // Handed to kernels as ExecContext::device_state.
  virtual void* kernel_state() = 0;
  // Host -> device, ordered on the compute stream. Pageable `src` may be reused when this returns.
  // From the context's pinned memory the copy is asynchronous: `src` may be freed at once (the
  // pinned allocator holds the block until the copy has run) but must not be written until the
  // stream has passed the copy (synchronize(), or a later copy_to_host).
  virtual void copy_from_host(void* dst, const void* src, size_t bytes) = 0;
  // Device -> host; returns when the bytes are on the host (after all work queued before it).
  virtual void copy_to_host(void* dst, const void* src, size_t bytes) = 0;
  // Device -> device (possibly another device's memory), ordered on the compute stream.
  virtual void copy_device(void* dst, const void* src, size_t bytes) = 0;
  // Waits for all queued work.
  virtual void synchronize() = 0;
};

}  // namespace seg
