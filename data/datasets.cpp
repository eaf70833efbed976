#include "data/datasets.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <set>
#include <sstream>

#include "data/png.h"
#include "engine/error.h"
#include "kernels/common/philox.h"

namespace seg::data {

namespace fs = std::filesystem;

namespace {

// One stderr line per dataset when samples were skipped (the report keeps every line), naming the
// folders scanned and the first skipped sample (other notes, such as ignored frames, may come
// before it in the report).
void announce_skipped(const char* what, const std::string& folders, const ScanReport& report) {
  if (report.skipped == 0) return;
  const auto first =
      std::find_if(report.warnings.begin(), report.warnings.end(),
                   [](const std::string& w) { return w.rfind("skipped: ", 0) == 0; });
  std::fprintf(stderr, "%s: skipped %lld incomplete sample(s) in %s (first: %s)\n", what,
               static_cast<long long>(report.skipped), folders.c_str(),
               first == report.warnings.end() ? "?" : first->c_str());
}

void check_offsets(const std::vector<int>& offsets, const char* what) {
  std::set<int> seen;
  for (int o : offsets) {
    SEG_CHECK(o >= 0 && o < kSnippetLength, what, ": frame offset ", o, " outside the snippet (0..",
              kSnippetLength - 1, ")");
    SEG_CHECK(seen.insert(o).second, what, ": frame offset ", o, " repeated");
  }
}

// Frames (same size) into a (T, 3, H, W) f32 tensor.
Tensor stack_frames(const std::vector<Image>& frames, const Normalization& norm,
                    const std::string& what) {
  SEG_ASSERT(!frames.empty());
  const int h = frames[0].height, w = frames[0].width;
  for (size_t i = 1; i < frames.size(); ++i)
    SEG_CHECK(frames[i].height == h && frames[i].width == w, what, ": frame ", i, " is ",
              frames[i].width, "x", frames[i].height, ", frame 0 is ", w, "x", h,
              " (set a resize size for sources of mixed sizes)");
  Tensor t = empty({static_cast<int64_t>(frames.size()), 3, h, w}, DType::f32);
  float* out = t.data<float>();
  for (size_t i = 0; i < frames.size(); ++i)
    image_to_chw(frames[i], norm, full_box(h, w), out + i * 3 * static_cast<size_t>(h) * w);
  return t;
}

}  // namespace

// ---- Sample, SampleRandom ----

const Tensor& Sample::at(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) {
    std::ostringstream names;
    for (const auto& [k, v] : tensors) names << (names.tellp() > 0 ? ", " : "") << k;
    SEG_CHECK(false, "sample ", id, ": no tensor '", name, "' (it has: ", names.str(), ")");
  }
  return it->second;
}

SampleRandom::SampleRandom(uint64_t seed, uint64_t epoch, uint64_t index) : seed_(seed) {
  SEG_CHECK(epoch < (uint64_t{1} << 32) && index < (uint64_t{1} << 32), "SampleRandom: epoch ",
            epoch, " or index ", index, " does not fit in 32 bits");
  stream_ = (epoch << 32) | index;
}

uint32_t SampleRandom::next_u32() {
  const uint64_t d = draw_++;
  return philox4x32_10(seed_, d / 4, stream_).v[d % 4];
}

float SampleRandom::uniform() {
  return u32_to_unit_f32(next_u32());
}

int SampleRandom::uniform_int(int lo, int hi) {
  SEG_CHECK(hi >= lo, "SampleRandom::uniform_int: empty range ", lo, "..", hi);
  const uint64_t bits = (static_cast<uint64_t>(next_u32()) << 32) | next_u32();
  return lo + static_cast<int>(bits % static_cast<uint64_t>(hi - lo + 1));
}

bool SampleRandom::coin(float p) {
  return uniform() < p;
}

// ---- segmentation ----

