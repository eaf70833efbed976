#include "data/transforms.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "data/labels.h"
#include "engine/error.h"

namespace seg::data {

namespace {

uint8_t round_u8(float v) {
  v = std::min(std::max(v, 0.0f), 255.0f);
  return static_cast<uint8_t>(v + 0.5f);
}

void check_image(const Image& image, const char* what) {
  SEG_CHECK(
      image.width > 0 && image.height > 0 && image.channels > 0 &&
          image.pixels.size() == static_cast<size_t>(image.width) * image.height * image.channels,
      what, ": invalid image ", image.width, "x", image.height, "x", image.channels, " with ",
      image.pixels.size(), " bytes");
}

void check_labels(const LabelMap& labels, const char* what) {
  SEG_CHECK(labels.width > 0 && labels.height > 0 &&
                labels.values.size() == static_cast<size_t>(labels.width) * labels.height,
            what, ": invalid label map ", labels.width, "x", labels.height, " with ",
            labels.values.size(), " values");
}

// Source spans and fractional weights of a 1-D area (box) resampling from `in` to `out` samples.
struct AreaTable {
  std::vector<int> first, count;
  std::vector<float> weights;  // concatenated, count[o] per output
  std::vector<int> offset;
};

AreaTable area_table(int in, int out) {
  AreaTable t;
  const double scale = static_cast<double>(in) / out;
  for (int o = 0; o < out; ++o) {
    const double lo = o * scale, hi = (o + 1) * scale;
    const int first = static_cast<int>(std::floor(lo));
    const int last = std::min(in - 1, static_cast<int>(std::ceil(hi)) - 1);
    t.first.push_back(first);
    t.offset.push_back(static_cast<int>(t.weights.size()));
    int n = 0;
    for (int i = first; i <= last; ++i) {
      const double w = (std::min<double>(i + 1, hi) - std::max<double>(i, lo)) / scale;
      if (w <= 0) continue;
      if (n == 0) t.first.back() = i;
      t.weights.push_back(static_cast<float>(w));
      ++n;
    }
    t.count.push_back(n);
  }
  return t;
}

// Integer factor in both directions: the exact rounded mean of each block, in integers.
Image area_integer(const Image& in, int fy, int fx, int out_h, int out_w) {
  const int c = in.channels;
  Image out{out_w, out_h, c, std::vector<uint8_t>(static_cast<size_t>(out_w) * out_h * c)};
  const uint32_t n = static_cast<uint32_t>(fy * fx), half = n / 2;
  std::vector<uint32_t> acc(static_cast<size_t>(out_w) * c);
  for (int oy = 0; oy < out_h; ++oy) {
    std::fill(acc.begin(), acc.end(), 0u);
    for (int dy = 0; dy < fy; ++dy) {
      const uint8_t* row = in.pixels.data() + static_cast<size_t>(oy * fy + dy) * in.width * c;
      if (c == 3) {
        for (int ox = 0; ox < out_w; ++ox) {
          const uint8_t* p = row + static_cast<size_t>(ox) * fx * 3;
          uint32_t r = 0, g = 0, b = 0;
          for (int dx = 0; dx < fx; ++dx, p += 3) {
            r += p[0];
            g += p[1];
            b += p[2];
          }
          uint32_t* a = acc.data() + static_cast<size_t>(ox) * 3;
          a[0] += r;
          a[1] += g;
          a[2] += b;
        }
      } else {
        for (int ox = 0; ox < out_w; ++ox)
          for (int dx = 0; dx < fx; ++dx)
            for (int ch = 0; ch < c; ++ch)
              acc[static_cast<size_t>(ox) * c + ch] +=
                  row[(static_cast<size_t>(ox) * fx + dx) * c + ch];
      }
    }
    uint8_t* dst = out.pixels.data() + static_cast<size_t>(oy) * out_w * c;
    for (size_t i = 0; i < acc.size(); ++i) dst[i] = static_cast<uint8_t>((acc[i] + half) / n);
  }
  return out;
}

Image area_general(const Image& in, int out_h, int out_w) {
  const int c = in.channels;
  const AreaTable tx = area_table(in.width, out_w), ty = area_table(in.height, out_h);
  // Horizontal pass: (in.height, out_w, c) floats.
  std::vector<float> mid(static_cast<size_t>(in.height) * out_w * c);
  for (int y = 0; y < in.height; ++y) {
    const uint8_t* row = in.pixels.data() + static_cast<size_t>(y) * in.width * c;
    float* m = mid.data() + static_cast<size_t>(y) * out_w * c;
    for (int ox = 0; ox < out_w; ++ox) {
      for (int ch = 0; ch < c; ++ch) {
        float s = 0;
        for (int k = 0; k < tx.count[ox]; ++k)
          s += tx.weights[tx.offset[ox] + k] * row[static_cast<size_t>(tx.first[ox] + k) * c + ch];
        m[static_cast<size_t>(ox) * c + ch] = s;
      }
    }
  }
  Image out{out_w, out_h, c, std::vector<uint8_t>(static_cast<size_t>(out_w) * out_h * c)};
  std::vector<float> acc(static_cast<size_t>(out_w) * c);
  for (int oy = 0; oy < out_h; ++oy) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int k = 0; k < ty.count[oy]; ++k) {
      const float w = ty.weights[ty.offset[oy] + k];
      const float* m = mid.data() + static_cast<size_t>(ty.first[oy] + k) * out_w * c;
      for (size_t i = 0; i < acc.size(); ++i) acc[i] += w * m[i];
    }
    uint8_t* dst = out.pixels.data() + static_cast<size_t>(oy) * out_w * c;
    for (size_t i = 0; i < acc.size(); ++i) dst[i] = round_u8(acc[i]);
  }
  return out;
}

