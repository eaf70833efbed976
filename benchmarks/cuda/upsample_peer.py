"""PyTorch peer of benchmarks/cuda/bench_upsample.cu: times F.interpolate(mode="bilinear") forward and
backward on the GPU for the cases given as one JSON argument, with the same rules as the kernel lab
(CUDA events, L2 flushed before every call, median over the iterations), and prints one JSON line:

  {"torch": VERSION, "device": NAME, "results": [{"fwd_ms": .., "bwd_ms": ..}, ...]}

Argument: {"warmup": W, "iters": I, "cases": [{"n", "c", "h", "w", "p", "q", "align_corners"}, ...]}.
The backward is torch.autograd.grad of the interpolation's output with a fixed upstream gradient
(the graph is built once and retained). Prints {"error": ...} when PyTorch or a GPU is missing.
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
        size = (k["p"], k["q"])
        ac = bool(k["align_corners"])
        x = torch.randn(k["n"], k["c"], k["h"], k["w"], device="cuda", requires_grad=True)
        gy = torch.randn(k["n"], k["c"], k["p"], k["q"], device="cuda")

        def forward():
            with torch.no_grad():
                F.interpolate(x, size=size, mode="bilinear", align_corners=ac)

        y = F.interpolate(x, size=size, mode="bilinear", align_corners=ac)

        def backward():
            torch.autograd.grad(y, x, gy, retain_graph=True)

        results.append({"fwd_ms": time_ms(forward, args["warmup"], args["iters"]),
                        "bwd_ms": time_ms(backward, args["warmup"], args["iters"])})
        del x, gy, y
        torch.cuda.empty_cache()
    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(0),
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
