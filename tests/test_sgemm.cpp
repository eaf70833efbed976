// Our f32 GEMM (kernels/cpu/sgemm.h) with every instruction set this processor runs (AVX-512,
// AVX2, and the OpenBLAS fallback): all four transpose combinations, operands given by row
// pointers (B's rows in segments), a row bias, alpha and beta (beta == 0 over a C full of NaN),
// padded leading dimensions, shapes on and off the tile sizes (both AVX-512 tiles) and past each
// blocking size (depth blocks, row blocks, column blocks, the threads' split), against an f64
// reference; results identical whatever the thread count.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/random.h"
#include "engine/tensor.h"
#include "kernels/cpu/sgemm.h"

using namespace seg;
using cpu::GemmIsa;

namespace {

// f32 unit roundoff. A sum of k products accumulated in f32 (in any order, with FMAs or not) is
// within k * u of the exact value relative to the sum of the terms' magnitudes (Higham's bound,
// first order); scaling by alpha and adding beta * C add two more roundings. The bound below is
// that worst case: any indexing, transpose, masking or blocking error is O(1) relative.
constexpr double kUnitRoundoff = 1.0 / (1 << 24);

struct Case {
  int64_t m, n, k;
};

// Shapes: tiny and degenerate; exactly one AVX-512 (8 x 48) and AVX2 (6 x 16) tile; one more than
// a tile in each dimension; k past the depth block (128 / 256); m past the row block (192 / 144);
// n past the column block (672); shapes large enough to be split among threads along n and
// along m.
const std::vector<Case> kCases = {
    {1, 1, 1},     {3, 2, 5},      {8, 48, 16},   {6, 16, 16},    {9, 49, 7},
    {7, 17, 130},  {13, 97, 300},  {200, 50, 37}, {150, 30, 260}, {5, 3100, 20},
    {70, 400, 90}, {400, 40, 100}, {2, 7, 0},
};

std::vector<float> random_vector(int64_t n, Generator& gen) {
  return to_vector<float>(randn({std::max<int64_t>(n, 1)}, gen));
}

// Runs one case with given transposes, alpha, beta and padding, and checks it against f64.
void check_case(GemmIsa isa, const Case& cs, bool ta, bool tb, float alpha, float beta) {
  Generator gen(static_cast<uint64_t>(cs.m * 1000003 + cs.n * 1009 + cs.k * 7 + ta * 2 + tb));
  const int64_t pad = 3;
  const int64_t a_rows = ta ? cs.k : cs.m, a_cols = ta ? cs.m : cs.k;
  const int64_t b_rows = tb ? cs.n : cs.k, b_cols = tb ? cs.k : cs.n;
  const int64_t lda = a_cols + pad, ldb = b_cols + pad, ldc = cs.n + pad;
  const std::vector<float> a = random_vector(a_rows * lda, gen);
  const std::vector<float> b = random_vector(b_rows * ldb, gen);
  std::vector<float> c0 = random_vector(cs.m * ldc, gen);
  if (beta == 0.0f) std::fill(c0.begin(), c0.end(), std::numeric_limits<float>::quiet_NaN());
  std::vector<float> c = c0;
  cpu::sgemm_with(isa, ta, tb, cs.m, cs.n, cs.k, alpha, a.data(), lda, b.data(), ldb, beta,
                  c.data(), ldc);
  int bad = 0;
  for (int64_t i = 0; i < cs.m; ++i) {
    for (int64_t j = 0; j < cs.n; ++j) {
      double exact = 0.0, magnitude = 0.0;
      for (int64_t p = 0; p < cs.k; ++p) {
        const double av = a[ta ? p * lda + i : i * lda + p], bv = b[tb ? j * ldb + p : p * ldb + j];
        exact += av * bv;
        magnitude += std::abs(av * bv);
      }
      const double old = beta == 0.0f ? 0.0 : c0[i * ldc + j];
      exact = alpha * exact + beta * old;
      magnitude = std::abs(alpha) * magnitude + std::abs(beta * old);
      const double bound = (cs.k + 2) * kUnitRoundoff * magnitude;
      const double got = c[i * ldc + j];
      if (!(std::abs(got - exact) <= bound) && bad++ < 3) {
        FAIL_CHECK(cpu::gemm_isa_name(isa), " m ", cs.m, " n ", cs.n, " k ", cs.k, " ta ", ta,
                   " tb ", tb, " alpha ", alpha, " beta ", beta, ": C(", i, ", ", j, ") = ", got,
                   ", expected ", exact, " within ", bound);
      }
    }
    // The padding of C is never written.
    for (int64_t j = cs.n; j < ldc; ++j) {
      const float before = c0[i * ldc + j], after = c[i * ldc + j];
      if (!(after == before || (std::isnan(after) && std::isnan(before))) && bad++ < 3) {
        FAIL_CHECK(cpu::gemm_isa_name(isa), ": padding C(", i, ", ", j, ") was written");
      }
    }
  }
  CHECK(bad == 0);
}

// A and B given by row pointers into a buffer where the rows are unevenly spaced (each starts at
// its own offset), B's rows in segments of `segment` columns with `seg_gap` unused floats after
// each (segment 0: plain rows), plus a row bias, against f64.
void check_row_pointers(GemmIsa isa, const Case& cs, float beta, int64_t segment, int64_t seg_gap) {
  Generator gen(static_cast<uint64_t>(cs.m * 31 + cs.n * 17 + cs.k + segment));
  const int64_t gap = 5;  // up to 5 floats between consecutive rows
  const int64_t b_len = segment > 0 ? cs.n + (cs.n / segment + 1) * seg_gap : cs.n;
  std::vector<float> store = random_vector((cs.m * (cs.k + gap) + cs.k * (b_len + gap)) + 1, gen);
  std::vector<const float*> a_rows, b_rows;
  int64_t off = 0;
  for (int64_t i = 0; i < cs.m; ++i, off += cs.k + i % (gap + 1)) a_rows.push_back(&store[off]);
  for (int64_t p = 0; p < cs.k; ++p, off += b_len + p % (gap + 1)) b_rows.push_back(&store[off]);
  auto b_at = [&](int64_t p, int64_t j) {
    return b_rows[p][segment > 0 ? j + (j / segment) * seg_gap : j];
  };
  const std::vector<float> bias = random_vector(cs.m, gen);
  const int64_t ldc = cs.n + 1;
  std::vector<float> c0 = random_vector(cs.m * ldc, gen), c = c0;
  cpu::sgemm_ex_with(isa, cs.m, cs.n, cs.k, 1.0f, cpu::GemmOperand::row_pointers(a_rows.data()),
                     cpu::GemmOperand::row_pointers(b_rows.data(), segment, seg_gap), beta,
                     c.data(), ldc, bias.data());
  int bad = 0;
  for (int64_t i = 0; i < cs.m; ++i) {
    for (int64_t j = 0; j < cs.n; ++j) {
      double exact = beta * static_cast<double>(c0[i * ldc + j]) + bias[i];
      double magnitude = std::abs(beta * static_cast<double>(c0[i * ldc + j])) + std::abs(bias[i]);
      for (int64_t p = 0; p < cs.k; ++p) {
        const double t = static_cast<double>(a_rows[i][p]) * b_at(p, j);
        exact += t;
        magnitude += std::abs(t);
      }
      const double bound = (cs.k + 2) * kUnitRoundoff * magnitude;
      if (!(std::abs(c[i * ldc + j] - exact) <= bound) && bad++ < 3) {
        FAIL_CHECK(cpu::gemm_isa_name(isa), " row pointers m ", cs.m, " n ", cs.n, " k ", cs.k,
                   ": C(", i, ", ", j, ") = ", c[i * ldc + j], ", expected ", exact);
      }
    }
  }
  CHECK(bad == 0);
}

std::vector<GemmIsa> supported_isas() {
  std::vector<GemmIsa> isas;
  for (GemmIsa isa : {GemmIsa::avx512, GemmIsa::avx2, GemmIsa::blas}) {
    if (cpu::gemm_isa_supported(isa)) isas.push_back(isa);
  }
  return isas;
}

}  // namespace

