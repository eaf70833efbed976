#include "data/png.h"

#include <array>
#include <cstdint>
#include <cstdio>
#include <string>
#include <fstream>
#include <system_error>
#include <unistd.h>

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
    const uint32_t lo = c ^ (uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
    c = kCrcTables[7][lo & 0xFFu] ^ kCrcTables[6][(lo >> 8) & 0xFFu] ^ kCrcTables[5][(lo >> 16) & 0xFFu] ^
        kCrcTables[4][lo >> 24] ^ kCrcTables[3][p[4]] ^ kCrcTables[2][p[5]] ^ kCrcTables[1][p[6]] ^
        kCrcTables[0][p[7]];
  }
  for (; n > 0; --n, ++p) c = kCrcTables[0][(c ^ *p) & 0xFFu] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

namespace {

uint32_t read_be32(const unsigned char* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

// Walks the chunks after the signature: each must fit in the file and match its CRC, and IEND must
// come. stb_image checks neither CRCs nor the zlib checksum, so without this a flipped bit in the
// image data decodes silently into wrong pixels (measured: about a quarter of single-byte
// corruptions of an IDAT did), and a file cut after its last IDAT decodes as if whole.
void check_chunks(const std::vector<unsigned char>& bytes, const std::filesystem::path& path) {
  size_t pos = 8;
  while (true) {
    SEG_CHECK(pos + 12 <= bytes.size(), path.string(), ": truncated PNG (file ends at byte ", bytes.size(),
              " before the IEND chunk)");
    const uint64_t length = read_be32(&bytes[pos]);
    const std::string type(reinterpret_cast<const char*>(&bytes[pos + 4]), 4);
    SEG_CHECK(length <= 0x7FFFFFFFu, path.string(), ": corrupt PNG (chunk at byte ", pos, " claims ", length,
              " bytes)");
    SEG_CHECK(pos + 12 + length <= bytes.size(), path.string(), ": truncated PNG (chunk '", type, "' at byte ",
              pos, " needs ", length + 12, " bytes, the file ends at byte ", bytes.size(), ")");
    const uint32_t stored = read_be32(&bytes[pos + 8 + length]);
    SEG_CHECK(png_crc32(&bytes[pos + 4], length + 4) == stored, path.string(), ": corrupt PNG (CRC mismatch in chunk '",
              type, "' at byte ", pos, ")");
    if (type == "IEND") return;
    pos += 12 + length;
  }
}

std::vector<unsigned char> read_file(const std::filesystem::path& path) {
  std::error_code ec;
  SEG_CHECK(std::filesystem::is_regular_file(path, ec), path.string(), ": no such file");
  std::ifstream in(path, std::ios::binary);
  SEG_CHECK(in.good(), path.string(), ": cannot open");
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  SEG_CHECK(bytes.size() >= 8 && std::equal(kPngSignature, kPngSignature + 8, bytes.begin()), path.string(),
            ": not a PNG file (", bytes.size() < 8 ? "too short" : "bad signature", ")");
  check_chunks(bytes, path);
  return bytes;
}

int size_of(const std::vector<unsigned char>& bytes, const std::filesystem::path& path) {
  SEG_CHECK(bytes.size() < static_cast<size_t>(INT32_MAX), path.string(), ": file too large");
  return static_cast<int>(bytes.size());
}

std::string reason() {
  const char* r = stbi_failure_reason();
  return r ? r : "unknown error";
}

void write_sink(void* context, void* data, int size) {
  auto* out = static_cast<std::ofstream*>(context);
  out->write(static_cast<const char*>(data), size);
}

void write_png(const std::filesystem::path& path, int width, int height, int channels, const uint8_t* pixels) {
  SEG_CHECK(width > 0 && height > 0, path.string(), ": cannot write an empty ", width, "x", height, " PNG");
  const std::filesystem::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
  bool ok = false;
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    SEG_CHECK(out.good(), path.string(), ": cannot create ", tmp.string());
    ok = stbi_write_png_to_func(&write_sink, &out, width, height, channels, pixels, width * channels) != 0;
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

Image read_png_rgb(const std::filesystem::path& path) {
  std::vector<unsigned char> bytes = read_file(path);
  const int n = size_of(bytes, path);
  SEG_CHECK(!stbi_is_16_bit_from_memory(bytes.data(), n), path.string(),
            ": a 16-bit PNG where an 8-bit image was expected");
  int w = 0, h = 0, c = 0;
  stbi_uc* data = stbi_load_from_memory(bytes.data(), n, &w, &h, &c, 3);
  SEG_CHECK(data != nullptr, path.string(), ": corrupt or truncated PNG (", reason(), ")");
  Image img;
  img.width = w;
  img.height = h;
  img.channels = 3;
  img.pixels.assign(data, data + static_cast<size_t>(w) * h * 3);
  stbi_image_free(data);
  return img;
}

GreyImage read_png_grey(const std::filesystem::path& path) {
  std::vector<unsigned char> bytes = read_file(path);
  const int n = size_of(bytes, path);
  int w = 0, h = 0, c = 0;
  SEG_CHECK(stbi_info_from_memory(bytes.data(), n, &w, &h, &c), path.string(), ": corrupt PNG header (",
            reason(), ")");
  SEG_CHECK(c == 1, path.string(), ": a single-channel label map was expected, the PNG has ", c, " channels");
  GreyImage img;
  if (stbi_is_16_bit_from_memory(bytes.data(), n)) {
    stbi_us* data = stbi_load_16_from_memory(bytes.data(), n, &w, &h, &c, 1);
    SEG_CHECK(data != nullptr, path.string(), ": corrupt or truncated PNG (", reason(), ")");
    img.bits = 16;
    img.values.assign(data, data + static_cast<size_t>(w) * h);
    stbi_image_free(data);
  } else {
    stbi_uc* data = stbi_load_from_memory(bytes.data(), n, &w, &h, &c, 1);
    SEG_CHECK(data != nullptr, path.string(), ": corrupt or truncated PNG (", reason(), ")");
    img.bits = 8;
    img.values.assign(data, data + static_cast<size_t>(w) * h);
    stbi_image_free(data);
  }
  img.width = w;
  img.height = h;
  return img;
}

void read_png_size(const std::filesystem::path& path, int& width, int& height) {
  std::vector<unsigned char> bytes = read_file(path);
  int c = 0;
  SEG_CHECK(stbi_info_from_memory(bytes.data(), size_of(bytes, path), &width, &height, &c), path.string(),
            ": corrupt PNG header (", reason(), ")");
}

void write_png_rgb(const std::filesystem::path& path, int width, int height, const uint8_t* rgb) {
  write_png(path, width, height, 3, rgb);
}

void write_png_grey8(const std::filesystem::path& path, int width, int height, const uint8_t* values) {
  write_png(path, width, height, 1, values);
}

}  // namespace seg::data
