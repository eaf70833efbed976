#include "engine/ops/op_util.h"

#include "engine/ops.h"

namespace seg {

namespace {

// "(i,j,k)" of flat index `flat` in a row-major tensor of `sizes`.
std::string position_str(int64_t flat, const Shape& sizes) {
  Shape idx(sizes.size());
  for (size_t d = sizes.size(); d-- > 0;) {
    idx[d] = sizes[d] > 0 ? flat % sizes[d] : 0;
    flat = sizes[d] > 0 ? flat / sizes[d] : 0;
  }
  return shape_str(idx);
}

}  // namespace

Tensor class_labels_i32(const Tensor& labels) {
  return labels.detach().to(DType::i32).contiguous();
}

void check_class_labels(const char* op, const Tensor& labels, const Tensor& labels_i32,
                        const Tensor& bad_count, int64_t classes, int64_t ignore_index,
                        const std::string& context) {
  bool bad = bad_count.item() != 0.0;
  if (!bad && labels.dtype() == DType::i64) {
    // An i64 label outside the i32 range wraps in the conversion and may look like a valid class:
    // compare the two in f64 (a wrapped value always differs from the original, whose magnitude
    // stays at least 2^31 when rounded to f64; abs keeps differences from cancelling).
    NoGradGuard no_grad;
    bad = sum(abs(sub(labels.detach().to(DType::f64), labels_i32.to(DType::f64)))).item() != 0.0;
  }
  if (!bad) return;
  const std::vector<int64_t> host = to_vector<int64_t>(labels);
  int64_t count = 0, first = -1;
  for (size_t i = 0; i < host.size(); ++i) {
    if (host[i] != ignore_index && (host[i] < 0 || host[i] >= classes)) {
      if (count++ == 0) first = static_cast<int64_t>(i);
    }
  }
  SEG_ASSERT(count > 0);  // the kernel counted a bad label that the host does not see
  SEG_CHECK(false, op, ": label ", host[static_cast<size_t>(first)], " at position ",
            position_str(first, labels.sizes()), " of labels ", shape_str(labels.sizes()),
            " is outside [0, ", classes, ") ", context, " and is not ignore_index ", ignore_index,
            " (", count, " such label", count == 1 ? "" : "s", ")");
}

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
