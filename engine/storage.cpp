#include "engine/storage.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <optional>
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

size_t CachingHostAllocator::default_max_cached_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page_size = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page_size <= 0) return size_t{4} << 30;
  return static_cast<size_t>(pages) * static_cast<size_t>(page_size) / 4;
}

CachingHostAllocator::CachingHostAllocator(size_t max_cached_bytes) : cache_(max_cached_bytes) {}

CachingHostAllocator::~CachingHostAllocator() { empty_cache(); }

void* CachingHostAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  const size_t block = block_size(nbytes);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.allocated += nbytes;
    stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
    if (block >= kCachedMinBytes) {
      if (std::optional<void*> p = cache_.take(block)) return *p;
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
  std::vector<BlockCache<void*>::Entry> freed;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.allocated -= nbytes;
    if (block >= kCachedMinBytes) {
      freed = cache_.put(block, ptr);
    } else {
      freed.push_back({block, ptr});
    }
  }
  release(freed);
}

void CachingHostAllocator::release(const std::vector<BlockCache<void*>::Entry>& blocks) {
  if (blocks.empty()) return;
  size_t bytes = 0;
  for (const auto& e : blocks) {
    std::free(e.block);
    bytes += e.size;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.reserved -= bytes;
}

AllocatorStats CachingHostAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void CachingHostAllocator::empty_cache() {
  std::vector<BlockCache<void*>::Entry> freed;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    freed = cache_.drain();
  }
  release(freed);
}

size_t CachingHostAllocator::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cache_.bytes();
}

size_t CachingHostAllocator::max_cached_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cache_.max_bytes();
}

void CachingHostAllocator::set_max_cached_bytes(size_t max_bytes) {
  std::vector<BlockCache<void*>::Entry> freed;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    freed = cache_.set_max_bytes(max_bytes);
  }
  release(freed);
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
