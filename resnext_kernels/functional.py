"""The public functional API: `grouped_conv2d` and the backend choice.

Backends:
    "cuda"    the hand-written kernels of csrc/ (CUDA tensors; needs the extension built with CUDA)
    "triton"  the Triton kernels (CUDA tensors; CPU tensors only under TRITON_INTERPRET=1)
    "aten"    torch.nn.functional.conv2d: cuDNN on a GPU, PyTorch's CPU convolution on a CPU
    "auto"    on CUDA tensors: the fastest backend for the problem, measured on its first call
              (cuDNN included) and cached on disk (backend_benchmark.py; while torch.compile
              traces or a CUDA graph is captured, the cached choice, else cuDNN). With
              `set_backend_benchmark(False)`: "triton", else "cuda" (AUTO_ORDER), by what is
              available and supports the arguments. On CPU tensors "aten". A fall back to
              "aten" for want of a kernel records its reason: `last_fallback_reason()`.

An explicit backend that is unavailable, or that does not support the arguments, raises with
the reason; it never quietly runs another backend.
"""

from __future__ import annotations

import logging
import os
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _native, ops
from . import backend_benchmark as bench
from .frozen import FrozenWeight
from .triton import common as triton_common

log = logging.getLogger("resnext_kernels")

BACKENDS = ("auto", "cuda", "triton", "aten")
# The order in which backend="auto" tries the kernel families when it does not measure
# (set_backend_benchmark(False)), ATen when neither can run the call. Triton first: on the GPU
# runs so far (benchmarks/NOTES.md, H200 2026-11-28) its three directions ran at 1.3-4.6x
# cuDNN's time on ResNeXt-50 32x4d, while the CUDA backend's verified dgrad and wgrad rungs are
# the direct baselines (12-140x and 110-3000x cuDNN's time on the H100,
# H100-80GB-HBM3_2026-11-28_0504/bench.json). The CUDA tensor-core rungs take over once a GPU
# check verifies and measures them.
AUTO_ORDER = ("triton", "cuda")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_IntPair = Union[int, Tuple[int, int], List[int]]
_last_fallback: Optional[str] = None
_last_backend: Optional[str] = None
# The device type whose tensors backend="auto" sends to the kernels (tests point it at "cpu",
# where Triton runs in its interpreter, to exercise the measured choice without a GPU).
_AUTO_DEVICE = "cuda"


def _triton_unavailable_reason() -> Optional[str]:
    try:
        import triton  # noqa: F401
    except ImportError as exc:  # pragma: no cover - triton ships with CUDA torch
        return f"triton is not installed ({exc})"
    return None


# Availability is fixed for the life of the process; computing it once keeps pybind calls out of
# code that torch.compile traces.
_UNAVAILABLE = {
    "aten": None,
    "cuda": _native.cuda_unavailable_reason(),
    "triton": _triton_unavailable_reason(),
}
_TRITON_ON_CPU = os.environ.get("TRITON_INTERPRET", "0") == "1"


def available_backends() -> List[str]:
    """The backends that can run here (on some device), best first."""
    return [b for b in ("cuda", "triton", "aten") if _UNAVAILABLE[b] is None]


def backend_unavailable_reason(backend: str) -> Optional[str]:
    """None when `backend` can run here, else why not."""
    if backend not in _UNAVAILABLE:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    return _UNAVAILABLE[backend]


def last_fallback_reason() -> Optional[str]:
    """Why the last `backend="auto"` call that fell back to "aten" did so (None if none did)."""
    return _last_fallback


def _pair(v: _IntPair, name: str) -> List[int]:
    if isinstance(v, int):
        return [v, v]
    v = list(v)
    if len(v) == 1:
        return [v[0], v[0]]
    if len(v) != 2:
        raise RuntimeError(f"expected {name} to be a single integer value or a list of 2 values "
                           f"to match the convolution dimensions, but got {name}={v}")
    return v


