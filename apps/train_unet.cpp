// train_unet: trains UNet (Pytorch-UNet's architecture) for Cityscapes segmentation.
//
//   train_unet --config configs/unet_ds4.json --data CITYSCAPES_ROOT --run runs/unet_ds4
//              [--set key=value ...] [--resume]
//
// The loop, checkpoints, resume and signals are apps/common/train_segmentation.h's.
#include "apps/common/train_segmentation.h"

int main(int argc, char** argv) {
  return seg::app::train_segmentation_main("train_unet", "unet", argc, argv);
}
