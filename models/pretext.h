// The networks of the three pretext tasks on Cityscapes video (FINDINGS.md, "Pretext tasks"):
// triplet loss on temporal position, frame order prediction and video colorization. Each holds
// its ResNet (models/resnet.h, no fc) as the child `backbone`, exactly as DeepLabv3 does, so a
// pretext checkpoint's `backbone.*` tensors initialise DeepLabv3's backbone by name, every one of
// them with the same shape (pretext_backbone_options() below; load_pretrained refuses a transfer
// that leaves any backbone tensor unloaded). Names:
//   TripletNet       backbone.*  [projection.{weight,bias}]
//   FrameOrderNet    backbone.*  pair_fc.{weight,bias}  (dropout)  classifier.{weight,bias}
//   ColorizationNet  backbone.*  embed.{weight,bias}
//
// Design notes
// - Backbone: ResNetOptions as for DeepLabv3 (depth 50/101 or 4 block counts, base_channels b).
//   The options must describe a ResNet without fc (num_classes 0) on 3 input channels: an error
//   names the option otherwise. Default depth 101, the depth of the study's DeepLabv3 rows; the
//   study's pretext encoders were ResNet-50 while its table is ResNet-101, so their transfer could
//   not have worked (FINDINGS.md); ResNet-50 is depth 50. Dilation does not change any name or
//   shape, so a backbone trained at one output stride transfers to DeepLabv3 at another.
// - One backbone pass per step: the triplet's anchor, positive and negative, and the frames of a
//   frame-order sample, are concatenated along the batch and go through the backbone together. In
//   training every BatchNorm then normalises with statistics over all 3n (or n*T) images and
//   updates its running statistics once per step. Why: the three roles (or the T frames) are
//   normalised identically, so the distances and pair features compare like with like; separate
//   passes would normalise each role with its own batch statistics, shifting each role's features
//   by a per-batch offset that has nothing to do with the content; the larger batch (24 images
//   for the study's batch 8) also gives steadier statistics, and one pass is faster. A PyTorch
//   model that calls a shared encoder three times (which the study's code presumably did;
//   FINDINGS.md only says "shared encoder") trains with per-role statistics instead. The
//   reference (tests/reference/ref_pretext.py) does what we do.
// - Init: backbone as torchvision's ResNet (resnet.h); heads (projection, pair_fc, classifier,
//   embed) PyTorch's default for Linear / Conv2d (layers.h), drawn from the caller's Generator.
//
// TripletNet (study: ResNet-50 from scratch, global pooled 2048-d, loss relu(d(a,p) - d(a,n) + 1)
// with L1 distance, Adam lr 1e-3, batch 8)
// - backbone -> global average pool -> (n, 32 b) -> optional `projection` Linear(32 b -> d).
//   embedding_dim 0 (the study's): no projection, d = 32 b (2048 for ResNet-50/101).
// - The app applies triplet_margin_loss (engine/ops.h; p = 1 as the study, margin 1) to embed()'s
//   three outputs; triplet_correct() counts d(a, p) < d(a, n) for the study's triplet accuracy.
//
// FrameOrderNet (study: frames start+8, +10, +12 shuffled, 6 classes; Linear(4096 -> 512) + ReLU
// on each pair; concat 1536 -> Dropout 0.5 -> Linear(1536 -> 6); Adam lr 1e-5, batch 8)
// - frames (n, T, 3, H, W), T = num_frames (3 or 4) -> backbone on all n*T frames -> GAP ->
//   features f (n, T, F), F = 32 b; for every pair (i, j), i < j, in lexicographic order ((0,1),
//   (0,2), (1,2) for T = 3; 6 pairs for T = 4): `pair_fc`(cat[f_i, f_j]) (2F -> pair_hidden), ReLU,
//   the same layer for all pairs; the P pair outputs concatenated in that order (n, P * hidden) ->
//   Dropout(p) -> `classifier` Linear(P * hidden -> T!). Class k is the k-th permutation in
//   lexicographic order, the label convention of data/datasets.h's FrameOrderDataset.
// - Dropout draws from the Generator the model is given (std::shared_ptr, never global) and
//   exposes as `dropout_generator`, as DeepLabV3 does, so a trainer saves and restores its state
//   with the checkpoint (TrainState::add_generator).
//
// ColorizationNet (Vondrick et al. 2018, "Tracking emerges by colorizing videos"; the study's code
// pooled space to 1x1 and could not run, FINDINGS.md: this implements the intended method)
// - grey (n, R+1, 1, H, W): R reference frames then the target, values L / 50 - 1 in [-1, 1] as
//   data/datasets.h's colorization sample. Each grey frame is replicated to 3 channels so that the
//   backbone's conv1 has 3 input channels (its shape then equals DeepLabv3's and transfers).
// - backbone at `output_stride` (default 8: layer3 and layer4 dilated, replace_stride_with_dilation
//   {false, true, true}; the options' own flags are replaced) -> layer4 (n (R+1), 32 b, h, w) ->
//   `embed` 1x1 conv (32 b -> embed_dim, with bias) -> per sample, target features f_t (h w, D) and
//   reference features f_r (R h w, D), reference pixel index r h w + y w + x.
//   Attention A = softmax over the reference pixels of f_t f_r^T / temperature, (n, h w, R h w).
//   h = ceil(H / s), w = ceil(W / s) for output stride s (ceil at each stride-2 step).
// - temperature (default 1: plain dot products) divides the logits. At init it leaves the
//   attention focused but not saturated; measured once with torchvision's ResNet-50 at output
//   stride 8, default init, embed_dim 64, smooth random 128 x 256 grey frames shifted by a few
//   pixels, BN in training mode: the logits' std is 7.6; at temperature 1 a target pixel's
//   largest weight averages 0.67 (entropy 1.1 nats, uniform 7.3), while at sqrt(64) = 8 (scaled
//   dot-product attention's choice) the attention is almost uniform (0.0095; 7.0 nats) and the
//   first prediction is about the references' mean colour. The embedding's scale is learned, so
//   training can reach any sharpness; the temperature sets the start.
// - copy(A, values (n, R, K, h, w)) = the attention-weighted reference values, (n, K, h, w).
// - Two colour modes (Lab a, b of the frames, from data's "lab" (n, R+1, 3, H, W), L in [0, 100]):
//   - ab: the values are each frame's a, b area-averaged to h x w (adaptive average pooling: the
//     mean over each s x s cell when s divides H and W) and divided by ab_scale = 110, so about
//     [-1, 1] (sRGB's gamut spans a in [-86, 98], b in [-108, 95]). prediction = copy(A, the
//     references' values) (n, 2, h, w); loss = L1 (mean) against the target's values.
//   - bins: a fixed uniform grid of Q x Q bins (Q = bins, default 16) over [-ab_range, ab_range]^2
//     (ab_range 110: covers the sRGB gamut; bin width 13.75 for Q = 16); bin index
//     qa * Q + qb with q = clamp(floor((v + ab_range) / width), 0, Q - 1), computed from the
//     area-averaged ab at h x w. The values are the one-hot (n, R+1, Q^2, h, w) of each pixel's
//     bin; prediction = copy(A, the references' one-hots), a distribution over the bins; loss =
//     mean over target pixels of -log(p[true bin] + bin_eps). p is exactly 0 where no reference
//     pixel has the target's bin: bin_eps (1e-6) bounds that pixel's loss at log(1e6) = 13.8, with
//     no gradient. The one-hot is built on the host from the (small) pooled ab, then moved to the
//     lab tensor's device (the engine has no one-hot/scatter op; it is data, not differentiated).
//   - predicted_ab(): the prediction as Lab a, b at the input resolution (n, 2, H, W): ab mode the
//     prediction times ab_scale, bins mode the expected ab (sum over bins of p times the bin's
//     centre), bilinearly upsampled (align_corners=false). colorization_error() is its mean
//     absolute difference to the target's a, b (the study's colorization error), colorized_lab()
//     joins it with the target's L for sample images (data/transforms.h lab_to_image).
// - Where we differ from Vondrick et al.: their encoder is a ResNet-18 followed by 3-D
//   convolutions, and their colour classes come from k-means clustering of Lab colours; here the
//   encoder is the ResNet that transfers to DeepLabv3, and the colours are either continuous ab
//   with an L1 loss or a fixed uniform grid of ab bins with the cross entropy.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/init.h"
#include "models/resnet.h"

