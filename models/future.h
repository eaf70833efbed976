// Future frame prediction (FINDINGS.md, "Pretext tasks": input frames start+0, +2, +4, predict
// +6, +8, +10 at 128x256; per-frame encoder, temporal fusion with a (T,1,1) kernel over time, a
// decoder of ConvTranspose2d(2, stride 2) layers with BN+ReLU and skips, tanh output, L1 loss).
// Names (L = levels, C_l = base_channels * 2^l):
//   encoder.{0..L}.{0,1}        conv3x3 (no bias), BN (, ReLU as .2)
//   fuse.{0..L}.{0,1}           1x1 conv (K C_l -> C_l, no bias), BN (, ReLU as .2)
//   decoder.{0..L-1}.up.{0,1}   ConvTranspose2d(C_l -> C_{l-1}, 2, stride 2, no bias), BN (, ReLU)
//   decoder.{0..L-1}.conv.{0,1} conv3x3 (2 C_{l-1} -> C_{l-1}, no bias), BN (, ReLU)
//   head.{weight,bias}          1x1 conv (C_0 -> 3 M)
//
// Design notes
// - inputs (n, K, 3, H, W) -> (n, M, 3, H, W) in [-1, 1] (the range of data's future-frame
//   targets, kSymmetricNormalization). H and W must be divisible by 2^levels (an error names the
//   size otherwise): every level halves exactly, so each decoder step lands on its skip's size.
// - Encoder, shared over time (the K frames go through it as one batch of n K images): level 0 is
//   conv3x3 stride 1 (3 -> C_0) + BN + ReLU at full resolution; level l = 1..L is conv3x3 stride 2
//   (C_{l-1} -> C_l) + BN + ReLU at H / 2^l. Level 0 gives the last decoder step a full-resolution
//   skip (the fine detail of the frames), so there are L + 1 levels and L halvings.
// - Temporal fusion at every level: the K maps of a sample, concatenated along channels in time
//   order (frame 0's C_l channels first), go through a 1x1 conv K C_l -> C_l + BN + ReLU. A Conv3d
//   with kernel (K, 1, 1) and no temporal padding over the (n, C, K, h, w) stack computes the same
//   linear map: its weight (C, C, K, 1, 1) is ours permuted to (C, K, C) and reshaped, i.e.
//   ours[o][t C + c] = conv3d[o][c][t]. No Conv3d is needed (DESIGN.md).
// - Decoder, from the fused bottom map (level L) up: step i (level l = L - i -> l - 1) is
//   ConvTranspose2d(C_l -> C_{l-1}, kernel 2, stride 2) + BN + ReLU, concatenated with the fused
//   skip of level l - 1 ([skip, up], as UNet), then conv3x3 (2 C_{l-1} -> C_{l-1}) + BN + ReLU.
//   After L steps: full resolution, C_0 channels; `head` 1x1 conv to 3 M channels (output frame m
//   is channels 3m..3m+2), tanh.
// - Residual (an option, not the study's): frame m = tanh(head_m + atanh(last)), last being the last
//   input frame in [-1, 1] (clamped to +-(1 - 1e-3) so atanh stays finite), with the head's weight
//   and bias zero at init. A network that has learnt nothing then scores exactly the "repeat the
//   last frame" baseline, which a plain tanh decoder reaches only after learning to copy its input
//   through every skip; what it learns is the change from the last frame, in tanh's
//   pre-activation space. The atanh of the data is no part of the graph (no gradient).
// - Convs followed by BN have no bias; init is PyTorch's default for every conv (layers.h); BN
//   momentum 0.1 (PyTorch's).
// - Defaults: K = 3, M = 3 (the study), base_channels 32, levels 4: widths 32..512, bottom at
//   H / 16 (8 x 16 for 128 x 256).
#pragma once

#include <memory>

#include "engine/nn/layers.h"

namespace seg::models {

struct FutureFrameNetOptions {
  int64_t inputs = 3;   // K
  int64_t outputs = 3;  // M
  int64_t base_channels = 32;
  int levels = 4;  // L: halvings; H and W divisible by 2^L
  // Residual output (see the notes): every predicted frame is tanh(head + atanh(last input)),
  // the head initialised to zero, so an untrained network repeats the last input frame.
  bool residual = false;
};

// One decoder step: up (transposed conv, BN, ReLU), concatenation with the skip, conv (3x3, BN,
// ReLU).
class FutureUp : public nn::Module {
 public:
  FutureUp(int64_t in, int64_t out, Generator& gen);
  using nn::Module::forward;  // the single-input form throws: FutureUp takes two inputs
  // x (n, in, h, w), skip (n, out, 2h, 2w) -> (n, out, 2h, 2w).
  Tensor forward(const Tensor& x, const Tensor& skip);

  std::shared_ptr<nn::Sequential> up;
  std::shared_ptr<nn::Sequential> conv;
};

class FutureFrameNet : public nn::Module {
 public:
  FutureFrameNet(const FutureFrameNetOptions& options, Generator& gen);

  // inputs (n, K, 3, H, W) -> predictions (n, M, 3, H, W) in [-1, 1]. Not residual only.
  Tensor forward(const Tensor& inputs) override;
  // With the last input frame in the predictions' [-1, 1] scale, last (n, 3, H, W) (data: the
  // inputs are normalised otherwise); required when residual, ignored (may be undefined) if not.
  Tensor forward(const Tensor& inputs, const Tensor& last);
  // C_l = base_channels * 2^l, l = 0..levels.
  int64_t channels(int level) const;

  const FutureFrameNetOptions options;
  std::shared_ptr<nn::Sequential> encoder;  // levels + 1 Sequentials (conv, BN, ReLU)
  std::shared_ptr<nn::Sequential> fuse;     // levels + 1 Sequentials (1x1 conv, BN, ReLU)
  std::shared_ptr<nn::Sequential> decoder;  // levels FutureUp
  std::shared_ptr<nn::Conv2d> head;
};

}  // namespace seg::models
