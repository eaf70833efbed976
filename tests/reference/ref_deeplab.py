"""ResNet and DeepLabv3 references from torchvision (and DeepLabv3.pytorch, the study's code).

Every model runs in f64 on a small input with labels that include ignored (255) pixels. For each
mode (train, then eval with the running statistics the train forward left) it records the logits,
the loss and every parameter gradient; after the train forward also every buffer (the batch-norm
running statistics). Dropout is set to p = 0 so that train mode is deterministic. Files:

- deeplab_small_os8 / _os16: torchvision's DeepLabV3, ASPP, DeepLabHead layout and FCNHead (aux)
  on torchvision's ResNet code with a narrow base (8 instead of 64; its __init__ hard-codes 64,
  so it is repeated below with the base as a parameter), blocks (1, 1, 2, 3), 16 ASPP channels,
  5 classes; output stride 8 (replace_stride_with_dilation F, T, T; rates 12, 24, 36) and 16
  (F, F, T; rates 6, 12, 18).
- deeplab_small_mg: as os16, with layer4's dilations set to multi-grid 2 * (1, 2, 4).
- deeplab_small_study: DeepLabv3.pytorch's ResNet + ASPP (written out below with the base as a
  parameter; the package is not in Debian), output stride 16, BN momenta 0.05 / 0.0003, logits
  upsampled with align_corners=True; its names mapped to ours (see models/deeplabv3.h).
- deeplab_r101_os8: torchvision's own deeplabv3_resnet101(weights=None, weights_backbone=None,
  aux_loss=True), train mode, eval outputs only; weights and gradients stored as f32 to keep the
  file to ~0.5 GB (the weights are f32 values, so exact; the f64 gradients rounded to f32).
- resnet50_export: scripts/export_torchvision_resnet.py --random-init writes a torchvision
  resnet50's weights (f32); torchvision's resnet50 with those weights in f64 then classifies a
  small batch (1000 classes): train-mode logits, loss, gradients (stored as f32) and running
  statistics, then eval-mode logits.
"""
import argparse
import os
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import st_io

try:
    import torchvision
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.resnet import Bottleneck, ResNet
    from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabV3
    from torchvision.models.segmentation.fcn import FCNHead
except ImportError:
    print("reference data: python3-torchvision is not installed; the ResNet/DeepLabv3 tests will "
          "be skipped")
    sys.exit(0)

NUM_CLASSES = 5
AUX_WEIGHT = 0.5  # loss = CE(out) + AUX_WEIGHT * CE(aux), as torchvision's reference training
SMALL_BASE = 8
SMALL_BLOCKS = [1, 1, 2, 3]
SMALL_ASPP = 16


class NarrowResNet(ResNet):
    """torchvision's ResNet.__init__ with the base width as a parameter (torchvision's _make_layer,
    Bottleneck, forward and init are used unchanged)."""

    def __init__(self, base, layers, replace_stride_with_dilation):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = base
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        r = replace_stride_with_dilation
        self.layer1 = self._make_layer(Bottleneck, base, layers[0])
        self.layer2 = self._make_layer(Bottleneck, base * 2, layers[1], stride=2, dilate=r[0])
        self.layer3 = self._make_layer(Bottleneck, base * 4, layers[2], stride=2, dilate=r[1])
        self.layer4 = self._make_layer(Bottleneck, base * 8, layers[3], stride=2, dilate=r[2])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def small_torchvision_deeplab(output_stride, multi_grid=None):
    rates = [12, 24, 36] if output_stride == 8 else [6, 12, 18]
    resnet = NarrowResNet(SMALL_BASE, SMALL_BLOCKS, [False, output_stride == 8, True])
    if multi_grid:
        rate = resnet.dilation  # layer4's
        for block, m in zip(resnet.layer4, multi_grid):
            block.conv2.dilation = (rate * m, rate * m)
            block.conv2.padding = (rate * m, rate * m)
    backbone = IntermediateLayerGetter(resnet, return_layers={"layer4": "out", "layer3": "aux"})
    c = SMALL_ASPP
    # DeepLabHead's layout (an nn.Sequential, so the names are the same) with c channels.
    classifier = nn.Sequential(ASPP(SMALL_BASE * 32, rates, c),
                               nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                               nn.ReLU(), nn.Conv2d(c, NUM_CLASSES, 1))
    aux = FCNHead(SMALL_BASE * 16, NUM_CLASSES)
    return DeepLabV3(backbone, classifier, aux)


# ---- DeepLabv3.pytorch (chenxi116/DeepLabv3.pytorch, deeplab.py), as the study ran it, with the
# ---- base width as a parameter; BN everywhere (no weight standardisation / group norm).

class StudyBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1, norm=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, dilation=dilation,
                               padding=dilation, bias=False)
        self.bn2 = norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = norm(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + residual)


