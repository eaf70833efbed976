#include "engine/cuda/cuda_context.h"

#include "engine/error.h"
#include "kernels/cuda/conv_algo_cache.h"
#include "kernels/cuda/cuda_check.h"

namespace seg::cuda {

std::unique_ptr<CudaContext> CudaContext::create(int device_index, const CudaContextOptions& options) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    SEG_CHECK(false, "cuda:", device_index, ": no usable CUDA device (", cudaGetErrorString(err), ")");
  }
  SEG_CHECK(device_index >= 0 && device_index < count, "cuda:", device_index, ": no such device (",
            count, " CUDA device", count == 1 ? "" : "s", " present)");
  return std::unique_ptr<CudaContext>(new CudaContext(device_index, options));
}

CudaContext::CudaContext(int index, const CudaContextOptions& options) : index_(index) {
  SEG_CUDA_CHECK(cudaSetDevice(index));
  SEG_CUDA_CHECK(cudaGetDeviceProperties(&props_, index));
  cudaStream_t compute = nullptr;
  SEG_CUDA_CHECK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
  SEG_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
  env_.device = index;
  env_.stream = compute;
  env_.sm_count = props_.multiProcessorCount;
  env_.max_threads_per_sm = props_.maxThreadsPerMultiProcessor;
  env_.l2_bytes = static_cast<size_t>(props_.l2CacheSize);
  SEG_CUDNN_CHECK(cudnnCreate(&env_.cudnn));
  SEG_CUDNN_CHECK(cudnnSetStream(env_.cudnn, compute));
  SEG_CUBLAS_CHECK(cublasCreate(&env_.cublas));
  SEG_CUBLAS_CHECK(cublasSetStream(env_.cublas, compute));
  SEG_CUBLAS_CHECK(cublasLtCreate(&env_.cublas_lt));

  allocator_ = std::make_unique<CudaCachingAllocator>(index, compute, Device::cuda(index, this),
                                                      CudaAllocatorOptions{options.guard_bytes});
  pinned_ = std::make_unique<PinnedHostAllocator>(index, compute, copy_stream_,
                                                  options.pinned_cache_bytes);
  conv_algos_ = std::make_unique<ConvAlgoCache>();
  env_.allocator = allocator_.get();
  env_.allocate = &CudaContext::env_allocate;
  env_.deallocate = &CudaContext::env_deallocate;
  env_.workspace_owner = this;
  env_.workspace = &CudaContext::env_workspace;
  env_.conv_algos = conv_algos_.get();
  set_allow_tf32(options.allow_tf32);
}

CudaContext::~CudaContext() {
  cudaSetDevice(index_);
  cudaStreamSynchronize(env_.stream);
  cudaStreamSynchronize(copy_stream_);
  if (workspace_) allocator_->deallocate(workspace_, workspace_bytes_);
  pinned_.reset();
  allocator_.reset();
  if (env_.cublas_lt) cublasLtDestroy(env_.cublas_lt);
  if (env_.cublas) cublasDestroy(env_.cublas);
  if (env_.cudnn) cudnnDestroy(env_.cudnn);
  cudaStreamDestroy(copy_stream_);
  cudaStreamDestroy(env_.stream);
}

void CudaContext::set_allow_tf32(bool allow) {
  // TF32 needs compute capability 8.0 (Ampere) or newer; older devices ignore the setting.
  env_.allow_tf32 = allow && props_.major >= 8;
  SEG_CUBLAS_CHECK(cublasSetMathMode(env_.cublas, env_.allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                  : CUBLAS_DEFAULT_MATH));
}

void CudaContext::copy_from_host(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  // From pageable memory this returns once `src` has been staged; from this context's pinned
  // memory the pinned allocator keeps the block until the copy has run.
  SEG_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, env_.stream));
}

void CudaContext::copy_to_host(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  SEG_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, env_.stream));
  SEG_CUDA_CHECK(cudaStreamSynchronize(env_.stream));
}

void CudaContext::copy_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  SEG_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, env_.stream));
}

void CudaContext::synchronize() { SEG_CUDA_CHECK(cudaStreamSynchronize(env_.stream)); }

void* CudaContext::env_allocate(void* allocator, size_t bytes) {
  return static_cast<CudaCachingAllocator*>(allocator)->allocate(bytes);
}

void CudaContext::env_deallocate(void* allocator, void* ptr, size_t bytes) {
  static_cast<CudaCachingAllocator*>(allocator)->deallocate(ptr, bytes);
}

void* CudaContext::env_workspace(void* owner, size_t bytes) {
  auto* self = static_cast<CudaContext*>(owner);
  if (bytes > self->workspace_bytes_) {
    // Stream-ordered: work queued with the old workspace runs before any reuse of its memory.
    if (self->workspace_) self->allocator_->deallocate(self->workspace_, self->workspace_bytes_);
    self->workspace_ = nullptr;
    self->workspace_bytes_ = 0;
    self->workspace_ = self->allocator_->allocate(bytes);
    self->workspace_bytes_ = bytes;
  }
  return self->workspace_;
}

}  // namespace seg::cuda