// Source index pair and weight of the second for align_corners=False bilinear sampling.
void bilinear_table(int in, int out, std::vector<int>& i0, std::vector<int>& i1,
                    std::vector<float>& w1) {
  const double scale = static_cast<double>(in) / out;
  i0.resize(out);
  i1.resize(out);
  w1.resize(out);
  for (int o = 0; o < out; ++o) {
    double src = (o + 0.5) * scale - 0.5;
    if (src < 0) src = 0;
    int a = static_cast<int>(std::floor(src));
    if (a > in - 1) a = in - 1;
    i0[o] = a;
    i1[o] = std::min(a + 1, in - 1);
    w1[o] = static_cast<float>(src - a);
  }
}

Image bilinear(const Image& in, int out_h, int out_w) {
  const int c = in.channels;
  std::vector<int> x0, x1, y0, y1;
  std::vector<float> wx, wy;
  bilinear_table(in.width, out_w, x0, x1, wx);
  bilinear_table(in.height, out_h, y0, y1, wy);
  Image out{out_w, out_h, c, std::vector<uint8_t>(static_cast<size_t>(out_w) * out_h * c)};
  for (int oy = 0; oy < out_h; ++oy) {
    const uint8_t* r0 = in.pixels.data() + static_cast<size_t>(y0[oy]) * in.width * c;
    const uint8_t* r1 = in.pixels.data() + static_cast<size_t>(y1[oy]) * in.width * c;
    const float ly = wy[oy];
    uint8_t* dst = out.pixels.data() + static_cast<size_t>(oy) * out_w * c;
    for (int ox = 0; ox < out_w; ++ox) {
      const size_t a = static_cast<size_t>(x0[ox]) * c, b = static_cast<size_t>(x1[ox]) * c;
      const float lx = wx[ox];
      for (int ch = 0; ch < c; ++ch) {
        const float top = r0[a + ch] + (static_cast<float>(r0[b + ch]) - r0[a + ch]) * lx;
        const float bot = r1[a + ch] + (static_cast<float>(r1[b + ch]) - r1[a + ch]) * lx;
        dst[static_cast<size_t>(ox) * c + ch] = round_u8(top + (bot - top) * ly);
      }
    }
  }
  return out;
}

// sRGB transfer function and its inverse.
double srgb_to_linear(double c) {
  return c <= 0.04045 ? c / 12.92 : std::pow((c + 0.055) / 1.055, 2.4);
}
double linear_to_srgb(double c) {
  return c <= 0.0031308 ? 12.92 * c : 1.055 * std::pow(c, 1.0 / 2.4) - 0.055;
}

