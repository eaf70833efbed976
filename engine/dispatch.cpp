#include "engine/dispatch.h"

namespace seg {

static KernelRegistry build_registry() {
  KernelRegistry registry;
  register_cpu_kernels(registry);
#ifdef SEG_WITH_CUDA
  register_cuda_kernels(registry);
#endif
  return registry;
}

const KernelRegistry& kernel_registry() {
  // Built once, on first use, by the explicit calls above; read-only afterwards.
  static const KernelRegistry registry = build_registry();
  return registry;
}

}  // namespace seg
