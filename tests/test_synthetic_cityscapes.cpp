// The synthetic Cityscapes generator: the written tree's layout and naming (checked against names
// spelled out here, not the generator's own: annotated frames 000019, 000049 and 000313, adjacent
// snippets in one sequence), the 20th snippet frame identical to the annotated image, label
// consistency between labelIds / labelTrainIds / color, the classes a modest set covers,
// determinism and thread-count independence, motion between frames, and the app's argument errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

#include "data/cityscapes.h"
#include "data/labels.h"
#include "data/png.h"
#include "data/synthetic_cityscapes.h"
#include "engine/error.h"
#include "tests/support/test_util.h"

using namespace seg;
using namespace seg::test;
using namespace seg::data;
namespace fs = std::filesystem;

namespace {

// A fresh directory under the system's temporary directory, removed at the end of the test.
// Every regular file under root, as paths relative to root.
std::set<std::string> list_files(const fs::path& root) {
  std::set<std::string> files;
  for (const fs::directory_entry& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) files.insert(fs::relative(e.path(), root).generic_string());
  return files;
}

SyntheticOptions small_options(const fs::path& out) {
  SyntheticOptions o;
  o.out_dir = out;
  o.width = 64;
  o.height = 32;
  o.num_train = 7;  // aachen 3 (all three annotated frames of a sequence), bochum 2, bremen 2
  o.num_val = 1;
  o.num_test = 1;
  o.seed = 7;
  o.threads = 2;
  return o;
}

std::string six(int v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%06d", v);
  return buf;
}

// Mean absolute difference of two RGB frames in 8-bit units, between their 4x4 block means: the
// blocks average the per-frame sensor noise away (alone it gives about 1 level per pixel, 0.25 per
// block), so what remains is motion.
double mean_abs_diff(const SyntheticFrame& a, const SyntheticFrame& b) {
  constexpr int kBlock = 4;
  double sum = 0.0;
  int blocks = 0;
  for (int by = 0; by + kBlock <= a.height; by += kBlock) {
    for (int bx = 0; bx + kBlock <= a.width; bx += kBlock) {
      for (int c = 0; c < 3; ++c) {
        int da = 0, db = 0;
        for (int y = by; y < by + kBlock; ++y)
          for (int x = bx; x < bx + kBlock; ++x) {
            const size_t i = (static_cast<size_t>(y) * static_cast<size_t>(a.width) + static_cast<size_t>(x)) * 3 + static_cast<size_t>(c);
            da += a.rgb[i];
            db += b.rgb[i];
          }
        sum += std::abs(da - db) / static_cast<double>(kBlock * kBlock);
        ++blocks;
      }
    }
  }
  return sum / blocks;
}

double label_change_fraction(const SyntheticFrame& a, const SyntheticFrame& b) {
  size_t changed = 0;
  for (size_t i = 0; i < a.label_ids.size(); ++i) changed += a.label_ids[i] != b.label_ids[i];
  return static_cast<double>(changed) / static_cast<double>(a.label_ids.size());
}

}  // namespace

TEST_CASE("cities and image ids follow the real dataset's names") {
  CHECK(cityscapes_cities(Split::train).size() == 18);
  CHECK(cityscapes_cities(Split::train).front() == "aachen");
  CHECK(cityscapes_cities(Split::val) == std::vector<std::string_view>{"frankfurt", "lindau", "munster"});
  CHECK(cityscapes_cities(Split::test).front() == "berlin");
  // 2975 training images over 3 + 2975 / 200 = 17 cities, in contiguous blocks; within a city,
  // three images per sequence number (from 0), annotated at frames 19, 49 and 313.
  CHECK(synthetic_num_cities(Split::train, 2975) == 17);
  CHECK(synthetic_num_cities(Split::val, 500) == 3);
  CHECK(synthetic_num_cities(Split::val, 1) == 1);
  CHECK(synthetic_num_cities(Split::test, 0) == 0);
  std::set<std::string_view> used;
  SyntheticImageId previous = synthetic_image_id(Split::train, 0, 2975);
  CHECK(previous.city == "aachen");
  CHECK(previous.sequence == 0);
  CHECK(previous.frame == 19);
  used.insert(previous.city);
  for (int i = 1; i < 2975; ++i) {
    const SyntheticImageId id = synthetic_image_id(Split::train, i, 2975);
    if (id.city == previous.city) {
      if (previous.frame == 19) {
        REQUIRE(id.sequence == previous.sequence);
        REQUIRE(id.frame == 49);
      } else if (previous.frame == 49) {
        REQUIRE(id.sequence == previous.sequence);
        REQUIRE(id.frame == 313);
      } else {
        REQUIRE(previous.frame == 313);
        REQUIRE(id.sequence == previous.sequence + 1);
        REQUIRE(id.frame == 19);
      }
    } else {
      REQUIRE(id.sequence == 0);
      REQUIRE(id.frame == 19);
      REQUIRE(used.count(id.city) == 0);  // contiguous blocks
    }
    used.insert(id.city);
    previous = id;
  }
  CHECK(used.size() == 17);
  // 7 images over 3 cities: 3, 2, 2.
  CHECK(synthetic_image_id(Split::train, 2, 7).city == "aachen");
  CHECK(synthetic_image_id(Split::train, 2, 7).frame == 313);
  CHECK(synthetic_image_id(Split::train, 3, 7).city == "bochum");
  CHECK(synthetic_image_id(Split::train, 4, 7).frame == 49);
  CHECK_THROWS_AS(synthetic_image_id(Split::val, 3, 3), Error);
}