namespace seg::models {

// ---------------------------------------------------------------------------------------------
// Triplet

struct TripletNetOptions {
  ResNetOptions backbone;     // no fc, 3 input channels
  int64_t embedding_dim = 0;  // 0: no projection, the embedding is the pooled (32 b) feature
};

struct TripletEmbeddings {
  Tensor anchor, positive, negative;  // (n, d) each
};

class TripletNet : public nn::Module {
 public:
  TripletNet(const TripletNetOptions& options, Generator& gen);

  // x (n, 3, H, W) -> embeddings (n, d).
  Tensor forward(const Tensor& x) override;
  // The three inputs (n, 3, H, W each, same shape) in one backbone pass (see the notes: BatchNorm
  // sees all 3n images), split back into the three roles.
  TripletEmbeddings embed(const Tensor& anchor, const Tensor& positive, const Tensor& negative);
  // d: embedding_dim, or 32 b without projection.
  int64_t embedding_dim() const;

  const TripletNetOptions options;
  std::shared_ptr<ResNet> backbone;
  std::shared_ptr<nn::Linear> projection;  // null when embedding_dim is 0
};

// The study's loss: triplet_margin_loss(anchor, positive, negative, margin, p), mean over n.
Tensor triplet_loss(const TripletEmbeddings& e, int p = 1, double margin = 1.0);
// How many of the n triplets have d(a, p) < d(a, n), distances as triplet_margin_loss computes
// them (p-norm of the difference plus its eps 1e-6). Not differentiable.
int64_t triplet_correct(const TripletEmbeddings& e, int p = 1);

// ---------------------------------------------------------------------------------------------
// Frame order

struct FrameOrderNetOptions {
  ResNetOptions backbone;  // no fc, 3 input channels
  int num_frames = 3;      // T: 3 (6 classes) or 4 (24 classes)
  int64_t pair_hidden = 512;
  double dropout = 0.5;
};

class FrameOrderNet : public nn::Module {
 public:
  // `gen` draws the initial weights; `dropout_gen` (not null) is held for the dropout.
  FrameOrderNet(const FrameOrderNetOptions& options, Generator& gen,
                std::shared_ptr<Generator> dropout_gen);

