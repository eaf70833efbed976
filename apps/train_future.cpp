// train_future: predicts future frames of a Cityscapes snippet from past ones (the study's future
// frame prediction target task): a per-frame encoder, temporal fusion by 1x1 convolutions over the
// time steps, a transposed-convolution decoder with skips, tanh, L1 loss.
//
//   train_future --config configs/future.json --data CITYSCAPES_ROOT --run runs/future
//                [--set key=value ...] [--resume]
//
// Validation reports L1, PSNR and SSIM beside the last input frame repeated, and writes sample
// frames (inputs, truth, prediction) under RUN/samples/iter_N. The task is
// apps/common/video_tasks.h's; the loop apps/common/training.h's.
#include "apps/common/video_tasks.h"

int main(int argc, char** argv) {
  return seg::app::training_main(
      "train_future", "Trains future frame prediction on Cityscapes video.", argc, argv,
      seg::app::read_future_task);
}
