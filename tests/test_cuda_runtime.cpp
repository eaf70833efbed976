// The CUDA runtime: contexts, the caching allocator (reuse, splitting, statistics, out-of-memory
// errors, guard bytes), pinned memory and transfers between devices (label gpu; the error paths
// that need no GPU run everywhere in a CUDA build).
#include <doctest/doctest.h>

#include <string>

#include "engine/ops.h"
#include "tests/support/parity.h"
#include "tests/support/reference.h"

#ifdef SEG_WITH_CUDA
#include <cuda_runtime.h>

#include "engine/cuda/cuda_context.h"
#endif

using namespace seg;

TEST_CASE("a CUDA device without a context cannot allocate, with a clear error") {
  CHECK_THROWS_WITH_AS(empty({2}, DType::f32, Device::cuda(0)), doctest::Contains("cuda:0"), Error);
  CHECK_THROWS_WITH_AS(zeros({2}).to(Device::cuda(0)), doctest::Contains("cuda:0"), Error);
}

#ifdef SEG_WITH_CUDA

TEST_CASE("creating a context names the device when it cannot be used") {
  const int count = cuda_device_count();
  CHECK_THROWS_WITH_AS(cuda::CudaContext::create(count + 3), doctest::Contains("cuda:"), Error);
  if (count == 0) CHECK_THROWS_AS(cuda::CudaContext::create(0), Error);
}

TEST_CASE("caching allocator: reuse, splitting, merging, statistics") {
  if (!test::have_gpu()) return;
  auto ctx = cuda::CudaContext::create(0);
  cuda::CudaCachingAllocator& a = ctx->device_allocator();
  // Small blocks come out of one 2 MiB segment and go back to it.
  void* p1 = a.allocate(1000);
  void* p2 = a.allocate(3000);
  void* p3 = a.allocate(100);
  CHECK(a.segments_allocated() == 1);
  CHECK(a.stats().allocated == 4100);
  CHECK(static_cast<char*>(p2) - static_cast<char*>(p1) == 1024);  // 512-byte granules
  a.deallocate(p2, 3000);
  void* p4 = a.allocate(2500);  // fits the freed block
  CHECK(p4 == p2);
  a.deallocate(p1, 1000);
  a.deallocate(p3, 100);
  a.deallocate(p4, 2500);
  CHECK(a.stats().allocated == 0);
  // Freed neighbours merged back into the whole segment: the largest small request fits it again.
  void* whole = a.allocate(cuda::CudaCachingAllocator::kSmallRequest);
  CHECK(whole == p1);
  CHECK(a.segments_allocated() == 1);
  a.deallocate(whole, cuda::CudaCachingAllocator::kSmallRequest);
  // Large blocks: freed memory is reused without new segments.
  for (int i = 0; i < 5; ++i) {
    void* big = a.allocate(size_t{64} << 20);
    a.deallocate(big, size_t{64} << 20);
  }
  CHECK(a.segments_allocated() == 2);
  CHECK(a.stats().peak_allocated == size_t{64} << 20);
  a.empty_cache();
  CHECK(a.stats().reserved == 0);
}

TEST_CASE("out of memory names the request and the pool") {
  if (!test::have_gpu()) return;
  auto ctx = cuda::CudaContext::create(0);
  size_t free_bytes = 0, total = 0;
  REQUIRE(cudaMemGetInfo(&free_bytes, &total) == cudaSuccess);
  const int64_t too_many = static_cast<int64_t>(total / 4) * 2;  // floats: 2x the device
  CHECK_THROWS_WITH_AS(empty({too_many}, DType::f32, ctx->device()), doctest::Contains("CUDA out of memory on cuda:0"),
                       Error);
  // The message names the request and what the pool holds.
  const std::string request = "a tensor of " + std::to_string(too_many * 4) + " bytes";
  CHECK_THROWS_WITH_AS(empty({too_many}, DType::f32, ctx->device()), doctest::Contains(request.c_str()), Error);
  CHECK_THROWS_WITH_AS(empty({too_many}, DType::f32, ctx->device()), doctest::Contains("cached free"), Error);
  // The context still works afterwards.
  Tensor x = ones({1000}, DType::f32, ctx->device());
  CHECK(sum(x).item() == 1000.0);
}