TEST_CASE("a small tree has exactly the expected files, names and sizes") {
  TempDir dir("tree");
  const SyntheticOptions o = small_options(dir.path);
  int64_t last_done = 0, calls = 0;
  const SyntheticSummary summary = write_synthetic_cityscapes(o, [&](int64_t done, int64_t total) {
    CHECK(total == 9);
    CHECK(done == last_done + 1);
    last_done = done;
    ++calls;
  });
  CHECK(calls == 9);
  // Spelled out: 7 train images over 3 cities (3, 2, 2), 1 val and 1 test image; sequence 0 of each
  // city, annotated at 000019 (frames 000000..000029), 000049 (000030..000059, adjacent) and 000313
  // (000294..000323).
  struct Written {
    std::string split, city;
    int annotated;
    std::string stem() const { return city + "_000000_"; }
  };
  const std::vector<Written> images = {{"train", "aachen", 19},  {"train", "aachen", 49},  {"train", "aachen", 313},
                                     {"train", "bochum", 19},  {"train", "bochum", 49},  {"train", "bremen", 19},
                                     {"train", "bremen", 49},  {"val", "frankfurt", 19}, {"test", "berlin", 19}};
  std::set<std::string> expected;
  for (const Written& im : images) {
    const std::string stem = im.stem(), a = six(im.annotated), city = im.city, split = im.split;
    expected.insert("leftImg8bit/" + split + "/" + city + "/" + stem + a + "_leftImg8bit.png");
    expected.insert("gtFine/" + split + "/" + city + "/" + stem + a + "_gtFine_labelIds.png");
    expected.insert("gtFine/" + split + "/" + city + "/" + stem + a + "_gtFine_labelTrainIds.png");
    expected.insert("gtFine/" + split + "/" + city + "/" + stem + a + "_gtFine_color.png");
    for (int f = im.annotated - 19; f <= im.annotated + 10; ++f)
      expected.insert("leftImg8bit_sequence/" + split + "/" + city + "/" + stem + six(f) + "_leftImg8bit.png");
  }
  CHECK(expected.count("leftImg8bit_sequence/train/bochum/bochum_000000_000029_leftImg8bit.png") == 1);
  CHECK(expected.count("leftImg8bit_sequence/train/bochum/bochum_000000_000059_leftImg8bit.png") == 1);
  CHECK(expected.count("leftImg8bit_sequence/train/aachen/aachen_000000_000294_leftImg8bit.png") == 1);
  CHECK(expected.count("leftImg8bit_sequence/train/aachen/aachen_000000_000323_leftImg8bit.png") == 1);
  CHECK(expected.size() == 9 * 34);
  const std::set<std::string> written = list_files(dir.path);
  CHECK(written == expected);  // nothing missing, nothing extra (no temporary files left behind)
  CHECK(summary.files == static_cast<int64_t>(expected.size()));
  CHECK(summary.images == std::array<int, 3>{7, 1, 1});
  CHECK(summary.cities == std::array<int, 3>{3, 1, 1});
  CHECK(summary.threads == 2);
  int64_t bytes = 0;
  for (const std::string& f : written) {
    const fs::path path = dir.path / f;
    bytes += static_cast<int64_t>(fs::file_size(path));
    int w = 0, h = 0;
    read_png_size(path, w, h);
    REQUIRE_MESSAGE((w == 64 && h == 32), f);
    if (f.find("_labelIds") != std::string::npos || f.find("_labelTrainIds") != std::string::npos) {
      CHECK(read_png_grey(path).bits == 8);
    } else {
      CHECK_THROWS_AS(read_png_grey(path), Error);  // images and color maps are colour PNGs
      CHECK(read_png_rgb(path).channels == 3);
    }
  }
  CHECK(summary.bytes == bytes);
  int64_t pixels = 0;
  for (int64_t p : summary.label_pixels) pixels += p;
  CHECK(pixels == 9 * 64 * 32);

  SUBCASE("the 20th frame of each snippet is the annotated image, byte for byte") {
    for (const Written& im : images) {
      const std::string stem = im.stem();
      const auto annotated =
          file_bytes(dir.path / "leftImg8bit" / im.split / im.city / (stem + six(im.annotated) + "_leftImg8bit.png"));
      const fs::path seq = dir.path / "leftImg8bit_sequence" / im.split / im.city;
      CHECK(file_bytes(seq / (stem + six(im.annotated) + "_leftImg8bit.png")) == annotated);
      CHECK(file_bytes(seq / (stem + six(im.annotated - 1) + "_leftImg8bit.png")) != annotated);
      CHECK(file_bytes(seq / (stem + six(im.annotated + 1) + "_leftImg8bit.png")) != annotated);
    }
  }

  SUBCASE("the pixels depend on the frame offset in the snippet, not on the frame number") {
    // aachen's images 0, 1, 2 are annotated at 19, 49 and 313: frame start + t is offset t.
    for (int index = 0; index < 3; ++index) {
      const Written& im = images[static_cast<size_t>(index)];
      const std::vector<SyntheticFrame> f = render_synthetic_snippet(o.seed, Split::train, index, 64, 32, {0, 29});
      const fs::path seq = dir.path / "leftImg8bit_sequence" / im.split / im.city;
      CHECK(read_png_rgb(seq / (im.stem() + six(im.annotated - 19) + "_leftImg8bit.png")).pixels == f[0].rgb);
      CHECK(read_png_rgb(seq / (im.stem() + six(im.annotated + 10) + "_leftImg8bit.png")).pixels == f[1].rgb);
    }
  }

  SUBCASE("the reader of the real tree (data/cityscapes.h) takes it as Cityscapes") {
    CityscapesOptions co;
    co.root = dir.path;
    co.use_cache = false;  // no index file written into the tree
    const int expected_count[3] = {7, 1, 1};
    for (Split split : {Split::train, Split::val, Split::test}) {
      co.split = split;
      for (LabelSource labels : {LabelSource::label_ids, LabelSource::train_ids}) {
        co.labels = labels;
        const AnnotatedSet set = scan_annotated(co);
        CHECK(set.samples.size() == static_cast<size_t>(expected_count[static_cast<int>(split)]));
        CHECK(set.report.skipped == 0);
      }
      // Exactly one snippet per annotated image, anchored on its annotated frame (the adjacent
      // 000000..000029 and 000030..000059 apart), and no frame left over.
      const SnippetIndex index = scan_snippets(co);
      CHECK(index.report.skipped == 0);
      CHECK(index.report.warnings.empty());
      std::vector<std::string> got, want;
      for (const Snippet& s : index.snippets) {
        CHECK(s.sequence == 0);
        CHECK(s.start == s.annotation - 19);
        CHECK(s.end == s.annotation + 10);
        got.push_back(s.city + " " + six(s.start) + " " + six(s.annotation));
      }
      for (const Written& im : images)
        if (im.split == split_name(split))
          want.push_back(im.city + " " + six(im.annotated - 19) + " " + six(im.annotated));
      CHECK(got == want);
    }
    co.split = Split::train;
    const AnnotatedSet train = scan_annotated(co);
    CHECK(train.samples[0].id() == "aachen_000000_000019");
    CHECK(train.samples[1].id() == "aachen_000000_000049");
    CHECK(train.samples[2].id() == "aachen_000000_000313");
    CHECK(train.samples[3].id() == "bochum_000000_000019");
    CHECK(list_files(dir.path) == expected);
  }

  SUBCASE("labelIds, labelTrainIds and color agree, with table ids only") {
    std::set<int> ids;
    for (const Written& im : images) {
      const fs::path gt = dir.path / "gtFine" / im.split / im.city;
      const std::string stem = im.stem() + six(im.annotated) + "_gtFine_";
      const GreyImage label_ids = read_png_grey(gt / (stem + "labelIds.png"));
      const GreyImage train_ids = read_png_grey(gt / (stem + "labelTrainIds.png"));
      const Image colour = read_png_rgb(gt / (stem + "color.png"));
      REQUIRE(label_ids.values8.size() == train_ids.values8.size());
      for (size_t i = 0; i < label_ids.values8.size(); ++i) {
        const int id = label_ids.values8[i];
        REQUIRE(id < kNumLabelIds);
        REQUIRE(train_ids.values8[i] == train_id_of(id));
        const Rgb c = kCityscapesLabels[static_cast<size_t>(id)].color;
        REQUIRE(colour.pixels[i * 3] == c.r);
        REQUIRE(colour.pixels[i * 3 + 1] == c.g);
        REQUIRE(colour.pixels[i * 3 + 2] == c.b);
        ids.insert(id);
      }
    }
    CHECK(ids.count(1) == 1);  // the ego vehicle's hood, ignored in training
    CHECK(ids.count(7) == 1);  // road
    CHECK(ids.count(23) == 1);  // sky
  }
}

