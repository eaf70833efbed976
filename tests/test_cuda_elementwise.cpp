// CUDA elementwise family and optimiser updates against the CPU (label gpu; skipped without a GPU).
//
// What the gradient-check parity test (test_cuda_parity) cannot cover: ops that are not
// differentiable (fill, arange, random, argmax, optimizer_step), dtypes other than f32 (every
// copy/cast pair, bf16/f16 rounding, integer sums), and the exact-bit requirements:
// - fill, copy, arange, uniform and bernoulli draws, argmax and the optimiser updates must equal
//   the CPU's results bit for bit (two NaNs count as equal whatever their payload);
// - normal draws go through the device's log/cos/sin, which may differ from glibc's in the last
//   bit of an f64: the f32 values agree to 1 ulp (kNormalUlps), most exactly;
// - sums accumulate in f64 on both devices in different orders: within kSumTolerance.
// It also runs the 64-bit index paths (views and tensors past 2^31 elements, several GB of GPU
// memory) and the f64 instantiations of the pooling and resizing kernels, which the parity suite
// (f32 only) never reaches.
// Every test also checks the allocator's guard bytes after the GPU tensors are freed.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/optim/optimizer.h"
#include "kernels/common/half.h"
#include "tests/support/parity.h"

using namespace seg;
using namespace seg::test;

namespace {

constexpr DType kAllDTypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16,
                                DType::i32, DType::i64, DType::u8};

// f32 normal draws: the device's f64 log/cos/sin may differ from glibc's by an ulp or two of an
// f64, which moves the f32 result by at most one f32 ulp (and only near a rounding boundary).
constexpr double kNormalUlps = 1.0;
// f64 normal draws: the same f64 ulps, carried through sqrt and the fma: a few ulps of the value.
constexpr double kNormalF64Rel = 1e-14;
// Sums: both devices accumulate in f64 (f32 inputs), in different orders; the f64 error is ~1e-16
// of the sum of magnitudes, so the results agree to an f32 ulp, far below this bound.
constexpr double kSumTolerance = 1e-6;
// f64 pooling and resizing: averages and the resizing adjoint sum in different orders on the two
// devices (and the CPU fuses its multiply-adds), ~1e-16 relative per operation; 1e-12 of the
// largest magnitude still flags any indexing or formula error, which is O(1) of it.
constexpr double kF64Tolerance = 1e-12;

std::vector<uint8_t> bytes_of(const Tensor& t) {
  Tensor c = t.detach().to(Device::cpu()).contiguous();
  std::vector<uint8_t> b(static_cast<size_t>(c.numel()) * dtype_size(c.dtype()));
  if (!b.empty()) std::memcpy(b.data(), c.data_ptr(), b.size());
  return b;
}

double decode(const uint8_t* p, DType dt) {
  switch (dt) {
    case DType::f32: {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case DType::f64: {
      double v;
      std::memcpy(&v, p, 8);
      return v;
    }
    case DType::bf16: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return bf16_to_f32(v);
    }
    case DType::f16: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return f16_to_f32(v);
    }
    case DType::i32: {
      int32_t v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case DType::i64: {
      int64_t v;
      std::memcpy(&v, p, 8);
      return static_cast<double>(v);
    }
    case DType::u8: return *p;
  }
  return 0.0;
}

// Bit-for-bit equality of every element (NaN == NaN whatever the payload).
void check_identical(const Tensor& cpu, const Tensor& gpu, const std::string& what) {
  REQUIRE_MESSAGE(cpu.sizes() == gpu.sizes(), what, ": cpu ", cpu.str(), " vs gpu ", gpu.str());
  REQUIRE_MESSAGE(cpu.dtype() == gpu.dtype(), what, ": cpu ", cpu.str(), " vs gpu ", gpu.str());
  const DType dt = cpu.dtype();
  const size_t es = dtype_size(dt);
  const std::vector<uint8_t> a = bytes_of(cpu), b = bytes_of(gpu);
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < a.size() / es; ++i) {
    if (std::memcmp(&a[i * es], &b[i * es], es) == 0) continue;
    const double x = decode(&a[i * es], dt), y = decode(&b[i * es], dt);
    if (is_floating(dt) && std::isnan(x) && std::isnan(y)) continue;
    if (bad++ == 0) first = static_cast<int64_t>(i);
  }
  if (bad) {
    const double x = decode(&a[first * es], dt), y = decode(&b[first * es], dt);
    FAIL_CHECK(what, ": ", bad, " of ", a.size() / es, " elements differ; first at ", first,
               ": cpu ", x, " vs gpu ", y);
  }
}

void check_guards() {
  gpu_synchronize();
  CHECK_MESSAGE(gpu_guard_violations() == 0, "out-of-bounds writes: ", gpu_guard_reports());
}

