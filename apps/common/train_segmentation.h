// The segmentation training app (train_unet, train_deeplab) and the evaluation pass it shares with
// the evaluate app.
//
// The loop itself (checkpoints, resume, signals, NaN stop, validation schedule) is
// apps/common/training.h's; this is the segmentation task: cross entropy ignoring 255 (plus
// train.aux_weight times the auxiliary head's), and validation by mIoU, pixel accuracy and the
// mean cross entropy over labelled pixels, the confusion matrix counted by the fused kernel.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "apps/common/segmentation.h"
#include "apps/common/training.h"
#include "data/loader.h"
#include "engine/metrics.h"

namespace seg::app {

// `arch`: the model.arch this app trains ("unet", "deeplabv3").
int train_segmentation_main(const char* program, const char* arch, int argc,
                            const char* const* argv);

struct EvaluationResult {
  Tensor confusion;  // (c, c) i64 on the CPU
  SegmentationScores scores;
  double loss = 0.0;  // mean cross entropy over the labelled pixels (NaN when none)
  int64_t images = 0;
  bool interrupted = false;  // stopped early by a signal
};

// The Cityscapes trainId names for 19 classes; empty (classes numbered) otherwise.
std::vector<std::string> segmentation_class_names(int64_t num_classes);

// Runs `model` in evaluation mode over every batch of `loader` (one epoch). `on_batch`, when set,
// receives each batch's upsampled logits (n, c, h, w) at the labels' size, on the model's device,
// with the batch (for writing predictions). `stop` is checked between batches.
EvaluationResult evaluate_segmentation(
    SegmentationModel& model, data::Loader& loader, Device device, int64_t num_classes,
    bool want_loss, const std::function<bool()>& stop = {},
    const std::function<void(const Tensor&, const data::Batch&)>& on_batch = {});

}  // namespace seg::app
