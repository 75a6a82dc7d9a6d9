"""Per-layer benchmark of the grouped 3x3 convolutions of ResNeXt-50 models.

Shared by bench_cardinality.py (the main job) and usable alone:

    python benchmarks/layers.py --models 32x4d --directions fprop

The byte and FLOP model (DESIGN.md): every layer is memory-bound, so the figure of merit is
achieved bandwidth against the fewest bytes a direction must move (each operand read once, the
result written once) over the GPU's device-to-device copy bandwidth measured in the same run.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

DIRECTIONS = ("fprop", "dgrad", "wgrad")
# ResNeXt-50: bottleneck blocks per stage, and the paper's fixed-complexity (C, d) table.
STAGE_BLOCKS = (3, 4, 6, 3)
PAPER_TABLE = ((1, 64), (2, 40), (4, 24), (8, 14), (32, 4))
MODELS = {f"{c}x{d}d": (c, d) for c, d in PAPER_TABLE}
MODELS.update({"32x4d": (32, 4), "64x4d": (64, 4)})
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Layer:
    """One grouped 3x3 convolution of a model; `count` is how many times the model has it."""

    model: str
    cardinality: int
    width: int          # bottleneck width d (channels per group in stage 1)
    name: str
    n: int
    c: int
    h: int
    w: int
    groups: int
    stride: int
    count: int

    @property
    def k(self) -> int:
        return self.c  # ResNeXt's grouped conv keeps the width

    @property
    def p(self) -> int:
        return (self.h + 2 - 3) // self.stride + 1

    @property
    def q(self) -> int:
        return (self.w + 2 - 3) // self.stride + 1

    def flops(self) -> float:
        """2 * N*P*Q * K * Cg*3*3, the same in every direction."""
        return 2.0 * self.n * self.p * self.q * self.k * (self.c // self.groups) * 9

    def min_bytes(self, direction: str, elem_size: int) -> float:
        x = self.n * self.c * self.h * self.w
        y = self.n * self.k * self.p * self.q
        w = self.k * (self.c // self.groups) * 9
        return float(elem_size * (x + y + w))  # each direction moves x, y (or dy) and w once


def resnext50_layers(model: str, batch: int, image: int = 224) -> List[Layer]:
    """The distinct grouped layers of ResNeXt-50 (C, d) at `image` x `image` input."""
    cardinality, width = MODELS[model]
    layers = []
    size = image // 4  # after the stem's stride-2 conv and max-pool
    for stage, blocks in enumerate(STAGE_BLOCKS):
        channels = cardinality * width * 2 ** stage
        if stage == 0:
            layers.append(Layer(model, cardinality, width, "stage1", batch, channels, size, size,
                                cardinality, 1, blocks))
            continue
        layers.append(Layer(model, cardinality, width, f"stage{stage + 1}.entry", batch, channels,
                            size, size, cardinality, 2, 1))
        size //= 2
        layers.append(Layer(model, cardinality, width, f"stage{stage + 1}", batch, channels,
                            size, size, cardinality, 1, blocks - 1))
    return layers


# ---------------------------------------------------------------------------------------------
# Timing.
@dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    reps: int
    method: str = "eager"


def _quantiles(times: List[float], method: str = "eager") -> Timing:
    times = sorted(times)
    pick = lambda f: times[min(len(times) - 1, int(f * (len(times) - 1) + 0.5))]  # noqa: E731
    return Timing(statistics.median(times), pick(0.2), pick(0.8), len(times), method)


def capture_graph(fn: Callable[[], object]) -> "torch.cuda.CUDAGraph":
    """`fn` captured as a CUDA graph, after one warm-up call on a side stream (allocations and
    lazy initialisation happen outside the capture)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