TEST_CASE("every training class and the chosen void ids appear over a modest set") {
  // 40 annotated frames at 256x128: small classes (motorcycle, bicycle, traffic light) need a few
  // pixels, which 128x64 would not always give them.
  std::array<int64_t, kNumLabelIds> pixels{};
  for (int i = 0; i < 40; ++i) {
    const SyntheticFrame f = render_synthetic_snippet(0, Split::train, i, 256, 128, {19})[0];
    for (uint8_t id : f.label_ids) pixels[id] += 1;
  }
  for (int t = 0; t < kNumTrainClasses; ++t) {
    INFO("train class ", t, " (", kTrainIdNames[static_cast<size_t>(t)], ")");
    CHECK(pixels[kTrainIdToLabelId[static_cast<size_t>(t)]] > 0);
  }
  for (int id : {0, 1, 4, 9}) {  // unlabeled (far away), ego vehicle, static, parking
    INFO("void label id ", id);
    CHECK(pixels[static_cast<size_t>(id)] > 0);
  }
  // Nothing outside the label ids the generator uses.
  const std::set<int> allowed = {0, 1, 4, 7, 8, 9, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33};
  for (int id = 0; id < kNumLabelIds; ++id)
    if (pixels[static_cast<size_t>(id)] > 0) CHECK(allowed.count(id) == 1);
  // The big classes dominate as in Cityscapes: road and building are the two largest.
  std::vector<int> order(kNumLabelIds);
  for (int id = 0; id < kNumLabelIds; ++id) order[static_cast<size_t>(id)] = id;
  std::sort(order.begin(), order.end(), [&](int a, int b) { return pixels[static_cast<size_t>(a)] > pixels[static_cast<size_t>(b)]; });
  CHECK(std::set<int>{order[0], order[1]} == std::set<int>{7, 11});
}

