// nn::init: PyTorch's torch.nn.init, same formulas (fans, gains, bounds), drawing from an explicit
// Generator (there is no global one). Each function fills the tensor in place (a Tensor is a
// handle: the caller's tensor changes), without recording autograd, and returns it. The draws come
// from our Philox stream, so the values differ from PyTorch's while the distributions are the same.
#pragma once

#include <cstdint>
#include <optional>

#include "engine/random.h"
#include "engine/tensor.h"

namespace seg::nn::init {

enum class FanMode { fan_in, fan_out };
enum class Nonlinearity { linear, conv2d, conv_transpose2d, sigmoid, tanh, relu, leaky_relu, selu };

struct Fans {
  int64_t fan_in = 0;
  int64_t fan_out = 0;
};

// PyTorch's _calculate_fan_in_and_fan_out: for a (out, in, *kernel) tensor, fan_in = size(1) *
// prod(kernel), fan_out = size(0) * prod(kernel). Throws for fewer than 2 dims. Note that for a
// ConvTranspose2d weight (in, out, kh, kw) this makes fan_in = out * kh * kw, as in PyTorch.
Fans calculate_fans(const Tensor& t);

// PyTorch's calculate_gain: linear/conv/sigmoid 1, tanh 5/3, relu sqrt(2), selu 3/4, leaky_relu
// sqrt(2 / (1 + slope^2)) with slope = `param` (default 0.01).
double calculate_gain(Nonlinearity nonlinearity, std::optional<double> param = std::nullopt);

Tensor uniform_(const Tensor& t, Generator& gen, double low = 0.0, double high = 1.0);
Tensor normal_(const Tensor& t, Generator& gen, double mean = 0.0, double std = 1.0);
Tensor constant_(const Tensor& t, double value);
Tensor zeros_(const Tensor& t);
Tensor ones_(const Tensor& t);

// U(-bound, bound), bound = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a).
// The defaults are PyTorch's (a = 0, fan_in, leaky_relu: i.e. He uniform).
Tensor kaiming_uniform_(const Tensor& t, Generator& gen, double a = 0.0,
                        FanMode mode = FanMode::fan_in,
                        Nonlinearity nonlinearity = Nonlinearity::leaky_relu);
// N(0, std^2), std = gain / sqrt(fan).
Tensor kaiming_normal_(const Tensor& t, Generator& gen, double a = 0.0,
                       FanMode mode = FanMode::fan_in,
                       Nonlinearity nonlinearity = Nonlinearity::leaky_relu);
// U(-bound, bound), bound = gain * sqrt(6 / (fan_in + fan_out)).
Tensor xavier_uniform_(const Tensor& t, Generator& gen, double gain = 1.0);
// N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out)).
Tensor xavier_normal_(const Tensor& t, Generator& gen, double gain = 1.0);

// The bounds and standard deviations the functions above use (for layers and tests).
double kaiming_std(const Tensor& t, double a, FanMode mode, Nonlinearity nonlinearity);
double kaiming_uniform_bound(const Tensor& t, double a, FanMode mode, Nonlinearity nonlinearity);
double xavier_std(const Tensor& t, double gain);

}  // namespace seg::nn::init
