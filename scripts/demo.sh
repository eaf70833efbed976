#!/usr/bin/env bash
# The main job, on a machine with no Cityscapes and no GPU: writes a small synthetic Cityscapes
# (256x128 street scenes in the real layout), trains UNet on it with configs/demo.json, evaluates
# the best checkpoint on the validation split (per-class IoU table, pixel accuracy, "mIoU: X") and
# writes the predictions as colour and labelIds PNGs.
#
#   bash scripts/demo.sh [BUILD_DIR] [WORK_DIR]     (defaults: build, runs/demo)
#
# WORK_DIR is the demo's own folder: it is emptied first.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
work=${2:-runs/demo}
rm -rf "$work"
mkdir -p "$work"
"$build/apps/make_synthetic_cityscapes" --out "$work/cityscapes" --width 256 --height 128 \
  --train 48 --val 6 --no-sequences > "$work/make_synthetic_cityscapes.log" 2>&1
echo "demo: synthetic Cityscapes in $work/cityscapes (48 train, 6 val images, 256x128)"
"$build/apps/train_unet" --config configs/demo.json --data "$work/cityscapes" --run "$work/run"
"$build/apps/evaluate" --config configs/demo.json --checkpoint "$work/run/best.safetensors" \
  --data "$work/cityscapes" --out "$work/predictions"
