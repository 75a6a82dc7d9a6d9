"""The measured choice of `backend="auto"` on CUDA tensors, and its on-disk cache.

    import resnext_kernels as rk
    y = rk.grouped_conv2d(x, w, groups=32)    # first call of this problem: every backend timed
    rk.backend_choices()                      # {problem: (fastest, {backend: ms})}
    rk.set_backend_benchmark(False)           # a fixed order instead (functional.AUTO_ORDER)
    rk.set_backend_cache_dir("/tmp/rk")       # where choices persist (None: memory only)

The first `auto` call on a CUDA problem (sizes, strides, dtype, stride/padding/dilation/groups,
bias, ReLU, and whether gradients are wanted) times every backend that can run it, ATen (cuDNN)
included: the forward alone under no_grad, forward plus backward otherwise. The fastest is kept,
so `auto` is never slower than cuDNN on the problems it has measured, at the price of a few
milliseconds (plus Triton's first compile) per new problem, like torch.backends.cudnn.benchmark.

Choices persist in a JSON file per GPU and library versions (GPU name and capability,
resnext_kernels, torch, triton, cuDNN), in RESNEXT_KERNELS_CACHE_DIR, else
$XDG_CACHE_HOME/resnext_kernels, else ~/.cache/resnext_kernels, so later processes and
torch.compile tracing reuse them. Nothing is measured while torch.compile traces or a CUDA graph
is captured: a cached choice is used, else cuDNN.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import tempfile
from typing import Callable, Dict, Hashable, List, Optional, Tuple

import torch

log = logging.getLogger("resnext_kernels")

_enabled = True
# (store, problem key) -> (backend, {backend: ms}); store is the cache file (or "memory").
_choices: Dict[Tuple[str, Hashable], Tuple[str, Dict[str, float]]] = {}
_loaded: set = set()
_stores: Dict[tuple, str] = {}     # (device type, index) -> its store: computed once per device
_UNSET = object()
_cache_dir = _UNSET

# Timed repetitions per backend after the warm-up (which also absorbs Triton's autotuning).
WARMUP = 2
REPS = 5
CACHE_SCHEMA = "resnext_kernels.backend_choices/1"


def set_backend_benchmark(enabled: bool) -> None:
    """On (the default): `auto` measures each new CUDA problem and keeps the fastest backend.
    Off: `auto` takes the fixed order of functional.AUTO_ORDER. The choices made stay."""
    global _enabled
    _enabled = bool(enabled)


def backend_benchmark_enabled() -> bool:
    return _enabled


def set_backend_cache_dir(path: Optional[str]) -> None:
    """Folder of the on-disk cache of choices; None keeps choices in memory only."""
    global _cache_dir
    _cache_dir = path
    _loaded.clear()
    _stores.clear()


def backend_cache_dir() -> Optional[str]:
    if _cache_dir is not _UNSET:
        return _cache_dir
    if os.environ.get("RESNEXT_KERNELS_CACHE_DIR"):
        return os.environ["RESNEXT_KERNELS_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "resnext_kernels")


def environment(device: torch.device) -> Dict[str, str]:
    """What a measured choice depends on besides the problem: the GPU and the library versions."""
    from . import __version__

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:  # pragma: no cover - triton ships with CUDA torch
        triton_version = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = f"{props.name} sm_{props.major}{props.minor}"
    else:
        gpu = device.type
    return {"gpu": gpu, "resnext_kernels": __version__, "torch": torch.__version__,
            "triton": str(triton_version), "cudnn": str(torch.backends.cudnn.version())}


def cache_file(device: torch.device) -> Optional[str]:
    """The cache file of `device`'s environment, or None when the cache is memory only."""
    folder = backend_cache_dir()
    if not folder:
        return None
    env = environment(device)
    digest = hashlib.sha1(json.dumps(env, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(folder, f"backend-choices-{digest}.json")


def _store(device: Optional[torch.device]) -> str:
    """The store of `device`'s choices, memoised: every auto call looks it up, and hashing the
    environment each time cost ~80 us a call (a converted model must not be slower)."""
    if device is None:
        return "memory"
    key = (device.type, device.index)
    if key not in _stores:
        _stores[key] = cache_file(device) or "memory"
    return _stores[key]


def _load(store: str) -> None:
    """Reads `store`'s choices into memory once (a missing or unreadable file holds none)."""
    if store == "memory" or store in _loaded:
        return
    _loaded.add(store)
    try:
        with open(store) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return
    if data.get("schema") != CACHE_SCHEMA:
        return
    for key, entry in data.get("choices", {}).items():
        _choices.setdefault((store, key), (entry["backend"], dict(entry["times_ms"])))


def _save(store: str, device: Optional[torch.device]) -> None:
    """Writes `store`'s choices (atomically: a temporary file renamed over the old one)."""
    if store == "memory":
        return
    choices = {key: {"backend": b, "times_ms": t} for (s, key), (b, t) in _choices.items() if s == store}
    data = dict(schema=CACHE_SCHEMA, environment=environment(device) if device is not None else {},
                choices=choices)
    try:
        os.makedirs(os.path.dirname(store), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(store), suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, store)
    except OSError:  # a read-only cache folder costs the persistence, never the call
        log.debug("resnext_kernels: could not write the backend cache %s", store, exc_info=True)


def backend_choices() -> Dict[Hashable, Tuple[str, Dict[str, float]]]:
    """Per problem chosen so far (or read from the cache): the backend and every backend's ms."""
    return {key: choice for (_, key), choice in _choices.items()}


def clear_backend_benchmark() -> None:
    """Forgets the choices in memory (the cache files stay; they are read again when needed)."""
    _choices.clear()
    _loaded.clear()
    _stores.clear()


def key_fields(input: torch.Tensor, weight: torch.Tensor, bias, stride, padding, dilation,
               groups: int, relu: bool, frozen: bool = False) -> tuple:
    """What makes two calls the same problem for the measured choice: sizes, strides, dtype,
    device, bias, geometry, ReLU, whether a frozen module keeps the weight's packed layout
    (frozen.py: no packing launch), and, last, whether gradients are wanted (the backward is
    timed too)."""
    wants_grad = torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad)
    return (tuple(input.shape), tuple(input.stride()), tuple(weight.shape), tuple(weight.stride()),
            input.dtype, input.device, bias is not None, tuple(stride), tuple(padding),
            tuple(dilation), groups, relu, frozen, wants_grad)


def key_of(fields: tuple) -> str:
    """The cache key of `key_fields` (a string; the device's type only: the cache file is the
    GPU's own)."""
    f = list(fields)
    f[4] = str(f[4]).replace("torch.", "")
    f[5] = f[5].type
    return repr(tuple(f))


def problem_key(input: torch.Tensor, weight: torch.Tensor, bias, stride, padding, dilation,
                groups: int, relu: bool, frozen: bool = False) -> str:
    return key_of(key_fields(input, weight, bias, stride, padding, dilation, groups, relu, frozen))


def fastest(times: Dict[str, float]) -> str:
    """The backend with the lowest time; ties go to the one listed first."""
    return min(times, key=lambda b: (times[b], list(times).index(b)))


def cached(key: Hashable, device: Optional[torch.device] = None) -> Optional[str]:
    """The choice made for `key` (in memory, or in `device`'s cache file), else None."""
    store = _store(device)
    _load(store)
    hit = _choices.get((store, key))
    return hit[0] if hit else None


def choose(key: Hashable, candidates: Callable[[], List[str]],
           measure: Callable[[str], Optional[float]], device: Optional[torch.device] = None) -> str:
    """The cached choice for `key`, else the fastest of `candidates()` (asked only on a miss) by
    `measure` (ms, None when the backend failed to run: left out), kept in memory and in
    `device`'s cache file. ATen is always a candidate, so there is always a choice."""
    hit = cached(key, device)
    if hit is not None:
        return hit
    times = {}
    for backend in candidates():
        ms = measure(backend)
        if ms is not None:
            times[backend] = ms
    best = fastest(times)
    store = _store(device)
    _choices[(store, key)] = (best, times)
    _save(store, device)
    log.info("resnext_kernels: auto chose %s for %s (%s)", best, key,
             ", ".join(f"{b} {ms:.3f} ms" for b, ms in times.items()))
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


@torch.compiler.assume_constant_result
def traced_choice(*fields) -> str:
    """The choice while torch.compile traces (evaluated once, at trace time): the cached one,
    else cuDNN ("aten"); never a measurement."""
    return cached(key_of(fields), fields[5]) or "aten"


def tracing_or_capturing() -> bool:
    """torch.compile is tracing, or a CUDA graph is being captured: no measuring now."""
    return torch.compiler.is_compiling() or (torch.cuda.is_available()
                                             and torch.cuda.is_current_stream_capturing())
