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

// ---- image quality (future frame prediction) ----
// Over images (n, c, h, w) (or any (..., h, w)) of equal shapes, f32 or f64 on any device (copied
// to the host), values in [0, data_range]; every figure is the mean over the images (each (c, h,
// w) slice of the leading dims counts once: for (n, t, c, h, w) frames pass a view (n * t, c, h,
// w)).
// PSNR per image = 10 log10(data_range^2 / MSE), +inf for an exact image (then capped at 100 dB so
// that a mean stays finite).
double mean_psnr(const Tensor& prediction, const Tensor& target, double data_range = 1.0);
// SSIM (Wang et al. 2004, their MATLAB ssim_index): an 11x11 Gaussian window of sigma 1.5 over
// the valid region (no padding), K1 = 0.01, K2 = 0.03, per channel, averaged over the channel's
// valid pixels, then over channels and images. Images smaller than 11x11 use a window of their
// smaller side (odd, sigma 1.5).
double mean_ssim(const Tensor& prediction, const Tensor& target, double data_range = 1.0);

}  // namespace seg
