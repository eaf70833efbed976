// make_synthetic_cityscapes: writes a synthetic dataset in the layout and naming of Cityscapes
// (data/synthetic_cityscapes.h), so that every app runs end to end without the real data.
//
//   make_synthetic_cityscapes --out DIR [--width 256] [--height 128] [--train 6] [--val 3] [--test
//   0]
//                             [--seed 0] [--threads 0] [--no-sequences]
//
// Argument parsing lives in the library (parse_synthetic_cityscapes_args) so that its errors are
// tested without running a process. Exit codes: 0 done, 1 failed while writing, 2 bad arguments.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "data/labels.h"
#include "data/synthetic_cityscapes.h"
#include "engine/error.h"

using namespace seg::data;

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  SyntheticCommandLine cl;
  try {
    cl = parse_synthetic_cityscapes_args(args);
  } catch (const seg::Error& e) {
    std::fprintf(stderr, "error: %s\n\n%s", e.what(), synthetic_cityscapes_usage().c_str());
    return 2;
  }
  if (cl.help) {
    std::printf("%s", synthetic_cityscapes_usage().c_str());
    return 0;
  }
  const SyntheticOptions& o = cl.options;
  std::printf(
      "make_synthetic_cityscapes: %d train, %d val, %d test images of %dx%d%s, seed %llu, into "
      "%s\n",
      o.num_train, o.num_val, o.num_test, o.width, o.height,
      o.sequences ? " with 30-frame snippets" : " (no sequences)",
      static_cast<unsigned long long>(o.seed), o.out_dir.string().c_str());
  std::fflush(stdout);
  // Progress: rewritten in place on a terminal, otherwise one line per 10%.
  const bool tty = ::isatty(2) != 0;
  const auto start = std::chrono::steady_clock::now();
  int64_t last_decile = 0;
  auto progress = [&](int64_t done, int64_t total) {
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double eta =
        done > 0 ? elapsed * static_cast<double>(total - done) / static_cast<double>(done) : 0.0;
    const int64_t decile = done * 10 / total;
    if (tty) {
      std::fprintf(stderr, "\r  %lld/%lld images (%3.0f%%), %.1f s elapsed, %.1f s left   ",
                   static_cast<long long>(done), static_cast<long long>(total),
                   100.0 * static_cast<double>(done) / static_cast<double>(total), elapsed, eta);
      if (done == total) std::fprintf(stderr, "\n");
    } else if (decile > last_decile || done == total) {
      std::fprintf(stderr, "  %lld/%lld images, %.1f s elapsed, %.1f s left\n",
                   static_cast<long long>(done), static_cast<long long>(total), elapsed, eta);
    }
    last_decile = decile;
  };
  SyntheticSummary s;
  try {
    s = write_synthetic_cityscapes(o, progress);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nerror: %s\n", e.what());
    return 1;
  }
  const int total_images = s.images[0] + s.images[1] + s.images[2];
  std::printf("done: %d images", total_images);
  for (int k = 0; k < kNumSplits; ++k) {
    const Split split = static_cast<Split>(k);
    if (s.images[static_cast<size_t>(k)] > 0)
      std::printf(", %s %d in %d cities", split_name(split), s.images[static_cast<size_t>(k)],
                  s.cities[static_cast<size_t>(k)]);
  }
  std::printf("\n      %lld PNG files, %.1f MB, %.1f s with %d threads (%.2f s per image%s)\n",
              static_cast<long long>(s.files), static_cast<double>(s.bytes) / 1e6, s.seconds,
              s.threads, s.seconds * s.threads / std::max(1, total_images),
              o.sequences ? ", 30 frames each" : "");
  // Share of the annotated pixels per class (what a segmentation model will see).
  int64_t pixels = 0;
  for (int64_t p : s.label_pixels) pixels += p;
  std::printf("      pixels by class:");
  int column = 0;
  for (int t = 0; t < kNumTrainClasses; ++t) {
    const int64_t p = s.label_pixels[kTrainIdToLabelId[static_cast<size_t>(t)]];
    std::printf("%s%s %.2f%%", column++ % 7 == 0 ? "\n        " : ", ",
                std::string(kTrainIdNames[static_cast<size_t>(t)]).c_str(),
                100.0 * static_cast<double>(p) / static_cast<double>(std::max<int64_t>(pixels, 1)));
  }
  int64_t ignored = 0;
  for (int id = 0; id < kNumLabelIds; ++id)
    if (train_id_of(id) == kIgnoreLabel) ignored += s.label_pixels[static_cast<size_t>(id)];
  std::printf(
      "\n        ignored (void ids, trainId 255) %.2f%%\n",
      100.0 * static_cast<double>(ignored) / static_cast<double>(std::max<int64_t>(pixels, 1)));
  return 0;
}