// Values every dtype converts without undefined behaviour (|v| < 2^31), mixed with values that
// exercise bf16/f16 rounding: exact ties (both directions of round-to-even), f16 subnormals, the
// f16 overflow boundary, negative zero.
Tensor convertible_values(const Shape& shape, uint64_t seed) {
  static const double kSpecial[] = {0.5,
                                    -0.5,
                                    1.5,
                                    2.5,
                                    -2.5,
                                    1.00390625,
                                    1.01171875,
                                    -1.00390625,
                                    3.0 / 1024,
                                    65519.0,
                                    65520.0,
                                    70000.0,
                                    1e-7,
                                    3e-8,
                                    -6e-8,
                                    255.5,
                                    256.0,
                                    -0.0,
                                    1.0 + 1.0 / 2048,
                                    1.0 + 3.0 / 2048,
                                    16777217.0,
                                    2147483000.0,
                                    -2147483000.0};
  Generator gen(seed);
  Tensor t = empty(shape, DType::f64);
  t.uniform_(gen, -300.0, 300.0);
  double* p = t.data<double>();
  const int64_t n = t.numel();
  const int64_t specials = static_cast<int64_t>(sizeof(kSpecial) / sizeof(kSpecial[0]));
  for (int64_t i = 0; i < n; i += 7) p[i] = kSpecial[(i / 7) % specials];
  return t;
}

// Values only floating dtypes take: infinities, NaN, beyond f32's range, below its subnormals.
Tensor float_only_values(const Shape& shape) {
  static const double kSpecial[] = {std::numeric_limits<double>::infinity(),
                                    -std::numeric_limits<double>::infinity(),
                                    std::numeric_limits<double>::quiet_NaN(),
                                    1e300,
                                    -1e300,
                                    1e-300,
                                    3.4028235e38,
                                    -1e-46,
                                    65504.0,
                                    65505.0,
                                    1e5};
  Tensor t = empty(shape, DType::f64);
  double* p = t.data<double>();
  const int64_t specials = static_cast<int64_t>(sizeof(kSpecial) / sizeof(kSpecial[0]));
  for (int64_t i = 0; i < t.numel(); ++i)
    p[i] = kSpecial[i % specials] * (1.0 + static_cast<double>(i % 5) / 3.0);
  return t;
}

// The values mapped into [0, 250): float -> u8 conversions are defined only in range (GCC may
// vectorise them with saturating packs), and 250 stays in range after bf16/f16 rounding.
Tensor u8_safe(const Tensor& values) {
  Tensor t = values.clone();
  double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = std::fmod(std::abs(p[i]), 250.0);
  return t;
}

}  // namespace

TEST_CASE("fill: every dtype, contiguous and strided views, the value converted as on the CPU") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  const double values[] = {0.0,     1.0,     -2.5, 3.7,   1.00390625, 1.01171875,
                           65519.0, 70000.0, 1e-7, 255.9, -0.0};
  const Shape shape = {37, 61, 53};
  for (DType dt : kAllDTypes) {
    for (double v : values) {
      CAPTURE(std::string(dtype_name(dt)));
      CAPTURE(v);
      for (int layout = 0; layout < 4; ++layout) {
        CAPTURE(layout);
        auto view = [layout](const Tensor& t) {
          switch (layout) {
            case 0: return t;
            case 1: return t.permute({2, 0, 1});
            case 2: return t.narrow(2, 3, 41);
            default: return t.select(1, 5);
          }
        };
        Tensor c = full(shape, 9.0, dt);
        Tensor g = full(shape, 9.0, dt, gpu);
        view(c).fill_(v);
        view(g).fill_(v);
        check_identical(c, g, std::string("fill ") + dtype_name(dt));
      }
      Tensor c0 = scalar_tensor(0.0, dt), g0 = scalar_tensor(0.0, dt, gpu);
      c0.fill_(v);
      g0.fill_(v);
      check_identical(c0, g0, "fill of a 0-d tensor");
    }
  }
  Tensor empty_gpu = empty({0, 5}, DType::f32, gpu);
  empty_gpu.fill_(1.0);
  check_guards();
}

