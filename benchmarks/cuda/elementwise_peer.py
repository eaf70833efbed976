"""PyTorch peer of benchmarks/cuda/bench_elementwise.cu: times the same elementwise cases on the
same GPU and prints one JSON line on stdout:

  {"torch": VERSION, "device": NAME, "results": {"broadcast_add": ms, "relu_backward": ms,
   "sum_nhw": ms, "transpose_copy": ms, "adam_fused": ms or null, "adam_foreach": ms or null}}

The one argument is a JSON object: {"act": [8, 64, 256, 512], "params": [[64, 3, 7, 7], ...],
"warmup": W, "iters": I}. Timing as in benchmarks/cuda/lab.h: each timed call follows a write of
twice the L2 size (inputs come from HBM), CUDA events around the call, the median over I runs.
Errors are reported as {"error": "..."}.
"""
import json
import sys

from peer_lab import cuda_torch, timer


def main():
    try:
        args = json.loads(sys.argv[1])
    except (IndexError, ValueError) as e:
        print(json.dumps({"error": f"bad argument: {e}"}))
        return 1
    torch = cuda_torch()
    if torch is None:
        return 1
    dev = torch.device("cuda")
    torch.manual_seed(0)
    warmup, iters = int(args["warmup"]), int(args["iters"])

    lab_time_ms = timer(torch)

    def time_ms(fn):
        return lab_time_ms(fn, warmup, iters)

    results = {}
    act = [int(v) for v in args["act"]]
    n, c, h, w = act
    x = torch.randn(act, device=dev)
    with torch.no_grad():
        b = torch.randn(1, c, 1, 1, device=dev)
        out = torch.empty_like(x)
        results["broadcast_add"] = time_ms(lambda: torch.add(x, b, out=out))

        gy = torch.randn(act, device=dev)
        results["relu_backward"] = time_ms(lambda: torch.ops.aten.threshold_backward(gy, x, 0.0))

        results["sum_nhw"] = time_ms(lambda: x.sum(dim=(0, 2, 3), keepdim=True))

        dst = torch.empty(n, c, w, h, device=dev)
        xt = x.transpose(2, 3)
        results["transpose_copy"] = time_ms(lambda: dst.copy_(xt))
    del x, out, gy, dst, xt

    params = [torch.randn([int(v) for v in s], device=dev, requires_grad=True) for s in args["params"]]
    for p in params:
        p.grad = torch.randn_like(p)
    for key, kwargs in (("adam_fused", {"fused": True}), ("adam_foreach", {"foreach": True})):
        try:
            opt = torch.optim.Adam(params, lr=1e-3, **kwargs)
            results[key] = time_ms(opt.step)
        except (RuntimeError, TypeError, ValueError) as e:  # older torch: no fused Adam
            results[key] = None
            results[key + "_error"] = str(e)[:200]
    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(dev), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
