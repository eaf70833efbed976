#include "data/cityscapes.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <system_error>
#include <tuple>

#include "engine/error.h"

namespace seg::data {

namespace fs = std::filesystem;

namespace {

constexpr const char* kImageSuffix = "_leftImg8bit.png";
constexpr const char* kIndexFormat = "segtrain-cityscapes-snippets";
constexpr int kIndexVersion = 2;  // 2: snippets anchored on the annotated frames

bool is_hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string join_ints(const std::vector<int>& v, size_t max_items) {
  std::ostringstream os;
  for (size_t i = 0; i < v.size() && i < max_items; ++i) {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "%06d", v[i]);
    os << (i ? " " : "") << buf;
  }
  if (v.size() > max_items) os << " ... (" << v.size() << " in all)";
  return os.str();
}

// Frame numbers, ascending, with runs of three or more as "first..last":
// "000000 000005..000009 000011".
std::string join_runs(const std::vector<int>& v) {
  std::ostringstream os;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
    os << (i ? " " : "");
    if (j - i >= 2) {
      os << join_ints({v[i]}, 1) << ".." << join_ints({v[j]}, 1);
    } else {
      for (size_t k = i; k <= j; ++k) os << (k > i ? " " : "") << join_ints({v[k]}, 1);
    }
    i = j + 1;
  }
  return os.str();
}

void check_folder(const fs::path& dir, const char* what) {
  std::error_code ec;
  SEG_CHECK(fs::is_directory(dir, ec), "cityscapes: ", dir.string(), ": missing ", what, " folder");
}

void check_root(const CityscapesOptions& options) {
  SEG_CHECK(!options.root.empty(), "cityscapes: no root folder given");
  std::error_code ec;
  SEG_CHECK(fs::exists(options.root, ec), "cityscapes: root ", options.root.string(),
            " does not exist");
  SEG_CHECK(fs::is_directory(options.root, ec), "cityscapes: root ", options.root.string(),
            " is not a folder");
}

// The snippets are anchored on the annotated images: leftImg8bit/{split} must exist.
void check_annotated_folder(const CityscapesOptions& options) {
  std::error_code ec;
  const fs::path dir = image_split_dir(options);
  SEG_CHECK(fs::is_directory(dir, ec), "cityscapes: ", dir.string(),
            ": missing annotated image folder, needed for the snippets of ",
            sequence_split_dir(options).string(), " (a snippet is the ", kSnippetLength,
            " frames of a sequence around an annotated image, which is its ",
            kAnnotatedFrameOffset + 1, "th)");
}

// The sub-folders of `dir`, sorted by name (hidden ones ignored). Plain files beside the city
// folders are ignored too.
std::vector<std::string> list_subfolders(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    if (is_hidden(e.path())) continue;
    std::error_code ec2;
    if (e.is_directory(ec2)) names.push_back(e.path().filename().string());
  }
  SEG_CHECK(!ec, "cityscapes: ", dir.string(), ": cannot list (", ec.message(), ")");
  std::sort(names.begin(), names.end());
  return names;
}

// The file names in `dir` (hidden ones ignored), sorted.
std::vector<std::string> list_files(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    if (is_hidden(e.path())) continue;
    names.push_back(e.path().filename().string());
  }
  SEG_CHECK(!ec, "cityscapes: ", dir.string(), ": cannot list (", ec.message(), ")");
  std::sort(names.begin(), names.end());
  return names;
}

// Records a problem: an error, or with skip_incomplete a counted warning.
void problem(const CityscapesOptions& options, ScanReport& report, const std::string& message) {
  SEG_CHECK(options.skip_incomplete, "cityscapes: ", message);
  ++report.skipped;
  report.warnings.push_back("skipped: " + message);
}

using FrameKey = std::tuple<int, int>;  // (sequence, frame)

// Parses every file of a city folder with `suffix`; names that do not parse are problems.
std::map<FrameKey, std::string> parse_city_files(const CityscapesOptions& options,
                                                 ScanReport& report, const fs::path& dir,
                                                 const std::string& city,
                                                 const std::vector<std::string>& files,
                                                 const std::string& suffix) {
  std::map<FrameKey, std::string> out;
  for (const std::string& f : files) {
    FrameName name;
    if (!parse_frame_name(f, suffix, name)) {
      problem(
          options, report,
          (dir / f).string() + ": file name does not parse as {city}_{seq:06}_{frame:06}" + suffix);
      continue;
    }
    if (name.city != city) {
      problem(options, report,
              (dir / f).string() + ": file name names city '" + name.city +
                  "' but lies in folder '" + city + "'");
      continue;
    }
    out[{name.sequence, name.frame}] = f;
  }
  return out;
}

