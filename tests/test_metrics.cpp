// The segmentation metric on the CPU: confusion matrices checked by hand (ties, NaN, ignore_index),
// bad labels, accumulation, the on-the-fly upsampled path against upsample_bilinear2d + argmax, and
// the cityscapesScripts scores (per-class IoU with NaN classes, mean IoU, pixel accuracy, table).
//
// The GPU kernel is compared with this one in tests/test_cuda_metrics.cpp.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "engine/metrics.h"
#include "engine/ops.h"
#include "kernels/common/upsample.h"
#include "tests/support/reference.h"

using namespace seg;

namespace {

// The confusion matrix of predictions `pred` (n, h, w) against `labels` (n, h, w), counted on the
// host: the reference of every upsampled-path test.
std::vector<int64_t> host_confusion(const std::vector<int32_t>& pred, const std::vector<int32_t>& labels,
                                    int64_t c, int64_t ignore_index) {
  std::vector<int64_t> m(static_cast<size_t>(c * c), 0);
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] == ignore_index) continue;
    ++m[static_cast<size_t>(labels[i] * c + pred[i])];
  }
  return m;
}

// Labels in [0, c) with about `ignore_share` of them 255.
Tensor random_labels(const Shape& shape, int64_t c, Generator& gen, double ignore_share) {
  std::vector<double> u = to_vector<double>(rand(shape, gen, DType::f64));
  std::vector<int32_t> v;
  for (double x : u) {
    if (x < ignore_share) {
      v.push_back(255);
    } else {
      const double t = (x - ignore_share) / (1.0 - ignore_share);
      v.push_back(static_cast<int32_t>(std::min<int64_t>(c - 1, static_cast<int64_t>(t * c))));
    }
  }
  return from_vector(v, shape);
}

std::vector<int64_t> counts(const Tensor& m) { return to_vector<int64_t>(m); }

}  // namespace

TEST_CASE("confusion_matrix: hand-checked counts, ties, NaN and ignore_index") {
  // logits (1, 3, 2, 3): the class of largest logit per pixel, row-major pixels:
  //   p0: (0.1, 0.5, 0.2) -> 1     p1: (2, 2, 1) -> 0 (tie: first)   p2: (-1, -3, -0.5) -> 2
  //   p3: (0, NaN, 5) -> 1 (NaN)   p4: (1, 3, 3) -> 1 (tie)          p5: (-inf, -inf, -inf) -> 0
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<double> x = {
      0.1, 2.0, -1.0, 0.0, 1.0, -inf,   // class 0
      0.5, 2.0, -3.0, nan, 3.0, -inf,   // class 1
      0.2, 1.0, -0.5, 5.0, 3.0, -inf};  // class 2
  for (DType dt : {DType::f32, DType::f64}) {
    CAPTURE(dtype_name(dt));
    Tensor logits = from_vector(x, {1, 3, 2, 3}).to(dt);
    // labels: p0 1 (hit), p1 2 (pred 0), p2 255 (ignored), p3 1 (hit), p4 0 (pred 1), p5 0 (hit)
    Tensor labels = from_vector(std::vector<int32_t>{1, 2, 255, 1, 0, 0}, {1, 2, 3});
    Tensor m = confusion_matrix(logits, labels);
    CHECK(m.dtype() == DType::i64);
    CHECK(m.sizes() == Shape{3, 3});
    // row = ground truth, column = prediction
    CHECK(counts(m) == std::vector<int64_t>{1, 1, 0,  //
                                            0, 2, 0,  //
                                            1, 0, 0});
    // Another ignore_index: 0 is then skipped and 255 is a bad label.
    Tensor labels2 = from_vector(std::vector<int32_t>{1, 2, 0, 1, 0, 0}, {1, 2, 3});
    CHECK(counts(confusion_matrix(logits, labels2, /*ignore_index=*/0)) ==
          std::vector<int64_t>{0, 0, 0,  //
                               0, 2, 0,  //
                               1, 0, 0});
  }
}