SegmentationDataset::SegmentationDataset(const CityscapesOptions& where,
                                         const SegmentationOptions& options)
    : where_(where), options_(options), set_(scan_annotated(where)) {
  SEG_CHECK(options.scale_min > 0 && options.scale_max >= options.scale_min,
            "segmentation dataset: invalid random scale range [", options.scale_min, ", ",
            options.scale_max, "]");
  SEG_CHECK(
      (options.crop_h == 0) == (options.crop_w == 0) && options.crop_h >= 0 && options.crop_w >= 0,
      "segmentation dataset: invalid crop size ", options.crop_w, "x", options.crop_h);
  announce_skipped("segmentation dataset",
                   image_split_dir(where).string() + " and " + label_split_dir(where).string(),
                   set_.report);
}

std::string SegmentationDataset::describe(int64_t index) const {
  SEG_CHECK(index >= 0 && index < size(), "segmentation dataset: index ", index, " outside 0..",
            size() - 1);
  return set_.samples[static_cast<size_t>(index)].image.string();
}

Sample SegmentationDataset::get(int64_t index, uint64_t epoch) const {
  SEG_CHECK(index >= 0 && index < size(), "segmentation dataset: index ", index, " outside 0..",
            size() - 1);
  const AnnotatedSample& s = set_.samples[static_cast<size_t>(index)];
  PngReadOptions png;
  png.max_pixels = where_.max_png_pixels;
  Image image = read_png_rgb(s.image, png);
  // The label must have its image's size: checked from its header, before it is decoded.
  png.width = image.width;
  png.height = image.height;
  png.expected_from = "its image " + s.image.string();
  const GreyImage grey = read_png_grey(s.label, png);
  LabelMap labels = where_.labels == LabelSource::label_ids
                        ? label_ids_to_train_ids(grey, s.label.string())
                        : checked_train_ids(grey, s.label.string());
  int h = 0, w = 0;
  resized_size(options_.resize, image.height, image.width, h, w, s.image.string());
  image = resize_image(image, h, w, options_.resize.interp);
  labels = resize_labels(labels, h, w);

  // Every draw is made whether or not its option is on, so that switching one augmentation does not
  // change the others' choices.
  SampleRandom rng(options_.seed, epoch, static_cast<uint64_t>(index));
  const float u_scale = rng.uniform();
  const bool flip = rng.coin();
  const float uy = rng.uniform(), ux = rng.uniform();

  if (options_.scale_min != 1.0f || options_.scale_max != 1.0f) {
    const float scale = log_uniform_scale(u_scale, options_.scale_min, options_.scale_max);
    const int sh = std::max(1, static_cast<int>(std::lround(h * scale)));
    const int sw = std::max(1, static_cast<int>(std::lround(w * scale)));
    image = resize_image(image, sh, sw, Interp::bilinear);
    labels = resize_labels(labels, sh, sw);
  }
  if (options_.flip && flip) {
    flip_horizontal(image);
    flip_horizontal(labels);
  }
  const CropBox box =
      options_.crop_h > 0
          ? random_crop_box(image.height, image.width, options_.crop_h, options_.crop_w, uy, ux)
          : full_box(image.height, image.width);
  Sample out;
  out.id = s.id();
  out.tensors["image"] = image_to_tensor(image, options_.norm, box);
  out.tensors["label"] = labels_to_tensor(labels, box);
  return out;
}

// ---- video ----

VideoDataset::VideoDataset(const CityscapesOptions& where, const VideoOptions& options)
    : where_(where), options_(options), index_(load_snippet_index(where)) {
  announce_skipped("video dataset", sequence_split_dir(where).string(), index_.report);
}

const Snippet& VideoDataset::snippet(int64_t index) const {
  SEG_CHECK(index >= 0 && index < size(), "video dataset: index ", index, " outside 0..",
            size() - 1);
  return index_.snippets[static_cast<size_t>(index)];
}

std::string VideoDataset::describe(int64_t index) const {
  const Snippet& s = snippet(index);
  char buf[64];
  std::snprintf(buf, sizeof(buf), " sequence %06d frames %06d..%06d", s.sequence, s.start, s.end);
  return (where_.root / s.path).string() + buf;
}

Image VideoDataset::load_frame(const Snippet& s, int offset) const {
  const fs::path file = s.frame_path(where_.root, offset);
  PngReadOptions png;
  png.max_pixels = where_.max_png_pixels;
  Image image = read_png_rgb(file, png);
  int h = 0, w = 0;
  resized_size(options_.resize, image.height, image.width, h, w, file.string());
  return resize_image(image, h, w, options_.resize.interp);
}