int64_t mtime_ns(const fs::path& p) {
  std::error_code ec;
  const fs::file_time_type t = fs::last_write_time(p, ec);
  if (ec) return -1;
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// The cheap fingerprint of a split folder: its mtime, and per city folder name, mtime and entry
// count (a directory listing, no stat per file).
nlohmann::json fingerprint(const fs::path& split_dir) {
  nlohmann::json cities = nlohmann::json::array();
  for (const std::string& city : list_subfolders(split_dir)) {
    const fs::path dir = split_dir / city;
    int64_t entries = 0;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) ++entries;
    cities.push_back({{"name", city}, {"mtime_ns", mtime_ns(dir)}, {"entries", entries}});
  }
  return {{"mtime_ns", mtime_ns(split_dir)}, {"cities", cities}};
}

nlohmann::json index_to_json(const SnippetIndex& index, const CityscapesOptions& options,
                             const nlohmann::json& print) {
  nlohmann::json rows = nlohmann::json::array();
  for (const Snippet& s : index.snippets)
    rows.push_back({s.path, s.sequence, s.start, s.end, s.annotation});
  return {{"format", kIndexFormat},
          {"version", kIndexVersion},
          {"split", split_name(options.split)},
          {"skip_incomplete", options.skip_incomplete},
          {"fingerprint", print},
          {"skipped", index.report.skipped},
          {"warnings", index.report.warnings},
          {"columns", {"path", "sequence", "start", "end", "annotation"}},
          {"rows", rows}};
}

// Reads a cache file; false when it is missing, unreadable, of another format or stale.
bool read_cache(const fs::path& file, const CityscapesOptions& options, const nlohmann::json& print,
                SnippetIndex& out) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) return false;
  try {
    std::ifstream in(file);
    if (!in.good()) return false;
    nlohmann::json j = nlohmann::json::parse(in);
    if (j.value("format", "") != kIndexFormat || j.value("version", 0) != kIndexVersion)
      return false;
    if (j.at("split").get<std::string>() != split_name(options.split)) return false;
    if (j.at("skip_incomplete").get<bool>() != options.skip_incomplete) return false;
    if (j.at("fingerprint") != print) return false;
    SnippetIndex index;
    for (const nlohmann::json& row : j.at("rows")) {
      Snippet s;
      s.path = row.at(0).get<std::string>();
      s.sequence = row.at(1).get<int>();
      s.start = row.at(2).get<int>();
      s.end = row.at(3).get<int>();
      s.annotation = row.at(4).get<int>();
      s.city = fs::path(s.path).filename().string();
      if (s.end != s.start + kSnippetLength - 1 || s.annotation != s.start + kAnnotatedFrameOffset)
        return false;
      index.snippets.push_back(std::move(s));
    }
    index.report.skipped = j.at("skipped").get<int64_t>();
    index.report.warnings = j.at("warnings").get<std::vector<std::string>>();
    index.cache_file = file;
    index.from_cache = true;
    out = std::move(index);
    return true;
  } catch (const std::exception&) {
    return false;  // a corrupt or foreign file is rebuilt, not an error
  }
}

// Writes atomically (temporary file, then rename); false when the folder is not writable.
bool write_cache(const fs::path& file, const nlohmann::json& j) {
  std::error_code ec;
  if (!fs::is_directory(file.parent_path(), ec)) return false;
  const fs::path tmp = file.string() + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out.good()) return false;
    out << j.dump(1) << "\n";
    out.flush();
    if (!out.good()) {
      out.close();
      fs::remove(tmp, ec);
      return false;
    }
  }
  fs::rename(tmp, file, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return false;
  }
  return true;
}

}  // namespace

const char* split_name(Split split) {
  switch (split) {
    case Split::train: return "train";
    case Split::val: return "val";
    case Split::test: return "test";
  }
  return "?";
}

Split parse_split(const std::string& name) {
  if (name == "train") return Split::train;
  if (name == "val") return Split::val;
  if (name == "test") return Split::test;
  SEG_CHECK(false, "cityscapes: unknown split '", name, "' (known: train, val, test)");
  return Split::train;
}

const char* label_suffix(LabelSource source) {
  return source == LabelSource::label_ids ? "_gtFine_labelIds.png" : "_gtFine_labelTrainIds.png";
}