// sRGB (linear) -> XYZ, D65 (IEC 61966-2-1), and its inverse.
constexpr double kRgbToXyz[3][3] = {{0.4124564, 0.3575761, 0.1804375},
                                    {0.2126729, 0.7151522, 0.0721750},
                                    {0.0193339, 0.1191920, 0.9503041}};
// The exact inverse of kRgbToXyz (adjugate over determinant), so the round trip adds no error of
// its own (the published 7-digit inverse is off by about 1e-7).
struct Matrix3 {
  double m[3][3];
};
constexpr Matrix3 inverse3(const double (&a)[3][3]) {
  Matrix3 r{};
  const double det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) -
                     a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) +
                     a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) {
      // cofactor of a[j][i]
      const int r0 = (j + 1) % 3, r1 = (j + 2) % 3, c0 = (i + 1) % 3, c1 = (i + 2) % 3;
      r.m[i][j] = (a[r0][c0] * a[r1][c1] - a[r0][c1] * a[r1][c0]) / det;
    }
  }
  return r;
}
constexpr Matrix3 kXyzToRgbM = inverse3(kRgbToXyz);
constexpr const double (&kXyzToRgb)[3][3] = kXyzToRgbM.m;
constexpr double kWhite[3] = {0.95047, 1.0, 1.08883};
constexpr double kDelta = 6.0 / 29.0;

double lab_f(double t) {
  return t > kDelta * kDelta * kDelta ? std::cbrt(t) : t / (3 * kDelta * kDelta) + 4.0 / 29.0;
}
double lab_f_inv(double t) {
  return t > kDelta ? t * t * t : 3 * kDelta * kDelta * (t - 4.0 / 29.0);
}

}  // namespace

Interp parse_interp(const std::string& name) {
  if (name == "bilinear") return Interp::bilinear;
  if (name == "area") return Interp::area;
  SEG_CHECK(false, "transforms: unknown interpolation '", name, "' (known: bilinear, area)");
  return Interp::area;
}

const char* interp_name(Interp interp) {
  return interp == Interp::bilinear ? "bilinear" : "area";
}

void resized_size(const ResizeOptions& options, int h, int w, int& out_h, int& out_w,
                  const std::string& what) {
  if (options.height > 0 || options.width > 0) {
    SEG_CHECK(options.height > 0 && options.width > 0, "transforms: resize to ", options.height,
              "x", options.width, ": both height and width must be positive");
    out_h = options.height;
    out_w = options.width;
    return;
  }
  SEG_CHECK(options.downsample >= 1, "transforms: downsample factor ", options.downsample,
            " must be >= 1");
  out_h = h / options.downsample;
  out_w = w / options.downsample;
  SEG_CHECK(out_h >= 1 && out_w >= 1, what, ": a ", w, "x", h, " image cannot be downsampled by ",
            options.downsample);
}

Image resize_image(const Image& image, int out_h, int out_w, Interp interp) {
  check_image(image, "resize_image");
  SEG_CHECK(out_h > 0 && out_w > 0, "resize_image: invalid output size ", out_w, "x", out_h);
  if (out_h == image.height && out_w == image.width) return image;
  if (interp == Interp::area) {
    if (image.height % out_h == 0 && image.width % out_w == 0)
      return area_integer(image, image.height / out_h, image.width / out_w, out_h, out_w);
    return area_general(image, out_h, out_w);
  }
  return bilinear(image, out_h, out_w);
}