TEST_CASE("confusion_matrix: accumulation, label dtypes, and thread-count independence") {
  Generator gen(7);
  Tensor logits = randn({3, 5, 17, 23}, gen);
  Tensor labels = random_labels({3, 17, 23}, 5, gen, 0.2);
  const std::vector<int32_t> pred = to_vector<int32_t>(argmax(logits, 1));
  const std::vector<int64_t> want = host_confusion(pred, to_vector<int32_t>(labels), 5, 255);
  CHECK(counts(confusion_matrix(logits, labels)) == want);
  CHECK(counts(confusion_matrix(logits, labels.to(DType::i64))) == want);
  CHECK(counts(confusion_matrix(logits, labels.to(DType::u8))) == want);

  Tensor acc = zeros({5, 5}, DType::i64);
  accumulate_confusion(acc, logits, labels);
  accumulate_confusion(acc, logits, labels);
  std::vector<int64_t> twice = want;
  for (int64_t& v : twice) v *= 2;
  CHECK(counts(acc) == twice);

  // Large enough for several tasks; both paths.
  Tensor big = randn({2, 19, 97, 131}, gen);
  Tensor big_labels = random_labels({2, 97, 131}, 19, gen, 0.1);
  Tensor big_up_labels = random_labels({2, 389, 523}, 19, gen, 0.1);
  const std::vector<int64_t> ref = counts(confusion_matrix(big, big_labels));
  const std::vector<int64_t> ref_up = counts(confusion_matrix(big, big_up_labels));
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 5}) {
    CAPTURE(threads);
    omp_set_num_threads(threads);
    CHECK(counts(confusion_matrix(big, big_labels)) == ref);
    CHECK(counts(confusion_matrix(big, big_up_labels)) == ref_up);
  }
  omp_set_num_threads(saved);
}

TEST_CASE("confusion_matrix: bad labels are an error naming the value, and change nothing") {
  Tensor logits = zeros({2, 3, 2, 2});
  std::vector<int32_t> v(8, 1);
  v[6] = 7;  // image 1, row 1, column 0
  v[2] = -1;
  Tensor labels = from_vector(v, {2, 2, 2});
  try {
    confusion_matrix(logits, labels);
    FAIL("expected an error");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK_MESSAGE(msg.find("label -1 at position (0,1,0)") != std::string::npos, msg);
    CHECK_MESSAGE(msg.find("2 such labels") != std::string::npos, msg);
  }
  Tensor acc = zeros({3, 3}, DType::i64);
  accumulate_confusion(acc, logits, from_vector(std::vector<int32_t>(8, 2), {2, 2, 2}));
  CHECK_THROWS_AS(accumulate_confusion(acc, logits, labels), Error);
  // The failed batch left the matrix as it was: 8 pixels of class 2 predicted as 0 (all ties).
  CHECK(counts(acc) == std::vector<int64_t>{0, 0, 0, 0, 0, 0, 8, 0, 0});
  // Upsampled path too.
  CHECK_THROWS_AS(confusion_matrix(zeros({2, 3, 1, 1}), labels), Error);
}

TEST_CASE("confusion_matrix: i64 labels outside the i32 range are an error, not a wrapped class") {
  // 2^32 + 1 narrows to 1 and -2^32 to 0, both valid classes: each must be named, never counted.
  Tensor logits = zeros({1, 3, 2, 2});
  for (const int64_t wrapped : {(int64_t{1} << 32) + 1, -(int64_t{1} << 32), int64_t{1} << 62}) {
    CAPTURE(wrapped);
    const Tensor labels = full({1, 2, 2}, 1.0, DType::i64);
    labels.data<int64_t>()[3] = wrapped;  // row 1, column 1
    const std::string want = "label " + std::to_string(wrapped) + " at position (0,1,1)";
    CHECK_THROWS_WITH_AS(confusion_matrix(logits, labels), doctest::Contains(want.c_str()), Error);
    Tensor acc = zeros({3, 3}, DType::i64);
    CHECK_THROWS_WITH_AS(accumulate_confusion(acc, logits, labels), doctest::Contains(want.c_str()), Error);
    CHECK(counts(acc) == std::vector<int64_t>(9, 0));
    // The upsampled path too.
    CHECK_THROWS_WITH_AS(confusion_matrix(zeros({1, 3, 1, 1}), labels), doctest::Contains(want.c_str()),
                         Error);
  }
}