bool parse_frame_name(const std::string& file_name, const std::string& suffix, FrameName& out) {
  if (!ends_with(file_name, suffix)) return false;
  const std::string stem = file_name.substr(0, file_name.size() - suffix.size());
  // city "_" 6 digits "_" 6 digits: at least one character of city.
  constexpr size_t kTail = 14;  // "_dddddd_dddddd"
  if (stem.size() < kTail + 1) return false;
  const size_t c = stem.size() - kTail;
  if (stem[c] != '_' || stem[c + 7] != '_') return false;
  auto digits = [&](size_t at, int& value) {
    value = 0;
    for (size_t i = at; i < at + 6; ++i) {
      if (stem[i] < '0' || stem[i] > '9') return false;
      value = value * 10 + (stem[i] - '0');
    }
    return true;
  };
  FrameName name;
  name.city = stem.substr(0, c);
  if (!digits(c + 1, name.sequence) || !digits(c + 8, name.frame)) return false;
  out = std::move(name);
  return true;
}

std::string frame_stem(const std::string& city, int sequence, int frame) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "_%06d_%06d", sequence, frame);
  return city + buf;
}

fs::path Snippet::frame_path(const fs::path& root, int offset) const {
  SEG_CHECK(offset >= 0 && offset < kSnippetLength, "cityscapes: snippet ", id(), ": frame offset ",
            offset, " outside 0..", kSnippetLength - 1);
  return root / path / (frame_stem(city, sequence, start + offset) + kImageSuffix);
}

fs::path image_split_dir(const CityscapesOptions& options) {
  return options.root / "leftImg8bit" / split_name(options.split);
}

fs::path label_split_dir(const CityscapesOptions& options) {
  return options.root / "gtFine" / split_name(options.split);
}

fs::path sequence_split_dir(const CityscapesOptions& options) {
  return options.root / "leftImg8bit_sequence" / split_name(options.split);
}

AnnotatedSet scan_annotated(const CityscapesOptions& options) {
  check_root(options);
  const fs::path image_dir = image_split_dir(options), label_dir = label_split_dir(options);
  check_folder(image_dir, "split");
  check_folder(label_dir, "split");
  const std::string lsuffix = label_suffix(options.labels);

  std::vector<std::string> cities = list_subfolders(image_dir);
  for (const std::string& c : list_subfolders(label_dir)) cities.push_back(c);
  std::sort(cities.begin(), cities.end());
  cities.erase(std::unique(cities.begin(), cities.end()), cities.end());

  AnnotatedSet set;
  for (const std::string& city : cities) {
    const fs::path idir = image_dir / city, ldir = label_dir / city;
    std::error_code ec;
    const bool have_idir = fs::is_directory(idir, ec), have_ldir = fs::is_directory(ldir, ec);
    const std::vector<std::string> ifiles =
        have_idir ? list_files(idir) : std::vector<std::string>{};
    std::vector<std::string> lfiles;
    if (have_ldir) {
      for (std::string& f : list_files(ldir))
        if (ends_with(f, lsuffix)) lfiles.push_back(std::move(f));
    }
    if (have_idir && ifiles.empty()) {
      problem(options, set.report, idir.string() + ": empty city folder");
      continue;
    }
    if (have_ldir && lfiles.empty() && !have_idir) {
      problem(options, set.report,
              ldir.string() + ": city folder without any *" + lsuffix + " file");
      continue;
    }
    std::map<FrameKey, std::string> images =
        parse_city_files(options, set.report, idir, city, ifiles, kImageSuffix);
    std::map<FrameKey, std::string> labels =
        parse_city_files(options, set.report, ldir, city, lfiles, lsuffix);
    for (const auto& [key, file] : images) {
      const auto [seq, frame] = key;
      auto it = labels.find(key);
      if (it == labels.end()) {
        problem(options, set.report,
                (idir / file).string() + ": image without its label " +
                    (ldir / (frame_stem(city, seq, frame) + lsuffix)).string());
        continue;
      }
      set.samples.push_back(AnnotatedSample{city, seq, frame, idir / file, ldir / it->second});
    }
    for (const auto& [key, file] : labels) {
      if (images.count(key)) continue;
      const auto [seq, frame] = key;
      problem(options, set.report,
              (ldir / file).string() + ": label without its image " +
                  (idir / (frame_stem(city, seq, frame) + kImageSuffix)).string());
    }
  }
  return set;
}