TEST_CASE("copy: every dtype pair, exactly the CPU's conversions") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  const Shape shape = {3, 37, 19, 53};
  const Tensor values = convertible_values(shape, 11);
  const Tensor specials = float_only_values({5, 1031});
  const Tensor values_u8 = u8_safe(values);
  for (DType s : kAllDTypes) {
    // Infinities and NaN exist only in floating dtypes (converting them to integers is undefined).
    const Tensor spec_cpu = is_floating(s) ? specials.to(s) : Tensor();
    const Tensor spec_gpu = is_floating(s) ? spec_cpu.to(gpu) : Tensor();
    for (DType d : kAllDTypes) {
      CAPTURE(std::string(dtype_name(s)));
      CAPTURE(std::string(dtype_name(d)));
      const Tensor src_cpu = (d == DType::u8 && is_floating(s) ? values_u8 : values).to(s);
      const Tensor src_gpu = src_cpu.to(gpu);
      const std::string pair = std::string(dtype_name(s)) + " -> " + dtype_name(d);
      // Contiguous.
      check_identical(src_cpu.to(d), src_gpu.to(d), pair + " contiguous");
      // Strided sources: permuted (rows of stride != 1), narrowed (strided rows), expanded.
      check_identical(src_cpu.permute({0, 3, 1, 2}).to(d).contiguous(),
                      src_gpu.permute({0, 3, 1, 2}).to(d).contiguous(), pair + " permuted source");
      {
        Tensor dc = empty({3, 37, 19, 50}, d), dg = empty({3, 37, 19, 50}, d, gpu);
        dc.copy_(src_cpu.narrow(3, 2, 50));
        dg.copy_(src_gpu.narrow(3, 2, 50));
        check_identical(dc, dg, pair + " narrowed source");
      }
      {
        Tensor dc = empty(shape, d), dg = empty(shape, d, gpu);
        dc.copy_(src_cpu.select(1, 4).unsqueeze(1));  // (3,1,19,53) broadcast over dim 1
        dg.copy_(src_gpu.select(1, 4).unsqueeze(1));
        check_identical(dc, dg, pair + " broadcast source");
      }
      // A strided destination: a permuted view of a larger tensor.
      {
        Tensor dc = zeros({3, 19, 37, 60}, d), dg = zeros({3, 19, 37, 60}, d, gpu);
        dc.permute({0, 2, 1, 3}).narrow(3, 7, 53).copy_(src_cpu);
        dg.permute({0, 2, 1, 3}).narrow(3, 7, 53).copy_(src_gpu);
        check_identical(dc, dg, pair + " strided destination");
      }
      // A 0-d tensor.
      check_identical(src_cpu.select(0, 1).select(0, 2).select(0, 3).select(0, 4).to(d),
                      src_gpu.select(0, 1).select(0, 2).select(0, 3).select(0, 4).to(d),
                      pair + " 0-d");
      // Infinities, NaN, overflow and underflow between floating dtypes.
      if (is_floating(s) && is_floating(d)) {
        check_identical(spec_cpu.to(d), spec_gpu.to(d), pair + " specials");
        check_identical(spec_cpu.transpose(0, 1).to(d).contiguous(),
                        spec_gpu.transpose(0, 1).to(d).contiguous(), pair + " specials transposed");
      }
    }
  }
  check_guards();
}

TEST_CASE("copy: same-dtype layouts (tiled transposes, rows, broadcasts) on large odd shapes") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::u8}) {
    CAPTURE(std::string(dtype_name(dt)));
    const Tensor c = u8_safe(convertible_values({5, 67, 129, 71}, 3)).to(dt);
    const Tensor g = c.to(gpu);
    const std::vector<std::vector<int>> perms = {
        {0, 1, 3, 2}, {0, 3, 1, 2}, {3, 2, 1, 0}, {1, 0, 2, 3}, {2, 0, 3, 1}};
    for (const auto& perm : perms) {
      check_identical(c.permute(perm).contiguous(), g.permute(perm).contiguous(), "permute");
    }
    // A transpose with one side shorter than a tile, and tiles of a batched 2-d transpose.
    check_identical(c.narrow(3, 0, 9).transpose(2, 3).contiguous(),
                    g.narrow(3, 0, 9).transpose(2, 3).contiguous(), "short transpose");
    check_identical(c.narrow(1, 3, 60).narrow(2, 1, 127).transpose(1, 2).contiguous(),
                    g.narrow(1, 3, 60).narrow(2, 1, 127).transpose(1, 2).contiguous(),
                    "transpose of a narrowed view");
    // Broadcast rows and scalars.
    check_identical(c.select(3, 5).unsqueeze(3).expand({5, 67, 129, 71}).contiguous(),
                    g.select(3, 5).unsqueeze(3).expand({5, 67, 129, 71}).contiguous(),
                    "broadcast inner dim");
    check_identical(
        c.select(0, 2).select(0, 1).select(0, 0).select(0, 3).expand({1001, 3}).contiguous(),
        g.select(0, 2).select(0, 1).select(0, 0).select(0, 3).expand({1001, 3}).contiguous(),
        "broadcast scalar");
    // Misaligned contiguous copies (offset by one element).
    check_identical(c.flatten().narrow(0, 1, c.numel() - 2).contiguous().clone(),
                    g.flatten().narrow(0, 1, g.numel() - 2).clone(), "misaligned clone");
    const DType other = dt == DType::f64 ? DType::f32 : DType::f64;
    check_identical(c.flatten().narrow(0, 1, c.numel() - 2).to(other),
                    g.flatten().narrow(0, 1, g.numel() - 2).to(other), "misaligned conversion");
  }
  check_guards();
}

TEST_CASE("arange: every dtype, as the CPU rounds start + i * step") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  struct Range {
    double start, end, step;
  };
  const Range ranges[] = {{0, 10, 1},    {0.37, 1000.1, 0.713},  {-5, 5, 0.1},
                          {3, -7, -0.3}, {1e6, 1e6 + 2000, 0.5}, {0, (1 << 20) + 3, 1},
                          {0, 1, 1}};
  for (DType dt : kAllDTypes) {
    for (const Range& r : ranges) {
      CAPTURE(std::string(dtype_name(dt)));
      CAPTURE(r.start);
      CAPTURE(r.step);
      check_identical(arange(r.start, r.end, r.step, dt), arange(r.start, r.end, r.step, dt, gpu),
                      "arange");
    }
  }
  check_guards();
}