def _check_tensors(input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> None:
    """Dtype and device agreement, in PyTorch's words."""
    for other, name in ((weight, "weight"), (bias, "bias")):
        if other is None:
            continue
        if other.dtype != input.dtype:
            raise RuntimeError(f"Input type ({input.dtype}) and {name} type ({other.dtype}) "
                               "should be the same")
        if other.device != input.device:
            raise RuntimeError("Expected all tensors to be on the same device, but found at least "
                               f"two devices, {input.device} and {other.device}!")


def _check_sizes(input, weight, bias, stride, padding, dilation, groups) -> None:
    """Shape checks with PyTorch's wording, from the same C++ code the ops use."""
    args = (list(input.shape), list(weight.shape), None if bias is None else list(bias.shape),
            stride, padding, dilation, groups)
    if _native._C is not None:
        _native._C.check_conv2d(*args)
    else:  # no extension: let ATen's own checks speak, on meta tensors
        F.conv2d(input.to("meta"), weight.to("meta"), None if bias is None else bias.to("meta"),
                 stride, padding, dilation, groups)


def unsupported_reason(backend: str, input: Tensor, weight: Tensor, padding) -> Optional[str]:
    """None when `backend`'s kernels support these arguments, else why not."""
    if backend == "aten":
        return None
    if isinstance(padding, str):
        return f"string padding ({padding!r}) is not supported by the {backend} kernels"
    if tuple(weight.shape[2:]) != (3, 3):
        return f"kernel size {tuple(weight.shape[2:])} is not 3x3"
    if input.dtype not in KERNEL_DTYPES:
        return f"dtype {input.dtype} is not one of float32, float16, bfloat16"
    if backend == "cuda" and input.device.type != "cuda":
        return f"the cuda kernels need CUDA tensors, but got a tensor on {input.device}"
    if backend == "triton":
        if input.device.type != "cuda" and not (input.device.type == "cpu" and _TRITON_ON_CPU):
            return (f"the triton kernels need CUDA tensors (CPU tensors only with "
                    f"TRITON_INTERPRET=1), but got a tensor on {input.device}")
    return None


def _choose_backend(backend: str, input: Tensor, weight: Tensor, padding) -> str:
    global _last_fallback
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend != "auto":
        why = _UNAVAILABLE[backend] or unsupported_reason(backend, input, weight, padding)
        if why is not None:
            raise RuntimeError(f"resnext_kernels: backend {backend!r} cannot run this call: {why}")
        return backend
    if input.device.type != _AUTO_DEVICE:
        return "aten"  # the kernels are GPU kernels; the CPU path is ATen's
    reasons = []
    for candidate in AUTO_ORDER:
        why = _UNAVAILABLE[candidate] or unsupported_reason(candidate, input, weight, padding)
        if why is None:
            return candidate
        reasons.append(f"{candidate}: {why}")
    _last_fallback = "; ".join(reasons)
    log.debug("resnext_kernels: falling back to aten (%s)", _last_fallback)
    return "aten"


def _autocast(input: Tensor, weight: Tensor, bias: Optional[Tensor],
              frozen: Optional[FrozenWeight] = None):
    """Casts like nn.Conv2d under autocast: conv2d is on autocast's lower-precision list. A
    frozen module's weight is cast once while it is unchanged (frozen.py)."""
    device_type = input.device.type
    # Not torch.amp.is_autocast_available: torch.compile cannot trace it (torch 2.11, found by
    # the GPU check); the kernels run on CUDA and the CPU path is ATen's, so these two suffice.
    if (device_type not in ("cuda", "cpu") or not input.is_floating_point()
            or not torch.is_autocast_enabled(device_type)):
        return input, weight, bias
    dtype = torch.get_autocast_dtype(device_type)
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return cast(input), cast(weight) if frozen is None else frozen.cast(weight, dtype), cast(bias)


def grouped_conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                   stride: _IntPair = 1, padding: Union[_IntPair, str] = 1, dilation: _IntPair = 1,
                   groups: int = 1, *, backend: str = "auto", relu: bool = False) -> Tensor:
    """Grouped 2-D convolution with the meaning of `torch.nn.functional.conv2d`'s arguments.

    The defaults fit the 3x3 convolution of a ResNeXt bottleneck (padding 1). `relu=True` applies
    a ReLU in the kernels' epilogue. `backend` is one of "auto", "cuda", "triton", "aten".
    """
    return _convolve(input, weight, bias, stride, padding, dilation, groups, backend, relu)