SnippetIndex scan_snippets(const CityscapesOptions& options) {
  check_root(options);
  const fs::path split_dir = sequence_split_dir(options);
  const fs::path rel = fs::path("leftImg8bit_sequence") / split_name(options.split);
  check_folder(split_dir, "split");
  const fs::path image_dir = image_split_dir(options);
  check_annotated_folder(options);

  // The annotated frames of each city: (sequence, frame) of every leftImg8bit image. Names that do
  // not parse, or that name another city, are left to scan_annotated: they anchor no snippet.
  std::map<std::string, std::set<FrameKey>> annotated;
  for (const std::string& city : list_subfolders(image_dir)) {
    std::set<FrameKey>& keys = annotated[city];
    for (const std::string& f : list_files(image_dir / city)) {
      FrameName name;
      if (parse_frame_name(f, kImageSuffix, name) && name.city == city)
        keys.insert({name.sequence, name.frame});
    }
  }
  std::set<std::string> cities;
  for (const std::string& city : list_subfolders(split_dir)) cities.insert(city);
  for (const auto& [city, keys] : annotated)
    if (!keys.empty()) cities.insert(city);

  SnippetIndex index;
  for (const std::string& city : cities) {
    const fs::path dir = split_dir / city;
    std::error_code ec;
    std::map<FrameKey, std::string> frames;
    if (fs::is_directory(dir, ec)) {
      const std::vector<std::string> files = list_files(dir);
      if (files.empty()) {
        problem(options, index.report, dir.string() + ": empty city folder");
        continue;
      }
      frames = parse_city_files(options, index.report, dir, city, files, kImageSuffix);
    }
    // Every annotated frame a is the 20th of its snippet: frames a - 19 .. a + 10.
    std::set<FrameKey> covered;
    for (const FrameKey& key : annotated[city]) {
      const auto [seq, frame] = key;
      const int start = frame - kAnnotatedFrameOffset, end = start + kSnippetLength - 1;
      const std::string where = (dir / (frame_stem(city, seq, frame) + kImageSuffix)).string();
      for (int f = std::max(start, 0); f <= end; ++f) covered.insert({seq, f});
      if (start < 0) {
        problem(options, index.report,
                where + ": the snippet annotated at " + join_ints({frame}, 1) +
                    " would start at frame " + std::to_string(start) +
                    " (an annotated frame is the " + std::to_string(kAnnotatedFrameOffset + 1) +
                    "th of its " + std::to_string(kSnippetLength) + " frames)");
        continue;
      }
      std::vector<int> missing;
      for (int f = start; f <= end; ++f)
        if (!frames.count({seq, f})) missing.push_back(f);
      if (!missing.empty()) {
        problem(options, index.report,
                where + ": the snippet annotated at " + join_ints({frame}, 1) + " (frames " +
                    join_ints({start}, 1) + ".." + join_ints({end}, 1) + ") lacks " +
                    std::to_string(missing.size()) + " of its " + std::to_string(kSnippetLength) +
                    " frames: " + join_runs(missing));
        continue;
      }
      index.snippets.push_back(
          Snippet{(rel / city).generic_string(), city, seq, start, end, frame});
    }
    // Frames of no annotated snippet: ignored, one note per city folder.
    int64_t stray = 0;
    std::string first;
    for (const auto& [key, file] : frames) {
      if (covered.count(key)) continue;
      if (stray++ == 0) first = file;
    }
    if (stray > 0)
      index.report.warnings.push_back(dir.string() + ": ignored " + std::to_string(stray) +
                                      " frame(s) outside the snippets of the annotated images in " +
                                      (image_dir / city).string() + " (first: " + first + ")");
  }
  return index;
}

fs::path root_cache_file(const CityscapesOptions& options) {
  return options.root / (std::string("segtrain_snippets_") + split_name(options.split) + ".json");
}

fs::path fallback_cache_file(const CityscapesOptions& options) {
  std::error_code ec;
  fs::path canonical = fs::weakly_canonical(options.root, ec);
  if (ec) canonical = options.root;
  char hash[24];
  std::snprintf(hash, sizeof(hash), "%016zx", std::hash<std::string>{}(canonical.string()));
  return options.cache_dir /
         (std::string("segtrain_snippets_") + split_name(options.split) + "_" + hash + ".json");
}

SnippetIndex load_snippet_index(const CityscapesOptions& options) {
  if (!options.use_cache) return scan_snippets(options);
  check_root(options);
  const fs::path split_dir = sequence_split_dir(options);
  check_folder(split_dir, "split");
  check_annotated_folder(options);
  const nlohmann::json print = {{"sequences", fingerprint(split_dir)},
                                {"annotated", fingerprint(image_split_dir(options))}};

  std::vector<fs::path> candidates{root_cache_file(options)};
  if (!options.cache_dir.empty()) candidates.push_back(fallback_cache_file(options));
  for (const fs::path& file : candidates) {
    SnippetIndex cached;
    if (read_cache(file, options, print, cached)) return cached;
  }
  SnippetIndex index = scan_snippets(options);
  const nlohmann::json j = index_to_json(index, options, print);
  for (const fs::path& file : candidates) {
    if (write_cache(file, j)) {
      index.cache_file = file;
      return index;
    }
  }
  index.report.warnings.push_back(
      "the snippet index could not be cached: neither " + candidates.front().string() +
      (candidates.size() > 1 ? " nor " + candidates.back().string() : std::string()) +
      " is writable");
  return index;
}

}  // namespace seg::data