TEST_CASE("random: uniform and bernoulli bit-identical to the CPU, normal within an ulp") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  const int64_t sizes[] = {1, 3, 5, 1001, (1 << 20) + 3};
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    for (int64_t n : sizes) {
      CAPTURE(std::string(dtype_name(dt)));
      CAPTURE(n);
      Generator gc(77 + static_cast<uint64_t>(n)), gg(77 + static_cast<uint64_t>(n));
      gc.next_call();  // start at a call counter other than 0
      gg.next_call();
      for (int round = 0; round < 2; ++round) {  // consecutive calls draw from consecutive counters
        Tensor uc = empty({n}, dt), ug = empty({n}, dt, gpu);
        uc.uniform_(gc, -1.5, 2.5);
        ug.uniform_(gg, -1.5, 2.5);
        check_identical(uc, ug, "uniform");
        Tensor bc = empty({n}, dt), bg = empty({n}, dt, gpu);
        bc.bernoulli_(gc, 0.3);
        bg.bernoulli_(gg, 0.3);
        check_identical(bc, bg, "bernoulli");
        Tensor nc = empty({n}, dt), ng = empty({n}, dt, gpu);
        nc.normal_(gc, 0.5, 2.0);
        ng.normal_(gg, 0.5, 2.0);
        const std::vector<double> a = to_vector<double>(nc), b = to_vector<double>(ng);
        int64_t exact = 0, bad = 0;
        for (size_t i = 0; i < a.size(); ++i) {
          if (a[i] == b[i]) {
            ++exact;
            continue;
          }
          double bound;
          switch (dt) {
            case DType::f64: bound = kNormalF64Rel * (std::abs(a[i]) + 2.0); break;
            // One ulp of the f32 value, or of the 16-bit value it rounds to.
            case DType::bf16: bound = std::ldexp(std::abs(a[i]), -7) + 1e-30; break;
            case DType::f16: bound = std::ldexp(std::abs(a[i]), -10) + std::ldexp(1.0, -24); break;
            default: bound = kNormalUlps * std::ldexp(std::abs(a[i]), -23) + 1e-38; break;
          }
          if (std::abs(a[i] - b[i]) > bound && bad++ == 0) {
            FAIL_CHECK("normal element ", i, ": cpu ", a[i], " vs gpu ", b[i]);
          }
        }
        CHECK(bad == 0);
        // Narrowed dtypes: differences are rare (a 1-ulp disagreement of the f64 libraries that
        // crosses a rounding boundary), so at least 99% of the values of a large draw are
        // identical. f64 shows the disagreement itself: on an H200, 88-89% were identical.
        if (a.size() >= 1000 && dt != DType::f64)
          CHECK(exact * 100 >= static_cast<int64_t>(a.size()) * 99);
        CHECK(gc.calls() == gg.calls());
      }
    }
  }
  // A non-contiguous destination (drawn contiguous, then copied into the view).
  Generator gc(5), gg(5);
  Tensor c = zeros({7, 301}), g = zeros({7, 301}, DType::f32, gpu);
  c.transpose(0, 1).uniform_(gc);
  g.transpose(0, 1).uniform_(gg);
  check_identical(c, g, "uniform into a transposed view");
  // A misaligned contiguous destination (one element into its storage, drawn in place): the
  // element-wise stores of the 4-element (32-bit draws) and 2-element (f64 uniform) groups.
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    CAPTURE(std::string(dtype_name(dt)));
    Generator gc2(6), gg2(6);
    Tensor c2 = zeros({1003}, dt), g2 = zeros({1003}, dt, gpu);
    c2.narrow(0, 1, 1001).uniform_(gc2, -1.0, 1.0);
    g2.narrow(0, 1, 1001).uniform_(gg2, -1.0, 1.0);
    check_identical(c2, g2, "uniform into a misaligned view");
    c2.narrow(0, 1, 1001).bernoulli_(gc2, 0.4);
    g2.narrow(0, 1, 1001).bernoulli_(gg2, 0.4);
    check_identical(c2, g2, "bernoulli into a misaligned view");
    if (dt == DType::bf16) continue;  // a 1-ulp f32 difference may cross a bf16 rounding boundary
    c2.narrow(0, 1, 1001).normal_(gc2, 0.0, 1.0);
    g2.narrow(0, 1, 1001).normal_(gg2, 0.0, 1.0);
    // Normal draws agree to an f32 ulp (kNormalUlps): far below 1e-6 of the largest value.
    const ParityResult r = compare_parity(c2, g2, 1e-6);
    CHECK_MESSAGE(r.ok, "normal into a misaligned view: ", r.message);
  }
  check_guards();
}

