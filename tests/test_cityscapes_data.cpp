// Cityscapes on disk and the five datasets: small trees written in a temp folder with data/png.h
// (a few cities, annotated images with labelIds, 30-frame snippets), scanned and read through every
// dataset. Pixels are a known function of (frame, x, y), so decoded tensors are checked value by
// value; every bad-input case of the scanner has a test, as has the snippet index cache.
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "data/cityscapes.h"
#include "data/datasets.h"
#include "data/labels.h"
#include "data/png.h"
#include "data/transforms.h"
#include "tests/support/png_bytes.h"
#include "tests/support/test_util.h"

using namespace seg;
using namespace seg::test;
using namespace seg::data;
namespace fs = std::filesystem;

namespace {

// Normalised values are (v / 255 - mean) / std in f32: a few ulps of their size.
constexpr float kNormTol = 1e-5f;
// rgb_to_lab takes f32 inputs (v / 255 rounded to f32), the dataset the exact v / 255 in double:
// Lab values up to 100 then differ by about 1e-5.
constexpr float kLabTol = 1e-3f;

// The test images, with code = frame % 200: R = (10 * code + x) % 256, G = 3 * y % 256,
// B = code + 50 (so B names the frame and R tells whether a row was flipped).
int frame_code(int frame) {
  return frame % 200;
}
std::array<uint8_t, 3> pixel(int frame, int x, int y) {
  const int code = frame_code(frame);
  return {static_cast<uint8_t>((10 * code + x) % 256), static_cast<uint8_t>((3 * y) % 256),
          static_cast<uint8_t>(code + 50)};
}

// labelIds: (x + 2 y) % 34 covers every id.
uint8_t label_id_at(int x, int y) {
  return static_cast<uint8_t>((x + 2 * y) % kNumLabelIds);
}

constexpr int kW = 16, kH = 8;

void write_frame(const fs::path& file, int frame, int w = kW, int h = kH) {
  fs::create_directories(file.parent_path());
  std::vector<uint8_t> rgb(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const auto p = pixel(frame, x, y);
      std::copy(p.begin(), p.end(), rgb.begin() + (static_cast<size_t>(y) * w + x) * 3);
    }
  write_png_rgb(file, w, h, rgb.data());
}

void write_labels(const fs::path& file, int w = kW, int h = kH, bool train_ids = false) {
  fs::create_directories(file.parent_path());
  std::vector<uint8_t> v(static_cast<size_t>(w) * h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const uint8_t id = label_id_at(x, y);
      v[static_cast<size_t>(y) * w + x] = train_ids ? train_id_of(id) : id;
    }
  write_png_grey8(file, w, h, v.data());
}

fs::path image_file(const fs::path& root, const std::string& split, const std::string& city,
                    int seq, int frame) {
  return root / "leftImg8bit" / split / city / (frame_stem(city, seq, frame) + "_leftImg8bit.png");
}
fs::path label_file(const fs::path& root, const std::string& split, const std::string& city,
                    int seq, int frame, const char* kind = "labelIds") {
  return root / "gtFine" / split / city /
         (frame_stem(city, seq, frame) + "_gtFine_" + kind + ".png");
}
fs::path sequence_file(const fs::path& root, const std::string& split, const std::string& city,
                       int seq, int frame) {
  return root / "leftImg8bit_sequence" / split / city /
         (frame_stem(city, seq, frame) + "_leftImg8bit.png");
}

void add_annotated(const fs::path& root, const std::string& split, const std::string& city, int seq,
                   int frame) {
  write_frame(image_file(root, split, city, seq, frame), frame);
  write_labels(label_file(root, split, city, seq, frame));
  write_labels(label_file(root, split, city, seq, frame, "labelTrainIds"), kW, kH, true);
}

void add_snippet(const fs::path& root, const std::string& split, const std::string& city, int seq,
                 int start) {
  for (int f = start; f < start + kSnippetLength; ++f)
    write_frame(sequence_file(root, split, city, seq, f), f);
}

// An annotated image and its whole snippet: the annotated frame is the 20th of the 30.
void add_annotated_snippet(const fs::path& root, const std::string& split, const std::string& city,
                           int seq, int annotated) {
  add_annotated(root, split, city, seq, annotated);
  add_snippet(root, split, city, seq, annotated - kAnnotatedFrameOffset);
}

// A small tree: train has aachen (2 annotated images, 2 snippets) and bochum (1 and 1, annotated
// at 000294, so its snippet starts at 000275); val has one city.
void build_tree(const fs::path& root) {
  add_annotated_snippet(root, "train", "aachen", 0, 19);
  add_annotated_snippet(root, "train", "aachen", 1, 19);
  add_annotated_snippet(root, "train", "bochum", 0, 294);
  add_annotated_snippet(root, "val", "lindau", 0, 19);
}

CityscapesOptions options_for(const fs::path& root, Split split = Split::train) {
  CityscapesOptions o;
  o.root = root;
  o.split = split;
  return o;
}

// Channel c of pixel (x, y) of a normalised (3, H, W) tensor, back in u8 units.
float denorm(const std::vector<float>& chw, int h, int w, int c, int x, int y,
             const Normalization& n) {
  return (chw[(static_cast<size_t>(c) * h + y) * w + x] * n.std[c] + n.mean[c]) * 255.0f;
}

// The frame code (frame % 200) and flip of a decoded (3, H, W) frame (from B and R at x = 0).
std::pair<int, bool> frame_of(const Tensor& chw, const Normalization& n) {
  const std::vector<float> v = to_vector<float>(chw);
  const int h = static_cast<int>(chw.size(1)), w = static_cast<int>(chw.size(2));
  const int frame = static_cast<int>(std::lround(denorm(v, h, w, 2, 0, 0, n))) - 50;
  const int r0 = static_cast<int>(std::lround(denorm(v, h, w, 0, 0, 0, n)));
  const bool flipped = r0 != (10 * frame) % 256;
  if (flipped) REQUIRE(r0 == (10 * frame + w - 1) % 256);
  return {frame, flipped};
}

VideoOptions plain_video(uint64_t seed = 1) {
  VideoOptions v;
  v.resize = ResizeOptions{1, 0, 0, Interp::area};
  v.norm = kImageNetNormalization;
  v.seed = seed;
  return v;
}

}  // namespace

