"""Measured backend choice for `backend="auto"` (opt-in, like `torch.backends.cudnn.benchmark`).

    import resnext_kernels as rk
    rk.set_backend_benchmark(True)
    y = rk.grouped_conv2d(x, w, groups=32)    # first call of this problem: every backend timed
    rk.backend_benchmark_choices()            # {problem: (fastest, {backend: ms})}

With it on, the first `auto` call on a CUDA problem (sizes, strides, dtype, stride/padding/
dilation/groups, bias, ReLU, and whether gradients are needed) times every backend that can run
it, ATen (cuDNN) included: the forward alone under no_grad, forward plus backward otherwise. The
fastest is kept for that problem. So `auto` is never slower than the best available backend on
the shapes it has measured, at the price of a few milliseconds (plus Triton's first compile)
per new problem. Off by default; no measurement runs while torch.compile traces or a CUDA graph
is captured (the order of functional.AUTO_ORDER decides then).
"""

from __future__ import annotations

import logging
import statistics
from typing import Callable, Dict, Hashable, List, Optional, Tuple

import torch

log = logging.getLogger("resnext_kernels")

_enabled = False
_choices: Dict[Hashable, Tuple[str, Dict[str, float]]] = {}

# Timed repetitions per backend after the warm-up (which also absorbs Triton's autotuning).
WARMUP = 2
REPS = 5


def set_backend_benchmark(enabled: bool) -> None:
    """Turns the measured choice of `backend="auto"` on or off (the cache stays)."""
    global _enabled
    _enabled = bool(enabled)


def backend_benchmark_enabled() -> bool:
    return _enabled


def backend_benchmark_choices() -> Dict[Hashable, Tuple[str, Dict[str, float]]]:
    """Per problem measured so far: the backend chosen and every backend's median ms."""
    return dict(_choices)


def clear_backend_benchmark() -> None:
    _choices.clear()


def problem_key(input: torch.Tensor, weight: torch.Tensor, bias, stride, padding, dilation,
                groups: int, relu: bool) -> Hashable:
    """What makes two calls the same problem for the measured choice."""
    wants_grad = torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad)
    return (tuple(input.shape), input.stride(), tuple(weight.shape), weight.stride(), input.dtype,
            input.device, bias is not None, tuple(stride), tuple(padding), tuple(dilation),
            groups, relu, wants_grad)


def fastest(times: Dict[str, float]) -> str:
    """The backend with the lowest time; ties go to the one listed first."""
    return min(times, key=lambda b: (times[b], list(times).index(b)))


def choose(key: Hashable, candidates: Callable[[], List[str]],
           measure: Callable[[str], Optional[float]]) -> str:
    """The cached choice for `key`, else the fastest of `candidates()` (asked only on a miss) by
    `measure` (ms, None when the backend failed to run: left out), cached. ATen is always a
    candidate, so there is always a choice."""
    if key in _choices:
        return _choices[key][0]
    times = {}
    for backend in candidates():
        ms = measure(backend)
        if ms is not None:
            times[backend] = ms
    best = fastest(times)
    _choices[key] = (best, times)
    return best


def cuda_time_ms(run: Callable[[], None]) -> Optional[float]:
    """Median CUDA-event time of `run` in ms over REPS calls after WARMUP, or None if it raised."""
    try:
        for _ in range(WARMUP):
            run()
        times = []
        for _ in range(REPS):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)
    except Exception:  # a backend that fails here is simply not chosen
        log.debug("resnext_kernels: backend benchmark run failed", exc_info=True)
        return None


def may_measure(input: torch.Tensor) -> bool:
    """Measuring needs a CUDA tensor, eager execution and no graph capture in progress."""
    return (_enabled and input.device.type == "cuda" and not torch.compiler.is_compiling()
            and not torch.cuda.is_current_stream_capturing())
