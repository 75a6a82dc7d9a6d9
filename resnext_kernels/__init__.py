"""resnext_kernels: grouped 3x3 convolution kernels (CUDA and Triton) for ResNeXt-style networks.

    import resnext_kernels as rk
    y = rk.grouped_conv2d(x, w, groups=32)                  # functional, like F.conv2d
    conv = rk.GroupedConv2d(128, 128, 3, padding=1, groups=32)   # drop-in for nn.Conv2d
"""

from . import ops
from ._native import cuda_unavailable_reason
from .nn import ConvertSummary, GroupedConv2d, convert, freeze
from .backend_benchmark import (
    backend_cache_dir,
    backend_choices,
    set_backend_benchmark,
    set_backend_cache_dir,
)
from .cuda_backend import (
    clear_cuda_autotune_cache,
    cuda_autotune_enabled,
    force_cuda_variant,
    forced_cuda_variant,
    last_cuda_variant,
    set_cuda_autotune,
)
from .functional import (
    BACKENDS,
    available_backends,
    backend_unavailable_reason,
    grouped_conv2d,
    last_backend,
    last_fallback_reason,
    unsupported_reason,
)

__version__ = "0.1.0"


def cuda_available() -> bool:
    """True when the hand-written CUDA kernels can run here; `cuda_unavailable_reason()` says why not."""
    return cuda_unavailable_reason() is None


def cuda_variants():
    """The CUDA kernel registry (name, direction, rung, summary), in ladder order; empty when the
    extension was built without CUDA."""
    from ._native import _C

    return [] if _C is None else list(_C.variants())


def __getattr__(name):
    """`resnext_kernels.models` on first use, as torchvision exposes `torchvision.models`
    (imported lazily: the model zoo is not needed to run a convolution)."""
    if name == "models":
        import importlib

        return importlib.import_module(".models", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def fuse_for_inference(model):
    """See resnext_kernels.models.fuse_for_inference."""
    from .models import fuse_for_inference as fuse

    return fuse(model)


__all__ = [
    "BACKENDS", "ConvertSummary", "GroupedConv2d", "convert", "freeze", "fuse_for_inference",
    "available_backends", "backend_unavailable_reason", "cuda_available",
    "cuda_unavailable_reason", "cuda_variants", "grouped_conv2d", "last_fallback_reason",
    "models", "ops", "unsupported_reason", "set_backend_benchmark", "backend_choices",
    "set_backend_cache_dir", "backend_cache_dir", "last_backend",
    "set_cuda_autotune", "cuda_autotune_enabled", "clear_cuda_autotune_cache",
    "force_cuda_variant", "forced_cuda_variant", "last_cuda_variant",
]
