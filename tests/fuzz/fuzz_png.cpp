// Fuzz target of the PNG readers (data/png.h): each input goes through both in-memory readers,
// decode_png_rgb and decode_png_grey, under a small pixel limit, through read_png_size as a file,
// and through a reader that expects another size than the header's.
//
// Design notes
// - The chunk CRCs stop nearly every mutation before the decoder, as they should; so that the
//   fuzzer also reaches stb_image's inflate, unfiltering and de-interlacing, the custom mutator
//   repairs the CRCs of three mutants in four and leaves the fourth as mutated, which keeps the
//   CRC check itself fuzzed.
// - kMaxPixels keeps every decode small: quick runs, and no out-of-memory report for a size the
//   readers are told to refuse. Every accepted image is checked against it.
#include <cstddef>
#include <cstdint>

#include "data/png.h"
#include "engine/error.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using seg::data::GreyImage;
using seg::data::Image;
using seg::data::PngReadOptions;

constexpr int64_t kMaxPixels = 1 << 16;
constexpr const char* kName = "fuzz.png";

uint32_t read_be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

// Rewrites the CRC of every chunk that fits in [data, data + size).
void repair_crcs(uint8_t* data, size_t size) {
  size_t pos = 8;
  while (size >= 12 && pos <= size - 12) {
    const size_t length = read_be32(data + pos);
    if (length > size - pos - 12) return;
    const uint32_t crc = seg::data::png_crc32(data + pos + 4, length + 4);
    for (int i = 0; i < 4; ++i)
      data[pos + 8 + length + i] = static_cast<uint8_t>(crc >> (24 - 8 * i));
    pos += 12 + length;
  }
}

}  // namespace

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  size = LLVMFuzzerMutate(data, size, max_size);
  if (seed % 4 != 0) repair_crcs(data, size);
  return size;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  PngReadOptions options;
  options.max_pixels = kMaxPixels;
  int width = 0, height = 0;
  bool decoded = false;
  try {
    const Image img = seg::data::decode_png_rgb(data, size, kName, options);
    FUZZ_CHECK(img.channels == 3 && img.width > 0 && img.height > 0);
    FUZZ_CHECK(int64_t{img.width} * img.height <= kMaxPixels);
    FUZZ_CHECK(img.pixels.size() == static_cast<size_t>(img.width) * img.height * 3);
    width = img.width;
    height = img.height;
    decoded = true;
  } catch (const seg::Error&) {
  }
  try {
    const GreyImage g = seg::data::decode_png_grey(data, size, kName, options);
    FUZZ_CHECK(g.bits == 8 || g.bits == 16);
    FUZZ_CHECK(int64_t{g.width} * g.height <= kMaxPixels);
    FUZZ_CHECK(g.size() == static_cast<size_t>(g.width) * g.height);
    FUZZ_CHECK(g.bits == 8 ? g.values16.empty() : g.values8.empty());
    if (decoded) FUZZ_CHECK(g.width == width && g.height == height);
  } catch (const seg::Error&) {
  }
  static seg::fuzz::MemFile file(kName);
  try {
    int w = 0, h = 0;
    seg::data::read_png_size(file.write(data, size), w, h);
    FUZZ_CHECK(w > 0 && h > 0);
    if (decoded) FUZZ_CHECK(w == width && h == height);
  } catch (const seg::Error&) {
  }
  if (decoded) {
    // A label of another size than its image is refused from the header alone.
    options.width = width;
    options.height = height + 1;
    bool refused = false;
    try {
      seg::data::decode_png_grey(data, size, kName, options);
    } catch (const seg::Error&) {
      refused = true;
    }
    FUZZ_CHECK(refused);
  }
  return 0;
}