TEST_CASE("same seed gives the same bytes whatever the thread count; another seed differs") {
  TempDir a("det_a"), b("det_b"), c("det_c");
  SyntheticOptions o = small_options(a.path);
  o.threads = 1;
  write_synthetic_cityscapes(o);
  o.out_dir = b.path;
  o.threads = 3;
  write_synthetic_cityscapes(o);
  const std::set<std::string> files = list_files(a.path);
  REQUIRE(files == list_files(b.path));
  for (const std::string& f : files) REQUIRE_MESSAGE(file_bytes(a.path / f) == file_bytes(b.path / f), f);
  o.out_dir = c.path;
  o.seed = 8;
  write_synthetic_cityscapes(o);
  REQUIRE(files == list_files(c.path));
  int differing = 0;
  for (const std::string& f : files)
    if (f.rfind("leftImg8bit/", 0) == 0) differing += file_bytes(a.path / f) != file_bytes(c.path / f);
  CHECK(differing == 9);
  // In memory as well: the renderer is a pure function of (seed, split, index, size, frame).
  const auto x = render_synthetic_snippet(3, Split::val, 5, 96, 48, {0, 19});
  const auto y = render_synthetic_snippet(3, Split::val, 5, 96, 48, {0, 19});
  CHECK(x[0].rgb == y[0].rgb);
  CHECK(x[1].label_ids == y[1].label_ids);
  CHECK(render_synthetic_snippet(4, Split::val, 5, 96, 48, {19})[0].rgb != x[1].rgb);
  CHECK(render_synthetic_snippet(3, Split::test, 5, 96, 48, {19})[0].rgb != x[1].rgb);
}