// ---- triplet ----

TripletDataset::TripletDataset(const CityscapesOptions& where, const VideoOptions& options,
                               const TripletOptions& triplet)
    : VideoDataset(where, options), triplet_(triplet) {
  SEG_CHECK(triplet.positive_within >= 1 && triplet.negative_beyond > triplet.positive_within &&
                triplet.negative_beyond <= kSnippetLength / 2,
            "triplet dataset: need 1 <= positive_within (", triplet.positive_within,
            ") < negative_beyond (", triplet.negative_beyond, ") <= ", kSnippetLength / 2,
            " so that every anchor has a negative");
}

std::array<int, 3> TripletDataset::pick(SampleRandom& rng) const {
  const int a = rng.uniform_int(0, kSnippetLength - 1);
  std::vector<int> pos, neg;
  for (int f = 0; f < kSnippetLength; ++f) {
    const int d = std::abs(f - a);
    if (d >= 1 && d <= triplet_.positive_within) pos.push_back(f);
    if (d >= triplet_.negative_beyond) neg.push_back(f);
  }
  const int p = pos[static_cast<size_t>(rng.uniform_int(0, static_cast<int>(pos.size()) - 1))];
  const int n = neg[static_cast<size_t>(rng.uniform_int(0, static_cast<int>(neg.size()) - 1))];
  return {a, p, n};
}

Sample TripletDataset::get(int64_t index, uint64_t epoch) const {
  const Snippet& s = snippet(index);
  SampleRandom rng(options_.seed, epoch, static_cast<uint64_t>(index));
  const std::array<int, 3> offsets = pick(rng);
  static constexpr const char* kNames[3] = {"anchor", "positive", "negative"};
  Sample out;
  out.id = s.id();
  for (int k = 0; k < 3; ++k) {
    Image frame = load_frame(s, offsets[static_cast<size_t>(k)]);
    if (rng.coin() && options_.flip) flip_horizontal(frame);  // each frame independently
    out.tensors[kNames[k]] = image_to_tensor(frame, options_.norm);
  }
  for (int k = 1; k < 3; ++k) {
    const Tensor& a = out.tensors["anchor"];
    const Tensor& b = out.tensors[kNames[k]];
    SEG_CHECK(a.sizes() == b.sizes(), describe(index), ": frames of different sizes ",
              shape_str(a.sizes()), " and ", shape_str(b.sizes()),
              " (set a resize size for sources of mixed sizes)");
  }
  out.tensors["frames"] =
      from_vector(std::vector<int32_t>{offsets[0], offsets[1], offsets[2]}, {3});
  return out;
}

// ---- frame order ----

FrameOrderDataset::FrameOrderDataset(const CityscapesOptions& where, const VideoOptions& options,
                                     const FrameOrderOptions& order)
    : VideoDataset(where, options), order_(order) {
  SEG_CHECK(order.offsets.size() == 3 || order.offsets.size() == 4,
            "frame order dataset: ", order.offsets.size(), " frames given, 3 or 4 expected");
  check_offsets(order.offsets, "frame order dataset");
  std::vector<int> p(order.offsets.size());
  std::iota(p.begin(), p.end(), 0);
  do permutations_.push_back(p);
  while (std::next_permutation(p.begin(), p.end()));
}

const std::vector<int>& FrameOrderDataset::permutation(int label) const {
  SEG_CHECK(label >= 0 && label < num_classes(), "frame order dataset: label ", label,
            " outside 0..", num_classes() - 1);
  return permutations_[static_cast<size_t>(label)];
}

