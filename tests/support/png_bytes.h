// Hand-made PNG files for tests: stb_image_write writes only valid 8-bit files of the size it is
// given, and the tests also need 16-bit and 1/2/4-bit maps, palettes, headers that declare another
// size than the data holds, and chunks of any type. Chunks get correct lengths and CRCs (so that
// the decoder, not the chunk check, sees what is wrong); the image data is one stored
// (uncompressed) zlib block per 65535 bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace seg::test {

// Appends one chunk (length, 4-byte type, data, CRC) to `png`.
void put_png_chunk(std::vector<unsigned char>& png, const std::string& type,
                   const std::vector<unsigned char>& data);

// The 13-byte IHDR data: size, bit depth, colour type (0 grey, 2 RGB, 3 palette, 4 grey+alpha,
// 6 RGBA), compression 0, filter 0, no interlace.
std::vector<unsigned char> png_ihdr(uint32_t width, uint32_t height, int bit_depth, int color_type);

// zlib data (stored blocks, with its Adler-32) holding `raw`.
std::vector<unsigned char> zlib_stored(const std::vector<unsigned char>& raw);

// A PNG: signature, IHDR, the `extra` chunks' bytes (e.g. PLTE), one IDAT of `raw` (filtered rows:
// a filter byte, 0, in front of each row) and IEND. `raw` need not match the declared size.
std::vector<unsigned char> png_file(uint32_t width, uint32_t height, int bit_depth, int color_type,
                                    const std::vector<unsigned char>& raw,
                                    const std::vector<unsigned char>& extra = {});

// A single-channel PNG of `values` (row-major, height x width) at bit depth 1, 2, 4, 8 or 16.
std::vector<unsigned char> grey_png(int width, int height, int bit_depth,
                                    const std::vector<uint16_t>& values);

}  // namespace seg::test
