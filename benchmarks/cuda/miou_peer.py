"""PyTorch peer of benchmarks/cuda/bench_miou.cu: times the confusion matrix of a batch the usual
PyTorch way - F.interpolate to the label size when it differs, argmax over the classes, then
torch.bincount of label * c + prediction over the labelled pixels - on the GPU for the cases given
as one JSON argument, with the same rules as the kernel lab (CUDA events, L2 flushed before every
call, median over the iterations), and prints one JSON line:

  {"torch": VERSION, "device": NAME, "results": [{"ms": ..}, ...]}

Argument: {"warmup": W, "iters": I, "cases": [{"n", "c", "h", "w", "label_h", "label_w",
"align_corners", "ignore_index"}, ...]}. Prints {"error": ...} when PyTorch or a GPU is missing.
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
        n, c = k["n"], k["c"]
        size = (k["label_h"], k["label_w"])
        ignore = k["ignore_index"]
        ac = bool(k["align_corners"])
        x = torch.randn(n, c, k["h"], k["w"], device="cuda")
        labels = torch.randint(0, c, (n,) + size, device="cuda")
        labels[torch.rand((n,) + size, device="cuda") < 0.1] = ignore
        resize = (k["h"], k["w"]) != size

        def confusion():
            with torch.no_grad():
                logits = F.interpolate(x, size=size, mode="bilinear", align_corners=ac) if resize else x
                pred = logits.argmax(1)
                keep = labels != ignore
                idx = labels[keep] * c + pred[keep]
                return torch.bincount(idx, minlength=c * c).reshape(c, c)

        results.append({"ms": time_ms(confusion, args["warmup"], args["iters"])})
        del x, labels
        torch.cuda.empty_cache()
    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(0),
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
