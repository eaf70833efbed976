// nn layers (design notes in layers.h). Initialisations follow torch/nn/modules/{conv,linear,
// batchnorm}.py reset_parameters() of PyTorch 1.13, drawing the weight first, then the bias.
#include "engine/nn/layers.h"

#include <cmath>

#include "engine/nn/init.h"

namespace seg::nn {

namespace {

// PyTorch's default for Conv*d and Linear: weight kaiming_uniform_(a = sqrt(5)); bias
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in from the weight (no bias draw when fan_in is 0).
void default_init(const Tensor& weight, const Tensor& bias, Generator& gen) {
  init::kaiming_uniform_(weight, gen, std::sqrt(5.0));
  if (bias.defined()) {
    const int64_t fan_in = init::calculate_fans(weight).fan_in;
    if (fan_in > 0) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
      init::uniform_(bias, gen, -bound, bound);
    } else {
      init::zeros_(bias);
    }
  }
}

void check_positive(const char* layer, const char* what, int64_t value) {
  SEG_CHECK(value > 0, layer, ": ", what, " must be positive, got ", value);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Sequential

Sequential::Sequential(const std::vector<std::shared_ptr<Module>>& modules) : Module("Sequential") {
  for (const auto& m : modules) append(m);
}

std::shared_ptr<Module> Sequential::operator[](size_t index) const {
  SEG_CHECK(index < size(), type_name(), ": index ", index, " out of range for ", size(),
            " modules");
  return named_children()[index].second;
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor y = x;
  for (const auto& [name, m] : named_children()) y = m->forward(y);
  return y;
}

// ---------------------------------------------------------------------------------------------
// Conv2d, ConvTranspose2d, Linear

Conv2d::Conv2d(int64_t in_ch, int64_t out_ch, int64_t kernel_size, Generator& gen,
               const Conv2dOptions& opts, bool with_bias)
    : Conv2d(in_ch, out_ch, kernel_size, kernel_size, gen, opts, with_bias) {}

Conv2d::Conv2d(int64_t in_ch, int64_t out_ch, int64_t kh, int64_t kw, Generator& gen,
               const Conv2dOptions& opts, bool with_bias)
    : Module("Conv2d"),
      in_channels(in_ch),
      out_channels(out_ch),
      kernel_h(kh),
      kernel_w(kw),
      options(opts) {
  check_positive("Conv2d", "in_channels", in_ch);
  check_positive("Conv2d", "out_channels", out_ch);
  check_positive("Conv2d", "kernel height", kh);
  check_positive("Conv2d", "kernel width", kw);
  weight = register_parameter("weight", empty({out_ch, in_ch, kh, kw}));
  if (with_bias) bias = register_parameter("bias", empty({out_ch}));
  default_init(weight, bias, gen);
}

Tensor Conv2d::forward(const Tensor& x) {
  return conv2d(x, weight, bias, options);
}

ConvTranspose2d::ConvTranspose2d(int64_t in_ch, int64_t out_ch, int64_t kernel_size, Generator& gen,
                                 const ConvTranspose2dOptions& opts, bool with_bias)
    : ConvTranspose2d(in_ch, out_ch, kernel_size, kernel_size, gen, opts, with_bias) {}

ConvTranspose2d::ConvTranspose2d(int64_t in_ch, int64_t out_ch, int64_t kh, int64_t kw,
                                 Generator& gen, const ConvTranspose2dOptions& opts, bool with_bias)
    : Module("ConvTranspose2d"),
      in_channels(in_ch),
      out_channels(out_ch),
      kernel_h(kh),
      kernel_w(kw),
      options(opts) {
  check_positive("ConvTranspose2d", "in_channels", in_ch);
  check_positive("ConvTranspose2d", "out_channels", out_ch);
  check_positive("ConvTranspose2d", "kernel height", kh);
  check_positive("ConvTranspose2d", "kernel width", kw);
  weight = register_parameter("weight", empty({in_ch, out_ch, kh, kw}));
  if (with_bias) bias = register_parameter("bias", empty({out_ch}));
  default_init(weight, bias, gen);
}

Tensor ConvTranspose2d::forward(const Tensor& x) {
  return conv_transpose2d(x, weight, bias, options);
}

Linear::Linear(int64_t in_f, int64_t out_f, Generator& gen, bool with_bias)
    : Module("Linear"), in_features(in_f), out_features(out_f) {
  check_positive("Linear", "in_features", in_f);
  check_positive("Linear", "out_features", out_f);
  weight = register_parameter("weight", empty({out_f, in_f}));
  if (with_bias) bias = register_parameter("bias", empty({out_f}));
  default_init(weight, bias, gen);
}

Tensor Linear::forward(const Tensor& x) {
  return linear(x, weight, bias);
}

// ---------------------------------------------------------------------------------------------
// BatchNorm2d

BatchNorm2d::BatchNorm2d(int64_t features, double epsilon, std::optional<double> mom, bool affine,
                         bool track_running_stats)
    : Module("BatchNorm2d"), num_features(features), eps(epsilon), momentum(mom) {
  check_positive("BatchNorm2d", "num_features", features);
  SEG_CHECK(!mom || (*mom >= 0.0 && *mom <= 1.0), "BatchNorm2d: momentum ", *mom,
            " outside [0, 1]");
  if (affine) {
    weight = register_parameter("weight", ones({features}));
    bias = register_parameter("bias", zeros({features}));
  }
  if (track_running_stats) {
    running_mean = register_buffer("running_mean", zeros({features}));
    running_var = register_buffer("running_var", ones({features}));
    num_batches_tracked = register_buffer("num_batches_tracked", zeros({}, DType::i64));
  }
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  SEG_CHECK(x.defined() && x.dim() == 4, type_name(), ": expected a 4-D input (n, c, h, w), got ",
            x.str());
  SEG_CHECK(x.size(1) == num_features, type_name(), ": input ", shape_str(x.sizes()), " has ",
            x.size(1), " channels, the layer has ", num_features);
  const bool tracking = running_mean.defined();
  double factor = momentum.value_or(0.0);
  if (is_training() && tracking) {
    // PyTorch: num_batches_tracked += 1 (an i64 scalar, kept on the device of the buffers).
    if (num_batches_tracked.device().is_cpu()) {
      ++*num_batches_tracked.data<int64_t>();
      num_batches_tracked.bump_version();
    } else {
      num_batches_tracked.fill_(num_batches_tracked.item() + 1.0);
    }
    if (!momentum) factor = 1.0 / static_cast<double>(num_batches_tracked.item<int64_t>());
  }
  // Batch statistics in training, and always when there are no running statistics.
  const bool use_batch_stats = is_training() || !tracking;
  return batch_norm2d(x, weight, bias, running_mean, running_var, use_batch_stats, factor, eps);
}

// ---------------------------------------------------------------------------------------------
// parameter-free layers

Tensor ReLU::forward(const Tensor& x) {
  return relu(x);
}

MaxPool2d::MaxPool2d(int64_t kernel_size, int64_t stride, int64_t padding, bool ceil_mode)
    : MaxPool2d(MaxPool2dOptions::make(kernel_size, stride == 0 ? kernel_size : stride, padding,
                                       ceil_mode)) {}

MaxPool2d::MaxPool2d(const MaxPool2dOptions& opts) : Module("MaxPool2d"), options(opts) {
  check_positive("MaxPool2d", "kernel height", opts.kernel_h);
  check_positive("MaxPool2d", "kernel width", opts.kernel_w);
  check_positive("MaxPool2d", "stride height", opts.stride_h);
  check_positive("MaxPool2d", "stride width", opts.stride_w);
}

Tensor MaxPool2d::forward(const Tensor& x) {
  return max_pool2d(x, options);
}

Dropout::Dropout(double prob, std::shared_ptr<Generator> gen)
    : Module("Dropout"), p(prob), generator(std::move(gen)) {
  SEG_CHECK(prob >= 0.0 && prob <= 1.0, "Dropout: probability ", prob, " outside [0, 1]");
  SEG_CHECK(generator != nullptr, "Dropout: the generator is null");
}

Tensor Dropout::forward(const Tensor& x) {
  return dropout(x, p, is_training(), *generator);
}

AdaptiveAvgPool2d::AdaptiveAvgPool2d(int64_t oh, int64_t ow)
    : Module("AdaptiveAvgPool2d"), out_h(oh), out_w(ow) {
  check_positive("AdaptiveAvgPool2d", "output height", oh);
  check_positive("AdaptiveAvgPool2d", "output width", ow);
}

Tensor AdaptiveAvgPool2d::forward(const Tensor& x) {
  return adaptive_avg_pool2d(x, out_h, out_w);
}

Upsample::Upsample(const UpsampleOptions& opts) : Module("Upsample"), options(opts) {
  if (opts.scale == 0.0) {
    check_positive("Upsample", "output height", opts.out_h);
    check_positive("Upsample", "output width", opts.out_w);
  } else {
    SEG_CHECK(opts.scale > 0.0 && std::isfinite(opts.scale), "Upsample: scale factor ", opts.scale,
              " must be positive");
  }
}

Tensor Upsample::forward(const Tensor& x) {
  if (options.scale == 0.0) {
    return upsample_bilinear2d(x, options.out_h, options.out_w, options.align_corners);
  }
  SEG_CHECK(x.defined() && x.dim() == 4, type_name(), ": expected a 4-D input (n, c, h, w), got ",
            x.str());
  const auto scaled = [&](int64_t size) {
    return static_cast<int64_t>(std::floor(static_cast<double>(size) * options.scale));
  };
  return upsample_bilinear2d(x, scaled(x.size(2)), scaled(x.size(3)), options.align_corners);
}

}  // namespace seg::nn
