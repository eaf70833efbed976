"""UNet reference: Pytorch-UNet's modules (the 2020 version the study ran: 3x3 convs with bias),
written out here since the package is not in Debian. For a small UNet (base 4 channels, depth 4)
in f64, transposed-conv and bilinear variants, on an odd-sized input so that the skip padding is
exercised: the state_dict, the input, the training-mode output, the gradients of L = sum(out * r)
with respect to the input and every parameter, the buffers after that forward, and the eval-mode
output with those running statistics. Also the names and shapes of the full-size UNet(3, 19).
"""
import argparse
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

import st_io


class DoubleConv(nn.Module):
    def __init__(self, in_channels, out_channels, mid_channels=None):
        super().__init__()
        if not mid_channels:
            mid_channels = out_channels
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True))

    def forward(self, x):
        return self.double_conv(x)


class Down(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))

    def forward(self, x):
        return self.maxpool_conv(x)


class Up(nn.Module):
    def __init__(self, in_channels, out_channels, bilinear=True):
        super().__init__()
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.conv = DoubleConv(in_channels, out_channels, in_channels // 2)
        else:
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
            self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x1, x2):
        x1 = self.up(x1)
        diff_y = x2.size()[2] - x1.size()[2]
        diff_x = x2.size()[3] - x1.size()[3]
        x1 = F.pad(x1, [diff_x // 2, diff_x - diff_x // 2, diff_y // 2, diff_y - diff_y // 2])
        return self.conv(torch.cat([x2, x1], dim=1))


class OutConv(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x):
        return self.conv(x)


class UNet(nn.Module):
    def __init__(self, n_channels, n_classes, bilinear, base):
        super().__init__()
        factor = 2 if bilinear else 1
        self.inc = DoubleConv(n_channels, base)
        self.down1 = Down(base, base * 2)
        self.down2 = Down(base * 2, base * 4)
        self.down3 = Down(base * 4, base * 8)
        self.down4 = Down(base * 8, base * 16 // factor)
        self.up1 = Up(base * 16, base * 8 // factor, bilinear)
        self.up2 = Up(base * 8, base * 4 // factor, bilinear)
        self.up3 = Up(base * 4, base * 2 // factor, bilinear)
        self.up4 = Up(base * 2, base, bilinear)
        self.outc = OutConv(base, n_classes)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x = self.up1(x5, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.outc(x)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    for bilinear in (False, True):
        torch.manual_seed(3)
        net = UNet(3, 5, bilinear, 4).double()
        state = {k: v.clone() for k, v in net.state_dict().items()}
        x = torch.randn(2, 3, 35, 37, dtype=torch.float64, requires_grad=True)
        out = net(x)
        r = torch.randn_like(out)
        (out * r).sum().backward()
        tensors = {"state." + k: v for k, v in state.items()}
        tensors["input"] = x.detach()
        tensors["output"] = out.detach()
        tensors["projection"] = r
        tensors["grad.input"] = x.grad
        for name, p in net.named_parameters():
            tensors["grad." + name] = p.grad
        for name, b in net.named_buffers():
            tensors["after." + name] = b.clone()
        net.eval()  # with the running statistics the training forward left
        with torch.no_grad():
            tensors["eval.output"] = net(x.detach())
        name = "unet_bilinear.safetensors" if bilinear else "unet_transposed.safetensors"
        st_io.save(tensors, os.path.join(args.out, name))
    # The study's full-size UNet(3, 19) in both variants: every state_dict name with its shape.
    shapes = {}
    for bilinear in (False, True):
        variant = "bilinear." if bilinear else "transposed."
        for name, t in UNet(3, 19, bilinear, 64).state_dict().items():
            shapes[variant + name] = torch.tensor(list(t.shape), dtype=torch.int64)
    st_io.save(shapes, os.path.join(args.out, "unet_full_shapes.safetensors"))


if __name__ == "__main__":
    main()
