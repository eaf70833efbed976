"""PyTorch reference values for the image-quality metrics (PSNR, SSIM) of engine/metrics.h.

SSIM as Wang et al.'s MATLAB ssim_index: an 11x11 Gaussian window (sigma 1.5) over the valid region,
K1 = 0.01, K2 = 0.03, per channel, averaged over pixels, channels and images; written here with
torch's conv2d, independently of the C++ code. Writes DIR/image_metrics.json: cases of f64 images
(n, c, h, w) in [0, 1] with their mean PSNR and mean SSIM. Read by tests/test_metrics.cpp.
"""
import argparse
import json
import math
import os

import torch
import torch.nn.functional as F


def tensor(t):
    t = t.detach().cpu().contiguous()
    return {"shape": list(t.shape), "data": t.reshape(-1).tolist()}


def gaussian(win, sigma=1.5):
    x = torch.arange(win, dtype=torch.float64) - (win // 2)
    g = torch.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def ssim(x, y, data_range=1.0):
    n, c, h, w = x.shape
    win = min(11, h, w)
    if win % 2 == 0:
        win -= 1
    g = gaussian(win)
    k = (g[:, None] * g[None, :]).expand(c, 1, win, win).contiguous()
    f = lambda t: F.conv2d(t, k, groups=c)
    mx, my = f(x), f(y)
    vx = f(x * x) - mx * mx
    vy = f(y * y) - my * my
    cxy = f(x * y) - mx * my
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    m = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return m.mean(dim=(2, 3)).mean().item()


def psnr(x, y, data_range=1.0):
    mse = ((x - y) ** 2).flatten(1).mean(1)
    v = [min(100.0, 10 * math.log10(data_range ** 2 / m)) if m > 0 else 100.0 for m in mse.tolist()]
    return sum(v) / len(v)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(7)
    cases = []
    for shape, noise in (((2, 3, 20, 24), 0.1), ((1, 1, 16, 16), 0.3), ((3, 3, 9, 14), 0.05),
                         ((2, 2, 32, 40), 0.5)):
        x = torch.rand(shape, generator=gen, dtype=torch.float64)
        y = (x + noise * torch.randn(shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
        cases.append({"x": tensor(x), "y": tensor(y), "psnr": psnr(x, y), "ssim": ssim(x, y)})
    with open(os.path.join(args.out, "image_metrics.json"), "w") as f:
        json.dump({"cases": cases}, f)


if __name__ == "__main__":
    main()
