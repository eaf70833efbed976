// Transforms on decoded images and label maps: resizing (area, bilinear, nearest for labels)
// checked by hand and against the engine's bilinear upsampling, random scale, crop with padding,
// flips, grey, normalisation, CIE Lab with known colours and a round trip, and the labelId ->
// trainId mapping with its errors.
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "data/labels.h"
#include "data/transforms.h"
#include "engine/ops.h"
#include "kernels/common/philox.h"
#include "tests/support/test_util.h"

using namespace seg;
using namespace seg::test;
using namespace seg::data;

namespace {

// Published Lab values are given to 4 decimals and depend on the white point's last digit.
constexpr float kLabRefTol = 1e-2f;
// rgb -> Lab -> rgb in f32 arithmetic around double math: far below one u8 step (1/255 = 0.004).
constexpr float kRoundTripTol = 1e-4f;
// Our bilinear resize rounds its f32 value to u8: within half a step of the engine's f32 result.
constexpr float kResizeTol = 0.5f + 1e-3f;

Image make_image(int w, int h, int c, const std::vector<uint8_t>& v) {
  REQUIRE(v.size() == static_cast<size_t>(w) * h * c);
  return Image{w, h, c, v};
}

Image random_image(int w, int h, uint64_t seed) {
  Image img{w, h, 3, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  for (size_t i = 0; i < img.pixels.size(); ++i)
    img.pixels[i] = static_cast<uint8_t>(philox_u32_at(seed, 0, i) & 255u);
  return img;
}

}  // namespace

TEST_CASE("output sizes: a downsample factor or an explicit size") {
  int h = 0, w = 0;
  for (int f : {1, 2, 4, 8}) {
    resized_size(ResizeOptions{f, 0, 0, Interp::area}, 1024, 2048, h, w, "x.png");
    CHECK(h == 1024 / f);
    CHECK(w == 2048 / f);
  }
  resized_size(ResizeOptions{8, 128, 256, Interp::area}, 100, 300, h, w, "x.png");
  CHECK(h == 128);
  CHECK(w == 256);
  CHECK(contains(error_of([&] {
                   resized_size(ResizeOptions{8, 0, 0, Interp::area}, 4, 4, h, w, "small.png");
                 }),
                 "small.png: a 4x4 image cannot be downsampled by 8"));
  CHECK(contains(error_of([&] {
                   resized_size(ResizeOptions{1, 10, 0, Interp::area}, 4, 4, h, w, "x.png");
                 }),
                 "both height and width must be positive"));
  CHECK(parse_interp("bilinear") == Interp::bilinear);
  CHECK(contains(error_of([] { parse_interp("bicubic"); }), "unknown interpolation 'bicubic'"));
}

TEST_CASE("area resize: block means for integer factors, fractional weights otherwise") {
  // 4x2 RGB, halved to 2x1: each output is the rounded mean of a 2x2 block.
  const Image img = make_image(4, 2, 3, {10, 0, 255, 20, 1, 255, 30, 0, 0, 41, 0, 0,
                                         30, 2, 255, 40, 2, 254, 50, 0, 0, 60, 0, 1});
  const Image half = resize_image(img, 1, 2, Interp::area);
  REQUIRE(half.width == 2);
  REQUIRE(half.height == 1);
  // (10+20+30+40)/4 = 25; (0+1+2+2)/4 = 1.25 -> 1; (255+255+255+254)/4 = 254.75 -> 255
  // (30+41+50+60)/4 = 45.25 -> 45; 0; (0+0+0+1)/4 = 0.25 -> 0
  CHECK(half.pixels == std::vector<uint8_t>{25, 1, 255, 45, 0, 0});
  // 3 -> 2 pixels: out0 = (p0 + 0.5 p1) / 1.5, out1 = (0.5 p1 + p2) / 1.5.
  const Image row = make_image(3, 1, 1, {0, 90, 180});
  CHECK(resize_image(row, 1, 2, Interp::area).pixels == std::vector<uint8_t>{30, 150});
  // Same size: unchanged.
  CHECK(resize_image(img, 2, 4, Interp::area).pixels == img.pixels);
  // 8x downsampling of a constant image stays constant, of any image stays within the range.
  const Image big = random_image(64, 32, 3);
  const Image small = resize_image(big, 4, 8, Interp::area);
  CHECK(small.width == 8);
  CHECK(small.height == 4);
  // Block (0, 0) by hand.
  for (int c = 0; c < 3; ++c) {
    int sum = 0;
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 8; ++x) sum += big.pixels[(static_cast<size_t>(y) * 64 + x) * 3 + c];
    CHECK(small.pixels[static_cast<size_t>(c)] == (sum + 32) / 64);
  }
}

