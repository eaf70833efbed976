"""Pretext and future-frame networks (models/pretext.h, models/future.h) in PyTorch.

Each network is built here with the same structure and parameter names as ours, on torchvision's
ResNet code with a narrow base (ref_deeplab.NarrowResNet: base 4, blocks (1, 1, 1, 1)), inputs
32 x 64, batch 2, in f64. The weights and the inputs are drawn in f32 and stored as f32 (exact);
the models then run in f64 and everything they compute is stored in f64 (3 MB in all). For each
case: the weights ("state."), the inputs, the training-mode outputs and loss, every parameter
gradient ("train.grad.") and the buffers after that forward ("after."), then the eval-mode
outputs with those running statistics. Files:

- pretext_triplet: TripletNet with projection 16; the three inputs concatenated along the batch
  in one backbone pass (BatchNorm sees all 3n images, as ours); loss triplet_margin_loss(p=1,
  margin=1). Also ("noproj.") the same backbone without projection, loss with p = 2, train-mode
  embeddings and loss only (starting from the stored state).
- pretext_order: FrameOrderNet, 3 frames, pair_hidden 32, dropout p = 0 (train mode without
  randomness); cross entropy against fixed labels.
- pretext_colorization: ColorizationNet (output stride 8, embed_dim 16, temperature 0.5),
  3 references; per colour mode ("ab.", "bins." with Q = 4 bins over [-110, 110]^2), from the
  same stored state: values, attention, prediction, loss, predicted ab at the input resolution,
  colorization error, gradients, buffers after, and the eval-mode attention. The Lab frames are
  blocky (one colour per 8 x 8 cell plus noise) and the target's cells mostly repeat reference
  colours, so that the bins' p[true bin] is mostly non-zero.
- pretext_future: FutureFrameNet (K = 3, M = 3, base 4, levels 3) on 16 x 32 frames, L1 loss to a
  fixed target. Its
  temporal fusion is written here as nn.Conv3d with kernel (K, 1, 1) over the (n, C, K, h, w)
  stack, as the study described it; the stored weights and gradients are mapped to our 1x1 conv
  over the time-major concatenation: ours[o, t C + c] = conv3d[o, c, t] (models/future.h).
"""
import argparse
import itertools
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import st_io

try:
    import torchvision  # noqa: F401
except ImportError:
    print("reference data: python3-torchvision is not installed; the pretext model tests will "
          "be skipped")
    sys.exit(0)

from ref_deeplab import NarrowResNet  # torchvision's ResNet with the base width as a parameter

BASE = 4
BLOCKS = [1, 1, 1, 1]
N, H, W = 2, 32, 64


def backbone_forward(resnet, x):
    """torchvision's ResNet forward up to layer4 (our ResNet without fc)."""
    x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
    return resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(x))))


def gap(x):
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


# ---- the networks ----

class TripletNet(nn.Module):
    def __init__(self, embedding_dim):
        super().__init__()
        self.backbone = NarrowResNet(BASE, BLOCKS, [False, False, False])
        self.projection = nn.Linear(32 * BASE, embedding_dim) if embedding_dim else None

    def forward(self, x):
        f = gap(backbone_forward(self.backbone, x))
        return self.projection(f) if self.projection is not None else f

    def embed(self, a, p, n):
        return self(torch.cat([a, p, n], 0)).chunk(3, 0)  # one backbone pass


class FrameOrderNet(nn.Module):
    def __init__(self, num_frames, pair_hidden, dropout):
        super().__init__()
        self.num_frames = num_frames
        self.backbone = NarrowResNet(BASE, BLOCKS, [False, False, False])
        pairs = num_frames * (num_frames - 1) // 2
        self.pair_fc = nn.Linear(2 * 32 * BASE, pair_hidden)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(pairs * pair_hidden, math.factorial(num_frames))

    def forward(self, frames):
        n, t = frames.shape[:2]
        f = gap(backbone_forward(self.backbone, frames.flatten(0, 1))).view(n, t, -1)
        h = [F.relu(self.pair_fc(torch.cat([f[:, i], f[:, j]], 1)))
             for i, j in itertools.combinations(range(t), 2)]
        return self.classifier(self.dropout(torch.cat(h, 1)))


