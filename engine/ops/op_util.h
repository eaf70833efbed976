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

// Class labels for the loss and metric kernels, whose label type is i32: `labels` (i32, i64 or u8
// class indices) as a contiguous i32 tensor, without recording autograd.
Tensor class_labels_i32(const Tensor& labels);
// The one check of class labels after a kernel ran on `labels_i32` (class_labels_i32(labels)) and
// counted into `bad_count` (an i32 scalar on the kernel's device) the labels outside [0, classes)
// that are not ignore_index. Throws, naming the first such label of `labels` (its value and
// position), the number of them, and `context` ("for logits (2,3,4,4)"), when the kernel counted
// one, or when an i64 label did not survive the narrowing to i32 (a value outside the i32 range,
// which would wrap into a plausible class: 2^32 + 1 into class 1). Reads the count on the host;
// copies the labels to the host only to name a bad one.
void check_class_labels(const char* op, const Tensor& labels, const Tensor& labels_i32,
                        const Tensor& bad_count, int64_t classes, int64_t ignore_index,
                        const std::string& context);

// The data of `t` as a contiguous tensor, without recording autograd (for feeding kernels).
inline Tensor contiguous_data(const Tensor& t) {
  return t.defined() ? t.detach().contiguous() : Tensor();
}

}  // namespace seg