TEST_CASE("frame names parse, others do not") {
  FrameName n;
  REQUIRE(parse_frame_name("aachen_000012_000019_leftImg8bit.png", "_leftImg8bit.png", n));
  CHECK(n.city == "aachen");
  CHECK(n.sequence == 12);
  CHECK(n.frame == 19);
  REQUIRE(
      parse_frame_name("bad_city_000001_000002_gtFine_labelIds.png", "_gtFine_labelIds.png", n));
  CHECK(n.city == "bad_city");
  CHECK(n.frame == 2);
  CHECK_FALSE(parse_frame_name("aachen_000012_000019_leftImg8bit.jpg", "_leftImg8bit.png", n));
  CHECK_FALSE(parse_frame_name("aachen_00012_000019_leftImg8bit.png", "_leftImg8bit.png", n));
  CHECK_FALSE(parse_frame_name("aachen_0000a2_000019_leftImg8bit.png", "_leftImg8bit.png", n));
  CHECK_FALSE(parse_frame_name("_000012_000019_leftImg8bit.png", "_leftImg8bit.png", n));
  CHECK_FALSE(parse_frame_name("aachen-000012-000019_leftImg8bit.png", "_leftImg8bit.png", n));
  CHECK(frame_stem("aachen", 3, 19) == "aachen_000003_000019");
  CHECK(std::string(split_name(parse_split("val"))) == "val");
  CHECK(contains(error_of([] { parse_split("training"); }), "unknown split 'training'"));
}

TEST_CASE("annotated samples: pairs of image and label, sorted") {
  TempDir tmp;
  build_tree(tmp.path);
  const AnnotatedSet set = scan_annotated(options_for(tmp.path));
  REQUIRE(set.samples.size() == 3);
  CHECK(set.samples[0].id() == "aachen_000000_000019");
  CHECK(set.samples[1].id() == "aachen_000001_000019");
  CHECK(set.samples[2].id() == "bochum_000000_000294");
  CHECK(set.samples[2].image == image_file(tmp.path, "train", "bochum", 0, 294));
  CHECK(set.samples[2].label == label_file(tmp.path, "train", "bochum", 0, 294));
  CHECK(set.report.skipped == 0);
  CityscapesOptions o = options_for(tmp.path, Split::val);
  o.labels = LabelSource::train_ids;
  const AnnotatedSet val = scan_annotated(o);
  REQUIRE(val.samples.size() == 1);
  CHECK(val.samples[0].label == label_file(tmp.path, "val", "lindau", 0, 19, "labelTrainIds"));
  // gtFine's other files (color, polygons) are ignored.
  std::ofstream(
      label_file(tmp.path, "train", "aachen", 0, 19, "polygons").replace_extension(".json"))
      << "{}";
  write_frame(label_file(tmp.path, "train", "aachen", 0, 19, "color"), 0);
  CHECK(scan_annotated(options_for(tmp.path)).samples.size() == 3);
}