def _convolve(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride, padding, dilation,
              groups: int, backend: str, relu: bool,
              frozen: Optional[FrozenWeight] = None) -> Tensor:
    """grouped_conv2d, for a frozen GroupedConv2d too: `frozen` keeps what is made from `weight`
    (its autocast copy, its packed layout) while `weight` is unchanged (frozen.py)."""
    global _last_backend
    if frozen is not None and not frozen.usable(weight):
        frozen = None
    source = weight
    input, weight, bias = _autocast(input, weight, bias, frozen)
    _check_tensors(input, weight, bias)
    stride_, dilation_ = _pair(stride, "stride"), _pair(dilation, "dilation")
    padding_ = padding if isinstance(padding, str) else _pair(padding, "padding")
    if not torch.compiler.is_compiling() and not isinstance(padding_, str):
        _check_sizes(input, weight, bias, stride_, padding_, dilation_, groups)

    conv = (stride_, padding_, dilation_, groups, relu)
    kept = None if frozen is None else (frozen, source)
    chosen = _choose_backend(backend, input, weight, padding_)
    if backend == "auto" and chosen != "aten" and bench.backend_benchmark_enabled():
        chosen = _auto_choice(input, weight, bias, conv, kept)
    if not torch.compiler.is_compiling():
        _last_backend = chosen
    return _run(chosen, input, weight, bias, *conv, kept=kept)


def last_backend() -> Optional[str]:
    """The backend the last eager `grouped_conv2d` call ran."""
    return _last_backend


def _run(chosen: str, input: Tensor, weight: Tensor, bias: Optional[Tensor], stride, padding,
         dilation, groups: int, relu: bool,
         kept: Optional[Tuple[FrozenWeight, Tensor]] = None) -> Tensor:
    """Runs the chosen backend. `kept`: a frozen module's FrozenWeight and its weight as the
    module holds it, of which `weight` is the call's view (itself, or its kept autocast copy:
    _autocast)."""
    if chosen == "aten":
        out = F.conv2d(input, weight, bias, stride, padding, dilation, groups)
        return F.relu(out) if relu else out
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    family = ops.NATIVE if chosen == "cuda" else ops.TRITON
    needs_dx = x.requires_grad and torch.is_grad_enabled()
    packed = ()
    pack = lambda w: family.packed_weight(x, w, stride, padding, dilation, groups,  # noqa: E731
                                          needs_dx)
    if family.pack is not None and kept is not None:
        # A frozen weight: the layout(s) this pass reads, packed once while it is unchanged.
        layout = (family.name, needs_dx, tuple(stride), tuple(padding), tuple(dilation), groups,
                  triton_common.memory_format_of(x))
        packed = (kept[0].packed(layout, pack, weight, kept[1]),)
    elif family.pack is not None and needs_dx:
        # dx will be wanted: pack the weight for fprop and dgrad in one launch now, so that
        # the backward pass packs nothing (ops.py).
        packed = (pack(weight.detach()),)
    out = family.fprop(x, weight, bias, stride, padding, dilation, groups, relu, *packed)
    return out.squeeze(0) if unbatched else out


def _auto_choice(input: Tensor, weight: Tensor, bias: Optional[Tensor], conv,
                 kept: Optional[Tuple[FrozenWeight, Tensor]] = None) -> str:
    """backend="auto" with a kernel backend eligible: the fastest backend for this problem,
    measured on detached copies of the operands the first time the problem is met (cached in
    memory and on disk; a frozen module's calls are a problem of their own, timed as they run,
    on what the module keeps); while torch.compile traces or a CUDA graph is captured, the
    cached choice, else cuDNN."""
    fields = bench.key_fields(input, weight, bias, *conv, frozen=kept is not None)
    if torch.compiler.is_compiling():
        return bench.traced_choice(*fields)
    key = bench.key_of(fields)
    if bench.tracing_or_capturing():
        return bench.cached(key, input.device) or "aten"

    def candidates():
        return ["aten"] + [b for b in AUTO_ORDER if _UNAVAILABLE[b] is None
                           and unsupported_reason(b, input, weight, conv[1]) is None]

    backward = fields[-1]  # whether gradients are wanted: time the backward pass too
    return bench.choose(key, candidates,
                        lambda b: _time_backend(b, input, weight, bias, conv, backward, kept),
                        input.device)


def _time_backend(backend: str, input: Tensor, weight: Tensor, bias: Optional[Tensor], conv,
                  backward: bool,
                  kept: Optional[Tuple[FrozenWeight, Tensor]] = None) -> Optional[float]:
    """Milliseconds of `backend` on detached copies of the operands (forward, plus backward when
    gradients are wanted; a frozen module's weight itself, which needs no gradient, so that
    what it keeps serves the timed calls), or None when it failed to run."""
    def call():
        leaf = lambda t: None if t is None else t.detach().requires_grad_(t.requires_grad)  # noqa: E731
        w = weight if kept is not None else leaf(weight)
        out = _run(backend, leaf(input), w, leaf(bias), *conv, kept=kept)
        if backward:
            out.backward(torch.ones_like(out))
    return bench.cuda_time_ms(call)