TEST_CASE("guard bytes catch a write past the end of an allocation") {
  if (!test::have_gpu()) return;
  cuda::CudaContextOptions options;
  options.guard_bytes = 64;
  auto ctx = cuda::CudaContext::create(0, options);
  cuda::CudaCachingAllocator& a = ctx->device_allocator();
  void* ok = a.allocate(1000);
  a.deallocate(ok, 1000);
  CHECK(a.guard_violations() == 0);
  void* bad = a.allocate(1000);
  // The guard pattern is written on the context's (non-blocking) stream, which does not order
  // against the legacy stream of cudaMemset: let it land first.
  ctx->synchronize();
  REQUIRE(cudaMemset(static_cast<char*>(bad) + 1000, 0, 4) == cudaSuccess);  // 4 bytes too far
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  a.deallocate(bad, 1000);
  CHECK(a.guard_violations() == 1);
}

TEST_CASE("transfers: every dtype round-trips exactly; strided sources; autograd across devices") {
  if (!test::have_gpu()) return;
  auto ctx = cuda::CudaContext::create(0);
  const Device gpu = ctx->device();
  Generator g(3);
  Tensor x = randn({3, 5, 7}, g);
  for (DType dt : {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i32, DType::i64, DType::u8}) {
    CAPTURE(dtype_name(dt));
    Tensor h = (dt == DType::u8 ? abs(x) * 10.0 : x * 10.0).to(dt);
    Tensor back = h.to(gpu).to(Device::cpu());
    CHECK(back.dtype() == dt);
    CHECK(to_vector<double>(back) == to_vector<double>(h));
  }
  Tensor t = x.transpose(0, 2);  // strided source
  CHECK(to_vector<float>(t.to(gpu).to(Device::cpu())) == to_vector<float>(t.contiguous()));
  Tensor dst = zeros({7, 5, 3}, DType::f32, gpu);
  dst.copy_(t);  // host to device through copy_
  CHECK(to_vector<float>(dst) == to_vector<float>(t.contiguous()));

  Tensor leaf = x.clone();
  leaf.set_requires_grad(true);
  Tensor y = sum(leaf.to(gpu) * 3.0);
  y.backward();
  REQUIRE(leaf.grad().defined());
  CHECK(leaf.grad().device().is_cpu());
  for (float v : to_vector<float>(leaf.grad())) CHECK(v == 3.0f);
}

TEST_CASE("TF32 switch and pinned host memory") {
  if (!test::have_gpu()) return;
  auto ctx = cuda::CudaContext::create(0);
  ctx->set_allow_tf32(false);
  CHECK_FALSE(ctx->env().allow_tf32);
  ctx->set_allow_tf32(true);
  CHECK(ctx->env().allow_tf32 == (ctx->properties().major >= 8));
  cuda::PinnedHostAllocator& pinned = ctx->pinned_allocator();
  void* p = pinned.allocate(size_t{3} << 20);
  cudaPointerAttributes attr{};
  REQUIRE(cudaPointerGetAttributes(&attr, p) == cudaSuccess);
  CHECK(attr.type == cudaMemoryTypeHost);
  pinned.deallocate(p, size_t{3} << 20);
  ctx->synchronize();
  REQUIRE(cudaStreamSynchronize(ctx->copy_stream()) == cudaSuccess);  // both events have completed
  void* q = pinned.allocate(size_t{3} << 20);  // the copies are done: the block comes back
  CHECK(q == p);
  pinned.deallocate(q, size_t{3} << 20);
}

TEST_CASE("the pinned host cache is bounded and gives memory back") {
  if (!test::have_gpu()) return;
  cuda::CudaContextOptions options;
  options.pinned_cache_bytes = size_t{8} << 20;
  auto ctx = cuda::CudaContext::create(0, options);
  cuda::PinnedHostAllocator& pinned = ctx->pinned_allocator();
  CHECK(pinned.max_cached_bytes() == options.pinned_cache_bytes);
  // Many sizes, each freed after use: the cache never holds more than the bound.
  for (size_t mib = 1; mib <= 12; ++mib) {
    const size_t n = mib << 20;
    pinned.deallocate(pinned.allocate(n), n);
    CHECK(pinned.cached_bytes() <= options.pinned_cache_bytes);
    CHECK(pinned.stats().reserved == pinned.cached_bytes());
  }
  CHECK(pinned.cached_bytes() > 0);
  pinned.set_max_cached_bytes(0);
  CHECK(pinned.cached_bytes() == 0);
  CHECK(pinned.stats().reserved == 0);
}

#endif