TEST_CASE("scanning errors name the folder or file, or are skipped with counted warnings") {
  TempDir tmp;
  build_tree(tmp.path);
  const fs::path& root = tmp.path;

  SUBCASE("missing root") {
    const std::string e = error_of([&] { scan_annotated(options_for(root / "nope")); });
    CHECK(contains(e, (root / "nope").string() + " does not exist"));
    CHECK(contains(error_of([&] { load_snippet_index(options_for(root / "nope")); }),
                   "does not exist"));
  }
  SUBCASE("missing split folder") {
    const std::string e = error_of([&] { scan_annotated(options_for(root, Split::test)); });
    CHECK(contains(e, (root / "leftImg8bit" / "test").string() + ": missing split folder"));
    fs::remove_all(root / "gtFine" / "val");
    CHECK(contains(error_of([&] { scan_annotated(options_for(root, Split::val)); }),
                   (root / "gtFine" / "val").string() + ": missing split folder"));
    CHECK(contains(error_of([&] { scan_snippets(options_for(root, Split::test)); }),
                   (root / "leftImg8bit_sequence" / "test").string() + ": missing split folder"));
    // The snippets are anchored on the annotated images: without leftImg8bit/{split}, an error
    // naming it and why it is needed, from the scan and from the cached index alike.
    fs::remove_all(root / "leftImg8bit" / "val");
    const std::string needed = (root / "leftImg8bit" / "val").string() +
                               ": missing annotated image folder, needed for the snippets of " +
                               (root / "leftImg8bit_sequence" / "val").string();
    CHECK(contains(error_of([&] { scan_snippets(options_for(root, Split::val)); }), needed));
    CHECK(contains(error_of([&] { load_snippet_index(options_for(root, Split::val)); }), needed));
  }
  SUBCASE("an image without its label, and skipping it") {
    write_frame(image_file(root, "train", "aachen", 2, 19), 19);
    const std::string e = error_of([&] { scan_annotated(options_for(root)); });
    CHECK(contains(e, image_file(root, "train", "aachen", 2, 19).string() +
                          ": image without its label " +
                          label_file(root, "train", "aachen", 2, 19).string()));
    CityscapesOptions o = options_for(root);
    o.skip_incomplete = true;
    const AnnotatedSet set = scan_annotated(o);
    CHECK(set.samples.size() == 3);
    CHECK(set.report.skipped == 1);
    REQUIRE(set.report.warnings.size() == 1);
    CHECK(contains(set.report.warnings[0], "image without its label"));
    // The segmentation dataset takes the same option, and says so once on stderr naming the
    // folders it scanned.
    std::unique_ptr<SegmentationDataset> ds;
    const std::string notice =
        stderr_of([&] { ds = std::make_unique<SegmentationDataset>(o, SegmentationOptions{}); });
    CHECK(ds->size() == 3);
    CHECK(ds->report().skipped == 1);
    CHECK_MESSAGE(contains(notice, "segmentation dataset: skipped 1 incomplete sample(s) in " +
                                       (root / "leftImg8bit" / "train").string() + " and " +
                                       (root / "gtFine" / "train").string() + " (first: skipped: " +
                                       image_file(root, "train", "aachen", 2, 19).string()),
                  notice);
    CHECK_MESSAGE(!contains(notice, (root / "train").string() + " "), notice);
  }
  SUBCASE("a label without its image") {
    write_labels(label_file(root, "train", "bochum", 5, 7));
    const std::string e = error_of([&] { scan_annotated(options_for(root)); });
    CHECK(contains(e, label_file(root, "train", "bochum", 5, 7).string() +
                          ": label without its image " +
                          image_file(root, "train", "bochum", 5, 7).string()));
    // A whole city missing on the image side.
    fs::remove(label_file(root, "train", "bochum", 5, 7));
    write_labels(label_file(root, "train", "zurich", 0, 19));
    CHECK(contains(error_of([&] { scan_annotated(options_for(root)); }),
                   "zurich_000000_000019_gtFine_labelIds.png: label without its image"));
  }
  SUBCASE("empty city folders") {
    fs::create_directories(root / "leftImg8bit" / "train" / "cologne");
    CHECK(contains(error_of([&] { scan_annotated(options_for(root)); }),
                   (root / "leftImg8bit" / "train" / "cologne").string() + ": empty city folder"));
    fs::create_directories(root / "leftImg8bit_sequence" / "train" / "cologne");
    CHECK(contains(
        error_of([&] { scan_snippets(options_for(root)); }),
        (root / "leftImg8bit_sequence" / "train" / "cologne").string() + ": empty city folder"));
    CityscapesOptions o = options_for(root);
    o.skip_incomplete = true;
    CHECK(scan_snippets(o).snippets.size() == 3);
    CHECK(scan_snippets(o).report.skipped == 1);
    o.use_cache = false;
    const std::string notice = stderr_of([&] { TripletDataset ds(o, plain_video()); });
    CHECK_MESSAGE(
        contains(notice, "video dataset: skipped 1 incomplete sample(s) in " +
                             (root / "leftImg8bit_sequence" / "train").string() +
                             " (first: skipped: " +
                             (root / "leftImg8bit_sequence" / "train" / "cologne").string() +
                             ": empty city folder)"),
        notice);
  }
  SUBCASE("file names that do not parse") {
    const fs::path bad = root / "leftImg8bit" / "train" / "aachen" / "aachen_0_19_leftImg8bit.png";
    write_frame(bad, 0);
    CHECK(contains(
        error_of([&] { scan_annotated(options_for(root)); }),
        bad.string() + ": file name does not parse as {city}_{seq:06}_{frame:06}_leftImg8bit.png"));
    const fs::path bad2 = root / "leftImg8bit_sequence" / "train" / "aachen" / "notes.txt";
    std::ofstream(bad2) << "x";
    CHECK(contains(error_of([&] { scan_snippets(options_for(root)); }),
                   bad2.string() + ": file name does not parse"));
    const fs::path wrong_city = sequence_file(root, "train", "aachen", 0, 0).parent_path() /
                                "bochum_000009_000000_leftImg8bit.png";
    fs::remove(bad2);
    write_frame(wrong_city, 0);
    CHECK(contains(error_of([&] { scan_snippets(options_for(root)); }),
                   "names city 'bochum' but lies in folder 'aachen'"));
    CityscapesOptions skip = options_for(root);
    skip.skip_incomplete = true;
    const SnippetIndex skipped = scan_snippets(skip);
    CHECK(skipped.snippets.size() == 3);
    CHECK(skipped.report.skipped == 1);
    CHECK(scan_annotated(skip).report.skipped == 1);  // aachen_0_19_leftImg8bit.png
    // Hidden files are ignored.
    fs::remove(wrong_city);
    std::ofstream(root / "leftImg8bit_sequence" / "train" / "aachen" / ".DS_Store") << "x";
    CHECK(scan_snippets(options_for(root)).snippets.size() == 3);
  }
}

TEST_CASE("snippets: 30-frame windows with the study's columns; missing frames are errors") {
  TempDir tmp;
  build_tree(tmp.path);
  const SnippetIndex index = scan_snippets(options_for(tmp.path));
  REQUIRE(index.snippets.size() == 3);
  const Snippet& a = index.snippets[0];
  CHECK(a.path == "leftImg8bit_sequence/train/aachen");
  CHECK(a.city == "aachen");
  CHECK(a.sequence == 0);
  CHECK(a.start == 0);
  CHECK(a.end == 29);
  CHECK(a.annotation == 19);
  CHECK(a.id() == "aachen_000000_000019");
  CHECK(a.frame_path(tmp.path, 7) == sequence_file(tmp.path, "train", "aachen", 0, 7));
  CHECK(index.snippets[1].sequence == 1);
  const Snippet& b = index.snippets[2];
  CHECK(b.start == 275);
  CHECK(b.end == 304);
  CHECK(b.annotation == 294);
  CHECK(contains(error_of([&] { (void)a.frame_path(tmp.path, 30); }),
                 "frame offset 30 outside 0..29"));

  // Two snippets of one sequence (as frankfurt's): both found.
  add_annotated_snippet(tmp.path, "train", "bochum", 0, 576);
  CHECK(scan_snippets(options_for(tmp.path)).snippets.size() == 4);

  // A frame missing in the middle: named by the snippet's annotated frame.
  fs::remove(sequence_file(tmp.path, "train", "bochum", 0, 560));
  const std::string e = error_of([&] { scan_snippets(options_for(tmp.path)); });
  CHECK(contains(e, sequence_file(tmp.path, "train", "bochum", 0, 576).string() +
                        ": the snippet annotated at 000576 (frames 000557..000586) lacks 1 of its "
                        "30 frames: 000560"));
  // The last frames missing.
  write_frame(sequence_file(tmp.path, "train", "bochum", 0, 560), 560);
  fs::remove(sequence_file(tmp.path, "train", "bochum", 0, 585));
  fs::remove(sequence_file(tmp.path, "train", "bochum", 0, 586));
  CHECK(contains(error_of([&] { scan_snippets(options_for(tmp.path)); }),
                 "lacks 2 of its 30 frames: 000585 000586"));
  CityscapesOptions o = options_for(tmp.path);
  o.skip_incomplete = true;
  const SnippetIndex skipped = scan_snippets(o);
  CHECK(skipped.snippets.size() == 3);
  CHECK(skipped.report.skipped == 1);
}

