// Training-step benchmark: images/s and peak memory of one full training step (forward, cross
// entropy with ignore index 255, backward, optimiser step) of whole segmentation models, ours next
// to PyTorch (benchmarks/train_peer.py, run through /usr/bin/python3 or $SEG_PYTHON) doing the
// identical step: the same architecture, the same weights (ours, written to a safetensors file the
// peer loads strictly), the same batch, the same loss and optimiser (RMSprop as the study's UNet
// recipe), the same thread count.
//
// Usage: bench_train [--threads N] [--rounds R] [--warmup W] [--iters I] [--rows TEXT] [--base C]
//                    [--peer PATH] [--no-peer] [--no-breakdown]
//
// Design notes
// - Rows are (model, device, batch, height, width), listed in make_rows(): UNet (both up-sampling
//   variants) and DeepLabv3-ResNet101 (output stride 8 and 16), at 128x256 batch 2 and 256x512
//   batch 1 (DeepLabv3: batch 2, since its image-pooling batch norm needs two images in training,
//   in PyTorch too) on the CPU and 1024x2048 on a GPU; models are ModelSpec entries (builder,
//   forward to logits at the labels' size, optional per-layer forward, the peer's model name).
// - Every measurement runs in a fresh process: ours re-executes this binary with --worker ROW
//   (so the allocator's peak and the resident-set peak belong to that row alone), the peer is a
//   Python process. A row runs R rounds, each ours then the peer's, so a change in the shared
//   machine's speed affects both sides alike. Each process takes W warmup steps then I timed
//   steps. Reported: the median step time over all timed steps of all rounds, the min-max over
//   those steps, and the ratio as the median over rounds of torch's round median / ours, with its
//   min-max (a round compares the two sides under about the same load).
// - Check first: in every round, ours and the peer's losses of the first step (same weights, same
//   batch, before any update) must agree within kLossTolerance, and those of the second step
//   (after one RMSprop update) within kSecondLossTolerance. A failed check is printed and makes
//   the exit status 1; the timings are still printed.
// - Peak memory, two figures per side, both in the step's process:
//     tensor peak: the peak of live tensor bytes, the model, optimiser state and batch included.
//       Ours: our host allocator's peak_allocated (the process does nothing else). PyTorch: the
//       live tensor bytes at the start of one more step plus the peak of its allocator's
//       allocations and frees during that step (profiler, profile_memory=True). Neither counts
//       scratch outside the tensor allocator (our GEMM packing buffers; oneDNN's scratchpad).
//     RSS growth: the resident set's peak during the steps (VmHWM, reset before the first step)
//       minus the resident set before the first step: everything, caches and scratch included.
//   On a GPU, tensor peak is our context's allocator peak and torch.cuda.max_memory_allocated().
// - Breakdown (last round): one more step of ours with each forward layer timed (module by
//   module; pad and cat of UNet's up blocks as their own entries) and each autograd node's
//   backward timed (the graph's nodes are wrapped in timing nodes before backward), and the
//   peer's step under torch.profiler (its forward ops and autograd nodes). Both are grouped into
//   layer categories (convolution, batch norm, ...) and compared; a row below kTargetRatio names
//   the categories short of kTargetRatio x PyTorch's speed.
// - GPU rows (1024x2048) run when this binary has the CUDA backend and a GPU is present, and are
//   skipped with a note otherwise. The peer then needs a PyTorch with CUDA ($SEG_PYTHON).
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "benchmarks/bench_util.h"
#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/io/safetensors.h"
#include "engine/ops.h"
#include "engine/optim/optimizer.h"
#include "models/deeplabv3.h"
#include "models/unet.h"
#ifdef SEG_WITH_CUDA
#include "engine/cuda/cuda_context.h"
#endif

using namespace seg;
using nlohmann::json;

namespace {

using bench::median;
using bench::now_ms;

// Loss of the first step, ours against PyTorch's, same f32 weights and batch: the forward sums
// thousands of products per output in another order (our GEMMs against oneDNN's) through ~20
// layers with batch norm; measured differences are below 1e-6 relative, the bound leaves 100x.
constexpr double kLossTolerance = 1e-4;
// Loss of the second step, after one RMSprop update from zero state: that update moves every
// weight by about lr / sqrt(1 - alpha) = 0.01 in the direction of its gradient's sign, so weights
// whose gradients are within rounding of zero may move either way on the two sides; a wrong
// optimiser setting (lr, momentum, eps) changes this loss by far more than 1%.
constexpr double kSecondLossTolerance = 1e-2;
// The goal per row on the CPU: PyTorch's step time / ours at least this.
constexpr double kTargetRatio = 1.2;
// Pixels of the random labels that are the ignore label (255), per mille.
constexpr int64_t kIgnorePerMille = 50;
constexpr int64_t kIgnoreIndex = 255;

// ---- per-layer timing ----

using Sync = std::function<void()>;

// Milliseconds by layer name, summed over calls.
using LayerTimes = std::map<std::string, double>;

// Times forward calls of layers, synchronising the device around each (a no-op on the CPU).
class LayerTimer {
 public:
  explicit LayerTimer(Sync sync) : sync_(std::move(sync)) {}
  template <class F>
  Tensor time(const std::string& layer, F&& f) {
    sync_();
    const double t0 = now_ms();
    Tensor y = f();
    sync_();
    times_[layer] += now_ms() - t0;
    return y;
  }
  // One module's forward, timed under its type name ("Conv2d").
  Tensor module(nn::Module& m, const Tensor& x) {
    return time(m.type_name(), [&]() { return m.forward(x); });
  }
  // Each child of a Sequential in turn, timed by module().
  Tensor sequential(nn::Sequential& s, Tensor x) {
    for (size_t i = 0; i < s.size(); ++i) x = module(*s[i], x);
    return x;
  }
  const LayerTimes& times() const { return times_; }

