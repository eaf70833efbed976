#include "tests/support/png_bytes.h"

#include <algorithm>
#include <stdexcept>

#include "data/png.h"

namespace seg::test {

namespace {

void put_be32(std::vector<unsigned char>& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<unsigned char>(v >> s));
}

}  // namespace

void put_png_chunk(std::vector<unsigned char>& png, const std::string& type,
                   const std::vector<unsigned char>& data) {
  if (type.size() != 4) throw std::invalid_argument("a PNG chunk type has 4 bytes: " + type);
  put_be32(png, static_cast<uint32_t>(data.size()));
  std::vector<unsigned char> body(type.begin(), type.end());
  body.insert(body.end(), data.begin(), data.end());
  png.insert(png.end(), body.begin(), body.end());
  put_be32(png, data::png_crc32(body.data(), body.size()));
}

std::vector<unsigned char> png_ihdr(uint32_t width, uint32_t height, int bit_depth,
                                    int color_type) {
  std::vector<unsigned char> ihdr;
  put_be32(ihdr, width);
  put_be32(ihdr, height);
  ihdr.push_back(static_cast<unsigned char>(bit_depth));
  ihdr.push_back(static_cast<unsigned char>(color_type));
  ihdr.insert(ihdr.end(), {0, 0, 0});  // deflate, filter method 0, no interlace
  return ihdr;
}

std::vector<unsigned char> zlib_stored(const std::vector<unsigned char>& raw) {
  constexpr size_t kMaxStored = 65535;  // a stored block's length field is 16 bits
  std::vector<unsigned char> z = {0x78, 0x01};
  size_t pos = 0;
  do {
    const size_t n = std::min(kMaxStored, raw.size() - pos);
    const bool last = pos + n == raw.size();
    z.push_back(last ? 1 : 0);
    z.push_back(static_cast<unsigned char>(n & 0xFF));
    z.push_back(static_cast<unsigned char>(n >> 8));
    z.push_back(static_cast<unsigned char>(~n & 0xFF));
    z.push_back(static_cast<unsigned char>((~n >> 8) & 0xFF));
    z.insert(z.end(), raw.begin() + static_cast<std::ptrdiff_t>(pos),
             raw.begin() + static_cast<std::ptrdiff_t>(pos + n));
    pos += n;
  } while (pos < raw.size());
  uint32_t a = 1, b = 0;
  for (unsigned char c : raw) {
    a = (a + c) % 65521;
    b = (b + a) % 65521;
  }
  put_be32(z, b << 16 | a);
  return z;
}

std::vector<unsigned char> png_file(uint32_t width, uint32_t height, int bit_depth, int color_type,
                                    const std::vector<unsigned char>& raw,
                                    const std::vector<unsigned char>& extra) {
  std::vector<unsigned char> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  put_png_chunk(png, "IHDR", png_ihdr(width, height, bit_depth, color_type));
  png.insert(png.end(), extra.begin(), extra.end());
  put_png_chunk(png, "IDAT", zlib_stored(raw));
  put_png_chunk(png, "IEND", {});
  return png;
}

std::vector<unsigned char> grey_png(int width, int height, int bit_depth,
                                    const std::vector<uint16_t>& values) {
  std::vector<unsigned char> raw;
  for (int y = 0; y < height; ++y) {
    raw.push_back(0);  // filter: none
    if (bit_depth == 16) {
      for (int x = 0; x < width; ++x) {
        const uint16_t v = values[static_cast<size_t>(y) * width + x];
        raw.push_back(static_cast<unsigned char>(v >> 8));
        raw.push_back(static_cast<unsigned char>(v & 0xFF));
      }
      continue;
    }
    // Samples packed from the most significant bit, rows padded to a whole byte.
    unsigned acc = 0;
    int filled = 0;
    for (int x = 0; x < width; ++x) {
      acc = (acc << bit_depth) |
            (values[static_cast<size_t>(y) * width + x] & ((1u << bit_depth) - 1));
      filled += bit_depth;
      if (filled == 8) {
        raw.push_back(static_cast<unsigned char>(acc));
        acc = 0;
        filled = 0;
      }
    }
    if (filled > 0) raw.push_back(static_cast<unsigned char>(acc << (8 - filled)));
  }
  return png_file(static_cast<uint32_t>(width), static_cast<uint32_t>(height), bit_depth, 0, raw);
}

}  // namespace seg::test
