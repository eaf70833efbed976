"""PyTorch peer of benchmarks/cuda/bench_upsample.cu: times F.interpolate(mode="bilinear") forward and
backward on the GPU for the cases given as one JSON argument, with the same rules as the kernel lab
(CUDA events, L2 flushed before every call, median over the iterations), and prints one JSON line:

  {"torch": VERSION, "device": NAME, "results": [{"fwd_ms": .., "bwd_ms": ..}, ...]}

Argument: {"warmup": W, "iters": I, "cases": [{"n", "c", "h", "w", "p", "q", "align_corners"}, ...]}.
The backward is torch.autograd.grad of the interpolation's output with a fixed upstream gradient
(the graph is built once and retained). Prints {"error": ...} when PyTorch or a GPU is missing.
"""
import json
import statistics
import sys


def timer(torch):
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 * 1024 * 1024)
    flush_buffer = torch.empty(max(2 * l2, 1 << 20), dtype=torch.uint8, device="cuda")

    def time_ms(fn, warmup, iters):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(iters):
            flush_buffer.zero_()
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        return statistics.median(times)

    return time_ms


def main():
    args = json.loads(sys.argv[1])
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(json.dumps({"error": f"cannot import torch: {e}"}))
        return 0
    if not torch.cuda.is_available():
        print(json.dumps({"error": "PyTorch sees no GPU"}))
        return 0
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