TEST_CASE("argmax: first maximum on ties, NaN largest (the first NaN), every layout and dtype") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  struct Case {
    Shape shape;
    int dim;
  };
  // Thread-per-output (inner >= 32 or short n) and warp-per-output (long n, short inner) paths.
  const Case cases[] = {{{5, 7, 300}, 1}, {{1000, 200}, 1}, {{3, 100, 5}, 1},     {{2, 3000}, 1},
                        {{70, 1000}, 0},  {{4096, 19}, -1}, {{8, 19, 33, 65}, 1}, {{1}, 0},
                        {{9, 1, 4}, 1},   {{3, 4097, 2}, 1}};
  for (const Case& c : cases) {
    for (DType dt : {DType::f32, DType::f64, DType::i32, DType::u8}) {
      CAPTURE(shape_str(c.shape));
      CAPTURE(c.dim);
      CAPTURE(std::string(dtype_name(dt)));
      // Few distinct values: many ties.
      Generator gen(9);
      Tensor v = empty(c.shape, DType::f64);
      v.uniform_(gen, 0.0, 4.0);
      double* p = v.data<double>();
      for (int64_t i = 0; i < v.numel(); ++i) p[i] = std::floor(p[i]);
      if (is_floating(dt)) {
        // NaNs in some rows (several per row in places), -0.0 against +0.0.
        for (int64_t i = 0; i < v.numel(); ++i) {
          if (i % 97 == 13 || i % 389 == 200) p[i] = std::numeric_limits<double>::quiet_NaN();
          if (p[i] == 0.0 && i % 2) p[i] = -0.0;
        }
        if (v.numel() > 0)
          p[0] = std::numeric_limits<double>::quiet_NaN();  // a NaN first in its row
      }
      const Tensor xc = v.to(dt);
      const Tensor xg = xc.to(gpu);
      check_identical(argmax(xc, c.dim, false), argmax(xg, c.dim, false), "argmax");
      check_identical(argmax(xc, c.dim, true), argmax(xg, c.dim, true), "argmax keepdim");
    }
  }
  check_guards();
}

TEST_CASE("sum: dim sets on large odd shapes, every dtype, deterministic") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  struct Case {
    Shape shape;
    std::vector<int> dims;
  };
  const Case cases[] = {
      {{3, 37, 61, 53}, {}},     {{3, 37, 61, 53}, {0}},
      {{3, 37, 61, 53}, {1}},    {{3, 37, 61, 53}, {2}},
      {{3, 37, 61, 53}, {3}},    {{3, 37, 61, 53}, {0, 2, 3}},
      {{3, 37, 61, 53}, {0, 1}}, {{3, 37, 61, 53}, {2, 3}},
      {{3, 37, 61, 53}, {1, 3}}, {{3, 37, 61, 53}, {0, 1, 2, 3}},
      {{(1 << 22) + 3}, {0}},    {{300007, 7}, {0}},
      {{7, 300007}, {1}},        {{4099, 33}, {0}},
      {{33, 4099}, {1}},         {{8, 64, 33, 17}, {0, 2, 3}},
      {{2, 1, 5, 1}, {1, 3}},    {{64, 2, 1000}, {0, 2}},
      {{3, 0, 5}, {1}},          {{0, 5}, {0}},
      {{4, 5}, {0, 1}},
  };
  for (const Case& c : cases) {
    for (DType dt : {DType::f32, DType::f64, DType::i32, DType::i64}) {
      CAPTURE(shape_str(c.shape));
      CAPTURE(c.dims.size());
      CAPTURE(std::string(dtype_name(dt)));
      Generator gen(3);
      Tensor v = empty(c.shape, DType::f64);
      v.uniform_(gen, -100.0, 100.0);
      const Tensor xc = v.to(dt);  // integers: truncated, both signs
      const Tensor xg = xc.to(gpu);
      for (bool keepdim : {false, true}) {
        const Tensor rc = c.dims.empty() ? sum(xc) : sum(xc, c.dims, keepdim);
        const Tensor rg = c.dims.empty() ? sum(xg) : sum(xg, c.dims, keepdim);
        if (is_floating(dt)) {
          const ParityResult r = compare_parity(rc, rg, kSumTolerance);
          CHECK_MESSAGE(r.ok, r.message);
        } else {
          check_identical(rc, rg, "integer sum");
        }
        // Deterministic: the same bits on every run.
        const Tensor again = c.dims.empty() ? sum(xg) : sum(xg, c.dims, keepdim);
        CHECK(bytes_of(rg) == bytes_of(again));
      }
    }
  }
  // A mean, and a sum of a non-contiguous input (the front-end makes it contiguous).
  Generator gen(4);
  const Tensor x = randn({6, 45, 77}, gen);
  const Tensor xg = x.to(gpu);
  CHECK(compare_parity(mean(x, {0, 2}), mean(xg, {0, 2}), kSumTolerance).ok);
  CHECK(
      compare_parity(sum(x.transpose(0, 2), {1}), sum(xg.transpose(0, 2), {1}), kSumTolerance).ok);
  check_guards();
}

