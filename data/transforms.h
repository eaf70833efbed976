// Transforms on decoded images (HWC u8, data/png.h's Image) and label maps (H x W u8), and their
// conversion to tensors.
//
// Design notes
// - Everything works on u8 pixels until the last step, which writes a CHW f32 tensor (normalised)
//   or an (H, W) i32 label tensor in one pass: decoded frames are large (2048x1024x3) and a float
//   copy per step would dominate the loader's time.
// - Geometry conventions are PyTorch's (align_corners=False): bilinear samples at src = (dst + 0.5)
//   * in / out - 0.5 clamped at the border; area averages the source box [dst * in / out, (dst + 1)
//   * in / out) with fractional weights (for an integer factor, the mean of each factor x factor
//   block, as F.interpolate(mode='area')); labels use nearest at the pixel centre, src = floor((dst
//   + 0.5) * in / out), as PIL's NEAREST (which the study used for masks). u8 results are rounded
//   to nearest.
// - Random crop with padding: the crop box may extend past the bottom and right of the image (the
//   image is padded there, as DeepLabv3.pytorch does); padded image pixels are 0 after
//   normalisation (the mean colour before) and padded label pixels are 255 (ignored).
// - CIE Lab: sRGB (IEC 61966-2-1 gamma) to linear RGB, to XYZ with the sRGB/D65 matrix, to Lab with
//   the D65 white point (0.95047, 1, 1.08883) and the CIE f() with its linear segment below
//   (6/29)^3. The inverse uses the exact inverse matrix; rgb -> Lab -> rgb round-trips to 1e-4
//   (f32).
// - Labels: labelIds (0..33) -> trainIds (0..18, 255) through data/labels.h; a value outside the
//   table (a 16-bit value, or 34..255) is an error naming the file and the value.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "data/png.h"
#include "engine/tensor.h"

namespace seg::data {

// A single-channel u8 map (trainIds), row-major (height, width).
struct LabelMap {
  int width = 0, height = 0;
  std::vector<uint8_t> values;
};

enum class Interp { bilinear, area };
Interp parse_interp(const std::string& name);  // "bilinear", "area"
const char* interp_name(Interp interp);

// Output size: either a downsample factor (1, 2, 4, 8, ...: size / factor, which must divide it) or
// an explicit height and width (both > 0; they win over the factor).
struct ResizeOptions {
  int downsample = 1;
  int height = 0, width = 0;
  Interp interp = Interp::area;
};
// The size `options` gives an image of height h and width w; errors name `what` (a file).
void resized_size(const ResizeOptions& options, int h, int w, int& out_h, int& out_w,
                  const std::string& what);

// Mean and standard deviation per RGB channel, in [0, 1] units.
struct Normalization {
  std::array<float, 3> mean{0.0f, 0.0f, 0.0f};
  std::array<float, 3> std{1.0f, 1.0f, 1.0f};
};
// ImageNet statistics (torchvision), used by DeepLabv3 and the pretext tasks.
constexpr Normalization kImageNetNormalization{{0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};
// The study's UNet statistics (Cityscapes train set).
constexpr Normalization kCityscapesNormalization{{0.2869f, 0.3251f, 0.2839f},
                                                 {0.1870f, 0.1902f, 0.1872f}};
// x / 127.5 - 1: [-1, 1], the range of a tanh output (future frame prediction).
constexpr Normalization kSymmetricNormalization{{0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}};

// --- resizing ---
Image resize_image(const Image& image, int out_h, int out_w, Interp interp);
LabelMap resize_labels(const LabelMap& labels, int out_h, int out_w);  // nearest

// A log-uniform scale in [lo, hi] from a uniform draw u in [0, 1).
float log_uniform_scale(float u, float lo, float hi);

// --- flips, grey ---
void flip_horizontal(Image& image);
void flip_horizontal(LabelMap& labels);
// ITU-R 601 luma, 0.299 R + 0.587 G + 0.114 B, rounded (PIL's convert('L')); a 1-channel Image.
Image to_grayscale(const Image& image);

// --- crops ---
struct CropBox {
  int top = 0, left = 0, height = 0, width = 0;
};
// The whole image.
CropBox full_box(int height, int width);
// A crop of (crop_h, crop_w) from an image of (h, w) padded at the bottom/right to at least the
// crop size; uy, ux in [0, 1) choose the offset uniformly among the valid ones.
CropBox random_crop_box(int h, int w, int crop_h, int crop_w, float uy, float ux);

// --- to tensors ---
// (3, box.height, box.width) f32: (pixel / 255 - mean) / std inside the image, 0 outside. RGB only.
Tensor image_to_tensor(const Image& image, const Normalization& norm, const CropBox& box);
Tensor image_to_tensor(const Image& image, const Normalization& norm);
// Writes the same into `out`, a (3, box.height, box.width) f32 buffer.
void image_to_chw(const Image& image, const Normalization& norm, const CropBox& box, float* out);
// (box.height, box.width) i32, 255 outside the labels.
Tensor labels_to_tensor(const LabelMap& labels, const CropBox& box);
Tensor labels_to_tensor(const LabelMap& labels);

// --- label ids ---
// labelIds -> trainIds; a value outside the label table (>= 34) is an error naming `file`.
LabelMap label_ids_to_train_ids(const GreyImage& label_ids, const std::string& file);
// Checks *_labelTrainIds values (0..18 or 255); anything else is an error naming `file`.
LabelMap checked_train_ids(const GreyImage& train_ids, const std::string& file);

// --- CIE Lab (D65, sRGB gamma) ---
// rgb in [0, 1] (gamma-encoded sRGB) -> L in [0, 100], a, b roughly in [-128, 128].
std::array<float, 3> rgb_to_lab(const std::array<float, 3>& rgb);
// The inverse; values are not clamped (a Lab colour outside the sRGB gamut gives rgb outside
// [0, 1]).
std::array<float, 3> lab_to_rgb(const std::array<float, 3>& lab);
// (3, H, W) f32 Lab of an RGB image.
Tensor image_to_lab(const Image& image);
// Lab (3, H, W) f32 -> RGB Image (clamped, rounded).
Image lab_to_image(const Tensor& lab);

}  // namespace seg::data