class StudyASPP(nn.Module):
    def __init__(self, C, depth, num_classes, norm, momentum=0.0003, mult=1):
        super().__init__()
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.relu = nn.ReLU(inplace=True)
        self.aspp1 = nn.Conv2d(C, depth, kernel_size=1, stride=1, bias=False)
        self.aspp2 = nn.Conv2d(C, depth, 3, dilation=int(6 * mult), padding=int(6 * mult), bias=False)
        self.aspp3 = nn.Conv2d(C, depth, 3, dilation=int(12 * mult), padding=int(12 * mult), bias=False)
        self.aspp4 = nn.Conv2d(C, depth, 3, dilation=int(18 * mult), padding=int(18 * mult), bias=False)
        self.aspp5 = nn.Conv2d(C, depth, kernel_size=1, stride=1, bias=False)
        self.aspp1_bn = norm(depth, momentum)
        self.aspp2_bn = norm(depth, momentum)
        self.aspp3_bn = norm(depth, momentum)
        self.aspp4_bn = norm(depth, momentum)
        self.aspp5_bn = norm(depth, momentum)
        self.conv2 = nn.Conv2d(depth * 5, depth, kernel_size=1, stride=1, bias=False)
        self.bn2 = norm(depth, momentum)
        self.conv3 = nn.Conv2d(depth, num_classes, kernel_size=1, stride=1)

    def forward(self, x):
        x1 = self.relu(self.aspp1_bn(self.aspp1(x)))
        x2 = self.relu(self.aspp2_bn(self.aspp2(x)))
        x3 = self.relu(self.aspp3_bn(self.aspp3(x)))
        x4 = self.relu(self.aspp4_bn(self.aspp4(x)))
        x5 = self.relu(self.aspp5_bn(self.aspp5(self.global_pooling(x))))
        x5 = nn.Upsample((x.shape[2], x.shape[3]), mode="bilinear", align_corners=True)(x5)
        x = torch.cat((x1, x2, x3, x4, x5), 1)
        x = self.relu(self.bn2(self.conv2(x)))
        return self.conv3(x)