TEST_CASE("64-bit indexing: views whose offsets pass 2^31, sums of more than 2^31 elements") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  {
    // (3, 2^30 + 37) u8, 3.2 GB on the GPU only: a (3, 300) window reaches offset 2^31 + 378, so
    // copies into and out of it, a conversion from it and a fill of it take the 64-bit row kernel.
    const int64_t row = (int64_t{1} << 30) + 37;
    Tensor big = zeros({3, row}, DType::u8, gpu);
    const Tensor small = u8_safe(convertible_values({3, 300}, 13)).to(DType::u8);
    Tensor window = big.narrow(1, 5, 300);
    window.copy_(small.to(gpu));
    check_identical(small, window.contiguous(), "copy into and out of a window past 2^31");
    check_identical(small.to(DType::i32), window.to(DType::i32),
                    "u8 -> i32 from a window past 2^31");
    big.narrow(1, 400, 7).fill_(3.0);
    check_identical(full({3, 7}, 3.0, DType::u8), big.narrow(1, 400, 7).contiguous(),
                    "fill of a window past 2^31");
    // Nothing outside the windows was written.
    check_identical(zeros({3, 5}, DType::u8), big.narrow(1, 0, 5).contiguous(),
                    "left of the window");
    check_identical(zeros({3, 95}, DType::u8), big.narrow(1, 305, 95).contiguous(),
                    "between the windows");
  }
  {
    // (2, 2^30 + 7) i32, 8.6 GB, plus a 4.3 GB column sum: more than 2^31 elements, so every sum
    // takes its 64-bit path (inner with split partials, outer, and the sum of all). Only the first
    // 700 columns are non-zero (and no value is negative), so a small CPU tensor gives the answers.
    const int64_t row = (int64_t{1} << 30) + 7;
    Tensor x = zeros({2, row}, DType::i32, gpu);
    Generator gen(17);
    Tensor values = empty({2, 700}, DType::f64);
    values.uniform_(gen, 0.0, 100.0);
    const Tensor small = values.to(DType::i32);
    x.narrow(1, 0, 700).copy_(small.to(gpu));
    check_identical(sum(small, {1}, false), sum(x, {1}, false), "sum over 2^30 + 7 columns");
    check_identical(sum(small), sum(x), "sum of 2^31 + 14 elements");
    const Tensor cols = sum(x, {0}, true);  // (1, 2^30 + 7)
    check_identical(sum(small, {0}, true), cols.narrow(1, 0, 700).contiguous(), "column sums");
    check_identical(scalar_tensor(0.0, DType::i32), sum(cols.narrow(1, 700, row - 700)),
                    "column sums past the non-zero columns");
  }
  check_guards();
}

TEST_CASE("max/adaptive pooling and bilinear resizing in f64, forward and backward") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  Generator gen(31);
  // f(x) on both devices in f64, then the gradient of sum(f(x) * r) for a random r.
  auto run = [&](const std::string& what, const Shape& shape,
                 const std::function<Tensor(const Tensor&)>& f, bool exact_forward,
                 bool exact_backward) {
    CAPTURE(what);
    Tensor x = randn(shape, gen, DType::f64);
    Tensor xc = x.detach(), xg = x.to(gpu).detach();
    xc.set_requires_grad(true);
    xg.set_requires_grad(true);
    const Tensor yc = f(xc), yg = f(xg);
    Tensor r = empty(yc.sizes(), DType::f64);
    r.uniform_(gen, -1.0, 1.0);
    yc.backward(r);
    yg.backward(r.to(gpu));
    if (exact_forward) {
      check_identical(yc, yg, what + " forward");
    } else {
      const ParityResult p = compare_parity(yc, yg, kF64Tolerance);
      CHECK_MESSAGE(p.ok, what, " forward: ", p.message);
    }
    if (exact_backward) {
      check_identical(xc.grad(), xg.grad(), what + " backward");
    } else {
      const ParityResult p = compare_parity(xc.grad(), xg.grad(), kF64Tolerance);
      CHECK_MESSAGE(p.ok, what, " backward: ", p.message);
    }
  };
  // Max pooling: one winner per window, the gather adds in the CPU's order: exact both ways.
  run(
      "max pool 3/2/1 ceil", {2, 5, 63, 61},
      [](const Tensor& x) { return max_pool2d(x, MaxPool2dOptions::make(3, 2, 1, true)); }, true,
      true);
  run("max pool 3/1/1", {1, 3, 45, 51},
      [](const Tensor& x) { return max_pool2d(x, MaxPool2dOptions::make(3, 1, 1)); }, true, true);
  // Adaptive pooling: warp (large bins) and thread paths, overlapping bins; the backward gathers in
  // the CPU's order (exact), the forward of large bins sums in another order.
  run("adaptive (5,7)", {2, 7, 61, 53},
      [](const Tensor& x) { return adaptive_avg_pool2d(x, 5, 7); }, false, true);
  run("adaptive (1,1)", {2, 9, 33, 47},
      [](const Tensor& x) { return adaptive_avg_pool2d(x, 1, 1); }, false, true);
  run("adaptive (6,6)", {2, 5, 29, 65},
      [](const Tensor& x) { return adaptive_avg_pool2d(x, 6, 6); }, false, true);
  run("adaptive (31,45)", {2, 5, 17, 23},
      [](const Tensor& x) { return adaptive_avg_pool2d(x, 31, 45); }, false, true);
  // Resizing: the forward is bit-exact (explicit fmas); the f64 backward stages rows of twice the
  // bytes of f32, so its fused kernel gets other band heights: 8, 2 (rows of 2000) and none (rows
  // of 3000 with a 2900-wide gy row: two passes although the staged row alone would fit).
  for (bool align : {false, true}) {
    const std::string a = align ? " align_corners" : "";
    run("upsample (65,129)->(513,1025)" + a, {2, 3, 65, 129},
        [align](const Tensor& x) { return upsample_bilinear2d(x, 513, 1025, align); }, true, false);
    run("upsample (9,2000)->(17,1000)" + a, {1, 2, 9, 2000},
        [align](const Tensor& x) { return upsample_bilinear2d(x, 17, 1000, align); }, true, false);
    run("upsample (5,3000)->(9,2900)" + a, {1, 2, 5, 3000},
        [align](const Tensor& x) { return upsample_bilinear2d(x, 9, 2900, align); }, true, false);
    run("upsample (97,131)->(41,53)" + a, {3, 4, 97, 131},
        [align](const Tensor& x) { return upsample_bilinear2d(x, 41, 53, align); }, true, false);
  }
  check_guards();
}

