// Storage: one allocation on one device, shared by every tensor that views it. It carries the
// version counter that autograd uses to detect in-place changes to tensors saved for backward.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "engine/device.h"

namespace seg {

struct AllocatorStats {
  size_t allocated = 0;       // bytes held by live allocations (as requested)
  size_t reserved = 0;        // bytes obtained from the system, live or cached
  size_t peak_allocated = 0;  // the largest `allocated` so far
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  // `nbytes` is the size given to allocate().
  virtual void deallocate(void* ptr, size_t nbytes) = 0;
  virtual Device device() const = 0;
  virtual AllocatorStats stats() const = 0;
  // Returns cached blocks to the system.
  virtual void empty_cache() = 0;
};

// Host memory, 64-byte aligned, with a cache of large blocks: a training step allocates the same
// large activations and gradients every iteration, and fresh pages from the system cost a page fault
// each on first touch (about 0.4 ms per MB here). Blocks of at least kCachedMinBytes are rounded up to
// one of four size classes per power of two (at most 25% slack) and kept for reuse when freed;
// smaller ones go straight to the system allocator, which already recycles them cheaply.
class CachingHostAllocator final : public Allocator {
 public:
  static constexpr size_t kCachedMinBytes = size_t{1} << 20;
  CachingHostAllocator() = default;
  ~CachingHostAllocator() override;
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
  Device device() const override { return Device::cpu(); }
  AllocatorStats stats() const override;
  void empty_cache() override;
  // The size a request of `nbytes` occupies.
  static size_t block_size(size_t nbytes);

 private:
  mutable std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_blocks_;  // by block size
  AllocatorStats stats_;
};

// The process's host allocator (a CachingHostAllocator); it lives for the whole program.
Allocator& cpu_allocator();

class Storage {
 public:
  Storage(size_t nbytes, Allocator& allocator);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return allocator_->device(); }
  uint64_t version() const { return version_; }
  void bump_version() { ++version_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Allocator* allocator_;
  uint64_t version_ = 0;
};

}  // namespace seg
