// pretext_order: learns to tell the order of 3 (or 4) shuffled frames of a Cityscapes snippet (the
// study's frame order pretext task): a shared ResNet backbone per frame, a shared layer per frame
// pair, and a classifier over the permutations.
//
//   pretext_order --config configs/pretext_order.json --data CITYSCAPES_ROOT --run runs/order
//                 [--set key=value ...] [--resume]
//
// The task is apps/common/video_tasks.h's; the loop, checkpoints, resume and signals
// apps/common/training.h's. Its best.safetensors initialises DeepLabv3's backbone
// (configs/deeplabv3_r101_from_order.json).
#include "apps/common/video_tasks.h"

int main(int argc, char** argv) {
  return seg::app::training_main(
      "pretext_order", "Trains the frame order pretext task on Cityscapes video.", argc, argv,
      seg::app::read_order_task);
}
