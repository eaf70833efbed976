#include "engine/cuda/cuda_allocator.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <sstream>

#include "engine/error.h"
#include "kernels/cuda/cuda_check.h"

namespace seg::cuda {

namespace {

constexpr unsigned char kGuardPattern = 0xA5;

size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

// Makes `device` current for the calls in scope, restoring the previous one.
class DeviceGuard {
 public:
  // Never throws: it also runs on the deallocation path (destructors).
  explicit DeviceGuard(int device) : device_(device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = device;
    if (previous_ != device) cudaSetDevice(device);
  }
  ~DeviceGuard() {
    if (previous_ != device_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  int device_ = 0;
};

std::string mib(size_t bytes) {
  std::ostringstream os;
  os.precision(1);
  os << std::fixed << static_cast<double>(bytes) / (1024.0 * 1024.0) << " MiB";
  return os.str();
}

}  // namespace

CudaCachingAllocator::CudaCachingAllocator(int device, cudaStream_t stream, Device self,
                                           CudaAllocatorOptions options)
    : device_(device), stream_(stream), self_(self), options_(options) {}

CudaCachingAllocator::~CudaCachingAllocator() {
  // Tensors must not outlive their context; whatever is left is returned with the segments.
  DeviceGuard guard(device_);
  cudaStreamSynchronize(stream_);
  for (Block* head : segments_) {
    cudaFree(head->ptr);
    for (Block* b = head; b != nullptr;) {
      Block* next = b->next;
      delete b;
      b = next;
    }
  }
}

size_t CudaCachingAllocator::round_request(size_t nbytes) { return round_up(std::max<size_t>(nbytes, 1), kMinBlock); }

CudaCachingAllocator::Block* CudaCachingAllocator::take_free_block(Pool& pool, size_t size) {
  Block key;
  key.size = size;
  key.ptr = nullptr;
  auto it = pool.lower_bound(&key);
  if (it == pool.end()) return nullptr;
  Block* b = *it;
  pool.erase(it);
  return b;
}

CudaCachingAllocator::Block* CudaCachingAllocator::new_segment(size_t size, bool small, size_t requested) {
  const size_t segment = small ? kSmallSegment
                               : (size < kLargeSegment / 2 ? kLargeSegment : round_up(size, kLargeRound));
  void* ptr = nullptr;
  cudaError_t err = cudaMalloc(&ptr, segment);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear it
    release_free_segments();
    err = cudaMalloc(&ptr, segment);
  }
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    SEG_CHECK(false, "CUDA out of memory on ", self_.str(), ": a tensor of ", requested, " bytes (",
              mib(requested), ") needs a new segment of ", mib(segment), "; this context holds ",
              mib(stats_.allocated), " in tensors and ", mib(stats_.reserved), " reserved (peak ",
              mib(stats_.peak_allocated), "), ", pool_state(), "; the device has ", mib(free_bytes),
              " free of ", mib(total_bytes));
  }
  SEG_CUDA_CHECK(err);
  ++segments_allocated_;
  stats_.reserved += segment;
  Block* b = new Block;
  b->ptr = static_cast<char*>(ptr);
  b->size = segment;
  b->small = small;
  segments_.push_back(b);
  return b;
}

void* CudaCachingAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  const size_t size = round_request(nbytes + options_.guard_bytes);
  const bool small = size <= kSmallRequest;
  DeviceGuard guard(device_);
  std::lock_guard<std::mutex> lock(mutex_);
  Pool& pool = small ? small_pool_ : large_pool_;
  Block* b = take_free_block(pool, size);
  if (b == nullptr) b = new_segment(size, small, nbytes);
  // Split off what is worth keeping.
  const size_t rest = b->size - size;
  if (small ? rest >= kMinBlock : rest > kSmallRequest) {
    Block* r = new Block;
    r->ptr = b->ptr + size;
    r->size = rest;
    r->small = small;
    r->prev = b;
    r->next = b->next;
    if (b->next) b->next->prev = r;
    b->next = r;
    b->size = size;
    pool.insert(r);
  }
  b->free = false;
  b->requested = nbytes;
  live_[b->ptr] = b;
  stats_.allocated += nbytes;
  stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
  if (options_.guard_bytes > 0) {
    SEG_CUDA_CHECK(cudaMemsetAsync(b->ptr + nbytes, kGuardPattern, options_.guard_bytes, stream_));
  }
  return b->ptr;
}

void CudaCachingAllocator::deallocate(void* ptr, size_t nbytes) {
  if (ptr == nullptr) return;
  DeviceGuard guard(device_);
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_.find(ptr);
  if (it == live_.end()) return;  // not ours: nothing sensible to do in a destructor path
  Block* b = it->second;
  live_.erase(it);
  if (options_.guard_bytes > 0) {
    std::vector<unsigned char> tail(options_.guard_bytes);
    if (cudaMemcpyAsync(tail.data(), b->ptr + nbytes, tail.size(), cudaMemcpyDeviceToHost, stream_) ==
            cudaSuccess &&
        cudaStreamSynchronize(stream_) == cudaSuccess) {
      size_t first_bad = tail.size();
      for (size_t i = 0; i < tail.size(); ++i) {
        if (tail[i] != kGuardPattern) {
          first_bad = i;
          break;
        }
      }
      if (first_bad < tail.size()) {
        ++guard_violations_;
        std::ostringstream os;
        os << "a write past the end of a " << nbytes << "-byte allocation, " << first_bad
           << " bytes after it";
        guard_reports_.push_back(os.str());
      }
    }
  }
  stats_.allocated -= b->requested;
  b->requested = 0;
  b->free = true;
  Pool& pool = b->small ? small_pool_ : large_pool_;
  if (b->prev && b->prev->free) {
    Block* p = b->prev;
    pool.erase(p);
    p->size += b->size;
    p->next = b->next;
    if (b->next) b->next->prev = p;
    delete b;
    b = p;
  }
  if (b->next && b->next->free) {
    Block* n = b->next;
    pool.erase(n);
    b->size += n->size;
    b->next = n->next;
    if (n->next) n->next->prev = b;
    delete n;
  }
  pool.insert(b);
}

