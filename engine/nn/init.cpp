// nn::init (see init.h). Formulas from torch/nn/init.py (PyTorch 1.13).
//
// A tensor with no elements is left as it is (PyTorch warns and returns); a zero fan is an error
// naming the tensor (PyTorch would divide by zero). The fills run under NoGradGuard, as PyTorch's
// do: a parameter is a leaf that requires grad, which an in-place update may not change otherwise.
#include "engine/nn/init.h"

#include <cmath>

#include "engine/autograd.h"

namespace seg::nn::init {

namespace {

const char* nonlinearity_name(Nonlinearity n) {
  switch (n) {
    case Nonlinearity::linear: return "linear";
    case Nonlinearity::conv2d: return "conv2d";
    case Nonlinearity::conv_transpose2d: return "conv_transpose2d";
    case Nonlinearity::sigmoid: return "sigmoid";
    case Nonlinearity::tanh: return "tanh";
    case Nonlinearity::relu: return "relu";
    case Nonlinearity::leaky_relu: return "leaky_relu";
    case Nonlinearity::selu: return "selu";
  }
  return "?";
}

int64_t correct_fan(const Tensor& t, FanMode mode, const char* what) {
  Fans f = calculate_fans(t);
  int64_t fan = mode == FanMode::fan_in ? f.fan_in : f.fan_out;
  SEG_CHECK(fan > 0, what, ": ", mode == FanMode::fan_in ? "fan_in" : "fan_out", " of ", t.str(),
            " is 0");
  return fan;
}

void check_fillable(const Tensor& t, const char* what) {
  SEG_CHECK(t.defined(), what, ": undefined tensor");
  SEG_CHECK(is_floating(t.dtype()), what, ": ", t.str(), " is not floating");
}

}  // namespace

Fans calculate_fans(const Tensor& t) {
  SEG_CHECK(t.defined() && t.dim() >= 2,
            "calculate_fans: fan in and fan out cannot be computed for a tensor with fewer than 2 "
            "dims (",
            t.str(), ")");
  int64_t receptive = 1;
  for (int d = 2; d < t.dim(); ++d) receptive *= t.size(d);
  return Fans{t.size(1) * receptive, t.size(0) * receptive};
}

double calculate_gain(Nonlinearity nonlinearity, std::optional<double> param) {
  switch (nonlinearity) {
    case Nonlinearity::linear:
    case Nonlinearity::conv2d:
    case Nonlinearity::conv_transpose2d:
    case Nonlinearity::sigmoid: return 1.0;
    case Nonlinearity::tanh: return 5.0 / 3.0;
    case Nonlinearity::relu: return std::sqrt(2.0);
    case Nonlinearity::leaky_relu: {
      const double slope = param.value_or(0.01);
      return std::sqrt(2.0 / (1.0 + slope * slope));
    }
    case Nonlinearity::selu: return 3.0 / 4.0;
  }
  SEG_CHECK(false, "calculate_gain: unknown nonlinearity ", nonlinearity_name(nonlinearity));
  return 1.0;
}

Tensor uniform_(const Tensor& t, Generator& gen, double low, double high) {
  check_fillable(t, "uniform_");
  SEG_CHECK(low <= high, "uniform_: low ", low, " > high ", high);
  if (t.numel() == 0) return t;
  NoGradGuard no_grad;
  Tensor h = t;  // a handle: fills t's storage
  h.uniform_(gen, low, high);
  return h;
}

Tensor normal_(const Tensor& t, Generator& gen, double mean, double std) {
  check_fillable(t, "normal_");
  SEG_CHECK(std >= 0.0, "normal_: negative std ", std);
  if (t.numel() == 0) return t;
  NoGradGuard no_grad;
  Tensor h = t;
  h.normal_(gen, mean, std);
  return h;
}

Tensor constant_(const Tensor& t, double value) {
  SEG_CHECK(t.defined(), "constant_: undefined tensor");
  NoGradGuard no_grad;
  Tensor h = t;
  if (h.numel() > 0) h.fill_(value);
  return h;
}

Tensor zeros_(const Tensor& t) {
  return constant_(t, 0.0);
}
Tensor ones_(const Tensor& t) {
  return constant_(t, 1.0);
}

double kaiming_std(const Tensor& t, double a, FanMode mode, Nonlinearity nonlinearity) {
  const int64_t fan = correct_fan(t, mode, "kaiming");
  return calculate_gain(nonlinearity, a) / std::sqrt(static_cast<double>(fan));
}

double kaiming_uniform_bound(const Tensor& t, double a, FanMode mode, Nonlinearity nonlinearity) {
  return std::sqrt(3.0) * kaiming_std(t, a, mode, nonlinearity);
}

double xavier_std(const Tensor& t, double gain) {
  Fans f = calculate_fans(t);
  SEG_CHECK(f.fan_in + f.fan_out > 0, "xavier: fan_in + fan_out of ", t.str(), " is 0");
  return gain * std::sqrt(2.0 / static_cast<double>(f.fan_in + f.fan_out));
}

Tensor kaiming_uniform_(const Tensor& t, Generator& gen, double a, FanMode mode,
                        Nonlinearity nonlinearity) {
  check_fillable(t, "kaiming_uniform_");
  if (t.numel() == 0) return t;
  const double bound = kaiming_uniform_bound(t, a, mode, nonlinearity);
  return uniform_(t, gen, -bound, bound);
}

Tensor kaiming_normal_(const Tensor& t, Generator& gen, double a, FanMode mode,
                       Nonlinearity nonlinearity) {
  check_fillable(t, "kaiming_normal_");
  if (t.numel() == 0) return t;
  return normal_(t, gen, 0.0, kaiming_std(t, a, mode, nonlinearity));
}

Tensor xavier_uniform_(const Tensor& t, Generator& gen, double gain) {
  check_fillable(t, "xavier_uniform_");
  if (t.numel() == 0) return t;
  const double bound = std::sqrt(3.0) * xavier_std(t, gain);
  return uniform_(t, gen, -bound, bound);
}

Tensor xavier_normal_(const Tensor& t, Generator& gen, double gain) {
  check_fillable(t, "xavier_normal_");
  if (t.numel() == 0) return t;
  return normal_(t, gen, 0.0, xavier_std(t, gain));
}

}  // namespace seg::nn::init