TEST_CASE("snippets are anchored on the annotated frames: frames annotated-19 .. annotated+10") {
  TempDir tmp;
  build_tree(tmp.path);
  const fs::path& root = tmp.path;
  CityscapesOptions skip = options_for(root);
  skip.skip_incomplete = true;

  SUBCASE("two adjacent snippets in one sequence, frame 0 missing") {
    add_annotated_snippet(root, "train", "cologne", 3, 19);
    add_annotated_snippet(root, "train", "cologne", 3, 49);
    fs::remove(sequence_file(root, "train", "cologne", 3, 0));
    // Not a window 000001..000030 straddling both: the first snippet lacks its frame 000000.
    const std::string e = error_of([&] { scan_snippets(options_for(root)); });
    CHECK_MESSAGE(contains(e, sequence_file(root, "train", "cologne", 3, 19).string() +
                                  ": the snippet annotated at 000019 (frames 000000..000029) lacks "
                                  "1 of its 30 frames: 000000"),
                  e);
    const SnippetIndex index = scan_snippets(skip);
    CHECK(index.report.skipped == 1);
    REQUIRE(index.report.warnings.size() == 1);
    CHECK(contains(index.report.warnings[0], "skipped: "));
    CHECK(contains(index.report.warnings[0], "lacks 1 of its 30 frames: 000000"));
    REQUIRE(index.snippets.size() == 4);
    const Snippet& c = index.snippets[3];
    CHECK(c.city == "cologne");
    CHECK(c.sequence == 3);
    CHECK(c.start == 30);
    CHECK(c.end == 59);
    CHECK(c.annotation == 49);
    CHECK(c.id() == "cologne_000003_000049");
    CHECK(c.frame_path(root, 0) == sequence_file(root, "train", "cologne", 3, 30));
    CHECK(c.frame_path(root, 19) == sequence_file(root, "train", "cologne", 3, 49));
    CHECK(c.frame_path(root, 29) == sequence_file(root, "train", "cologne", 3, 59));
    // The video datasets read the frames of the intact one, start+0 .. start+29.
    skip.use_cache = false;
    FutureFrameDataset ds(skip, plain_video(), FutureFrameOptions{{0, 19}, {29}});
    REQUIRE(ds.size() == 4);
    const Sample s = ds.get(3, 0);
    CHECK(frame_of(s.at("inputs").select(0, 0), kImageNetNormalization).first == frame_code(30));
    CHECK(frame_of(s.at("inputs").select(0, 1), kImageNetNormalization).first == frame_code(49));
    CHECK(frame_of(s.at("targets").select(0, 0), kSymmetricNormalization).first == frame_code(59));
  }
  SUBCASE("an annotated frame other than 19: bochum_000000_000313 is frames 000294..000323") {
    add_annotated_snippet(root, "train", "darmstadt", 0, 313);
    const SnippetIndex index = scan_snippets(options_for(root));
    REQUIRE(index.snippets.size() == 4);
    const Snippet& d = index.snippets[3];
    CHECK(d.city == "darmstadt");
    CHECK(d.start == 294);
    CHECK(d.end == 323);
    CHECK(d.annotation == 313);
    CHECK(index.report.warnings.empty());
  }
  SUBCASE("the missing frames are listed exactly, runs as first..last") {
    for (int f : {275, 280, 281, 282, 283, 285, 286, 304})
      fs::remove(sequence_file(root, "train", "bochum", 0, f));
    CHECK(contains(error_of([&] { scan_snippets(options_for(root)); }),
                   sequence_file(root, "train", "bochum", 0, 294).string() +
                       ": the snippet annotated at 000294 (frames 000275..000304) lacks 8 of its "
                       "30 frames: 000275 000280..000283 000285 000286 000304"));
  }
  SUBCASE("an annotated image without any sequence frame is a problem") {
    add_annotated(root, "train", "aachen", 5, 49);
    add_annotated(root, "train", "hamburg", 0, 19);  // no sequence city folder at all
    CHECK(contains(error_of([&] { scan_snippets(options_for(root)); }),
                   sequence_file(root, "train", "aachen", 5, 49).string() +
                       ": the snippet annotated at 000049 (frames 000030..000059) lacks 30 of its "
                       "30 frames: 000030..000059"));
    const SnippetIndex index = scan_snippets(skip);
    CHECK(index.snippets.size() == 3);
    CHECK(index.report.skipped == 2);
    REQUIRE(index.report.warnings.size() == 2);
    CHECK(contains(index.report.warnings[1],
                   sequence_file(root, "train", "hamburg", 0, 19).string() +
                       ": the snippet annotated at 000019 (frames 000000..000029) lacks 30"));
    // An annotated frame before 000019 has no 30-frame snippet.
    add_annotated(root, "train", "aachen", 6, 5);
    const SnippetIndex more = scan_snippets(skip);
    CHECK(more.report.skipped == 3);
    REQUIRE(more.report.warnings.size() == 3);
    CHECK(contains(more.report.warnings[1],
                   "aachen_000006_000005_leftImg8bit.png: the snippet annotated at 000005 would "
                   "start at frame -14"));
  }
  SUBCASE("frames of no annotated snippet are ignored, one warning per city folder") {
    add_snippet(root, "train", "aachen", 0, 100);                  // 100..129
    write_frame(sequence_file(root, "train", "aachen", 7, 5), 5);  // a lone frame
    add_snippet(root, "train", "erfurt", 0, 0);                    // no annotated image
    // Not an annotated image's name: it anchors nothing (scan_annotated reports it).
    std::ofstream(root / "leftImg8bit" / "train" / "aachen" / "notes.txt") << "x";
    const SnippetIndex index = scan_snippets(options_for(root));
    CHECK(index.snippets.size() == 3);
    CHECK(index.report.skipped == 0);
    REQUIRE(index.report.warnings.size() == 2);
    const fs::path seq = root / "leftImg8bit_sequence" / "train";
    CHECK(index.report.warnings[0] ==
          (seq / "aachen").string() + ": ignored 31 frame(s) outside the snippets of the " +
              "annotated images in " + (root / "leftImg8bit" / "train" / "aachen").string() +
              " (first: aachen_000000_000100_leftImg8bit.png)");
    CHECK(contains(index.report.warnings[1], (seq / "erfurt").string() + ": ignored 30 frame(s)"));
    // Beside a skipped snippet: a dataset's notice names the first skipped one, not the note.
    fs::remove(sequence_file(root, "train", "bochum", 0, 300));
    skip.use_cache = false;
    const std::string notice = stderr_of([&] { TripletDataset ds(skip, plain_video()); });
    CHECK_MESSAGE(contains(notice, "video dataset: skipped 1 incomplete sample(s) in " +
                                       seq.string() + " (first: skipped: " +
                                       sequence_file(root, "train", "bochum", 0, 294).string() +
                                       ": the snippet annotated at 000294"),
                  notice);
  }
}

