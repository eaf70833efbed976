// Segmentation metric front-ends: accumulate_confusion and confusion_matrix (the argmax over classes,
// optionally of the bilinearly upsampled logits, and the (c, c) confusion matrix in one kernel).
//
// Design notes
// - Labels may be i32, i64 or u8 (PNG label maps); they reach the kernel as contiguous i32.
// - The kernel skips labels outside [0, c) that are not ignore_index and counts them; a non-zero
//   count, or an i64 label outside the i32 range (which the narrowing would wrap into a plausible
//   class), is an error naming the first such value and its position: check_class_labels
//   (op_util.h), shared with cross_entropy and by both backends. Reading the count is the one host
//   synchronisation of a call with i32 or u8 labels (i64 labels add one). So that an error leaves
//   the caller's matrix as it was, the batch is counted into a fresh matrix first and added to
//   `confusion` only when no label was bad.
// - When the labels' spatial size differs from the logits', the logits are upsampled on the fly
//   (kernels/common/metrics.h), with the same sampling as upsample_bilinear2d and `align_corners`.
#include <cstdint>

#include "engine/ops.h"
#include "engine/ops/op_util.h"

namespace seg {

namespace {

constexpr const char* kOp = "confusion_matrix";

ConfusionShape check_confusion_args(const Tensor& logits, const Tensor& labels, int64_t ignore_index,
                                    bool align_corners) {
  check_floating(logits, kOp, "logits");
  SEG_CHECK(logits.dim() == 4, kOp, ": logits must be (n, c, h, w), got ", logits.str());
  SEG_CHECK(logits.size(1) > 0 && logits.size(2) > 0 && logits.size(3) > 0, kOp, ": logits ",
            logits.str(), " have an empty class or spatial dim");
  SEG_CHECK(labels.defined(), kOp, ": labels are undefined");
  SEG_CHECK(labels.dtype() == DType::i32 || labels.dtype() == DType::i64 || labels.dtype() == DType::u8,
            kOp, ": labels must be i32, i64 or u8 class indices, got ", labels.str());
  SEG_CHECK(labels.device() == logits.device(), kOp, ": logits ", logits.str(), " and labels ",
            labels.str(), " are on different devices");
  SEG_CHECK(labels.dim() == 3 && labels.size(0) == logits.size(0), kOp, ": labels ",
            shape_str(labels.sizes()), " must be (n, label_h, label_w) with n = ", logits.size(0),
            " for logits ", shape_str(logits.sizes()));
  SEG_CHECK(labels.size(1) > 0 && labels.size(2) > 0, kOp, ": labels ", shape_str(labels.sizes()),
            " have an empty spatial dim");
  ConfusionShape s;
  s.n = logits.size(0);
  s.c = logits.size(1);
  s.h = logits.size(2);
  s.w = logits.size(3);
  s.label_h = labels.size(1);
  s.label_w = labels.size(2);
  s.ignore_index = ignore_index;
  s.align_corners = align_corners;
  return s;
}

// Counts one batch into `out` ((c, c) i64, contiguous, on the logits' device); throws naming the
// first bad label.
void count_batch(const Tensor& out, const ConfusionShape& s, const Tensor& logits, const Tensor& labels) {
  const auto& k = kernels_for<OpId::confusion_matrix>(logits.device());
  Tensor x = contiguous_data(logits);
  Tensor lab = class_labels_i32(labels);
  Tensor bad = zeros({}, DType::i32, logits.device());
  if (s.n > 0) {
    k.accumulate(exec_context(x), s, view_of(x), view_of(lab), view_of(out), view_of(bad));
  }
  check_class_labels(kOp, labels, lab, bad, s.c, s.ignore_index,
                     "for logits " + shape_str(logits.sizes()));
}

}  // namespace

void accumulate_confusion(Tensor& confusion, const Tensor& logits, const Tensor& labels,
                          int64_t ignore_index, bool align_corners) {
  const ConfusionShape s = check_confusion_args(logits, labels, ignore_index, align_corners);
  SEG_CHECK(confusion.defined(), kOp, ": the confusion matrix is undefined");
  SEG_CHECK(confusion.dtype() == DType::i64 && confusion.dim() == 2 && confusion.size(0) == s.c &&
                confusion.size(1) == s.c,
            kOp, ": the confusion matrix ", confusion.str(), " must be i64 (", s.c, ",", s.c,
            ") for logits ", shape_str(logits.sizes()));
  SEG_CHECK(confusion.device() == logits.device(), kOp, ": the confusion matrix ", confusion.str(),
            " and logits ", logits.str(), " are on different devices");
  SEG_CHECK(!confusion.requires_grad(), kOp, ": the confusion matrix must not require grad");
  Tensor batch = zeros({s.c, s.c}, DType::i64, logits.device());  // (c, c)
  count_batch(batch, s, logits, labels);
  confusion.add_(batch);
}

Tensor confusion_matrix(const Tensor& logits, const Tensor& labels, int64_t ignore_index,
                        bool align_corners) {
  const ConfusionShape s = check_confusion_args(logits, labels, ignore_index, align_corners);
  Tensor out = zeros({s.c, s.c}, DType::i64, logits.device());  // (c, c)
  count_batch(out, s, logits, labels);
  return out;
}

}  // namespace seg
