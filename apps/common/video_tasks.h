// The video tasks on Cityscapes' 30-frame snippets, as tasks of the shared training loop
// (apps/common/training.h): the three pretext tasks of the study (triplet loss on temporal
// position, frame order prediction, video colorization) and future frame prediction. One app each:
// pretext_triplet, pretext_order, pretext_colorize, train_future.
//
// Design notes
// - One sample is one snippet (data/datasets.h builds it: frames, offsets, permutation, Lab);
//   throughput is counted in snippets/s.
// - Validation is deterministic: the validation datasets never flip and draw every random choice
//   from epoch 0, so the triplets, permutations and frames scored are the same at every
//   validation ("fixed validation triplets"). Each task also reports its trivial baseline beside
//   its score, so that a run shows whether it learnt anything: chance for triplet (0.5) and order
//   (1 / T!) accuracy; for colorization every target pixel given the mean ab colour of its
//   sample's reference frames; for future frames the last input frame repeated.
// - The pretext networks hold their ResNet as `backbone` with DeepLabv3's names, so a pretext run's
//   checkpoint initialises train_deeplab through init.* (configs/deeplabv3_r101_from_*.json):
//   {"model.backbone.": "backbone."}, the pretext heads and the optimiser state dropped, and every
//   backbone tensor must load.
//
// Config keys, beside the loop's (training.h):
//   model.backbone.depth       50 | 101 (101: the depth of the study's DeepLabv3, so that the
//                              backbone transfers); model.backbone.blocks (4 counts, small
//                              models), model.backbone.base_channels (64), bn_momentum (0.1)
//   data.train_split/val_split "train" / "val"
//   data.resize.*              the frames' size: 128x256 (area) as the study
//   data.normalization         "imagenet" (the study's pretext statistics) | "cityscapes"
//   data.flip                  true (training only; triplet flips each frame on its own)
//   train.samples              validation samples written as PNGs under run/samples/iter_N
//                              (colorization, future frames; 4)
// pretext_triplet: model.embedding_dim (0: the pooled backbone features), loss.distance "l1" |
//   "l2" (l1), loss.margin (1.0), data.positive_within (3), data.negative_beyond (10).
//   Score: triplet accuracy, d(a, p) < d(a, n).
// pretext_order: data.offsets ([8, 10, 12]; 3 or 4 frames), model.pair_hidden (512),
//   model.dropout (0.5). Score: order accuracy.
// pretext_colorize: data.references ([0, 4, 8]), data.target (12), model.embed_dim (64),
//   model.temperature (1.0), model.output_stride (8), colorize.mode "ab" | "bins",
//   colorize.bins (17 per axis: odd, so that grey is a bin centre). Score: the mean absolute ab
//   error of the colourised target at the input's size (Lab units, lower is better).
// train_future: data.inputs ([0, 2, 4]), data.targets ([6, 8, 10]), model.base_channels (32),
//   model.levels (4), model.residual (false: the study's plain tanh decoder; models/future.h).
//   Score: L1 of the predicted frames in [-1, 1] (lower is better); PSNR and SSIM on [0, 1].
#pragma once

#include <memory>

#include "apps/common/config.h"
#include "apps/common/training.h"

namespace seg::app {

std::unique_ptr<TrainingTask> read_triplet_task(Config& config);
std::unique_ptr<TrainingTask> read_order_task(Config& config);
std::unique_ptr<TrainingTask> read_colorize_task(Config& config);
std::unique_ptr<TrainingTask> read_future_task(Config& config);

}  // namespace seg::app
