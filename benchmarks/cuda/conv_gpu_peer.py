"""PyTorch peer of benchmarks/cuda/bench_conv_gpu.cu: the same convolutions and ASPP projections on
the same GPU, timed the same way, printed as one JSON line.

Argument: one JSON object
  {"warmup": W, "iters": I, "tf32": true,
   "cases": [{"kind": "conv", "transposed": false, "n":, "c":, "h":, "w":, "k":, "r":, "s":,
              "stride":, "pad":, "dil":, "output_pad":},
             {"kind": "aspp", "n":, "h":, "w":, "branches":, "width":, "pooled":, "k":}, ...]}
conv: weight (k, c, r, s), or (c, k, r, s) for a transposed conv (c inputs, k outputs), with bias.
aspp: `branches` maps (n, width, h, w) and pooled (n, pooled) expanded over (h, w), concatenated,
then a 1x1 conv to k channels without bias (torchvision's DeepLabv3 head does exactly this).

Output: {"torch": VERSION, "cudnn": VERSION, "device": NAME,
         "results": [{"fwd_ms": .., "step_ms": ..}, ...]}  (one per case, in order)
or {"error": MESSAGE}.

Timing as benchmarks/cuda/lab.h: CUDA events around each call after writing twice the L2 size,
median over `iters` after `warmup` calls. fwd: the op under no_grad; step: forward + backward with
a fixed upstream gradient, .grad set to None before each step. cudnn.benchmark = True (our side
searches algorithms once per shape too); TF32 as requested for cuDNN and for matmuls.
"""
import json
import sys

from peer_lab import cuda_torch, timer


def main():
    try:
        args = json.loads(sys.argv[1])
    except (IndexError, ValueError) as e:
        print(json.dumps({"error": f"bad argument: {e}"}))
        return 0
    torch = cuda_torch()
    if torch is None:
        return 0
    import torch.nn.functional as F

    tf32 = bool(args.get("tf32", True))
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    warmup, iters = int(args["warmup"]), int(args["iters"])
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev)
    gen.manual_seed(1)

    def randn(*shape, scale=1.0):  # drawn on the GPU: the values do not matter, only the sizes
        t = torch.randn(*shape, generator=gen, device=dev)
        return t.mul_(scale) if scale != 1.0 else t

    lab_time_ms = timer(torch)

    def time_ms(fn):
        return lab_time_ms(fn, warmup, iters)

    results = []
    for case in args["cases"]:
        if case["kind"] == "conv":
            n, c, h, w, k = (case[key] for key in ("n", "c", "h", "w", "k"))
            r, s, stride, pad, dil, opad = (case[key] for key in ("r", "s", "stride", "pad", "dil",
                                                                  "output_pad"))
            scale = 1.0 / (c * r * s) ** 0.5
            x = randn(n, c, h, w).requires_grad_(True)
            bias = randn(k).requires_grad_(True)
            if case["transposed"]:
                weight = randn(c, k, r, s, scale=scale).requires_grad_(True)

                def fwd():
                    return F.conv_transpose2d(x, weight, bias, stride, pad, opad, 1, dil)
            else:
                weight = randn(k, c, r, s, scale=scale).requires_grad_(True)

                def fwd():
                    return F.conv2d(x, weight, bias, stride, pad, dil)
            leaves = [x, weight, bias]
        else:
            n, h, w, k = case["n"], case["h"], case["w"], case["k"]
            nb, width, p = case["branches"], case["width"], case["pooled"]
            total = nb * width + p
            branches = [randn(n, width, h, w).requires_grad_(True) for _ in range(nb)]
            pooled = randn(n, p).requires_grad_(True)
            weight = randn(k, total, 1, 1, scale=1.0 / total ** 0.5).requires_grad_(True)

            def fwd():
                parts = branches + [pooled.view(n, p, 1, 1).expand(n, p, h, w)]
                return F.conv2d(torch.cat(parts, 1), weight)
            leaves = branches + [pooled, weight]
        with torch.no_grad():
            gy = randn(*fwd().shape)

        def fwd_nograd():
            with torch.no_grad():
                fwd()

        def step():
            for t in leaves:
                t.grad = None
            fwd().backward(gy)

        fwd_ms = time_ms(fwd_nograd)
        step_ms = time_ms(step)
        results.append({"fwd_ms": fwd_ms, "step_ms": step_ms})
        del leaves, gy
        torch.cuda.empty_cache()

    print(json.dumps({"torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
                      "device": torch.cuda.get_device_name(dev), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