TEST_CASE("confusion_matrix: argument errors name the problem") {
  Tensor logits = zeros({1, 3, 2, 2});
  Tensor labels = zeros({1, 2, 2}, DType::i32);
  CHECK_THROWS_WITH_AS(confusion_matrix(zeros({3, 2, 2}), labels), doctest::Contains("(n, c, h, w)"), Error);
  CHECK_THROWS_WITH_AS(confusion_matrix(logits, zeros({1, 2, 2})), doctest::Contains("i32, i64 or u8"), Error);
  CHECK_THROWS_WITH_AS(confusion_matrix(logits, zeros({2, 2, 2}, DType::i32)),
                       doctest::Contains("(n, label_h, label_w)"), Error);
  CHECK_THROWS_WITH_AS(confusion_matrix(zeros({1, 3, 2, 2}, DType::i32), labels),
                       doctest::Contains("floating"), Error);
  Tensor wrong = zeros({2, 2}, DType::i64);
  CHECK_THROWS_WITH_AS(accumulate_confusion(wrong, logits, labels), doctest::Contains("must be i64 (3,3)"),
                       Error);
  Tensor f = zeros({3, 3});
  CHECK_THROWS_AS(accumulate_confusion(f, logits, labels), Error);
}

TEST_CASE("confusion_matrix: the upsampled path equals upsample_bilinear2d + argmax") {
  struct Case {
    Shape logits;
    int64_t label_h, label_w;
  };
  const std::vector<Case> cases = {
      {{2, 19, 13, 27}, 97, 211},  // Cityscapes classes, odd factor ~7.5
      {{1, 5, 9, 7}, 33, 65},
      {{2, 4, 33, 31}, 16, 15},  // downsampling
      {{1, 3, 8, 9}, 8, 40},     // only w changes
      {{1, 6, 1, 1}, 5, 3},      // from a single pixel
      {{3, 7, 4, 6}, 1, 1},
  };
  Generator gen(11);
  for (const Case& k : cases) {
    for (bool align : {false, true}) {
      for (DType dt : {DType::f32, DType::f64}) {
        CAPTURE(shape_str(k.logits));
        CAPTURE(align);
        CAPTURE(dtype_name(dt));
        const int64_t c = k.logits[1];
        Tensor logits = randn(k.logits, gen, dt);
        Tensor labels = random_labels({k.logits[0], k.label_h, k.label_w}, c, gen, 0.1);
        Tensor up = upsample_bilinear2d(logits, k.label_h, k.label_w, align);
        const std::vector<int64_t> want = host_confusion(to_vector<int32_t>(argmax(up, 1)),
                                                         to_vector<int32_t>(labels), c, 255);
        CHECK(counts(confusion_matrix(logits, labels, 255, align)) == want);
      }
    }
  }
}

// The on-the-fly path (and the CUDA kernels) interpolate with bilinear_tap and bilinear_blend from
// kernels/common/upsample.h; the prediction can only equal argmax(upsample_bilinear2d(x)) at
// near-ties if the values are the same bit for bit, so check the values themselves.
template <class T>
void check_blend_matches_upsample(const Shape& shape, int64_t p, int64_t q, bool align, Generator& gen) {
  Tensor x = randn(shape, gen, std::is_same_v<T, float> ? DType::f32 : DType::f64);
  const std::vector<T> got = to_vector<T>(upsample_bilinear2d(x, p, q, align));
  const std::vector<T> in = to_vector<T>(x);
  const int64_t planes = shape[0] * shape[1], h = shape[2], w = shape[3];
  const T sh = bilinear_scale<T>(h, p, align), sw = bilinear_scale<T>(w, q, align);
  int64_t mismatches = 0;
  for (int64_t pl = 0; pl < planes; ++pl) {
    for (int64_t i = 0; i < p; ++i) {
      const BilinearTap<T> a = bilinear_tap<T>(i, h, sh, align);
      const T* r0 = in.data() + (pl * h + a.i0) * w;
      const T* r1 = in.data() + (pl * h + a.i1) * w;
      for (int64_t j = 0; j < q; ++j) {
        const BilinearTap<T> b = bilinear_tap<T>(j, w, sw, align);
        const T v = bilinear_blend(a.w0, bilinear_blend(b.w0, r0[b.i0], b.w1, r0[b.i1]), a.w1,
                                   bilinear_blend(b.w0, r1[b.i0], b.w1, r1[b.i1]));
        mismatches += v != got[static_cast<size_t>((pl * p + i) * q + j)];
      }
    }
  }
  CHECK_MESSAGE(mismatches == 0, mismatches, " values differ for ", shape_str(shape), " -> (", p, ",", q,
                ") align_corners ", align);
}

