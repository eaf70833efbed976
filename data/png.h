// PNG reading and writing (stb_image, stb_image_write) with errors that name the file and the
// problem: missing, a folder, not a PNG, truncated or corrupt (every chunk's length and CRC are
// checked before decoding: stb_image checks neither), too large, of another size than expected,
// wrong bit depth or channel count. Writes go to a temporary file renamed into place, so a failed
// write never leaves a half-written PNG.
//
// Design notes
// - The size limits are checked against the IHDR header before anything is decoded: a 1 MB PNG can
//   declare 32768x32768 pixels (1 GiB decoded as grey), and a loader decodes in every worker at
//   once. A caller that knows the size to expect (a label has its image's size) says so in
//   PngReadOptions, so a mismatch costs a header read, not a decode.
// - 8-bit label maps stay 8-bit from the decoder to GreyImage (1 byte per pixel; stb_image is asked
//   for one channel of a grey PNG, so it never expands it), 16-bit ones 16-bit.
// - The readers work on bytes in memory (decode_png_*); the file readers load the file and call
//   them. Chunk types are printed escaped (\xNN for bytes that are not letters), since a corrupt
//   file's are arbitrary bytes.
#pragma once

#include <cstddef>
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

// A single-channel map of 8- or 16-bit values (label ids, train ids, instance ids), row-major
// (height, width). An 8-bit map is held in `values8`, a 16-bit one in `values16`; the other is
// empty.
struct GreyImage {
  int width = 0, height = 0;
  int bits = 8;
  std::vector<uint8_t> values8;    // (height, width) when bits == 8
  std::vector<uint16_t> values16;  // (height, width) when bits == 16
  size_t size() const { return bits == 16 ? values16.size() : values8.size(); }
  uint16_t value(size_t i) const { return bits == 16 ? values16[i] : values8[i]; }
};

// The largest image a reader decodes unless told otherwise: 8192x4096, 16 Cityscapes frames
// (2048x1024). An RGB image at the limit decodes to 100 MB; larger is a corrupt or hostile header
// more often than a real image, and a caller with larger images raises the limit.
constexpr int64_t kDefaultMaxPngPixels = int64_t{8192} * 4096;

// What a reader accepts, checked against the PNG's header before anything is decoded.
struct PngReadOptions {
  int64_t max_pixels = kDefaultMaxPngPixels;  // width * height
  // When both are > 0, the size the PNG must have; `expected_from` says whose size it is, for the
  // message ("its image leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png").
  int width = 0, height = 0;
  std::string expected_from;
};

// Reads an 8-bit PNG as RGB (grey and grey+alpha images are expanded, an alpha channel is dropped;
// a 16-bit PNG is an error).
Image read_png_rgb(const std::filesystem::path& path, const PngReadOptions& options = {});
// Reads a single-channel 8- or 16-bit PNG (a colour, palette or 1/2/4-bit PNG is an error).
GreyImage read_png_grey(const std::filesystem::path& path, const PngReadOptions& options = {});
// The same from the bytes of a PNG file in memory; `name` stands for the file in messages.
Image decode_png_rgb(const unsigned char* data, size_t size, const std::string& name,
                     const PngReadOptions& options = {});
GreyImage decode_png_grey(const unsigned char* data, size_t size, const std::string& name,
                          const PngReadOptions& options = {});
// The size of a PNG from its header, without decoding it (the chunks are checked).
void read_png_size(const std::filesystem::path& path, int& width, int& height);

void write_png_rgb(const std::filesystem::path& path, int width, int height, const uint8_t* rgb);
// The CRC-32 of PNG chunks (over a chunk's type and data), for tools and tests that write chunks.
uint32_t png_crc32(const unsigned char* data, size_t size);

void write_png_grey8(const std::filesystem::path& path, int width, int height,
                     const uint8_t* values);

}  // namespace seg::data