  // frames (n, T, 3, H, W) -> logits (n, T!).
  Tensor forward(const Tensor& frames) override;
  // T! (6 or 24).
  int64_t num_classes() const;
  // The (i, j) pairs, i < j, in lexicographic order: T (T - 1) / 2 of them.
  static std::vector<std::pair<int, int>> frame_pairs(int num_frames);

  const FrameOrderNetOptions options;
  const std::shared_ptr<Generator> dropout_generator;
  std::shared_ptr<ResNet> backbone;
  std::shared_ptr<nn::Linear> pair_fc;     // (2F -> pair_hidden)
  std::shared_ptr<nn::Dropout> dropout;    // no parameters
  std::shared_ptr<nn::Linear> classifier;  // (pairs * pair_hidden -> T!)
};

// ---------------------------------------------------------------------------------------------
// Colorization

enum class ColorMode { ab, bins };

struct ColorizationNetOptions {
  ResNetOptions backbone;    // no fc, 3 input channels; replace_stride_with_dilation is replaced
  int output_stride = 8;     // 8 (layer3 and layer4 dilated), 16 (layer4) or 32 (none)
  int64_t embed_dim = 64;    // D
  double temperature = 1.0;  // > 0: logits = f_t f_r^T / temperature
  ColorMode mode = ColorMode::ab;
  double ab_scale = 110.0;  // ab mode: values are a, b / ab_scale
  int64_t bins = 16;        // bins mode: Q (Q x Q bins over ab); odd puts grey (0, 0) at a centre
  double ab_range = 110.0;  // bins mode: the grid covers [-ab_range, ab_range]^2
  double bin_eps = 1e-6;    // bins mode: loss -log(p + bin_eps)
};

struct ColorizationOutput {
  Tensor attention;   // (n, h w, R h w)
  Tensor values;      // (n, R+1, K, h, w): ab / ab_scale (K = 2) or one-hot bins (K = Q^2)
  Tensor prediction;  // (n, K, h, w) = copy(attention, the references' values)
  Tensor loss;        // scalar
  int64_t h = 0, w = 0;
};

class ColorizationNet : public nn::Module {
 public:
  ColorizationNet(const ColorizationNetOptions& options, Generator& gen);

