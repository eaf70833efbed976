// Segmentation scores from a confusion matrix, as cityscapesScripts computes them
// (evalPixelLevelSemanticLabeling.py): per-class IoU = TP / (TP + FP + FN), NaN for a class that
// appears neither in the ground truth nor in the predictions, the mean IoU over the classes whose
// IoU is not NaN, and the pixel accuracy (correct / labelled pixels). The matrix comes from
// accumulate_confusion / confusion_matrix (engine/ops.h): (c, c) i64, row = ground truth, column =
// prediction, ignored pixels never counted.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace seg {

struct SegmentationScores {
  std::vector<double> iou;             // (c) per-class IoU in [0, 1], NaN where undefined
  std::vector<int64_t> true_positive;  // (c) diagonal
  std::vector<int64_t> ground_truth;   // (c) labelled pixels of each class (row sums)
  std::vector<int64_t> predicted;      // (c) pixels predicted as each class (column sums)
  double mean_iou = 0.0;               // over the non-NaN classes; NaN when every class is NaN
  int classes_scored = 0;              // how many classes the mean is over
  double pixel_accuracy = 0.0;         // trace / total; NaN when no pixel was counted
  int64_t total = 0;                   // pixels counted
};

// From a (c, c) i64 tensor on any device (copied to the host).
SegmentationScores segmentation_scores(const Tensor& confusion);
// From row-major host counts of a (c, c) matrix.
SegmentationScores segmentation_scores(const std::vector<int64_t>& confusion, int64_t c);

// A printable table: one line per class ("name  IoU" with IoU as a fraction with 3 decimals, or
// "nan"), then the mean IoU and the pixel accuracy. `class_names` may be empty (classes are then
// numbered); otherwise it must have one name per class.
std::string scores_table(const SegmentationScores& scores, const std::vector<std::string>& class_names = {});

}  // namespace seg