class ColorizationNet(nn.Module):
    def __init__(self, embed_dim, temperature):
        super().__init__()
        self.temperature = temperature
        self.backbone = NarrowResNet(BASE, BLOCKS, [False, True, True])  # output stride 8
        self.embed = nn.Conv2d(32 * BASE, embed_dim, 1)

    def forward(self, grey):
        n, frames = grey.shape[:2]
        refs = frames - 1
        x = grey.flatten(0, 1).expand(-1, 3, -1, -1)
        f = self.embed(backbone_forward(self.backbone, x))
        d, h, w = f.shape[1:]
        f = f.reshape(n, frames, d, h * w)
        target = f[:, refs].transpose(1, 2)                              # (n, P, D)
        ref = f[:, :refs].permute(0, 2, 1, 3).reshape(n, d, refs * h * w)  # (n, D, R P)
        return torch.softmax(torch.bmm(target, ref) * (1.0 / self.temperature), dim=2), h, w


def copy(attention, ref_values):
    n, refs, k, h, w = ref_values.shape
    v = ref_values.permute(0, 1, 3, 4, 2).reshape(n, refs * h * w, k)
    return torch.bmm(attention, v).transpose(1, 2).reshape(n, k, h, w)


AB_SCALE = 110.0
AB_RANGE = 110.0
BINS = 4
BIN_EPS = 1e-6


def color_values(lab, h, w, mode):
    n, frames = lab.shape[:2]
    ab = F.adaptive_avg_pool2d(lab.flatten(0, 1), (h, w))[:, 1:3]  # (n F, 2, h, w)
    if mode == "ab":
        return (ab * (1.0 / AB_SCALE)).reshape(n, frames, 2, h, w)
    width = 2.0 * AB_RANGE / BINS
    q = torch.clamp(torch.floor((ab + AB_RANGE) / width), 0, BINS - 1).long()
    index = q[:, 0] * BINS + q[:, 1]                                  # (n F, h, w)
    onehot = F.one_hot(index, BINS * BINS).permute(0, 3, 1, 2).to(lab.dtype)
    return onehot.reshape(n, frames, BINS * BINS, h, w)


def color_loss(prediction, target, mode):
    if mode == "ab":
        return F.l1_loss(prediction, target)
    return -torch.log((prediction * target).sum(1) + BIN_EPS).mean()


def predicted_ab(prediction, mode):
    if mode == "ab":
        ab = prediction * AB_SCALE
    else:
        width = 2.0 * AB_RANGE / BINS
        centres = -AB_RANGE + (torch.arange(BINS, dtype=prediction.dtype) + 0.5) * width
        ca = centres.repeat_interleave(BINS)  # bin qa * Q + qb: a centre of qa
        cb = centres.repeat(BINS)
        ab = torch.stack([(prediction * ca.view(1, -1, 1, 1)).sum(1),
                          (prediction * cb.view(1, -1, 1, 1)).sum(1)], 1)
    return F.interpolate(ab, size=(H, W), mode="bilinear", align_corners=False)


def cbr(conv, out):
    return nn.Sequential(conv, nn.BatchNorm2d(out), nn.ReLU())


class FutureUp(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.up = cbr(nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False), cout)
        self.conv = cbr(nn.Conv2d(2 * cout, cout, 3, padding=1, bias=False), cout)

    def forward(self, x, skip):
        return self.conv(torch.cat([skip, self.up(x)], 1))


