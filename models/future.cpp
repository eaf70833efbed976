// Future frame prediction (design notes in future.h).
#include "models/future.h"

#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace seg::models {

namespace {

// conv (no bias), BN, ReLU as a Sequential ("0", "1", "2").
template <class Conv>
std::shared_ptr<nn::Sequential> with_bn_relu(std::shared_ptr<Conv> conv, int64_t out) {
  auto s = std::make_shared<nn::Sequential>();
  s->append(std::move(conv));
  s->append(std::make_shared<nn::BatchNorm2d>(out));
  s->append(std::make_shared<nn::ReLU>());
  return s;
}

std::shared_ptr<nn::Sequential> conv_bn_relu(int64_t in, int64_t out, int64_t k, int64_t stride,
                                             Generator& gen) {
  const Conv2dOptions o = Conv2dOptions::make(stride, k / 2);
  return with_bn_relu(std::make_shared<nn::Conv2d>(in, out, k, gen, o, false), out);
}

}  // namespace

FutureUp::FutureUp(int64_t in, int64_t out, Generator& gen) : nn::Module("FutureUp") {
  up = register_module("up",
                       with_bn_relu(std::make_shared<nn::ConvTranspose2d>(
                                        in, out, 2, gen, ConvTranspose2dOptions::make(2, 0), false),
                                    out));
  conv = register_module("conv", conv_bn_relu(2 * out, out, 3, 1, gen));
}

Tensor FutureUp::forward(const Tensor& x, const Tensor& skip) {
  return conv->forward(cat({skip, up->forward(x)}, 1));
}

FutureFrameNet::FutureFrameNet(const FutureFrameNetOptions& opts, Generator& gen)
    : nn::Module("FutureFrameNet"), options(opts) {
  SEG_CHECK(opts.inputs >= 1 && opts.outputs >= 1 && opts.base_channels >= 1 && opts.levels >= 1 &&
                opts.levels <= 16,
            "FutureFrameNet: invalid options (inputs ", opts.inputs, ", outputs ", opts.outputs,
            ", base_channels ", opts.base_channels, ", levels ", opts.levels, ")");
  const int levels = opts.levels;
  encoder = register_module("encoder", std::make_shared<nn::Sequential>());
  for (int l = 0; l <= levels; ++l) {
    encoder->append(
        conv_bn_relu(l == 0 ? 3 : channels(l - 1), channels(l), 3, l == 0 ? 1 : 2, gen));
  }
  fuse = register_module("fuse", std::make_shared<nn::Sequential>());
  for (int l = 0; l <= levels; ++l) {
    fuse->append(conv_bn_relu(opts.inputs * channels(l), channels(l), 1, 1, gen));
  }
  decoder = register_module("decoder", std::make_shared<nn::Sequential>());
  for (int l = levels; l >= 1; --l) {
    decoder->append(std::make_shared<FutureUp>(channels(l), channels(l - 1), gen));
  }
  head =
      register_module("head", std::make_shared<nn::Conv2d>(channels(0), 3 * opts.outputs, 1, gen));
  if (opts.residual) {
    NoGradGuard no_grad;
    head->weight.fill_(0.0);
    head->bias.fill_(0.0);
  }
}

int64_t FutureFrameNet::channels(int level) const {
  SEG_CHECK(level >= 0 && level <= options.levels, "FutureFrameNet: level ", level,
            " is not one of 0..", options.levels);
  return options.base_channels << level;
}

Tensor FutureFrameNet::forward(const Tensor& inputs) {
  SEG_CHECK(!options.residual,
            "FutureFrameNet: a residual network needs the last input frame: forward(inputs, last)");
  return forward(inputs, Tensor());
}

Tensor FutureFrameNet::forward(const Tensor& inputs, const Tensor& last) {
  const int64_t k = options.inputs;
  SEG_CHECK(inputs.defined() && inputs.dim() == 5 && inputs.size(1) == k && inputs.size(2) == 3,
            "FutureFrameNet: expected inputs (n, ", k, ", 3, H, W), got ", inputs.str());
  const int64_t n = inputs.size(0), height = inputs.size(3), width = inputs.size(4);
  const int64_t multiple = int64_t{1} << options.levels;
  SEG_CHECK(height % multiple == 0 && width % multiple == 0 && height > 0 && width > 0,
            "FutureFrameNet: inputs ", inputs.str(), ": H x W = ", height, " x ", width,
            " must be divisible by 2^levels = ", multiple, " (levels ", options.levels, ")");
  // Encoder over all n K frames, then fusion over time at every level.
  Tensor x = inputs.reshape({n * k, 3, height, width});
  std::vector<Tensor> fused;
  for (size_t l = 0; l < encoder->size(); ++l) {
    x = (*encoder)[l]->forward(x);  // (n K, C_l, h, w)
    // (n K, C, h, w) -> (n, K C, h, w): frame t's channels at t C .. t C + C - 1.
    Tensor stacked = x.reshape({n, k * x.size(1), x.size(2), x.size(3)});
    fused.push_back((*fuse)[l]->forward(stacked));
  }
  Tensor y = fused.back();
  for (size_t i = 0; i < decoder->size(); ++i) {
    y = decoder->at<FutureUp>(i)->forward(y, fused[fused.size() - 2 - i]);
  }
  y = head->forward(y);  // (n, 3 M, H, W)
  if (options.residual) {
    SEG_CHECK(last.defined() && last.dim() == 4 && last.size(0) == n && last.size(1) == 3 &&
                  last.size(2) == height && last.size(3) == width,
              "FutureFrameNet: expected the last frame (", n, ", 3, ", height, ", ", width,
              "), got ", last.defined() ? last.str() : std::string("none"));
    constexpr double kEdge = 1.0 - 1e-3;
    Tensor base;
    {
      NoGradGuard no_grad;
      // clamp to [-kEdge, kEdge] with the ops there are: max with -kEdge, then min with kEdge.
      const Tensor lo = add_scalar(relu(add_scalar(last.detach(), kEdge)), -kEdge);
      const Tensor c = rsub_scalar(kEdge, relu(rsub_scalar(kEdge, lo)));
      base = mul_scalar(log(add_scalar(c, 1.0) / rsub_scalar(1.0, c)), 0.5);  // atanh
    }
    y = y.reshape({n, options.outputs, 3, height, width}) + base.unsqueeze(1);
    return tanh(y);
  }
  y = tanh(y);
  return y.reshape({n, options.outputs, 3, height, width});
}

}  // namespace seg::models
