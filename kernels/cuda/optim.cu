// CUDA optimiser step: SGD, RMSprop, Adam and AdamW as fused multi-tensor updates.
//
// Design notes
// - One launch per call (the optimiser makes one call per batch of parameters that share a dtype
//   and step bookkeeping, e.g. all ~300 parameters of a ResNet-101): a table in device memory lists
//   each parameter's buffers (param, grad, up to three state buffers), its element count and its
//   first chunk. The grid walks chunks of kChunk elements, one block per chunk; a block finds its
//   tensor by binary search over the first chunks. Small tensors (biases, batch-norm weights) cost
//   a block each instead of a launch each.
// - Per-element math is kernels/common/optim.h, the CPU's: PyTorch's single-tensor update op for
//   op, with the rn_* intrinsics that nvcc never contracts, so parameters and state equal the CPU's bit
//   for bit (IEEE division and square root: nvcc's defaults, -prec-div and -prec-sqrt, are kept).
//   The hyperparameters are rounded once on the host (OptimScalars), as the CPU rounds them; the
//   one product among them, AdamW's 1 - lr * weight_decay, is computed without contraction.
// - Update options are template flags chosen once per call (no per-element branches); state
//   buffers an update does not read are not loaded (SGD's first step writes its momentum buffer).
// - 16-byte vector loads and stores when all of a tensor's buffers are 16-byte aligned (the caching
//   allocator's blocks are); chunks are multiples of the vector, so only a tensor's end is scalar.
// - The table goes to stream-ordered scratch memory through small kernels that take up to
//   kUploadEntries entries as kernel parameters (3 KiB, under the 4 KiB limit): a copy from
//   pageable host memory may synchronise with the stream, a kernel launch never does.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/common/optim.h"
#include "kernels/common/registry.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_env.h"

namespace seg::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 8192;  // elements per block: 8 vector steps of 256 threads (f32)

// One parameter in the device table.
struct OptimEntry {
  void* param;
  const void* grad;
  void* state[3];
  int64_t numel;
  int64_t first_chunk;
  int64_t aligned;  // every buffer 16-byte aligned
};

static_assert(sizeof(OptimEntry) == 64, "table entry layout");

// Up to kUploadEntries table entries, passed by value to the kernel that writes them.
constexpr int kUploadEntries = 48;
struct UploadBatch {
  OptimEntry entries[kUploadEntries];
  int count;
  int offset;
};

__global__ void upload_table_kernel(OptimEntry* __restrict__ table, const UploadBatch batch) {
  const int i = static_cast<int>(threadIdx.x);
  if (i < batch.count) table[batch.offset + i] = batch.entries[i];
}

template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// The per-element updates, with the state buffers (0..2) each reads and writes.
template <class T, bool kMaximize, bool kWeightDecay, bool kMomentum, bool kNesterov, bool kFirst>
struct SgdElem {
  SEG_HD static constexpr bool reads(int k) { return k == 0 && kMomentum && !kFirst; }
  SEG_HD static constexpr bool writes(int k) { return k == 0 && kMomentum; }
  __device__ __forceinline__ static void apply(const OptimScalars<T>& s, T& p, T g, T& s0, T&, T&) {
    sgd_update<T, kMaximize, kWeightDecay, kMomentum, kNesterov, kFirst>(s, p, g, &s0);
  }
};

template <class T, bool kMaximize, bool kWeightDecay, bool kCentered, bool kMomentum>
struct RmspropElem {
  SEG_HD static constexpr bool reads(int k) {
    return k == 0 || (k == 1 && kMomentum) || (k == 2 && kCentered);
  }
  SEG_HD static constexpr bool writes(int k) { return reads(k); }
  __device__ __forceinline__ static void apply(const OptimScalars<T>& s, T& p, T g, T& s0, T& s1,
                                               T& s2) {
    rmsprop_update<T, kMaximize, kWeightDecay, kCentered, kMomentum>(s, p, g, s0, &s1, &s2);
  }
};

template <class T, bool kMaximize, bool kL2Decay, bool kDecoupled, bool kAmsgrad>
struct AdamElem {
  SEG_HD static constexpr bool reads(int k) { return k < 2 || kAmsgrad; }
  SEG_HD static constexpr bool writes(int k) { return reads(k); }
  __device__ __forceinline__ static void apply(const OptimScalars<T>& s, T& p, T g, T& s0, T& s1,
                                               T& s2) {
    adam_update<T, kMaximize, kL2Decay, kDecoupled, kAmsgrad>(s, p, g, s0, s1, &s2);
  }
};

