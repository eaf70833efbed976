"""PyTorch peer of benchmarks/cuda/bench_cross_entropy.cu: times F.cross_entropy(ignore_index=...)
(mean reduction) on the GPU for the cases given as one JSON argument, with the same rules as the
kernel lab (CUDA events, L2 flushed before every call, median over the iterations), and prints one
JSON line:

  {"torch": VERSION, "device": NAME, "results": [{"fwd_ms": .., "bwd_ms": .., "step_ms": ..}, ...]}

Argument: {"warmup": W, "iters": I, "cases": [{"n", "c", "h", "w", "ignore_index"}, ...]}: logits
(n, c, h, w) f32, labels (n, h, w) int64 with 10% ignore_index. fwd: the loss without a graph; bwd:
torch.autograd.grad of the loss (graph retained: log_softmax and nll_loss backward); step: forward
and backward together. Prints {"error": ...} when PyTorch or a GPU is missing.
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
        n, c, h, w = k["n"], k["c"], k["h"], k["w"]
        ignore = k["ignore_index"]
        x = torch.randn(n, c, h, w, device="cuda", requires_grad=True)
        labels = torch.randint(0, c, (n, h, w), device="cuda")
        labels[torch.rand(n, h, w, device="cuda") < 0.1] = ignore

        def forward():
            with torch.no_grad():
                F.cross_entropy(x, labels, ignore_index=ignore)

        loss = F.cross_entropy(x, labels, ignore_index=ignore)

        def backward():
            torch.autograd.grad(loss, x, retain_graph=True)

        def step():
            torch.autograd.grad(F.cross_entropy(x, labels, ignore_index=ignore), x)

        results.append({"fwd_ms": time_ms(forward, args["warmup"], args["iters"]),
                        "bwd_ms": time_ms(backward, args["warmup"], args["iters"]),
                        "step_ms": time_ms(step, args["warmup"], args["iters"])})
        del x, labels, loss
        torch.cuda.empty_cache()
    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(0),
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
