// cuDNN tensor descriptors owned by RAII objects, shared by the cuDNN-backed kernel families
// (convolution, batch norm).
#pragma once

#include <cudnn.h>

#include "kernels/cuda/cuda_check.h"

namespace seg::cuda {

class TensorDesc {
 public:
  TensorDesc() { SEG_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d_)); }
  ~TensorDesc() { cudnnDestroyTensorDescriptor(d_); }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
  cudnnTensorDescriptor_t get() const { return d_; }

 private:
  cudnnTensorDescriptor_t d_ = nullptr;
};

}  // namespace seg::cuda
