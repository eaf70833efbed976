#include "models/unet.h"

#include <string>

namespace seg::models {

DoubleConv::DoubleConv(int64_t in, int64_t out, int64_t mid, bool bias, Generator& gen)
    : nn::Module("DoubleConv") {
  const Conv2dOptions same = Conv2dOptions::make(1, 1);
  double_conv = register_module("double_conv", std::make_shared<nn::Sequential>());
  double_conv->append(std::make_shared<nn::Conv2d>(in, mid, 3, gen, same, bias));
  double_conv->append(std::make_shared<nn::BatchNorm2d>(mid));
  double_conv->append(std::make_shared<nn::ReLU>());
  double_conv->append(std::make_shared<nn::Conv2d>(mid, out, 3, gen, same, bias));
  double_conv->append(std::make_shared<nn::BatchNorm2d>(out));
  double_conv->append(std::make_shared<nn::ReLU>());
}

Tensor DoubleConv::forward(const Tensor& x) { return double_conv->forward(x); }

Down::Down(int64_t in, int64_t out, bool bias, Generator& gen) : nn::Module("Down") {
  maxpool_conv = register_module("maxpool_conv", std::make_shared<nn::Sequential>());
  maxpool_conv->append(std::make_shared<nn::MaxPool2d>(2));
  maxpool_conv->append(std::make_shared<DoubleConv>(in, out, out, bias, gen));
}

Tensor Down::forward(const Tensor& x) { return maxpool_conv->forward(x); }

Up::Up(int64_t in, int64_t out, bool bilinear, bool bias, Generator& gen) : nn::Module("Up") {
  if (bilinear) {
    up = register_module("up", std::make_shared<nn::Upsample>(
                                   nn::UpsampleOptions{0, 0, 2.0, /*align_corners=*/true}));
    conv = register_module("conv", std::make_shared<DoubleConv>(in, out, in / 2, bias, gen));
  } else {
    up = register_module("up", std::make_shared<nn::ConvTranspose2d>(
                                   in, in / 2, 2, gen, ConvTranspose2dOptions::make(2, 0)));
    conv = register_module("conv", std::make_shared<DoubleConv>(in, out, out, bias, gen));
  }
}

Tensor Up::forward(const Tensor& x, const Tensor& skip) {
  Tensor u = up->forward(x);
  const int64_t dy = skip.size(2) - u.size(2);
  const int64_t dx = skip.size(3) - u.size(3);
  if (dy != 0 || dx != 0) u = pad2d(u, {dx / 2, dx - dx / 2, dy / 2, dy - dy / 2});
  return conv->forward(cat({skip, u}, 1));
}

UNet::UNet(const UNetOptions& opts, Generator& gen) : nn::Module("UNet"), options(opts) {
  SEG_CHECK(opts.depth >= 1 && opts.base_channels >= 1 && opts.in_channels >= 1 && opts.num_classes >= 1,
            "UNet: invalid options (depth ", opts.depth, ", base_channels ", opts.base_channels, ")");
  const int64_t factor = opts.bilinear ? 2 : 1;
  const int64_t b = opts.base_channels;
  inc = register_module("inc", std::make_shared<DoubleConv>(opts.in_channels, b, b, opts.conv_bias, gen));
  for (int i = 1; i <= opts.depth; ++i) {
    int64_t in = b << (i - 1), out = b << i;
    if (i == opts.depth) out /= factor;
    downs.push_back(register_module("down" + std::to_string(i),
                                    std::make_shared<Down>(in, out, opts.conv_bias, gen)));
  }
  for (int i = 1; i <= opts.depth; ++i) {
    int level = opts.depth - i;  // the skip's level
    int64_t in = b << (level + 1), out = b << level;
    if (i != opts.depth) out /= factor;
    ups.push_back(register_module("up" + std::to_string(i),
                                  std::make_shared<Up>(in, out, opts.bilinear, opts.conv_bias, gen)));
  }
  auto outc = register_module("outc", std::make_shared<nn::Module>("OutConv"));
  outc_conv = outc->register_module("conv", std::make_shared<nn::Conv2d>(b, opts.num_classes, 1, gen));
}

Tensor UNet::forward(const Tensor& x) {
  SEG_CHECK(x.dim() == 4 && x.size(1) == options.in_channels, "UNet: expected input (n, ",
            options.in_channels, ", h, w), got ", x.str());
  std::vector<Tensor> skips{inc->forward(x)};
  for (auto& d : downs) skips.push_back(d->forward(skips.back()));
  Tensor y = skips.back();
  for (size_t i = 0; i < ups.size(); ++i) y = ups[i]->forward(y, skips[skips.size() - 2 - i]);
  return outc_conv->forward(y);
}

}  // namespace seg::models
