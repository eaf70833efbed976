#include "data/predictions.h"

#include "data/labels.h"
#include "engine/error.h"

namespace seg::data {

std::vector<uint8_t> prediction_train_ids(const Tensor& prediction, const std::string& what) {
  SEG_CHECK(
      prediction.defined() && prediction.dim() == 2, what,
      ": a prediction must be an (h, w) tensor, got ",
      prediction.defined() ? shape_str(prediction.sizes()) : std::string("an undefined tensor"));
  SEG_CHECK(prediction.device().is_cpu(), what, ": a prediction must be on the CPU to be written");
  const DType dt = prediction.dtype();
  SEG_CHECK(dt == DType::i32 || dt == DType::i64 || dt == DType::u8, what,
            ": a prediction must hold integer trainIds (i32, i64 or u8), got ", dtype_name(dt));
  const Tensor p = prediction.contiguous();
  const int64_t w = p.size(1), n = p.numel();
  std::vector<uint8_t> out(static_cast<size_t>(n));
  auto take = [&](const auto* values) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t v = static_cast<int64_t>(values[i]);
      SEG_CHECK((v >= 0 && v < kNumTrainClasses) || v == kIgnoreLabel, what, ": value ", v,
                " at (x=", i % w, ", y=", i / w, ") is not a trainId (0..", kNumTrainClasses - 1,
                " or 255)");
      out[static_cast<size_t>(i)] = static_cast<uint8_t>(v);
    }
  };
  if (dt == DType::i32) take(p.data<int32_t>());
  if (dt == DType::i64) take(p.data<int64_t>());
  if (dt == DType::u8) take(p.data<uint8_t>());
  return out;
}

std::vector<uint8_t> train_ids_to_label_ids(const std::vector<uint8_t>& train_ids) {
  std::vector<uint8_t> out(train_ids.size());
  for (size_t i = 0; i < train_ids.size(); ++i) {
    const uint8_t t = train_ids[i];
    out[i] = t < kNumTrainClasses ? kTrainIdToLabelId[t] : uint8_t{0};
  }
  return out;
}

Image colorize_train_ids(const std::vector<uint8_t>& train_ids, int height, int width) {
  SEG_CHECK(static_cast<int64_t>(height) * width == static_cast<int64_t>(train_ids.size()),
            "colorize_train_ids: ", train_ids.size(), " values for a ", width, "x", height,
            " image");
  Image img{width, height, 3, std::vector<uint8_t>(train_ids.size() * 3, 0)};
  for (size_t i = 0; i < train_ids.size(); ++i) {
    if (train_ids[i] >= kNumTrainClasses) continue;
    const Rgb c = kTrainIdPalette[train_ids[i]];
    img.pixels[3 * i] = c.r;
    img.pixels[3 * i + 1] = c.g;
    img.pixels[3 * i + 2] = c.b;
  }
  return img;
}

void write_prediction_pngs(const Tensor& prediction, const std::filesystem::path& label_ids_png,
                           const std::filesystem::path& color_png) {
  const std::string what = !label_ids_png.empty() ? label_ids_png.string() : color_png.string();
  const std::vector<uint8_t> train_ids = prediction_train_ids(prediction, what);
  const int h = static_cast<int>(prediction.size(0)), w = static_cast<int>(prediction.size(1));
  if (!label_ids_png.empty())
    write_png_grey8(label_ids_png, w, h, train_ids_to_label_ids(train_ids).data());
  if (!color_png.empty())
    write_png_rgb(color_png, w, h, colorize_train_ids(train_ids, h, w).pixels.data());
}

}  // namespace seg::data
