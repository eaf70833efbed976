#include "engine/ops/op_util.h"

namespace seg {

void check_floating(const Tensor& t, const char* op, const char* arg) {
  SEG_CHECK(t.defined(), op, ": ", arg, " is undefined");
  SEG_CHECK(is_floating(t.dtype()), op, ": ", arg, " must be a floating tensor, got ", t.str());
}

void check_same_device_dtype(const char* op, const Tensor& ref, const std::vector<Tensor>& others) {
  for (const Tensor& t : others) {
    if (!t.defined()) continue;
    SEG_CHECK(t.device() == ref.device(), op, ": tensors on different devices: ", ref.str(), " and ",
              t.str());
    SEG_CHECK(t.dtype() == ref.dtype(), op, ": tensors of different dtypes: ", ref.str(), " and ",
              t.str());
  }
}

void check_dim(const Tensor& t, int ndim, const char* op, const char* arg) {
  SEG_CHECK(t.defined(), op, ": ", arg, " is undefined");
  SEG_CHECK(t.dim() == ndim, op, ": ", arg, " must have ", ndim, " dims, got ", t.str());
}

}  // namespace seg