 private:
  Sync sync_;
  LayerTimes times_;
};

// A node that runs another and adds the time its backward took to `times` under its name.
class TimedNode final : public Node {
 public:
  TimedNode(std::shared_ptr<Node> inner, LayerTimes* times, const Sync* sync)
      : inner_(std::move(inner)), times_(times), sync_(sync) {
    next_edges = inner_->next_edges;
    num_outputs = inner_->num_outputs;
    sequence_nr = inner_->sequence_nr;
  }
  std::string name() const override { return inner_->name(); }
  std::vector<Tensor> apply(const std::vector<Tensor>& grad_outputs) override {
    (*sync_)();
    const double t0 = now_ms();
    std::vector<Tensor> out = inner_->apply(grad_outputs);
    (*sync_)();
    (*times_)[inner_->name()] += now_ms() - t0;
    return out;
  }
  void release() override { inner_->release(); }

 private:
  std::shared_ptr<Node> inner_;
  LayerTimes* times_;
  const Sync* sync_;
};

// Replaces every node of the graph behind `root` by a TimedNode around it (the engine only follows
// the wrappers' edges, which point at wrappers). `times` and `sync` must outlive the backward.
void time_backward_nodes(const Tensor& root, LayerTimes* times, const Sync* sync) {
  std::unordered_map<Node*, std::shared_ptr<Node>> wrapped;
  std::vector<std::shared_ptr<Node>> todo;
  auto wrap = [&](const std::shared_ptr<Node>& n) {
    auto it = wrapped.find(n.get());
    if (it != wrapped.end()) return it->second;
    auto w = std::make_shared<TimedNode>(n, times, sync);
    wrapped.emplace(n.get(), w);
    todo.push_back(w);
    return std::shared_ptr<Node>(w);
  };
  root.impl()->grad_fn = wrap(root.grad_fn());
  while (!todo.empty()) {
    std::shared_ptr<Node> w = todo.back();
    todo.pop_back();
    for (Edge& e : w->next_edges) {
      if (e.node) e.node = wrap(e.node);
    }
  }
}

// ---- models ----

struct ModelSpec {
  std::string name;        // in the output
  std::string peer_model;  // train_peer.py --model
  int64_t num_classes = 19;
  std::function<std::shared_ptr<nn::Module>(Generator&)> build;
  // Logits at the labels' size.
  std::function<Tensor(nn::Module&, const Tensor&)> forward;
  // The same forward with each layer timed; null: the whole model is timed as one layer.
  std::function<Tensor(nn::Module&, const Tensor&, LayerTimer&)> timed_forward;
};

// UNet::forward and Up::forward, layer by layer.
Tensor unet_timed_forward(nn::Module& m, const Tensor& x, LayerTimer& t) {
  auto& net = dynamic_cast<models::UNet&>(m);
  auto double_conv = [&](models::DoubleConv& d, const Tensor& in) {
    return t.sequential(*d.double_conv, in);
  };
  std::vector<Tensor> skips{double_conv(*net.inc, x)};
  for (auto& down : net.downs) {
    Tensor pooled = t.module(*(*down->maxpool_conv)[0], skips.back());
    skips.push_back(double_conv(*down->maxpool_conv->at<models::DoubleConv>(1), pooled));
  }
  Tensor y = skips.back();
  for (size_t i = 0; i < net.ups.size(); ++i) {
    models::Up& up = *net.ups[i];
    const Tensor& skip = skips[skips.size() - 2 - i];
    Tensor u = t.module(*up.up, y);
    const int64_t dy = skip.size(2) - u.size(2), dx = skip.size(3) - u.size(3);
    if (dy != 0 || dx != 0) {
      u = t.time("pad2d", [&]() { return pad2d(u, {dx / 2, dx - dx / 2, dy / 2, dy - dy / 2}); });
    }
    Tensor joined = t.time("cat", [&]() { return cat({skip, u}, 1); });
    y = double_conv(*up.conv, joined);
  }
  return t.module(*net.outc_conv, y);
}

ModelSpec unet_spec(bool bilinear, int64_t base) {
  ModelSpec s;
  s.name = bilinear ? "UNet bilinear" : "UNet";
  s.peer_model =
      "unet:bilinear=" + std::to_string(bilinear ? 1 : 0) + ",base=" + std::to_string(base);
  s.build = [bilinear, base](Generator& gen) -> std::shared_ptr<nn::Module> {
    models::UNetOptions o;
    o.bilinear = bilinear;
    o.base_channels = base;
    o.num_classes = 19;
    return std::make_shared<models::UNet>(o, gen);
  };
  s.forward = [](nn::Module& m, const Tensor& x) { return m.forward(x); };
  s.timed_forward = unet_timed_forward;
  return s;
}

// DeepLabV3::forward_all(x, true).out, layer by layer: the stem, each bottleneck's convolutions,
// batch norms, ReLUs and residual sum, the ASPP's branches and projection, the head, the
// upsampling.
Tensor deeplab_timed_forward(nn::Module& m, const Tensor& x, LayerTimer& t) {
  auto& net = dynamic_cast<models::DeepLabV3&>(m);
  models::ResNet& b = *net.backbone;
  Tensor y = t.module(*b.maxpool, t.module(*b.relu, t.module(*b.bn1, t.module(*b.conv1, x))));
  for (int layer = 1; layer <= 4; ++layer) {
    for (const auto& block : b.blocks(layer)) {
      const Tensor in = y;
      y = t.module(*block->bn1, t.module(*block->conv1, in));
      y = t.time("ReLU", [&]() { return relu(y); });
      y = t.module(*block->bn2, t.module(*block->conv2, y));
      y = t.time("ReLU", [&]() { return relu(y); });
      y = t.module(*block->bn3, t.module(*block->conv3, y));
      const Tensor identity = block->downsample ? t.sequential(*block->downsample, in) : in;
      y = t.time("residual add + ReLU", [&]() { return relu(y + identity); });
    }
  }
  // The ASPP entered (its branches' convolutions, batch norms and ReLUs count as such; its fused
  // projection is a 1x1 convolution over the never-materialised concatenation), then the head.
  const models::ASPP& aspp = *net.aspp;
  std::vector<Tensor> branches;
  for (size_t i = 0; i + 1 < aspp.convs->size(); ++i) {
    branches.push_back(t.sequential(dynamic_cast<nn::Sequential&>(*(*aspp.convs)[i]), y));
  }
  const Tensor pooled =
      t.sequential(dynamic_cast<nn::Sequential&>(*(*aspp.convs)[aspp.convs->size() - 1]), y);
  y = t.time("Conv2d", [&]() {
    return aspp_projection(branches, pooled, aspp.project->at<nn::Conv2d>(0)->weight);
  });
  for (size_t i = 1; i < aspp.project->size(); ++i) y = t.module(*(*aspp.project)[i], y);
  for (size_t i = 1; i < net.classifier->size(); ++i) y = t.module(*(*net.classifier)[i], y);
  return t.time("upsample_bilinear2d", [&]() {
    return upsample_bilinear2d(y, x.size(2), x.size(3), net.options.align_corners);
  });
}

// torchvision's deeplabv3_resnet101 layout at output stride 8 or 16 without the auxiliary head
// and with the ASPP's dropout off (the two sides' dropout masks could not agree, and the losses
// are compared); the peer builds the same (train_peer.py).
ModelSpec deeplab_spec(int output_stride) {
  ModelSpec s;
  s.name = "DeepLabv3-R101 OS" + std::to_string(output_stride);
  s.peer_model = output_stride == 8 ? "deeplabv3:os=8,rates=12-24-36,dropout=0"
                                    : "deeplabv3:os=16,rates=6-12-18,dropout=0";
  s.build = [output_stride](Generator& gen) -> std::shared_ptr<nn::Module> {
    models::DeepLabV3Options o = models::DeepLabV3Options::torchvision();
    o.output_stride = output_stride;
    o.aspp_dropout = 0.0;
    o.num_classes = 19;
    return std::make_shared<models::DeepLabV3>(o, gen, std::make_shared<Generator>(1));
  };
  s.forward = [](nn::Module& m, const Tensor& x) { return m.forward(x); };
  s.timed_forward = deeplab_timed_forward;
  return s;
}

struct Row {
  const ModelSpec* model;
  DeviceType device;
  int64_t batch, h, w;
  std::string name() const {
    return model->name + " " + std::to_string(h) + "x" + std::to_string(w) + " batch " +
           std::to_string(batch) + (device == DeviceType::cuda ? " (GPU)" : "");
  }
};

struct Models {
  ModelSpec unet, unet_bilinear, deeplab_os8, deeplab_os16;
};

std::vector<Row> make_rows(const Models& m) {
  return {
      {&m.unet, DeviceType::cpu, 2, 128, 256},
      {&m.unet, DeviceType::cpu, 1, 256, 512},
      {&m.unet_bilinear, DeviceType::cpu, 2, 128, 256},
      {&m.unet_bilinear, DeviceType::cpu, 1, 256, 512},
      {&m.deeplab_os8, DeviceType::cpu, 2, 128, 256},
      {&m.deeplab_os8, DeviceType::cpu, 2, 256, 512},
      {&m.deeplab_os16, DeviceType::cpu, 2, 128, 256},
      {&m.deeplab_os16, DeviceType::cpu, 2, 256, 512},
      {&m.unet, DeviceType::cuda, 1, 1024, 2048},
      {&m.unet_bilinear, DeviceType::cuda, 1, 1024, 2048},
      {&m.deeplab_os8, DeviceType::cuda, 2, 1024, 2048},
      {&m.deeplab_os16, DeviceType::cuda, 2, 1024, 2048},
  };
}

struct Category {
  const char* name;
  std::vector<std::string> ours_fwd, ours_bwd, torch_fwd, torch_bwd;
};

const std::vector<Category>& categories() {
  static const std::vector<Category> k = {
      {"convolution",
       {"Conv2d", "ConvTranspose2d"},
       {"Conv2dBackward", "ConvTranspose2dBackward", "AsppProjectionBackward"},
       {"aten::conv2d", "aten::conv_transpose2d"},
       {"ConvolutionBackward0"}},
      {"batch norm",
       {"BatchNorm2d"},
       {"BatchNorm2dBackward"},
       {"aten::batch_norm"},
       {"NativeBatchNormBackward0", "CudnnBatchNormBackward0"}},
      {"relu",
       {"ReLU"},
       {"reluBackward"},
       {"aten::relu_", "aten::relu"},
       {"ReluBackward0", "ThresholdBackward0"}},
      {"max pool",
       {"MaxPool2d"},
       {"MaxPool2dBackward"},
       {"aten::max_pool2d"},
       {"MaxPool2DWithIndicesBackward0"}},
      {"upsample",
       {"Upsample"},
       {"UpsampleBilinear2dBackward"},
       {"aten::upsample_bilinear2d"},
       {"UpsampleBilinear2DBackward0", "UpsampleBilinear2DBackward1"}},
      {"pad + cat",
       {"pad2d", "cat"},
       {"Pad2dBackward", "CatBackward"},
       {"aten::pad", "aten::constant_pad_nd", "aten::cat"},
       {"ConstantPadNdBackward0", "CatBackward0"}},
      {"loss",
       {"cross_entropy"},
       {"CrossEntropyBackward"},
       {"aten::cross_entropy_loss"},
       {"NllLoss2DBackward0", "LogSoftmaxBackward0"}},
      {"accumulate grad", {}, {"AccumulateGrad"}, {}, {"torch::autograd::AccumulateGrad"}},
  };
  return k;
}

// ---- command line ----

struct Args {
  int threads = 1, rounds = 3, warmup = 1, iters = 3;
  int64_t base = 64;
  std::string rows_filter;
  std::string peer;
  bool use_peer = true, breakdown = true;
  int worker_row = -1;  // internal: run one row's steps and print JSON
  std::string worker_dir;
};

[[noreturn]] void usage() {
  std::fprintf(
      stderr,
      "usage: bench_train [--threads N] [--rounds R] [--warmup W] [--iters I] "
      "[--rows TEXT] [--base C] [--peer PATH] [--no-peer] [--no-breakdown]\n"
      "  --rows TEXT: only rows whose name contains TEXT (e.g. \"bilinear\", \"256x512\")\n"
      "  --base C: UNet's first-level channels (64: the study's; smaller for a quick run)\n");
  std::exit(2);
}

Args parse_args(int argc, char** argv) {
  Args a;
  a.threads = omp_get_max_threads();
  a.peer = std::string(SEG_SOURCE_DIR) + "/benchmarks/train_peer.py";
  for (int i = 1; i < argc; ++i) {
    const std::string opt = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage();
      return argv[++i];
    };
    try {
      if (opt == "--threads") {
        a.threads = std::stoi(next());
      } else if (opt == "--rounds") {
        a.rounds = std::stoi(next());
      } else if (opt == "--warmup") {
        a.warmup = std::stoi(next());
      } else if (opt == "--iters") {
        a.iters = std::stoi(next());
      } else if (opt == "--base") {
        a.base = std::stoll(next());
      } else if (opt == "--rows") {
        a.rows_filter = next();
      } else if (opt == "--peer") {
        a.peer = next();
      } else if (opt == "--no-peer") {
        a.use_peer = false;
      } else if (opt == "--no-breakdown") {
        a.breakdown = false;
      } else if (opt == "--worker") {
        a.worker_row = std::stoi(next());
      } else if (opt == "--dir") {
        a.worker_dir = next();
      } else {
        usage();
      }
    } catch (const std::logic_error&) {  // std::stoi: not a number
      usage();
    }
  }
  if (a.threads < 1 || a.rounds < 1 || a.warmup < 0 || a.iters < 1 || a.base < 1) usage();
  omp_set_num_threads(a.threads);
  openblas_set_num_threads(a.threads);
  return a;
}

