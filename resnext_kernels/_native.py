"""Loads the native extension resnext_kernels._C and says why when it cannot."""

from __future__ import annotations

import torch  # noqa: F401  (the extension links against libtorch: load it first)

try:
    from . import _C  # type: ignore[attr-defined]

    LOAD_ERROR: str | None = None
except ImportError as exc:  # not built, or built against another torch
    _C = None
    LOAD_ERROR = (f"the native extension resnext_kernels._C could not be imported ({exc}); "
                  "build it with `pip install --no-build-isolation .` against this torch")


def cuda_unavailable_reason() -> str | None:
    """None when the CUDA kernels can run here, else why not."""
    if _C is None:
        return LOAD_ERROR
    if not _C.built_with_cuda():
        return ("resnext_kernels was built without CUDA kernels (no CUDA toolkit at build time, "
                "or RESNEXT_KERNELS_CUDA=0)")
    if not torch.cuda.is_available():
        return "no CUDA device is available"
    return None
