#!/usr/bin/env python3
"""Runs every config of the study's table and prints the table with our numbers beside the study's.

  python3 scripts/reproduce.py --data CITYSCAPES_ROOT [--runs runs/reproduce] [--build build]
      [--epochs-scale F] [--downsample K] [--small-models] [--limit N] [--device cpu]
      [--only ROW,ROW] [--set key=value ...] [--dry-run]

Rows, in the table's order: UNet at 2x, 4x and 8x downsampling; DeepLabv3-ResNet101 from ImageNet
weights (10 epochs) and from scratch (10 and 100 epochs); DeepLabv3-ResNet101 fine-tuned from each
pretext task (triplet, frame order, colorization: each pretext run first, then the fine-tuning);
future frame prediction. Each row is one run directory under --runs (config.json, metrics.jsonl,
checkpoints, the app's log); a row whose run finished is not trained again (an interrupted one is
resumed), so the script can be stopped and restarted. The figures are the last validation of each
run (mIoU and pixel accuracy over the val split as cityscapesScripts counts them; the pretext
tasks' and future frames' own scores).

Small machines: --epochs-scale multiplies every config's epochs (at least 1 each), --downsample K
divides every input size by K more (UNet's downsampling, DeepLab's crops and images, the video
frames), --small-models swaps in small networks (ResNets with one block per layer and base width 8,
UNet base 16), --limit N keeps the first N samples of each split. The ImageNet row needs the
exported torchvision weights (see its config); without them it is reported as skipped. Only the
Python standard library is used: the apps do the work.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SMALL_RESNET = ["model.deeplabv3.blocks=[1,1,1,1]", "model.deeplabv3.base_channels=8",
                "model.deeplabv3.aspp_channels=16"]
SMALL_BACKBONE = ["model.backbone.blocks=[1,1,1,1]", "model.backbone.base_channels=8"]

# name, app, config, study figure (text), kind, pretext run it starts from (or None)
ROWS = [
    ("unet_ds2", "train_unet", "unet_ds2", "mIoU 0.5153, acc 0.8653", "seg", None),
    ("unet_ds4", "train_unet", "unet_ds4", "mIoU 0.4613, acc 0.85", "seg", None),
    ("unet_ds8", "train_unet", "unet_ds8", "mIoU 0.45, acc 0.85", "seg", None),
    ("deeplabv3_r101_imagenet_10ep", "train_deeplab", "deeplabv3_r101_imagenet_10ep",
     "mIoU 59.31 (%)", "seg", None),
    ("deeplabv3_r101_scratch_10ep", "train_deeplab", "deeplabv3_r101_scratch_10ep",
     "mIoU 27.24 (%)", "seg", None),
    ("deeplabv3_r101_scratch_100ep", "train_deeplab", "deeplabv3_r101_scratch_100ep",
     "mIoU 49.79 (%)", "seg", None),
    ("pretext_triplet", "pretext_triplet", "pretext_triplet", "-", "triplet", None),
    ("deeplabv3_r101_from_triplet", "train_deeplab", "deeplabv3_r101_from_triplet",
     "- (never really loaded)", "seg", "pretext_triplet"),
    ("pretext_order", "pretext_order", "pretext_order", "-", "order", None),
    ("deeplabv3_r101_from_order", "train_deeplab", "deeplabv3_r101_from_order",
     "- (never really loaded)", "seg", "pretext_order"),
    ("pretext_colorize", "pretext_colorize", "pretext_colorize", "- (could not run)", "colorize",
     None),
    ("deeplabv3_r101_from_colorize", "train_deeplab", "deeplabv3_r101_from_colorize",
     "- (never really loaded)", "seg", "pretext_colorize"),
    ("future", "train_future", "future", "-", "future", None),
]


def load_json(path):
    with open(path) as f:
        return json.load(f)


def scaled_sets(name, config, args):
    """The --set overrides of one row for the scale options."""
    sets = []
    epochs = config.get("train", {}).get("epochs", 1)
    sets.append("train.epochs=%d" % max(1, round(epochs * args.epochs_scale)))
    k = args.downsample
    data = config.get("data", {})
    if name.startswith("unet"):
        if k > 1:
            sets.append("data.resize.downsample=%d" % (data.get("resize", {}).get("downsample", 1) * k))
        if args.small_models:
            sets.append("model.unet.base_channels=16")
    elif name.startswith("deeplab"):
        if k > 1:
            crop = data.get("crop", [0, 0])
            sets.append("data.crop=[%d,%d]" % (max(1, crop[0] // k), max(1, crop[1] // k)))
            sets.append("data.resize.downsample=%d" % k)
        if args.small_models:
            sets += SMALL_RESNET
    else:
        if k > 1:
            size = data.get("resize", {})
            sets.append("data.resize.height=%d" % max(16, size.get("height", 128) // k))
            sets.append("data.resize.width=%d" % max(16, size.get("width", 256) // k))
        if args.small_models:
            if name == "future":
                sets.append("model.base_channels=8")
            else:
                sets += SMALL_BACKBONE
        if name == "future" and k > 1:
            sets.append("model.levels=%d" % max(1, 4 - (k.bit_length() - 1)))
    if args.limit > 0:
        sets += ["data.limit_train=%d" % args.limit, "data.limit_val=%d" % args.limit]
    if args.device:
        sets.append("train.device=" + args.device)
    return sets


def finished(run):
    """The last validation record of a run that completed (its "done" marker), else None."""
    if not os.path.exists(os.path.join(run, "done")):
        return None
    last_val = None
    with open(os.path.join(run, "metrics.jsonl")) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                if r.get("type") == "val":
                    last_val = r
    return last_val


def run_row(row, args, env):
    name, app, config_name, _, kind, pretext = row
    config_path = os.path.join(ROOT, "configs", config_name + ".json")
    config = load_json(config_path)
    run = os.path.join(args.runs, name)
    result = finished(run)
    if result is not None:
        return result, "reused"
    sets = scaled_sets(name, config, args)
    if pretext:
        sets.append("init.file=" + os.path.join(args.runs, pretext, "best.safetensors"))
    init = config.get("init", {}).get("file")
    if init and not pretext and not os.path.exists(init):
        return None, "skipped: no %s (see configs/%s.json)" % (init, config_name)
    sets += args.set
    cmd = [os.path.join(args.build, "apps", app), "--data", args.data, "--run", run]
    if os.path.exists(os.path.join(run, "last.safetensors")):
        cmd += ["--resume"]
    else:
        cmd += ["--config", config_path]
    for s in sets:
        cmd += ["--set", s]
    print("reproduce: " + " ".join(cmd), flush=True)
    if args.dry_run:
        return None, "dry run"
    os.makedirs(run, exist_ok=True)
    start = time.time()
    with open(os.path.join(run, "log.txt"), "a") as log:
        p = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if p.returncode != 0:
        return None, "failed (exit %d): see %s" % (p.returncode, os.path.join(run, "log.txt"))
    with open(os.path.join(run, "done"), "w") as f:
        f.write("%.1f s\n" % (time.time() - start))
    return finished(run), "trained in %.1f s" % (time.time() - start)


def figures(kind, r):
    if r is None:
        return "-"
    if kind == "seg":
        return "mIoU %.4f, acc %.4f" % (r.get("miou") or float("nan"),
                                         r.get("pixel_accuracy") or float("nan"))
    if kind == "triplet":
        return "triplet accuracy %.4f (chance 0.5)" % r["accuracy"]
    if kind == "order":
        return "order accuracy %.4f (chance %.4f)" % (r["accuracy"], r["chance"])
    if kind == "colorize":
        return "ab error %.2f (mean colour %.2f)" % (r["error"], r["mean_colour_error"])
    return "L1 %.4f (repeat last %.4f), PSNR %.2f, SSIM %.4f" % (
        r["l1"], r["repeat_last_l1"], r["psnr"], r["ssim"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="Cityscapes root")
    parser.add_argument("--runs", default="runs/reproduce", help="one run directory per row")
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--epochs-scale", type=float, default=1.0)
    parser.add_argument("--downsample", type=int, default=1, choices=[1, 2, 4, 8])
    parser.add_argument("--small-models", action="store_true")
    parser.add_argument("--limit", type=int, default=0, help="first N samples of each split")
    parser.add_argument("--device", default="", help="cpu, cuda, cuda:N (default: each config's)")
    parser.add_argument("--only", default="", help="comma-separated row names")
    parser.add_argument("--set", action="append", default=[], help="key=value for every row")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args()
    if args.epochs_scale <= 0:
        parser.error("--epochs-scale must be > 0")
    names = [r[0] for r in ROWS]
    only = [s for s in args.only.split(",") if s]
    for s in only:
        if s not in names:
            parser.error("--only: unknown row '%s' (rows: %s)" % (s, ", ".join(names)))
    # A fine-tuning row needs its pretext run.
    wanted = set(only or names)
    for r in ROWS:
        if r[0] in wanted and r[5]:
            wanted.add(r[5])
    env = dict(os.environ)
    results = []
    for row in ROWS:
        if row[0] not in wanted:
            continue
        r, status = run_row(row, args, env)
        print("reproduce: %s: %s" % (row[0], status), flush=True)
        results.append((row, r, status))

    scale = "epochs x%g, downsample x%d%s%s" % (
        args.epochs_scale, args.downsample, ", small models" if args.small_models else "",
        ", %d samples per split" % args.limit if args.limit else "")
    print()
    print("The study's table and ours (%s; data %s)" % (scale, args.data))
    rows = [("row", "study", "ours", "run")]
    for row, r, status in results:
        rows.append((row[0], row[3], figures(row[4], r), status))
    widths = [max(len(x[i]) for x in rows) for i in range(4)]
    for i, x in enumerate(rows):
        print("| " + " | ".join(x[k].ljust(widths[k]) for k in range(4)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    failed = [row[0] for row, r, status in results if status.startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
