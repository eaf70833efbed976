// PNG reading and writing (data/png.h) and prediction files (data/predictions.h): round trips, a
// hand-made 16-bit label map, and every way a file can be bad: missing, not a PNG, truncated at
// every length, a byte changed at every position, the wrong kind of image, a write that fails.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "data/labels.h"
#include "data/png.h"
#include "data/predictions.h"
#include "engine/tensor.h"
#include "tests/support/test_util.h"

using namespace seg;
using namespace seg::data;
using namespace seg::test;
namespace fs = std::filesystem;

namespace {

void put_be32(std::vector<unsigned char>& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<unsigned char>(v >> s));
}

void put_chunk(std::vector<unsigned char>& out, const char* type,
               const std::vector<unsigned char>& data) {
  put_be32(out, static_cast<uint32_t>(data.size()));
  std::vector<unsigned char> body(type, type + 4);
  body.insert(body.end(), data.begin(), data.end());
  out.insert(out.end(), body.begin(), body.end());
  put_be32(out, png_crc32(body.data(), body.size()));
}

// A 16-bit greyscale PNG written by hand (stb_image_write has no 16-bit output): one zlib stored
// block, filter 0 on every row.
std::vector<unsigned char> grey16_png(int w, int h, const std::vector<uint16_t>& values) {
  std::vector<unsigned char> raw;
  for (int y = 0; y < h; ++y) {
    raw.push_back(0);
    for (int x = 0; x < w; ++x) {
      raw.push_back(static_cast<unsigned char>(values[static_cast<size_t>(y * w + x)] >> 8));
      raw.push_back(static_cast<unsigned char>(values[static_cast<size_t>(y * w + x)] & 0xFF));
    }
  }
  REQUIRE(raw.size() < 65536);
  std::vector<unsigned char> z = {0x78, 0x01, 0x01};
  const uint16_t len = static_cast<uint16_t>(raw.size());
  z.push_back(len & 0xFF);
  z.push_back(len >> 8);
  z.push_back(static_cast<unsigned char>(~len & 0xFF));
  z.push_back(static_cast<unsigned char>((~len >> 8) & 0xFF));
  z.insert(z.end(), raw.begin(), raw.end());
  uint32_t a = 1, b = 0;
  for (unsigned char c : raw) {
    a = (a + c) % 65521;
    b = (b + a) % 65521;
  }
  put_be32(z, b << 16 | a);
  std::vector<unsigned char> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::vector<unsigned char> ihdr;
  put_be32(ihdr, static_cast<uint32_t>(w));
  put_be32(ihdr, static_cast<uint32_t>(h));
  ihdr.insert(ihdr.end(),
              {16, 0, 0, 0, 0});  // bit depth 16, greyscale, deflate, filter 0, no interlace
  put_chunk(png, "IHDR", ihdr);
  put_chunk(png, "IDAT", z);
  put_chunk(png, "IEND", {});
  return png;
}

std::vector<uint8_t> pattern(size_t n, unsigned mul) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i * mul + 7) & 0xFF);
  return v;
}

}  // namespace

TEST_CASE("PNG round trips: RGB, 8-bit grey, grey read as RGB, size from the header") {
  TempDir dir("png");
  const int w = 37, h = 11;
  const std::vector<uint8_t> rgb = pattern(static_cast<size_t>(w) * h * 3, 31);
  write_png_rgb(dir / "a.png", w, h, rgb.data());
  const Image img = read_png_rgb(dir / "a.png");
  CHECK(img.width == w);
  CHECK(img.height == h);
  CHECK(img.channels == 3);
  CHECK(img.pixels == rgb);
  int rw = 0, rh = 0;
  read_png_size(dir / "a.png", rw, rh);
  CHECK(rw == w);
  CHECK(rh == h);

  const std::vector<uint8_t> grey = pattern(static_cast<size_t>(w) * h, 13);
  write_png_grey8(dir / "g.png", w, h, grey.data());
  const GreyImage g = read_png_grey(dir / "g.png");
  CHECK(g.bits == 8);
  CHECK(std::vector<uint8_t>(g.values.begin(), g.values.end()) == grey);
  const Image expanded = read_png_rgb(dir / "g.png");
  REQUIRE(expanded.pixels.size() == grey.size() * 3);
  for (size_t i = 0; i < grey.size(); ++i) {
    CHECK(expanded.pixels[3 * i] == grey[i]);
    CHECK(expanded.pixels[3 * i + 2] == grey[i]);
  }
  // Nothing but the file itself is left behind by the atomic write.
  int files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path)) ++files;
  CHECK(files == 2);
}

