// Loader benchmark: images/s through the segmentation dataset and the threaded loader (decode the
// leftImg8bit and labelIds PNGs, map labels, resize, normalise to CHW f32, stack batches) at full
// 2048x1024 and at 8x downsampling (256x128, area), with 1 and 2 workers, next to Python with
// Pillow doing the same work in a pool of processes (benchmarks/loader_peer.py through
// /usr/bin/python3) in the same run.
//
// Usage: bench_loader [--images N] [--passes P] [--batch B] [--peer PATH] [--no-peer]
//                     [--gpu-rates FULL,EIGHTH]
//
// Design notes
// - The benchmark writes its own PNGs in a temp folder, in the Cityscapes layout: photo-like
//   content (a sky gradient, facades with windows, a road, cars, smooth shading and sensor-like
//   noise), so that compressed sizes and decode times are realistic (the real leftImg8bit PNGs are
//   about 2 MB; the sizes written here are printed).
// - The files are read once before timing (page cache warm, as in a second epoch); each timed run
//   is P passes over the N images; our loader starts its threads before the clock starts, the peer
//   starts its processes and warms them up likewise.
// - The table ends with how many workers a GPU consuming a given number of images/s needs at this
//   per-worker rate (default: 40 images/s at full size, 200 at 8x), assuming workers scale linearly
//   up to the core count (measured here for 1 -> 2 workers).
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "benchmarks/bench_util.h"
#include "data/datasets.h"
#include "data/loader.h"
#include "data/png.h"
#include "kernels/common/philox.h"

using namespace seg;
using namespace seg::data;
namespace fs = std::filesystem;

