// nn layers with PyTorch's parameter names, shapes and default initialisations, so that a
// state_dict moves between PyTorch and us unchanged.
//
// Design notes
// - Random initialisation takes a Generator& at construction (no global generator): the same seed
//   and the same construction order give the same weights. The draws are ours (Philox), so the
//   values differ from PyTorch's while the distributions are PyTorch's:
//     Conv2d / ConvTranspose2d / Linear: weight kaiming_uniform_(a = sqrt(5)), i.e.
//       U(-1/sqrt(fan_in), 1/sqrt(fan_in)); bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in from
//       init::calculate_fans(weight) (ConvTranspose2d: weight.size(1) * kh * kw, as PyTorch).
//     BatchNorm2d: weight 1, bias 0, running_mean 0, running_var 1, num_batches_tracked 0 (i64).
// - Parameters are f32 on the CPU when built; Module::to() converts a whole model.
// - Layers that have no parameters (ReLU, MaxPool2d, ...) are modules too, so a torch
//   nn.Sequential and ours number their children identically.
// - Dropout keeps a std::shared_ptr<Generator> given at construction: the random stream is shared
//   with whoever else holds it (typically the trainer), never global.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/nn/module.h"
#include "engine/ops.h"

namespace seg::nn {

// Children "0", "1", ... run in order; an empty Sequential returns its input.
class Sequential : public Module {
 public:
  Sequential() : Module("Sequential") {}
  explicit Sequential(const std::vector<std::shared_ptr<Module>>& modules);

  // Appends `module` as child "<size()>" and returns it.
  template <class M>
  std::shared_ptr<M> append(std::shared_ptr<M> module) {
    return register_module(std::to_string(size()), std::move(module));
  }
  size_t size() const { return named_children().size(); }
  std::shared_ptr<Module> operator[](size_t index) const;
  // Child `index` as an M; throws naming both types when it is not one.
  template <class M>
  std::shared_ptr<M> at(size_t index) const {
    std::shared_ptr<Module> m = (*this)[index];
    auto typed = std::dynamic_pointer_cast<M>(m);
    SEG_CHECK(typed != nullptr, type_name(), ": child ", index, " is a ", m->type_name(),
              ", not the type requested");
    return typed;
  }

  Tensor forward(const Tensor& x) override;
};

// weight (out, in, kh, kw), bias (out).
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, Generator& gen,
         const Conv2dOptions& options = Conv2dOptions(), bool bias = true);
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_h, int64_t kernel_w,
         Generator& gen, const Conv2dOptions& options = Conv2dOptions(), bool bias = true);
  Tensor forward(const Tensor& x) override;

  const int64_t in_channels, out_channels, kernel_h, kernel_w;
  const Conv2dOptions options;
  Tensor weight;  // (out, in, kh, kw)
  Tensor bias;    // (out), or undefined
};

// weight (in, out, kh, kw) as PyTorch's ConvTranspose2d, bias (out).
class ConvTranspose2d : public Module {
 public:
  ConvTranspose2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, Generator& gen,
                  const ConvTranspose2dOptions& options = ConvTranspose2dOptions(),
                  bool bias = true);
  ConvTranspose2d(int64_t in_channels, int64_t out_channels, int64_t kernel_h, int64_t kernel_w,
                  Generator& gen, const ConvTranspose2dOptions& options = ConvTranspose2dOptions(),
                  bool bias = true);
  Tensor forward(const Tensor& x) override;

  const int64_t in_channels, out_channels, kernel_h, kernel_w;
  const ConvTranspose2dOptions options;
  Tensor weight;  // (in, out, kh, kw)
  Tensor bias;    // (out), or undefined
};

// weight (out, in), bias (out); x (..., in) -> (..., out).
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, Generator& gen, bool bias = true);
  Tensor forward(const Tensor& x) override;

  const int64_t in_features, out_features;
  Tensor weight;  // (out, in)
  Tensor bias;    // (out), or undefined
};

// PyTorch's BatchNorm2d. Training: batch statistics; running statistics updated with `momentum`
// (new = (1 - m) * old + m * batch, unbiased batch variance), or, when momentum is nullopt, the
// cumulative average (m = 1 / num_batches_tracked); num_batches_tracked += 1 per training forward.
// Evaluation: running statistics. Without track_running_stats there are no buffers and batch
// statistics are used in both modes.
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t num_features, double eps = 1e-5,
                       std::optional<double> momentum = 0.1, bool affine = true,
                       bool track_running_stats = true);
  Tensor forward(const Tensor& x) override;

  const int64_t num_features;
  double eps;
  std::optional<double> momentum;
  Tensor weight, bias;                                    // (c), or undefined without affine
  Tensor running_mean, running_var, num_batches_tracked;  // (c), (c), () i64, or undefined
};

class ReLU : public Module {
 public:
  ReLU() : Module("ReLU") {}
  Tensor forward(const Tensor& x) override;
};

class MaxPool2d : public Module {
 public:
  // stride 0 means stride = kernel_size (PyTorch's default).
  explicit MaxPool2d(int64_t kernel_size, int64_t stride = 0, int64_t padding = 0,
                     bool ceil_mode = false);
  explicit MaxPool2d(const MaxPool2dOptions& options);
  Tensor forward(const Tensor& x) override;

  const MaxPool2dOptions options;
};

// Training: zeroes each element with probability p and scales the rest by 1 / (1 - p), drawing
// from the generator; evaluation: identity.
class Dropout : public Module {
 public:
  Dropout(double p, std::shared_ptr<Generator> gen);
  Tensor forward(const Tensor& x) override;

  const double p;
  const std::shared_ptr<Generator> generator;
};

class Identity : public Module {
 public:
  Identity() : Module("Identity") {}
  Tensor forward(const Tensor& x) override { return x; }
};

// Flattens dims start_dim..end_dim (PyTorch's nn.Flatten defaults: 1, -1).
class Flatten : public Module {
 public:
  explicit Flatten(int start = 1, int end = -1)
      : Module("Flatten"), start_dim(start), end_dim(end) {}
  Tensor forward(const Tensor& x) override { return x.flatten(start_dim, end_dim); }

  const int start_dim, end_dim;
};

class AdaptiveAvgPool2d : public Module {
 public:
  AdaptiveAvgPool2d(int64_t out_h, int64_t out_w);
  Tensor forward(const Tensor& x) override;

  const int64_t out_h, out_w;
};

// Bilinear upsampling to a fixed size, or by a scale factor (output floor(size * scale)). With a
// scale factor, the sampling grid is computed from the input and output sizes; that equals
// PyTorch's nn.Upsample(scale_factor=s) exactly when size * s is an integer (e.g. integer s).
struct UpsampleOptions {
  int64_t out_h = 0, out_w = 0;  // used when scale is 0
  double scale = 0.0;
  bool align_corners = false;
};

class Upsample : public Module {
 public:
  explicit Upsample(const UpsampleOptions& options);
  Tensor forward(const Tensor& x) override;

  const UpsampleOptions options;
};

}  // namespace seg::nn