LabelMap resize_labels(const LabelMap& labels, int out_h, int out_w) {
  check_labels(labels, "resize_labels");
  SEG_CHECK(out_h > 0 && out_w > 0, "resize_labels: invalid output size ", out_w, "x", out_h);
  if (out_h == labels.height && out_w == labels.width) return labels;
  std::vector<int> xs(out_w);
  const double sx = static_cast<double>(labels.width) / out_w,
               sy = static_cast<double>(labels.height) / out_h;
  for (int x = 0; x < out_w; ++x)
    xs[x] = std::min(labels.width - 1, static_cast<int>(std::floor((x + 0.5) * sx)));
  LabelMap out{out_w, out_h, std::vector<uint8_t>(static_cast<size_t>(out_w) * out_h)};
  for (int y = 0; y < out_h; ++y) {
    const int sy_i = std::min(labels.height - 1, static_cast<int>(std::floor((y + 0.5) * sy)));
    const uint8_t* row = labels.values.data() + static_cast<size_t>(sy_i) * labels.width;
    uint8_t* dst = out.values.data() + static_cast<size_t>(y) * out_w;
    for (int x = 0; x < out_w; ++x) dst[x] = row[xs[x]];
  }
  return out;
}

float log_uniform_scale(float u, float lo, float hi) {
  SEG_CHECK(lo > 0 && hi >= lo, "transforms: invalid random scale range [", lo, ", ", hi, "]");
  if (lo == hi) return lo;
  return static_cast<float>(
      std::exp(std::log(lo) + static_cast<double>(u) * (std::log(hi) - std::log(lo))));
}

void flip_horizontal(Image& image) {
  check_image(image, "flip_horizontal");
  const int c = image.channels;
  for (int y = 0; y < image.height; ++y) {
    uint8_t* row = image.pixels.data() + static_cast<size_t>(y) * image.width * c;
    for (int l = 0, r = image.width - 1; l < r; ++l, --r)
      for (int ch = 0; ch < c; ++ch)
        std::swap(row[static_cast<size_t>(l) * c + ch], row[static_cast<size_t>(r) * c + ch]);
  }
}

void flip_horizontal(LabelMap& labels) {
  check_labels(labels, "flip_horizontal");
  for (int y = 0; y < labels.height; ++y) {
    uint8_t* row = labels.values.data() + static_cast<size_t>(y) * labels.width;
    std::reverse(row, row + labels.width);
  }
}

Image to_grayscale(const Image& image) {
  check_image(image, "to_grayscale");
  SEG_CHECK(image.channels == 3, "to_grayscale: an RGB image was expected, got ", image.channels,
            " channels");
  Image out{image.width, image.height, 1,
            std::vector<uint8_t>(static_cast<size_t>(image.width) * image.height)};
  for (size_t i = 0; i < out.pixels.size(); ++i) {
    const uint8_t* p = image.pixels.data() + i * 3;
    out.pixels[i] = static_cast<uint8_t>((299u * p[0] + 587u * p[1] + 114u * p[2] + 500u) / 1000u);
  }
  return out;
}

CropBox full_box(int height, int width) {
  return CropBox{0, 0, height, width};
}

CropBox random_crop_box(int h, int w, int crop_h, int crop_w, float uy, float ux) {
  SEG_CHECK(crop_h > 0 && crop_w > 0, "transforms: invalid crop size ", crop_w, "x", crop_h);
  const int range_y = std::max(h, crop_h) - crop_h, range_x = std::max(w, crop_w) - crop_w;
  const int top = std::min(range_y, static_cast<int>(uy * static_cast<float>(range_y + 1)));
  const int left = std::min(range_x, static_cast<int>(ux * static_cast<float>(range_x + 1)));
  return CropBox{top, left, crop_h, crop_w};
}