Sample FrameOrderDataset::get(int64_t index, uint64_t epoch) const {
  const Snippet& s = snippet(index);
  SampleRandom rng(options_.seed, epoch, static_cast<uint64_t>(index));
  const int label = rng.uniform_int(0, num_classes() - 1);
  const bool flip = rng.coin() && options_.flip;
  const std::vector<int>& perm = permutation(label);
  std::vector<Image> frames;
  std::vector<int32_t> order;
  for (int k : perm) {
    const int offset = order_.offsets[static_cast<size_t>(k)];
    frames.push_back(load_frame(s, offset));
    if (flip) flip_horizontal(frames.back());
    order.push_back(offset);
  }
  Sample out;
  out.id = s.id();
  out.tensors["frames"] = stack_frames(frames, options_.norm, describe(index));
  out.tensors["label"] = full({}, label, DType::i32);
  out.tensors["order"] = from_vector(order, {static_cast<int64_t>(order.size())});
  return out;
}

// ---- colorization ----

ColorizationDataset::ColorizationDataset(const CityscapesOptions& where,
                                         const VideoOptions& options,
                                         const ColorizationOptions& color)
    : VideoDataset(where, options), color_(color) {
  SEG_CHECK(!color.references.empty(), "colorization dataset: no reference frames");
  std::vector<int> all = color.references;
  all.push_back(color.target);
  check_offsets(all, "colorization dataset");
}

Sample ColorizationDataset::get(int64_t index, uint64_t epoch) const {
  const Snippet& s = snippet(index);
  SampleRandom rng(options_.seed, epoch, static_cast<uint64_t>(index));
  const bool flip = rng.coin() && options_.flip;
  std::vector<int> offsets = color_.references;
  offsets.push_back(color_.target);
  std::vector<Tensor> labs;
  for (int offset : offsets) {
    Image frame = load_frame(s, offset);
    if (flip) flip_horizontal(frame);
    labs.push_back(image_to_lab(frame));
    SEG_CHECK(labs.back().sizes() == labs.front().sizes(), describe(index),
              ": frames of different sizes ", shape_str(labs.front().sizes()), " and ",
              shape_str(labs.back().sizes()));
  }
  const int64_t n = static_cast<int64_t>(labs.size()), h = labs[0].size(1), w = labs[0].size(2);
  const size_t plane = static_cast<size_t>(h * w);
  Tensor lab = empty({n, 3, h, w}, DType::f32);
  Tensor grey = empty({n, 1, h, w}, DType::f32);
  float* lp = lab.data<float>();
  float* gp = grey.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    const float* src = labs[static_cast<size_t>(i)].data<float>();
    std::copy(src, src + 3 * plane, lp + static_cast<size_t>(i) * 3 * plane);
    for (size_t k = 0; k < plane; ++k)
      gp[static_cast<size_t>(i) * plane + k] = src[k] / 50.0f - 1.0f;
  }
  Sample out;
  out.id = s.id();
  out.tensors["lab"] = lab;
  out.tensors["grey"] = grey;
  return out;
}

// ---- future frame ----

FutureFrameDataset::FutureFrameDataset(const CityscapesOptions& where, const VideoOptions& options,
                                       const FutureFrameOptions& future)
    : VideoDataset(where, options), future_(future) {
  SEG_CHECK(!future.inputs.empty() && !future.targets.empty(),
            "future frame dataset: inputs and targets needed");
  std::vector<int> all = future.inputs;
  all.insert(all.end(), future.targets.begin(), future.targets.end());
  check_offsets(all, "future frame dataset");
}

Sample FutureFrameDataset::get(int64_t index, uint64_t epoch) const {
  const Snippet& s = snippet(index);
  SampleRandom rng(options_.seed, epoch, static_cast<uint64_t>(index));
  const bool flip = rng.coin() && options_.flip;
  auto load = [&](const std::vector<int>& offsets, const Normalization& norm) {
    std::vector<Image> frames;
    for (int offset : offsets) {
      frames.push_back(load_frame(s, offset));
      if (flip) flip_horizontal(frames.back());
    }
    return stack_frames(frames, norm, describe(index));
  };
  Sample out;
  out.id = s.id();
  out.tensors["inputs"] = load(future_.inputs, options_.norm);
  out.tensors["targets"] = load(future_.targets, future_.target_norm);
  SEG_CHECK(out.tensors["inputs"].size(2) == out.tensors["targets"].size(2) &&
                out.tensors["inputs"].size(3) == out.tensors["targets"].size(3),
            describe(index), ": input and target frames of different sizes");
  return out;
}

}  // namespace seg::data