class StudyResNet(nn.Module):
    def __init__(self, base, layers, num_classes, aspp_depth):
        super().__init__()
        self.inplanes = base
        self.norm = lambda planes, momentum=0.05: nn.BatchNorm2d(planes, momentum=momentum)
        self.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self.norm(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(base, layers[0])
        self.layer2 = self._make_layer(base * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(base * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(base * 8, layers[3], stride=1, dilation=2)
        self.aspp = StudyASPP(base * 32, aspp_depth, num_classes, norm=self.norm)

    def _make_layer(self, planes, blocks, stride=1, dilation=1):
        downsample = None
        if stride != 1 or dilation != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, kernel_size=1, stride=stride, bias=False),
                self.norm(planes * 4))
        # The original's max(1, dilation/2) is an int under Python 2.
        layers = [StudyBottleneck(self.inplanes, planes, stride, downsample,
                                  dilation=max(1, dilation // 2), norm=self.norm)]
        self.inplanes = planes * 4
        for _ in range(1, blocks):
            layers.append(StudyBottleneck(self.inplanes, planes, dilation=dilation, norm=self.norm))
        return nn.Sequential(*layers)

    def forward(self, x):
        size = (x.shape[2], x.shape[3])
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.aspp(x)
        return nn.Upsample(size, mode="bilinear", align_corners=True)(x)


def study_name_to_ours(name):
    """DeepLabv3.pytorch's state_dict names -> ours (the mapping in models/deeplabv3.h)."""
    if not name.startswith("aspp."):
        return "backbone." + name
    rest = name[len("aspp."):]
    module, _, tensor = rest.partition(".")
    table = {"aspp1": "convs.0.0", "aspp1_bn": "convs.0.1", "aspp2": "convs.1.0",
             "aspp2_bn": "convs.1.1", "aspp3": "convs.2.0", "aspp3_bn": "convs.2.1",
             "aspp4": "convs.3.0", "aspp4_bn": "convs.3.1", "aspp5": "convs.4.1",
             "aspp5_bn": "convs.4.2", "conv2": "project.0", "bn2": "project.1"}
    if module == "conv3":
        return "classifier.1." + tensor
    return "classifier.0." + table[module] + "." + tensor


class StudyModel(nn.Module):
    """Gives the study's network torchvision's output dict (no aux head)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return {"out": self.net(x)}


def make_labels(n, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n, h, w), generator=g)
    ignored = torch.rand(n, h, w, generator=g) < 0.2  # about a fifth of the pixels ignored
    labels[ignored] = 255
    return labels.to(torch.int32)


def deeplab_loss(result, labels):
    target = labels.long()
    loss = F.cross_entropy(result["out"], target, ignore_index=255)
    if "aux" in result:
        loss = loss + AUX_WEIGHT * F.cross_entropy(result["aux"], target, ignore_index=255)
    return loss


def no_dropout(model):
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0


def record_deeplab(model, x, labels, rename, store, eval_grads=True):
    """Runs train then eval; returns the tensors to save. rename maps the model's names to ours;
    store converts each recorded tensor (identity, or rounding to f32 for the large models)."""
    tensors = {}
    for mode in ("train", "eval"):
        model.train(mode == "train")
        model.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(mode == "train" or eval_grads):
            result = model(x)
            loss = deeplab_loss(result, labels)
            if mode == "train" or eval_grads:
                loss.backward()
        tensors[mode + ".out"] = result["out"].detach()  # f64 always (small)
        if "aux" in result:
            tensors[mode + ".aux"] = result["aux"].detach()
        tensors[mode + ".loss"] = loss.detach().reshape(1)
        if mode == "train" or eval_grads:
            for name, p in model.named_parameters():
                tensors[mode + ".grad." + rename(name)] = store(p.grad)
        if mode == "train":
            for name, b in model.named_buffers():
                tensors["after." + rename(name)] = b.detach().clone()
    return tensors


def save_case(path, model, x, labels, rename, store=lambda t: t, eval_grads=True, metadata=None):
    state = {"state." + rename(k): (store(v) if v.is_floating_point() else v).clone()
             for k, v in model.state_dict().items()}
    tensors = record_deeplab(model, x, labels, rename, store, eval_grads)
    tensors.update(state)
    tensors["input"] = store(x)
    tensors["labels"] = labels
    st_io.save(tensors, path, metadata)


def small_cases(out_dir):
    x_shape = (2, 3, 97, 129)  # 13 x 17 at output stride 8: the rate-12 taps reach inside
    for name, output_stride, multi_grid in (("os8", 8, None), ("os16", 16, None),
                                            ("mg", 16, (1, 2, 4))):
        torch.manual_seed(11)
        model = small_torchvision_deeplab(output_stride, multi_grid).double()
        no_dropout(model)
        x = torch.randn(*x_shape, dtype=torch.float64)
        labels = make_labels(x_shape[0], x_shape[2], x_shape[3], 5)
        save_case(os.path.join(out_dir, f"deeplab_small_{name}.safetensors"), model, x, labels,
                  rename=lambda n: n)

    torch.manual_seed(12)
    net = StudyResNet(SMALL_BASE, SMALL_BLOCKS, NUM_CLASSES, SMALL_ASPP).double()
    model = StudyModel(net)
    x = torch.randn(*x_shape, dtype=torch.float64)
    labels = make_labels(x_shape[0], x_shape[2], x_shape[3], 6)
    save_case(os.path.join(out_dir, "deeplab_small_study.safetensors"), model, x, labels,
              rename=lambda n: study_name_to_ours(n[len("net."):]))


def to_f32(t):
    return t.float() if t.is_floating_point() else t


def r101_case(out_dir):
    torch.manual_seed(13)
    model = torchvision.models.segmentation.deeplabv3_resnet101(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=True)
    model = model.double()  # f32 initial values, exactly representable in f32 again
    no_dropout(model)
    x = torch.randn(2, 3, 33, 33, dtype=torch.float64).float().double()  # f32-exact input
    labels = make_labels(2, 33, 33, 7)
    save_case(os.path.join(out_dir, "deeplab_r101_os8.safetensors"), model, x, labels,
              rename=lambda n: n, store=to_f32, eval_grads=False)


def resnet50_case(out_dir):
    export = os.path.join(out_dir, "resnet50_export.safetensors")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts",
                          "export_torchvision_resnet.py")
    subprocess.run([sys.executable, script, "--arch", "resnet50", "--random-init", "--seed", "14",
                    "--out", export], check=True)
    model = torchvision.models.resnet50(weights=None)
    model.load_state_dict(st_io.load(export))  # strict
    model = model.double()
    torch.manual_seed(15)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64).float().double()
    labels = torch.tensor([3, 997], dtype=torch.int32)
    tensors = {}
    for mode in ("train", "eval"):
        model.train(mode == "train")
        model.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(mode == "train"):
            logits = model(x)
            loss = F.cross_entropy(logits, labels.long())
        tensors[mode + ".out"] = logits.detach()
        tensors[mode + ".loss"] = loss.detach().reshape(1)
        if mode == "train":
            loss.backward()
            for name, p in model.named_parameters():
                tensors[mode + ".grad." + name] = p.grad.float()
            for name, b in model.named_buffers():
                tensors["after." + name] = b.detach().clone()
    tensors["input"] = x.float()
    tensors["labels"] = labels
    st_io.save(tensors, os.path.join(out_dir, "resnet50_reference.safetensors"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    for case in (small_cases, resnet50_case, r101_case):
        start = time.time()
        case(args.out)
        print(f"  {case.__name__}: {time.time() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