TEST_CASE(
    "the snippet index is cached as JSON, reused while the tree is unchanged, rebuilt otherwise") {
  TempDir tmp;
  build_tree(tmp.path);
  const CityscapesOptions o = options_for(tmp.path);
  const SnippetIndex first = load_snippet_index(o);
  CHECK_FALSE(first.from_cache);
  CHECK(first.cache_file == root_cache_file(o));
  REQUIRE(fs::is_regular_file(root_cache_file(o)));
  {
    std::ifstream in(root_cache_file(o));
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(contains(text, "\"columns\""));
    CHECK(contains(text, "\"annotation\""));
    CHECK(contains(text, "leftImg8bit_sequence/train/bochum"));
  }
  const SnippetIndex second = load_snippet_index(o);
  CHECK(second.from_cache);
  REQUIRE(second.snippets.size() == first.snippets.size());
  for (size_t i = 0; i < first.snippets.size(); ++i) {
    CHECK(second.snippets[i].path == first.snippets[i].path);
    CHECK(second.snippets[i].city == first.snippets[i].city);
    CHECK(second.snippets[i].start == first.snippets[i].start);
    CHECK(second.snippets[i].annotation == first.snippets[i].annotation);
  }
  // New sequence frames without their annotated image: rebuilt, ignored with a note.
  add_snippet(tmp.path, "train", "bochum", 0, 557);
  const SnippetIndex stray = load_snippet_index(o);
  CHECK_FALSE(stray.from_cache);
  CHECK(stray.snippets.size() == 3);
  REQUIRE(stray.report.warnings.size() == 1);
  CHECK(contains(stray.report.warnings[0], "ignored 30 frame(s)"));
  CHECK(load_snippet_index(o).report.warnings == stray.report.warnings);  // kept in the cache
  // Their annotated image alone (leftImg8bit and gtFine change, not the sequences): rebuilt, a
  // new snippet.
  add_annotated(tmp.path, "train", "bochum", 0, 576);
  const SnippetIndex third = load_snippet_index(o);
  CHECK_FALSE(third.from_cache);
  CHECK(third.snippets.size() == 4);
  CHECK(third.report.warnings.empty());
  CHECK(load_snippet_index(o).from_cache);
  // A new city: rebuilt.
  add_annotated_snippet(tmp.path, "train", "cologne", 2, 119);
  CHECK(load_snippet_index(o).snippets.size() == 5);
  // A frame removed: rebuilt, and the error shows.
  fs::remove(sequence_file(tmp.path, "train", "cologne", 2, 101));
  CHECK(contains(error_of([&] { load_snippet_index(o); }), "lacks 1 of its 30 frames: 000101"));
  write_frame(sequence_file(tmp.path, "train", "cologne", 2, 101), 101);
  // A corrupt cache file is rebuilt, not an error.
  CHECK(load_snippet_index(o).snippets.size() == 5);
  std::ofstream(root_cache_file(o)) << "{ not json";
  const SnippetIndex rebuilt = load_snippet_index(o);
  CHECK_FALSE(rebuilt.from_cache);
  CHECK(rebuilt.snippets.size() == 5);
  // A cache of the previous format version (snippets not anchored on the annotated frames) is
  // rebuilt; the fingerprint covers the annotated image folders.
  auto read_json = [&] {
    std::ifstream in(root_cache_file(o));
    return nlohmann::json::parse(in);
  };
  nlohmann::json j = read_json();
  CHECK(j.at("fingerprint").contains("annotated"));
  CHECK(j.at("fingerprint").contains("sequences"));
  REQUIRE(load_snippet_index(o).from_cache);
  j["version"] = 1;
  std::ofstream(root_cache_file(o)) << j.dump();
  CHECK_FALSE(load_snippet_index(o).from_cache);
  // A row breaking end = start + 29 or annotation = start + 19 makes the file invalid: rebuilt.
  j = read_json();
  j["rows"][0][4] = j["rows"][0][2].get<int>() + 20;
  std::ofstream(root_cache_file(o)) << j.dump();
  const SnippetIndex fixed = load_snippet_index(o);
  CHECK_FALSE(fixed.from_cache);
  CHECK(fixed.snippets[0].annotation == fixed.snippets[0].start + 19);
  // Another option (skip_incomplete) does not reuse the cache.
  CityscapesOptions skip = o;
  skip.skip_incomplete = true;
  CHECK_FALSE(load_snippet_index(skip).from_cache);
  CHECK(load_snippet_index(skip).from_cache);
  CHECK_FALSE(load_snippet_index(o).from_cache);
}

TEST_CASE("the snippet index goes to the cache folder when the root is not writable") {
  TempDir tmp, cache;
  build_tree(tmp.path);
  CityscapesOptions o = options_for(tmp.path);
  o.cache_dir = cache.path;
  // Tests run as root, which may write anywhere: the root's index path is made a folder instead,
  // which no file can be renamed onto.
  fs::create_directories(root_cache_file(o) / "blocker");
  const SnippetIndex first = load_snippet_index(o);
  CHECK_FALSE(first.from_cache);
  CHECK(first.cache_file == fallback_cache_file(o));
  CHECK(first.cache_file.parent_path() == cache.path);
  CHECK(fs::is_regular_file(fallback_cache_file(o)));
  const SnippetIndex second = load_snippet_index(o);
  CHECK(second.from_cache);
  CHECK(second.snippets.size() == 3);
  // Without a cache folder: scanned every time, with a warning, not an error.
  o.cache_dir.clear();
  const SnippetIndex third = load_snippet_index(o);
  CHECK_FALSE(third.from_cache);
  CHECK(third.snippets.size() == 3);
  REQUIRE(third.report.warnings.size() == 1);
  CHECK(contains(third.report.warnings[0], "could not be cached"));
}

