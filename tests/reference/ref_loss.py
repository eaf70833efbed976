"""PyTorch reference values for softmax, log_softmax, cross_entropy, l1/mse and triplet losses.

Writes DIR/loss.json: for each case the f64 inputs, the upstream gradient, the forward output and the
input gradients, as {"shape": [...], "data": [...]} (row-major). Labels are integer lists. Read by
tests/test_ops_loss.cpp.
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F


def tensor(t):
    t = t.detach().cpu().contiguous()
    return {"shape": list(t.shape), "data": t.reshape(-1).tolist()}


def leaf(shape, gen, scale=1.0):
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).requires_grad_(True)


def softmax_cases(gen):
    cases = []
    for op, fn in (("softmax", torch.softmax), ("log_softmax", torch.log_softmax)):
        for shape, dim in (((2, 3, 4, 5), 1), ((2, 3, 4, 5), -1), ((4, 7), 0), ((3, 70, 2), 1)):
            x = leaf(shape, gen, 3.0)
            y = fn(x, dim)
            gy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
            (gx,) = torch.autograd.grad(y, x, gy)
            cases.append({"op": op, "dim": dim, "x": tensor(x), "y": tensor(y), "gy": tensor(gy),
                          "gx": tensor(gx)})
    return cases


def cross_entropy_cases(gen):
    cases = []
    configs = [
        # logits shape, ignore_index, ignored share, weighted
        ((2, 5, 3, 4), 255, 0.25, True),
        ((2, 5, 3, 4), 255, 0.25, False),
        ((6, 4), -100, 0.0, False),
        ((7, 19), 3, 0.0, True),
        ((3, 6, 9), -100, 0.3, True),
    ]
    for shape, ignore_index, share, weighted in configs:
        n, c = shape[0], shape[1]
        label_shape = (n,) + tuple(shape[2:])
        labels = torch.randint(0, c, label_shape, generator=gen)
        drop = torch.rand(label_shape, generator=gen) < share
        labels[drop] = ignore_index
        weight = torch.rand(c, generator=gen, dtype=torch.float64) * 1.8 + 0.2 if weighted else None
        for reduction in ("none", "mean", "sum"):
            x = leaf(shape, gen, 2.0)
            y = F.cross_entropy(x, labels, weight=weight, ignore_index=ignore_index,
                                reduction=reduction)
            gy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
            (gx,) = torch.autograd.grad(y, x, gy)
            case = {"ignore_index": ignore_index, "reduction": reduction, "x": tensor(x),
                    "labels": {"shape": list(labels.shape), "data": labels.reshape(-1).tolist()},
                    "y": tensor(y), "gy": tensor(gy), "gx": tensor(gx)}
            if weight is not None:
                case["weight"] = tensor(weight)
            cases.append(case)
    return cases


def triplet_cases(gen):
    cases = []
    for p, margin, shape in ((2, 1.0, (10, 6)), (1, 2.0, (10, 6)), (2, 0.3, (5, 33))):
        for reduction in ("none", "mean", "sum"):
            a = leaf(shape, gen)
            # Negatives alternately near and far from the anchor: both sides of the hinge.
            spread = torch.tensor([0.3 if i % 2 == 0 else 3.0 for i in range(shape[0])],
                                  dtype=torch.float64).unsqueeze(1)
            pos = (a.detach() + 0.7 * torch.randn(shape, generator=gen, dtype=torch.float64))
            neg = (a.detach() + spread * torch.randn(shape, generator=gen, dtype=torch.float64))
            pos.requires_grad_(True)
            neg.requires_grad_(True)
            y = F.triplet_margin_loss(a, pos, neg, margin=margin, p=p, eps=1e-6,
                                      reduction=reduction)
            gy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
            ga, gp, gn = torch.autograd.grad(y, (a, pos, neg), gy)
            cases.append({"p": p, "margin": margin, "reduction": reduction, "anchor": tensor(a),
                          "positive": tensor(pos), "negative": tensor(neg), "y": tensor(y),
                          "gy": tensor(gy), "ga": tensor(ga), "gp": tensor(gp), "gn": tensor(gn)})
    return cases


def pointwise_cases(gen):
    cases = []
    for op, fn in (("l1_loss", F.l1_loss), ("mse_loss", F.mse_loss)):
        for reduction in ("none", "mean", "sum"):
            x = leaf((3, 4, 5), gen)
            t = leaf((3, 4, 5), gen)
            y = fn(x, t, reduction=reduction)
            gy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
            gx, gt = torch.autograd.grad(y, (x, t), gy)
            cases.append({"op": op, "reduction": reduction, "x": tensor(x), "t": tensor(t),
                          "y": tensor(y), "gy": tensor(gy), "gx": tensor(gx), "gt": tensor(gt)})
    return cases


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(20240611)
    data = {
        "torch_version": torch.__version__,
        "softmax": softmax_cases(gen),
        "cross_entropy": cross_entropy_cases(gen),
        "triplet": triplet_cases(gen),
        "pointwise": pointwise_cases(gen),
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "loss.json")
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
