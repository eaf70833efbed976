// A synthetic Cityscapes: procedural street scenes written in exactly the layout and naming of the
// real dataset, so that every app runs end to end on a machine without Cityscapes.
//
//   leftImg8bit/{split}/{city}/{city}_{seq:06}_{a:06}_leftImg8bit.png          (RGB)
//   gtFine/{split}/{city}/{city}_{seq:06}_{a:06}_gtFine_labelIds.png           (8-bit labelIds)
//   gtFine/{split}/{city}/{city}_{seq:06}_{a:06}_gtFine_labelTrainIds.png      (8-bit trainIds, 255 ignored)
//   gtFine/{split}/{city}/{city}_{seq:06}_{a:06}_gtFine_color.png              (RGB; the real ones are RGBA)
//   leftImg8bit_sequence/{split}/{city}/{city}_{seq:06}_{frame:06}_leftImg8bit.png, frame a-19..a+10
//
// The annotated frame a is 000019, 000049 or 000313: within a city the images are grouped three per
// sequence number, annotated at 000019 (snippet 000000..000029), 000049 (000030..000059, adjacent to
// the first) and 000313 (000294..000323), as the real dataset's sequences have annotated frames other
// than 19 and several snippets each; a city with fewer images uses the first ones. The annotated
// image is the 20th frame (offset 19) of its snippet, byte for byte. Every image is a function of
// (seed, split, image index, width, height) and its frame offset 0..29 only: the thread count and
// the order of work never change a byte. Design notes on the scenes and the renderer are atop
// data/synthetic_cityscapes.cpp.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "data/cityscapes.h"
#include "data/labels.h"

namespace seg::data {

// Splits (Split, split_name), the snippet length (kSnippetLength = 30) and the annotated frame
// (kAnnotatedFrameOffset = 19) are those of data/cityscapes.h, the reader of the real tree.
constexpr int kNumSplits = 3;      // Split::train, Split::val, Split::test
constexpr float kSnippetFps = 17.0f;  // Cityscapes' frame rate: snippet frames are 1/17 s apart

// The real dataset's cities of a split, in alphabetical order; the generator uses the first few.
const std::vector<std::string_view>& cityscapes_cities(Split split);
constexpr int kSyntheticMaxWidth = 2048, kSyntheticMaxHeight = 1024;
constexpr int kSyntheticMinWidth = 16, kSyntheticMinHeight = 8;

struct SyntheticOptions {
  std::filesystem::path out_dir;   // the dataset root (created if missing)
  int width = 256, height = 128;   // even, at most 2048x1024
  int num_train = 6, num_val = 3, num_test = 0;
  uint64_t seed = 0;
  int threads = 0;                 // worker threads; 0: one per hardware thread
  bool sequences = true;           // also write leftImg8bit_sequence (30 frames per image)
};

// Throws seg::Error naming the option and the problem (size not even or too large, negative
// counts, nothing to write, no output directory, ...).
void validate_synthetic_options(const SyntheticOptions& options);

struct SyntheticSummary {
  std::array<int, kNumSplits> images{};  // annotated images per split
  std::array<int, kNumSplits> cities{};  // cities used per split
  int64_t files = 0;                               // PNG files written
  int64_t bytes = 0;                               // their total size
  double seconds = 0;                              // wall time
  int threads = 0;                                 // worker threads used
  std::array<int64_t, kNumLabelIds> label_pixels{};  // labelId histogram over the annotated frames
};

// Called after each finished image (serialised by the writer: no locking needed in the callback).
using SyntheticProgress = std::function<void(int64_t done, int64_t total)>;

// Writes the whole tree (existing files of the same names are replaced, atomically per file).
SyntheticSummary write_synthetic_cityscapes(const SyntheticOptions& options,
                                            const SyntheticProgress& progress = {});

// The annotated frames of a synthetic sequence, in the order its images take them.
constexpr std::array<int, 3> kSyntheticAnnotatedFrames = {19, 49, 313};

// The city, sequence number and annotated frame of image `index` of a split of `count` images: the
// images are dealt to min(#cities, count, 3 + count / 200) cities in contiguous blocks; image k of a
// city (k = 0, 1, ...) has sequence k / 3 and annotated frame kSyntheticAnnotatedFrames[k % 3].
struct SyntheticImageId {
  std::string_view city;
  int sequence = 0;
  int frame = kAnnotatedFrameOffset;  // the annotated frame; its snippet is frame - 19 .. frame + 10
};
SyntheticImageId synthetic_image_id(Split split, int index, int count);
int synthetic_num_cities(Split split, int count);

// One rendered frame in memory (what the writer encodes).
struct SyntheticFrame {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;        // (height, width, 3)
  std::vector<uint8_t> label_ids;  // (height, width), Cityscapes labelIds
};

// Renders the given frames (offsets 0..29; 19 is the annotated one) of the snippet of image `index`
// of `split`: the same pixels the writer produces for that image, without touching the disk.
std::vector<SyntheticFrame> render_synthetic_snippet(uint64_t seed, Split split, int index, int width,
                                                     int height, const std::vector<int>& frames);

// The command line of apps/make_synthetic_cityscapes (arguments after the program name).
struct SyntheticCommandLine {
  SyntheticOptions options;
  bool help = false;  // --help / -h: print the usage and exit
};
// Throws seg::Error for an unknown option, a missing or non-numeric value, an option given twice,
// a positional argument, or options that validate_synthetic_options rejects.
SyntheticCommandLine parse_synthetic_cityscapes_args(const std::vector<std::string>& args);
std::string synthetic_cityscapes_usage();

}  // namespace seg::data
