// CudaContext: one rank's GPU. Owns the compute and copy streams, the cuDNN, cuBLAS and cublasLt
// handles, the caching device allocator, the pinned host allocator, the shared library workspace and
// the cuDNN algorithm cache, and hands them to kernels as a CudaKernelEnv. Created by the
// application (one per rank and device) and destroyed after every tensor it allocated.
//
//   auto gpu = seg::cuda::CudaContext::create(local_rank);
//   Tensor x = seg::randn({8, 3, 512, 1024}, gen).to(gpu->device());
//
// TF32 tensor cores are on by default for f32 convolutions and GEMMs on Ampere and newer
// (CudaContextOptions::allow_tf32 = false turns them off, e.g. for parity tests).
#pragma once

#include <memory>

#include "engine/cuda/cuda_allocator.h"
#include "engine/device_context.h"
#include "kernels/cuda/cuda_env.h"

namespace seg::cuda {

struct CudaContextOptions {
  bool allow_tf32 = true;
  size_t guard_bytes = 0;  // allocator guard bytes (tests; see cuda_allocator.h)
  // Bound on the pinned host memory kept cached for reuse (see PinnedHostAllocator).
  size_t pinned_cache_bytes = PinnedHostAllocator::kDefaultMaxCachedBytes;
};

class CudaContext final : public DeviceContext {
 public:
  // Throws naming the device when it does not exist or the CUDA runtime cannot use it.
  static std::unique_ptr<CudaContext> create(int device_index, const CudaContextOptions& options = {});
  ~CudaContext() override;
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  Device device() override { return Device::cuda(index_, this); }
  Allocator& allocator() override { return *allocator_; }
  void* kernel_state() override { return &env_; }
  void copy_from_host(void* dst, const void* src, size_t bytes) override;
  void copy_to_host(void* dst, const void* src, size_t bytes) override;
  void copy_device(void* dst, const void* src, size_t bytes) override;
  void synchronize() override;

  CudaCachingAllocator& device_allocator() { return *allocator_; }
  PinnedHostAllocator& pinned_allocator() { return *pinned_; }
  const CudaKernelEnv& env() const { return env_; }
  cudaStream_t compute_stream() const { return env_.stream; }
  cudaStream_t copy_stream() const { return copy_stream_; }
  const cudaDeviceProp& properties() const { return props_; }
  void set_allow_tf32(bool allow);

 private:
  CudaContext(int index, const CudaContextOptions& options);
  static void* env_allocate(void* allocator, size_t bytes);
  static void env_deallocate(void* allocator, void* ptr, size_t bytes);
  static void* env_workspace(void* owner, size_t bytes);

  int index_;
  cudaDeviceProp props_{};
  cudaStream_t copy_stream_ = nullptr;
  CudaKernelEnv env_;
  std::unique_ptr<CudaCachingAllocator> allocator_;
  std::unique_ptr<PinnedHostAllocator> pinned_;
  std::unique_ptr<ConvAlgoCache> conv_algos_;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};

}  // namespace seg::cuda
