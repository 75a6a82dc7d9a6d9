"""Controls of the CUDA backend's kernel selection (csrc/selection.cpp, csrc/registry.cpp).

    import resnext_kernels as rk
    rk.cuda_variants()                         # the ladder: name, direction, rung, verified
    rk.set_cuda_autotune(True)                 # time the verified variants per new shape
    rk.force_cuda_variant("fprop", "fprop_mma")    # pin one (unverified ones too), "" to unpin
    rk.last_cuda_variant("fprop")              # what the last fprop call ran

By default each call takes the highest GPU-verified rung whose can_implement accepts the problem.
With autotuning on, the first call of a shape (sizes, strides, dtype, layout, epilogue) times
every verified variant that can run it and keeps the fastest, like
torch.backends.cudnn.benchmark; never during CUDA-graph capture. A forced variant wins over
both; a problem it cannot run raises with its reason instead of running another kernel.
"""

from __future__ import annotations

from . import _native

DIRECTIONS = ("fprop", "dgrad", "wgrad")


def _c():
    if _native._C is None or not _native._C.built_with_cuda():
        raise RuntimeError("resnext_kernels: no CUDA kernels in this build: "
                           f"{_native.cuda_unavailable_reason()}")
    return _native._C


def set_cuda_autotune(enabled: bool) -> None:
    """Runtime autotuning among the GPU-verified variants, cached per shape (off by default)."""
    _c().set_autotune(bool(enabled))


def cuda_autotune_enabled() -> bool:
    return bool(_c().autotune_enabled())


def clear_cuda_autotune_cache() -> None:
    """Forgets the autotuned choices (the next call of each shape times again)."""
    _c().clear_autotune_cache()


def force_cuda_variant(direction: str, name: str) -> None:
    """Runs `direction` ("fprop", "dgrad", "wgrad") with variant `name` until unpinned with "".
    Raises ValueError for an unknown direction or a variant of another direction."""
    _c().set_forced_variant(direction, name)


def forced_cuda_variant(direction: str) -> str:
    """The variant pinned for `direction`, or "" when the selector chooses."""
    return _c().forced_variant(direction)


def last_cuda_variant(direction: str) -> str:
    """The variant the last CUDA call of `direction` ran ("" before any)."""
    return _c().last_variant(direction)