TEST_CASE("segmentation dataset: hand-checked pixels and labels") {
  TempDir tmp;
  build_tree(tmp.path);
  SegmentationOptions so;
  so.resize = ResizeOptions{1, 0, 0, Interp::area};
  so.norm = kCityscapesNormalization;
  SegmentationDataset ds(options_for(tmp.path), so);
  REQUIRE(ds.size() == 3);
  CHECK(ds.describe(2) == image_file(tmp.path, "train", "bochum", 0, 294).string());
  const Sample s = ds.get(2, 0);
  CHECK(s.id == "bochum_000000_000294");
  const Tensor& image = s.at("image");
  const Tensor& label = s.at("label");
  CHECK(image.sizes() == Shape{3, kH, kW});
  CHECK(image.dtype() == DType::f32);
  CHECK(label.sizes() == Shape{kH, kW});
  CHECK(label.dtype() == DType::i32);
  CHECK(contains(error_of([&] { (void)s.at("mask"); }), "no tensor 'mask' (it has: image, label)"));
  const std::vector<float> v = to_vector<float>(image);
  const std::vector<int32_t> l = to_vector<int32_t>(label);
  for (int y = 0; y < kH; ++y)
    for (int x = 0; x < kW; ++x) {
      const auto p = pixel(294, x, y);
      for (int c = 0; c < 3; ++c) {
        const float expected =
            (p[static_cast<size_t>(c)] / 255.0f - so.norm.mean[static_cast<size_t>(c)]) /
            so.norm.std[static_cast<size_t>(c)];
        REQUIRE(std::abs(v[(static_cast<size_t>(c) * kH + y) * kW + x] - expected) <= kNormTol);
      }
      REQUIRE(l[static_cast<size_t>(y) * kW + x] == train_id_of(label_id_at(x, y)));
    }
  // By hand: pixel (0, 0) has labelId 0 -> 255; (7, 0) labelId 7 (road) -> 0; (1, 5) labelId 11
  // (building) -> 2.
  CHECK(l[0] == 255);
  CHECK(l[7] == 0);
  CHECK(l[5 * kW + 1] == 2);

  // labelTrainIds give the same labels.
  CityscapesOptions tid = options_for(tmp.path);
  tid.labels = LabelSource::train_ids;
  CHECK(to_vector<int32_t>(SegmentationDataset(tid, so).get(2, 0).at("label")) == l);

  // 2x downsampling (area): the mean of each 2x2 block; labels: nearest at the centre, that is
  // pixel (2x+1, 2y+1).
  so.resize.downsample = 2;
  const Sample half = SegmentationDataset(options_for(tmp.path), so).get(0, 0);
  CHECK(half.at("image").sizes() == Shape{3, kH / 2, kW / 2});
  const std::vector<float> hv = to_vector<float>(half.at("image"));
  const std::vector<int32_t> hl = to_vector<int32_t>(half.at("label"));
  // R at (1, 1): frame 19: mean of (190+2, 190+3, 190+2, 190+3) = 192.5 -> 193 (rounded half up).
  CHECK(std::lround(denorm(hv, kH / 2, kW / 2, 0, 1, 1, so.norm)) == 193);
  // G at (1, 1): rows 2 and 3: mean(6, 6, 9, 9) = 7.5 -> 8.
  CHECK(std::lround(denorm(hv, kH / 2, kW / 2, 1, 1, 1, so.norm)) == 8);
  CHECK(hl[static_cast<size_t>(1) * (kW / 2) + 1] == train_id_of(label_id_at(3, 3)));
}

TEST_CASE("segmentation dataset: flip, random scale, crop with padding, determinism") {
  TempDir tmp;
  build_tree(tmp.path);
  SegmentationOptions so;
  so.resize = ResizeOptions{1, 0, 0, Interp::area};
  so.flip = true;
  so.seed = 7;
  SegmentationDataset ds(options_for(tmp.path), so);
  // Over epochs, a sample comes flipped and not; a flipped one mirrors image and label together.
  int flipped = 0, plain = 0;
  for (uint64_t epoch = 0; epoch < 16; ++epoch) {
    const Sample s = ds.get(0, epoch);
    const std::vector<float> v = to_vector<float>(s.at("image"));
    const std::vector<int32_t> l = to_vector<int32_t>(s.at("label"));
    const int r0 = static_cast<int>(std::lround(denorm(v, kH, kW, 0, 0, 0, so.norm)));
    const bool f = r0 == (190 + kW - 1) % 256;
    (f ? flipped : plain)++;
    for (int y = 0; y < kH; ++y)
      for (int x = 0; x < kW; ++x)
        REQUIRE(l[static_cast<size_t>(y) * kW + x] ==
                train_id_of(label_id_at(f ? kW - 1 - x : x, y)));
  }
  CHECK(flipped > 0);
  CHECK(plain > 0);

  // Same (seed, epoch, index): the same sample, whatever was asked before.
  CHECK(to_vector<float>(ds.get(1, 3).at("image")) == to_vector<float>(ds.get(1, 3).at("image")));

  // Crop larger than the image: padded bottom/right with 0 (image) and 255 (label).
  so.flip = false;
  so.crop_h = kH + 4;
  so.crop_w = kW + 2;
  SegmentationDataset padded(options_for(tmp.path), so);
  const Sample p = padded.get(0, 0);
  CHECK(p.at("image").sizes() == Shape{3, kH + 4, kW + 2});
  const std::vector<float> pv = to_vector<float>(p.at("image"));
  const std::vector<int32_t> pl = to_vector<int32_t>(p.at("label"));
  const int pw = kW + 2, ph = kH + 4;
  for (int y = 0; y < ph; ++y)
    for (int x = 0; x < pw; ++x) {
      const bool inside = y < kH && x < kW;
      if (!inside) {
        for (int c = 0; c < 3; ++c) REQUIRE(pv[(static_cast<size_t>(c) * ph + y) * pw + x] == 0.0f);
        REQUIRE(pl[static_cast<size_t>(y) * pw + x] == 255);
      } else {
        REQUIRE(pl[static_cast<size_t>(y) * pw + x] == train_id_of(label_id_at(x, y)));
      }
    }
  // A smaller crop: a window of the image at an offset within range.
  so.crop_h = 4;
  so.crop_w = 4;
  SegmentationDataset cropped(options_for(tmp.path), so);
  std::set<int> lefts;
  for (uint64_t epoch = 0; epoch < 20; ++epoch) {
    const Sample c = cropped.get(0, epoch);
    CHECK(c.at("image").sizes() == Shape{3, 4, 4});
    const std::vector<float> cv = to_vector<float>(c.at("image"));
    const int left = static_cast<int>(std::lround(denorm(cv, 4, 4, 0, 0, 0, so.norm))) - 190;
    const int top = static_cast<int>(std::lround(denorm(cv, 4, 4, 1, 0, 0, so.norm))) / 3;
    REQUIRE(left >= 0);
    REQUIRE(left <= kW - 4);
    REQUIRE(top >= 0);
    REQUIRE(top <= kH - 4);
    lefts.insert(left);
  }
  CHECK(lefts.size() > 3);
  // Random scale in [0.5, 2]: sizes vary within the range, labels stay valid trainIds.
  so.crop_h = so.crop_w = 0;
  so.scale_min = 0.5f;
  so.scale_max = 2.0f;
  SegmentationDataset scaled(options_for(tmp.path), so);
  std::set<int64_t> widths;
  for (uint64_t epoch = 0; epoch < 12; ++epoch) {
    const Sample s = scaled.get(0, epoch);
    const int64_t w = s.at("image").size(2);
    CHECK(w >= kW / 2);
    CHECK(w <= kW * 2);
    CHECK(s.at("label").size(1) == w);
    for (int32_t v : to_vector<int32_t>(s.at("label"))) REQUIRE((v < kNumTrainClasses || v == 255));
    widths.insert(w);
  }
  CHECK(widths.size() > 3);
  CHECK(contains(error_of([&] {
                   SegmentationOptions bad;
                   bad.scale_min = 0;
                   SegmentationDataset(options_for(tmp.path), bad);
                 }),
                 "invalid random scale range"));
}

