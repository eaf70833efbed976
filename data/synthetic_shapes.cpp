#include "data/synthetic_shapes.h"

#include <algorithm>
#include <cmath>

namespace seg::data {

ShapesBatch make_shapes_batch(int64_t n, int64_t h, int64_t w, Generator& gen) {
  SEG_CHECK(n > 0 && h >= 8 && w >= 8, "make_shapes_batch: invalid size n=", n, " h=", h, " w=", w);
  constexpr int kMaxShapes = 4;
  constexpr int kParamsPerShape = 8;  // kind, cx, cy, sx, sy, r, g, b
  // All the randomness of the batch in two draws: per-image parameters and pixel noise.
  std::vector<float> params = to_vector<float>(rand({n, 4 + kMaxShapes * kParamsPerShape}, gen));
  std::vector<float> noise = to_vector<float>(randn({n, 3, h, w}, gen));
  std::vector<float> image(static_cast<size_t>(n * 3 * h * w));
  std::vector<int32_t> label(static_cast<size_t>(n * h * w), 0);
  for (int64_t b = 0; b < n; ++b) {
    const float* p = params.data() + b * (4 + kMaxShapes * kParamsPerShape);
    // Background: a linear gradient in a random direction, plus noise.
    const float gx = p[0] - 0.5f, gy = p[1] - 0.5f, base = p[2] - 0.5f;
    const int shapes = 1 + static_cast<int>(p[3] * kMaxShapes) % kMaxShapes;
    for (int64_t y = 0; y < h; ++y) {
      for (int64_t x = 0; x < w; ++x) {
        float v = base + gx * static_cast<float>(x) / w + gy * static_cast<float>(y) / h;
        for (int c = 0; c < 3; ++c) image[((b * 3 + c) * h + y) * w + x] = v;
      }
    }
    for (int s = 0; s < shapes; ++s) {
      const float* q = p + 4 + s * kParamsPerShape;
      const int kind = q[0] < 0.5f ? 1 : 2;
      const float cx = q[1] * w, cy = q[2] * h;
      const float sx = (0.12f + 0.18f * q[3]) * w, sy = (0.12f + 0.18f * q[4]) * h;
      const float radius = 0.5f * (sx + sy) * 0.8f;
      const float colour[3] = {q[5] * 2 - 1, q[6] * 2 - 1, q[7] * 2 - 1};
      for (int64_t y = 0; y < h; ++y) {
        for (int64_t x = 0; x < w; ++x) {
          const float dx = static_cast<float>(x) + 0.5f - cx, dy = static_cast<float>(y) + 0.5f - cy;
          const bool inside = kind == 1 ? (std::abs(dx) <= sx * 0.5f && std::abs(dy) <= sy * 0.5f)
                                        : (dx * dx + dy * dy <= radius * radius * 0.25f);
          if (!inside) continue;
          label[(b * h + y) * w + x] = kind;
          for (int c = 0; c < 3; ++c) image[((b * 3 + c) * h + y) * w + x] = colour[c];
        }
      }
    }
  }
  for (size_t i = 0; i < image.size(); ++i) image[i] += 0.15f * noise[i];
  return ShapesBatch{from_vector(image, {n, 3, h, w}), from_vector(label, {n, h, w})};
}

}  // namespace seg::data
