// train_shapes: the engine's demo job. Trains a small UNet to segment random rectangles and discs
// (data/synthetic_shapes.h) and prints the loss, pixel accuracy and mIoU on a held-out batch as
// training goes. Runs on the CPU in about a minute.
//
//   train_shapes [--steps N] [--batch N] [--size PIXELS] [--width CHANNELS] [--depth N]
//                [--lr LR] [--seed S] [--log-every N]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <string>

#include "data/synthetic_shapes.h"
#include "engine/autograd.h"
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

Args parse_args(int argc, char** argv) {
  Args a;
  std::map<std::string, std::string> values;
  for (int i = 1; i < argc; ++i) {
    std::string key = argv[i];
    if (key == "--help" || key == "-h") {
      std::printf("usage: %s [--steps N] [--batch N] [--size PIXELS] [--width CHANNELS] [--depth N] "
                  "[--lr LR] [--seed S] [--log-every N]\n", argv[0]);
      std::exit(0);
    }
    SEG_CHECK(key.rfind("--", 0) == 0 && i + 1 < argc, "train_shapes: expected --option value, got '",
              key, "'");
    values[key.substr(2)] = argv[++i];
  }
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
      throw Error(std::string("train_shapes: --") + name + ": '" + it->second + "' is not a number");
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
  SEG_CHECK(values.empty(), "train_shapes: unknown option --", values.empty() ? "" : values.begin()->first);
  SEG_CHECK(a.steps > 0 && a.batch > 0 && a.log_every > 0, "train_shapes: steps, batch and log-every must be > 0");
  SEG_CHECK(a.size >= (int64_t{8} << a.depth), "train_shapes: --size ", a.size, " too small for depth ", a.depth);
  return a;
}

struct Scores {
  double pixel_accuracy = 0.0;
  double miou = 0.0;
};

// Pixel accuracy and mean IoU over the classes present in labels or predictions.
Scores score(const Tensor& logits, const Tensor& labels) {
  std::vector<int32_t> pred = to_vector<int32_t>(argmax(logits, 1));
  std::vector<int32_t> gt = to_vector<int32_t>(labels);
  const int64_t k = data::kShapesNumClasses;
  std::vector<int64_t> confusion(static_cast<size_t>(k * k), 0);
  for (size_t i = 0; i < gt.size(); ++i) ++confusion[static_cast<size_t>(gt[i] * k + pred[i])];
  Scores s;
  int64_t correct = 0, present = 0;
  for (int64_t c = 0; c < k; ++c) {
    int64_t tp = confusion[c * k + c], fp = 0, fn = 0;
    for (int64_t o = 0; o < k; ++o) {
      if (o == c) continue;
      fp += confusion[o * k + c];
      fn += confusion[c * k + o];
    }
    correct += tp;
    if (tp + fp + fn > 0) {
      s.miou += static_cast<double>(tp) / static_cast<double>(tp + fp + fn);
      ++present;
    }
  }
  s.pixel_accuracy = static_cast<double>(correct) / static_cast<double>(gt.size());
  s.miou /= static_cast<double>(std::max<int64_t>(present, 1));
  return s;
}

int run(const Args& a) {
  Generator init_gen(a.seed);
  models::UNet net({3, data::kShapesNumClasses, a.width, static_cast<int>(a.depth), false, true}, init_gen);
  Adam optimizer(net.parameters(), AdamOptions{.lr = a.lr});
  Generator data_gen(a.seed + 1000);
  Generator val_gen(a.seed + 2000);
  const data::ShapesBatch val = data::make_shapes_batch(16, a.size, a.size, val_gen);

  int64_t params = 0;
  for (const Tensor& p : net.parameters()) params += p.numel();
  std::printf("train_shapes: UNet depth %lld width %lld (%lld parameters), %lldx%lld images, batch %lld, "
              "Adam lr %g, %lld steps on the CPU\n",
              static_cast<long long>(a.depth), static_cast<long long>(a.width), static_cast<long long>(params),
              static_cast<long long>(a.size), static_cast<long long>(a.size), static_cast<long long>(a.batch),
              a.lr, static_cast<long long>(a.steps));

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
      Scores s;
      {
        NoGradGuard no_grad;
        s = score(net.forward(val.images), val.labels);
      }
      double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      last_window = window_loss / static_cast<double>(window);
      std::printf("step %5lld  loss %.4f  val pixel acc %.3f  val mIoU %.3f  %.1f images/s\n",
                  static_cast<long long>(step), last_window, s.pixel_accuracy, s.miou,
                  static_cast<double>(step * a.batch) / seconds);
      std::fflush(stdout);
      window_loss = 0.0;
      window = 0;
    }
  }
  std::printf("train_shapes: loss fell from %.4f (first step) to %.4f (last window), %.1fx lower\n", first_loss,
              last_window, first_loss / last_window);
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