template <class T, class Elem>
__device__ __forceinline__ void update_scalar(const OptimScalars<T>& s, T* p, const T* g,
                                              T* const (&st)[3], int64_t i) {
  T pv = p[i];
  T v[3] = {T(0), T(0), T(0)};
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    if (Elem::reads(k)) v[k] = st[k][i];
  }
  Elem::apply(s, pv, g[i], v[0], v[1], v[2]);
  p[i] = pv;
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    if (Elem::writes(k)) st[k][i] = v[k];
  }
}

template <class T, class Elem>
__global__ void optim_step_kernel(const OptimEntry* __restrict__ table, int count,
                                  int64_t total_chunks, const OptimScalars<T> s) {
  constexpr int V = 16 / sizeof(T);
  using P = Pack<T, V>;
  for (int64_t c = blockIdx.x; c < total_chunks; c += gridDim.x) {
    // The tensor of chunk c: the last entry whose first chunk is <= c (empty tensors are not in
    // the table, so first chunks strictly increase).
    int lo = 0, hi = count - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (table[mid].first_chunk <= c) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    const OptimEntry& e = table[lo];
    T* const p = static_cast<T*>(e.param);
    const T* const g = static_cast<const T*>(e.grad);
    T* const st[3] = {static_cast<T*>(e.state[0]), static_cast<T*>(e.state[1]),
                      static_cast<T*>(e.state[2])};
    const int64_t begin = (c - e.first_chunk) * kChunk;
    const int64_t end = e.numel < begin + kChunk ? e.numel : begin + kChunk;
    if (e.aligned) {
      for (int64_t i = begin + static_cast<int64_t>(threadIdx.x) * V; i < end;
           i += static_cast<int64_t>(kThreads) * V) {
        if (i + V <= end) {
          P pp = *reinterpret_cast<const P*>(p + i);
          const P gg = *reinterpret_cast<const P*>(g + i);
          P sv[3] = {};
#pragma unroll
          for (int k = 0; k < 3; ++k) {
            if (Elem::reads(k)) sv[k] = *reinterpret_cast<const P*>(st[k] + i);
          }
#pragma unroll
          for (int j = 0; j < V; ++j)
            Elem::apply(s, pp.v[j], gg.v[j], sv[0].v[j], sv[1].v[j], sv[2].v[j]);
          *reinterpret_cast<P*>(p + i) = pp;
#pragma unroll
          for (int k = 0; k < 3; ++k) {
            if (Elem::writes(k)) *reinterpret_cast<P*>(st[k] + i) = sv[k];
          }
        } else {
          for (int64_t k = i; k < end; ++k) update_scalar<T, Elem>(s, p, g, st, k);
        }
      }
    } else {
      for (int64_t i = begin + threadIdx.x; i < end; i += kThreads)
        update_scalar<T, Elem>(s, p, g, st, i);
    }
  }
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

template <class T, class Elem>
void launch(const CudaKernelEnv& env, const OptimEntry* table, int count, int64_t chunks,
            const OptimScalars<T>& s) {
  const unsigned int blocks = static_cast<unsigned int>(std::min<int64_t>(chunks, INT_MAX));
  optim_step_kernel<T, Elem><<<blocks, kThreads, 0, env.stream>>>(table, count, chunks, s);
  SEG_CUDA_LAUNCH_CHECK();
}

template <class T>
void dispatch(const CudaKernelEnv& env, OptimKind kind, const OptimHyper& h,
              const OptimEntry* table, int count, int64_t chunks) {
  OptimScalars<T> s(h);
  {
    // 1 - lr * weight_decay with the product rounded, as the CPU (compiled without contraction)
    // computes it; the volatile keeps the host compiler from fusing it.
    volatile double product = h.lr * h.weight_decay;
    s.decay_factor = static_cast<T>(1.0 - product);
  }
  switch (kind) {
    case OptimKind::sgd: {
      const SgdFlags f = sgd_flags(h);
      if (f.momentum) {
        bool_dispatch(
            [&](auto maximize, auto weight_decay, auto nesterov, auto first) {
              launch<T, SgdElem<T, decltype(maximize)::value, decltype(weight_decay)::value, true,
                                decltype(nesterov)::value, decltype(first)::value>>(
                  env, table, count, chunks, s);
            },
            f.maximize, f.weight_decay, f.nesterov, f.first);
      } else {
        bool_dispatch(
            [&](auto maximize, auto weight_decay) {
              launch<T, SgdElem<T, decltype(maximize)::value, decltype(weight_decay)::value, false,
                                false, false>>(env, table, count, chunks, s);
            },
            f.maximize, f.weight_decay);
      }
      break;
    }
    case OptimKind::rmsprop: {
      const RmspropFlags f = rmsprop_flags(h);
      bool_dispatch(
          [&](auto maximize, auto weight_decay, auto centered, auto momentum) {
            launch<T, RmspropElem<T, decltype(maximize)::value, decltype(weight_decay)::value,
                                  decltype(centered)::value, decltype(momentum)::value>>(
                env, table, count, chunks, s);
          },
          f.maximize, f.weight_decay, f.centered, f.momentum);
      break;
    }
    case OptimKind::adam:
    case OptimKind::adamw: {
      const AdamFlags f = adam_flags(h, kind == OptimKind::adamw);
      bool_dispatch(
          [&](auto maximize, auto amsgrad) {
            constexpr bool kMax = decltype(maximize)::value, kAms = decltype(amsgrad)::value;
            if (f.decoupled) {
              launch<T, AdamElem<T, kMax, false, true, kAms>>(env, table, count, chunks, s);
            } else if (f.l2_decay) {
              launch<T, AdamElem<T, kMax, true, false, kAms>>(env, table, count, chunks, s);
            } else {
              launch<T, AdamElem<T, kMax, false, false, kAms>>(env, table, count, chunks, s);
            }
          },
          f.maximize, f.amsgrad);
      break;
    }
  }
}

void step(const ExecContext& ctx, OptimKind kind, const OptimHyper& h, const OptimTensor* tensors,
          int64_t count) {
  if (count <= 0) return;
  if (count > INT_MAX) throw std::invalid_argument("optimizer_step: too many tensors in one call");
  const DType dtype = tensors[0].param.dtype;
  if (dtype != DType::f32 && dtype != DType::f64) {
    throw std::invalid_argument(std::string("optimizer_step: dtype ") + dtype_name(dtype) +
                                " is not supported on CUDA");
  }
  check_optim_tensors(kind, h, tensors, count);
  std::vector<OptimEntry> table;
  table.reserve(static_cast<size_t>(count));
  int64_t chunks = 0;
  for (int64_t k = 0; k < count; ++k) {
    const OptimTensor& t = tensors[k];
    const int64_t n = t.param.numel();
    if (n == 0) continue;
    OptimEntry e{};
    e.param = t.param.data;
    e.grad = t.grad.data;
    e.state[0] = t.state0.data;
    e.state[1] = t.state1.data;
    e.state[2] = t.state2.data;
    e.numel = n;
    e.first_chunk = chunks;
    e.aligned = aligned16(e.param) && aligned16(e.grad) && aligned16(e.state[0]) &&
                aligned16(e.state[1]) &&
                aligned16(e.state[2]);  // an unused (null) buffer is aligned
    table.push_back(e);
    chunks += (n + kChunk - 1) / kChunk;
  }
  if (table.empty()) return;
  const CudaKernelEnv& env = env_of(ctx);
  const size_t bytes = table.size() * sizeof(OptimEntry);
  ScratchBuffer device_table(env, bytes);
  for (size_t begin = 0; begin < table.size(); begin += kUploadEntries) {
    UploadBatch batch{};
    batch.count = static_cast<int>(std::min<size_t>(kUploadEntries, table.size() - begin));
    batch.offset = static_cast<int>(begin);
    std::copy(table.begin() + static_cast<std::ptrdiff_t>(begin),
              table.begin() + static_cast<std::ptrdiff_t>(begin + batch.count), batch.entries);
    upload_table_kernel<<<1, 64, 0, env.stream>>>(device_table.as<OptimEntry>(), batch);
    SEG_CUDA_LAUNCH_CHECK();
  }
  const int entries = static_cast<int>(table.size());
  if (dtype == DType::f32) {
    dispatch<float>(env, kind, h, device_table.as<OptimEntry>(), entries, chunks);
  } else {
    dispatch<double>(env, kind, h, device_table.as<OptimEntry>(), entries, chunks);
  }
}

const OptimKernels kOptimKernels{step};

}  // namespace

void register_optim_kernels(KernelRegistry& r) {
  r.set<OpId::optimizer_step>(DeviceType::cuda, &kOptimKernels);
}

}  // namespace seg::cuda
