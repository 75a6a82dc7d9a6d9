"""The ResNet/ResNeXt family built from GroupedConv2d, in torchvision's layout.

Module names, parameter shapes and the stride on the 3x3 convolution follow torchvision's
`ResNet`/`Bottleneck`, so torchvision state_dicts load with strict=True. The 3x3 convolution of
each bottleneck is a `GroupedConv2d` with `groups = cardinality`; its width is
`int(planes * d / 64) * C`, which for the paper's (C, d) = (1,64), (2,40), (4,24), (8,14), (32,4)
gives 64, 80, 96, 112, 128 in stage 1, doubling per stage (ResNeXt, Table 2).
"""

from __future__ import annotations

import copy
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from ..nn import GroupedConv2d


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 grouped (stride here) -> 1x1 expand, with a projection shortcut when the
    shape changes. `act1`/`act2` are the ReLUs after the first two convolutions; inference fusion
    moves them into the convolutions' epilogues and makes them identities."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None, groups: int = 1, base_width: int = 64,
                 backend: str = "auto"):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = GroupedConv2d(width, width, 3, stride=stride, padding=1, groups=groups,
                                   bias=False, backend=backend)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.act1 = nn.ReLU(inplace=True)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNeXt(nn.Module):
    """ResNet-style network of bottlenecks. `small_input=True` swaps the 7x7/2 stem and max-pool
    for a 3x3/1 stem, for tiny images (8x8 digits in examples/train.py)."""

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), cardinality: int = 1,
                 bottleneck_width: int = 64, num_classes: int = 1000, in_channels: int = 3,
                 stem_width: int = 64, small_input: bool = False, backend: str = "auto"):
        super().__init__()
        self.cardinality = cardinality
        self.bottleneck_width = bottleneck_width
        self.inplanes = stem_width
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, stem_width, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, stem_width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        planes = [stem_width * 2 ** i for i in range(len(layers))]
        stages = [self._make_layer(p, n, 1 if i == 0 else 2, backend)
                  for i, (p, n) in enumerate(zip(planes, layers))]
        for i, stage in enumerate(stages):
            setattr(self, f"layer{i + 1}", stage)
        self.num_stages = len(stages)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(planes[-1] * Bottleneck.expansion, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int, backend: str) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * Bottleneck.expansion, stride),
                                       nn.BatchNorm2d(planes * Bottleneck.expansion))
        layers: List[nn.Module] = [Bottleneck(self.inplanes, planes, stride, downsample,
                                              self.cardinality, self.bottleneck_width, backend)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes, groups=self.cardinality,
                              base_width=self.bottleneck_width, backend=backend)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnext50(cardinality: int, bottleneck_width: int, **kw) -> ResNeXt:
    """ResNeXt-50 (C x d): the paper's ablation family at ResNet-50's complexity."""
    return ResNeXt((3, 4, 6, 3), cardinality, bottleneck_width, **kw)


def resnet50(**kw) -> ResNeXt:
    return ResNeXt((3, 4, 6, 3), 1, 64, **kw)


def resnext50_32x4d(**kw) -> ResNeXt:
    return ResNeXt((3, 4, 6, 3), 32, 4, **kw)


def resnext101_32x4d(**kw) -> ResNeXt:
    return ResNeXt((3, 4, 23, 3), 32, 4, **kw)


def resnext101_32x8d(**kw) -> ResNeXt:
    return ResNeXt((3, 4, 23, 3), 32, 8, **kw)


def resnext101_64x4d(**kw) -> ResNeXt:
    return ResNeXt((3, 4, 23, 3), 64, 4, **kw)


# ---------------------------------------------------------------------------------------------
# Inference fusion.
def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, relu: bool) -> GroupedConv2d:
    """A GroupedConv2d computing relu?(bn(conv(x))) in eval mode, BatchNorm folded into the
    weight and bias: w' = w * g / sqrt(v + eps), b' = beta + (b - mean) * g / sqrt(v + eps)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    backend = conv.backend if isinstance(conv, GroupedConv2d) else "auto"
    fused = GroupedConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                          conv.padding, conv.dilation, conv.groups, True, conv.padding_mode,
                          device=conv.weight.device, dtype=conv.weight.dtype, backend=backend,
                          relu=relu)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
    return fused.eval().requires_grad_(False).freeze()


def fuse_for_inference(model: ResNeXt) -> ResNeXt:
    """An eval-mode copy of `model` with every BatchNorm folded into the convolution before it
    and the following ReLU run in that convolution's epilogue (the grouped 3x3 kernels' fused
    bias + ReLU; ATen for the 1x1 and 7x7 ones), the folded parameters constants (no
    gradient; each GroupedConv2d frozen, so its weight's autocast copy and packed layout are
    made once). `model` is left untouched."""
    fused = copy.deepcopy(model).eval()
    fused.conv1 = _fold_bn(fused.conv1, fused.bn1, relu=True)
    fused.bn1, fused.relu = nn.Identity(), nn.Identity()
    for block in fused.modules():
        if not isinstance(block, Bottleneck):
            continue
        block.conv1 = _fold_bn(block.conv1, block.bn1, relu=True)
        block.conv2 = _fold_bn(block.conv2, block.bn2, relu=True)
        block.conv3 = _fold_bn(block.conv3, block.bn3, relu=False)
        block.bn1, block.bn2, block.bn3 = nn.Identity(), nn.Identity(), nn.Identity()
        block.act1, block.act2 = nn.Identity(), nn.Identity()
        if block.downsample is not None:
            conv, bn = block.downsample
            block.downsample = _fold_bn(conv, bn, relu=False)
    return fused


# ---------------------------------------------------------------------------------------------
# Complexity, counted from a built model.
def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, image: int = 224, in_channels: int = 3) -> int:
    """Multiply-accumulates of one image through every Conv2d and Linear (torchvision's count)."""
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        total += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inp, out):
        nonlocal total
        total += m.in_features * m.out_features

    shadow = copy.deepcopy(model).to("meta").eval()  # shapes only: no arithmetic, no memory
    for m in shadow.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(conv_hook)
        elif isinstance(m, nn.Linear):
            m.register_forward_hook(linear_hook)
    with torch.no_grad():
        shadow(torch.zeros(1, in_channels, image, image, device="meta"))
    return total
