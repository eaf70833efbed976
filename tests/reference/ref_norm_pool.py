"""PyTorch reference values for batch_norm2d, max_pool2d, adaptive_avg_pool2d, upsample_bilinear2d.

Writes norm_pool.json into --out. Every case stores its inputs (f32-representable values, so the
C++ test can run them in f32 and f64) and PyTorch's results computed in float64 and in float32:
outputs, gradients for a given output gradient, max-pool indices, and the running statistics after
each of two training steps. JSON keeps the values exact (Python writes floats round-trip).
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def tensor_entry(t):
    return {"shape": list(t.shape), "data": flat(t)}


def randn32(gen, *shape, scale=1.0, offset=0.0):
    # f32-representable values (so both dtypes start from identical inputs)
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + offset).float().double()


def batch_norm_case(gen, name, shape, affine, momentum, eps, offset=0.0, scale=1.0):
    c = shape[1]
    xs = [randn32(gen, *shape, scale=scale, offset=offset) for _ in range(3)]
    gys = [randn32(gen, *shape) for _ in range(3)]
    weight = randn32(gen, c, scale=0.5, offset=1.0) if affine else None
    bias = randn32(gen, c, scale=0.5) if affine else None
    rm0 = randn32(gen, c, scale=0.1)
    rv0 = (torch.rand(c, generator=gen, dtype=torch.float64) + 0.5).float().double()
    case = {"name": name, "momentum": momentum, "eps": eps, "affine": affine,
            "x": [tensor_entry(x) for x in xs], "gy": [tensor_entry(g) for g in gys],
            "running_mean0": tensor_entry(rm0), "running_var0": tensor_entry(rv0)}
    if affine:
        case["weight"] = tensor_entry(weight)
        case["bias"] = tensor_entry(bias)
    for dtype, key in ((torch.float64, "f64"), (torch.float32, "f32")):
        rm = rm0.to(dtype).clone()
        rv = rv0.to(dtype).clone()
        out = {"steps": []}
        # two training steps (x[0], x[1]), then evaluation on x[2]
        for step in range(3):
            training = step < 2
            x = xs[step].to(dtype).detach().clone().requires_grad_(True)
            w = weight.to(dtype).detach().clone().requires_grad_(True) if affine else None
            b = bias.to(dtype).detach().clone().requires_grad_(True) if affine else None
            y = F.batch_norm(x, rm, rv, w, b, training=training, momentum=momentum, eps=eps)
            y.backward(gys[step].to(dtype))
            entry = {"training": training, "y": flat(y), "gx": flat(x.grad),
                     "running_mean": flat(rm), "running_var": flat(rv)}
            if affine:
                entry["gweight"] = flat(w.grad)
                entry["gbias"] = flat(b.grad)
            out["steps"].append(entry)
        case[key] = out
    return case


def max_pool_case(gen, name, shape, kernel, stride, pad, ceil_mode, integers=False):
    if integers:  # many ties: the first maximum must win
        x = torch.randint(0, 3, shape, generator=gen).double()
    else:
        x = randn32(gen, *shape)
    case = {"name": name, "kernel": list(kernel), "stride": list(stride), "pad": list(pad),
            "ceil_mode": ceil_mode, "x": tensor_entry(x)}
    for dtype, key in ((torch.float64, "f64"), (torch.float32, "f32")):
        xd = x.to(dtype).detach().clone().requires_grad_(True)
        y, idx = F.max_pool2d(xd, kernel, stride, pad, ceil_mode=ceil_mode, return_indices=True)
        gy = randn32(torch.Generator().manual_seed(7), *y.shape).to(dtype)
        y.backward(gy)
        case[key] = {"y": tensor_entry(y), "indices": [int(v) for v in idx.reshape(-1).tolist()],
                     "gy": flat(gy), "gx": flat(xd.grad)}
    return case


def adaptive_case(gen, name, shape, out_size):
    x = randn32(gen, *shape)
    case = {"name": name, "out": list(out_size), "x": tensor_entry(x)}
    for dtype, key in ((torch.float64, "f64"), (torch.float32, "f32")):
        xd = x.to(dtype).detach().clone().requires_grad_(True)
        y = F.adaptive_avg_pool2d(xd, out_size)
        gy = randn32(torch.Generator().manual_seed(8), *y.shape).to(dtype)
        y.backward(gy)
        case[key] = {"y": tensor_entry(y), "gy": flat(gy), "gx": flat(xd.grad)}
    return case


def upsample_case(gen, name, shape, out_size, align_corners):
    x = randn32(gen, *shape)
    case = {"name": name, "out": list(out_size), "align_corners": align_corners, "x": tensor_entry(x)}
    for dtype, key in ((torch.float64, "f64"), (torch.float32, "f32")):
        xd = x.to(dtype).detach().clone().requires_grad_(True)
        y = F.interpolate(xd, size=out_size, mode="bilinear", align_corners=align_corners)
        gy = randn32(torch.Generator().manual_seed(9), *y.shape).to(dtype)
        y.backward(gy)
        case[key] = {"y": tensor_entry(y), "gy": flat(gy), "gx": flat(xd.grad)}
    return case


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(20240611)
    ref = {"torch_version": torch.__version__}
    ref["batch_norm"] = [
        batch_norm_case(gen, "(4,3,5,6) affine", (4, 3, 5, 6), True, 0.1, 1e-5),
        batch_norm_case(gen, "(8,5) no affine", (8, 5), False, 0.3, 1e-3),
        batch_norm_case(gen, "(1,2,3,4) batch of one, affine", (1, 2, 3, 4), True, 0.1, 1e-5),
        batch_norm_case(gen, "(2,4,7,5) offset 1000", (2, 4, 7, 5), True, 0.1, 1e-5, offset=1000.0,
                        scale=0.01),
    ]
    ref["max_pool2d"] = [
        max_pool_case(gen, "3x3/2 pad 1 (2,3,9,11)", (2, 3, 9, 11), (3, 3), (2, 2), (1, 1), False),
        max_pool_case(gen, "2x2/2 (2,2,8,10)", (2, 2, 8, 10), (2, 2), (2, 2), (0, 0), False),
        max_pool_case(gen, "2x2/2 ceil (2,2,7,9)", (2, 2, 7, 9), (2, 2), (2, 2), (0, 0), True),
        max_pool_case(gen, "3x3/2 pad 1 ceil (1,2,8,7)", (1, 2, 8, 7), (3, 3), (2, 2), (1, 1), True),
        max_pool_case(gen, "3x2/(2,1) pad (1,0) (1,2,7,6)", (1, 2, 7, 6), (3, 2), (2, 1), (1, 0), False),
        max_pool_case(gen, "3x3/2 pad 1 ties (1,2,7,9)", (1, 2, 7, 9), (3, 3), (2, 2), (1, 1), False,
                      integers=True),
        max_pool_case(gen, "2x2/2 ceil ties (1,1,5,5)", (1, 1, 5, 5), (2, 2), (2, 2), (0, 0), True,
                      integers=True),
    ]
    ref["adaptive_avg_pool2d"] = [
        adaptive_case(gen, "(2,3,7,9) to (3,2)", (2, 3, 7, 9), (3, 2)),
        adaptive_case(gen, "(2,3,7,9) to (5,7)", (2, 3, 7, 9), (5, 7)),
        adaptive_case(gen, "(2,3,7,9) to (1,1)", (2, 3, 7, 9), (1, 1)),
        adaptive_case(gen, "(1,2,3,5) to (5,7)", (1, 2, 3, 5), (5, 7)),
    ]
    ref["upsample_bilinear2d"] = []
    for align in (False, True):
        for shape, size in (((2, 3, 5, 7), (11, 13)), ((2, 3, 5, 7), (3, 4)), ((2, 3, 5, 7), (1, 1)),
                            ((1, 2, 5, 7), (5, 7)), ((1, 2, 4, 4), (8, 8)), ((1, 2, 16, 12), (5, 7)),
                            ((1, 1, 1, 1), (3, 2))):
            name = "%s to %s align_corners=%s" % (shape, size, align)
            ref["upsample_bilinear2d"].append(upsample_case(gen, name, shape, size, align))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "norm_pool.json")
    with open(path + ".tmp", "w") as f:
        json.dump(ref, f)
    os.replace(path + ".tmp", path)
    print("wrote", path)


if __name__ == "__main__":
    main()
