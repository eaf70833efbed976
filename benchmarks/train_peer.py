"""PyTorch peer of benchmarks/bench_train.cpp: one full training step of a segmentation model
(forward, cross entropy with ignore index 255, backward, optimiser step) on the weights and the
batch that bench_train wrote, timed with the same thread count, warmup and step count, and prints
one JSON object on stdout:

  {"torch": VERSION, "threads": N, "device": "cpu", "loss": [L0, L1], "step_ms": [...],
   "cpu_ms": [...] (the process's CPU time per step, all threads),
   "rss_growth_bytes": B, "tensor_peak_bytes": B, "tensor_base_bytes": B,
   "breakdown": {"forward": {OP: ms}, "backward": {NODE: ms}, "other": {PHASE: ms}}}

- The model is built from --model (a builder in MODELS), then the safetensors file --weights is
  loaded into it strictly: a missing, unexpected or mis-shaped tensor is an error, so the
  architecture cannot silently differ from ours. The batch file holds "input" (n, 3, h, w) f32
  and "labels" (n, h, w) i32 (converted to int64 for cross_entropy).
- The optimiser is the UNet recipe of the study: RMSprop(lr 1e-3, alpha 0.99, eps 1e-8,
  weight_decay 1e-8, momentum 0.9). One step: zero_grad(set_to_none=True), forward, loss,
  backward, step.
- loss: the losses of the first two steps (before any update, and after one): the caller compares
  them with its own.
- rss_growth_bytes: the process's peak resident set during the steps (VmHWM, reset through
  /proc/self/clear_refs before the first step) minus its resident set before the first step.
- tensor_peak_bytes: the peak of live tensor bytes during one more step profiled with
  profile_memory=True (each allocation and free of PyTorch's CPU allocator, summed in time
  order), plus the bytes live when that step started (parameters, buffers, gradients, optimiser
  state, the batch): tensor_base_bytes. oneDNN's own scratch memory is not allocated through
  PyTorch's allocator and is not counted (RSS growth counts it).
- breakdown: one more step under the profiler: per forward op called from the model and the loss
  (the direct children of the forward phase: aten::conv2d, aten::batch_norm, ...), per autograd
  node (autograd::engine::evaluate_function: NAME), and the optimiser step, in milliseconds.
  The profiler adds overhead; use it for shares, not totals.
- --device cuda times on the GPU with torch.cuda.synchronize() around each step and reports
  torch.cuda.max_memory_allocated() as the tensor peak.

Run it with /usr/bin/python3 (Debian's python3-torch). Prints {"error": ...} when torch cannot be
imported or the weights do not fit the model.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# The reference UNet (Pytorch-UNet's modules) and the safetensors reader of the tests.
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))


def build_unet(spec, num_classes):
    from ref_unet import UNet
    return UNet(3, num_classes, bool(int(spec.get("bilinear", "0"))), int(spec.get("base", "64")))


def build_deeplabv3(spec, num_classes):
    """torchvision's DeepLabv3-ResNet101 layout (ResNet-101 backbone, DeepLabHead), output stride
    8 (layer3 and layer4 dilated) or 16 (layer4 only), ASPP rates given as "rates=12-24-36"."""
    from torchvision.models import resnet101
    from torchvision.models.segmentation.deeplabv3 import ASPP
    import torch.nn as nn

    os_ = int(spec.get("os", "8"))
    rates = [int(r) for r in spec.get("rates", "12-24-36").split("-")]
    dilate = [False, True, True] if os_ == 8 else [False, False, True]

    class DeepLabV3(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = resnet101(weights=None, replace_stride_with_dilation=dilate)
            del self.backbone.fc
            # torchvision's DeepLabHead (same children, same state_dict names), with these rates
            self.classifier = nn.Sequential(
                ASPP(2048, rates), nn.Conv2d(256, 256, 3, padding=1, bias=False),
                nn.BatchNorm2d(256), nn.ReLU(), nn.Conv2d(256, num_classes, 1))
            # "dropout=0": no dropout after the ASPP projection (the losses are compared).
            self.classifier[0].project[3].p = float(spec.get("dropout", "0.5"))

        def forward(self, x):
            import torch.nn.functional as F
            b = self.backbone
            f = b.layer4(b.layer3(b.layer2(b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(x))))))))
            return F.interpolate(self.classifier(f), size=x.shape[-2:], mode="bilinear",
                                 align_corners=False)

    return DeepLabV3()


# Model builders by the name before ':' of --model ("unet:bilinear=1,base=64").
MODELS = {"unet": build_unet, "deeplabv3": build_deeplabv3}


def parse_model(text):
    name, _, rest = text.partition(":")
    spec = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r} (known: {', '.join(sorted(MODELS))})")
    return name, spec


def rss_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--batch", required=True)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--iters", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--breakdown", action="store_true")
    args = parser.parse_args()
    try:
        import torch
        import torch.nn.functional as F
        import st_io
    except ImportError as e:
        print(json.dumps({"error": f"cannot import torch: {e}"}))
        return 1
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print(json.dumps({"error": f"{sys.executable}: torch {torch.__version__} has no CUDA"}))
        return 1

    name, spec = parse_model(args.model)
    net = MODELS[name](spec, args.classes)
    try:
        net.load_state_dict(st_io.load(args.weights), strict=True)
    except RuntimeError as e:
        print(json.dumps({"error": f"{args.weights} does not fit {args.model}: {e}"[:2000]}))
        return 1
    net = net.to(device).train()
    batch = st_io.load(args.batch)
    x = batch["input"].to(device)
    labels = batch["labels"].long().to(device)
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-3, alpha=0.99, eps=1e-8,
                              weight_decay=1e-8, momentum=0.9)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autograd.profiler.record_function("phase:forward"):
            loss = F.cross_entropy(net(x), labels, ignore_index=255)
        with torch.autograd.profiler.record_function("phase:backward"):
            loss.backward()
        with torch.autograd.profiler.record_function("phase:optimizer"):
            opt.step()
        return loss

    sync()
    rss_reset = reset_peak_rss()
    rss_before = rss_bytes("VmRSS")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    losses, times, cpu_times = [], [], []
    for i in range(args.warmup + args.iters):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step()
        sync()
        dt, dc = (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3
        if i < 2:
            losses.append(loss.item())
        if i >= args.warmup:
            times.append(dt)
            cpu_times.append(dc)
    rss_growth = rss_bytes("VmHWM") - rss_before if rss_reset else None

    def live_bytes():
        tensors = [x, labels] + list(net.parameters()) + list(net.buffers())
        tensors += [p.grad for p in net.parameters() if p.grad is not None]
        for st in opt.state.values():
            tensors += [v for v in st.values() if torch.is_tensor(v)]
        return sum(t.numel() * t.element_size() for t in tensors)

    if cuda:
        tensor_base = None
        tensor_peak = torch.cuda.max_memory_allocated()
    else:
        tensor_base = live_bytes()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                    profile_memory=True) as prof:
            step()
        events = sorted((e.start_us(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                        if e.name() == "[memory]")
        live = peak = 0
        for _, nbytes in events:
            live += nbytes
            peak = max(peak, live)
        tensor_peak = tensor_base + peak

    breakdown = None
    if args.breakdown:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if cuda:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            step()
            sync()
        forward, backward, other = {}, {}, {}
        prefix = "autograd::engine::evaluate_function: "
        for e in prof.profiler.function_events:
            ms = e.cpu_time_total / 1e3
            parent = e.cpu_parent.name if e.cpu_parent is not None else None
            if parent == "phase:forward":
                forward[e.name] = forward.get(e.name, 0.0) + ms
            elif e.name.startswith(prefix):
                node = e.name[len(prefix):]
                backward[node] = backward.get(node, 0.0) + ms
            elif e.name.startswith("phase:"):
                other[e.name[len("phase:"):]] = other.get(e.name[len("phase:"):], 0.0) + ms
        breakdown = {"forward": forward, "backward": backward, "other": other}

    print(json.dumps({"torch": torch.__version__, "python": sys.executable,
                      "threads": torch.get_num_threads(), "device": str(device),
                      "mkldnn": torch.backends.mkldnn.is_available(), "loss": losses,
                      "step_ms": times, "cpu_ms": cpu_times, "rss_growth_bytes": rss_growth,
                      "tensor_peak_bytes": tensor_peak, "tensor_base_bytes": tensor_base,
                      "breakdown": breakdown}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