TEST_CASE(
    "segmentation dataset: a label value outside the table is an error naming the file and value") {
  TempDir tmp;
  build_tree(tmp.path);
  const fs::path lf = label_file(tmp.path, "train", "aachen", 1, 19);
  std::vector<uint8_t> v(static_cast<size_t>(kW) * kH, 7);
  v[static_cast<size_t>(3) * kW + 5] = 40;
  write_png_grey8(lf, kW, kH, v.data());
  SegmentationDataset ds(options_for(tmp.path), SegmentationOptions{});
  CHECK(contains(error_of([&] { ds.get(1, 0); }),
                 lf.string() + ": value 40 at (x=5, y=3) is not a Cityscapes labelId (0..33)"));
  // A label of another size than its image.
  write_labels(lf, kW, kH + 1);
  CHECK(error_of([&] { ds.get(1, 0); }) ==
        lf.string() + ": the PNG is 16x9 but its image " +
            image_file(tmp.path, "train", "aachen", 1, 19).string() +
            " is 16x8 (from its header, before decoding)");
  // A truncated image: png.h's error names the file.
  const fs::path img = image_file(tmp.path, "train", "aachen", 0, 19);
  fs::resize_file(img, 40);
  CHECK(contains(error_of([&] { ds.get(0, 0); }), img.string()));
}

TEST_CASE("segmentation dataset: a label declaring a huge size is refused before it is decoded") {
  TempDir tmp;
  build_tree(tmp.path);
  // About 1 MB on disk, 32768x32768 in its header (1 GiB as 8-bit grey, and 20 s to decode when the
  // data is complete): the size is checked against its image's from the header alone.
  const fs::path lf = label_file(tmp.path, "train", "aachen", 1, 19);
  write_bytes(lf, png_file(32768, 32768, 8, 0, std::vector<unsigned char>(1 << 20, 0)));
  SegmentationDataset ds(options_for(tmp.path), SegmentationOptions{});
  const auto start = std::chrono::steady_clock::now();
  CHECK(error_of([&] { ds.get(1, 0); }) ==
        lf.string() + ": the PNG is 32768x32768 but its image " +
            image_file(tmp.path, "train", "aachen", 1, 19).string() +
            " is 16x8 (from its header, before decoding)");
  // Reading the 1 MB and checking its CRCs take milliseconds, decoding the declared size seconds:
  // a bound far above the first (a loaded machine) and below the second.
  constexpr auto kHeaderCheckBound = std::chrono::seconds(1);
  CHECK(std::chrono::steady_clock::now() - start < kHeaderCheckBound);
  // An image over the configured pixel limit is refused the same way.
  CityscapesOptions small = options_for(tmp.path);
  small.max_png_pixels = kW * kH - 1;
  SegmentationDataset limited(small, SegmentationOptions{});
  CHECK(contains(error_of([&] { limited.get(0, 0); }),
                 image_file(tmp.path, "train", "aachen", 0, 19).string() +
                     ": the PNG is 16x8 (128 pixels), more than the limit of 127 pixels"));
  CHECK(contains(error_of([&] { TripletDataset(small, plain_video()).get(0, 0); }),
                 "(128 pixels), more than the limit of 127 pixels"));
}

TEST_CASE("triplet dataset: anchor, positive within k, negative beyond m, independent flips") {
  TempDir tmp;
  build_tree(tmp.path);
  TripletDataset ds(options_for(tmp.path), plain_video(3));
  REQUIRE(ds.size() == 3);
  // The choice rule, over many draws.
  std::set<int> anchors;
  for (uint64_t i = 0; i < 3000; ++i) {
    SampleRandom rng(5, 0, i);
    const auto [a, p, n] = ds.pick(rng);
    REQUIRE(a >= 0);
    REQUIRE(a < 30);
    REQUIRE(std::abs(p - a) >= 1);
    REQUIRE(std::abs(p - a) <= 3);
    REQUIRE(p >= 0);
    REQUIRE(p < 30);
    REQUIRE(std::abs(n - a) >= 10);
    REQUIRE(n >= 0);
    REQUIRE(n < 30);
    anchors.insert(a);
  }
  CHECK(anchors.size() == 30);
  // Decoded frames are the ones named in "frames", each flipped or not on its own.
  int mixed = 0;
  for (uint64_t epoch = 0; epoch < 8; ++epoch) {
    const Sample s = ds.get(2, epoch);  // bochum, frames 275..304
    const std::vector<int32_t> offsets = to_vector<int32_t>(s.at("frames"));
    std::set<bool> flips;
    const char* names[3] = {"anchor", "positive", "negative"};
    for (int k = 0; k < 3; ++k) {
      CHECK(s.at(names[k]).sizes() == Shape{3, kH, kW});
      const auto [frame, flipped] = frame_of(s.at(names[k]), kImageNetNormalization);
      CHECK(frame == frame_code(275 + offsets[static_cast<size_t>(k)]));
      flips.insert(flipped);
    }
    mixed += flips.size() == 2;
  }
  CHECK(mixed > 0);
  CHECK(contains(error_of([&] {
                   TripletDataset(options_for(tmp.path), plain_video(), TripletOptions{3, 16});
                 }),
                 "so that every anchor has a negative"));
}

