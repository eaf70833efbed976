"""Pillow peer of benchmarks/bench_loader.cpp: the same per-image work as our segmentation loader,
in Python with Pillow and NumPy, with a pool of worker processes (as a PyTorch DataLoader's):

  decode the leftImg8bit PNG (RGB) and its labelIds PNG; with --factor F > 1, resize the image by
  area (Image.BOX) and the labels by nearest (Image.NEAREST) to (W / F, H / F); normalise the image
  to CHW float32 with the study's mean/std; map labelIds to trainIds with a lookup table.

Each worker returns a checksum only (the batches are not sent back to the parent: this favours the
peer, whose DataLoader would pass them through shared memory). Prints one JSON object on stdout:

  {"pillow": VERSION, "images": N, "seconds": S, "images_per_s": R}

Run it with /usr/bin/python3 (Debian's python3-pil and python3-numpy).
"""
import argparse
import json
import multiprocessing
import sys
import time

MEAN = (0.2869, 0.3251, 0.2839)
STD = (0.1870, 0.1902, 0.1872)
# cityscapesScripts labelId -> trainId (everything else 255).
TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
             25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}

_state = {}


def _init(factor):
    import numpy as np
    lut = np.full(256, 255, dtype=np.int32)
    for k, v in TRAIN_IDS.items():
        lut[k] = v
    _state["factor"] = factor
    _state["lut"] = lut
    _state["mean"] = np.array(MEAN, dtype=np.float32).reshape(3, 1, 1)
    _state["inv_std"] = (1.0 / np.array(STD, dtype=np.float32)).reshape(3, 1, 1)


def _work(pair):
    import numpy as np
    from PIL import Image
    image_path, label_path = pair
    factor = _state["factor"]
    img = Image.open(image_path).convert("RGB")
    lbl = Image.open(label_path)
    lbl.load()
    if factor > 1:
        size = (img.width // factor, img.height // factor)
        img = img.resize(size, Image.BOX)
        lbl = lbl.resize(size, Image.NEAREST)
    chw = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) * (1.0 / 255.0)
    chw = np.ascontiguousarray((chw - _state["mean"]) * _state["inv_std"])
    train = np.take(_state["lut"], np.asarray(lbl, dtype=np.uint8))
    return float(chw[:, 0, 0].sum()) + int(train[0, 0])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--factor", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--passes", type=int, required=True)
    parser.add_argument("pairs", nargs="+", help="IMAGE:LABEL")
    args = parser.parse_args()
    try:
        import numpy  # noqa: F401
        import PIL
    except ImportError as e:
        print(json.dumps({"error": f"cannot import Pillow/NumPy: {e}"}))
        return 1
    pairs = [tuple(p.split(":", 1)) for p in args.pairs]
    work = pairs * args.passes
    with multiprocessing.Pool(args.workers, initializer=_init, initargs=(args.factor,)) as pool:
        # Warm-up: one image per worker (process start, imports).
        list(pool.imap(_work, pairs[: args.workers], chunksize=1))
        t0 = time.perf_counter()
        for _ in pool.imap(_work, work, chunksize=1):
            pass
        seconds = time.perf_counter() - t0
    print(json.dumps({"pillow": PIL.__version__, "images": len(work), "seconds": seconds,
                      "images_per_s": len(work) / seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
