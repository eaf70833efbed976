// Helpers for writing ops: argument checks and the standard "contiguous input" preparation.
#pragma once

#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace seg {

// Throws unless `t` is defined and floating; `what` names the op and the argument.
void check_floating(const Tensor& t, const char* op, const char* arg);
// Throws unless every defined tensor shares `ref`'s device and dtype.
void check_same_device_dtype(const char* op, const Tensor& ref, const std::vector<Tensor>& others);
// Throws unless `t` has `ndim` dims.
void check_dim(const Tensor& t, int ndim, const char* op, const char* arg);

// The data of `t` as a contiguous tensor, without recording autograd (for feeding kernels).
inline Tensor contiguous_data(const Tensor& t) {
  return t.defined() ? t.detach().contiguous() : Tensor();
}

}  // namespace seg