TEST_CASE(
    "frame order dataset: frames start+8, +10, +12 in one of 6 permutations (or 4 frames, 24)") {
  TempDir tmp;
  build_tree(tmp.path);
  FrameOrderDataset ds(options_for(tmp.path), plain_video(4));
  CHECK(ds.num_classes() == 6);
  CHECK(ds.permutation(0) == std::vector<int>{0, 1, 2});
  CHECK(ds.permutation(5) == std::vector<int>{2, 1, 0});
  std::set<int> labels;
  for (uint64_t epoch = 0; epoch < 24; ++epoch) {
    const Sample s = ds.get(1, epoch);
    const Tensor& frames = s.at("frames");
    REQUIRE(frames.sizes() == Shape{3, 3, kH, kW});
    CHECK(s.at("label").dim() == 0);
    const int label = s.at("label").item<int>();
    labels.insert(label);
    const std::vector<int>& perm = ds.permutation(label);
    std::set<bool> flips;
    for (int k = 0; k < 3; ++k) {
      const auto [frame, flipped] = frame_of(frames.select(0, k), kImageNetNormalization);
      CHECK(frame ==
            std::vector<int>{8, 10, 12}[static_cast<size_t>(perm[static_cast<size_t>(k)])]);
      CHECK(to_vector<int32_t>(s.at("order"))[static_cast<size_t>(k)] == frame);
      flips.insert(flipped);
    }
    CHECK(flips.size() == 1);  // one flip for all frames of a sample
  }
  CHECK(labels.size() == 6);
  FrameOrderDataset four(options_for(tmp.path), plain_video(), FrameOrderOptions{{8, 10, 12, 14}});
  CHECK(four.num_classes() == 24);
  CHECK(four.get(0, 0).at("frames").sizes() == Shape{4, 3, kH, kW});
  CHECK(contains(
      error_of([&] {
        FrameOrderDataset(options_for(tmp.path), plain_video(), FrameOrderOptions{{8, 10}});
      }),
      "2 frames given, 3 or 4 expected"));
  CHECK(contains(
      error_of([&] {
        FrameOrderDataset(options_for(tmp.path), plain_video(), FrameOrderOptions{{8, 10, 30}});
      }),
      "frame offset 30 outside the snippet"));
}

TEST_CASE(
    "colorization dataset: grey inputs and Lab of references start+0, +4, +8 and target +12") {
  TempDir tmp;
  build_tree(tmp.path);
  VideoOptions vo = plain_video(5);
  vo.flip = false;
  ColorizationDataset ds(options_for(tmp.path), vo);
  const Sample s = ds.get(2, 0);  // bochum, start 275
  const Tensor& lab = s.at("lab");
  const Tensor& grey = s.at("grey");
  REQUIRE(lab.sizes() == Shape{4, 3, kH, kW});
  REQUIRE(grey.sizes() == Shape{4, 1, kH, kW});
  const std::vector<float> lv = to_vector<float>(lab), gv = to_vector<float>(grey);
  const int offsets[4] = {0, 4, 8, 12};
  const size_t plane = static_cast<size_t>(kH) * kW;
  for (int t = 0; t < 4; ++t)
    for (int y = 0; y < kH; y += 3)
      for (int x = 0; x < kW; x += 5) {
        const auto p = pixel(275 + offsets[t], x, y);
        const std::array<float, 3> e = rgb_to_lab({p[0] / 255.0f, p[1] / 255.0f, p[2] / 255.0f});
        for (int c = 0; c < 3; ++c)
          REQUIRE(
              std::abs(
                  lv[(static_cast<size_t>(t) * 3 + c) * plane + static_cast<size_t>(y) * kW + x] -
                  e[c]) <= kLabTol);
        REQUIRE(std::abs(gv[static_cast<size_t>(t) * plane + static_cast<size_t>(y) * kW + x] -
                         (e[0] / 50.0f - 1.0f)) <= 1e-4f);
      }
}

TEST_CASE("future frame dataset: inputs start+0, +2, +4, targets +6, +8, +10, configurable") {
  TempDir tmp;
  build_tree(tmp.path);
  VideoOptions vo = plain_video(6);  // inputs normalised with ImageNet's statistics
  FutureFrameDataset ds(options_for(tmp.path), vo);
  const Sample s = ds.get(0, 1);
  REQUIRE(s.at("inputs").sizes() == Shape{3, 3, kH, kW});
  REQUIRE(s.at("targets").sizes() == Shape{3, 3, kH, kW});
  for (int k = 0; k < 3; ++k) {
    CHECK(frame_of(s.at("inputs").select(0, k), kImageNetNormalization).first == 2 * k);
    CHECK(frame_of(s.at("targets").select(0, k), kSymmetricNormalization).first == 6 + 2 * k);
  }
  vo.norm = kSymmetricNormalization;
  for (float v : to_vector<float>(s.at("targets"))) REQUIRE((v >= -1.0f && v <= 1.0f));
  FutureFrameDataset other(options_for(tmp.path), vo, FutureFrameOptions{{1, 5}, {9}});
  const Sample o = other.get(0, 0);
  CHECK(o.at("inputs").size(0) == 2);
  CHECK(frame_of(o.at("inputs").select(0, 1), vo.norm).first == 5);
  CHECK(frame_of(o.at("targets").select(0, 0), vo.norm).first == 9);
  // The default pretext size: 128x256 from any source size.
  VideoOptions sized = vo;
  sized.resize = VideoOptions{}.resize;
  CHECK(FutureFrameDataset(options_for(tmp.path), sized).get(0, 0).at("inputs").sizes() ==
        Shape{3, 3, 128, 256});
  // A missing frame file at read time names the file.
  fs::remove(sequence_file(tmp.path, "train", "aachen", 0, 4));
  CHECK(contains(error_of([&] { ds.get(0, 0); }),
                 sequence_file(tmp.path, "train", "aachen", 0, 4).string()));
}
