// Tensor basics: factories, dtypes and conversions, views and their strides, copies, in-place
// updates, and the counter-based random numbers.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include "engine/block_cache.h"
#include "engine/ops.h"
#include "kernels/common/half.h"
#include "kernels/common/philox.h"

using namespace seg;

TEST_CASE("factories: shapes, strides, values") {
  Tensor z = zeros({2, 3});
  CHECK(z.sizes() == Shape{2, 3});
  CHECK(z.strides() == Shape{3, 1});
  CHECK(z.numel() == 6);
  CHECK(z.is_contiguous());
  CHECK(to_vector<float>(z) == std::vector<float>(6, 0.0f));
  CHECK(to_vector<double>(full({2}, 2.5, DType::f64)) == std::vector<double>{2.5, 2.5});
  CHECK(to_vector<int32_t>(ones({3}, DType::i32)) == std::vector<int32_t>{1, 1, 1});
  CHECK(to_vector<int64_t>(arange(4, DType::i64)) == std::vector<int64_t>{0, 1, 2, 3});
  CHECK(to_vector<float>(arange(1.0, 2.0, 0.25)) == std::vector<float>{1.0f, 1.25f, 1.5f, 1.75f});
  Tensor s = scalar_tensor(3.0);
  CHECK(s.dim() == 0);
  CHECK(s.numel() == 1);
  CHECK(s.item() == 3.0);
  Tensor e = empty({0, 4});
  CHECK(e.numel() == 0);
  Tensor e2 = zeros({4, 0, 2});  // empty tensors are contiguous and copy to nothing
  CHECK(e2.is_contiguous());
  CHECK(e2.transpose(0, 2).contiguous().sizes() == Shape{2, 0, 4});
  CHECK(e2.clone().numel() == 0);
  CHECK_THROWS_WITH_AS(from_vector(std::vector<float>{1, 2, 3}, {2, 2}),
                       "from_vector: 3 values for shape (2,2)", Error);
  CHECK_THROWS_WITH_AS(zeros({2, -1}), "empty: negative size in shape (2,-1)", Error);
}

TEST_CASE("dtype conversions, including the 16-bit floats") {
  Tensor x = from_vector(std::vector<float>{1.5f, -2.25f, 3.0f, 1e-3f}, {4});
  CHECK(to_vector<double>(x.to(DType::f64)) == std::vector<double>{1.5, -2.25, 3.0, static_cast<double>(1e-3f)});
  CHECK(to_vector<int32_t>(x.to(DType::i32)) == std::vector<int32_t>{1, -2, 3, 0});
  // bf16 keeps 8 significant bits: 1e-3 rounds to the nearest bf16 value.
  std::vector<float> bf = to_vector<float>(x.to(DType::bf16));
  CHECK(bf[0] == 1.5f);
  CHECK(bf[1] == -2.25f);
  CHECK(bf[3] == bf16_to_f32(f32_to_bf16(1e-3f)));
  std::vector<float> h = to_vector<float>(x.to(DType::f16));
  CHECK(h[3] == f16_to_f32(f32_to_f16(1e-3f)));
  // Every f16 value survives f16 -> f32 -> f16.
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    float f = f16_to_f32(static_cast<uint16_t>(bits));
    if (std::isnan(f)) continue;
    REQUIRE(f32_to_f16(f) == bits);
  }
  // bf16 rounds to nearest even.
  CHECK(f32_to_bf16(bits_f32(0x3f808000u)) == 0x3f80);  // tie, even stays
  CHECK(f32_to_bf16(bits_f32(0x3f818000u)) == 0x3f82);  // tie, odd rounds up
  CHECK(to_vector<uint8_t>(from_vector(std::vector<int32_t>{0, 7, 255}, {3}).to(DType::u8)) ==
        std::vector<uint8_t>{0, 7, 255});
}

