"""Exports torchvision's ImageNet ResNet-50/101 weights to safetensors for segtrain.

Usage (Debian's /usr/bin/python3 with python3-torch and python3-torchvision):

  # from a state_dict downloaded beforehand (no network needed here), e.g. IMAGENET1K_V1 of
  # ResNet-101, https://download.pytorch.org/models/resnet101-63fe2227.pth
  /usr/bin/python3 scripts/export_torchvision_resnet.py --arch resnet101 \\
      --weights-file resnet101-63fe2227.pth --out resnet101_imagenet.safetensors

  # let torchvision download the weights (needs network; cached under ~/.cache/torch)
  /usr/bin/python3 scripts/export_torchvision_resnet.py --arch resnet101 \\
      --weights IMAGENET1K_V1 --out resnet101_imagenet.safetensors

  # a randomly initialised model (tests; no download)
  /usr/bin/python3 scripts/export_torchvision_resnet.py --arch resnet50 --random-init --seed 0 \\
      --out resnet50_random.safetensors

The file holds torchvision's state_dict (f32 weights, i64 num_batches_tracked) under torchvision's
names: conv1.weight, bn1.*, layer1.0.conv1.weight, ..., fc.weight, fc.bias, with metadata
"arch" and "source". The weights are first loaded into torchvision's model (strict), so a file of
another architecture is refused, and an old state_dict without num_batches_tracked gets it. In
C++, load it into a DeepLabv3 backbone with

  models::load_pretrained(model, "resnet101_imagenet.safetensors",
                          models::imagenet_backbone_options());

(file names -> "backbone." + name, fc.* dropped; every backbone tensor must be loaded).
IMAGENET1K_V1 is the classic torchvision training (the weights DeepLabv3.pytorch, the study's
code, loaded); IMAGENET1K_V2 is the newer recipe.
"""
import argparse
import os
import sys

import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "reference"))
import st_io  # noqa: E402  (the repository's safetensors writer)

ARCHS = {"resnet50": (torchvision.models.resnet50, "ResNet50_Weights"),
         "resnet101": (torchvision.models.resnet101, "ResNet101_Weights")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights-file", help="a torchvision state_dict (.pth) of that arch")
    source.add_argument("--weights", help="torchvision weights to download, e.g. IMAGENET1K_V1")
    source.add_argument("--random-init", action="store_true",
                        help="torchvision's random initialisation (for tests)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-init")
    parser.add_argument("--out", required=True, help="the .safetensors file to write")
    args = parser.parse_args()

    build, weights_enum = ARCHS[args.arch]
    if args.weights_file:
        model = build(weights=None)
        state = torch.load(args.weights_file, map_location="cpu")
        if isinstance(state, dict) and "state_dict" in state and "fc.weight" not in state:
            state = state["state_dict"]
        model.load_state_dict(state)  # strict: every name and shape of this arch
        source_text = os.path.basename(args.weights_file)
    elif args.weights:
        weights = getattr(torchvision.models, weights_enum)[args.weights]
        model = build(weights=weights)
        source_text = f"torchvision {weights_enum}.{args.weights}"
    else:
        torch.manual_seed(args.seed)
        model = build(weights=None)
        source_text = f"random init, seed {args.seed}"

    tensors = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    st_io.save(tensors, args.out, {"arch": args.arch, "source": source_text})
    count = sum(t.numel() for name, t in tensors.items() if t.is_floating_point())
    print(f"export: {args.arch} ({source_text}): {len(tensors)} tensors, {count} values -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
