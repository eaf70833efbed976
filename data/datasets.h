// The five Cityscapes datasets: segmentation on the annotated images, and four video tasks on the
// 30-frame snippets (triplet, frame order, colorization, future frame). A sample is a set of named
// tensors; the loader (data/loader.h) stacks samples into batches.
//
// Design notes
// - get(index, epoch) is const and thread-safe: every random choice (scale, crop, flip, frame
//   picks, permutation) comes from a SampleRandom stream keyed by (seed, epoch, index) through
//   Philox, so a sample is the same whichever worker thread makes it, and in whatever order.
// - Sample tensors (per dataset, before batching):
//   segmentation  "image" (3,H,W) f32 normalised; "label" (H,W) i32 trainIds (255 ignored)
//   triplet       "anchor", "positive", "negative" (3,H,W) f32; "frames" (3) i32 their offsets
//   frame order   "frames" (T,3,H,W) f32 in shuffled order; "label" () i32, the permutation's
//                 index in lexicographic order (0..5 for T = 3, 0..23 for T = 4); "order" (T) i32
//                 the offsets in the order shown
//   colorization  "grey" (R+1,1,H,W) f32 = L / 50 - 1 in [-1, 1], the references then the target;
//                 "lab" (R+1,3,H,W) f32 CIE Lab (L in [0, 100]) of the same frames
//   future frame  "inputs" (I,3,H,W) f32 normalised; "targets" (O,3,H,W) f32 in [-1, 1] by default
// - Flips: segmentation flips image and label together; triplet flips each of its three frames
//   independently (the study's augmentation); frame order, colorization and future frame flip all
//   frames of a sample together (a per-frame flip would break the motion they learn from).
// - Triplet (FINDINGS.md): anchor uniform over the 30 frames, positive p with 1 <= |p - a| <= k
//   (default 3), negative n with |n - a| >= m (default 10), each uniform among the valid frames; m
//   <= 15 so that every anchor has a negative.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/cityscapes.h"
#include "data/transforms.h"
#include "engine/tensor.h"

namespace seg::data {

// A sample: named tensors, and an id for messages ("aachen_000000_000019").
struct Sample {
  std::string id;
  std::map<std::string, Tensor> tensors;
  // The tensor called `name`; an error lists the names present.
  const Tensor& at(const std::string& name) const;
};

// Counter-based random numbers for one sample: Philox4x32-10 with key `seed` and counter
// (draw / 4, epoch << 32 | index); draw k is lane k % 4. Independent of threads and of order.
class SampleRandom {
 public:
  SampleRandom(uint64_t seed, uint64_t epoch, uint64_t index);
  uint32_t next_u32();
  float uniform();                  // [0, 1), 24 bits
  int uniform_int(int lo, int hi);  // lo..hi inclusive (bias below 2^-32 per draw)
  bool coin(float p = 0.5f);        // true with probability p

 private:
  uint64_t seed_, stream_, draw_ = 0;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  // Sample `index` (0 <= index < size()) of epoch `epoch`; thread-safe and deterministic.
  virtual Sample get(int64_t index, uint64_t epoch) const = 0;
  // What sample `index` reads (a file, a snippet folder), for error messages.
  virtual std::string describe(int64_t index) const = 0;
  // Samples left out by skip_incomplete, with one line each.
  virtual const ScanReport& report() const = 0;
};

// --- segmentation ---
struct SegmentationOptions {
  ResizeOptions resize;  // applied first (downsample 2/4/8 or a size)
  Normalization norm = kCityscapesNormalization;
  // Random scale, log-uniform in [scale_min, scale_max] (image bilinear, label nearest).
  float scale_min = 1.0f, scale_max = 1.0f;
  int crop_h = 0, crop_w = 0;  // random crop with padding; 0: no crop
  bool flip = false;           // horizontal flip with p = 0.5
  uint64_t seed = 0;
};

class SegmentationDataset final : public Dataset {
 public:
  SegmentationDataset(const CityscapesOptions& where, const SegmentationOptions& options);
  int64_t size() const override { return static_cast<int64_t>(set_.samples.size()); }
  Sample get(int64_t index, uint64_t epoch) const override;
  std::string describe(int64_t index) const override;
  const ScanReport& report() const override { return set_.report; }
  const std::vector<AnnotatedSample>& samples() const { return set_.samples; }

