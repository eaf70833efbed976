#!/usr/bin/env bash
# scripts/reproduce.py end to end on a tiny synthetic Cityscapes: every row of the study's table
# trains (small models, one epoch, 6 samples per split, on the CPU), the ImageNet row is reported
# as skipped without its weights, and the table is printed. Skipped (77) without python3.
#   tests/reproduce_smoke.sh BUILD_DIR WORK_DIR
set -euo pipefail
build=$1
work=$2
command -v python3 > /dev/null || { echo "reproduce_smoke: no python3; skipped"; exit 77; }
here=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$work"
mkdir -p "$work"
"$build/apps/make_synthetic_cityscapes" --out "$work/cityscapes" --width 256 --height 128 \
  --train 6 --val 6 > "$work/make.log" 2>&1
out=$(cd "$work" && python3 "$here/scripts/reproduce.py" --data "$work/cityscapes" --runs "$work/runs" \
  --build "$build" --epochs-scale 0.01 --small-models --limit 6 --device cpu --set data.workers=1)
echo "$out"
trained=$(grep -c "| trained in " <<< "$out" || true)
[[ $trained -eq 12 ]] || { echo "reproduce_smoke: expected 12 trained rows, got $trained"; exit 1; }
grep -q "deeplabv3_r101_imagenet_10ep .*| skipped: no pretrained/resnet101_imagenet.safetensors" <<< "$out" \
  || { echo "reproduce_smoke: the ImageNet row is not reported as skipped"; exit 1; }
# A second run reuses every finished row.
again=$(cd "$work" && python3 "$here/scripts/reproduce.py" --data "$work/cityscapes" --runs "$work/runs" \
  --build "$build" --epochs-scale 0.01 --small-models --limit 6 --device cpu --set data.workers=1)
reused=$(grep -c "| reused " <<< "$again" || true)
[[ $reused -eq 12 ]] || { echo "reproduce_smoke: expected 12 reused rows, got $reused"; exit 1; }
echo "reproduce_smoke: ok"