void CudaCachingAllocator::release_free_segments() {
  std::vector<Block*> kept;
  for (Block* head : segments_) {
    if (head->free && head->next == nullptr) {
      (head->small ? small_pool_ : large_pool_).erase(head);
      cudaFree(head->ptr);  // waits for the device: no queued work can still use it
      stats_.reserved -= head->size;
      delete head;
    } else {
      kept.push_back(head);
    }
  }
  segments_ = std::move(kept);
}

void CudaCachingAllocator::empty_cache() {
  DeviceGuard guard(device_);
  std::lock_guard<std::mutex> lock(mutex_);
  release_free_segments();
}

std::string CudaCachingAllocator::pool_state() const {
  size_t free_small = 0, free_large = 0, largest = 0;
  for (const Block* b : small_pool_) free_small += b->size;
  for (const Block* b : large_pool_) {
    free_large += b->size;
    largest = std::max(largest, b->size);
  }
  std::ostringstream os;
  os << segments_.size() << " segments, " << live_.size() << " live blocks, " << mib(free_small + free_large)
     << " cached free (largest free block " << mib(largest) << ")";
  return os.str();
}

AllocatorStats CudaCachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

int64_t CudaCachingAllocator::guard_violations() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return guard_violations_;
}

std::vector<std::string> CudaCachingAllocator::guard_reports() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return guard_reports_;
}

int64_t CudaCachingAllocator::segments_allocated() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return segments_allocated_;
}

// ---------------------------------------------------------------------------------------------
// pinned host memory

PinnedHostAllocator::~PinnedHostAllocator() {
  cudaStreamSynchronize(compute_);
  cudaStreamSynchronize(copy_);
  empty_cache();
}

void* PinnedHostAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  const size_t block = CachingHostAllocator::block_size(nbytes);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.allocated += nbytes;
    stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
    std::optional<FreeBlock> cached = cache_.take(block, [](const FreeBlock& f) {
      if (cudaEventQuery(f.compute_done) == cudaSuccess &&
          cudaEventQuery(f.copy_done) == cudaSuccess) {
        return true;
      }
      cudaGetLastError();  // cudaErrorNotReady is not an error
      return false;
    });
    if (cached) {
      cudaEventDestroy(cached->compute_done);
      cudaEventDestroy(cached->copy_done);
      return cached->ptr;
    }
    stats_.reserved += block;
  }
  DeviceGuard guard(device_);
  void* p = nullptr;
  cudaError_t err = cudaHostAlloc(&p, block, cudaHostAllocDefault);
  if (err != cudaSuccess) {
    cudaGetLastError();
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.allocated -= nbytes;
    stats_.reserved -= block;
    SEG_CHECK(false, "could not allocate ", nbytes, " bytes of pinned host memory: ", cudaGetErrorString(err));
  }
  return p;
}

void PinnedHostAllocator::deallocate(void* ptr, size_t nbytes) {
  if (ptr == nullptr) return;
  DeviceGuard guard(device_);
  FreeBlock f{ptr, nullptr, nullptr};
  cudaEventCreateWithFlags(&f.compute_done, cudaEventDisableTiming);
  cudaEventCreateWithFlags(&f.copy_done, cudaEventDisableTiming);
  cudaEventRecord(f.compute_done, compute_);
  cudaEventRecord(f.copy_done, copy_);
  std::vector<BlockCache<FreeBlock>::Entry> freed;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.allocated -= nbytes;
    freed = cache_.put(CachingHostAllocator::block_size(nbytes), f);
  }
  release(freed);
}

void PinnedHostAllocator::release(const std::vector<BlockCache<FreeBlock>::Entry>& blocks) {
  if (blocks.empty()) return;
  DeviceGuard guard(device_);
  size_t bytes = 0;
  for (const auto& e : blocks) {
    cudaEventSynchronize(e.block.compute_done);
    cudaEventSynchronize(e.block.copy_done);
    cudaEventDestroy(e.block.compute_done);
    cudaEventDestroy(e.block.copy_done);
    cudaFreeHost(e.block.ptr);
    bytes += e.size;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.reserved -= bytes;
}

AllocatorStats PinnedHostAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void PinnedHostAllocator::empty_cache() {
  std::vector<BlockCache<FreeBlock>::Entry> freed;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    freed = cache_.drain();
  }
  release(freed);
}

size_t PinnedHostAllocator::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cache_.bytes();
}

size_t PinnedHostAllocator::max_cached_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cache_.max_bytes();
}

void PinnedHostAllocator::set_max_cached_bytes(size_t max_bytes) {
  std::vector<BlockCache<FreeBlock>::Entry> freed;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    freed = cache_.set_max_bytes(max_bytes);
  }
  release(freed);
}

}  // namespace seg::cuda
