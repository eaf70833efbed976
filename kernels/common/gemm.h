// Kernel interface of matrix multiplication (linear layers, matmul).
//
// One strided-batched GEMM covers every product the front-ends need (matmul, linear and the fused
// ASPP projection): the CPU backend loops over the batch with OpenBLAS sgemm/dgemm, the CUDA backend
// maps it onto one cublasGemmStridedBatchedEx_64 call (kernels/cuda/gemm.cpp; TF32 for f32 when the
// context allows it). Transposes are flags, never copies: a (out, in) weight is used as its own
// transpose, and an operand inside a larger matrix is passed as an offset pointer with that
// matrix's leading dimension.
#pragma once

#include <cstdint>

#include "kernels/common/types.h"

namespace seg {

// Row-major, batched: for each b in [0, batch):
//   C_b (m, n) = alpha * op(A_b) op(B_b) + beta * C_b
// where op(A_b) is (m, k): A_b stored (m, k) with row stride lda, or (k, m) when trans_a (likewise
// op(B_b) is (k, n): B_b stored (k, n) with row stride ldb, or (n, k) when trans_b).
// Pointers advance by stride_a/b/c elements per batch; a stride of 0 reuses one matrix. A stride_c
// of 0 with batch > 1 sums the products into one C:
//   C = alpha * sum_b op(A_b) op(B_b) + beta * C
// (the weight gradient of a matrix broadcast over a batch), in batch order, so it is deterministic.
// k == 0 gives C = beta * C (and zeros for beta == 0, whatever C held).
struct GemmArgs {
  bool trans_a = false;
  bool trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  double alpha = 1.0, beta = 0.0;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
};

struct GemmKernels {
  // a, b, c are the base pointers (dtype f32 or f64, all the same).
  void (*gemm)(const ExecContext& ctx, const GemmArgs& args, const View& a, const View& b,
               const View& c);
};

}  // namespace seg
