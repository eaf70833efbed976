// Caching allocators for one CUDA device: device memory for tensors and scratch, and pinned host
// memory for loading.
//
// Design notes (device allocator)
// - cudaMalloc and cudaFree are slow and synchronise the device, so memory is taken from the driver
//   in segments and kept: freed blocks go back to a free list and are reused, split and merged.
// - Two pools. Small requests (<= 1 MiB) are carved from 2 MiB segments; large ones get segments of
//   20 MiB (requests under 10 MiB) or the request rounded up to 2 MiB. A free block is split when
//   the rest is worth keeping (>= 512 B small, > 1 MiB large); neighbours merge when both are free.
//   Best fit: the smallest free block that holds the request.
// - Stream-ordered reuse: every block belongs to the context's compute stream, on which all kernels
//   run. A block freed on the host may be handed out again at once, because the work that uses it
//   next is queued on the same stream behind the work that used it last.
// - Out of memory: the allocator returns its wholly free segments to the driver and tries again;
//   then it throws an error naming the request, what it holds, and what the device has free.
// - Guard bytes (tests): with guard_bytes > 0 each block gets that many bytes after the request,
//   filled with a pattern at allocation and checked at deallocation; a changed guard means a kernel
//   wrote out of bounds and is counted with a description (guard_violations()).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/storage.h"

namespace seg::cuda {

struct CudaAllocatorOptions {
  size_t guard_bytes = 0;
};

class CudaCachingAllocator final : public Allocator {
 public:
  static constexpr size_t kMinBlock = 512;
  static constexpr size_t kSmallRequest = size_t{1} << 20;    // <= 1 MiB: small pool
  static constexpr size_t kSmallSegment = size_t{2} << 20;    // 2 MiB
  static constexpr size_t kLargeSegment = size_t{20} << 20;   // for large requests < 10 MiB
  static constexpr size_t kLargeRound = size_t{2} << 20;

  CudaCachingAllocator(int device, cudaStream_t stream, Device self, CudaAllocatorOptions options = {});
  ~CudaCachingAllocator() override;

  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
  Device device() const override { return self_; }
  AllocatorStats stats() const override;
  void empty_cache() override;

  // Guard-byte checking (tests).
  int64_t guard_violations() const;
  std::vector<std::string> guard_reports() const;
  // Number of cudaMalloc calls so far (reuse shows as a flat count).
  int64_t segments_allocated() const;

 private:
  struct Block {
    char* ptr = nullptr;
    size_t size = 0;       // bytes of this block
    size_t requested = 0;  // bytes asked for (0 when free)
    bool small = false;
    bool free = true;
    Block* prev = nullptr;  // neighbours within the segment
    Block* next = nullptr;
  };
  struct BySize {
    bool operator()(const Block* a, const Block* b) const {
      return a->size != b->size ? a->size < b->size : a->ptr < b->ptr;
    }
  };
  using Pool = std::set<Block*, BySize>;

  static size_t round_request(size_t nbytes);
  Block* take_free_block(Pool& pool, size_t size);
  Block* new_segment(size_t size, bool small, size_t requested);
  void release_free_segments();  // lock held
  std::string pool_state() const;  // lock held

  const int device_;
  const cudaStream_t stream_;
  const Device self_;
  const CudaAllocatorOptions options_;
  mutable std::mutex mutex_;
  Pool small_pool_, large_pool_;
  std::unordered_map<void*, Block*> live_;
  std::vector<Block*> segments_;  // first block of each segment
  AllocatorStats stats_;
  int64_t segments_allocated_ = 0;
  int64_t guard_violations_ = 0;
  std::vector<std::string> guard_reports_;
};

// Page-locked host memory (for asynchronous host-to-device copies), cached by size class like the
// host allocator's and bounded the same way (engine/block_cache.h: past the bound the least
// recently freed blocks are given back). A freed block may still be the source of a copy queued on
// the device, so deallocation records an event on both of the context's streams; the block is
// reused only once both events have completed, and given back only after waiting for them.
class PinnedHostAllocator final : public Allocator {
 public:
  // Page-locked memory is taken from what the system can page, so the cache keeps less than the
  // pageable host cache: 2 GiB holds the loader's window of ready batches at the study's sizes
  // (e.g. eight batches of 8 full 2048x1024 RGB frames in f32, 1.6 GiB).
  static constexpr size_t kDefaultMaxCachedBytes = size_t{2} << 30;

  PinnedHostAllocator(int device, cudaStream_t compute, cudaStream_t copy,
                      size_t max_cached_bytes = kDefaultMaxCachedBytes)
      : device_(device), compute_(compute), copy_(copy), cache_(max_cached_bytes) {}
  ~PinnedHostAllocator() override;
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
  Device device() const override { return Device::cpu(); }
  AllocatorStats stats() const override;
  void empty_cache() override;
  // Bytes in freed blocks kept for reuse, their bound, and a new bound (applied at once).
  size_t cached_bytes() const;
  size_t max_cached_bytes() const;
  void set_max_cached_bytes(size_t max_bytes);

 private:
  struct FreeBlock {
    void* ptr = nullptr;
    cudaEvent_t compute_done = nullptr;
    cudaEvent_t copy_done = nullptr;
  };
  // Waits for the blocks' events, frees them (outside the lock) and takes them off `reserved`.
  void release(const std::vector<BlockCache<FreeBlock>::Entry>& blocks);

  const int device_;
  const cudaStream_t compute_, copy_;
  mutable std::mutex mutex_;
  BlockCache<FreeBlock> cache_;  // freed blocks by block size
  AllocatorStats stats_;
};

}  // namespace seg::cuda