TEST_CASE("bilinear resize: align_corners=False, as the engine's upsample_bilinear2d") {
  // 2 -> 4 pixels: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
  const Image row = make_image(2, 1, 1, {0, 100});
  CHECK(resize_image(row, 1, 4, Interp::bilinear).pixels == std::vector<uint8_t>{0, 25, 75, 100});
  // Against the engine on a random image, up and down.
  const Image img = random_image(37, 23, 11);
  std::vector<float> chw(static_cast<size_t>(3) * 23 * 37);
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 23 * 37; ++i)
      chw[static_cast<size_t>(c) * 23 * 37 + i] = img.pixels[static_cast<size_t>(i) * 3 + c];
  const Tensor x = from_vector(chw, {1, 3, 23, 37});
  for (auto [oh, ow] : {std::pair{50, 81}, std::pair{11, 9}, std::pair{23, 18}}) {
    const Image ours = resize_image(img, oh, ow, Interp::bilinear);
    const std::vector<float> ref = to_vector<float>(upsample_bilinear2d(x, oh, ow, false));
    for (int c = 0; c < 3; ++c)
      for (int i = 0; i < oh * ow; ++i)
        REQUIRE(std::abs(ours.pixels[static_cast<size_t>(i) * 3 + c] -
                         ref[static_cast<size_t>(c) * oh * ow + i]) <= kResizeTol);
  }
}

TEST_CASE("labels: nearest at the pixel centre") {
  const LabelMap l{4, 1, {0, 1, 2, 3}};
  CHECK(resize_labels(l, 1, 2).values == std::vector<uint8_t>{1, 3});
  CHECK(resize_labels(LabelMap{2, 1, {5, 9}}, 1, 4).values == std::vector<uint8_t>{5, 5, 9, 9});
  const LabelMap tall{1, 3, {1, 2, 3}};
  // Rows floor(0.75) and floor(2.25).
  CHECK(resize_labels(tall, 2, 1).values == std::vector<uint8_t>{1, 3});
}

TEST_CASE("random scale is log-uniform") {
  CHECK(log_uniform_scale(0.0f, 0.5f, 2.0f) == doctest::Approx(0.5));
  CHECK(log_uniform_scale(0.5f, 0.5f, 2.0f) == doctest::Approx(1.0));
  CHECK(log_uniform_scale(0.75f, 0.5f, 2.0f) == doctest::Approx(std::sqrt(2.0)));
  CHECK(log_uniform_scale(0.3f, 1.0f, 1.0f) == 1.0f);
  CHECK(contains(error_of([] { log_uniform_scale(0.5f, 2.0f, 1.0f); }),
                 "invalid random scale range"));
}

TEST_CASE("flips and grey") {
  Image img = make_image(3, 2, 3, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18});
  flip_horizontal(img);
  CHECK(img.pixels ==
        std::vector<uint8_t>{7, 8, 9, 4, 5, 6, 1, 2, 3, 16, 17, 18, 13, 14, 15, 10, 11, 12});
  LabelMap l{3, 2, {1, 2, 3, 4, 5, 6}};
  flip_horizontal(l);
  CHECK(l.values == std::vector<uint8_t>{3, 2, 1, 6, 5, 4});
  const Image rgb = make_image(4, 1, 3, {255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255});
  const Image grey = to_grayscale(rgb);
  CHECK(grey.channels == 1);
  // 0.299 * 255 = 76.2, 0.587 * 255 = 149.7, 0.114 * 255 = 29.1
  CHECK(grey.pixels == std::vector<uint8_t>{76, 150, 29, 255});
}

TEST_CASE("crop boxes and normalisation; padding is 0 after normalisation") {
  CropBox b = random_crop_box(10, 20, 4, 8, 0.0f, 0.0f);
  CHECK(b.top == 0);
  CHECK(b.left == 0);
  b = random_crop_box(10, 20, 4, 8, 0.99999f, 0.99999f);
  CHECK(b.top == 6);
  CHECK(b.left == 12);
  b = random_crop_box(3, 5, 4, 8, 0.7f, 0.7f);  // larger than the image: only offset 0
  CHECK(b.top == 0);
  CHECK(b.left == 0);

  const Image img = make_image(2, 2, 3, {0, 255, 51, 255, 0, 51, 102, 102, 102, 51, 51, 51});
  const Normalization n{{0.5f, 0.25f, 0.2f}, {0.5f, 0.25f, 0.1f}};
  const Tensor t = image_to_tensor(img, n, CropBox{1, 1, 2, 2});
  CHECK(t.sizes() == Shape{3, 2, 2});
  const std::vector<float> v = to_vector<float>(t);
  // Only pixel (1, 1) = (51, 51, 51) is inside: (0.2 - mean) / std.
  CHECK(v[0] == doctest::Approx((0.2 - 0.5) / 0.5));
  CHECK(v[4] == doctest::Approx((0.2 - 0.25) / 0.25));
  CHECK(v[8] == doctest::Approx(0.0).epsilon(1e-6));
  for (int c = 0; c < 3; ++c)
    for (int i = 1; i < 4; ++i) CHECK(v[static_cast<size_t>(c) * 4 + i] == 0.0f);
  const Tensor full_t = image_to_tensor(img, n);
  CHECK(to_vector<float>(full_t)[1] == doctest::Approx((1.0 - 0.5) / 0.5));
  const Tensor lt = labels_to_tensor(LabelMap{2, 2, {1, 2, 3, 4}}, CropBox{1, 0, 2, 3});
  CHECK(lt.dtype() == DType::i32);
  CHECK(to_vector<int32_t>(lt) == std::vector<int32_t>{3, 4, 255, 255, 255, 255});
  CHECK(contains(error_of([&] {
                   image_to_tensor(img, Normalization{{0, 0, 0}, {1, 0, 1}});
                 }),
                 "must be positive"));
}