class FutureFrameNet(nn.Module):
    """Fusion as Conv3d (K, 1, 1) over (n, C, K, h, w); see the module docstring."""

    def __init__(self, inputs, outputs, base, levels):
        super().__init__()
        ch = [base << l for l in range(levels + 1)]
        self.encoder = nn.Sequential(*[
            cbr(nn.Conv2d(3 if l == 0 else ch[l - 1], ch[l], 3, stride=1 if l == 0 else 2,
                          padding=1, bias=False), ch[l]) for l in range(levels + 1)])
        self.fuse = nn.Sequential(*[
            cbr(nn.Conv3d(ch[l], ch[l], (inputs, 1, 1), bias=False), ch[l])
            for l in range(levels + 1)])
        self.decoder = nn.Sequential(*[FutureUp(ch[l], ch[l - 1]) for l in range(levels, 0, -1)])
        self.head = nn.Conv2d(ch[0], 3 * outputs, 1)

    def forward(self, inputs):
        n, k, _, h, w = inputs.shape
        x = inputs.reshape(n * k, 3, h, w)
        fused = []
        for enc, fuse in zip(self.encoder, self.fuse):
            x = enc(x)
            stack = x.reshape(n, k, *x.shape[1:]).transpose(1, 2)  # (n, C, K, h, w)
            conv3d, bn, relu = fuse
            fused.append(relu(bn(conv3d(stack).squeeze(2))))
        y = fused[-1]
        for i, step in enumerate(self.decoder):
            y = step(y, fused[-2 - i])
        return torch.tanh(self.head(y)).reshape(n, -1, 3, h, w)


def future_name_value(name, t):
    """Conv3d fusion weights (C, C, K, 1, 1) -> ours (C, K C, 1, 1); everything else unchanged."""
    if name.startswith("fuse.") and name.endswith(".0.weight"):
        c_out, c_in, k = t.shape[:3]
        return t.permute(0, 2, 1, 3, 4).reshape(c_out, k * c_in, 1, 1)
    return t


# ---- recording ----

def state_of(model, convert=lambda n, t: t):
    """The state_dict, floating tensors as f32 (the weights were drawn in f32: exact)."""
    return {"state." + k: (convert(k, v).float() if v.is_floating_point() else v).clone()
            for k, v in model.state_dict().items()}


def record_grads(model, tensors, prefix, convert=lambda n, t: t):
    for name, p in model.named_parameters():
        tensors[prefix + "train.grad." + name] = convert(name, p.grad).detach().clone()
    for name, b in model.named_buffers():
        tensors[prefix + "after." + name] = convert(name, b).detach().clone()


def seeded_f32_model(seed, make):
    torch.manual_seed(seed)
    return make().double()  # drawn in f32, so the stored f32 weights are exact


def triplet_case(out_dir):
    model = seeded_f32_model(21, lambda: TripletNet(16))
    g = torch.Generator().manual_seed(22)
    a, p, n = (torch.randn(N, 3, H, W, generator=g).double() for _ in range(3))
    tensors = state_of(model)
    tensors.update({"anchor": a.float(), "positive": p.float(), "negative": n.float()})
    noproj = TripletNet(0).double()
    noproj.backbone.load_state_dict(model.backbone.state_dict())  # before any forward

    model.train()
    ea, ep, en = model.embed(a, p, n)
    loss = F.triplet_margin_loss(ea, ep, en, margin=1.0, p=1)
    loss.backward()
    tensors.update({"train.anchor": ea.detach(), "train.positive": ep.detach(),
                    "train.negative": en.detach(), "train.loss": loss.detach().reshape(1)})
    record_grads(model, tensors, "")
    model.eval()
    with torch.no_grad():
        for role, e in zip(("anchor", "positive", "negative"), model.embed(a, p, n)):
            tensors["eval." + role] = e

    noproj.train()
    with torch.no_grad():
        ea, ep, en = noproj.embed(a, p, n)
        tensors["noproj.train.anchor"] = ea
        tensors["noproj.train.loss"] = F.triplet_margin_loss(ea, ep, en, margin=1.0,
                                                             p=2).reshape(1)
    st_io.save(tensors, os.path.join(out_dir, "pretext_triplet.safetensors"))


def order_case(out_dir):
    model = seeded_f32_model(23, lambda: FrameOrderNet(3, 32, 0.0))
    g = torch.Generator().manual_seed(24)
    frames = torch.randn(N, 3, 3, H, W, generator=g).double()
    labels = torch.tensor([4, 1], dtype=torch.int32)
    tensors = state_of(model)
    tensors.update({"frames": frames.float(), "labels": labels})
    model.train()
    logits = model(frames)
    loss = F.cross_entropy(logits, labels.long())
    loss.backward()
    tensors.update({"train.logits": logits.detach(), "train.loss": loss.detach().reshape(1)})
    record_grads(model, tensors, "")
    model.eval()
    with torch.no_grad():
        tensors["eval.logits"] = model(frames)
    st_io.save(tensors, os.path.join(out_dir, "pretext_order.safetensors"))


