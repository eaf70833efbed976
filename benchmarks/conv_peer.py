"""PyTorch peer of benchmarks/bench_conv.cpp and benchmarks/bench_aspp.cpp: times conv2d /
conv_transpose2d forward + backward (input, weight and bias gradients), or DeepLabv3's ASPP
projection as torchvision computes it, on the CPU for the shapes given on the command line, with
the same thread count, warmup and iteration count, and prints one JSON object on stdout:

  {"torch": VERSION, "threads": N, "mkldnn": BOOL, "results": [{"median_ms": .., "fwd_ms": ..}, ...]}

Each shape is "OP:n,c,h,w,k,r,s,stride,pad,dil,output_pad" with OP conv2d (weight (k, c, r, s)) or
conv_transpose2d (weight (c, k, r, s): c inputs, k outputs), or "aspp:n,h,w,branches,width,pooled,k":
`branches` maps (n, width, h, w) and pooled (n, pooled) brought to (h, w), concatenated and
projected by a 1x1 conv without bias (weight (k, branches * width + pooled, 1, 1)); the gradients
of every branch, pooled and the weight. One step: the leaves' .grad set to None, forward, backward
with a fixed upstream gradient; fwd: the forward under no_grad. Median milliseconds. Run it with
/usr/bin/python3 (Debian's python3-torch). Prints {"error": ...} when torch cannot be imported.
"""
import argparse
import json
import statistics
import sys
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--iters", type=int, required=True)
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with the process's CPU time instead of the wall clock")
    parser.add_argument("shapes", nargs="+")
    args = parser.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(json.dumps({"error": f"cannot import torch: {e}"}))
        return 1
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.cpu_time else time.perf_counter
    torch.manual_seed(0)
    results = []
    for spec in args.shapes:
        op, nums = spec.split(":")
        if op == "aspp":
            n, h, w, nb, width, p, k = (int(v) for v in nums.split(","))
            total = nb * width + p
            branches = [torch.randn(n, width, h, w, requires_grad=True) for _ in range(nb)]
            pooled = torch.randn(n, p, requires_grad=True)
            weight = (torch.randn(k, total, 1, 1) / total ** 0.5).requires_grad_(True)
            leaves = branches + [pooled, weight]

            def fn():
                parts = branches + [pooled.view(n, p, 1, 1).expand(n, p, h, w)]
                return F.conv2d(torch.cat(parts, 1), weight)
        else:
            n, c, h, w, k, r, s, stride, pad, dil, opad = (int(v) for v in nums.split(","))
            x = torch.randn(n, c, h, w, requires_grad=True)
            bias = torch.randn(k, requires_grad=True)
            if op == "conv2d":
                weight = torch.randn(k, c, r, s, requires_grad=True)
                fn = lambda: F.conv2d(x, weight, bias, stride, pad, dil)
            else:
                weight = torch.randn(c, k, r, s, requires_grad=True)
                fn = lambda: F.conv_transpose2d(x, weight, bias, stride, pad, opad, 1, dil)
            leaves = [x, weight, bias]
        with torch.no_grad():
            gy = torch.randn(fn().shape)

        def step():
            for t in leaves:
                t.grad = None
            fn().backward(gy)

        for _ in range(args.warmup):
            step()
        times = []
        for _ in range(args.iters):
            t0 = clock()
            step()
            times.append((clock() - t0) * 1e3)
        for t in leaves:
            t.grad = None
        fwd = []
        with torch.no_grad():
            for _ in range(args.iters):
                t0 = clock()
                fn()
                fwd.append((clock() - t0) * 1e3)
        results.append({"median_ms": statistics.median(times), "fwd_ms": statistics.median(fwd)})
        del leaves, weight, gy
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "mkldnn": torch.backends.mkldnn.is_available(), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