TEST_CASE("16-bit grey label maps read with their full values; as an image they are an error") {
  TempDir dir("png16");
  const std::vector<uint16_t> values = {0, 1, 255, 256, 1000, 65535};
  write_bytes(dir / "l16.png", grey16_png(3, 2, values));
  const GreyImage g = read_png_grey(dir / "l16.png");
  CHECK(g.bits == 16);
  CHECK(g.width == 3);
  CHECK(g.height == 2);
  CHECK(g.values == values);
  CHECK(contains(error_of([&] { read_png_rgb(dir / "l16.png"); }),
                 (dir / "l16.png").string() + ": a 16-bit PNG where an 8-bit image was expected"));
}

TEST_CASE("bad PNG files: every error names the file and the problem") {
  TempDir dir("pngbad");
  const fs::path good = dir / "good.png", bad = dir / "bad.png";
  const int w = 23, h = 9;
  const std::vector<uint8_t> rgb = pattern(static_cast<size_t>(w) * h * 3, 57);
  write_png_rgb(good, w, h, rgb.data());
  const std::vector<unsigned char> bytes = file_bytes(good);

  SUBCASE("missing, empty, not a PNG") {
    CHECK(contains(error_of([&] { read_png_rgb(dir / "nope.png"); }),
                   (dir / "nope.png").string() + ": no such file"));
    write_bytes(bad, {});
    CHECK(contains(error_of([&] { read_png_rgb(bad); }),
                   bad.string() + ": not a PNG file (too short)"));
    write_bytes(bad, {'G', 'I', 'F', '8', '9', 'a', 0, 0, 0, 0});
    CHECK(contains(error_of([&] { read_png_grey(bad); }),
                   bad.string() + ": not a PNG file (bad signature)"));
  }
  SUBCASE("truncated at every length") {
    for (size_t len = 0; len < bytes.size(); ++len) {
      CAPTURE(len);
      write_bytes(bad, std::vector<unsigned char>(
                           bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(len)));
      const std::string e = error_of([&] { read_png_rgb(bad); });
      CHECK(contains(e, bad.string() + ": "));
      CHECK((contains(e, "truncated") || contains(e, "not a PNG")));
    }
  }
  SUBCASE("a byte changed at every position after the signature") {
    // stb_image alone decodes about a quarter of these into wrong pixels; the chunk CRCs catch all.
    for (size_t pos = 8; pos < bytes.size(); ++pos) {
      CAPTURE(pos);
      std::vector<unsigned char> c = bytes;
      c[pos] ^= 0x20;
      write_bytes(bad, c);
      const std::string e = error_of([&] { read_png_rgb(bad); });
      CHECK(contains(e, bad.string() + ": "));
      CHECK((contains(e, "corrupt") || contains(e, "truncated")));
    }
    std::vector<unsigned char> c = bytes;
    c[bytes.size() / 2] ^= 0x01;
    write_bytes(bad, c);
    CHECK(contains(error_of([&] { read_png_grey(bad); }), "CRC mismatch in chunk 'IDAT'"));
  }
  SUBCASE("a colour image where a label map is expected") {
    CHECK(contains(
        error_of([&] { read_png_grey(good); }),
        good.string() + ": a single-channel label map was expected, the PNG has 3 channels"));
  }
  SUBCASE("a write that cannot happen leaves the old file and no temporary") {
    write_png_rgb(bad, w, h, rgb.data());
    const std::vector<unsigned char> before = file_bytes(bad);
    fs::permissions(dir.path, fs::perms::owner_read | fs::perms::owner_exec);
    const bool writable = ::access(dir.path.c_str(), W_OK) == 0;  // root writes anyway
    if (!writable) {
      CHECK(contains(error_of([&] { write_png_rgb(bad, 2, 2, rgb.data()); }),
                     bad.string() + ": cannot create"));
    }
    fs::permissions(dir.path, fs::perms::owner_all);
    CHECK(
        contains(error_of([&] { write_png_rgb(dir / "no" / "such" / "x.png", 2, 2, rgb.data()); }),
                 (dir / "no" / "such" / "x.png").string()));
    CHECK(contains(error_of([&] { write_png_grey8(dir / "e.png", 0, 3, rgb.data()); }),
                   "cannot write an empty"));
    if (!writable) CHECK(file_bytes(bad) == before);
    int files = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path)) ++files;
    CHECK(files == 2);  // good.png and bad.png
  }
}

