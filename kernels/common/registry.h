// The op catalog and the kernel registry.
//
// SEG_OPS lists every user-facing op once: its name, the kernel family it dispatches to (NoKernels
// for ops composed of other ops or of views), and whether it is differentiable. Tests iterate this
// list: every differentiable op must have an f64 gradient check, every op with kernels must be
// registered on the CPU, and (with the CUDA backend) every op with kernels must have a CUDA parity
// test. Adding an op here without its tests fails the registry tests.
//
// A KernelRegistry maps (op, device type) to the backend's kernel table for that op. It is filled by
// explicit calls (register_cpu_kernels, register_cuda_kernels), never by static initialisers.
#pragma once

#include <array>
#include <type_traits>
#include <string_view>

#include "kernels/common/conv.h"
#include "kernels/common/elementwise.h"
#include "kernels/common/gemm.h"
#include "kernels/common/loss.h"
#include "kernels/common/metrics.h"
#include "kernels/common/norm.h"
#include "kernels/common/optim.h"
#include "kernels/common/pool.h"
#include "kernels/common/softmax.h"
#include "kernels/common/types.h"
#include "kernels/common/upsample.h"

namespace seg {

// Ops without kernels of their own.
struct NoKernels {};

// clang-format off
#define SEG_OPS(X)                                             \
  /* tensor creation and movement */                           \
  X(fill,                FillKernels,              false)      \
  X(copy,                CopyKernels,              true)       \
  X(arange,              ArangeKernels,            false)      \
  X(random,              RandomKernels,            false)      \
  /* views */                                                  \
  X(view,                NoKernels,                true)       \
  X(permute,             NoKernels,                true)       \
  X(narrow,              NoKernels,                true)       \
  X(expand,              NoKernels,                true)       \
  /* elementwise */                                            \
  X(neg,                 UnaryKernels,             true)       \
  X(relu,                UnaryKernels,             true)       \
  X(abs,                 UnaryKernels,             true)       \
  X(exp,                 UnaryKernels,             true)       \
  X(log,                 UnaryKernels,             true)       \
  X(sqrt,                UnaryKernels,             true)       \
  X(tanh,                UnaryKernels,             true)       \
  X(sigmoid,             UnaryKernels,             true)       \
  X(add_scalar,          UnaryKernels,             true)       \
  X(mul_scalar,          UnaryKernels,             true)       \
  X(pow_scalar,          UnaryKernels,             true)       \
  X(rsub_scalar,         UnaryKernels,             true)       \
  X(add,                 BinaryKernels,            true)       \
  X(sub,                 BinaryKernels,            true)       \
  X(mul,                 BinaryKernels,            true)       \
  X(div,                 BinaryKernels,            true)       \
  /* reductions */                                             \
  X(sum,                 ReduceKernels,            true)       \
  X(mean,                ReduceKernels,            true)       \
  X(argmax,              ArgmaxKernels,            false)      \
  /* layers */                                                 \
  X(matmul,              GemmKernels,              true)       \
  X(linear,              GemmKernels,              true)       \
  X(conv2d,              Conv2dKernels,            true)       \
  X(conv_transpose2d,    Conv2dKernels,            true)       \
  X(batch_norm2d,        BatchNormKernels,         true)       \
  X(max_pool2d,          MaxPool2dKernels,         true)       \
  X(adaptive_avg_pool2d, AdaptiveAvgPool2dKernels, true)       \
  X(upsample_bilinear2d, UpsampleBilinearKernels,  true)       \
  X(aspp_projection,     GemmKernels,              true)       \
  X(pad2d,               NoKernels,                true)       \
  X(cat,                 NoKernels,                true)       \
  X(dropout,             NoKernels,                true)       \
  X(softmax,             SoftmaxKernels,           true)       \
  X(log_softmax,         SoftmaxKernels,           true)       \
  /* losses */                                                 \
  X(cross_entropy,       CrossEntropyKernels,      true)       \
  X(l1_loss,             NoKernels,                true)       \
  X(mse_loss,            NoKernels,                true)       \
  X(triplet_margin_loss, TripletKernels,           true)       \
  /* metrics */                                                \
  X(confusion_matrix,    ConfusionKernels,         false)      \
  /* optimiser updates */                                      \
  X(optimizer_step,      OptimKernels,             false)
// clang-format on

enum class OpId : int {
#define SEG_OP_ENUM(name, kernels, differentiable) name,
  SEG_OPS(SEG_OP_ENUM)
#undef SEG_OP_ENUM
};

struct OpInfo {
  OpId id;
  std::string_view name;
  bool has_kernels;
  bool differentiable;
};

inline constexpr std::array kOpCatalog = {
#define SEG_OP_INFO(name, kernels, differentiable) \
  OpInfo{OpId::name, #name, !std::is_same_v<kernels, NoKernels>, differentiable},
    SEG_OPS(SEG_OP_INFO)
#undef SEG_OP_INFO
};

constexpr int kNumOps = static_cast<int>(kOpCatalog.size());

constexpr const OpInfo& op_info(OpId id) { return kOpCatalog[static_cast<int>(id)]; }

// The kernel table type of each op.
template <OpId id>
struct KernelsOf;
#define SEG_OP_KERNELS_OF(name, kernels, differentiable) \
  template <>                                            \
  struct KernelsOf<OpId::name> {                         \
    using type = kernels;                                \
  };
SEG_OPS(SEG_OP_KERNELS_OF)
#undef SEG_OP_KERNELS_OF

class KernelRegistry {
 public:
  template <OpId id>
  void set(DeviceType device, const typename KernelsOf<id>::type* kernels) {
    table_[static_cast<int>(id)][static_cast<int>(device)] = kernels;
  }
  // Null when the backend has no kernels for the op.
  template <OpId id>
  const typename KernelsOf<id>::type* get(DeviceType device) const {
    return static_cast<const typename KernelsOf<id>::type*>(
        table_[static_cast<int>(id)][static_cast<int>(device)]);
  }
  bool has(OpId id, DeviceType device) const {
    return table_[static_cast<int>(id)][static_cast<int>(device)] != nullptr;
  }

 private:
  std::array<std::array<const void*, kNumDeviceTypes>, kNumOps> table_{};
};

// Backends fill the registry with these (defined in kernels/cpu and kernels/cuda).
void register_cpu_kernels(KernelRegistry& registry);
void register_cuda_kernels(KernelRegistry& registry);

}  // namespace seg