void image_to_chw(const Image& image, const Normalization& norm, const CropBox& box, float* out) {
  check_image(image, "image_to_tensor");
  SEG_CHECK(image.channels == 3, "image_to_tensor: an RGB image was expected, got ", image.channels,
            " channels");
  SEG_CHECK(box.height > 0 && box.width > 0 && box.top >= 0 && box.left >= 0,
            "image_to_tensor: invalid box");
  float scale[3], bias[3];
  for (int c = 0; c < 3; ++c) {
    SEG_CHECK(norm.std[c] > 0, "image_to_tensor: std ", norm.std[c], " of channel ", c,
              " must be positive");
    scale[c] = 1.0f / (255.0f * norm.std[c]);
    bias[c] = -norm.mean[c] / norm.std[c];
  }
  const size_t plane = static_cast<size_t>(box.height) * box.width;
  const int inside_w = std::max(0, std::min(box.width, image.width - box.left));
  for (int y = 0; y < box.height; ++y) {
    const int sy = box.top + y;
    float* d[3] = {out + static_cast<size_t>(y) * box.width,
                   out + plane + static_cast<size_t>(y) * box.width,
                   out + 2 * plane + static_cast<size_t>(y) * box.width};
    int x = 0;
    if (sy < image.height) {
      const uint8_t* row =
          image.pixels.data() + (static_cast<size_t>(sy) * image.width + box.left) * 3;
      for (; x < inside_w; ++x) {
        d[0][x] = row[3 * x] * scale[0] + bias[0];
        d[1][x] = row[3 * x + 1] * scale[1] + bias[1];
        d[2][x] = row[3 * x + 2] * scale[2] + bias[2];
      }
    }
    for (; x < box.width; ++x) d[0][x] = d[1][x] = d[2][x] = 0.0f;
  }
}

Tensor image_to_tensor(const Image& image, const Normalization& norm, const CropBox& box) {
  Tensor t = empty({3, box.height, box.width}, DType::f32);
  image_to_chw(image, norm, box, t.data<float>());
  return t;
}

Tensor image_to_tensor(const Image& image, const Normalization& norm) {
  return image_to_tensor(image, norm, full_box(image.height, image.width));
}

Tensor labels_to_tensor(const LabelMap& labels, const CropBox& box) {
  check_labels(labels, "labels_to_tensor");
  SEG_CHECK(box.height > 0 && box.width > 0 && box.top >= 0 && box.left >= 0,
            "labels_to_tensor: invalid box");
  Tensor t = empty({box.height, box.width}, DType::i32);
  int32_t* out = t.data<int32_t>();
  for (int y = 0; y < box.height; ++y) {
    const int sy = box.top + y;
    for (int x = 0; x < box.width; ++x) {
      const int sx = box.left + x;
      out[static_cast<size_t>(y) * box.width + x] =
          sy < labels.height && sx < labels.width
              ? labels.values[static_cast<size_t>(sy) * labels.width + sx]
              : kIgnoreLabel;
    }
  }
  return t;
}

Tensor labels_to_tensor(const LabelMap& labels) {
  return labels_to_tensor(labels, full_box(labels.height, labels.width));
}

namespace {

// Maps every value of a grey map through `map` (a table lookup that is valid for v < `limit`), or
// throws naming the file, the first value outside and its position; `what` names the kind of id.
template <class V, class Map>
LabelMap map_grey_values(const GreyImage& grey, const std::vector<V>& values, const Map& map,
                         const std::string& file, const char* what) {
  LabelMap out{grey.width, grey.height, std::vector<uint8_t>(values.size())};
  for (size_t i = 0; i < values.size(); ++i) {
    const int v = map(static_cast<int>(values[i]));
    SEG_CHECK(v >= 0, file, ": value ", static_cast<unsigned>(values[i]),
              " at (x=", i % static_cast<size_t>(grey.width),
              ", y=", i / static_cast<size_t>(grey.width), ") is not a Cityscapes ", what);
    out.values[i] = static_cast<uint8_t>(v);
  }
  return out;
}

template <class Map>
LabelMap map_grey(const GreyImage& grey, const Map& map, const std::string& file,
                  const char* what) {
  return grey.bits == 16 ? map_grey_values(grey, grey.values16, map, file, what)
                         : map_grey_values(grey, grey.values8, map, file, what);
}

}  // namespace

LabelMap label_ids_to_train_ids(const GreyImage& label_ids, const std::string& file) {
  const std::array<uint8_t, 256> table = label_id_to_train_id_table();
  const std::string what = "labelId (0.." + std::to_string(kNumLabelIds - 1) + ")";
  return map_grey(
      label_ids, [&](int v) { return v < kNumLabelIds ? int{table[static_cast<size_t>(v)]} : -1; },
      file, what.c_str());
}