class CudaTimer:
    """CUDA events around each repetition, L2 flushed before each (a write of twice its size).

    With `graphs` (the default) each measured call is the replay of a CUDA graph captured from
    `fn` after warm-up, so the time is the GPU's alone: without it, host overhead (Python,
    the dispatcher, Triton's launcher: tens of microseconds) exceeds the small layers' kernel
    time and would be measured instead. A call that cannot be captured is timed eagerly, and
    the row says so (`timing`).
    """

    def __init__(self, device: torch.device, graphs: bool = True):
        l2 = torch.cuda.get_device_properties(device).L2_cache_size or (50 << 20)
        self.flush = torch.empty(2 * l2 // 4, dtype=torch.float32, device=device)
        self.graphs = graphs

    def __call__(self, fn: Callable[[], object], reps: int, warmup: int = 3) -> Timing:
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        method = "eager"
        if self.graphs:
            try:
                graph = capture_graph(fn)
                fn, method = graph.replay, "cuda_graph"
            except Exception:
                torch.cuda.synchronize()
        # A slow kernel gets fewer repetitions: a rough first measurement decides.
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        first = time.perf_counter() - t0
        reps = max(3, min(reps, int(2.0 / max(first, 1e-6))))
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for i in range(reps):
            self.flush.zero_()
            starts[i].record()
            fn()
            ends[i].record()
        torch.cuda.synchronize()
        return _quantiles([s.elapsed_time(e) for s, e in zip(starts, ends)], method)


def cpu_time(fn: Callable[[], object], reps: int) -> Timing:
    """torch.utils.benchmark with the process's real thread count."""
    from torch.utils import benchmark

    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=0.05 * reps)
    return _quantiles([t * 1e3 for t in m.times])


def _events_median_ms(fn: Callable[[], object], reps: int, warmup: int = 3) -> float:
    """Median CUDA-event time of `fn` over `reps` back-to-back calls after `warmup`: no L2 flush
    between them (for the ceilings below, unlike CudaTimer's layer timings)."""
    for _ in range(warmup):
        fn()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(reps)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events)


