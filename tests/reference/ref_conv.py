"""PyTorch reference values for conv2d, conv_transpose2d, linear and matmul.

Writes DIR/conv.json: a list of cases, each with the op, its options, the inputs drawn in f64 (x,
weight, optional bias, the upstream gradient gy) and, computed by PyTorch both in f64 and in f32
(from the same values rounded to f32), the output and the gradients of every input, as
{"shape": [...], "data": [...]} (row-major). Read by tests/test_ops_conv.cpp.
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F


def tensor(t):
    t = t.detach().cpu().contiguous().double()
    return {"shape": list(t.shape), "data": t.reshape(-1).tolist()}


CONV_CASES = [
    # name, x shape, weight shape, bias, stride, padding, dilation
    ("3x3 pad 1", (2, 3, 7, 6), (4, 3, 3, 3), True, (1, 1), (1, 1), (1, 1)),
    ("3x3 stride 2 pad 1", (1, 4, 9, 8), (5, 4, 3, 3), True, (2, 2), (1, 1), (1, 1)),
    ("2x3 stride (2,1) pad (1,0) dilation (2,1), no bias", (2, 2, 8, 7), (3, 2, 2, 3), False,
     (2, 1), (1, 0), (2, 1)),
    ("7x7 stride 2 pad 3 stem", (1, 3, 16, 13), (6, 3, 7, 7), True, (2, 2), (3, 3), (1, 1)),
    ("1x1 pointwise", (2, 8, 5, 4), (6, 8, 1, 1), True, (1, 1), (0, 0), (1, 1)),
    ("1x1 stride 2", (2, 8, 5, 5), (6, 8, 1, 1), False, (2, 2), (0, 0), (1, 1)),
    ("3x3 dilation 2 pad 2 (ASPP-like)", (1, 4, 10, 9), (3, 4, 3, 3), True, (1, 1), (2, 2), (2, 2)),
]

CONV_T_CASES = [
    # name, x shape, weight shape (c_in, c_out, r, s), bias, stride, padding, output_padding, dilation
    ("2x2 stride 2 (UNet up)", (2, 6, 4, 5), (6, 3, 2, 2), True, (2, 2), (0, 0), (0, 0), (1, 1)),
    ("3x3 stride 2 pad 1 output_pad 1", (1, 4, 5, 4), (4, 3, 3, 3), True, (2, 2), (1, 1), (1, 1),
     (1, 1)),
    ("3x3 dilation 2 pad 1, no bias", (2, 3, 4, 5), (3, 2, 3, 3), False, (1, 1), (1, 1), (0, 0),
     (2, 2)),
    ("3x2 stride (1,2) output_pad (1,1) dilation (2,1)", (1, 3, 3, 4), (3, 4, 3, 2), True, (1, 2),
     (0, 1), (1, 1), (2, 1)),
]


def grads(fn, inputs, gy):
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in inputs]
    y = fn(*leaves)
    y.backward(gy)
    return y, [t.grad if t is not None else None for t in leaves]


def run_case(case, fn, x, w, b, gen):
    y64 = fn(x, w, b)
    gy = torch.randn(y64.shape, generator=gen, dtype=torch.float64)
    for tag, dtype in (("f64", torch.float64), ("f32", torch.float32)):
        ins = [t.to(dtype) if t is not None else None for t in (x, w, b)]
        y, (gx, gw, gb) = grads(fn, ins, gy.to(dtype))
        res = {"y": tensor(y), "gx": tensor(gx), "gw": tensor(gw)}
        if gb is not None:
            res["gb"] = tensor(gb)
        case[tag] = res
    case.update({"x": tensor(x), "w": tensor(w), "gy": tensor(gy)})
    if b is not None:
        case["b"] = tensor(b)
    return case


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(20240611)
    cases = []
    for name, xs, ws, bias, stride, pad, dil in CONV_CASES:
        x = torch.randn(xs, generator=gen, dtype=torch.float64)
        w = torch.randn(ws, generator=gen, dtype=torch.float64)
        b = torch.randn(ws[0], generator=gen, dtype=torch.float64) if bias else None
        fn = lambda x_, w_, b_, s=stride, p=pad, d=dil: F.conv2d(x_, w_, b_, s, p, d)
        cases.append(run_case({"op": "conv2d", "name": name, "stride": stride, "padding": pad,
                               "dilation": dil}, fn, x, w, b, gen))
    for name, xs, ws, bias, stride, pad, opad, dil in CONV_T_CASES:
        x = torch.randn(xs, generator=gen, dtype=torch.float64)
        w = torch.randn(ws, generator=gen, dtype=torch.float64)
        b = torch.randn(ws[1], generator=gen, dtype=torch.float64) if bias else None
        fn = lambda x_, w_, b_, s=stride, p=pad, o=opad, d=dil: F.conv_transpose2d(
            x_, w_, b_, s, p, o, 1, d)
        cases.append(run_case({"op": "conv_transpose2d", "name": name, "stride": stride,
                               "padding": pad, "output_padding": opad, "dilation": dil},
                              fn, x, w, b, gen))
    # linear on a 3-D input, and a batched matmul with a shared right operand
    x = torch.randn((2, 3, 5), generator=gen, dtype=torch.float64)
    w = torch.randn((4, 5), generator=gen, dtype=torch.float64)
    b = torch.randn(4, generator=gen, dtype=torch.float64)
    cases.append(run_case({"op": "linear", "name": "linear (2,3,5) -> 4"}, F.linear, x, w, b, gen))
    x = torch.randn((3, 4, 6), generator=gen, dtype=torch.float64)
    w = torch.randn((6, 2), generator=gen, dtype=torch.float64)
    cases.append(run_case({"op": "matmul", "name": "matmul (3,4,6) @ (6,2)"},
                          lambda a, b_, _: torch.matmul(a, b_), x, w, None, gen))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "conv.json"), "w") as f:
        json.dump(cases, f)
    print(f"conv.json: {len(cases)} cases")


if __name__ == "__main__":
    main()
