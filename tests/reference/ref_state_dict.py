"""Reference files for tests/test_nn.cpp and tests/test_safetensors.cpp (PyTorch state_dict layout).

Writes into --out:
- state_dict.safetensors: the state_dict of a small torch network (Conv2d+BN+ReLU+MaxPool,
  ConvTranspose2d, Linear inside nn.Sequential and nested custom modules), after a few training
  steps so that BatchNorm's running statistics and num_batches_tracked are not their defaults.
- state_dict_keys.json: PyTorch's order of state_dict(), named_parameters() and named_buffers()
  (the safetensors file itself is written with sorted names, so it cannot carry the order).
- state_dict_io.safetensors: an input and the network's output in eval mode.
- all_dtypes.safetensors: one tensor of every dtype we support, with exact bit patterns (signed
  zero, infinity, subnormals, extremes), a scalar (shape []) and an empty tensor; the C++ test
  holds the same values.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402


class ConvBlock(nn.Module):
    """conv3x3 (no bias) - BN - ReLU - max-pool 2, as named children."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        return self.pool(self.relu(self.bn(self.conv(x))))


class Net(nn.Module):
    """(n, 3, 16, 16) -> (n, 3)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.MaxPool2d(2))                       # (n, 8, 8, 8)
        self.layer1 = nn.Sequential(ConvBlock(8, 16), ConvBlock(16, 16))  # (n, 16, 2, 2)
        self.up = nn.ConvTranspose2d(16, 4, 2, stride=2)                  # (n, 4, 4, 4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.ReLU(), nn.Dropout(0.5),
                                  nn.Linear(10, 3))

    def forward(self, x):
        return self.head(self.up(self.layer1(self.stem(x))))


def bits(values, dtype):
    """A torch tensor with the given raw bit patterns (ints) reinterpreted as `dtype`."""
    raw = {torch.float32: np.uint32, torch.float64: np.uint64, torch.float16: np.uint16,
           torch.bfloat16: np.uint16}[dtype]
    signed = {np.uint32: np.int32, np.uint64: np.int64, np.uint16: np.int16}[raw]
    ints = torch.from_numpy(np.array(values, dtype=raw).view(signed).copy())
    return ints.view(dtype)


def all_dtypes():
    # Keep in sync with the "PyTorch-written file of every dtype" test in tests/test_safetensors.cpp.
    return {
        "f32": bits([0x00000000, 0x80000000, 0x3FC00000, 0xC0100000, 0x7F800000, 0x00000001],
                    torch.float32).reshape(2, 3),
        "f64": bits([0x3FF0000000000000, 0xBFF8000000000000, 0x7FEFFFFFFFFFFFFF,
                     0x0000000000000001], torch.float64),
        "f16": bits([0x3C00, 0xC000, 0x7BFF, 0x0001], torch.float16).reshape(2, 2),
        "bf16": bits([0x3F80, 0xC0A0, 0x7F7F], torch.bfloat16),
        "i32": torch.tensor([-2147483648, 0, 2147483647], dtype=torch.int32),
        "i64": torch.tensor([[-(2 ** 63), -1], [1, 2 ** 63 - 1]], dtype=torch.int64),
        "u8": torch.tensor([0, 1, 127, 128, 255], dtype=torch.uint8),
        "scalar": torch.tensor(2.5, dtype=torch.float32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):  # not the defaults 1 / 0
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
        net.train()
        for _ in range(3):  # running statistics move, num_batches_tracked = 3
            net(torch.randn(4, 3, 16, 16))
    net.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        y = net(x)

    sd = net.state_dict()
    st_io.save(dict(sd), os.path.join(args.out, "state_dict.safetensors"),
               metadata={"format": "pt", "source": "ref_state_dict.py"})
    keys = {
        "state_dict": [[k, list(v.shape), str(v.dtype)] for k, v in sd.items()],
        "parameters": [k for k, _ in net.named_parameters()],
        "buffers": [k for k, _ in net.named_buffers()],
    }
    with open(os.path.join(args.out, "state_dict_keys.json"), "w") as f:
        json.dump(keys, f, indent=1)
    st_io.save({"input": x, "output": y}, os.path.join(args.out, "state_dict_io.safetensors"))
    st_io.save(all_dtypes(), os.path.join(args.out, "all_dtypes.safetensors"),
               metadata={"format": "pt", "source": "ref_state_dict.py"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
