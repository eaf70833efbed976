#include "data/png.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <system_error>

#include "engine/error.h"

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#include <stb_image.h>
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#include <stb_image_write.h>

namespace seg::data {

namespace {

constexpr unsigned char kPngSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

// CRC-32 of PNG chunks (ISO 3309, polynomial 0xEDB88320), sliced by 8: kCrcTables[0] is the
// byte-wise table, kCrcTables[k] advances a byte through k more zero bytes.
using CrcTables = std::array<std::array<uint32_t, 256>, 8>;
constexpr CrcTables make_crc_tables() {
  CrcTables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[0][i] = c;
  }
  for (size_t k = 1; k < 8; ++k) {
    for (size_t i = 0; i < 256; ++i) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xFFu];
  }
  return t;
}
constexpr CrcTables kCrcTables = make_crc_tables();

}  // namespace

uint32_t png_crc32(const unsigned char* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (; n >= 8; n -= 8, p += 8) {
    const uint32_t lo =
        c ^ (uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
    c = kCrcTables[7][lo & 0xFFu] ^ kCrcTables[6][(lo >> 8) & 0xFFu] ^
        kCrcTables[5][(lo >> 16) & 0xFFu] ^ kCrcTables[4][lo >> 24] ^ kCrcTables[3][p[4]] ^
        kCrcTables[2][p[5]] ^ kCrcTables[1][p[6]] ^ kCrcTables[0][p[7]];
  }
  for (; n > 0; --n, ++p) c = kCrcTables[0][(c ^ *p) & 0xFFu] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

namespace {

uint32_t read_be32(const unsigned char* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

// A chunk type for messages: letters as they are (every valid type is four ASCII letters), any
// other byte as \xNN, so that a corrupt file's arbitrary bytes print as text.
std::string chunk_type_str(const unsigned char* p) {
  std::string s;
  for (int i = 0; i < 4; ++i) {
    const unsigned char c = p[i];
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')) {
      s += static_cast<char>(c);
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      s += "\\x";
      s += kHex[c >> 4];
      s += kHex[c & 0xFu];
    }
  }
  return s;
}

// The IHDR fields the readers check.
struct PngHeader {
  int width = 0, height = 0;
  int bit_depth = 0;
  int color_type = 0;  // 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA
};

const char* color_type_name(int color_type) {
  switch (color_type) {
    case 0: return "grey";
    case 2: return "RGB";
    case 3: return "palette";
    case 4: return "grey+alpha";
    case 6: return "RGBA";
  }
  return "?";
}

int channels_of(int color_type) {
  switch (color_type) {
    case 2: return 3;
    case 4: return 2;
    case 6: return 4;
  }
  return 1;  // grey; a palette's entries are RGB(A) (told apart in the messages)
}

// The IHDR chunk's fields (its length and CRC already checked), validated as the PNG
// specification allows them.
PngHeader parse_ihdr(const unsigned char* d, const std::string& name) {
  const uint32_t w = read_be32(d), h = read_be32(d + 4);
  SEG_CHECK(w > 0 && h > 0 && w <= 0x7FFFFFFFu && h <= 0x7FFFFFFFu, name,
            ": corrupt PNG header (size ", w, "x", h, ")");
  PngHeader hdr;
  hdr.width = static_cast<int>(w);
  hdr.height = static_cast<int>(h);
  hdr.bit_depth = d[8];
  hdr.color_type = d[9];
  const int bd = hdr.bit_depth;
  bool valid = false;
  switch (hdr.color_type) {
    case 0: valid = bd == 1 || bd == 2 || bd == 4 || bd == 8 || bd == 16; break;
    case 3: valid = bd == 1 || bd == 2 || bd == 4 || bd == 8; break;
    case 2:
    case 4:
    case 6: valid = bd == 8 || bd == 16; break;
  }
  SEG_CHECK(valid, name, ": corrupt PNG header (bit depth ", bd, " with colour type ",
            hdr.color_type, ")");
  SEG_CHECK(d[10] == 0 && d[11] == 0 && d[12] <= 1, name, ": corrupt PNG header (compression ",
            int(d[10]), ", filter ", int(d[11]), ", interlace ", int(d[12]), ")");
  return hdr;
}

// Checks the signature, then walks the chunks: each must fit in the file and match its CRC, the
// first must be IHDR and IEND must come. stb_image checks neither CRCs nor the zlib checksum, so
// without this a flipped bit in the image data decodes silently into wrong pixels (measured: about
// a quarter of single-byte corruptions of an IDAT did), and a file cut after its last IDAT decodes
// as if whole. Returns the header.
PngHeader check_png(const unsigned char* bytes, size_t size, const std::string& name) {
  SEG_CHECK(size >= 8 && std::equal(kPngSignature, kPngSignature + 8, bytes), name,
            ": not a PNG file (", size < 8 ? "too short" : "bad signature", ")");
  PngHeader header;
  size_t pos = 8;
  while (true) {
    SEG_CHECK(size >= 12 && pos <= size - 12, name, ": truncated PNG (file ends at byte ", size,
              " before the IEND chunk)");
    const uint64_t length = read_be32(&bytes[pos]);
    const std::string type = chunk_type_str(&bytes[pos + 4]);
    SEG_CHECK(length <= 0x7FFFFFFFu, name, ": corrupt PNG (chunk at byte ", pos, " claims ", length,
              " bytes)");
    SEG_CHECK(pos + 12 + length <= size, name, ": truncated PNG (chunk '", type, "' at byte ", pos,
              " needs ", length + 12, " bytes, the file ends at byte ", size, ")");
    const uint32_t stored = read_be32(&bytes[pos + 8 + length]);
    SEG_CHECK(png_crc32(&bytes[pos + 4], length + 4) == stored, name,
              ": corrupt PNG (CRC mismatch in chunk '", type, "' at byte ", pos, ")");
    if (pos == 8) {
      SEG_CHECK(type == "IHDR" && length == 13, name, ": corrupt PNG (the first chunk is '", type,
                "' of ", length, " bytes, not the 13-byte IHDR header)");
      header = parse_ihdr(&bytes[pos + 8], name);
    }
    if (type == "IEND") return header;
    pos += 12 + length;
  }
}

// The header's size against the caller's limits, before anything is decoded.
void check_size(const PngHeader& h, const PngReadOptions& options, const std::string& name) {
  if (options.width > 0 && options.height > 0) {
    SEG_CHECK(h.width == options.width && h.height == options.height, name, ": the PNG is ",
              h.width, "x", h.height, " but ",
              options.expected_from.empty() ? "the expected size" : options.expected_from, " is ",
              options.width, "x", options.height, " (from its header, before decoding)");
  }
  const int64_t pixels = int64_t{h.width} * h.height;
  SEG_CHECK(pixels <= options.max_pixels, name, ": the PNG is ", h.width, "x", h.height, " (",
            pixels, " pixels), more than the limit of ", options.max_pixels,
            " pixels (from its header, before decoding: raise the limit for images this large)");
}

int stb_length(size_t size, const std::string& name) {
  SEG_CHECK(size < static_cast<size_t>(INT32_MAX), name, ": file too large (", size,
            " bytes; the decoder reads at most 2 GB)");
  return static_cast<int>(size);
}

std::vector<unsigned char> read_file(const std::filesystem::path& path) {
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::status(path, ec);
  SEG_CHECK(std::filesystem::exists(st), path.string(), ": no such file");
  SEG_CHECK(!std::filesystem::is_directory(st), path.string(), ": a folder, not a PNG file");
  SEG_CHECK(std::filesystem::is_regular_file(st), path.string(),
            ": not a regular file (a PNG file was expected)");
  const uintmax_t size = std::filesystem::file_size(path, ec);
  SEG_CHECK(!ec, path.string(), ": cannot read the file size (", ec.message(), ")");
  stb_length(size, path.string());
  std::ifstream in(path, std::ios::binary);
  SEG_CHECK(in.good(), path.string(), ": cannot open");
  std::vector<unsigned char> bytes(static_cast<size_t>(size));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  SEG_CHECK(static_cast<uintmax_t>(in.gcount()) == size, path.string(), ": read only ", in.gcount(),
            " of its ", size, " bytes");
  return bytes;
}

std::string reason() {
  const char* r = stbi_failure_reason();
  return r ? r : "unknown error";
}

void write_sink(void* context, void* data, int size) {
  auto* out = static_cast<std::ofstream*>(context);
  out->write(static_cast<const char*>(data), size);
}

void write_png(const std::filesystem::path& path, int width, int height, int channels,
               const uint8_t* pixels) {
  SEG_CHECK(width > 0 && height > 0, path.string(), ": cannot write an empty ", width, "x", height,
            " PNG");
  const std::filesystem::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
  bool ok = false;
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    SEG_CHECK(out.good(), path.string(), ": cannot create ", tmp.string());
    ok = stbi_write_png_to_func(&write_sink, &out, width, height, channels, pixels,
                                width * channels) != 0;
    out.flush();
    ok = ok && out.good();
  }
  std::error_code ec;
  if (ok) std::filesystem::rename(tmp, path, ec);
  if (!ok || ec) {
    std::filesystem::remove(tmp, ec);
    SEG_CHECK(false, path.string(), ": writing the PNG failed");
  }
}

}  // namespace

Image decode_png_rgb(const unsigned char* data, size_t size, const std::string& name,
                     const PngReadOptions& options) {
  const PngHeader h = check_png(data, size, name);
  SEG_CHECK(h.bit_depth != 16, name, ": a 16-bit PNG where an 8-bit image was expected");
  check_size(h, options, name);
  int w = 0, ht = 0, c = 0;
  stbi_uc* pixels = stbi_load_from_memory(data, stb_length(size, name), &w, &ht, &c, 3);
  SEG_CHECK(pixels != nullptr, name, ": corrupt or truncated PNG (", reason(), ")");
  Image img;
  img.width = w;
  img.height = ht;
  img.channels = 3;
  img.pixels.assign(pixels, pixels + static_cast<size_t>(w) * ht * 3);
  stbi_image_free(pixels);
  SEG_ASSERT(w == h.width && ht == h.height);
  return img;
}

GreyImage decode_png_grey(const unsigned char* data, size_t size, const std::string& name,
                          const PngReadOptions& options) {
  const PngHeader h = check_png(data, size, name);
  SEG_CHECK(h.color_type == 0, name, ": a single-channel label map was expected, the PNG has ",
            h.color_type == 3 ? std::string("a palette")
                              : std::to_string(channels_of(h.color_type)) + " channels",
            " (", color_type_name(h.color_type), ")");
  SEG_CHECK(h.bit_depth == 8 || h.bit_depth == 16, name, ": a ", h.bit_depth,
            "-bit grey PNG; label maps must be 8- or 16-bit (the decoder would scale ", h.bit_depth,
            "-bit values up to 0..255)");
  check_size(h, options, name);
  const int n = stb_length(size, name);
  const size_t count = static_cast<size_t>(h.width) * h.height;
  int w = 0, ht = 0, c = 0;
  GreyImage img;
  img.bits = h.bit_depth;
  if (h.bit_depth == 16) {
    stbi_us* values = stbi_load_16_from_memory(data, n, &w, &ht, &c, 1);
    SEG_CHECK(values != nullptr, name, ": corrupt or truncated PNG (", reason(), ")");
    img.values16.assign(values, values + count);
    stbi_image_free(values);
  } else {
    stbi_uc* values = stbi_load_from_memory(data, n, &w, &ht, &c, 1);
    SEG_CHECK(values != nullptr, name, ": corrupt or truncated PNG (", reason(), ")");
    img.values8.assign(values, values + count);
    stbi_image_free(values);
  }
  SEG_ASSERT(w == h.width && ht == h.height);
  img.width = w;
  img.height = ht;
  return img;
}

Image read_png_rgb(const std::filesystem::path& path, const PngReadOptions& options) {
  const std::vector<unsigned char> bytes = read_file(path);
  return decode_png_rgb(bytes.data(), bytes.size(), path.string(), options);
}

GreyImage read_png_grey(const std::filesystem::path& path, const PngReadOptions& options) {
  const std::vector<unsigned char> bytes = read_file(path);
  return decode_png_grey(bytes.data(), bytes.size(), path.string(), options);
}

void read_png_size(const std::filesystem::path& path, int& width, int& height) {
  const std::vector<unsigned char> bytes = read_file(path);
  const PngHeader h = check_png(bytes.data(), bytes.size(), path.string());
  width = h.width;
  height = h.height;
}

void write_png_rgb(const std::filesystem::path& path, int width, int height, const uint8_t* rgb) {
  write_png(path, width, height, 3, rgb);
}

void write_png_grey8(const std::filesystem::path& path, int width, int height,
                     const uint8_t* values) {
  write_png(path, width, height, 1, values);
}

}  // namespace seg::data