TEST_CASE("objects and the camera move smoothly through the snippet") {
  // Consecutive frames (1/17 s apart) differ but stay alike: the mean absolute difference of block
  // means lies in a band. Below 1 level would mean a frozen scene (noise alone gives about 0.25);
  // above 40 levels, a jump no frame-order or future-frame model could follow.
  constexpr double kMinStep = 1.0, kMaxStep = 40.0;
  for (int index = 0; index < 6; ++index) {
    std::vector<int> frames(kSnippetLength);
    for (int f = 0; f < kSnippetLength; ++f) frames[static_cast<size_t>(f)] = f;
    const std::vector<SyntheticFrame> s = render_synthetic_snippet(11, Split::train, index, 256, 128, frames);
    double total_step = 0.0, max_step = 0.0;
    for (int f = 1; f < kSnippetLength; ++f) {
      const double d = mean_abs_diff(s[static_cast<size_t>(f - 1)], s[static_cast<size_t>(f)]);
      INFO("scene ", index, " frames ", f - 1, "-", f, ": ", d);
      CHECK(d > kMinStep);
      CHECK(d < kMaxStep);
      // Labels move too, but only a small part of the image changes class from one frame to the next.
      const double changed = label_change_fraction(s[static_cast<size_t>(f - 1)], s[static_cast<size_t>(f)]);
      CHECK(changed > 0.0);
      CHECK(changed < 0.3);
      total_step += d;
      max_step = std::max(max_step, d);
    }
    // Smooth: no single step carries much of the motion, and the ends of the snippet differ more than neighbours.
    CHECK(max_step < 0.25 * total_step);
    CHECK(mean_abs_diff(s.front(), s.back()) > 2.0 * total_step / (kSnippetLength - 1));
  }
}

TEST_CASE("render_synthetic_snippet and write_synthetic_cityscapes reject bad arguments") {
  CHECK_THROWS_WITH_AS(render_synthetic_snippet(0, Split::train, 0, 64, 32, {30}),
                       "render_synthetic_snippet: frame 30 is outside 0..29", Error);
  CHECK_THROWS_AS(render_synthetic_snippet(0, Split::train, 0, 63, 32, {0}), Error);
  CHECK_THROWS_AS(render_synthetic_snippet(0, Split::train, -1, 64, 32, {0}), Error);
  TempDir dir("bad");
  const fs::path file = dir.path / "a_file";
  std::ofstream(file) << "x";
  SyntheticOptions o = small_options(file);
  CHECK_THROWS_WITH_AS(write_synthetic_cityscapes(o),
                       ("synthetic cityscapes: " + file.string() + " exists and is not a directory").c_str(), Error);
  o = small_options(dir.path / "out");
  o.width = 4096;
  CHECK_THROWS_WITH_AS(write_synthetic_cityscapes(o), "synthetic cityscapes: width 4096 is outside [16, 2048]", Error);
  o = small_options(dir.path / "out");
  o.num_train = o.num_val = o.num_test = 0;
  CHECK_THROWS_AS(write_synthetic_cityscapes(o), Error);
  CHECK_FALSE(fs::exists(dir.path / "out"));  // nothing written on invalid options
}