 private:
  CityscapesOptions where_;
  SegmentationOptions options_;
  AnnotatedSet set_;
};

// --- video tasks (one sample per snippet) ---
struct VideoOptions {
  ResizeOptions resize{1, 128, 256, Interp::area};  // the study's pretext input size
  // For RGB inputs (colorization uses grey and Lab instead).
  Normalization norm = kImageNetNormalization;
  bool flip = true;
  uint64_t seed = 0;
};

// Shared by the four video datasets: the snippet index and frame decoding.
class VideoDataset : public Dataset {
 public:
  VideoDataset(const CityscapesOptions& where, const VideoOptions& options);
  int64_t size() const override { return static_cast<int64_t>(index_.snippets.size()); }
  std::string describe(int64_t index) const override;
  const ScanReport& report() const override { return index_.report; }
  const SnippetIndex& index() const { return index_; }
  const std::filesystem::path& root() const { return where_.root; }

 protected:
  const Snippet& snippet(int64_t index) const;
  // Frame `offset` of a snippet, decoded and resized (u8).
  Image load_frame(const Snippet& s, int offset) const;

  CityscapesOptions where_;
  VideoOptions options_;
  SnippetIndex index_;
};

struct TripletOptions {
  int positive_within = 3;   // k: 1 <= |p - a| <= k
  int negative_beyond = 10;  // m: |n - a| >= m
};

class TripletDataset final : public VideoDataset {
 public:
  TripletDataset(const CityscapesOptions& where, const VideoOptions& options,
                 const TripletOptions& triplet = {});
  Sample get(int64_t index, uint64_t epoch) const override;
  // The (anchor, positive, negative) offsets of a sample, as get() draws them.
  std::array<int, 3> pick(SampleRandom& rng) const;

 private:
  TripletOptions triplet_;
};

struct FrameOrderOptions {
  std::vector<int> offsets{8, 10, 12};  // 3 frames (6 permutations) or 4 (24 permutations)
};

class FrameOrderDataset final : public VideoDataset {
 public:
  FrameOrderDataset(const CityscapesOptions& where, const VideoOptions& options,
                    const FrameOrderOptions& order = {});
  Sample get(int64_t index, uint64_t epoch) const override;
  int num_classes() const { return static_cast<int>(permutations_.size()); }
  // Permutation `label` (lexicographic): frame k of the sample is offsets[permutation[k]].
  const std::vector<int>& permutation(int label) const;

 private:
  FrameOrderOptions order_;
  std::vector<std::vector<int>> permutations_;
};

struct ColorizationOptions {
  std::vector<int> references{0, 4, 8};
  int target = 12;
};

class ColorizationDataset final : public VideoDataset {
 public:
  ColorizationDataset(const CityscapesOptions& where, const VideoOptions& options,
                      const ColorizationOptions& color = {});
  Sample get(int64_t index, uint64_t epoch) const override;

 private:
  ColorizationOptions color_;
};

struct FutureFrameOptions {
  std::vector<int> inputs{0, 2, 4};
  std::vector<int> targets{6, 8, 10};
  // Targets are normalised on their own: by default to [-1, 1], the range of the model's tanh
  // output (inputs use VideoOptions::norm).
  Normalization target_norm = kSymmetricNormalization;
};

class FutureFrameDataset final : public VideoDataset {
 public:
  FutureFrameDataset(const CityscapesOptions& where, const VideoOptions& options,
                     const FutureFrameOptions& future = {});
  Sample get(int64_t index, uint64_t epoch) const override;

 private:
  FutureFrameOptions future_;
};

}  // namespace seg::data