namespace {

using MakeOptimizer = std::function<std::unique_ptr<Optimizer>(const std::vector<Tensor>&)>;

struct OptimCase {
  std::string name;
  MakeOptimizer make;
};

std::vector<OptimCase> optim_cases() {
  std::vector<OptimCase> c;
  auto sgd = [&](const std::string& name, SGDOptions o) {
    c.push_back(
        {"SGD " + name, [o](const std::vector<Tensor>& p) { return std::make_unique<SGD>(p, o); }});
  };
  sgd("plain", {.lr = 0.1});
  sgd("momentum", {.lr = 0.05, .momentum = 0.9});
  sgd("momentum dampening weight decay",
      {.lr = 0.05, .momentum = 0.9, .dampening = 0.1, .weight_decay = 1e-2});
  sgd("nesterov", {.lr = 0.03, .momentum = 0.9, .weight_decay = 1e-3, .nesterov = true});
  sgd("maximize", {.lr = 0.02, .momentum = 0.5, .maximize = true});
  auto rmsprop = [&](const std::string& name, RMSpropOptions o) {
    c.push_back({"RMSprop " + name,
                 [o](const std::vector<Tensor>& p) { return std::make_unique<RMSprop>(p, o); }});
  };
  rmsprop("default", {});
  rmsprop("centered momentum weight decay",
          {.lr = 3e-3, .weight_decay = 1e-2, .momentum = 0.9, .centered = true});
  rmsprop("momentum", {.momentum = 0.5});
  rmsprop("centered maximize", {.centered = true, .maximize = true});
  auto adam = [&](const std::string& name, AdamOptions o) {
    c.push_back({"Adam " + name,
                 [o](const std::vector<Tensor>& p) { return std::make_unique<Adam>(p, o); }});
  };
  adam("default", {});
  adam("weight decay amsgrad", {.lr = 3e-3, .weight_decay = 1e-2, .amsgrad = true});
  adam("maximize", {.lr = 1e-2, .beta1 = 0.8, .beta2 = 0.99, .eps = 1e-6, .maximize = true});
  auto adamw = [&](const std::string& name, AdamWOptions o) {
    c.push_back({"AdamW " + name,
                 [o](const std::vector<Tensor>& p) { return std::make_unique<AdamW>(p, o); }});
  };
  adamw("default", {});
  adamw("amsgrad", {.lr = 2e-3, .weight_decay = 0.1, .amsgrad = true});
  return c;
}

}  // namespace

TEST_CASE(
    "optimizer_step: SGD, RMSprop, Adam and AdamW equal the CPU bit for bit (fused multi-tensor)") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  // Odd sizes: single elements, sizes around the vector width and the 8192-element chunk, a
  // multi-chunk tensor with a ragged end.
  const std::vector<Shape> shapes = {{1},    {3},    {5},     {1027},        {64, 3, 7, 7},
                                     {8191}, {8193}, {65542}, {2, 3, 37, 61}};
  for (DType dt : {DType::f32, DType::f64}) {
    for (const OptimCase& oc : optim_cases()) {
      CAPTURE(std::string(dtype_name(dt)));
      CAPTURE(oc.name);
      Generator gen(21);
      std::vector<Tensor> pc, pg;
      for (const Shape& s : shapes) {
        Tensor p = randn(s, gen, DType::f64).to(dt);
        Tensor q = p.to(gpu).detach();
        p.set_requires_grad(true);
        q.set_requires_grad(true);
        pc.push_back(p);
        pg.push_back(q);
      }
      std::unique_ptr<Optimizer> opt_cpu = oc.make(pc), opt_gpu = oc.make(pg);
      for (int step = 0; step < 4; ++step) {
        CAPTURE(step);
        for (size_t i = 0; i < pc.size(); ++i) {
          if (step == 2 && i == 3) {  // a parameter without a gradient is skipped this step
            pc[i].zero_grad();
            pg[i].zero_grad();
            continue;
          }
          const Tensor g = mul_scalar(randn(shapes[i], gen, DType::f64), 0.5).to(dt);
          pc[i].set_grad(g);
          pg[i].set_grad(g.to(gpu));
        }
        opt_cpu->step();
        opt_gpu->step();
        for (size_t i = 0; i < pc.size(); ++i)
          check_identical(pc[i], pg[i], "parameter " + std::to_string(i));
        const auto sc = opt_cpu->state_tensors(), sg = opt_gpu->state_tensors();
        REQUIRE(sc.size() == sg.size());
        for (size_t i = 0; i < sc.size(); ++i) {
          REQUIRE(sc[i].first == sg[i].first);
          check_identical(sc[i].second, sg[i].second, sc[i].first);
        }
      }
    }
  }
  check_guards();
}

