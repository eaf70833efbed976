// Our own f32 GEMM for the CPU kernels (convolution, matmul, linear, ASPP projection), with
// register-blocked micro-kernels for AVX-512 and AVX2 chosen from the processor's features at run
// time, so that its speed does not depend on which kernels OpenBLAS picks (OPENBLAS_CORETYPE
// restricts OpenBLAS to one core type's kernels, e.g. AVX2 only on an AVX-512 machine). Where
// neither instruction set is available (other architectures), it calls OpenBLAS's cblas_sgemm.
// f64 stays on OpenBLAS.
#pragma once

#include <cstdint>

namespace seg::cpu {

enum class GemmIsa { avx512, avx2, blas };

// The fastest GEMM this processor runs (read once from the CPU's features).
GemmIsa best_gemm_isa();
const char* gemm_isa_name(GemmIsa isa);
// True when this processor can run `isa` (blas: always).
bool gemm_isa_supported(GemmIsa isa);

// Row-major C (m, n) = alpha * op(A) op(B) + beta * C, op(A) (m, k) and op(B) (k, n): A stored
// (m, k) with row stride lda, or (k, m) when trans_a; B stored (k, n) with row stride ldb, or (n,
// k) when trans_b. beta == 0 writes C without reading it (C may hold anything, NaN included); k ==
// 0 or alpha == 0 gives C = beta * C. Runs on up to omp_get_max_threads() OpenMP threads (one when
// called inside a parallel region). Every element of C is summed in the same order whatever the
// thread count, so results do not depend on it.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// One operand of sgemm_ex: a matrix as above, or rows given by pointers, which lets a caller
// present rows that are not evenly spaced without copying them (a convolution's column matrix is
// rows of its zero-padded input image, each starting at its own offset):
//   A: op(A)(i, p) = rows[i][p], rows[i] readable for p in [0, k), i in [0, m);
//   B: op(B)(p, j) = rows[p][j + (j / segment) * gap] (segment 0: rows[p][j]): a B row may be
//      made of segments of `segment` columns with `gap` unused floats after each (the padded
//      image's rows, whose padding columns are not outputs).
struct GemmOperand {
  const float* data = nullptr;
  int64_t ld = 0;
  bool trans = false;
  const float* const* rows = nullptr;
  int64_t segment = 0, gap = 0;

  static GemmOperand matrix(const float* data, int64_t ld, bool trans = false) {
    return GemmOperand{data, ld, trans, nullptr, 0, 0};
  }
  static GemmOperand row_pointers(const float* const* rows, int64_t segment = 0, int64_t gap = 0) {
    return GemmOperand{nullptr, 0, false, rows, segment, gap};
  }
};

// C = alpha * op(A) op(B) + beta * C, plus row_bias[i] on every element of row i when row_bias
// is given.
void sgemm_ex(int64_t m, int64_t n, int64_t k, float alpha, const GemmOperand& a,
              const GemmOperand& b, float beta, float* c, int64_t ldc,
              const float* row_bias = nullptr);

// The same with a given instruction set (tests and benchmarks); `isa` must be supported.
void sgemm_with(GemmIsa isa, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                float* c, int64_t ldc);
void sgemm_ex_with(GemmIsa isa, int64_t m, int64_t n, int64_t k, float alpha, const GemmOperand& a,
                   const GemmOperand& b, float beta, float* c, int64_t ldc,
                   const float* row_bias = nullptr);

}  // namespace seg::cpu
