// PNG reading and writing (stb_image, stb_image_write) with errors that name the file and the
// problem: missing, not a PNG, truncated or corrupt (every chunk's length and CRC are checked before
// decoding: stb_image checks neither), wrong bit depth or channel count. Writes go to
// a temporary file renamed into place, so a failed write never leaves a half-written PNG.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace seg::data {

// 8-bit pixels, interleaved (height, width, channels), row-major.
struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
};

// A single-channel map of 8- or 16-bit values (label ids, train ids, instance ids).
struct GreyImage {
  int width = 0, height = 0;
  int bits = 8;
  std::vector<uint16_t> values;
};

// Reads an 8-bit PNG as RGB (grey and grey+alpha images are expanded, an alpha channel is dropped;
// a 16-bit PNG is an error).
Image read_png_rgb(const std::filesystem::path& path);
// Reads a single-channel 8- or 16-bit PNG (a colour PNG is an error).
GreyImage read_png_grey(const std::filesystem::path& path);
// The size of a PNG from its header, without decoding it.
void read_png_size(const std::filesystem::path& path, int& width, int& height);

void write_png_rgb(const std::filesystem::path& path, int width, int height, const uint8_t* rgb);
// The CRC-32 of PNG chunks (over a chunk's type and data), for tools and tests that write chunks.
uint32_t png_crc32(const unsigned char* data, size_t size);

void write_png_grey8(const std::filesystem::path& path, int width, int height, const uint8_t* values);

}  // namespace seg::data
