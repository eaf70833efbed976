// pretext_triplet: learns frame embeddings whose distances follow time (the study's triplet
// pretext task): an anchor frame, a positive within a few frames of it and a negative far from it,
// from one Cityscapes snippet; triplet margin loss on a shared ResNet backbone.
//
//   pretext_triplet --config configs/pretext_triplet.json --data CITYSCAPES_ROOT
//                   --run runs/triplet [--set key=value ...] [--resume]
//
// The task is apps/common/video_tasks.h's; the loop, checkpoints, resume and signals
// apps/common/training.h's. Its best.safetensors initialises DeepLabv3's backbone
// (configs/deeplabv3_r101_from_triplet.json).
#include "apps/common/video_tasks.h"

int main(int argc, char** argv) {
  return seg::app::training_main(
      "pretext_triplet", "Trains the triplet pretext task (temporal position) on Cityscapes video.",
      argc, argv, seg::app::read_triplet_task);
}
