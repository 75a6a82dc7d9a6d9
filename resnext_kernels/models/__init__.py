"""ResNet/ResNeXt models built from GroupedConv2d (torchvision-compatible state_dicts)."""

from .resnext import (
    Bottleneck,
    ResNeXt,
    count_macs,
    count_parameters,
    fuse_for_inference,
    resnet50,
    resnext50,
    resnext50_32x4d,
    resnext101_32x4d,
    resnext101_32x8d,
    resnext101_64x4d,
)

PAPER_TABLE = ((1, 64), (2, 40), (4, 24), (8, 14), (32, 4))

__all__ = ["Bottleneck", "PAPER_TABLE", "ResNeXt", "count_macs", "count_parameters",
           "fuse_for_inference", "resnet50", "resnext50", "resnext50_32x4d", "resnext101_32x4d",
           "resnext101_32x8d", "resnext101_64x4d"]