def blocky_lab(g):
    """(N, 4, 3, H, W) Lab: one colour per 8 x 8 cell plus noise; the target's (last) cells take
    reference colours except one."""
    cells_h, cells_w = H // 8, W // 8
    refs = 3
    ab = (torch.rand(N, refs + 1, 2, cells_h, cells_w, generator=g, dtype=torch.float64) * 2 - 1)
    ab = ab * 100.0
    for i in range(N):
        pool = ab[i, :refs].permute(0, 2, 3, 1).reshape(-1, 2)  # the references' cell colours
        pick = torch.randint(0, pool.shape[0], (cells_h * cells_w,), generator=g)
        target = pool[pick]
        target[0] = torch.tensor([95.0, -105.0], dtype=torch.float64)  # a colour of its own
        ab[i, refs] = target.reshape(cells_h, cells_w, 2).permute(2, 0, 1)
    ab = ab.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)
    ab = ab + (torch.rand(ab.shape, generator=g, dtype=torch.float64) * 2 - 1) * 3.0
    light = torch.rand(N, refs + 1, 1, H, W, generator=g, dtype=torch.float64) * 100.0
    return torch.cat([light, ab], 2)


def colorization_case(out_dir):
    embed_dim = 16
    model = seeded_f32_model(25, lambda: ColorizationNet(embed_dim, 0.5))
    g = torch.Generator().manual_seed(26)
    lab = blocky_lab(g).float().double()  # f32-exact
    grey = lab[:, :, :1] / 50.0 - 1.0
    state = {k: v.clone() for k, v in model.state_dict().items()}
    tensors = state_of(model)
    tensors.update({"grey": grey, "lab": lab.float()})
    for mode in ("ab", "bins"):
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        model.train()
        attention, h, w = model(grey)
        values = color_values(lab, h, w, mode)
        prediction = copy(attention, values[:, :3])
        loss = color_loss(prediction, values[:, 3], mode)
        loss.backward()
        with torch.no_grad():
            ab = predicted_ab(prediction, mode)
            error = F.l1_loss(ab, lab[:, 3, 1:3])
        prefix = mode + "."
        tensors.update({prefix + "values": values,
                        prefix + "train.attention": attention.detach(),
                        prefix + "train.prediction": prediction.detach(),
                        prefix + "train.loss": loss.detach().reshape(1),
                        prefix + "train.predicted_ab": ab,
                        prefix + "train.error": error.reshape(1)})
        record_grads(model, tensors, prefix)
    model.eval()
    with torch.no_grad():
        tensors["eval.attention"] = model(grey)[0]
    st_io.save(tensors, os.path.join(out_dir, "pretext_colorization.safetensors"))


def future_case(out_dir):
    model = seeded_f32_model(27, lambda: FutureFrameNet(3, 3, 4, 3))
    g = torch.Generator().manual_seed(28)
    inputs = torch.randn(N, 3, 3, H // 2, W // 2, generator=g).double()
    target = (torch.rand(N, 3, 3, H // 2, W // 2, generator=g) * 2 - 1).double()
    tensors = state_of(model, future_name_value)
    tensors.update({"inputs": inputs.float(), "target": target.float()})
    model.train()
    out = model(inputs)
    loss = F.l1_loss(out, target)
    loss.backward()
    tensors.update({"train.output": out.detach(), "train.loss": loss.detach().reshape(1)})
    record_grads(model, tensors, "", future_name_value)
    model.eval()
    with torch.no_grad():
        tensors["eval.output"] = model(inputs)
    st_io.save(tensors, os.path.join(out_dir, "pretext_future.safetensors"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for case in (triplet_case, order_case, colorization_case, future_case):
        start = time.time()
        case(args.out)
        print(f"  {case.__name__}: {time.time() - start:.2f} s", flush=True)


if __name__ == "__main__":
    main()
