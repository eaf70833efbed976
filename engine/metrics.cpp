// Segmentation scores from a confusion matrix (cityscapesScripts' definitions; see metrics.h).
//
// Design notes
// - Counts are summed in i64 and the ratios computed in f64 from them: exact for any realistic
//   pixel count (a 2^53 pixel total would be needed to lose a unit).
// - cityscapesScripts returns NaN for a class with TP + FP + FN = 0 and averages with nanmean; an
//   evaluation with no counted pixel at all therefore has a NaN mean IoU, and a NaN pixel accuracy
//   here.
#include "engine/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "engine/error.h"

namespace seg {

SegmentationScores segmentation_scores(const std::vector<int64_t>& m, int64_t c) {
  SEG_CHECK(c >= 0 && static_cast<int64_t>(m.size()) == c * c, "segmentation_scores: ", m.size(),
            " counts do not form a (", c, ",", c, ") confusion matrix");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  SegmentationScores s;
  const size_t n = static_cast<size_t>(c);
  s.iou.assign(n, nan);
  s.true_positive.assign(n, 0);
  s.ground_truth.assign(n, 0);
  s.predicted.assign(n, 0);
  for (size_t gt = 0; gt < n; ++gt) {
    for (size_t pred = 0; pred < n; ++pred) {
      const int64_t v = m[gt * n + pred];
      SEG_CHECK(v >= 0, "segmentation_scores: negative count ", v, " at (", gt, ",", pred, ")");
      s.ground_truth[gt] += v;
      s.predicted[pred] += v;
      s.total += v;
    }
    s.true_positive[gt] = m[gt * n + gt];
  }
  double iou_sum = 0.0;
  int64_t correct = 0;
  for (size_t k = 0; k < n; ++k) {
    const int64_t tp = s.true_positive[k];
    const int64_t fn = s.ground_truth[k] - tp;
    const int64_t fp = s.predicted[k] - tp;
    const int64_t denom = tp + fp + fn;
    correct += tp;
    if (denom == 0) continue;
    s.iou[k] = static_cast<double>(tp) / static_cast<double>(denom);
    iou_sum += s.iou[k];
    ++s.classes_scored;
  }
  s.mean_iou = s.classes_scored > 0 ? iou_sum / s.classes_scored : nan;
  s.pixel_accuracy = s.total > 0 ? static_cast<double>(correct) / static_cast<double>(s.total) : nan;
  return s;
}

SegmentationScores segmentation_scores(const Tensor& confusion) {
  SEG_CHECK(confusion.defined(), "segmentation_scores: the confusion matrix is undefined");
  SEG_CHECK(confusion.dim() == 2 && confusion.size(0) == confusion.size(1) &&
                (confusion.dtype() == DType::i64 || confusion.dtype() == DType::i32),
            "segmentation_scores: the confusion matrix must be a square i64 (c, c) tensor, got ",
            confusion.str());
  return segmentation_scores(to_vector<int64_t>(confusion), confusion.size(0));
}

std::string scores_table(const SegmentationScores& s, const std::vector<std::string>& class_names) {
  const size_t c = s.iou.size();
  SEG_CHECK(class_names.empty() || class_names.size() == c, "scores_table: ", class_names.size(),
            " class names for ", c, " classes");
  size_t width = 14;  // "pixel accuracy"
  for (const std::string& name : class_names) width = std::max(width, name.size());
  auto fraction = [](double v) {
    if (std::isnan(v)) return std::string("nan");
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", v);
    return std::string(buf);
  };
  auto line = [&](const std::string& label, const std::string& value) {
    std::string l = label;
    l.resize(width + 2, ' ');
    return l + value + "\n";
  };
  std::string out = line("class", "IoU");
  for (size_t k = 0; k < c; ++k) {
    const std::string name = class_names.empty() ? "class " + std::to_string(k) : class_names[k];
    out += line(name, fraction(s.iou[k]));
  }
  out += std::string(width + 7, '-') + "\n";
  out += line("mean IoU", fraction(s.mean_iou) + " (" + std::to_string(s.classes_scored) + " of " +
                              std::to_string(c) + " classes)");
  out += line("pixel accuracy", fraction(s.pixel_accuracy) + " (" + std::to_string(s.total) + " pixels)");
  return out;
}

}  // namespace seg
