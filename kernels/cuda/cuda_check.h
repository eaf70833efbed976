// Checks for every CUDA runtime, cuDNN, cuBLAS and NCCL call and every kernel launch: a failure
// throws std::runtime_error naming the call, the error and the file and line.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <stdexcept>
#include <string>

namespace seg::cuda {

[[noreturn]] inline void throw_cuda_error(const char* library, const char* call, const std::string& error,
                                          const char* file, int line) {
  throw std::runtime_error(std::string(library) + " error: " + error + " in " + call + " at " + file +
                           ":" + std::to_string(line));
}

inline const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "unknown cuBLAS status";
}

}  // namespace seg::cuda

#define SEG_CUDA_CHECK(call)                                                                \
  do {                                                                                      \
    cudaError_t seg_err_ = (call);                                                          \
    if (seg_err_ != cudaSuccess)                                                            \
      ::seg::cuda::throw_cuda_error("CUDA", #call, cudaGetErrorString(seg_err_), __FILE__, __LINE__); \
  } while (0)

#define SEG_CUDNN_CHECK(call)                                                                 \
  do {                                                                                        \
    cudnnStatus_t seg_err_ = (call);                                                          \
    if (seg_err_ != CUDNN_STATUS_SUCCESS)                                                     \
      ::seg::cuda::throw_cuda_error("cuDNN", #call, cudnnGetErrorString(seg_err_), __FILE__, __LINE__); \
  } while (0)

#define SEG_CUBLAS_CHECK(call)                                                                    \
  do {                                                                                            \
    cublasStatus_t seg_err_ = (call);                                                             \
    if (seg_err_ != CUBLAS_STATUS_SUCCESS)                                                        \
      ::seg::cuda::throw_cuda_error("cuBLAS", #call, ::seg::cuda::cublas_status_name(seg_err_), __FILE__, \
                                    __LINE__);                                                    \
  } while (0)

// After every kernel launch: reports a bad launch configuration at once (not at the next sync).
#define SEG_CUDA_LAUNCH_CHECK() SEG_CUDA_CHECK(cudaGetLastError())