TEST_CASE("predictions: a labelIds PNG as cityscapesScripts reads it, and a colour PNG") {
  TempDir dir("pred");
  // (2, 4) trainIds: road, sidewalk, sky, bicycle / person, car, ignored, train
  Tensor pred = empty({2, 4}, DType::i32);
  const int32_t values[8] = {0, 1, 10, 18, 11, 13, 255, 16};
  for (int i = 0; i < 8; ++i) pred.data<int32_t>()[i] = values[i];
  write_prediction_pngs(pred, dir / "p_labelIds.png", dir / "p_color.png");

  const GreyImage ids = read_png_grey(dir / "p_labelIds.png");
  CHECK(ids.width == 4);
  CHECK(ids.height == 2);
  CHECK(ids.values == std::vector<uint16_t>{7, 8, 23, 33, 24, 26, 0, 31});
  for (size_t i = 0; i < ids.values.size(); ++i) {
    if (ids.values[i] != 0) CHECK(train_id_of(ids.values[i]) == values[i]);
  }
  const Image color = read_png_rgb(dir / "p_color.png");
  REQUIRE(color.pixels.size() == 24);
  CHECK(color.pixels[0] == 128);  // road (128, 64, 128)
  CHECK(color.pixels[1] == 64);
  CHECK(color.pixels[2] == 128);
  CHECK(color.pixels[3 * 3] == 119);  // bicycle (119, 11, 32)
  CHECK(color.pixels[3 * 3 + 1] == 11);
  CHECK(color.pixels[3 * 6] == 0);  // ignored: black
  CHECK(color.pixels[3 * 6 + 2] == 0);
  CHECK(color.pixels[3 * 5 + 2] == 142);  // car (0, 0, 142)

  // One file only; u8 and i64 predictions; a transposed view is written in image order.
  Tensor t = empty({4, 2}, DType::u8);
  for (int i = 0; i < 8; ++i) t.data<uint8_t>()[i] = static_cast<uint8_t>(i);
  write_prediction_pngs(t.transpose(0, 1), dir / "t_labelIds.png", fs::path());
  CHECK(read_png_grey(dir / "t_labelIds.png").values ==
        std::vector<uint16_t>{7, 11, 13, 19, 8, 12, 17, 20});
  CHECK(!fs::exists(dir / "t_color.png"));
  write_prediction_pngs(pred.to(DType::i64), fs::path(), dir / "q_color.png");
  CHECK(file_bytes(dir / "q_color.png") == file_bytes(dir / "p_color.png"));

  // Bad predictions name the file and the problem; nothing is written.
  pred.data<int32_t>()[5] = 19;
  CHECK(contains(
      error_of([&] { write_prediction_pngs(pred, dir / "bad.png", fs::path()); }),
      (dir / "bad.png").string() + ": value 19 at (x=1, y=1) is not a trainId (0..18 or 255)"));
  CHECK(contains(error_of([&] {
                   write_prediction_pngs(zeros({1, 2, 2}, DType::i32), dir / "bad.png", fs::path());
                 }),
                 "must be an (h, w) tensor, got (1,2,2)"));
  CHECK(contains(error_of([&] {
                   write_prediction_pngs(zeros({2, 2}), dir / "bad.png", fs::path());
                 }),
                 "integer trainIds (i32, i64 or u8), got f32"));
  CHECK(!fs::exists(dir / "bad.png"));
}
