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
#include <vector>

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


// ---- image quality ----

namespace {

struct ImagePair {
  std::vector<double> a, b;
  int64_t images = 0, channels = 0, h = 0, w = 0;
};

ImagePair image_pair(const Tensor& prediction, const Tensor& target, const char* what) {
  SEG_CHECK(prediction.defined() && target.defined(), what, ": undefined tensor");
  SEG_CHECK(prediction.sizes() == target.sizes(), what, ": prediction ", prediction.str(),
            " and target ", target.str(), " differ in shape");
  SEG_CHECK(prediction.dim() >= 3, what, ": expected images (n, c, h, w), got ", prediction.str());
  SEG_CHECK(is_floating(prediction.dtype()) && is_floating(target.dtype()), what,
            ": expected floating tensors, got ", prediction.str(), " and ", target.str());
  ImagePair p;
  const int d = prediction.dim();
  p.h = prediction.size(d - 1 - 1);
  p.w = prediction.size(d - 1);
  p.channels = d >= 4 ? prediction.size(d - 3) : 1;
  p.images = prediction.numel() / std::max<int64_t>(1, p.channels * p.h * p.w);
  p.a = to_vector<double>(prediction.detach().to(Device::cpu()).to(DType::f64).contiguous());
  p.b = to_vector<double>(target.detach().to(Device::cpu()).to(DType::f64).contiguous());
  return p;
}

constexpr double kMaxPsnr = 100.0;

}  // namespace

double mean_psnr(const Tensor& prediction, const Tensor& target, double data_range) {
  const ImagePair p = image_pair(prediction, target, "mean_psnr");
  const int64_t per = p.channels * p.h * p.w;
  if (p.images == 0 || per == 0) return std::nan("");
  double sum = 0.0;
  for (int64_t i = 0; i < p.images; ++i) {
    double se = 0.0;
    for (int64_t k = i * per; k < (i + 1) * per; ++k) {
      const double e = p.a[static_cast<size_t>(k)] - p.b[static_cast<size_t>(k)];
      se += e * e;
    }
    const double mse = se / static_cast<double>(per);
    sum += mse > 0.0 ? std::min(kMaxPsnr, 10.0 * std::log10(data_range * data_range / mse))
                     : kMaxPsnr;
  }
  return sum / static_cast<double>(p.images);
}

double mean_ssim(const Tensor& prediction, const Tensor& target, double data_range) {
  const ImagePair p = image_pair(prediction, target, "mean_ssim");
  if (p.images == 0 || p.channels == 0 || p.h == 0 || p.w == 0) return std::nan("");
  int64_t win = std::min<int64_t>({11, p.h, p.w});
  if (win % 2 == 0) --win;
  constexpr double kSigma = 1.5;
  std::vector<double> g(static_cast<size_t>(win));
  double gsum = 0.0;
  for (int64_t i = 0; i < win; ++i) {
    const double x = static_cast<double>(i - win / 2);
    g[static_cast<size_t>(i)] = std::exp(-x * x / (2.0 * kSigma * kSigma));
    gsum += g[static_cast<size_t>(i)];
  }
  for (double& v : g) v /= gsum;
  const double c1 = (0.01 * data_range) * (0.01 * data_range);
  const double c2 = (0.03 * data_range) * (0.03 * data_range);
  const int64_t oh = p.h - win + 1, ow = p.w - win + 1;
  // Separable filtering of the five maps (x, y, x^2, y^2, xy): rows, then columns.
  std::vector<double> rows(static_cast<size_t>(5 * p.h * ow));
  double total = 0.0;
  for (int64_t plane = 0; plane < p.images * p.channels; ++plane) {
    const double* x = p.a.data() + plane * p.h * p.w;
    const double* y = p.b.data() + plane * p.h * p.w;
    for (int64_t r = 0; r < p.h; ++r) {
      for (int64_t c = 0; c < ow; ++c) {
        double m[5] = {0, 0, 0, 0, 0};
        for (int64_t k = 0; k < win; ++k) {
          const double xv = x[r * p.w + c + k], yv = y[r * p.w + c + k];
          const double gk = g[static_cast<size_t>(k)];
          m[0] += gk * xv;
          m[1] += gk * yv;
          m[2] += gk * xv * xv;
          m[3] += gk * yv * yv;
          m[4] += gk * xv * yv;
        }
        for (int q = 0; q < 5; ++q) rows[static_cast<size_t>((q * p.h + r) * ow + c)] = m[q];
      }
    }
    double plane_sum = 0.0;
    for (int64_t r = 0; r < oh; ++r) {
      for (int64_t c = 0; c < ow; ++c) {
        double m[5] = {0, 0, 0, 0, 0};
        for (int64_t k = 0; k < win; ++k) {
          const double gk = g[static_cast<size_t>(k)];
          for (int q = 0; q < 5; ++q) m[q] += gk * rows[static_cast<size_t>((q * p.h + r + k) * ow + c)];
        }
        const double mx = m[0], my = m[1];
        const double vx = m[2] - mx * mx, vy = m[3] - my * my, cxy = m[4] - mx * my;
        plane_sum += ((2.0 * mx * my + c1) * (2.0 * cxy + c2)) /
                     ((mx * mx + my * my + c1) * (vx + vy + c2));
      }
    }
    total += plane_sum / static_cast<double>(oh * ow);
  }
  return total / static_cast<double>(p.images * p.channels);
}

}  // namespace seg
