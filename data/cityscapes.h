// Cityscapes on disk: scanning a root into annotated samples (leftImg8bit + gtFine) and 30-frame
// video snippets (leftImg8bit_sequence), with a cached snippet index.
//
// Design notes
// - Scanning lists folders and parses file names; it never opens a PNG. Every problem names the
//   file or folder: a missing root or split folder, an image without its label or a label without
//   its image, an empty city folder, a snippet with missing frames, a file name that does not
//   parse. With `skip_incomplete` the incomplete samples are left out instead and counted in the
//   report's warnings (the structural errors, a missing root or split folder, stay errors).
// - Snippets are anchored on the annotated frames, as Cityscapes defines them: each annotated image
//   leftImg8bit/{split}/{city}/{city}_{seq}_{a}_leftImg8bit.png is the 20th frame of its snippet,
//   frames a - 19 .. a + 10 of leftImg8bit_sequence/{split}/{city}/{city}_{seq}_*. Frame numbers
//   are absolute (aachen_000000_000019: frames 000000..000029; bochum_000000_000313: frames
//   000294..000323); a sequence may hold several snippets (frankfurt's), adjacent or not. The real
//   sequences carry no other marker of the annotated frame, so leftImg8bit/{split} is required
//   (its absence is an error naming it); only its file names are read. A snippet missing frames
//   (or all of them) is a problem naming the snippet by its annotated frame and listing exactly
//   the missing frame numbers. Frames of a sequence folder outside every annotated snippet are
//   ignored, counted in one warning per city folder. Image names in leftImg8bit that do not parse
//   anchor nothing here (scan_annotated reports them).
// - The snippet index has the study's columns (path, sequence, start, end, annotation), path being
//   the city folder relative to the root. It is cached as JSON, in the root when writable, else in
//   `cache_dir`, under a fingerprint of the sequence and annotated image split folders (for each,
//   its mtime, and each city folder's name, mtime and entry count: one stat and one directory
//   listing per city, no file is opened or stat'ed). The cache is reused when the fingerprint,
//   format version and options match, rebuilt otherwise.
// - Hidden files (names starting with '.') are ignored everywhere; in gtFine, files other than the
//   configured label kind (color, instanceIds, polygons) are ignored.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "data/png.h"

namespace seg::data {

enum class Split { train, val, test };
const char* split_name(Split split);
Split parse_split(const std::string& name);  // "train", "val", "test"; anything else is an error

constexpr int kSnippetLength = 30;
constexpr int kAnnotatedFrameOffset = 19;

// A parsed "{city}_{seq:06}_{frame:06}{suffix}" file name.
struct FrameName {
  std::string city;
  int sequence = 0;
  int frame = 0;
};
// False when `file_name` is not "{city}_{6 digits}_{6 digits}{suffix}".
bool parse_frame_name(const std::string& file_name, const std::string& suffix, FrameName& out);
// "aachen_000000_000019"
std::string frame_stem(const std::string& city, int sequence, int frame);

// Where labels come from: *_gtFine_labelIds.png mapped through the label table (the default), or
// the *_gtFine_labelTrainIds.png files written by cityscapesScripts' createTrainIdLabelImgs.
enum class LabelSource { label_ids, train_ids };
// "_gtFine_labelIds.png" or "_gtFine_labelTrainIds.png"
const char* label_suffix(LabelSource source);

struct CityscapesOptions {
  std::filesystem::path root;
  Split split = Split::train;
  LabelSource labels = LabelSource::label_ids;
  bool skip_incomplete = false;     // leave incomplete samples out (counted warnings), not an error
  std::filesystem::path cache_dir;  // for the snippet index when the root is not writable
  bool use_cache = true;            // false: always scan, never read or write the index file
  // The largest image or label (width x height) the datasets decode; a PNG whose header declares
  // more is an error naming the file, before it is decoded.
  int64_t max_png_pixels = kDefaultMaxPngPixels;
};

// The split folders: root/leftImg8bit/{split} (images), root/gtFine/{split} (labels),
// root/leftImg8bit_sequence/{split} (video frames).
std::filesystem::path image_split_dir(const CityscapesOptions& options);
std::filesystem::path label_split_dir(const CityscapesOptions& options);
std::filesystem::path sequence_split_dir(const CityscapesOptions& options);

// Samples left out (skip_incomplete) and other non-fatal notes, one line each.
struct ScanReport {
  int64_t skipped = 0;
  std::vector<std::string> warnings;
};

struct AnnotatedSample {
  std::string city;
  int sequence = 0;
  int frame = 0;
  std::filesystem::path image;  // leftImg8bit/{split}/{city}/..._leftImg8bit.png
  std::filesystem::path label;  // gtFine/{split}/{city}/..._gtFine_labelIds.png (or labelTrainIds)
  std::string id() const { return frame_stem(city, sequence, frame); }
};

struct AnnotatedSet {
  std::vector<AnnotatedSample> samples;  // sorted by city, sequence, frame
  ScanReport report;
};

// Pairs every leftImg8bit image of the split with its gtFine label.
AnnotatedSet scan_annotated(const CityscapesOptions& options);

struct Snippet {
  std::string path;  // the city folder relative to the root: "leftImg8bit_sequence/train/aachen"
  std::string city;
  int sequence = 0;
  int start = 0;       // first frame number
  int end = 0;         // last frame number (start + 29)
  int annotation = 0;  // the annotated frame (start + 19)
  // The file of frame start + offset (offset 0..29).
  std::filesystem::path frame_path(const std::filesystem::path& root, int offset) const;
  std::string id() const { return frame_stem(city, sequence, annotation); }
};

struct SnippetIndex {
  std::vector<Snippet> snippets;  // sorted by city, sequence, start
  ScanReport report;
  std::filesystem::path cache_file;  // the index file read or written; empty when none
  bool from_cache = false;           // true when read from a valid cache file
};

// Scans leftImg8bit_sequence/{split} for the snippets of the annotated images of
// leftImg8bit/{split} (no cache).
SnippetIndex scan_snippets(const CityscapesOptions& options);
// The snippet index, from the cache when it is still valid, else scanned (and the cache rewritten).
SnippetIndex load_snippet_index(const CityscapesOptions& options);
// The cache file for a root that is not writable:
// cache_dir / "segtrain_snippets_{split}_{hash of the root}.json".
std::filesystem::path fallback_cache_file(const CityscapesOptions& options);
// The cache file in the root: root / "segtrain_snippets_{split}.json".
std::filesystem::path root_cache_file(const CityscapesOptions& options);

}  // namespace seg::data
