// pretext_colorize: learns to colourise a grey frame by pointing into grey reference frames of the
// same snippet and copying their colours (Vondrick et al., "Tracking emerges by colorizing
// videos"): the study's video colorization pretext task, on a shared ResNet backbone.
//
//   pretext_colorize --config configs/pretext_colorize.json --data CITYSCAPES_ROOT
//                    --run runs/colorize [--set key=value ...] [--resume]
//
// Each validation writes sample frames (grey, ours, truth) under RUN/samples/iter_N. The task is
// apps/common/video_tasks.h's; the loop apps/common/training.h's. Its best.safetensors initialises
// DeepLabv3's backbone (configs/deeplabv3_r101_from_colorize.json).
#include "apps/common/video_tasks.h"

int main(int argc, char** argv) {
  return seg::app::training_main(
      "pretext_colorize", "Trains the video colorization pretext task on Cityscapes video.", argc,
      argv, seg::app::read_colorize_task);
}
