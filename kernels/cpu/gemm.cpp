// CPU GEMM: our own sgemm (kernels/cpu/sgemm.h) for f32, OpenBLAS's cblas_dgemm for f64, batched
// by a loop over the batch.
//
// Design notes
// - The loop is sequential and every call is made outside any OpenMP region: the GEMM threads are
//   the GEMM's own (OpenMP for ours, OpenBLAS's pool for dgemm), and nesting them in our own
//   parallel loop would oversubscribe the cores.
// - A batch with stride_c == 0 accumulates into one C (beta for the first product, 1 after), in
//   batch order: deterministic, whatever the thread count.
// - k == 0 is handled here (C = beta * C) rather than passed on: cblas rejects lda < 1 and the
//   result must not depend on what C held when beta == 0.
#include <cblas.h>

#include <climits>
#include <stdexcept>
#include <string>

#include "kernels/common/registry.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/sgemm.h"

namespace seg::cpu {
namespace {

// f32: our own GEMM (kernels/cpu/sgemm.h); f64: OpenBLAS.
inline void blas_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda,
                      const float* b, int ldb, float beta, float* c, int ldc) {
  sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

inline void blas_gemm(bool ta, bool tb, int m, int n, int k, double alpha, const double* a, int lda,
                      const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, a, lda, b, ldb, beta, c, ldc);
}

int to_blas_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX) {
    throw std::invalid_argument(std::string("gemm: ") + what + " = " + std::to_string(v) +
                                " is outside the range of a BLAS int");
  }
  return static_cast<int>(v);
}

// C (m, n) = beta * C, with exact zeros for beta == 0.
template <class T>
void scale_c(T* c, int64_t m, int64_t n, int64_t ldc, T beta) {
  for (int64_t i = 0; i < m; ++i) {
    T* row = c + i * ldc;
    if (beta == T(0)) {
      for (int64_t j = 0; j < n; ++j) row[j] = T(0);
    } else if (beta != T(1)) {
      for (int64_t j = 0; j < n; ++j) row[j] *= beta;
    }
  }
}

template <class T>
void gemm_typed(const GemmArgs& g, const View& a, const View& b, const View& c) {
  if (g.m == 0 || g.n == 0) return;
  if (g.batch <= 0) {  // an empty sum into one C: C = beta * C
    if (g.stride_c == 0) scale_c(c.ptr<T>(), g.m, g.n, g.ldc, static_cast<T>(g.beta));
    return;
  }
  const int m = to_blas_int(g.m, "m"), n = to_blas_int(g.n, "n"), k = to_blas_int(g.k, "k");
  const int lda = to_blas_int(g.lda, "lda"), ldb = to_blas_int(g.ldb, "ldb");
  const int ldc = to_blas_int(g.ldc, "ldc");
  if (k > 0) {
    // cblas checks these too, but reports them on stderr and returns: fail loudly instead.
    const int64_t a_cols = g.trans_a ? g.m : g.k, b_cols = g.trans_b ? g.k : g.n;
    if (lda < a_cols || ldb < b_cols || ldc < g.n) {
      throw std::invalid_argument("gemm: leading dimension too small (lda " + std::to_string(lda) +
                                  ", ldb " + std::to_string(ldb) + ", ldc " + std::to_string(ldc) +
                                  " for m " + std::to_string(m) + ", n " + std::to_string(n) +
                                  ", k " + std::to_string(k) + ")");
    }
  }
  const T* pa = a.ptr<const T>();
  const T* pb = b.ptr<const T>();
  T* pc = c.ptr<T>();
  const T alpha = static_cast<T>(g.alpha);
  for (int64_t i = 0; i < g.batch; ++i) {
    const bool accumulate = g.stride_c == 0 && i > 0;
    const T beta = accumulate ? T(1) : static_cast<T>(g.beta);
    T* ci = pc + i * g.stride_c;
    if (k == 0) {
      scale_c(ci, g.m, g.n, g.ldc, beta);
      continue;
    }
    blas_gemm(g.trans_a, g.trans_b, m, n, k, alpha, pa + i * g.stride_a, lda, pb + i * g.stride_b,
              ldb, beta, ci, ldc);
  }
}

void gemm(const ExecContext&, const GemmArgs& args, const View& a, const View& b, const View& c) {
  if (a.dtype != c.dtype || b.dtype != c.dtype) {
    throw std::invalid_argument(std::string("gemm: mixed dtypes ") + dtype_name(a.dtype) + ", " +
                                dtype_name(b.dtype) + ", " + dtype_name(c.dtype));
  }
  SEG_CPU_DISPATCH_FLOAT(c.dtype, "gemm", T, { gemm_typed<T>(args, a, b, c); });
}

const GemmKernels kGemmKernels{gemm};

}  // namespace

void register_gemm_kernels(KernelRegistry& r) {
  r.set<OpId::matmul>(DeviceType::cpu, &kGemmKernels);
  r.set<OpId::linear>(DeviceType::cpu, &kGemmKernels);
  r.set<OpId::aspp_projection>(DeviceType::cpu, &kGemmKernels);
}

}  // namespace seg::cpu
