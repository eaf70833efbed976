// register_cpu_kernels: fills the registry with every CPU kernel family, by explicit calls.
#include "kernels/common/registry.h"

namespace seg {
namespace cpu {
void register_elementwise_kernels(KernelRegistry& r);  // elementwise.cpp
void register_gemm_kernels(KernelRegistry& r);         // gemm.cpp
void register_conv_kernels(KernelRegistry& r);         // conv.cpp
void register_norm_kernels(KernelRegistry& r);         // norm.cpp
void register_pool_kernels(KernelRegistry& r);         // pool.cpp
void register_upsample_kernels(KernelRegistry& r);     // upsample.cpp
void register_softmax_kernels(KernelRegistry& r);      // softmax.cpp (softmax, cross entropy)
void register_loss_kernels(KernelRegistry& r);         // loss.cpp (triplet)
void register_optim_kernels(KernelRegistry& r);        // optim.cpp
void register_metrics_kernels(KernelRegistry& r);      // metrics.cpp (confusion matrix)
}  // namespace cpu

void register_cpu_kernels(KernelRegistry& r) {
  cpu::register_elementwise_kernels(r);
  cpu::register_gemm_kernels(r);
  cpu::register_conv_kernels(r);
  cpu::register_norm_kernels(r);
  cpu::register_pool_kernels(r);
  cpu::register_upsample_kernels(r);
  cpu::register_softmax_kernels(r);
  cpu::register_loss_kernels(r);
  cpu::register_optim_kernels(r);
  cpu::register_metrics_kernels(r);
}

}  // namespace seg