TEST_CASE(
    "optimizer_step: misaligned views, empty tensors and one call over many tensors (kernel "
    "level)") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  struct Kind {
    OptimKind kind;
    OptimHyper hyper;
  };
  std::vector<Kind> kinds;
  kinds.push_back(
      {OptimKind::sgd, to_hyper(SGDOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-2})});
  kinds.push_back(
      {OptimKind::rmsprop,
       to_hyper(RMSpropOptions{.weight_decay = 1e-3, .momentum = 0.9, .centered = true})});
  kinds.push_back({OptimKind::adam, to_hyper(AdamOptions{.weight_decay = 1e-2, .amsgrad = true})});
  kinds.push_back({OptimKind::adamw, to_hyper(AdamWOptions{.amsgrad = true})});
  for (Kind& k : kinds) {
    k.hyper.first = false;
    k.hyper.bias_correction1 = 1.0 - std::pow(k.hyper.beta1, 3.0);
    k.hyper.bias_correction2 = 1.0 - std::pow(k.hyper.beta2, 3.0);
  }
  // Sizes: empty, tiny, and many tensors of odd sizes in one call (more than one block of chunks).
  std::vector<int64_t> sizes = {0, 1, 7, 8192, 8195, 0, 100003};
  for (int i = 0; i < 300; ++i) sizes.push_back(1 + (i * 7919) % 3001);
  for (DType dt : {DType::f32, DType::f64}) {
    for (const Kind& k : kinds) {
      for (int64_t offset : {0, 1}) {  // offset 1: no buffer is 16-byte aligned (scalar path)
        CAPTURE(std::string(dtype_name(dt)));
        CAPTURE(std::string(optim_kind_name(k.kind)));
        CAPTURE(offset);
        Generator gen(8);
        // Five buffers per parameter: param, grad and three states (non-negative second moments).
        std::vector<std::array<Tensor, 5>> cpu_bufs, gpu_bufs;
        std::vector<OptimTensor> tc, tg;
        for (int64_t n : sizes) {
          std::array<Tensor, 5> c;
          c[0] = randn({n + offset}, gen, DType::f64).to(dt);
          c[1] = randn({n + offset}, gen, DType::f64).to(dt);
          c[2] = rand({n + offset}, gen, DType::f64).to(dt);
          c[3] = rand({n + offset}, gen, DType::f64).to(dt);
          c[4] = rand({n + offset}, gen, DType::f64).to(dt);
          if (k.kind == OptimKind::rmsprop) {  // square_avg >= grad_avg^2: centered variance >= 0
            c[2] = add_scalar(c[2], 1.0);
            c[4] = mul_scalar(c[4], 0.5);
          }
          std::array<Tensor, 5> g;
          for (int b = 0; b < 5; ++b) g[b] = c[b].to(gpu);
          auto views = [offset, n](const std::array<Tensor, 5>& t) {
            OptimTensor o;
            o.param = view_of(t[0].narrow(0, offset, n));
            o.grad = view_of(t[1].narrow(0, offset, n));
            o.state0 = view_of(t[2].narrow(0, offset, n));
            o.state1 = view_of(t[3].narrow(0, offset, n));
            o.state2 = view_of(t[4].narrow(0, offset, n));
            return o;
          };
          tc.push_back(views(c));
          tg.push_back(views(g));
          cpu_bufs.push_back(c);
          gpu_bufs.push_back(g);
        }
        kernels_for<OpId::optimizer_step>(Device::cpu())
            .step(exec_context(cpu_bufs[0][0]), k.kind, k.hyper, tc.data(),
                  static_cast<int64_t>(tc.size()));
        kernels_for<OpId::optimizer_step>(gpu).step(exec_context(gpu_bufs[0][0]), k.kind, k.hyper,
                                                    tg.data(), static_cast<int64_t>(tg.size()));
        for (size_t i = 0; i < sizes.size(); ++i) {
          for (int b = 0; b < 5; ++b) {
            check_identical(cpu_bufs[i][b], gpu_bufs[i][b],
                            "tensor " + std::to_string(i) + " buffer " + std::to_string(b));
          }
        }
      }
    }
  }
  check_guards();
}
