// train_shapes: the engine's demo job. Trains a small UNet to segment random rectangles and discs
// (data/synthetic_shapes.h) and prints the loss, pixel accuracy and mIoU on a held-out batch as
// training goes. Runs on the CPU in about 20 seconds.
//
//   train_shapes [--config FILE] [--steps N] [--batch N] [--size PIXELS] [--width CHANNELS]
//                [--depth N] [--lr LR] [--seed S] [--log-every N]
//
// --config reads a JSON object whose keys are the option names ("steps", "log-every", ...) and
// whose values are numbers (configs/train_shapes.json); options on the command line override it. An
// unknown key or a value that is not a number is an error naming the key and the file.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "data/synthetic_shapes.h"
#include "engine/autograd.h"
#include "engine/metrics.h"
#include "engine/ops.h"
#include "engine/optim/optimizer.h"
#include "models/unet.h"

using namespace seg;

namespace {

struct Args {
  int64_t steps = 400;
  int64_t batch = 8;
  int64_t size = 48;
  int64_t width = 16;
  int64_t depth = 2;
  double lr = 3e-3;
  uint64_t seed = 1;
  int64_t log_every = 20;
};

// The options of a --config file, as strings keyed by option name.
std::map<std::string, std::string> read_config(const std::string& path) {
  std::ifstream in(path);
  SEG_CHECK(in.good(), "train_shapes: cannot read the config file ", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error("train_shapes: " + path + " is not valid JSON: " + e.what());
  }
  SEG_CHECK(j.is_object(), "train_shapes: ", path, " must hold a JSON object");
  std::map<std::string, std::string> values;
  for (const auto& [key, value] : j.items()) {
    SEG_CHECK(value.is_number(), "train_shapes: ", path, ": key '", key, "' must be a number, got ",
              value.dump());
    values[key] = value.dump();
  }
  return values;
}

Args parse_args(int argc, char** argv) {
  Args a;
  std::map<std::string, std::string> values, given;
  std::string config;
  for (int i = 1; i < argc; ++i) {
    std::string key = argv[i];
    if (key == "--help" || key == "-h") {
      std::printf(
          "usage: %s [--config FILE] [--steps N] [--batch N] [--size PIXELS] [--width CHANNELS] "
          "[--depth N] [--lr LR] [--seed S] [--log-every N]\n",
          argv[0]);
      std::exit(0);
    }
    SEG_CHECK(key.rfind("--", 0) == 0 && i + 1 < argc,
              "train_shapes: expected --option value, got '", key, "'");
    if (key == "--config") {
      config = argv[++i];
    } else {
      given[key.substr(2)] = argv[++i];
    }
  }
  std::string unknown_where = "option --";
  if (!config.empty()) {
    values = read_config(config);
    unknown_where = "key in " + config + ": ";
  }
  for (const auto& [key, value] : given) values[key] = value;
  auto take = [&](const char* name, auto& field) {
    auto it = values.find(name);
    if (it == values.end()) return;
    try {
      if constexpr (std::is_same_v<std::decay_t<decltype(field)>, double>) {
        field = std::stod(it->second);
      } else {
        field = static_cast<std::decay_t<decltype(field)>>(std::stoll(it->second));
      }
    } catch (const std::exception&) {
      throw Error(std::string("train_shapes: --") + name + ": '" + it->second +
                  "' is not a number");
    }
    values.erase(it);
  };
  take("steps", a.steps);
  take("batch", a.batch);
  take("size", a.size);
  take("width", a.width);
  take("depth", a.depth);
  take("lr", a.lr);
  take("seed", a.seed);
  take("log-every", a.log_every);
  if (!values.empty()) {
    const std::string key = values.begin()->first;
    throw Error("train_shapes: unknown " +
                (given.count(key) ? std::string("option --") : unknown_where) + key);
  }
  SEG_CHECK(a.steps > 0 && a.batch > 0 && a.log_every > 0,
            "train_shapes: steps, batch and log-every must be > 0");
  SEG_CHECK(a.size >= (int64_t{8} << a.depth), "train_shapes: --size ", a.size,
            " too small for depth ", a.depth);
  return a;
}

// Pixel accuracy and mean IoU of a held-out batch (cityscapesScripts' definitions,
// engine/metrics.h).
SegmentationScores score(const Tensor& logits, const Tensor& labels) {
  return segmentation_scores(confusion_matrix(logits, labels));
}

int run(const Args& a) {
  Generator init_gen(a.seed);
  models::UNet net({3, data::kShapesNumClasses, a.width, static_cast<int>(a.depth), false, true},
                   init_gen);
  Adam optimizer(net.parameters(), AdamOptions{.lr = a.lr});
  Generator data_gen(a.seed + 1000);
  Generator val_gen(a.seed + 2000);
  const data::ShapesBatch val = data::make_shapes_batch(16, a.size, a.size, val_gen);

  int64_t params = 0;
  for (const Tensor& p : net.parameters()) params += p.numel();
  std::printf(
      "train_shapes: UNet depth %lld width %lld (%lld parameters), %lldx%lld images, batch %lld, "
      "Adam lr %g, %lld steps on the CPU\n",
      static_cast<long long>(a.depth), static_cast<long long>(a.width),
      static_cast<long long>(params), static_cast<long long>(a.size),
      static_cast<long long>(a.size), static_cast<long long>(a.batch), a.lr,
      static_cast<long long>(a.steps));

  double first_loss = 0.0, window_loss = 0.0, last_window = 0.0;
  int64_t window = 0;
  auto start = std::chrono::steady_clock::now();
  for (int64_t step = 1; step <= a.steps; ++step) {
    net.train();
    data::ShapesBatch batch = data::make_shapes_batch(a.batch, a.size, a.size, data_gen);
    Tensor loss = cross_entropy(net.forward(batch.images), batch.labels);
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    const double l = loss.item();
    SEG_CHECK(std::isfinite(l), "train_shapes: loss became ", l, " at step ", step);
    if (step == 1) first_loss = l;
    window_loss += l;
    ++window;
    if (step % a.log_every == 0 || step == a.steps) {
      net.eval();
      SegmentationScores s;
      {
        NoGradGuard no_grad;
        s = score(net.forward(val.images), val.labels);
      }
      double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      last_window = window_loss / static_cast<double>(window);
      std::printf("step %5lld  loss %.4f  val pixel acc %.3f  val mIoU %.3f  %.1f images/s\n",
                  static_cast<long long>(step), last_window, s.pixel_accuracy, s.mean_iou,
                  static_cast<double>(step * a.batch) / seconds);
      std::fflush(stdout);
      window_loss = 0.0;
      window = 0;
    }
  }
  std::printf("train_shapes: loss fell from %.4f (first step) to %.4f (last window), %.1fx lower\n",
              first_loss, last_window, first_loss / last_window);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
