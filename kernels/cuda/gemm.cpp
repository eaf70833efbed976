// CUDA GEMM (matmul, linear, aspp_projection): GemmArgs on cuBLAS's strided-batched GEMM.
//
// Design notes
// - Row-major on a column-major library: a row-major (m, n) matrix with row stride ld is the
//   column-major (n, m) matrix with the same ld, i.e. its transpose. So C = op(A) op(B) is computed
//   as C^T = op(B)^T op(A)^T: cuBLAS gets B first, then A, with m and n exchanged; the transpose
//   flags and leading dimensions pass through unchanged. Nothing is copied.
// - One cublasGemmStridedBatchedEx_64 call per GemmArgs (64-bit sizes and batch count): stride 0
//   reuses a matrix for every batch entry, as the interface wants.
// - stride_c == 0 sums the batch's products into one C, in batch order (deterministic):
//     * folded into ONE GEMM with k' = batch * k when both operands hold their batches stacked
//       along k in memory (the usual case: (b, rows, m)^T @ (b, rows, n) is (b*rows, m)^T @
//       (b*rows, n)); cuBLAS then sums everything in its own fixed order, which is faster and
//       deterministic on a given GPU and library version (cuBLAS's reproducibility guarantee: one
//       stream, no atomics mode);
//     * otherwise a loop of GEMMs: the first with beta, the others with beta = 1.
// - f32 uses TF32 tensor cores (CUBLAS_COMPUTE_32F_FAST_TF32) when env.allow_tf32, else
//   CUBLAS_COMPUTE_32F (the context also sets the handle's math mode to CUBLAS_DEFAULT_MATH then,
//   so nothing may fall back to TF32); f64 uses CUBLAS_COMPUTE_64F.
// - k == 0 (and an empty sum) is handled here, not passed on: C = beta * C, with exact zeros for
//   beta == 0 whatever C held (cudaMemset2DAsync), a cuBLAS scal otherwise.
// - Alpha and beta are host scalars; the pointer mode is set to host on every call because the
//   handle is shared. No workspace is set on the handle: cuBLAS keeps its own default one (the
//   shared cuDNN workspace may move when it grows, which a handle must never see).
// - Everything runs on env.stream (the handle's stream); nothing synchronises.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/common/registry.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_env.h"

namespace seg::cuda {
namespace {

// The cuBLAS types of one call; alpha and beta are host values of the compute type.
struct BlasCall {
  cudaDataType_t data = CUDA_R_32F;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  size_t elem = 4;
  bool f64 = false;
  float alpha32 = 1.0f, beta32 = 0.0f, one32 = 1.0f;
  double alpha64 = 1.0, beta64 = 0.0, one64 = 1.0;

