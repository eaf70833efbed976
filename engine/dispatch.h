// Dispatch of ops to the backend of their tensors' device.
//
// The registry is built once, on first use, by explicit calls to each compiled backend's
// register_*_kernels; after that it is read-only. Nothing registers itself from a static initialiser.
#pragma once

#include <string>

#include "engine/error.h"
#include "engine/tensor.h"
#include "kernels/common/registry.h"

namespace seg {

const KernelRegistry& kernel_registry();

// The kernels of `id` for `device`; throws naming the op and device when the backend has none.
template <OpId id>
const typename KernelsOf<id>::type& kernels_for(Device device) {
  const auto* k = kernel_registry().get<id>(device.type);
  SEG_CHECK(k != nullptr, op_info(id).name, ": no kernels for device ", device.str(),
            device.is_cuda() && !cuda_built() ? " (this binary was built without CUDA)" : "");
  return *k;
}

}  // namespace seg
