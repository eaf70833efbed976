// The CUDA confusion-matrix kernel against the CPU one (label gpu; skipped without a GPU).
//
// Both backends compute the same predictions bit for bit: the same-size path only compares logits,
// and the upsampled path blends with the explicit fused multiply-adds of kernels/common/upsample.h,
// so the matrices must be equal exactly. Shapes are large and odd (many blocks, no multiple of the
// block size), both paths, both align_corners, f32 and f64, ties and NaN logits, class counts on
// both sides of the shared-memory histogram's limit, bad labels, accumulation, label dtypes,
// and the allocator's guard bytes after every test.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "engine/metrics.h"
#include "engine/ops.h"
#include "tests/support/parity.h"

using namespace seg;
using namespace seg::test;

namespace {

// Labels in [0, c) with about `ignore_share` of them 255.
Tensor random_labels(const Shape& shape, int64_t c, Generator& gen, double ignore_share) {
  std::vector<double> u = to_vector<double>(rand(shape, gen, DType::f64));
  std::vector<int32_t> v;
  v.reserve(u.size());
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

// Reports the first differing entry of two (c, c) matrices.
void check_equal(const std::vector<int64_t>& gpu, const std::vector<int64_t>& cpu, const std::string& what) {
  REQUIRE(gpu.size() == cpu.size());
  int64_t differing = 0, total_cpu = 0, total_gpu = 0;
  size_t first = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    total_cpu += cpu[i];
    total_gpu += gpu[i];
    if (gpu[i] != cpu[i] && differing++ == 0) first = i;
  }
  CHECK_MESSAGE(differing == 0, what, ": ", differing, " entries differ, first at ", first, " (gpu ",
                gpu[first], ", cpu ", cpu[first], "); totals gpu ", total_gpu, " cpu ", total_cpu);
}

void check_guards() {
  gpu_synchronize();
  CHECK_MESSAGE(gpu_guard_violations() == 0, "out-of-bounds writes: ", gpu_guard_reports());
}

struct Case {
  Shape logits;
  int64_t label_h, label_w;
};

}  // namespace

TEST_CASE("CUDA confusion matrix equals the CPU's: both paths, large odd shapes, f32 and f64") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  const std::vector<Case> cases = {
      {{2, 19, 97, 131}, 97, 131},    // same size
      {{3, 19, 61, 53}, 61, 53},
      {{2, 19, 65, 129}, 513, 1025},  // upsampled ~8x, Cityscapes classes
      {{1, 19, 33, 67}, 257, 515},
      {{3, 5, 33, 31}, 16, 15},       // downsampled
      {{2, 4, 29, 37}, 29, 211},      // only w resized
      {{2, 7, 1, 1}, 37, 41},         // from one pixel
      {{5, 3, 7, 9}, 1, 1},
  };
  Generator gen(2024);
  for (const Case& k : cases) {
    for (bool align : {false, true}) {
      for (DType dt : {DType::f32, DType::f64}) {
        const bool same = k.logits[2] == k.label_h && k.logits[3] == k.label_w;
        if (same && align) continue;  // align_corners only matters when resizing
        const std::string what = shape_str(k.logits) + " -> (" + std::to_string(k.label_h) + "," +
                                  std::to_string(k.label_w) + ") align " + std::to_string(align) + " " +
                                  dtype_name(dt);
        CAPTURE(what);
        const int64_t c = k.logits[1];
        Tensor logits = randn(k.logits, gen, dt);
        Tensor labels = random_labels({k.logits[0], k.label_h, k.label_w}, c, gen, 0.1);
        const std::vector<int64_t> cpu = counts(confusion_matrix(logits, labels, 255, align));
        Tensor m = confusion_matrix(logits.to(gpu), labels.to(gpu), 255, align);
        CHECK(m.device() == gpu);
        check_equal(counts(m), cpu, what);
      }
    }
  }
  check_guards();
}

TEST_CASE("CUDA confusion matrix: ties, NaN and -inf logits follow the CPU's argmax") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  Generator gen(9);
  // Logits from {0, 1, 2} (many exact ties), some NaN, some -inf.
  const Shape shape{2, 6, 41, 57};
  std::vector<double> u = to_vector<double>(rand(shape, gen, DType::f64));
  std::vector<double> x(u.size());
  for (size_t i = 0; i < u.size(); ++i) {
    const double v = u[i];
    x[i] = v < 0.02 ? std::numeric_limits<double>::quiet_NaN()
                    : (v < 0.05 ? -std::numeric_limits<double>::infinity() : std::floor(v * 3.0));
  }
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor logits = from_vector(x, shape).to(dt);
    for (const std::pair<int64_t, int64_t>& size : std::vector<std::pair<int64_t, int64_t>>{{41, 57}, {163, 229}}) {
      const int64_t lh = size.first, lw = size.second;
      for (bool align : {false, true}) {
        CAPTURE(dtype_name(dt));
        CAPTURE(lh);
        CAPTURE(align);
        Tensor labels = random_labels({2, lh, lw}, 6, gen, 0.05);
        const std::vector<int64_t> cpu = counts(confusion_matrix(logits, labels, 255, align));
        check_equal(counts(confusion_matrix(logits.to(gpu), labels.to(gpu), 255, align)), cpu,
                    "ties and NaN");
      }
    }
  }
  check_guards();
}