namespace {

constexpr int kWidth = 2048, kHeight = 1024;

// A photo-like street scene, different per image `k`.
std::vector<uint8_t> street_scene(int k, std::vector<uint8_t>& label_ids) {
  std::vector<uint8_t> rgb(static_cast<size_t>(kWidth) * kHeight * 3);
  label_ids.assign(static_cast<size_t>(kWidth) * kHeight, 0);
  const uint64_t seed = 1000 + static_cast<uint64_t>(k);
  auto rnd = [&](uint64_t i) { return philox_uniform_f32(seed, 1, i); };
  const int horizon = kHeight * (45 + static_cast<int>(rnd(0) * 10)) / 100;
  // Facades: a row of buildings of random widths and heights and colours.
  struct Building {
    int x0, x1, top;
    float r, g, b;
  };
  std::vector<Building> buildings;
  for (int x = 0, i = 0; x < kWidth; ++i) {
    const int w = 150 + static_cast<int>(rnd(10 + i) * 350);
    const float shade = 0.35f + 0.5f * rnd(100 + i);
    buildings.push_back(
        {x, std::min(kWidth, x + w), horizon - 100 - static_cast<int>(rnd(200 + i) * 300),
         shade * (0.9f + 0.2f * rnd(300 + i)), shade, shade * (0.8f + 0.3f * rnd(400 + i))});
    x += w;
  }
  // Cars on the road.
  struct Car {
    int x0, x1, y0, y1;
    float r, g, b;
  };
  std::vector<Car> cars;
  for (int i = 0; i < 6; ++i) {
    const int w = 150 + static_cast<int>(rnd(500 + i) * 250),
              x0 = static_cast<int>(rnd(600 + i) * (kWidth - w));
    const int y1 = horizon + 60 + static_cast<int>(rnd(700 + i) * (kHeight - horizon - 80));
    cars.push_back({x0, x0 + w, y1 - w / 2, y1, rnd(800 + i), rnd(900 + i), rnd(1000 + i)});
  }
  for (int y = 0; y < kHeight; ++y) {
    for (int x = 0; x < kWidth; ++x) {
      float r, g, b;
      uint8_t id;
      if (y < horizon) {  // sky, then facades with windows
        const float t = static_cast<float>(y) / horizon;
        r = 0.55f + 0.25f * t;
        g = 0.7f + 0.15f * t;
        b = 0.95f - 0.05f * t;
        id = 23;
        for (const Building& bd : buildings) {
          if (x >= bd.x0 && x < bd.x1 && y >= bd.top) {
            const bool window =
                ((x - bd.x0) % 40 > 12) && ((y - bd.top) % 50 > 18) && (y < horizon - 30);
            const float light = 0.85f + 0.15f * std::sin(0.01f * static_cast<float>(x + y));
            r = bd.r * light * (window ? 0.45f : 1.0f);
            g = bd.g * light * (window ? 0.5f : 1.0f);
            b = bd.b * light * (window ? 0.6f : 1.0f);
            id = 11;
          }
        }
      } else {  // road with lane marks, then cars
        const float t = static_cast<float>(y - horizon) / (kHeight - horizon);
        r = g = b = 0.3f + 0.15f * t;
        id = 7;
        if (std::abs(x - kWidth / 2) < 4 + static_cast<int>(20 * t) && (y / 40) % 2 == 0)
          r = g = b = 0.85f;
        for (const Car& c : cars) {
          if (x >= c.x0 && x < c.x1 && y >= c.y0 && y < c.y1) {
            const float s =
                0.6f + 0.4f * static_cast<float>(y - c.y0) / static_cast<float>(c.y1 - c.y0);
            r = c.r * s;
            g = c.g * s;
            b = c.b * s;
            id = 26;
          }
        }
      }
      // Sensor noise: -1 or +1 level per channel, each with probability 1/8 (stronger noise makes
      // stb's PNGs larger than Cityscapes' ones).
      const uint32_t n = philox_u32_at(seed, 2, static_cast<uint64_t>(y) * kWidth + x);
      constexpr float kNoise[8] = {-1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1.0f};
      const float noise[3] = {kNoise[n & 7u], kNoise[(n >> 3) & 7u], kNoise[(n >> 6) & 7u]};
      const float v[3] = {r, g, b};
      for (int ch = 0; ch < 3; ++ch) {
        const float p = std::min(255.0f, std::max(0.0f, v[ch] * 255.0f + noise[ch]));
        rgb[(static_cast<size_t>(y) * kWidth + x) * 3 + ch] = static_cast<uint8_t>(p);
      }
      label_ids[static_cast<size_t>(y) * kWidth + x] = id;
    }
  }
  return rgb;
}

struct Run {
  double images_per_s = 0;
};

Run run_ours(const Dataset& ds, int workers, int passes, int64_t batch) {
  LoaderOptions o;
  o.batch_size = batch;
  o.num_workers = workers;
  o.shuffle = true;
  Loader loader(ds, o);
  const auto t0 = std::chrono::steady_clock::now();
  int64_t images = 0;
  for (int p = 0; p < passes; ++p)
    for (Batch& b : loader.epoch(static_cast<uint64_t>(p)))
      images += static_cast<int64_t>(b.samples.size());
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return Run{static_cast<double>(images) / s};
}

// Runs the peer; false (with the reason) when it is missing or fails.
bool run_peer(const std::string& script, const std::vector<std::pair<fs::path, fs::path>>& pairs,
              int factor, int workers, int passes, Run& out, std::string& info) {
  std::vector<std::string> args = {"--factor",  std::to_string(factor),
                                   "--workers", std::to_string(workers),
                                   "--passes",  std::to_string(passes)};
  for (const auto& [img, lbl] : pairs) args.push_back(img.string() + ":" + lbl.string());
  nlohmann::json j;
  if (!bench::run_peer_script(script, args, j, info)) return false;
  if (!j.contains("images_per_s") || !j["images_per_s"].is_number()) {
    info = "peer output has no images_per_s: " + j.dump();
    return false;
  }
  out.images_per_s = j["images_per_s"].get<double>();
  info = "Pillow " + j.value("pillow", std::string("?"));
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int images = 8, passes = 3;
  int64_t batch = 2;
  bool use_peer = true;
  double gpu_full = 40, gpu_eighth = 200;
  std::string peer = std::string(SEG_SOURCE_DIR) + "/benchmarks/loader_peer.py";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_loader: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--images") {
      images = std::atoi(next().c_str());
    } else if (a == "--passes") {
      passes = std::atoi(next().c_str());
    } else if (a == "--batch") {
      batch = std::atoll(next().c_str());
    } else if (a == "--peer") {
      peer = next();
    } else if (a == "--no-peer") {
      use_peer = false;
    } else if (a == "--gpu-rates") {
      const std::string v = next();
      if (std::sscanf(v.c_str(), "%lf,%lf", &gpu_full, &gpu_eighth) != 2) {
        std::fprintf(stderr, "bench_loader: --gpu-rates FULL,EIGHTH (images/s), e.g. 40,200\n");
        return 2;
      }
    } else {
      std::fprintf(
          stderr,
          "usage: bench_loader [--images N] [--passes P] [--batch B] [--peer PATH] [--no-peer] "
          "[--gpu-rates FULL,EIGHTH]\n");
      return 2;
    }
  }
  if (images < 1 || passes < 1 || batch < 1) {
    std::fprintf(stderr, "bench_loader: --images, --passes and --batch must be positive\n");
    return 2;
  }

  const fs::path root =
      fs::temp_directory_path() / ("seg_bench_loader_" + std::to_string(::getpid()));
  fs::remove_all(root);
  std::vector<std::pair<fs::path, fs::path>> pairs;
  uintmax_t bytes = 0;
  const auto tw = std::chrono::steady_clock::now();
  for (int k = 0; k < images; ++k) {
    std::vector<uint8_t> ids;
    const std::vector<uint8_t> rgb = street_scene(k, ids);
    const std::string stem = frame_stem("bench", k, 19);
    const fs::path img = root / "leftImg8bit/train/bench" / (stem + "_leftImg8bit.png");
    const fs::path lbl = root / "gtFine/train/bench" / (stem + "_gtFine_labelIds.png");
    fs::create_directories(img.parent_path());
    fs::create_directories(lbl.parent_path());
    write_png_rgb(img, kWidth, kHeight, rgb.data());
    write_png_grey8(lbl, kWidth, kHeight, ids.data());
    bytes += fs::file_size(img);
    pairs.emplace_back(img, lbl);
  }
  std::printf(
      "bench_loader: %d photo-like %dx%d PNGs written in %.1f s, %.2f MB each on average "
      "(Cityscapes leftImg8bit: about 2 MB); %u hardware threads\n",
      images, kWidth, kHeight,
      std::chrono::duration<double>(std::chrono::steady_clock::now() - tw).count(),
      static_cast<double>(bytes) / images / 1e6, std::thread::hardware_concurrency());
  std::printf(
      "per image: decode RGB + labelIds, labelId -> trainId, resize (area), normalise to CHW f32, "
      "stack batches of %lld; %d passes over %d images\n\n",
      static_cast<long long>(batch), passes, images);

  CityscapesOptions where;
  where.root = root;
  struct Config {
    const char* name;
    int factor;
    double gpu_rate;
    double ours1 = 0;
  };
  std::vector<Config> configs{{"2048x1024 (full)", 1, gpu_full},
                              {"256x128 (8x, area)", 8, gpu_eighth}};
  std::printf("%-20s %7s %14s %16s %8s\n", "output", "workers", "ours images/s", "Pillow images/s",
              "ratio");
  std::string peer_info;
  bool peer_ok = use_peer;
  for (Config& c : configs) {
    SegmentationOptions so;
    so.resize = ResizeOptions{c.factor, 0, 0, Interp::area};
    SegmentationDataset ds(where, so);
    for (int64_t i = 0; i < ds.size(); ++i) (void)ds.get(i, 0);  // warm the page cache
    for (int workers : {1, 2}) {
      const Run ours = run_ours(ds, workers, passes, batch);
      if (workers == 1) c.ours1 = ours.images_per_s;
      Run theirs;
      if (peer_ok) peer_ok = run_peer(peer, pairs, c.factor, workers, passes, theirs, peer_info);
      if (peer_ok) {
        std::printf("%-20s %7d %14.1f %16.1f %7.2fx\n", c.name, workers, ours.images_per_s,
                    theirs.images_per_s, ours.images_per_s / theirs.images_per_s);
      } else {
        std::printf("%-20s %7d %14.1f %16s %8s\n", c.name, workers, ours.images_per_s, "-", "-");
      }
      std::fflush(stdout);
    }
  }
  std::printf("\npeer: %s\n", use_peer ? peer_info.c_str() : "disabled (--no-peer)");
  std::printf(
      "\nworkers needed to feed a GPU (at the 1-worker rate measured here, assuming linear scaling "
      "with free cores):\n");
  for (const Config& c : configs)
    std::printf("  %-20s at %6.0f images/s: %d workers (%.1f images/s per worker)\n", c.name,
                c.gpu_rate, static_cast<int>(std::ceil(c.gpu_rate / c.ours1)), c.ours1);
  std::error_code ec;
  fs::remove_all(root, ec);
  return 0;
}