TEST_CASE("bilinear_blend with bilinear_tap reproduces upsample_bilinear2d bit for bit") {
  Generator gen(5);
  for (bool align : {false, true}) {
    check_blend_matches_upsample<float>({2, 3, 13, 27}, 97, 211, align, gen);
    check_blend_matches_upsample<float>({1, 2, 33, 31}, 16, 15, align, gen);
    check_blend_matches_upsample<double>({2, 3, 13, 27}, 97, 211, align, gen);
    check_blend_matches_upsample<double>({1, 2, 33, 31}, 16, 15, align, gen);
  }
}

TEST_CASE("confusion_matrix: upsampled path by hand") {
  // logits (1, 2, 1, 2): class 0 = (0, 1), class 1 = (1, 0) along w; upsampled to width 4 with
  // align_corners=true the columns sit at 0, 1/3, 2/3, 1: class 0 = (0, 1/3, 2/3, 1) and class 1 =
  // (1, 2/3, 1/3, 0), so the predictions are (1, 1, 0, 0).
  Tensor logits = from_vector(std::vector<float>{0, 1, 1, 0}, {1, 2, 1, 2});
  Tensor labels = from_vector(std::vector<int32_t>{0, 1, 0, 1, 1, 1, 255, 0}, {1, 2, 4});
  // row 0: gt (0,1,0,1) pred (1,1,0,0); row 1: gt (1,1,ignored,0) pred (1,1,-,0)
  CHECK(counts(confusion_matrix(logits, labels, 255, true)) == std::vector<int64_t>{2, 1, 1, 3});
}

TEST_CASE("segmentation_scores: IoU per class, NaN classes, mean IoU and pixel accuracy") {
  // 4 classes; class 3 never appears (NaN); class 2 is only predicted (IoU 0).
  //          pred 0  1  2  3
  const std::vector<int64_t> m = {5, 1, 2, 0,   // gt 0
                                  0, 3, 0, 0,   // gt 1
                                  0, 0, 0, 0,   // gt 2
                                  0, 0, 0, 0};  // gt 3
  // IoU 0 = 5 / (5 + 0 + 3) = 0.625; IoU 1 = 3 / (3 + 1 + 0) = 0.75; IoU 2 = 0 / (0 + 2 + 0) = 0;
  // IoU 3 = NaN. Mean over 3 classes = 1.375 / 3; pixel accuracy 8 / 11.
  SegmentationScores s = segmentation_scores(m, 4);
  CHECK(s.iou[0] == doctest::Approx(0.625).epsilon(1e-15));
  CHECK(s.iou[1] == doctest::Approx(0.75).epsilon(1e-15));
  CHECK(s.iou[2] == 0.0);
  CHECK(std::isnan(s.iou[3]));
  CHECK(s.classes_scored == 3);
  CHECK(s.mean_iou == doctest::Approx(1.375 / 3.0).epsilon(1e-15));
  CHECK(s.pixel_accuracy == doctest::Approx(8.0 / 11.0).epsilon(1e-15));
  CHECK(s.total == 11);
  CHECK(s.ground_truth == std::vector<int64_t>{8, 3, 0, 0});
  CHECK(s.predicted == std::vector<int64_t>{5, 4, 2, 0});

  // From a tensor, the same.
  Tensor t = from_vector(std::vector<int32_t>(m.begin(), m.end()), {4, 4}).to(DType::i64);
  SegmentationScores st = segmentation_scores(t);
  CHECK(st.mean_iou == s.mean_iou);

  const std::string table = scores_table(s, {"road", "sidewalk", "building", "wall"});
  CHECK_MESSAGE(table.find("road") != std::string::npos, table);
  CHECK_MESSAGE(table.find("0.625") != std::string::npos, table);
  CHECK_MESSAGE(table.find("0.750") != std::string::npos, table);
  CHECK_MESSAGE(table.find("nan") != std::string::npos, table);
  CHECK_MESSAGE(table.find("0.458 (3 of 4 classes)") != std::string::npos, table);
  CHECK_MESSAGE(table.find("0.727 (11 pixels)") != std::string::npos, table);
  CHECK(scores_table(s).find("class 3") != std::string::npos);
  CHECK_THROWS_AS(scores_table(s, {"a", "b"}), Error);

  // Nothing counted: every class NaN, and so the mean and the accuracy.
  SegmentationScores empty = segmentation_scores(std::vector<int64_t>(9, 0), 3);
  CHECK(std::isnan(empty.mean_iou));
  CHECK(std::isnan(empty.pixel_accuracy));
  CHECK(empty.classes_scored == 0);
  CHECK_THROWS_AS(segmentation_scores(std::vector<int64_t>(8, 0), 3), Error);
}

