"""Triton dgrad: the gradient of the input, through the gather kernel of fprop.py.

    dx[n, c, h, w] = sum_{k in group(c), r, s} dy[n, k, p, q] * w[k, c mod Cg, r, s]

Per-group GEMM: M = N*H*W, N = Cg, K = Kg*3*3 (for stride 2 only the taps with an exact
division contribute, masked per pixel). dx takes dy's memory format. `packed` is the buffer of
fprop.pack_weight a training step's forward pass made (both directions), so that the backward
pass launches no packing kernel of its own.
"""

from __future__ import annotations

from . import common
from .fprop import launch_gather_conv


def dgrad(grad_output, weight, input_size, stride, padding, dilation, groups, wrap=lambda k: k,
          config=None, tiles_per_prog=None, channels_fastest=None, packed=None,
          pixel_tiles=None):
    dx = common.empty(input_size, grad_output.dtype, grad_output.device,
                      common.memory_format_of(grad_output))
    if dx.numel() == 0:
        return dx
    if grad_output.numel() == 0:  # every tap reads padding: the gradient is zero
        return dx.zero_()
    return launch_gather_conv(grad_output, weight, None, dx, transposed=True, stride=stride,
                              padding=padding, dilation=dilation, groups=groups, wrap=wrap,
                              config=config, tiles_per_prog=tiles_per_prog,
                              channels_fastest=channels_fastest, packed=packed,
                              pixel_tiles=pixel_tiles)
