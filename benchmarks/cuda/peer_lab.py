"""What the kernel lab's PyTorch peers (benchmarks/cuda/*_peer.py) share: PyTorch with a GPU, and
timing by the lab's rules (benchmarks/cuda/lab.h): CUDA events, twice the L2 size written before
every timed call so that inputs come from HBM, median milliseconds over the iterations.
"""
import json
import statistics


def cuda_torch():
    """torch, when it imports and sees a GPU; otherwise None, after printing {"error": ...} (the
    lab then shows our figures only)."""
    try:
        import torch
    except ImportError as e:
        print(json.dumps({"error": f"cannot import torch: {e}"}))
        return None
    if not torch.cuda.is_available():
        print(json.dumps({"error": "PyTorch sees no GPU"}))
        return None
    return torch


def timer(torch):
    """time_ms(fn, warmup, iters): the median milliseconds of fn() after `warmup` untimed calls."""
    props = torch.cuda.get_device_properties(0)
    l2 = int(getattr(props, "L2_cache_size", 0) or (50 << 20))
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