TEST_CASE("views share storage and have the right strides") {
  Tensor x = arange(24).reshape({2, 3, 4});
  CHECK(x.strides() == Shape{12, 4, 1});
  Tensor t = x.transpose(0, 2);
  CHECK(t.sizes() == Shape{4, 3, 2});
  CHECK(t.strides() == Shape{1, 4, 12});
  CHECK_FALSE(t.is_contiguous());
  CHECK(t.storage() == x.storage());
  CHECK(to_vector<float>(t.contiguous()).at(1) == 12.0f);

  Tensor n = x.narrow(2, 1, 2);
  CHECK(n.sizes() == Shape{2, 3, 2});
  CHECK(n.offset() == 1);
  CHECK(to_vector<float>(n) == std::vector<float>{1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22});
  CHECK(to_vector<float>(x.slice(1, -2, 3)).size() == 16);
  CHECK(to_vector<float>(x.select(1, 2)) == std::vector<float>{8, 9, 10, 11, 20, 21, 22, 23});

  Tensor v = x.view({6, -1});
  CHECK(v.sizes() == Shape{6, 4});
  CHECK(v.storage() == x.storage());
  CHECK(x.flatten(1).sizes() == Shape{2, 12});
  CHECK(x.unsqueeze(0).sizes() == Shape{1, 2, 3, 4});
  CHECK(x.unsqueeze(-1).sizes() == Shape{2, 3, 4, 1});
  CHECK(x.unsqueeze(0).squeeze(0).sizes() == Shape{2, 3, 4});

  // A transposed tensor cannot be viewed flat; reshape copies instead.
  CHECK_THROWS_AS(t.view({24}), Error);
  Tensor r = t.reshape({24});
  CHECK(r.is_contiguous());
  CHECK(r.storage() != x.storage());

  Tensor e = from_vector(std::vector<float>{1, 2, 3}, {3, 1}).expand({2, 3, 4});
  CHECK(e.strides() == Shape{0, 1, 0});
  CHECK(to_vector<float>(e).at(4) == 2.0f);
  CHECK_THROWS_WITH_AS(zeros({3, 2}).expand({3, 4}), "expand: cannot expand f32 (3,2) cpu to (3,4)", Error);
  CHECK_THROWS_WITH_AS(x.view({5, 5}), "view: cannot reshape (2,3,4) (24 elements) to (5,5)", Error);
  CHECK_THROWS_WITH_AS(x.narrow(1, 2, 2), "narrow: [2, 4) out of range for dim 1 of f32 (2,3,4) cpu", Error);
  CHECK_THROWS_WITH_AS(x.permute({0, 0, 1}), "permute: dim 0 repeated", Error);
  CHECK_THROWS_WITH_AS(x.size(3), "size: dim 3 out of range for a tensor of 3 dims", Error);
}

TEST_CASE("copy_, fill_ and add_ through strided views") {
  Tensor x = zeros({3, 4});
  x.narrow(1, 1, 2).fill_(5.0);
  CHECK(to_vector<float>(x) == std::vector<float>{0, 5, 5, 0, 0, 5, 5, 0, 0, 5, 5, 0});
  Tensor row = from_vector(std::vector<float>{1, 2, 3, 4}, {4});
  x.copy_(row);  // broadcast
  CHECK(to_vector<float>(x.select(0, 2)) == std::vector<float>{1, 2, 3, 4});
  Tensor y = zeros({4, 3});
  y.copy_(x.transpose(0, 1));
  CHECK(to_vector<float>(y.select(0, 3)) == std::vector<float>{4, 4, 4});
  uint64_t v0 = y.storage()->version();
  y.add_(ones({3}), 2.0);
  CHECK(y.storage()->version() > v0);
  CHECK(to_vector<float>(y.select(0, 0)) == std::vector<float>{3, 3, 3});
  y.mul_(0.5);
  CHECK(to_vector<float>(y.select(0, 0)) == std::vector<float>{1.5, 1.5, 1.5});
  // Copy with conversion into a strided destination.
  Tensor d = zeros({2, 2}, DType::f64);
  d.transpose(0, 1).copy_(from_vector(std::vector<int32_t>{1, 2, 3, 4}, {2, 2}));
  CHECK(to_vector<double>(d) == std::vector<double>{1, 3, 2, 4});
}

