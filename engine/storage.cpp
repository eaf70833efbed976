#include "engine/storage.h"

#include <bit>
#include <cstdlib>
#include <string>

#include "engine/error.h"

namespace seg {

namespace {

constexpr size_t kAlign = 64;

void* system_allocate(size_t bytes) {
  void* p = std::aligned_alloc(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
  SEG_CHECK(p != nullptr, "out of host memory: could not allocate ", bytes, " bytes");
  return p;
}

}  // namespace

size_t CachingHostAllocator::block_size(size_t nbytes) {
  if (nbytes < kCachedMinBytes) return (nbytes + kAlign - 1) / kAlign * kAlign;
  // Four classes per power of two: 2^k * {1, 1.25, 1.5, 1.75}.
  const size_t top = std::bit_floor(nbytes);
  const size_t quarter = top / 4;
  return (nbytes + quarter - 1) / quarter * quarter;
}

CachingHostAllocator::~CachingHostAllocator() { empty_cache(); }

void* CachingHostAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  const size_t block = block_size(nbytes);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.allocated += nbytes;
    stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
    if (block >= kCachedMinBytes) {
      auto it = free_blocks_.find(block);
      if (it != free_blocks_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        return p;
      }
    }
    stats_.reserved += block;
  }
  try {
    return system_allocate(block);
  } catch (...) {
    // The system is out of memory: give back what the cache holds and try once more.
    empty_cache();
    try {
      return system_allocate(block);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      stats_.allocated -= nbytes;
      stats_.reserved -= block;
      throw;
    }
  }
}

void CachingHostAllocator::deallocate(void* ptr, size_t nbytes) {
  if (ptr == nullptr) return;
  const size_t block = block_size(nbytes);
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.allocated -= nbytes;
  if (block >= kCachedMinBytes) {
    free_blocks_[block].push_back(ptr);
    return;
  }
  stats_.reserved -= block;
  std::free(ptr);
}

AllocatorStats CachingHostAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void CachingHostAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [block, ptrs] : free_blocks_) {
    for (void* p : ptrs) std::free(p);
    stats_.reserved -= block * ptrs.size();
  }
  free_blocks_.clear();
}

Allocator& cpu_allocator() {
  // Never destroyed: tensors in static storage may be freed after any destructor of ours would run.
  static CachingHostAllocator* allocator = new CachingHostAllocator();
  return *allocator;
}

Storage::Storage(size_t nbytes, Allocator& allocator)
    : data_(allocator.allocate(nbytes)), nbytes_(nbytes), allocator_(&allocator) {}

Storage::~Storage() {
  if (data_) allocator_->deallocate(data_, nbytes_);
}

}  // namespace seg
