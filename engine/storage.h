// Storage: one allocation on one device, shared by every tensor that views it. It carries the
// version counter that autograd uses to detect in-place changes to tensors saved for backward.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "engine/block_cache.h"
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
// large activations and gradients every iteration, and fresh pages from the system cost a page
// fault each on first touch (about 0.4 ms per MB here). Blocks of at least kCachedMinBytes are
// rounded up to one of four size classes per power of two (at most 25% slack) and kept for reuse
// when freed; smaller ones go straight to the system allocator, which already recycles them
// cheaply.
//
// The cache is bounded (engine/block_cache.h): past max_cached_bytes() the least recently freed
// blocks go back to the system, so a run that allocates ever new shapes holds at most its live
// memory plus the bound. empty_cache() gives back every cached block; set_max_cached_bytes()
// changes the bound (0 turns caching off).
class CachingHostAllocator final : public Allocator {
 public:
  static constexpr size_t kCachedMinBytes = size_t{1} << 20;
  // A quarter of the machine's physical memory (4 GiB when the system does not say): room for a
  // CPU training step's activations and gradients, which are freed and allocated again each
  // iteration, while the cache never takes more than that from everything else.
  static size_t default_max_cached_bytes();

  explicit CachingHostAllocator(size_t max_cached_bytes = default_max_cached_bytes());
  ~CachingHostAllocator() override;
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
  Device device() const override { return Device::cpu(); }
  AllocatorStats stats() const override;
  void empty_cache() override;
  // Bytes in freed blocks kept for reuse (counted in stats().reserved), and their bound.
  size_t cached_bytes() const;
  size_t max_cached_bytes() const;
  // Changes the bound; blocks over the new one are given back at once.
  void set_max_cached_bytes(size_t max_bytes);
  // The size a request of `nbytes` occupies.
  static size_t block_size(size_t nbytes);

 private:
  // Frees blocks the cache let go of (outside the lock) and takes them off `reserved`.
  void release(const std::vector<BlockCache<void*>::Entry>& blocks);

  mutable std::mutex mutex_;
  BlockCache<void*> cache_;  // freed blocks by block size
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
