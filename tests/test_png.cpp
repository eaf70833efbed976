// PNG reading and writing (data/png.h) and prediction files (data/predictions.h): round trips, a
// hand-made 16-bit label map, and every way a file can be bad: missing, a folder, not a PNG,
// truncated at every length, a byte changed at every position, chunk types of arbitrary bytes, the
// wrong kind of image, a header declaring a huge or unexpected size, a write that fails.
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
#include "tests/support/png_bytes.h"
#include "tests/support/test_util.h"

using namespace seg;
using namespace seg::data;
using namespace seg::test;
namespace fs = std::filesystem;

namespace {

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
  CHECK(g.values8 == grey);  // 8-bit values held in 8 bits
  CHECK(g.values16.empty());
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
  write_bytes(dir / "l16.png", grey_png(3, 2, 16, values));
  const GreyImage g = read_png_grey(dir / "l16.png");
  CHECK(g.bits == 16);
  CHECK(g.width == 3);
  CHECK(g.height == 2);
  CHECK(g.values16 == values);
  CHECK(g.values8.empty());
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

TEST_CASE("a folder named like a PNG, and chunk types of arbitrary bytes, are named as they are") {
  TempDir dir("pngname");
  fs::create_directories(dir / "folder.png");
  CHECK(contains(error_of([&] { read_png_rgb(dir / "folder.png"); }),
                 (dir / "folder.png").string() + ": a folder, not a PNG file"));
  CHECK(contains(error_of([&] { read_png_grey(dir / "folder.png"); }), "a folder, not a PNG file"));

  // A chunk whose type is not four letters (NUL, 0xFF, a newline, a quote), with a wrong CRC and
  // then cut short: the messages show its bytes as \xNN, never raw.
  std::vector<unsigned char> png = grey_png(2, 2, 8, {1, 2, 3, 4});
  const size_t iend = png.size() - 12;
  std::vector<unsigned char> odd(png.begin(), png.begin() + static_cast<std::ptrdiff_t>(iend));
  const std::vector<unsigned char> chunk = {0, 0, 0, 1, 0x00, 0xFF, '\n', '\'', 7, 0, 0, 0, 0};
  odd.insert(odd.end(), chunk.begin(), chunk.end());
  write_bytes(dir / "odd.png", odd);
  const std::string crc = error_of([&] { read_png_grey(dir / "odd.png"); });
  CHECK_MESSAGE(
      contains(crc, "CRC mismatch in chunk '\\x00\\xff\\x0a\\x27' at byte " + std::to_string(iend)),
      crc);
  odd.resize(odd.size() - 1);
  write_bytes(dir / "odd.png", odd);
  const std::string cut = error_of([&] { read_png_grey(dir / "odd.png"); });
  CHECK_MESSAGE(contains(cut, "truncated PNG (chunk '\\x00\\xff\\x0a\\x27'"), cut);
  for (const std::string& m : {crc, cut}) {
    for (char c : m) REQUIRE_MESSAGE((c >= 0x20 && c < 0x7F), m);  // printable ASCII only
  }
  // The first chunk must be the header.
  std::vector<unsigned char> no_header = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  put_png_chunk(no_header, "IEND", {});
  CHECK(contains(error_of([&] { decode_png_rgb(no_header.data(), no_header.size(), "m.png"); }),
                 "m.png: corrupt PNG (the first chunk is 'IEND' of 0 bytes, not the 13-byte IHDR"));
}

TEST_CASE("a header declaring a huge or unexpected size is refused before anything is decoded") {
  TempDir dir("pnghuge");
  // A small file whose header declares 32768x32768 (1 GiB as 8-bit grey): its data is a few rows,
  // so decoding it would fail anyway, but only after allocating for the declared size.
  const std::vector<unsigned char> raw(4 * (32768 + 1), 0);
  const std::vector<unsigned char> huge = png_file(32768, 32768, 8, 0, raw);
  const fs::path file = dir / "huge_labelIds.png";
  write_bytes(file, huge);
  const std::string cap = error_of([&] { read_png_grey(file); });
  CHECK_MESSAGE(contains(cap, file.string() +
                                  ": the PNG is 32768x32768 (1073741824 pixels), more "
                                  "than the limit of " +
                                  std::to_string(kDefaultMaxPngPixels) + " pixels"),
                cap);
  CHECK(contains(error_of([&] { read_png_rgb(file); }), "32768x32768 (1073741824 pixels)"));
  // The size a caller expects (a label has its image's size) is checked first.
  PngReadOptions expect;
  expect.width = 128;
  expect.height = 64;
  expect.expected_from = "its image x_leftImg8bit.png";
  CHECK(error_of([&] { read_png_grey(file, expect); }) ==
        file.string() +
            ": the PNG is 32768x32768 but its image x_leftImg8bit.png is 128x64 (from its header, "
            "before decoding)");
  // The limit is the caller's.
  const int w = 37, h = 11;
  const std::vector<uint8_t> rgb = pattern(static_cast<size_t>(w) * h * 3, 31);
  write_png_rgb(dir / "a.png", w, h, rgb.data());
  PngReadOptions tight;
  tight.max_pixels = w * h - 1;
  CHECK(contains(error_of([&] { read_png_rgb(dir / "a.png", tight); }),
                 "the PNG is 37x11 (407 pixels), more than the limit of 406 pixels"));
  tight.max_pixels = w * h;
  CHECK(read_png_rgb(dir / "a.png", tight).pixels == rgb);
  expect.width = w;
  expect.height = h;
  CHECK(read_png_rgb(dir / "a.png", expect).pixels == rgb);
}

TEST_CASE("label maps: 8-bit stays 8-bit; palettes and 1/2/4-bit grey are errors, not scaled") {
  TempDir dir("pnglabel");
  const std::vector<uint16_t> v = {0, 1, 2, 3, 1, 0};
  // stb_image would scale a 2-bit 3 to 255 and a 1-bit 1 to 255: silently wrong label ids.
  for (int bits : {1, 2, 4}) {
    CAPTURE(bits);
    std::vector<uint16_t> small = v;
    for (uint16_t& x : small) x = static_cast<uint16_t>(x & ((1u << bits) - 1));
    const std::vector<unsigned char> png = grey_png(3, 2, bits, small);
    CHECK(contains(
        error_of([&] { decode_png_grey(png.data(), png.size(), "low.png"); }),
        "low.png: a " + std::to_string(bits) + "-bit grey PNG; label maps must be 8- or 16-bit"));
    // As an image it is fine (grey expanded to 0..255).
    CHECK(decode_png_rgb(png.data(), png.size(), "low.png").pixels.size() == 18);
  }
  std::vector<unsigned char> plte;
  put_png_chunk(plte, "PLTE", {0, 0, 0, 255, 255, 255});
  const std::vector<unsigned char> palette = png_file(2, 1, 8, 3, {0, 0, 1}, plte);
  CHECK(contains(error_of([&] { decode_png_grey(palette.data(), palette.size(), "p.png"); }),
                 "p.png: a single-channel label map was expected, the PNG has a palette"));
  const Image rgb = decode_png_rgb(palette.data(), palette.size(), "p.png");
  CHECK(rgb.pixels == std::vector<uint8_t>{0, 0, 0, 255, 255, 255});
  // 8-bit values in memory and from a file: the same, held in 8 bits.
  const std::vector<unsigned char> png8 = grey_png(3, 2, 8, v);
  const GreyImage g = decode_png_grey(png8.data(), png8.size(), "g.png");
  CHECK(g.bits == 8);
  CHECK(g.values8 == std::vector<uint8_t>{0, 1, 2, 3, 1, 0});
  CHECK(g.values16.empty());
  CHECK(g.size() == 6);
  CHECK(g.value(3) == 3);
  write_bytes(dir / "g.png", png8);
  CHECK(read_png_grey(dir / "g.png").values8 == g.values8);
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
  CHECK(ids.values8 == std::vector<uint8_t>{7, 8, 23, 33, 24, 26, 0, 31});
  for (size_t i = 0; i < ids.values8.size(); ++i) {
    if (ids.values8[i] != 0) CHECK(train_id_of(ids.values8[i]) == values[i]);
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
  CHECK(read_png_grey(dir / "t_labelIds.png").values8 ==
        std::vector<uint8_t>{7, 11, 13, 19, 8, 12, 17, 20});
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
