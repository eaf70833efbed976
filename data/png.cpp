#include "data/png.h"

#include <cstdio>
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

std::vector<unsigned char> read_file(const std::filesystem::path& path) {
  std::error_code ec;
  SEG_CHECK(std::filesystem::is_regular_file(path, ec), path.string(), ": no such file");
  std::ifstream in(path, std::ios::binary);
  SEG_CHECK(in.good(), path.string(), ": cannot open");
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  SEG_CHECK(bytes.size() >= 8 && std::equal(kPngSignature, kPngSignature + 8, bytes.begin()), path.string(),
            ": not a PNG file (", bytes.size() < 8 ? "too short" : "bad signature", ")");
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
