"""Loads the native extension resnext_kernels._C and says why when it cannot.

The extension is compiled against one torch's headers and ABI; loaded under another it may fail
to import, or import and misbehave. setup.py records the torch it was built against
(_build_info.py), and an extension built against another torch is refused before it is loaded,
with the fix. Without the extension the package still works: ATen on the CPU, Triton on a GPU.
"""

from __future__ import annotations

import torch  # noqa: F401  (the extension links against libtorch: load it first)

REBUILD = ("rebuild it against this torch: `pip install --force-reinstall --no-deps .` from the "
           "source tree (or `pip install --no-build-isolation .`)")


def torch_mismatch(built: str | None, running: str) -> str | None:
    """Why an extension built against torch `built` must not load under `running`, or None."""
    if built is None or built == running:
        return None
    return (f"resnext_kernels' native extension was built against torch {built}, but torch "
            f"{running} is running; {REBUILD}")


def _load():
    try:
        from . import _build_info  # type: ignore[attr-defined]

        built = _build_info.TORCH_VERSION
    except ImportError:  # built before build info existed, or not built at all
        built = None
    why = torch_mismatch(built, torch.__version__)
    if why is not None:
        return None, why
    try:
        from . import _C  # type: ignore[attr-defined]
    except ImportError as exc:  # not built, or built against another torch
        return None, (f"the native extension resnext_kernels._C could not be imported ({exc}); "
                      f"build it: `pip install .` ({REBUILD})")
    return _C, None


_C, LOAD_ERROR = _load()


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