TEST_CASE("sgemm: every instruction set against f64, all transposes, alpha and beta") {
  for (GemmIsa isa : supported_isas()) {
    for (const Case& cs : kCases) {
      for (int t = 0; t < 4; ++t) {
        check_case(isa, cs, t & 1, t & 2, 1.0f, 0.0f);
      }
      check_case(isa, cs, false, true, -0.5f, 1.0f);
      check_case(isa, cs, true, false, 2.0f, 0.25f);
    }
  }
}

TEST_CASE("sgemm: operands given by row pointers, B in segments, a row bias") {
  for (GemmIsa isa : supported_isas()) {
    for (const Case& cs : kCases) {
      check_row_pointers(isa, cs, 0.0f, 0, 0);
      check_row_pointers(isa, cs, 1.0f, 0, 0);
      // segments narrower and wider than a tile, so that slivers cross segment boundaries
      check_row_pointers(isa, cs, 0.0f, 13, 2);
      check_row_pointers(isa, cs, 1.0f, 100, 3);
    }
  }
}

TEST_CASE("sgemm: an operand given by row pointers cannot be transposed") {
  const float row[2] = {1.0f, 2.0f};
  const float* rows[1] = {row};
  float out[1] = {0.0f};
  cpu::GemmOperand a = cpu::GemmOperand::row_pointers(rows);
  a.trans = true;
  CHECK_THROWS_AS(cpu::sgemm_ex(1, 1, 1, 1.0f, a, cpu::GemmOperand::matrix(row, 1), 0.0f, out, 1),
                  std::invalid_argument);
}

TEST_CASE("sgemm: the best instruction set is one this processor runs") {
  CHECK(cpu::gemm_isa_supported(cpu::best_gemm_isa()));
  CHECK(cpu::gemm_isa_supported(GemmIsa::blas));
}

TEST_CASE("sgemm: results do not depend on the thread count") {
  const int saved = omp_get_max_threads();
  for (GemmIsa isa : supported_isas()) {
    if (isa == GemmIsa::blas) continue;  // OpenBLAS makes no such promise
    for (const Case& cs : {Case{70, 400, 300}, Case{400, 40, 300}}) {
      Generator gen(5);
      const std::vector<float> a = random_vector(cs.m * cs.k, gen);
      const std::vector<float> b = random_vector(cs.k * cs.n, gen);
      std::vector<std::vector<float>> results;
      for (int threads : {1, 2, 3}) {
        omp_set_num_threads(threads);
        std::vector<float> c(static_cast<size_t>(cs.m * cs.n));
        cpu::sgemm_with(isa, false, false, cs.m, cs.n, cs.k, 1.0f, a.data(), cs.k, b.data(), cs.n,
                        0.0f, c.data(), cs.n);
        results.push_back(c);
      }
      CHECK_MESSAGE(results[0] == results[1], cpu::gemm_isa_name(isa), " 1 vs 2 threads");
      CHECK_MESSAGE(results[0] == results[2], cpu::gemm_isa_name(isa), " 1 vs 3 threads");
    }
  }
  omp_set_num_threads(saved);
}
