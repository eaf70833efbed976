"""PyTorch peer of benchmarks/cuda/bench_triplet.cu: times F.triplet_margin_loss (mean reduction)
forward and backward (gradients of anchor, positive and negative) on the GPU for the cases given as
one JSON argument, with the same rules as the kernel lab (CUDA events, L2 flushed before every call,
median over the iterations), and prints one JSON line:

  {"torch": VERSION, "device": NAME, "results": [{"fwd_ms": .., "bwd_ms": ..}, ...]}

Argument: {"warmup": W, "iters": I, "cases": [{"n", "d", "p", "margin"}, ...]}. The backward is
torch.autograd.grad of the loss with the graph retained. Prints {"error": ...} when PyTorch or a
GPU is missing.
"""
import json
import sys

from peer_lab import cuda_torch, timer


def main():
    args = json.loads(sys.argv[1])
    torch = cuda_torch()
    if torch is None:
        return 0
    import torch.nn.functional as F
    time_ms = timer(torch)
    torch.manual_seed(0)
    results = []
    for k in args["cases"]:
        n, d, p, margin = k["n"], k["d"], k["p"], k["margin"]
        a = torch.randn(n, d, device="cuda", requires_grad=True)
        pos = (a.detach() + 0.5 * torch.randn(n, d, device="cuda")).requires_grad_(True)
        neg = (a.detach() + torch.randn(n, d, device="cuda")).requires_grad_(True)

        def forward():
            with torch.no_grad():
                F.triplet_margin_loss(a, pos, neg, margin=margin, p=p)

        loss = F.triplet_margin_loss(a, pos, neg, margin=margin, p=p)

        def backward():
            torch.autograd.grad(loss, (a, pos, neg), retain_graph=True)

        results.append({"fwd_ms": time_ms(forward, args["warmup"], args["iters"]),
                        "bwd_ms": time_ms(backward, args["warmup"], args["iters"])})
        del a, pos, neg, loss
        torch.cuda.empty_cache()
    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(0),
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
