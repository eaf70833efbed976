// register_cuda_kernels: fills the registry with every CUDA kernel family, by explicit calls.
#include "kernels/common/registry.h"

namespace seg {
namespace cuda {
void register_elementwise_kernels(KernelRegistry& r);  // elementwise.cu (fill, copy, arange, random, unary, binary, sum, argmax)
void register_optim_kernels(KernelRegistry& r);        // optim.cu
void register_gemm_kernels(KernelRegistry& r);         // gemm.cpp (cuBLAS; matmul, linear, aspp_projection)
void register_conv_kernels(KernelRegistry& r);         // conv.cpp (cuDNN)
void register_norm_kernels(KernelRegistry& r);         // norm.cu (cuDNN batch norm + own eval backward)
void register_pool_kernels(KernelRegistry& r);         // pool.cu
void register_upsample_kernels(KernelRegistry& r);     // upsample.cu
void register_softmax_kernels(KernelRegistry& r);      // softmax.cu (softmax, fused cross entropy)
void register_loss_kernels(KernelRegistry& r);         // loss.cu (fused triplet)
void register_metrics_kernels(KernelRegistry& r);      // metrics.cu (argmax + confusion matrix)
}  // namespace cuda

void register_cuda_kernels(KernelRegistry& r) {
  cuda::register_elementwise_kernels(r);
  cuda::register_optim_kernels(r);
  cuda::register_gemm_kernels(r);
  cuda::register_conv_kernels(r);
  cuda::register_norm_kernels(r);
  cuda::register_pool_kernels(r);
  cuda::register_upsample_kernels(r);
  cuda::register_softmax_kernels(r);
  cuda::register_loss_kernels(r);
  cuda::register_metrics_kernels(r);
}

}  // namespace seg