TEST_CASE("CIE Lab: known colours and the round trip") {
  auto check_lab = [](std::array<float, 3> rgb, std::array<float, 3> expected) {
    const std::array<float, 3> lab = rgb_to_lab(rgb);
    for (int c = 0; c < 3; ++c) CHECK(std::abs(lab[c] - expected[c]) <= kLabRefTol);
  };
  check_lab({0, 0, 0}, {0, 0, 0});
  check_lab({1, 1, 1}, {100, 0, 0});
  check_lab({1, 0, 0}, {53.2408f, 80.0925f, 67.2032f});
  check_lab({0, 1, 0}, {87.7347f, -86.1827f, 83.1793f});
  check_lab({0, 0, 1}, {32.2970f, 79.1875f, -107.8602f});
  check_lab({0.5f, 0.5f, 0.5f}, {53.3890f, 0, 0});

  // rgb -> Lab -> rgb over a grid of u8 colours (every 5th level and 255 per channel).
  float worst = 0;
  std::vector<int> levels;
  for (int v = 0; v < 256; v += 5) levels.push_back(v);
  levels.push_back(255);
  for (int r : levels)
    for (int g : levels)
      for (int b : levels) {
        const std::array<float, 3> rgb{r / 255.0f, g / 255.0f, b / 255.0f};
        const std::array<float, 3> back = lab_to_rgb(rgb_to_lab(rgb));
        for (int c = 0; c < 3; ++c) worst = std::max(worst, std::abs(back[c] - rgb[c]));
      }
  CHECK(worst <= kRoundTripTol);
  // Images: u8 -> Lab tensor -> u8 is exact.
  const Image img = random_image(31, 17, 5);
  const Tensor lab = image_to_lab(img);
  CHECK(lab.sizes() == Shape{3, 17, 31});
  CHECK(lab_to_image(lab).pixels == img.pixels);
  // The tensor agrees with the per-colour function.
  const std::vector<float> lv = to_vector<float>(lab);
  const std::array<float, 3> e =
      rgb_to_lab({img.pixels[0] / 255.0f, img.pixels[1] / 255.0f, img.pixels[2] / 255.0f});
  for (int c = 0; c < 3; ++c) CHECK(std::abs(lv[static_cast<size_t>(c) * 17 * 31] - e[c]) <= 1e-3f);
}

TEST_CASE(
    "labelIds -> trainIds through the table; values outside it are errors naming the file and "
    "value") {
  GreyImage g{34, 1, 8, {}, {}};
  for (int v = 0; v < 34; ++v) g.values8.push_back(static_cast<uint8_t>(v));
  const LabelMap m = label_ids_to_train_ids(g, "a.png");
  for (int v = 0; v < 34; ++v)
    CHECK(m.values[static_cast<size_t>(v)] == kCityscapesLabels[static_cast<size_t>(v)].train_id);
  CHECK(m.values[7] == 0);    // road
  CHECK(m.values[26] == 13);  // car
  CHECK(m.values[0] == 255);  // unlabeled
  g.values8[20] = 34;
  CHECK(error_of([&] { label_ids_to_train_ids(g, "gtFine/x_labelIds.png"); }) ==
        "gtFine/x_labelIds.png: value 34 at (x=20, y=0) is not a Cityscapes labelId (0..33)");
  GreyImage wide{2, 2, 16, {}, {7, 7, 7, 1000}};
  CHECK(error_of([&] { label_ids_to_train_ids(wide, "w.png"); }) ==
        "w.png: value 1000 at (x=1, y=1) is not a Cityscapes labelId (0..33)");
  GreyImage tid{3, 1, 8, {0, 18, 255}, {}};
  CHECK(checked_train_ids(tid, "t.png").values == std::vector<uint8_t>{0, 18, 255});
  tid.values8[1] = 19;
  CHECK(error_of([&] { checked_train_ids(tid, "t.png"); }) ==
        "t.png: value 19 at (x=1, y=0) is not a Cityscapes trainId (0..18 or 255)");
}