  const void* alpha() const { return f64 ? static_cast<const void*>(&alpha64) : &alpha32; }
  const void* beta() const { return f64 ? static_cast<const void*>(&beta64) : &beta32; }
  const void* one() const { return f64 ? static_cast<const void*>(&one64) : &one32; }
};

BlasCall blas_call(DType dtype, bool allow_tf32, double alpha, double beta) {
  BlasCall c;
  switch (dtype) {
    case DType::f32:
      c.data = CUDA_R_32F;
      c.compute = allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
      c.elem = 4;
      break;
    case DType::f64:
      c.data = CUDA_R_64F;
      c.compute = CUBLAS_COMPUTE_64F;
      c.elem = 8;
      c.f64 = true;
      break;
    default:
      throw std::invalid_argument(std::string("gemm: dtype ") + dtype_name(dtype) +
                                  " is not supported on CUDA (f32 and f64 only)");
  }
  c.alpha32 = static_cast<float>(alpha);
  c.beta32 = static_cast<float>(beta);
  c.alpha64 = alpha;
  c.beta64 = beta;
  return c;
}

const char* byte_ptr(const View& v) { return static_cast<const char*>(v.data); }

// Row-major C_b (m, n) = alpha op(A_b) op(B_b) + beta C_b for b in [0, batch), as the column-major
// C_b^T = op(B_b)^T op(A_b)^T. Pointers are bytes; strides are elements.
void strided_gemm(const CudaKernelEnv& env, const BlasCall& t, bool ta, bool tb, int64_t m,
                  int64_t n, int64_t k, const void* alpha, const char* a, int64_t lda, int64_t sa,
                  const char* b, int64_t ldb, int64_t sb, const void* beta, char* c, int64_t ldc,
                  int64_t sc, int64_t batch) {
  SEG_CUBLAS_CHECK(cublasGemmStridedBatchedEx_64(
      env.cublas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, alpha, b,
      t.data, ldb, static_cast<long long>(sb), a, t.data, lda, static_cast<long long>(sa), beta, c,
      t.data, ldc, static_cast<long long>(sc), batch, t.compute, CUBLAS_GEMM_DEFAULT));
}

// C (m, n) with row stride ldc = beta * C; exact zeros for beta == 0.
void scale_c(const CudaKernelEnv& env, const BlasCall& t, int64_t m, int64_t n, int64_t ldc,
             char* c) {
  const double beta = t.f64 ? t.beta64 : static_cast<double>(t.beta32);
  if (beta == 1.0 || m == 0 || n == 0) return;
  if (beta == 0.0) {
    SEG_CUDA_CHECK(cudaMemset2DAsync(c, static_cast<size_t>(ldc) * t.elem, 0,
                                     static_cast<size_t>(n) * t.elem, static_cast<size_t>(m),
                                     env.stream));
    return;
  }
  const cudaDataType_t exec = t.f64 ? CUDA_R_64F : CUDA_R_32F;
  if (ldc == n || m == 1) {  // one contiguous run of m * n elements
    SEG_CUBLAS_CHECK(cublasScalEx_64(env.cublas, m * n, t.beta(), exec, c, t.data, 1, exec));
    return;
  }
  for (int64_t i = 0; i < m; ++i) {
    SEG_CUBLAS_CHECK(cublasScalEx_64(env.cublas, n, t.beta(), exec,
                                     c + i * ldc * static_cast<int64_t>(t.elem), t.data, 1, exec));
  }
}

// Whether sum_b op(A_b) op(B_b) is one GEMM with k' = batch * k over the same pointers and leading
// dimensions: each operand's batch entries must follow each other along k in memory.
bool foldable_sum(const GemmArgs& g) {
  if (g.batch <= 1) return false;
  const int64_t k = g.k;
  // op(A) is (m, k): stored (k, m) when trans_a (k along rows), else (m, k) (k along columns).
  const bool a_ok = g.trans_a ? g.stride_a == k * g.lda
                              : (g.stride_a == k && g.lda >= g.batch * k);
  // op(B) is (k, n): stored (n, k) when trans_b (k along columns), else (k, n) (k along rows).
  const bool b_ok = g.trans_b ? (g.stride_b == k && g.ldb >= g.batch * k)
                              : g.stride_b == k * g.ldb;
  return a_ok && b_ok;
}

void check_leading_dims(const GemmArgs& g) {
  const int64_t a_cols = g.trans_a ? g.m : g.k, b_cols = g.trans_b ? g.k : g.n;
  if (g.lda < std::max<int64_t>(1, a_cols) || g.ldb < std::max<int64_t>(1, b_cols) ||
      g.ldc < std::max<int64_t>(1, g.n)) {
    throw std::invalid_argument("gemm: leading dimension too small (lda " + std::to_string(g.lda) +
                                ", ldb " + std::to_string(g.ldb) + ", ldc " +
                                std::to_string(g.ldc) + " for m " + std::to_string(g.m) +
                                ", n " + std::to_string(g.n) + ", k " + std::to_string(g.k) +
                                (g.trans_a ? ", A transposed" : "") +
                                (g.trans_b ? ", B transposed" : "") + ")");
  }
}

void gemm(const ExecContext& ctx, const GemmArgs& g, const View& a, const View& b, const View& c) {
  if (a.dtype != c.dtype || b.dtype != c.dtype) {
    throw std::invalid_argument(std::string("gemm: mixed dtypes ") + dtype_name(a.dtype) + ", " +
                                dtype_name(b.dtype) + ", " + dtype_name(c.dtype));
  }
  if (g.m < 0 || g.n < 0 || g.k < 0) {
    throw std::invalid_argument("gemm: negative size (m " + std::to_string(g.m) + ", n " +
                                std::to_string(g.n) + ", k " + std::to_string(g.k) + ")");
  }
  const CudaKernelEnv& env = env_of(ctx);
  const BlasCall t = blas_call(c.dtype, env.allow_tf32, g.alpha, g.beta);
  if (g.m == 0 || g.n == 0) return;
  SEG_CUBLAS_CHECK(cublasSetPointerMode(env.cublas, CUBLAS_POINTER_MODE_HOST));
  char* pc = static_cast<char*>(c.data);
  const int64_t es = static_cast<int64_t>(t.elem);
  if (g.batch <= 0) {  // an empty sum into one C: C = beta * C
    if (g.stride_c == 0) scale_c(env, t, g.m, g.n, g.ldc, pc);
    return;
  }
  if (g.k == 0) {  // every product is empty: C_b = beta * C_b (once when summing into one C)
    const int64_t targets = g.stride_c == 0 ? 1 : g.batch;
    for (int64_t i = 0; i < targets; ++i) scale_c(env, t, g.m, g.n, g.ldc, pc + i * g.stride_c * es);
    return;
  }
  check_leading_dims(g);
  const char* pa = byte_ptr(a);
  const char* pb = byte_ptr(b);
  if (g.stride_c != 0 || g.batch == 1) {
    strided_gemm(env, t, g.trans_a, g.trans_b, g.m, g.n, g.k, t.alpha(), pa, g.lda, g.stride_a, pb,
                 g.ldb, g.stride_b, t.beta(), pc, g.ldc, g.stride_c, g.batch);
    return;
  }
  if (foldable_sum(g)) {
    strided_gemm(env, t, g.trans_a, g.trans_b, g.m, g.n, g.batch * g.k, t.alpha(), pa, g.lda, 0,
                 pb, g.ldb, 0, t.beta(), pc, g.ldc, 0, 1);
    return;
  }
  for (int64_t i = 0; i < g.batch; ++i) {
    strided_gemm(env, t, g.trans_a, g.trans_b, g.m, g.n, g.k, t.alpha(), pa + i * g.stride_a * es,
                 g.lda, 0, pb + i * g.stride_b * es, g.ldb, 0, i == 0 ? t.beta() : t.one(), pc,
                 g.ldc, 0, 1);
  }
}

const GemmKernels kGemmKernels{gemm};

}  // namespace

void register_gemm_kernels(KernelRegistry& r) {
  r.set<OpId::matmul>(DeviceType::cuda, &kGemmKernels);
  r.set<OpId::linear>(DeviceType::cuda, &kGemmKernels);
  r.set<OpId::aspp_projection>(DeviceType::cuda, &kGemmKernels);
}

}  // namespace seg::cuda