TEST_CASE("make_synthetic_cityscapes: argument parsing") {
  using Args = std::vector<std::string>;
  const SyntheticCommandLine defaults = parse_synthetic_cityscapes_args({"--out", "d"});
  CHECK(defaults.options.out_dir == fs::path("d"));
  CHECK(defaults.options.width == 256);
  CHECK(defaults.options.height == 128);
  CHECK(defaults.options.num_train == 6);
  CHECK(defaults.options.num_val == 3);
  CHECK(defaults.options.num_test == 0);
  CHECK(defaults.options.seed == 0);
  CHECK(defaults.options.threads == 0);
  CHECK(defaults.options.sequences);
  CHECK_FALSE(defaults.help);

  const SyntheticCommandLine full = parse_synthetic_cityscapes_args(
      {"--out=/tmp/x", "--width", "2048", "--height=1024", "--train", "2975", "--val", "500", "--test", "1525", "--seed",
       "18446744073709551615", "--threads", "3", "--no-sequences"});
  CHECK(full.options.out_dir == fs::path("/tmp/x"));
  CHECK(full.options.width == 2048);
  CHECK(full.options.height == 1024);
  CHECK(full.options.num_train == 2975);
  CHECK(full.options.num_val == 500);
  CHECK(full.options.num_test == 1525);
  CHECK(full.options.seed == 18446744073709551615ULL);
  CHECK(full.options.threads == 3);
  CHECK_FALSE(full.options.sequences);
  CHECK(parse_synthetic_cityscapes_args({"--width", "x", "--help"}).help);  // --help wins
  CHECK(parse_synthetic_cityscapes_args(Args{"-h"}).help);
  CHECK(synthetic_cityscapes_usage().find("--out DIR") != std::string::npos);

  auto fails_with = [](const Args& args, const std::string& message) {
    INFO("args: ", [&] {
      std::string s;
      for (const std::string& a : args) s += a + " ";
      return s;
    }());
    CHECK_THROWS_WITH_AS(parse_synthetic_cityscapes_args(args), message.c_str(), Error);
  };
  fails_with({"--out", "d", "--widht", "3"},
             "make_synthetic_cityscapes: unknown option '--widht' (known: --out, --width, --height, --train, --val, "
             "--test, --seed, --threads, --no-sequences, --help)");
  fails_with({"--out", "d", "--width", "abc"}, "make_synthetic_cityscapes: --width 'abc' is not an integer");
  fails_with({"--out", "d", "--width", "12x"}, "make_synthetic_cityscapes: --width '12x' is not an integer");
  fails_with({"--out", "d", "--width", ""}, "make_synthetic_cityscapes: --width '' is not an integer");
  fails_with({"--out", "d", "--train", "1.5"}, "make_synthetic_cityscapes: --train '1.5' is not an integer");
  fails_with({"--out", "d", "--width"}, "make_synthetic_cityscapes: option --width needs a value");
  fails_with({"--out", "d", "--width", "255"}, "make_synthetic_cityscapes: --width 255 is not even");
  fails_with({"--out", "d", "--height", "127"}, "make_synthetic_cityscapes: --height 127 is not even");
  fails_with({"--out", "d", "--width", "4096"}, "make_synthetic_cityscapes: --width 4096 is out of range [16, 2048]");
  fails_with({"--out", "d", "--height", "1026"}, "make_synthetic_cityscapes: --height 1026 is out of range [8, 1024]");
  fails_with({"--out", "d", "--width", "8"}, "make_synthetic_cityscapes: --width 8 is out of range [16, 2048]");
  fails_with({"--out", "d", "--width", "99999999999999999999"},
             "make_synthetic_cityscapes: --width 99999999999999999999 is out of range [16, 2048]");
  fails_with({"--out", "d", "--train", "-1"}, "make_synthetic_cityscapes: --train -1 is out of range [0, 100000]");
  fails_with({"--out", "d", "--threads", "-2"}, "make_synthetic_cityscapes: --threads -2 is out of range [0, 1024]");
  fails_with({"--out", "d", "--seed", "-3"}, "make_synthetic_cityscapes: --seed '-3' is not a non-negative integer");
  fails_with({"--out", "d", "--seed", "18446744073709551616"},
             "make_synthetic_cityscapes: --seed 18446744073709551616 does not fit in 64 bits");
  fails_with({"--out", "d", "--width", "64", "--width", "128"}, "make_synthetic_cityscapes: option --width given twice");
  fails_with({"--out", "d", "extra"},
             "make_synthetic_cityscapes: unexpected argument 'extra' (options start with --; see --help)");
  fails_with({"--width", "64"}, "make_synthetic_cityscapes: --out DIR is required (see --help)");
  fails_with({"--out", ""}, "make_synthetic_cityscapes: --out needs a directory");
  fails_with({"--out", "d", "--no-sequences=1"}, "make_synthetic_cityscapes: option --no-sequences takes no value");
  fails_with({"--out", "d", "--train", "0", "--val", "0"},
             "synthetic cityscapes: nothing to write (0 train, 0 val and 0 test images)");
}