TEST_CASE("Philox4x32-10 matches the Random123 known-answer vectors") {
  // Counter (c0, c1, c2, c3) = (block lo, block hi, call lo, call hi); key = (seed lo, seed hi).
  Philox4 a = philox4x32_10(0, 0, 0);
  CHECK(a.v[0] == 0x6627e8d5u);
  CHECK(a.v[1] == 0xe169c58du);
  CHECK(a.v[2] == 0xbc57ac4cu);
  CHECK(a.v[3] == 0x9b00dbd8u);
  Philox4 b = philox4x32_10(~0ull, ~0ull, ~0ull);
  CHECK(b.v[0] == 0x408f276du);
  CHECK(b.v[1] == 0x41c83b0eu);
  CHECK(b.v[2] == 0xa20bc7c6u);
  CHECK(b.v[3] == 0x6d5451fdu);
  Philox4 c = philox4x32_10(0x299f31d0a4093822ull, 0x85a308d3243f6a88ull, 0x0370734413198a2eull);
  CHECK(c.v[0] == 0xd16cfe09u);
  CHECK(c.v[1] == 0x94fdccebu);
  CHECK(c.v[2] == 0x5001e420u);
  CHECK(c.v[3] == 0x24126ea1u);
}

TEST_CASE("random fills: reproducible, advancing, with the right statistics") {
  Generator g1(42), g2(42);
  Tensor a = rand({1000}, g1);
  Tensor b = rand({1000}, g2);
  CHECK(to_vector<float>(a) == to_vector<float>(b));
  Tensor a2 = rand({1000}, g1);
  CHECK(to_vector<float>(a) != to_vector<float>(a2));
  CHECK(g1.calls() == 2);
  // Element i depends only on (seed, call, i): a prefix of a longer draw is the shorter draw.
  Generator g3(42);
  Tensor longer = rand({1500}, g3);
  std::vector<float> lv = to_vector<float>(longer);
  std::vector<float> av = to_vector<float>(a);
  CHECK(std::equal(av.begin(), av.end(), lv.begin()));

  // Statistics of n = 200000 draws: the standard error of a mean is ~ 1/sqrt(12 n) = 6.5e-4 for
  // U(0,1) and 1/sqrt(n) = 2.2e-3 for N(0,1); bounds of 5 standard errors never fail by chance.
  constexpr int64_t kN = 200000;
  Generator g(7);
  std::vector<double> u = to_vector<double>(rand({kN}, g));
  double mean = 0, lo = 1, hi = 0;
  for (double v : u) {
    mean += v;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  mean /= kN;
  CHECK(std::abs(mean - 0.5) < 5 * 6.5e-4);
  CHECK(lo >= 0.0);
  CHECK(hi < 1.0);
  std::vector<double> nv = to_vector<double>(randn({kN}, g, DType::f64));
  double m = 0, m2 = 0;
  for (double v : nv) {
    m += v;
    m2 += v * v;
  }
  m /= kN;
  double var = m2 / kN - m * m;
  CHECK(std::abs(m) < 5 * 2.2e-3);
  CHECK(std::abs(var - 1.0) < 5 * std::sqrt(2.0 / kN));
  std::vector<float> bern = to_vector<float>(bernoulli({kN}, 0.3, g));
  double ones_count = 0;
  for (float v : bern) {
    CHECK((v == 0.0f || v == 1.0f));
    ones_count += v;
  }
  CHECK(std::abs(ones_count / kN - 0.3) < 5 * std::sqrt(0.21 / kN));
  Tensor un = empty({3, 4});
  un.transpose(0, 1).uniform_(g, -2.0, -1.0);
  for (float v : to_vector<float>(un)) CHECK((v >= -2.0f && v < -1.0f));
}

TEST_CASE("elementwise ops: values, broadcasting, errors") {
  Tensor a = from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = from_vector(std::vector<float>{10, 20, 30}, {3});
  CHECK(to_vector<float>(a + b) == std::vector<float>{11, 22, 33, 14, 25, 36});
  CHECK(to_vector<float>(a - b) == std::vector<float>{-9, -18, -27, -6, -15, -24});
  CHECK(to_vector<float>(a * b.reshape({1, 3})) == std::vector<float>{10, 40, 90, 40, 100, 180});
  CHECK(to_vector<float>(b / from_vector(std::vector<float>{2, 4}, {2, 1})) ==
        std::vector<float>{5, 10, 15, 2.5, 5, 7.5});
  CHECK(to_vector<float>(relu(a - 3.0)) == std::vector<float>{0, 0, 0, 1, 2, 3});
  CHECK(to_vector<float>(abs(-a)) == to_vector<float>(a));
  CHECK(to_vector<float>(pow_scalar(a, 2.0)) == std::vector<float>{1, 4, 9, 16, 25, 36});
  CHECK(to_vector<float>(2.0 - a) == std::vector<float>{1, 0, -1, -2, -3, -4});
  CHECK(to_vector<float>(sqrt(a * a)) == to_vector<float>(a));
  CHECK(to_vector<float>(sigmoid(zeros({2}))) == std::vector<float>{0.5f, 0.5f});
  CHECK(std::abs(exp(ones({1})).item() - std::exp(1.0)) < 1e-6);
  CHECK(std::abs(log(full({1}, std::exp(2.0))).item() - 2.0) < 1e-6);
  CHECK(std::abs(tanh(ones({1})).item() - std::tanh(1.0)) < 1e-6);
  CHECK_THROWS_WITH_AS(a + zeros({2}), "add: shapes (2,3) and (2) do not broadcast", Error);
  CHECK_THROWS_WITH_AS(a * zeros({3}, DType::f64),
                       "mul: tensors of different dtypes: f32 (2,3) cpu and f64 (3) cpu", Error);
  CHECK_THROWS_WITH_AS(relu(zeros({2}, DType::i32)), "relu: input must be a floating tensor, got i32 (2) cpu",
                       Error);
}

TEST_CASE("reductions and argmax") {
  Tensor x = arange(24, DType::f64).reshape({2, 3, 4});
  CHECK(sum(x).item() == 276.0);
  CHECK(to_vector<double>(sum(x, {1})) ==
        std::vector<double>{12, 15, 18, 21, 48, 51, 54, 57});
  CHECK(sum(x, {0, 2}, true).sizes() == Shape{1, 3, 1});
  CHECK(to_vector<double>(sum(x, {0, 2})) == std::vector<double>{60, 92, 124});
  CHECK(to_vector<double>(mean(x, {-1})) == std::vector<double>{1.5, 5.5, 9.5, 13.5, 17.5, 21.5});
  CHECK(mean(x).item() == 11.5);
  CHECK(sum(x.transpose(0, 2), {0}).sizes() == Shape{3, 2});
  CHECK(to_vector<int32_t>(sum(ones({5, 7}, DType::i32))) == std::vector<int32_t>{35});
  // Long reductions are chunked; the result must not depend on it.
  Tensor big = ones({3, 100000});
  CHECK(to_vector<float>(sum(big, {1})) == std::vector<float>{100000, 100000, 100000});
  CHECK(sum(big).item() == 300000.0);

  Tensor s = from_vector(std::vector<float>{1, 5, 5, 0, 2, -1, 7, 7}, {2, 2, 2});
  CHECK(to_vector<int32_t>(argmax(s, 1)) == std::vector<int32_t>{1, 0, 1, 1});
  CHECK(to_vector<int32_t>(argmax(s, -1)) == std::vector<int32_t>{1, 0, 0, 0});
  CHECK(argmax(s, 0, true).sizes() == Shape{1, 2, 2});
  Tensor nan = from_vector(std::vector<float>{1, NAN, 3}, {3});
  CHECK(argmax(nan, 0).item() == 1.0);
  CHECK_THROWS_WITH_AS(sum(x, {1, 1}), "sum: repeated dim in reduction", Error);
}

TEST_CASE("pad2d and cat: values and errors") {
  Tensor x = from_vector(std::vector<float>{1, 2, 3, 4}, {1, 1, 2, 2});
  Tensor p = pad2d(x, {1, 0, 0, 1}, -1.0);
  CHECK(p.sizes() == Shape{1, 1, 3, 3});
  CHECK(to_vector<float>(p) == std::vector<float>{-1, 1, 2, -1, 3, 4, -1, -1, -1});
  Tensor c = pad2d(x, {-1, 0, 0, -1});
  CHECK(to_vector<float>(c) == std::vector<float>{2});
  Tensor y = from_vector(std::vector<float>{5, 6}, {1, 1, 1, 2});
  CHECK(to_vector<float>(cat({x, y}, 2)) == std::vector<float>{1, 2, 3, 4, 5, 6});
  CHECK_THROWS_WITH_AS(cat({x, y}, 1),
                       "cat: input 1 (1,1,1,2) and input 0 (1,1,2,2) differ in dim 2 (concatenating along dim 1)",
                       Error);
  CHECK_THROWS_WITH_AS(pad2d(x, {1, 2}), "pad2d: expected 4 pads {left, right, top, bottom}, got 2", Error);
}

TEST_CASE("the caching host allocator reuses large blocks and keeps statistics") {
  CachingHostAllocator a;
  const size_t big = 3 * (size_t{1} << 20) + 123;
  CHECK(CachingHostAllocator::block_size(big) == 3.5 * (1 << 20));  // classes 2^k * {1, 1.25, 1.5, 1.75}
  CHECK(CachingHostAllocator::block_size(100) == 128);
  void* p = a.allocate(big);
  CHECK(reinterpret_cast<uintptr_t>(p) % 64 == 0);
  CHECK(a.stats().allocated == big);
  a.deallocate(p, big);
  CHECK(a.stats().allocated == 0);
  CHECK(a.stats().reserved == CachingHostAllocator::block_size(big));
  void* q = a.allocate(big + 1000);  // same size class: the cached block comes back
  CHECK(q == p);
  void* r = a.allocate(1000);
  CHECK(a.stats().peak_allocated == big + 2000);
  a.deallocate(q, big + 1000);
  a.deallocate(r, 1000);
  a.empty_cache();
  CHECK(a.stats().reserved == 0);
  CHECK(a.stats().allocated == 0);
}

TEST_CASE("the caching host allocator's cache is bounded, least recently freed blocks go first") {
  constexpr size_t kMiB = size_t{1} << 20;
  CachingHostAllocator a(3 * kMiB);
  CHECK(a.max_cached_bytes() == 3 * kMiB);
  void* x1 = a.allocate(kMiB);             // class 1 MiB
  void* x2 = a.allocate(kMiB + kMiB / 4);  // class 1.25 MiB
  void* x3 = a.allocate(kMiB + kMiB / 2);  // class 1.5 MiB
  a.deallocate(x1, kMiB);
  a.deallocate(x2, kMiB + kMiB / 4);
  CHECK(a.cached_bytes() == 2 * kMiB + kMiB / 4);
  a.deallocate(x3, kMiB + kMiB / 2);  // 3.75 MiB would pass the bound: x1, the oldest, is freed
  CHECK(a.cached_bytes() == 2 * kMiB + 3 * kMiB / 4);
  CHECK(a.stats().reserved == a.cached_bytes());
  CHECK(a.allocate(kMiB + kMiB / 4) == x2);  // still cached
  CHECK(a.stats().reserved == 2 * kMiB + 3 * kMiB / 4);
  void* y1 = a.allocate(kMiB);  // no longer cached: new memory
  CHECK(a.stats().reserved == 3 * kMiB + 3 * kMiB / 4);
  a.deallocate(y1, kMiB);
  a.deallocate(x2, kMiB + kMiB / 4);
  CHECK(a.cached_bytes() <= 3 * kMiB);
  // A block larger than the whole bound is never kept.
  a.deallocate(a.allocate(4 * kMiB), 4 * kMiB);
  CHECK(a.cached_bytes() <= 3 * kMiB);
  CHECK(a.stats().reserved == a.cached_bytes());
  // Lowering the bound gives memory back at once; 0 turns caching off.
  a.set_max_cached_bytes(kMiB);
  CHECK(a.cached_bytes() <= kMiB);
  a.set_max_cached_bytes(0);
  CHECK(a.cached_bytes() == 0);
  CHECK(a.stats().reserved == 0);
  a.deallocate(a.allocate(2 * kMiB), 2 * kMiB);
  CHECK(a.stats().reserved == 0);
}

TEST_CASE("a long run through many shapes holds at most its live memory plus the cache bound") {
  constexpr size_t kMiB = size_t{1} << 20;
  constexpr size_t kBound = 16 * kMiB;
  CachingHostAllocator a(kBound);
  // A live "model" of 4 MiB, and per step an activation whose size changes every step (a random
  // crop): 200 distinct sizes over 19 size classes. Unbounded, every class would stay cached.
  void* model = a.allocate(4 * kMiB);
  size_t most_reserved = 0;
  for (size_t step = 0; step < 200; ++step) {
    const size_t n = kMiB + step * (kMiB / 8) + 4096;
    void* act = a.allocate(n);
    std::memset(act, 1, 64);
    a.deallocate(act, n);
    most_reserved = std::max(most_reserved, a.stats().reserved);
    CHECK(a.cached_bytes() <= kBound);
  }
  const size_t largest_block = CachingHostAllocator::block_size(kMiB + 199 * (kMiB / 8) + 4096);
  CHECK(most_reserved <= 4 * kMiB + kBound + largest_block);
  a.deallocate(model, 4 * kMiB);
  a.empty_cache();
  CHECK(a.stats().reserved == 0);
}

TEST_CASE("the process's host allocator has a finite cache bound") {
  auto* host = dynamic_cast<CachingHostAllocator*>(&cpu_allocator());
  REQUIRE(host != nullptr);
  CHECK(host->max_cached_bytes() == CachingHostAllocator::default_max_cached_bytes());
  CHECK(host->max_cached_bytes() > 0);
  CHECK(host->max_cached_bytes() < std::numeric_limits<size_t>::max() / 2);
}

TEST_CASE(
    "BlockCache: most recently freed first, a block passing a usability test, eviction order") {
  BlockCache<int> cache(10);
  CHECK(cache.put(4, 1).empty());
  CHECK(cache.put(4, 2).empty());
  CHECK(cache.put(2, 3).empty());
  CHECK(cache.bytes() == 10);
  // Most recently freed first, skipping blocks that are not usable yet (a pinned block whose copy
  // is still queued).
  CHECK(cache.take(4, [](int b) { return b != 2; }) == std::optional<int>(1));
  CHECK(cache.take(3) == std::nullopt);
  CHECK(cache.put(4, 4).empty());
  // 10 held; a block of 6 pushes out the oldest until it fits: 2 (size 4), then 3 (size 2).
  std::vector<BlockCache<int>::Entry> out = cache.put(6, 5);
  REQUIRE(out.size() == 2);
  CHECK(out[0].block == 2);
  CHECK(out[1].block == 3);
  CHECK(cache.bytes() == 10);
  out = cache.put(11, 6);  // larger than the bound: handed straight back
  REQUIRE(out.size() == 1);
  CHECK(out[0].block == 6);
  out = cache.drain();
  CHECK(out.size() == 2);
  CHECK(cache.bytes() == 0);
  CHECK(cache.count() == 0);
}

TEST_CASE("a binary built with or without CUDA runs on a machine without a GPU") {
  const int gpus = cuda_device_count();  // 0 without a GPU or without the CUDA backend, never a crash
  CHECK(gpus >= 0);
  CHECK(parse_device("cuda:1") == Device::cuda(1));
  CHECK_THROWS_WITH_AS(parse_device("gpu"), "invalid device 'gpu' (expected cpu, cuda or cuda:N)", Error);
  if (gpus == 0) {
    CHECK_THROWS_AS(zeros({2}).to(Device::cuda(0)), Error);
    CHECK_THROWS_AS(zeros({2}, DType::f32, Device::cuda(0)), Error);
  }
}