TEST_CASE("segmentation_scores of a confusion matrix: a perfect prediction scores 1") {
  Generator gen(3);
  Tensor labels = random_labels({2, 9, 11}, 4, gen, 0.2);
  // one-hot logits of the labels (ignored pixels predict class 0)
  std::vector<int32_t> lab = to_vector<int32_t>(labels);
  std::vector<float> x(2 * 4 * 9 * 11, 0.0f);
  for (int64_t img = 0; img < 2; ++img) {
    for (int64_t p = 0; p < 99; ++p) {
      const int32_t y = lab[static_cast<size_t>(img * 99 + p)];
      if (y != 255) x[static_cast<size_t>((img * 4 + y) * 99 + p)] = 1.0f;
    }
  }
  SegmentationScores s = segmentation_scores(confusion_matrix(from_vector(x, {2, 4, 9, 11}), labels));
  CHECK(s.mean_iou == 1.0);
  CHECK(s.pixel_accuracy == 1.0);
}

// ---- image quality (PSNR, SSIM) ----

TEST_CASE("mean_psnr and mean_ssim: hand-checked values, identity and argument errors") {
  // Two constant 12x12 images a and b: every window has means a, b and no variance, so SSIM =
  // (2ab + c1) / (a^2 + b^2 + c1); PSNR = 10 log10(1 / (a - b)^2).
  const double a = 0.25, b = 0.75, c1 = 0.01 * 0.01;
  const Tensor x = full({1, 1, 12, 12}, a, DType::f64);
  const Tensor y = full({1, 1, 12, 12}, b, DType::f64);
  CHECK(mean_ssim(x, y) == doctest::Approx((2 * a * b + c1) / (a * a + b * b + c1)).epsilon(1e-12));
  CHECK(mean_psnr(x, y) == doctest::Approx(10 * std::log10(1.0 / ((a - b) * (a - b)))).epsilon(1e-12));
  // Identical images: SSIM 1, PSNR capped at 100 dB.
  Generator gen(3);
  const Tensor r = rand({2, 3, 15, 13}, gen, DType::f32);
  CHECK(mean_ssim(r, r) == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(mean_psnr(r, r) == 100.0);
  // The range scales both: images in [0, 255] with data_range 255 score as in [0, 1].
  const Tensor s = rand({2, 3, 15, 13}, gen, DType::f32);
  CHECK(mean_ssim(mul_scalar(r, 255.0), mul_scalar(s, 255.0), 255.0) ==
        doctest::Approx(mean_ssim(r, s)).epsilon(1e-5));
  CHECK(mean_psnr(mul_scalar(r, 255.0), mul_scalar(s, 255.0), 255.0) ==
        doctest::Approx(mean_psnr(r, s)).epsilon(1e-5));
  std::string e;
  try {
    mean_ssim(r, s.narrow(3, 0, 12));
  } catch (const std::exception& ex) {
    e = ex.what();
  }
  CHECK(e.find("differ in shape") != std::string::npos);
}

TEST_CASE("mean_psnr and mean_ssim match an independent PyTorch computation") {
  if (!test::have_reference("image_metrics.json")) return;
  std::ifstream f(test::reference_path("image_metrics.json"));
  const nlohmann::json j = nlohmann::json::parse(f);
  // Both sides compute in f64 from the same values: only summation order differs.
  constexpr double kTol = 1e-10;
  for (const nlohmann::json& c : j["cases"]) {
    const Shape shape = c["x"]["shape"].get<Shape>();
    const Tensor x = from_vector(c["x"]["data"].get<std::vector<double>>(), shape);
    const Tensor y = from_vector(c["y"]["data"].get<std::vector<double>>(), shape);
    CAPTURE(shape);
    CHECK(mean_ssim(x, y) == doctest::Approx(c["ssim"].get<double>()).epsilon(kTol));
    CHECK(mean_psnr(x, y) == doctest::Approx(c["psnr"].get<double>()).epsilon(kTol));
  }
}