// ---- the worker: one row's steps in this process ----

std::string weights_path(const std::string& dir, int row) {
  return dir + "/row" + std::to_string(row) + "_weights.safetensors";
}
std::string batch_path(const std::string& dir, int row) {
  return dir + "/row" + std::to_string(row) + "_batch.safetensors";
}

// Random labels in [0, classes) with about kIgnorePerMille per mille set to the ignore label.
Tensor random_labels(int64_t n, int64_t h, int64_t w, int64_t classes, Generator& gen) {
  std::vector<float> u = to_vector<float>(rand({n, h, w}, gen));
  std::vector<int32_t> labels(u.size());
  for (size_t i = 0; i < u.size(); ++i) {
    const double v = u[i] * 1000.0;
    labels[i] = v < kIgnorePerMille
                    ? static_cast<int32_t>(kIgnoreIndex)
                    : static_cast<int32_t>(std::min<double>(
                          classes - 1, (v - kIgnorePerMille) / (1000.0 - kIgnorePerMille) *
                                           static_cast<double>(classes)));
  }
  return from_vector(labels, {n, h, w});
}

json to_json(const LayerTimes& t) {
  json j = json::object();
  for (const auto& [k, v] : t) j[k] = v;
  return j;
}

int run_worker(const Args& args, const Row& row) {
  const ModelSpec& spec = *row.model;
  const std::string wpath = weights_path(args.worker_dir, args.worker_row);
  const std::string bpath = batch_path(args.worker_dir, args.worker_row);
  Generator gen(7);
  std::shared_ptr<nn::Module> model = spec.build(gen);
  model->train();
  Tensor x, labels;
  if (std::filesystem::exists(wpath) && std::filesystem::exists(bpath)) {
    model->load_state_dict_file(wpath);
    NamedTensors batch = load_safetensors(bpath);
    for (auto& [name, t] : batch) (name == "input" ? x : labels) = t;
  } else {
    x = randn({row.batch, 3, row.h, row.w}, gen);
    labels = random_labels(row.batch, row.h, row.w, spec.num_classes, gen);
    model->save_state_dict(wpath);
    save_safetensors(bpath, {{"input", x}, {"labels", labels}});
  }

  Sync sync = []() {};
  Allocator* allocator = &cpu_allocator();
#ifdef SEG_WITH_CUDA
  std::unique_ptr<cuda::CudaContext> gpu;
  if (row.device == DeviceType::cuda) {
    gpu = cuda::CudaContext::create(0);
    sync = [&gpu]() { gpu->synchronize(); };
    allocator = &gpu->allocator();
    model->to(gpu->device());
    x = x.to(gpu->device());
    labels = labels.to(gpu->device());
  }
#endif
  RMSpropOptions ro;
  ro.lr = 1e-3;
  ro.alpha = 0.99;
  ro.eps = 1e-8;
  ro.weight_decay = 1e-8;
  ro.momentum = 0.9;
  RMSprop opt(model->parameters(), ro);
  CrossEntropyOptions ce;
  ce.ignore_index = kIgnoreIndex;

  auto step = [&]() {
    opt.zero_grad();
    Tensor loss = cross_entropy(spec.forward(*model, x), labels, ce);
    loss.backward();
    opt.step();
    return loss;
  };

  sync();
  const bool rss_reset = bench::reset_peak_rss();
  const size_t rss_before = bench::proc_status_bytes("VmRSS");
  std::vector<double> losses, times, cpu_times;
  for (int i = 0; i < args.warmup + args.iters; ++i) {
    const double t0 = now_ms(), c0 = bench::process_cpu_ms();
    Tensor loss = step();
    sync();
    const double dt = now_ms() - t0, dc = bench::process_cpu_ms() - c0;
    if (i < 2) losses.push_back(loss.item());
    if (i >= args.warmup) {
      times.push_back(dt);
      cpu_times.push_back(dc);
    }
  }
  const size_t rss_peak = bench::proc_status_bytes("VmHWM");
  const AllocatorStats stats = allocator->stats();

  json out;
  out["loss"] = losses;
  out["step_ms"] = times;
  out["cpu_ms"] = cpu_times;
  out["tensor_peak_bytes"] = stats.peak_allocated;
  out["rss_growth_bytes"] = rss_reset ? json(rss_peak - std::min(rss_peak, rss_before)) : json();
  if (args.breakdown) {
    opt.zero_grad();
    LayerTimer fwd(sync);
    sync();
    const double t0 = now_ms();
    Tensor logits = spec.timed_forward
                        ? spec.timed_forward(*model, x, fwd)
                        : fwd.time(spec.name, [&]() { return spec.forward(*model, x); });
    Tensor loss = fwd.time("cross_entropy", [&]() { return cross_entropy(logits, labels, ce); });
    const double t1 = now_ms();
    LayerTimes bwd;
    time_backward_nodes(loss, &bwd, &sync);
    loss.backward();
    sync();
    const double t2 = now_ms();
    opt.step();
    sync();
    const double t3 = now_ms();
    out["breakdown"] = {
        {"forward", to_json(fwd.times())},
        {"backward", to_json(bwd)},
        {"other", {{"forward", t1 - t0}, {"backward", t2 - t1}, {"optimizer", t3 - t2}}}};
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

// ---- the parent: rounds of ours and the peer's, then the tables ----

struct Side {
  std::vector<double> step_ms;
  std::vector<double> round_median;
  double loss0 = NAN, loss1 = NAN;
  double tensor_peak = NAN, rss_growth = NAN;  // bytes (the last round's)
  json breakdown;
  bool ok = true;
  std::string error;
};

void absorb(Side& s, const json& j) {
  std::vector<double> t = j["step_ms"].get<std::vector<double>>();
  s.round_median.push_back(median(t));
  s.step_ms.insert(s.step_ms.end(), t.begin(), t.end());
  std::vector<double> losses = j["loss"].get<std::vector<double>>();
  if (!losses.empty()) s.loss0 = losses[0];
  if (losses.size() > 1) s.loss1 = losses[1];
  if (j["tensor_peak_bytes"].is_number()) s.tensor_peak = j["tensor_peak_bytes"].get<double>();
  if (j["rss_growth_bytes"].is_number()) s.rss_growth = j["rss_growth_bytes"].get<double>();
  if (j.contains("breakdown") && !j["breakdown"].is_null()) s.breakdown = j["breakdown"];
}

double mib(double bytes) {
  return bytes / (1024.0 * 1024.0);
}

double sum_of(const json& times, const std::vector<std::string>& names,
              std::set<std::string>* used) {
  double total = 0.0;
  if (!times.is_object()) return total;
  for (const std::string& n : names) {
    if (times.contains(n)) {
      total += times[n].get<double>();
      if (used) used->insert(n);
    }
  }
  return total;
}

// "a 12.3, b 4.5" of the entries of `times` not in `used`, largest first.
std::string rest_of(const json& times, const std::set<std::string>& used) {
  std::vector<std::pair<double, std::string>> rest;
  if (times.is_object()) {
    for (auto it = times.begin(); it != times.end(); ++it) {
      if (!used.count(it.key())) rest.emplace_back(it.value().get<double>(), it.key());
    }
  }
  std::sort(rest.rbegin(), rest.rend());
  std::string s;
  for (const auto& [ms, name] : rest) {
    char buf[160];
    std::snprintf(buf, sizeof(buf), "%s%s %.1f", s.empty() ? "" : ", ", name.c_str(), ms);
    s += buf;
  }
  return s;
}

// Prints the per-category table; returns the categories short of kTargetRatio x PyTorch's speed
// (forward + backward), "name (ours X ms, torch Y ms)".
std::vector<std::string> print_breakdown(const Side& ours, const Side& theirs, bool with_peer) {
  const json& of = ours.breakdown["forward"];
  const json& ob = ours.breakdown["backward"];
  const json empty = json::object();
  const json& tf = with_peer && theirs.breakdown.is_object() ? theirs.breakdown["forward"] : empty;
  const json& tb = with_peer && theirs.breakdown.is_object() ? theirs.breakdown["backward"] : empty;
  const bool peer = with_peer && theirs.breakdown.is_object();
  std::printf("  per layer, one more step (ms; ours: each layer timed; torch: torch.profiler):\n");
  std::printf("  %-18s %9s %9s", "layer", "ours fwd", "ours bwd");
  if (peer) std::printf(" %9s %9s %9s", "torch fwd", "torch bwd", "ratio");
  std::printf("\n");
  std::set<std::string> used_of, used_ob, used_tf, used_tb;
  std::vector<std::string> losers;
  auto line = [&](const char* name, double a, double b, double c, double d, bool judge = true) {
    std::printf("  %-18s %9.1f %9.1f", name, a, b);
    if (peer) {
      const double ratio = (a + b) > 0 ? (c + d) / (a + b) : NAN;
      std::printf(" %9.1f %9.1f %9.2f", c, d, ratio);
      if (judge && ratio < kTargetRatio && (a + b) > 0.0) {
        char buf[160];
        std::snprintf(buf, sizeof(buf), "%s (ours %.0f ms, torch %.0f ms)", name, a + b, c + d);
        losers.push_back(buf);
      }
    }
    std::printf("\n");
  };
  for (const Category& c : categories()) {
    const double a = sum_of(of, c.ours_fwd, &used_of), b = sum_of(ob, c.ours_bwd, &used_ob);
    const double cc = sum_of(tf, c.torch_fwd, &used_tf), d = sum_of(tb, c.torch_bwd, &used_tb);
    if (a + b + cc + d > 0.0) line(c.name, a, b, cc, d);
  }
  // The rest of each phase: ops outside the categories and the engines' own time (scheduling,
  // gradient sums at joins) = the phase's total - its categorised layers.
  const json& oo = ours.breakdown["other"];
  const json& to = peer ? theirs.breakdown["other"] : empty;
  auto used_sum = [](const json& t, const std::set<std::string>& used) {
    return sum_of(t, std::vector<std::string>(used.begin(), used.end()), nullptr);
  };
  line("other / engine", oo.value("forward", 0.0) - used_sum(of, used_of),
       oo.value("backward", 0.0) - used_sum(ob, used_ob),
       peer ? to.value("forward", 0.0) - used_sum(tf, used_tf) : 0.0,
       peer ? to.value("backward", 0.0) - used_sum(tb, used_tb) : 0.0);
  line("optimizer step", oo.value("optimizer", 0.0), 0.0, peer ? to.value("optimizer", 0.0) : 0.0,
       0.0);
  line("total", oo.value("forward", 0.0), oo.value("backward", 0.0),
       peer ? to.value("forward", 0.0) : 0.0, peer ? to.value("backward", 0.0) : 0.0, false);
  const std::string ours_rest =
      rest_of(of, used_of) + (rest_of(ob, used_ob).empty() ? "" : "; ") + rest_of(ob, used_ob);
  if (!ours_rest.empty()) std::printf("  ours, other layers (ms): %s\n", ours_rest.c_str());
  if (peer) {
    const std::string tr =
        rest_of(tf, used_tf) + (rest_of(tb, used_tb).empty() ? "" : "; ") + rest_of(tb, used_tb);
    if (!tr.empty()) std::printf("  torch, other ops (ms): %s\n", tr.c_str());
  }
  return losers;
}

// torch / ours per round (each round runs ours then the peer's, so each ratio compares the two
// under about the same load on the shared machine).
std::vector<double> round_ratios(const Side& ours, const Side& theirs) {
  std::vector<double> r;
  for (size_t i = 0; i < theirs.round_median.size() && i < ours.round_median.size(); ++i) {
    r.push_back(theirs.round_median[i] / ours.round_median[i]);
  }
  return r;
}

// "1.15 [1.10-1.17]": the median of the per-round ratios and their range.
std::string ratio_str(const std::vector<double>& r) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.2f [%.2f-%.2f]", median(r),
                *std::min_element(r.begin(), r.end()), *std::max_element(r.begin(), r.end()));
  return buf;
}

