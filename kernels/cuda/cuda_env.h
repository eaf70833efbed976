// What CUDA kernels receive through ExecContext::device_state: the rank's device, stream, library
// handles, scratch memory and caches. Filled and owned by the engine's CudaContext
// (engine/cuda/cuda_context.h); kernels never create streams, handles or allocations themselves.
//
// Every kernel runs on `stream`. Scratch memory from `scratch()` is stream-ordered: it may be
// released as soon as the work using it has been queued, because later allocations that reuse it
// are queued behind that work on the same stream.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstddef>
#include <cstdint>

#include "kernels/common/types.h"

namespace seg::cuda {

class ConvAlgoCache;  // kernels/cuda/conv_algo_cache.h, owned by the context

struct CudaKernelEnv {
  int device = 0;
  cudaStream_t stream = nullptr;
  cudnnHandle_t cudnn = nullptr;
  cublasHandle_t cublas = nullptr;
  cublasLtHandle_t cublas_lt = nullptr;
  bool allow_tf32 = true;  // TF32 tensor cores for f32 convolutions and GEMMs (Ampere and newer)
  int sm_count = 0;
  int max_threads_per_sm = 0;
  size_t l2_bytes = 0;

  // Stream-ordered scratch allocations (through the context's caching allocator).
  void* allocator = nullptr;
  void* (*allocate)(void* allocator, size_t bytes) = nullptr;
  void (*deallocate)(void* allocator, void* ptr, size_t bytes) = nullptr;

  // The one shared cuDNN/cuBLAS workspace: grows to the largest request, never shrinks.
  void* workspace_owner = nullptr;
  void* (*workspace)(void* owner, size_t bytes) = nullptr;

  ConvAlgoCache* conv_algos = nullptr;
};

inline const CudaKernelEnv& env_of(const ExecContext& ctx) {
  return *static_cast<const CudaKernelEnv*>(ctx.device_state);
}

// Device memory for a kernel's temporaries, returned to the pool when destroyed (stream-ordered).
class ScratchBuffer {
 public:
  ScratchBuffer(const CudaKernelEnv& env, size_t bytes) : env_(&env), bytes_(bytes) {
    ptr_ = bytes ? env.allocate(env.allocator, bytes) : nullptr;
  }
  ~ScratchBuffer() {
    if (ptr_) env_->deallocate(env_->allocator, ptr_, bytes_);
  }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  void* get() const { return ptr_; }

 private:
  const CudaKernelEnv* env_;
  size_t bytes_;
  void* ptr_ = nullptr;
};

}  // namespace seg::cuda