TEST_CASE("CUDA confusion matrix: many classes count in global memory, up to 110 in shared memory") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  Generator gen(31);
  // 150 classes (ADE20K): a (150, 150) u32 histogram does not fit 48 KiB of shared memory. 110
  // classes is the largest matrix that does (48400 bytes), 111 the smallest that does not.
  for (const Case& k : std::vector<Case>{{{2, 150, 23, 37}, 23, 37},
                                         {{1, 150, 13, 17}, 61, 83},
                                         {{2, 110, 37, 41}, 37, 41},
                                         {{1, 111, 37, 41}, 37, 41}}) {
    CAPTURE(shape_str(k.logits));
    const int64_t c = k.logits[1];
    Tensor logits = randn(k.logits, gen);
    Tensor labels = random_labels({k.logits[0], k.label_h, k.label_w}, c, gen, 0.1);
    const std::vector<int64_t> cpu = counts(confusion_matrix(logits, labels));
    check_equal(counts(confusion_matrix(logits.to(gpu), labels.to(gpu))), cpu, "many classes");
  }
  check_guards();
}

TEST_CASE("CUDA confusion matrix: accumulation, label dtypes, bad labels") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  Generator gen(5);
  Tensor logits = randn({2, 19, 45, 67}, gen);
  Tensor labels = random_labels({2, 45, 67}, 19, gen, 0.2);
  const std::vector<int64_t> once = counts(confusion_matrix(logits, labels));
  Tensor lg = logits.to(gpu), lb = labels.to(gpu);
  Tensor acc = zeros({19, 19}, DType::i64, gpu);
  accumulate_confusion(acc, lg, lb);
  accumulate_confusion(acc, lg, lb.to(DType::i64));
  std::vector<int64_t> twice = once;
  for (int64_t& v : twice) v *= 2;
  check_equal(counts(acc), twice, "accumulated twice");
  check_equal(counts(confusion_matrix(lg, lb.to(DType::u8))), once, "u8 labels");

  // Bad labels: the same error as on the CPU, and the matrix is left as it was.
  std::vector<int32_t> v = to_vector<int32_t>(labels);
  v[1234] = 19;
  v[4321] = -3;
  Tensor bad = from_vector(v, labels.sizes());
  std::string cpu_msg, gpu_msg;
  try {
    confusion_matrix(logits, bad);
  } catch (const Error& e) {
    cpu_msg = e.what();
  }
  try {
    accumulate_confusion(acc, lg, bad.to(gpu));
  } catch (const Error& e) {
    gpu_msg = e.what();
  }
  CHECK_MESSAGE(!gpu_msg.empty(), "no error for bad labels on the GPU");
  CHECK(gpu_msg == cpu_msg);
  CHECK_MESSAGE(gpu_msg.find("2 such labels") != std::string::npos, gpu_msg);
  check_equal(counts(acc), twice, "after a failed batch");
  // The upsampled path counts bad labels too.
  CHECK_THROWS_AS(confusion_matrix(lg.narrow(2, 0, 9), bad.to(gpu)), Error);
  // An i64 label outside the i32 range (2^32 + 1 narrows to class 1): the CPU's error, unchanged
  // matrix.
  const Tensor wrapped = labels.to(DType::i64);
  wrapped.data<int64_t>()[2345] = (int64_t{1} << 32) + 1;
  std::string cpu_wide, gpu_wide;
  try {
    confusion_matrix(logits, wrapped);
  } catch (const Error& e) {
    cpu_wide = e.what();
  }
  try {
    accumulate_confusion(acc, lg, wrapped.to(gpu));
  } catch (const Error& e) {
    gpu_wide = e.what();
  }
  CHECK_MESSAGE(gpu_wide.find("label 4294967297 at position") != std::string::npos, gpu_wide);
  CHECK(gpu_wide == cpu_wide);
  check_equal(counts(acc), twice, "after a batch with a wrapped i64 label");

  // Scores of a GPU matrix.
  SegmentationScores s = segmentation_scores(acc);
  SegmentationScores ref = segmentation_scores(twice, 19);
  CHECK(s.mean_iou == ref.mean_iou);
  CHECK(s.pixel_accuracy == ref.pixel_accuracy);
  check_guards();
}