std::string spread_str(const std::vector<double>& v) {
  if (v.empty()) return "-";
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%.0f [%.0f-%.0f]", median(v),
                *std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end()));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse_args(argc, argv);
  const Models models{unet_spec(false, args.base), unet_spec(true, args.base), deeplab_spec(8),
                      deeplab_spec(16)};
  const std::vector<Row> rows = make_rows(models);
  if (args.worker_row >= 0) {
    if (args.worker_row >= static_cast<int>(rows.size()) || args.worker_dir.empty()) usage();
    try {
      return run_worker(args, rows[static_cast<size_t>(args.worker_row)]);
    } catch (const std::exception& e) {
      std::printf("%s\n", json{{"error", e.what()}}.dump().c_str());
      return 1;
    }
  }

  const bool gpu = cuda_built() && cuda_device_count() > 0;
  std::printf(
      "bench_train: one training step (forward, cross entropy ignoring 255, backward, RMSprop "
      "step), f32\n%d threads (%s), %d rounds x (%d warmup + %d timed steps) per side, each "
      "round a fresh process per side\n",
      args.threads, bench::cpu_threads_str().c_str(), args.rounds, args.warmup, args.iters);
  bench::print_openblas_coretype_note();
  std::printf("load average at start: %s (2-core machine: above ~2 means others were running)\n",
              bench::load_average().c_str());
  std::printf(
      "times: median ms per step over all timed steps [min-max]; ratio = median over rounds of "
      "torch's round median / ours [min-max]\ntensor peak: live tensor bytes at their peak (model, "
      "optimiser state, batch included); RSS growth: resident-set peak during the steps minus "
      "before them\n\n");
  std::fflush(stdout);

  const std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("seg_bench_train_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  bool checks_ok = true;
  struct Summary {
    std::string row;
    int64_t batch;
    Side ours, theirs;
    bool peer;
    std::vector<std::string> losers;
  };
  std::vector<Summary> summaries;
  bool peer_ok = args.use_peer;
  std::string peer_info = args.use_peer ? "" : "disabled by --no-peer";

  for (size_t r = 0; r < rows.size(); ++r) {
    const Row& row = rows[r];
    if (!args.rows_filter.empty() && row.name().find(args.rows_filter) == std::string::npos)
      continue;
    if (row.device == DeviceType::cuda && !gpu) {
      std::printf("%s: skipped (%s)\n\n", row.name().c_str(),
                  cuda_built() ? "no GPU present" : "this binary was built without CUDA");
      continue;
    }
    std::printf("%s  [load %s]\n", row.name().c_str(), bench::load_average().c_str());
    std::fflush(stdout);
    Summary sum{row.name(), row.batch, {}, {}, false, {}};
    bool row_peer = peer_ok;
    for (int round = 0; round < args.rounds; ++round) {
      const bool last = round + 1 == args.rounds;
      std::vector<std::string> wargs{exe,
                                     "--worker",
                                     std::to_string(r),
                                     "--dir",
                                     dir.string(),
                                     "--threads",
                                     std::to_string(args.threads),
                                     "--warmup",
                                     std::to_string(args.warmup),
                                     "--iters",
                                     std::to_string(args.iters),
                                     "--base",
                                     std::to_string(args.base)};
      if (!(last && args.breakdown)) wargs.push_back("--no-breakdown");
      json j;
      std::string info;
      if (!bench::run_json_command(wargs, j, info)) {
        std::printf("  ours failed: %s\n", info.c_str());
        sum.ours.ok = false;
        checks_ok = false;
        break;
      }
      absorb(sum.ours, j);
      if (!row_peer) continue;
      std::vector<std::string> pargs{"--model",   row.model->peer_model,
                                     "--weights", weights_path(dir.string(), static_cast<int>(r)),
                                     "--batch",   batch_path(dir.string(), static_cast<int>(r)),
                                     "--classes", std::to_string(row.model->num_classes),
                                     "--threads", std::to_string(args.threads),
                                     "--warmup",  std::to_string(args.warmup),
                                     "--iters",   std::to_string(args.iters),
                                     "--device",  row.device == DeviceType::cuda ? "cuda" : "cpu"};
      if (last && args.breakdown) pargs.push_back("--breakdown");
      json p;
      if (!bench::run_peer_script(args.peer, pargs, p, info)) {
        std::printf("  PyTorch peer failed: %s; our figures only\n", info.c_str());
        row_peer = false;
        if (row.device == DeviceType::cpu) peer_ok = false;
        continue;
      }
      if (round == 0) {
        std::printf("  peer: PyTorch %s (%s), %d threads, mkldnn %s\n",
                    p.value("torch", std::string("?")).c_str(),
                    p.value("python", std::string("?")).c_str(), p.value("threads", 0),
                    p.value("mkldnn", false) ? "available" : "unavailable");
      }
      absorb(sum.theirs, p);
      // The check: same weights and batch give the same losses.
      const double d0 = std::abs(sum.ours.loss0 - sum.theirs.loss0) / std::abs(sum.theirs.loss0);
      const double d1 = std::abs(sum.ours.loss1 - sum.theirs.loss1) / std::abs(sum.theirs.loss1);
      const bool ok0 = d0 <= kLossTolerance, ok1 = std::isnan(d1) || d1 <= kSecondLossTolerance;
      std::printf(
          "  round %d: loss step 1 ours %.6f torch %.6f (rel. diff %.1e, %s %.0e), step 2 ours "
          "%.6f torch %.6f (%.1e, %s %.0e); ms ours %.0f torch %.0f\n",
          round + 1, sum.ours.loss0, sum.theirs.loss0, d0, ok0 ? "ok <=" : "FAILED >",
          kLossTolerance, sum.ours.loss1, sum.theirs.loss1, d1, ok1 ? "ok <=" : "FAILED >",
          kSecondLossTolerance, sum.ours.round_median.back(), sum.theirs.round_median.back());
      checks_ok = checks_ok && ok0 && ok1;
      std::fflush(stdout);
    }
    sum.peer = row_peer && !sum.theirs.step_ms.empty();
    if (sum.ours.step_ms.empty()) continue;
    const double ours_med = median(sum.ours.step_ms);
    std::printf("  ours:  %8.2f images/s, step ms %s, tensor peak %.0f MiB, RSS growth %.0f MiB\n",
                row.batch * 1e3 / ours_med, spread_str(sum.ours.step_ms).c_str(),
                mib(sum.ours.tensor_peak), mib(sum.ours.rss_growth));
    if (sum.peer) {
      const double theirs_med = median(sum.theirs.step_ms);
      std::printf(
          "  torch: %8.2f images/s, step ms %s, tensor peak %.0f MiB, RSS growth %.0f MiB\n",
          row.batch * 1e3 / theirs_med, spread_str(sum.theirs.step_ms).c_str(),
          mib(sum.theirs.tensor_peak), mib(sum.theirs.rss_growth));
      std::printf("  ratio: %s (memory ours/torch: tensor peak %.2f, RSS growth %.2f)\n",
                  ratio_str(round_ratios(sum.ours, sum.theirs)).c_str(),
                  sum.ours.tensor_peak / sum.theirs.tensor_peak,
                  sum.ours.rss_growth / sum.theirs.rss_growth);
    }
    if (sum.ours.breakdown.is_object()) {
      sum.losers = print_breakdown(sum.ours, sum.theirs, sum.peer);
      if (sum.peer && median(round_ratios(sum.ours, sum.theirs)) < kTargetRatio) {
        std::printf("  below %.1fx: layers short of %.1fx PyTorch's speed: ", kTargetRatio,
                    kTargetRatio);
        for (size_t i = 0; i < sum.losers.size(); ++i)
          std::printf("%s%s", i ? ", " : "", sum.losers[i].c_str());
        std::printf("%s\n", sum.losers.empty() ? "none (the loss is spread over the step)" : "");
      }
    }
    std::printf("\n");
    std::fflush(stdout);
    summaries.push_back(std::move(sum));
  }
  std::filesystem::remove_all(dir);

  std::printf(
      "summary (images/s from median step times; ratio: median of per-round ratios [min-max])\n");
  std::printf("%-34s %10s %10s %18s %16s\n", "row", "ours", "torch", "ratio", "tensor MiB o/t");
  for (const Summary& s : summaries) {
    const double om = median(s.ours.step_ms);
    std::printf("%-34s %10.2f", s.row.c_str(), s.batch * 1e3 / om);
    if (s.peer) {
      const double tm = median(s.theirs.step_ms);
      std::printf(" %10.2f %18s %7.0f/%-7.0f", s.batch * 1e3 / tm,
                  ratio_str(round_ratios(s.ours, s.theirs)).c_str(), mib(s.ours.tensor_peak),
                  mib(s.theirs.tensor_peak));
    }
    std::printf("\n");
  }
  std::printf("load average at end: %s\n", bench::load_average().c_str());
  if (!checks_ok) std::printf("\nCHECK FAILED: see the rounds above\n");
  return checks_ok ? 0 : 1;
}
