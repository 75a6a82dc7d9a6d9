"""Float64 reference and the tolerance rule, shared by the tests and the benchmarks.

The reference runs ATen's convolution in float64 on the CPU (TF32 cannot touch it there).
The tolerance rule (DESIGN.md): a kernel's error against float64 may be at most `factor` times
the error of ATen's own result in the same dtype (2 for fprop and dgrad, 3 for wgrad, whose
reduction is long), plus a floor of a few units in the last place of the output's scale, so
that a kernel more accurate than ATen is never failed by noise.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

# Relative floor per dtype, in units of the reference's largest magnitude.
FLOOR = {torch.float64: 1e-12, torch.float32: 4e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
FACTOR = {"fprop": 2.0, "dgrad": 2.0, "wgrad": 3.0, "bias": 3.0}


def conv_f64(x: Tensor, w: Tensor, b: Optional[Tensor], dy: Optional[Tensor], stride, padding,
             dilation, groups) -> Dict[str, Tensor]:
    """fprop, and with `dy` also dgrad, wgrad and the bias gradient, in float64 on the CPU."""
    cpu64 = lambda t: None if t is None else t.detach().to("cpu", torch.float64)  # noqa: E731
    return conv_in_dtype(cpu64(x), cpu64(w), cpu64(b), cpu64(dy), stride, padding, dilation, groups)


def conv_in_dtype(x: Tensor, w: Tensor, b: Optional[Tensor], dy: Optional[Tensor], stride,
                  padding, dilation, groups) -> Dict[str, Tensor]:
    """ATen's results (F.conv2d and its autograd) in the tensors' own dtype and device."""
    x = x.detach().requires_grad_(dy is not None)
    w = w.detach().requires_grad_(dy is not None)
    b = None if b is None else b.detach().requires_grad_(dy is not None)
    y = F.conv2d(x, w, b, stride, padding, dilation, groups)
    out = {"fprop": y.detach()}
    if dy is not None:
        grads = torch.autograd.grad(y, [x, w] + ([b] if b is not None else []), dy)
        out["dgrad"], out["wgrad"] = grads[0], grads[1]
        if b is not None:
            out["bias"] = grads[2]
    return out


def max_error(out: Tensor, ref64: Tensor) -> float:
    """Largest absolute difference; NaN anywhere in `out` counts as infinite."""
    diff = (out.detach().to("cpu", torch.float64) - ref64)
    if diff.numel() == 0:
        return 0.0
    if torch.isnan(diff).any():
        return float("inf")
    return diff.abs().max().item()


def allowed_error(direction: str, dtype: torch.dtype, aten_out: Tensor, ref64: Tensor) -> float:
    scale = ref64.abs().max().item() if ref64.numel() else 0.0
    return FACTOR[direction] * max_error(aten_out, ref64) + FLOOR[dtype] * max(scale, 1.0)


def check(direction: str, out: Tensor, aten_out: Tensor, ref64: Tensor) -> None:
    """Raises AssertionError when `out` breaks the tolerance rule (or has the wrong shape)."""
    assert out.shape == ref64.shape, f"{direction}: shape {tuple(out.shape)} != {tuple(ref64.shape)}"
    err = max_error(out, ref64)
    tol = allowed_error(direction, out.dtype, aten_out, ref64)
    assert err <= tol, (f"{direction} ({out.dtype}): max error {err:.3g} > allowed {tol:.3g} "
                        f"(ATen's own error {max_error(aten_out, ref64):.3g})")