LabelMap checked_train_ids(const GreyImage& train_ids, const std::string& file) {
  const std::string what = "trainId (0.." + std::to_string(kNumTrainClasses - 1) + " or " +
                           std::to_string(kIgnoreLabel) + ")";
  return map_grey(
      train_ids, [](int v) { return v < kNumTrainClasses || v == kIgnoreLabel ? v : -1; }, file,
      what.c_str());
}

std::array<float, 3> rgb_to_lab(const std::array<float, 3>& rgb) {
  double lin[3];
  for (int c = 0; c < 3; ++c) lin[c] = srgb_to_linear(rgb[c]);
  double f[3];
  for (int r = 0; r < 3; ++r) {
    const double xyz =
        kRgbToXyz[r][0] * lin[0] + kRgbToXyz[r][1] * lin[1] + kRgbToXyz[r][2] * lin[2];
    f[r] = lab_f(xyz / kWhite[r]);
  }
  return {static_cast<float>(116.0 * f[1] - 16.0), static_cast<float>(500.0 * (f[0] - f[1])),
          static_cast<float>(200.0 * (f[1] - f[2]))};
}

std::array<float, 3> lab_to_rgb(const std::array<float, 3>& lab) {
  const double fy = (lab[0] + 16.0) / 116.0;
  const double f[3] = {fy + lab[1] / 500.0, fy, fy - lab[2] / 200.0};
  double xyz[3];
  for (int c = 0; c < 3; ++c) xyz[c] = kWhite[c] * lab_f_inv(f[c]);
  std::array<float, 3> rgb{};
  for (int r = 0; r < 3; ++r) {
    const double lin =
        kXyzToRgb[r][0] * xyz[0] + kXyzToRgb[r][1] * xyz[1] + kXyzToRgb[r][2] * xyz[2];
    rgb[r] = static_cast<float>(linear_to_srgb(lin));
  }
  return rgb;
}

Tensor image_to_lab(const Image& image) {
  check_image(image, "image_to_lab");
  SEG_CHECK(image.channels == 3, "image_to_lab: an RGB image was expected, got ", image.channels,
            " channels");
  // A table per u8 value would need 2^24 entries; the gamma curve has only 256 inputs, so it is
  // tabulated and the rest computed per pixel.
  double lin[256];
  for (int v = 0; v < 256; ++v) lin[v] = srgb_to_linear(v / 255.0);
  const size_t plane = static_cast<size_t>(image.width) * image.height;
  Tensor t = empty({3, image.height, image.width}, DType::f32);
  float* out = t.data<float>();
  for (size_t i = 0; i < plane; ++i) {
    const uint8_t* p = image.pixels.data() + i * 3;
    double f[3];
    for (int r = 0; r < 3; ++r) {
      const double xyz =
          kRgbToXyz[r][0] * lin[p[0]] + kRgbToXyz[r][1] * lin[p[1]] + kRgbToXyz[r][2] * lin[p[2]];
      f[r] = lab_f(xyz / kWhite[r]);
    }
    out[i] = static_cast<float>(116.0 * f[1] - 16.0);
    out[plane + i] = static_cast<float>(500.0 * (f[0] - f[1]));
    out[2 * plane + i] = static_cast<float>(200.0 * (f[1] - f[2]));
  }
  return t;
}

Image lab_to_image(const Tensor& lab) {
  SEG_CHECK(
      lab.dim() == 3 && lab.size(0) == 3 && lab.dtype() == DType::f32 && lab.device().is_cpu(),
      "lab_to_image: a (3, H, W) f32 CPU tensor was expected, got ", lab.str());
  const Tensor c = lab.contiguous();
  const int h = static_cast<int>(c.size(1)), w = static_cast<int>(c.size(2));
  const size_t plane = static_cast<size_t>(h) * w;
  const float* in = c.data<float>();
  Image out{w, h, 3, std::vector<uint8_t>(plane * 3)};
  for (size_t i = 0; i < plane; ++i) {
    const std::array<float, 3> rgb = lab_to_rgb({in[i], in[plane + i], in[2 * plane + i]});
    for (int ch = 0; ch < 3; ++ch) out.pixels[i * 3 + ch] = round_u8(rgb[ch] * 255.0f);
  }
  return out;
}

}  // namespace seg::data