  // grey (n, R+1, 1, H, W), R >= 1 -> attention (n, h w, R h w).
  Tensor forward(const Tensor& grey) override;
  // forward, the values of `lab` (n, R+1, 3, H, W) for the mode, prediction and loss.
  ColorizationOutput forward_loss(const Tensor& grey, const Tensor& lab);

  // The attention-weighted reference values: attention (n, h w, R h w), ref_values
  // (n, R, K, h, w) -> (n, K, h, w).
  static Tensor copy(const Tensor& attention, const Tensor& ref_values);
  // The mode's values of every frame of lab (n, F, 3, H, W) at h x w: (n, F, K, h, w), lab's
  // dtype and device; not differentiable (data).
  Tensor color_values(const Tensor& lab, int64_t h, int64_t w) const;
  // The mode's loss of a prediction (n, K, h, w) against the target's values (n, K, h, w).
  Tensor color_loss(const Tensor& prediction, const Tensor& target_values) const;
  // The prediction (n, K, h, w) as Lab a, b at (out_h, out_w): (n, 2, out_h, out_w).
  Tensor predicted_ab(const Tensor& prediction, int64_t out_h, int64_t out_w) const;
  // The bins' centres in ab: (Q^2, 2), bin qa * Q + qb.
  Tensor bin_centres() const;

  // The attention's h, w for an input of H x W (the backbone's output size).
  std::array<int64_t, 2> feature_size(int64_t height, int64_t width) const;
  // K: 2 (ab) or Q^2 (bins).
  int64_t value_channels() const;

  const ColorizationNetOptions options;
  std::shared_ptr<ResNet> backbone;
  std::shared_ptr<nn::Conv2d> embed;

 private:
  Tensor attention_of(const Tensor& grey, int64_t* h, int64_t* w);
};

// The colorization error: mean over n, 2, H, W of |predicted_ab - the target's a, b|, Lab units.
// predicted_ab (n, 2, H, W), target_lab (n, 3, H, W).
Tensor colorization_error(const Tensor& predicted_ab, const Tensor& target_lab);
// A colourised frame in Lab (n, 3, H, W): L = 50 (grey + 1) from the target's grey (n, 1, H, W)
// and the predicted ab (n, 2, H, W).
Tensor colorized_lab(const Tensor& target_grey, const Tensor& ab);

// ---------------------------------------------------------------------------------------------
// Transfer

// load_pretrained options that take a pretext network's `backbone.*` into DeepLabv3's backbone
// (every tensor required) and drop the pretext heads. file_prefix: "" for a state_dict file,
// "model." for a TrainState checkpoint (whose "optim." tensors are dropped too).
PretrainedOptions pretext_backbone_options(const std::string& file_prefix = "");

}  // namespace seg::models
