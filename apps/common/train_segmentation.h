// The segmentation training app (train_unet, train_deeplab) and the evaluation pass it shares with
// the evaluate app.
//
// Design notes
// - One loop for every segmentation network: per iteration, forward (logits at the crop's size),
//   cross entropy with ignore 255 (plus aux_weight times the auxiliary head's), a finite-loss
//   check before the update, backward, optimiser step, the scheduler when it steps per iteration.
//   Epoch ends step per-epoch schedulers; validation runs every val_every_epochs epochs or
//   val_every_iterations iterations and at the end (mIoU, pixel accuracy and the mean cross
//   entropy over labelled pixels), steps ReduceLROnPlateau on its metric, and keeps the best
//   checkpoint by mIoU.
// - Checkpoints (engine/train_state.h) hold the model, optimiser, scheduler, generators, the
//   loader's position (epoch, batch) and the partly filled logging window, so a resumed run logs
//   and computes exactly what an uninterrupted run does (bit for bit on the CPU). last is written
//   at each epoch end, each validation, every checkpoint_every iterations, on SIGINT/SIGTERM and
//   at the end; a signal during validation saves a checkpoint that repeats the validation on
//   resume.
// - A loss that is NaN or Inf stops the run before the update, with the iteration, the samples of
//   the batch and the last good checkpoint in the message; nothing is written then.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "apps/common/segmentation.h"
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
