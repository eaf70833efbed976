// train_deeplab: trains DeepLabv3 (ResNet-50/101 backbone, torchvision's or the study's head) for
// Cityscapes segmentation, optionally from pretrained backbone weights (the config's init.*).
//
//   train_deeplab --config configs/deeplabv3_r101_imagenet_10ep.json --data CITYSCAPES_ROOT
//                 --run runs/deeplab_imagenet [--set key=value ...] [--resume]
//
// The loop, checkpoints, resume and signals are apps/common/train_segmentation.h's.
#include "apps/common/train_segmentation.h"

int main(int argc, char** argv) {
  return seg::app::train_segmentation_main("train_deeplab", "deeplabv3", argc, argv);
}