def copy_bandwidth_gbs(device: torch.device, mb: int = 4096, reps: int = 50) -> float:
    """Device-to-device copy bandwidth in GB/s, bytes read plus written: the memory ceiling.

    `mb` is the size of both buffers together (several GB: a copy that fits in a few hundred MB
    is partly served by the 50 MB L2 and its start-up shows). No L2 flush inside the timed region
    (a 512 MB copy right after a 2x-L2 flush measured 2738 GB/s on an H200 that moves ~4.3 TB/s),
    many repetitions, the median. Halves the size until the buffers fit the free memory. On the
    CPU: a host memcpy of `mb` MB."""
    if device.type != "cuda":
        n = mb * (1 << 20) // 8
        src = torch.empty(n, dtype=torch.float32).normal_()
        dst = torch.empty_like(src)
        t = cpu_time(lambda: dst.copy_(src), 5)
        return 2 * src.numel() * 4 / (t.median_ms * 1e-3) / 1e9
    free, _ = torch.cuda.mem_get_info(device)
    while mb > 64 and mb * (1 << 20) > free // 2:
        mb //= 2
    n = mb * (1 << 20) // 8                      # elements per buffer (two fp32 buffers)
    src = torch.empty(n, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    ms = _events_median_ms(lambda: dst.copy_(src), reps)
    return 2 * n * 4 / (ms * 1e-3) / 1e9


def l2_read_bandwidth_gbs(device: torch.device, mb: int = 24, reads: int = 32, reps: int = 20) -> Optional[float]:
    """What the SMs pull out of L2: GB/s of one reduction that reads an L2-resident `mb` MB
    buffer `reads` times (`l2_reads`), replayed as a CUDA graph (a lower bound: PyTorch's sum
    kernel). One kernel for all the reads, so that no launch gap counts as L2 time: twenty
    separate sums of 24 MB, each ~5 us at 5 TB/s, would have lost a third of their time to
    ~2-3 us gaps. The performance model's fitted L2->SM rate (2.8 TB/s of loads, from the Triton
    kernels) is either this ceiling or the kernels' own limit; this measurement tells which.
    None on the CPU."""
    if device.type != "cuda":
        return None
    try:
        return _l2_read(device, mb, reads, reps)
    except Exception:  # a measurement that cannot run is recorded as missing, never fatal
        return None


def l2_reads(x: torch.Tensor, reads: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`reads` sums of the 1-D `x`, each reading all of it, in one reduction (rows of a stride-0
    view: nothing is copied, and each row's sum is over contiguous memory, so the reads come
    from L2 while x fits there, not from registers or L1)."""
    return torch.sum(x.expand(reads, x.numel()), dim=1, out=out)


def _l2_read(device: torch.device, mb: int, reads: int, reps: int) -> float:
    x = torch.empty(mb * (1 << 20) // 4, dtype=torch.float32, device=device).normal_()
    out = torch.empty(reads, dtype=torch.float32, device=device)
    ms = _events_median_ms(capture_graph(lambda: l2_reads(x, reads, out)).replay, reps)
    return reads * x.numel() * 4 / (ms * 1e-3) / 1e9


def graph_launch_us(device: torch.device, kernels: int = 200, reps: int = 20) -> Optional[float]:
    """Microseconds one small kernel adds to a CUDA-graph replay: `kernels` dependent in-place
    adds on a one-element tensor captured as one graph, the replay's median over `kernels`. The
    performance model's launch cost (`GPU.launch_us`, assumed 3 us) is this figure; with the L2
    rate it decides how close to the roofline the small layers can come. None on the CPU."""
    if device.type != "cuda":
        return None
    try:
        t = torch.zeros(1, device=device)

        def run():
            for _ in range(kernels):
                t.add_(1.0)
        return _events_median_ms(capture_graph(run).replay, reps) * 1e3 / kernels
    except Exception:  # recorded as missing, never fatal
        return None


def datasheet_bandwidth_gbs(gpu_name: Optional[str]) -> Optional[float]:
    """The HBM datasheet figure of a GPU the performance model describes, else None."""
    from resnext_kernels.perf_model import GPUS, gpu_key

    key = gpu_key(gpu_name)
    return GPUS[key].hbm_datasheet_gbs if key else None


# ---------------------------------------------------------------------------------------------
# Backends.
def direction_fns(backend: str, layer: Layer, dtype: torch.dtype, channels_last: bool,
                  device: torch.device) -> Dict[str, Callable[[], object]]:
    """fprop / dgrad / wgrad callables of `backend` on fresh random operands of `layer`."""
    from resnext_kernels.ops import NATIVE, TRITON

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(layer.n, layer.c, layer.h, layer.w, device=device, dtype=dtype).to(memory_format=fmt)
    w = torch.randn(layer.k, layer.c // layer.groups, 3, 3, device=device, dtype=dtype) * 0.1
    dy = torch.randn(layer.n, layer.k, layer.p, layer.q, device=device, dtype=dtype).to(memory_format=fmt)
    conv = ([layer.stride] * 2, [1, 1], [1, 1], layer.groups)
    if backend in ("cudnn", "aten"):
        def backward(mask):
            return lambda: torch.ops.aten.convolution_backward(
                dy, x, w, None, *conv[:3], False, [0, 0], layer.groups, mask)
        return {"fprop": lambda: F.conv2d(x, w, None, *conv),
                "dgrad": backward([True, False, False]),
                "wgrad": backward([False, True, False])}
    family = TRITON if backend == "triton" else NATIVE
    if family is None:
        raise RuntimeError("the native extension is not available")
    # dgrad as a training step runs it: on the weight its forward pass packed (ops.py; the
    # packing launch is fprop's). The native pack_weight packs only for a halo rung that would
    # run, so a forced dgrad rung is forced while it packs too.
    make = lambda: family.packed_weight(x, w, *conv)  # noqa: E731
    if backend.startswith("cuda:") and cuda_variant_direction(backend[5:]) == "dgrad":
        make = _forced("dgrad", backend[5:], make)
    packed = (make(),)
    fns = {"fprop": lambda: family.fprop(x, w, None, *conv),
           "dgrad": lambda: family.dgrad(dy, w, list(x.shape), *conv, *packed),
           "wgrad": lambda: family.wgrad(dy, x, list(w.shape), *conv)}
    if backend.startswith("cuda:"):  # one rung of the CUDA ladder, forced
        return {direction: _forced(direction, backend[5:], fns[direction])
                for direction in fns if direction == cuda_variant_direction(backend[5:])}
    return fns


def warm_triton_cache(worker: Callable[[tuple], int], payloads: List[tuple], processes: int) -> int:
    """Runs `worker` over `payloads` in `processes` spawned processes and returns the sum of
    what they return (their failure counts).

    Triton compiles each kernel variant on first launch, one at a time per process, 1-2 s
    each; a benchmark meeting ~100 variants would spend minutes compiling inside its timing
    loop. Workers that launch every variant once (at batch 1: the same specialisation) fill
    Triton's on-disk cache in parallel, and the timing process then only loads them."""
    import multiprocessing

    if processes <= 0 or not payloads:
        return 0
    shares = [payloads[i::processes] for i in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return sum(pool.map(worker, [share for share in shares if share]))


def cuda_variant_direction(name: str) -> Optional[str]:
    from resnext_kernels import cuda_variants

    return next((v["direction"] for v in cuda_variants() if v["name"] == name), None)


def _forced(direction: str, variant: str, fn: Callable[[], object]) -> Callable[[], object]:
    """`fn` with the CUDA backend pinned to `variant` for the duration of each call."""
    from resnext_kernels._native import _C

    def call():
        _C.set_forced_variant(direction, variant)
        try:
            return fn()
        finally:
            _C.set_forced_variant(direction, "")
    return call


def backend_skip_reason(backend: str, layer: Layer, dtype: torch.dtype, device: torch.device) -> Optional[str]:
    import resnext_kernels as rk

    if backend in ("cudnn", "aten"):
        return None
    why = rk.backend_unavailable_reason(backend.split(":")[0])
    if why:
        return why
    x = torch.empty(0, layer.c, 1, 1, dtype=dtype, device=device)
    w = torch.empty(layer.k, layer.c // layer.groups, 3, 3, dtype=dtype, device=device)
    return rk.unsupported_reason(backend.split(":")[0], x, w, 1)


def _triton_choices() -> Dict[str, str]:
    from resnext_kernels.triton import fprop, wgrad

    out = {}
    for name, kernel in (("gather", fprop.KERNEL), ("wgrad", wgrad.KERNEL)):
        out.update({f"{name}:{key}": cfg for key, cfg in kernel.tuned_configs().items()})
    return out


def bench_layer(layer: Layer, backend: str, directions, dtype_name: str, channels_last: bool,
                device: torch.device, reps: int, timer, bandwidth_gbs: float) -> List[dict]:
    """One row per direction: timing, derived rates, or the reason it did not run."""
    dtype = DTYPES[dtype_name]
    rows = []
    base = dict(asdict(layer), k=layer.k, p=layer.p, q=layer.q, backend=backend, dtype=dtype_name,
                layout="channels_last" if channels_last else "nchw")
    skip = backend_skip_reason(backend, layer, dtype, device)
    fns = None
    if skip is None:
        try:
            fns = direction_fns(backend, layer, dtype, channels_last, device)
        except Exception as exc:  # reported in the results, never fatal
            skip = f"{type(exc).__name__}: {exc}"
    for direction in directions:
        row = dict(base, direction=direction, flops=layer.flops(),
                   bytes=layer.min_bytes(direction, torch.finfo(dtype).bits // 8))
        if skip is None and direction not in fns:
            rows.append(dict(row, error=f"{backend} is not a {direction} kernel"))
            continue
        if skip is not None:
            rows.append(dict(row, error=skip))
            continue
        before = _triton_choices() if backend == "triton" else {}
        try:
            t = timer(fns[direction], reps)
        except Exception as exc:
            rows.append(dict(row, error=f"{type(exc).__name__}: {str(exc).splitlines()[0]}"))
            continue
        if backend == "triton":  # which autotune configuration this layer got
            row["triton_configs"] = sorted(set(_triton_choices().items()) - set(before.items()))
        seconds = t.median_ms * 1e-3
        gbs = row["bytes"] / seconds / 1e9
        rows.append(dict(row, error=None, median_ms=t.median_ms, p20_ms=t.p20_ms, p80_ms=t.p80_ms,
                         reps=t.reps, timing=t.method, tflops=row["flops"] / seconds / 1e12, gbs=gbs,
                         roofline_pct=100.0 * gbs / bandwidth_gbs if bandwidth_gbs else None))
    return rows


if __name__ == "__main__":
    import bench_cardinality

    bench_cardinality.main()
