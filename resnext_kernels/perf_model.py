"""A performance model of the grouped 3x3 kernels: predicted time and binding resource of a layer,
direction and kernel variant, with no GPU.

GPU time is scarce, so designs are ranked here before they are written, and every GPU run tests
a prediction (benchmarks/perf_model.py prints them beside the committed measurements).

The model, per kernel launch:
  1. The grid, the CTAs an SM holds (registers, shared memory, threads; read from the compiled
     cubins when a resource table is given, else the estimates in each kernel model), and the
     waves that follow.
  2. Per CTA: the bytes it loads from L2 and those it stores to L2 (the crossbar's two
     directions, each at the L2<->SM rate: a device copy moves 4.3 TB/s read + write, so one
     3 TB/s budget for both would put every kernel under the copy), the L1 and shared-memory
     wavefronts of its warp-wide accesses (bank conflicts included), its tensor-core and FMA work
     as issued, the instructions of its index arithmetic where they matter, and the serial
     latency chain of its main loop (loads in flight per step: Little's law).
  3. A wave lasts as long as its slowest resource (or its latency chain); the launch lasts its
     waves, and at least its DRAM bytes over the HBM bandwidth; plus a fixed launch cost.
The binding resource is the one whose time dominates. Constants fitted to measurements are named
in CALIBRATION with the run they came from; everything else is a datasheet figure or arithmetic.

All byte counts are bytes; times are microseconds.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

DIRECTIONS = ("fprop", "dgrad", "wgrad")
ELEM_SIZE = {"fp32": 4, "fp16": 2, "bf16": 2}


# ---------------------------------------------------------------------------------------------
# GPUs: each number with its source ("datasheet", "measured ...", "arithmetic", "assumed").
@dataclass(frozen=True)
class GPU:
    name: str
    sms: int
    clock_ghz: float
    hbm_datasheet_gbs: float
    hbm_measured_gbs: float        # read + write of a several-GB device copy
    l2_mb: float
    l2_to_sm_gbs: float            # what the SMs pull out of L2 with 16-byte cp.async.cg loads
    smem_per_sm: int               # bytes a resident set of CTAs may use
    smem_per_block: int            # opt-in maximum of one CTA
    smem_reserved_per_block: int   # the driver's per-CTA reservation
    regs_per_sm: int
    max_threads_per_sm: int
    max_ctas_per_sm: int
    mma_sync_tflops: float         # bf16/fp16 dense, fp32 accumulate
    wgmma_tflops: float
    fma_tflops: float              # fp32, CUDA cores
    mem_latency_us: float          # a global load's round trip under load
    launch_us: float               # fixed cost of one kernel inside a CUDA-graph replay
    l1_smem_per_sm: int = 256 * 1024   # L1 and shared memory together (what smem leaves is L1)
    l1_hit_latency_us: float = 0.1     # a plain load that hits L1, under load
    sm_version: int = 90               # compute capability x 10 (90 on: thread-block clusters)
    sources: Dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def hbm_bytes_per_us(self) -> float:
        return self.hbm_measured_gbs * 1e3

    def little_bytes_per_sm(self) -> float:
        """Bytes that must be in flight per SM to sustain the measured HBM bandwidth."""
        return self.hbm_bytes_per_us * self.mem_latency_us / self.sms


_HOPPER_SM = dict(smem_per_sm=228 * 1024, smem_per_block=227 * 1024, smem_reserved_per_block=1024,
                  regs_per_sm=65536, max_threads_per_sm=2048, max_ctas_per_sm=32)
_HOPPER_SOURCES = {
    "sms, clock": "NVIDIA H100/H200 SXM datasheets (132 SMs, 1.98 GHz boost)",
    "smem, regs, threads, CTAs": "CUDA programming guide, compute capability 9.0",
    "l2_to_sm_gbs": "fitted: 2.8 TB/s of loads, the Triton configurations of H200 run 3 "
                    "(tune.json 2026-11-28 06:36; shared/PERF.md: L2->SM bytes / ~3 TB/s, loads "
                    "and stores together); since 2026-12-02 stores go on the crossbar's other "
                    "direction at the same rate (one budget for both put a device copy at 3.0 "
                    "TB/s against the 4.3 measured) and the loads' rate was refitted (2.75-2.8 "
                    "fit best: 376 of 468 rows). Not known to be a hardware ceiling: "
                    "layers.l2_read_bandwidth_gbs measures one (tune.json's "
                    "l2_read_bandwidth_gbs; one kernel since 2026-12-03, no launch gaps)",
    "mma_sync_tflops": "assumed ~65% of wgmma (shared/PERF.md: 600-660, to check on a GPU)",
    "wgmma_tflops": "measured ~790 through PyTorch's bf16 matmul on the H200s lent here "
                    "(shared/PERF.md); datasheet 989 dense",
    "fma_tflops": "datasheet 67 (fp32)",
    "mem_latency_us": "assumed 1 us under load (shared/PERF.md: 0.8-1 us; 1.0 fits run 3 best)",
    "l1_smem_per_sm": "CUDA programming guide, compute capability 9.0 (256 KB combined)",
    "l1_hit_latency_us": "assumed 0.1 us (about 200 cycles: a loaded L1 hit, several times the "
                         "unloaded ~35; to check on a GPU)",
    "launch_us": "assumed: ~3 us fixed per kernel in a graph replay (the smallest measured "
                 "kernels of H200 run 3 leave about that unexplained); "
                 "layers.graph_launch_us measures it (tune.json's graph_launch_us)",
}
GPUS: Dict[str, GPU] = {
    "H200": GPU("H200", sms=132, clock_ghz=1.98, hbm_datasheet_gbs=4800.0, hbm_measured_gbs=4300.0,
                l2_mb=50.0, l2_to_sm_gbs=2800.0, mma_sync_tflops=640.0, wgmma_tflops=790.0,
                fma_tflops=67.0, mem_latency_us=1.0, launch_us=3.0, **_HOPPER_SM,
                sources=dict(_HOPPER_SOURCES, hbm="datasheet 4.8 TB/s; measured ~4.3 TB/s read + "
                             "write with a several-GB copy on the H200s lent here (shared/PERF.md)",
                             l2="datasheet 50 MB")),
    "H100": GPU("H100", sms=132, clock_ghz=1.98, hbm_datasheet_gbs=3350.0, hbm_measured_gbs=3000.0,
                l2_mb=50.0, l2_to_sm_gbs=2800.0, mma_sync_tflops=640.0, wgmma_tflops=790.0,
                fma_tflops=67.0, mem_latency_us=1.0, launch_us=3.0, **_HOPPER_SM,
                sources=dict(_HOPPER_SOURCES, hbm="datasheet 3.35 TB/s; measured 2409-2964 GB/s "
                             "by the project's 512 MB copy after an L2 flush (understated), ~3.0 "
                             "assumed", l2="datasheet 50 MB")),
}

def gpu_key(device_name: Optional[str]) -> Optional[str]:
    """The GPUS key of a device name ("NVIDIA H200" -> "H200", "NVIDIA H100 80GB HBM3" ->
    "H100"); None for a GPU the model does not describe."""
    return next((key for key in GPUS if device_name and key in device_name), None)


# Constants fitted to committed measurements, each with its run. The fit is what
# benchmarks/perf_model.py's calibration summary checks.
CALIBRATION = {
    # Old Triton gather (before 07a4ed9) loaded each weight element with a scattered 2-byte load
    # nine elements from the next: half of the sectors those touch came from L2 (the rest hit
    # L1). Fitted on H200 run 3.
    "triton_scattered_weight_l2_fraction": 0.5,
    # Warp instructions of one (tap, channel block) step of the Triton gather kernel per 128
    # destination rows: index arithmetic, the masked loads and the dot; dgrad adds an integer
    # division and modulo by the (unspecialised) stride per row and tap. Fitted on run 3 (a grid
    # search over the calibration fraction): dgrad took 1.4-1.7x fprop on the same grid, 4-5x
    # at stride 2 (nine masked taps per pixel, 2.25 of which reach it).
    "triton_gather_step_instr": 1200.0,
    "triton_gather_dgrad_step_instr": 2700.0,
    # Direct CUDA rungs: instructions per multiply-add (64-bit address arithmetic, two loads,
    # conversions) and per destination element (the 64-bit unflatten, the epilogue). Fitted on
    # H100 runs 1-2: fprop_direct took 1.43 ms at stage 1 and 1.09 ms at stage 2 of 32x4d (equal
    # FLOPs, half the elements), so the per-element part is large.
    "direct_instr_per_mac": 12.0,
    "direct_instr_per_elem": 400.0,
    # Instructions per staged element of a staging loop with three 64-bit divisions or modulos
    # per element (fprop_smem, gather_mma's weights, wgrad_mma): shared/PERF.md counted ~260.
    "staging_instr_per_elem": 260.0,
    # Stack frame of the all-taps wgrad kernel (bytes per thread): 136 at stage 1 (sm_90 cubin,
    # shared/PERF.md).
    "triton_all_taps_stack_bytes": 136.0,
}

# Fraction of the schedulers' issue slots a memory-heavy kernel keeps busy.
ISSUE_EFFICIENCY = 0.5


# ---------------------------------------------------------------------------------------------
# The layer.
@dataclass(frozen=True)
class Conv:
    """One grouped 3x3 convolution: x [n, c, h, w], w [k, c/groups, 3, 3], y [n, k, p, q]."""

    n: int
    c: int
    h: int
    w: int
    k: int
    groups: int
    stride: int = 1
    pad: int = 1
    dil: int = 1
    elem_size: int = 2

    @classmethod
    def from_layer(cls, layer, elem_size: int = 2) -> "Conv":
        """From benchmarks/layers.py's Layer (or anything with n, c, h, w, k, groups, stride)."""
        return cls(layer.n, layer.c, layer.h, layer.w, layer.k, layer.groups, layer.stride,
                   elem_size=elem_size)

    @property
    def p(self) -> int:
        return (self.h + 2 * self.pad - 2 * self.dil - 1) // self.stride + 1

    @property
    def q(self) -> int:
        return (self.w + 2 * self.pad - 2 * self.dil - 1) // self.stride + 1

    @property
    def cg(self) -> int:
        return self.c // self.groups

    @property
    def kg(self) -> int:
        return self.k // self.groups

    def x_elems(self) -> int:
        return self.n * self.c * self.h * self.w

    def y_elems(self) -> int:
        return self.n * self.k * self.p * self.q

    def w_elems(self) -> int:
        return self.k * self.cg * 9

    def flops(self) -> float:
        """2 * N*P*Q * K * Cg * 9, the same in every direction."""
        return 2.0 * self.n * self.p * self.q * self.k * self.cg * 9

    def min_bytes(self) -> float:
        """Compulsory DRAM bytes of any direction: x (or dx), y (or dy) and w (or dw) once each."""
        return float(self.elem_size * (self.x_elems() + self.y_elems() + self.w_elems()))

    def roofline_us(self, gpu: GPU) -> float:
        return self.min_bytes() / gpu.hbm_bytes_per_us


def valid_tap_fraction(dst: int, src: int, stride: int, pad: int, transposed: bool,
                       dil: int = 1) -> float:
    """Fraction of (destination index, tap) pairs along one dimension whose source exists:
    fprop reads s = d*stride - pad + t*dil; dgrad (transposed) reads s = (d + pad - t*dil)/stride
    where that division is exact."""
    hits = 0
    for d in range(dst):
        for t in range(3):
            if transposed:
                u = d + pad - t * dil
                hits += u >= 0 and u % stride == 0 and u // stride < src
            else:
                s = d * stride - pad + t * dil
                hits += 0 <= s < src
    return hits / (3.0 * dst) if dst else 0.0


# ---------------------------------------------------------------------------------------------
# Occupancy and shared-memory banks.
def ctas_per_sm(gpu: GPU, threads: int, regs: int, smem: int) -> Tuple[int, str]:
    """(CTAs one SM holds, the limiter) from registers (allocated per warp in 256-register units),
    shared memory (plus the per-CTA reservation) and threads."""
    warps = -(-threads // 32)
    regs_per_warp = -(-max(regs, 1) * 32 // 256) * 256
    limits = {
        "registers": gpu.regs_per_sm // (regs_per_warp * warps),
        "threads": gpu.max_threads_per_sm // (warps * 32),
        "ctas": gpu.max_ctas_per_sm,
    }
    if smem > 0:
        limits["shared memory"] = gpu.smem_per_sm // (smem + gpu.smem_reserved_per_block)
    limiter = min(limits, key=lambda k: limits[k])
    return max(0, limits[limiter]), limiter


def bank_wavefronts(word_addresses: Sequence[int]) -> int:
    """Shared-memory wavefronts of one warp-wide 4-byte access: the most distinct words any of
    the 32 banks must serve (equal words are broadcast). 1 is conflict-free."""
    per_bank: Dict[int, set] = {}
    for a in word_addresses:
        per_bank.setdefault(a % 32, set()).add(a)
    return max((len(v) for v in per_bank.values()), default=0)


def l1_wavefronts(byte_addresses: Sequence[int], line: int = 128) -> int:
    """L1 wavefronts of one warp-wide global load: the distinct 128-byte lines it touches."""
    return len({a // line for a in byte_addresses})


def sectors(byte_addresses: Sequence[int], size: int) -> int:
    """32-byte sectors touched by accesses of `size` bytes at these addresses."""
    out = set()
    for a in byte_addresses:
        out.update(range(a // 32, (a + size - 1) // 32 + 1))
    return len(out)


# ---------------------------------------------------------------------------------------------
# Launches and the simulation.
@dataclass
class CtaWork:
    """What one CTA of a launch does (the resources it occupies while it runs)."""

    l2_bytes: float = 0.0          # L2 -> SM: loads (hits and DRAM misses alike)
    l2_store_bytes: float = 0.0    # SM -> L2: stores, on the crossbar's other direction
    l1_wavefronts: float = 0.0     # global loads served by L1 (hits and misses alike)
    smem_wavefronts: float = 0.0   # shared-memory accesses, bank conflicts included
    issue: float = 0.0             # warp instructions not counted above (index arithmetic)
    mma_flops: float = 0.0         # tensor-core work as issued (padding included)
    fma_flops: float = 0.0         # CUDA-core fp32 work
    chain_us: float = 0.0          # serial latency of the main loop (loads in flight per step)
    in_flight_bytes: float = 0.0   # bytes one CTA keeps in flight


@dataclass
class Launch:
    name: str
    ctas: int
    threads: int
    regs: int
    smem: int
    work: CtaWork
    dram_bytes: float = 0.0
    mma_useful_flops: float = 0.0
    resource_source: str = "estimate"
    helper: bool = False           # a small kernel beside the main one (packing, a reduction)


@dataclass
class Prediction:
    variant: str
    direction: str
    time_us: float
    binding: str
    terms: Dict[str, float]        # microseconds each resource would take on its own
    dram_bytes: float
    l2_bytes: float                # loads from L2
    smem_wavefronts: float
    mma_flops_issued: float
    mma_flops_useful: float
    grid: int
    ctas_per_sm: int
    occupancy_limiter: str
    waves: float
    in_flight_per_sm: float
    little_needed_per_sm: float
    launches: int
    resource_source: str
    notes: List[str] = field(default_factory=list)
    l2_store_bytes: float = 0.0    # stores to L2


RESOURCES = ("dram", "l2", "l1", "smem", "issue", "tensor", "fma", "latency", "launch")


def simulate(gpu: GPU, variant: str, direction: str, launches: List[Launch],
             notes: Iterable[str] = ()) -> Prediction:
    """Time of a sequence of launches on `gpu` (see the module docstring)."""
    clock = gpu.clock_ghz * 1e3                     # cycles per microsecond
    totals = dict.fromkeys(RESOURCES, 0.0)
    time = 0.0
    main = max((L for L in launches if not L.helper), key=lambda L: L.ctas, default=launches[0])
    main_ctas, limiter = 0, ""
    for L in launches:
        per_sm, why = ctas_per_sm(gpu, L.threads, L.regs, L.smem)
        if L is main:
            main_ctas, limiter = per_sm, why
        if per_sm == 0:
            return Prediction(variant, direction, math.inf, f"does not fit ({why})", {}, 0, 0, 0,
                              0, 0, L.ctas, 0, why, math.inf, 0, 0, len(launches),
                              L.resource_source, list(notes))
        w = L.work
        concurrent = gpu.sms * per_sm
        full, tail = divmod(L.ctas, concurrent)
        launch_time = 0.0
        for count, n_ctas in ((full, concurrent), (1 if tail else 0, tail)):
            if not count:
                continue
            busiest = -(-n_ctas // gpu.sms)         # CTAs on the busiest SM in this wave
            wave = {
                "l2": n_ctas * max(w.l2_bytes, w.l2_store_bytes) / (gpu.l2_to_sm_gbs * 1e3),
                "l1": busiest * w.l1_wavefronts / clock,
                "smem": busiest * w.smem_wavefronts / clock,
                "issue": busiest * w.issue / (4 * clock * ISSUE_EFFICIENCY),
                "tensor": n_ctas * w.mma_flops / (gpu.mma_sync_tflops * 1e6),
                "fma": n_ctas * w.fma_flops / (gpu.fma_tflops * 1e6),
                "latency": w.chain_us,
            }
            for k, v in wave.items():
                totals[k] += count * v
            launch_time += count * max(wave.values())
        dram = L.dram_bytes / gpu.hbm_bytes_per_us
        totals["dram"] += dram
        totals["launch"] += gpu.launch_us
        time += max(launch_time, dram) + gpu.launch_us
    busy = {k: v for k, v in totals.items() if k != "launch"}
    binding = max(busy, key=lambda k: busy[k])
    if totals["launch"] > busy[binding]:
        binding = "launch"
    little = gpu.little_bytes_per_sm()
    w = main.work
    return Prediction(
        variant=variant, direction=direction, time_us=time, binding=binding, terms=totals,
        dram_bytes=sum(L.dram_bytes for L in launches),
        l2_bytes=sum(L.ctas * L.work.l2_bytes for L in launches),
        smem_wavefronts=sum(L.ctas * L.work.smem_wavefronts for L in launches),
        mma_flops_issued=sum(L.ctas * L.work.mma_flops for L in launches),
        mma_flops_useful=sum(L.mma_useful_flops for L in launches),
        grid=main.ctas, ctas_per_sm=main_ctas, occupancy_limiter=limiter,
        waves=main.ctas / max(1, gpu.sms * main_ctas), in_flight_per_sm=main_ctas * w.in_flight_bytes,
        little_needed_per_sm=little, launches=len(launches), resource_source=main.resource_source,
        notes=list(notes), l2_store_bytes=sum(L.ctas * L.work.l2_store_bytes for L in launches))


def small_kernel(name: str, read: float, write: float, threads: int = 128, ctas: int = 0) -> Launch:
    """An elementwise helper kernel (weight packing, a reduction, a cast): its bytes once."""
    ctas = ctas or max(1, int((read + write) // (threads * 16)))
    work = CtaWork(l2_bytes=read / ctas, l2_store_bytes=write / ctas)
    return Launch(name, ctas, threads, 32, 0, work, dram_bytes=read + write,
                  helper=True)


# ---------------------------------------------------------------------------------------------
# Resource tables: registers and shared memory read from compiled cubins (cuobjdump), written by
# scripts/triton_compile_check.py --json and scripts/cuda_resource_check.py --json.
class Resources:
    """Looks up (registers, shared memory) of a compiled kernel; None when the table lacks it."""

    def __init__(self, triton: Optional[dict] = None, cuda: Optional[dict] = None):
        self.triton = triton or {}
        self.cuda = cuda or {}

    def triton_kernel(self, key: str) -> Optional[Tuple[int, int]]:
        row = self.triton.get(key)
        return (row["regs"], row["shared"]) if row and row.get("regs") is not None else None

    def cuda_regs(self, fragment: str, dtype: str, estimate: int, arch: str = "sm_90") -> Tuple[int, str]:
        """(registers, "cubin") of the built kernel whose demangled name contains `fragment`
        ("{T}" in it stands for the dtype's type) and that type; else (estimate, "estimate")."""
        type_name = {"bf16": "__nv_bfloat16", "fp16": "__half", "fp32": "float"}[dtype]
        fragment = fragment.replace("{T}", type_name)
        for row in self.cuda.get("kernels", []):
            if row["arch"] == arch and fragment in row["name"] and type_name in row["name"]:
                return row["regs"], "cubin"
        return estimate, "estimate"


NO_RESOURCES = Resources()


def triton_resource_key(kernel: str, dtype: str, red: int, out: int, groups: int, block_m: int,
                        warps: int, stages: int, extra: str = "") -> str:
    """The key scripts/triton_compile_check.py writes its rows under."""
    return f"{kernel}{extra} {dtype} r{red} o{out} g{groups} M{block_m}w{warps}s{stages}"


# ---------------------------------------------------------------------------------------------
# Triton kernels.
MIN_DOT, MAX_RED_BLOCK, MAX_OUT_BLOCK, PACK_WIDTH = 16, 64, 128, 32   # triton/common.py
MAX_FILLED_PACK = 80                                                   # triton/common.py


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def triton_group_tile(red: int, out: int, groups: int,
                      fill_blocks: bool = True) -> Tuple[int, int, int]:
    """(groups per program, BLOCK_RED, BLOCK_OUT): triton/common.choose_group_tile, without
    importing triton (so that the model runs anywhere)."""
    gp = max(1, min(groups, PACK_WIDTH // max(red, out)))
    if fill_blocks and (gp * red) % MIN_DOT:
        gp = next((k for k in range(gp + 1, groups + 1)
                   if groups % k == 0 and (k * red) % MIN_DOT == 0
                   and k * red <= MAX_FILLED_PACK), gp)
    block_red = min(MAX_RED_BLOCK, max(MIN_DOT, _next_pow2(gp * red)))
    if fill_blocks and (gp * red) % MIN_DOT == 0:
        while (gp * red) % block_red:
            block_red //= 2
    return gp, block_red, min(MAX_OUT_BLOCK, max(MIN_DOT, _next_pow2(gp * out)))


TRITON_WGRAD_MAX_BLOCK = 32            # triton/wgrad.py MAX_BLOCK


def triton_wgrad_tile(cg: int, kg: int, groups: int) -> Tuple[int, int, int]:
    """(groups per program, BLOCK_C, BLOCK_K) of triton/wgrad.py's group_tile."""
    gp, block_c, block_k = triton_group_tile(cg, kg, groups, fill_blocks=False)
    return gp, min(block_c, TRITON_WGRAD_MAX_BLOCK), min(block_k, TRITON_WGRAD_MAX_BLOCK)


@dataclass(frozen=True)
class TritonConfig:
    block_m: int
    warps: int
    stages: int

    @property
    def label(self) -> str:
        return f"M{self.block_m}w{self.warps}s{self.stages}"

    @property
    def l1_taps(self) -> bool:
        """num_stages=1 is the gather kernel's L1 path (triton/fprop.py, L1_TAPS)."""
        return self.stages == 1

    @property
    def band(self) -> int:
        """Rows of a band of the gather kernel's pixel order (triton/fprop.py, PIXEL_BAND)."""
        return triton_pixel_band(self.block_m, self.l1_taps)

    @classmethod
    def of(cls, config) -> "TritonConfig":
        """The configuration of a triton.Config of the kernels' autotune spaces."""
        return cls(config.kwargs["BLOCK_M"], config.num_warps, config.num_stages)

    @classmethod
    def parse(cls, label: str) -> "TritonConfig":
        import re

        m = re.fullmatch(r"M(\d+)w(\d+)s(\d+)", label)
        if not m:
            raise ValueError(f"not a Triton configuration label: {label!r}")
        return cls(*map(int, m.groups()))


@dataclass(frozen=True)
class TritonRevision:
    """What changed in the Triton kernels, so that measurements of older code are predicted with
    the code that ran (benchmarks/perf_model.py picks the revision from a result's commit)."""

    packed_weight: bool = True     # 07a4ed9: block-diagonal weights packed by a small kernel
    phase_classes: bool = True     # 07a4ed9: dgrad visits dx by stride phase (only its taps)
    fused_reduction: bool = True   # wgrad's splits added inside its launch (the last split of a
                                   # tile reduces), not by partials.sum(0) and a cast
    exact_taps: bool = True        # gather: a tap is a scalar offset from each row's source base
                                   # (EXACT_TAPS), and the step's channel block a constexpr split
    l1_prefetch: int = 0           # gather's L1 path: source tiles loaded this many steps ahead
                                   # and carried across iterations (1 in 9a4bee0, 2 in 61b8a38,
                                   # 3 until 2026-12-04; never measured); 0: an iteration loads
                                   # its TRITON_L1_GROUP steps' tiles together, then their dots
    wgrad_tap_regions: bool = True  # wgrad ALL_TAPS: each tap's dot in a region of its own (no
                                    # replicated accumulators, no pipeline: plain loads via L1)
    forward_packs_dgrad: bool = True  # a training step's forward pass packs dgrad's weight too
                                      # (one launch, both layouts); dgrad launches no packer
    pixel_bands: bool = True       # gather's L1 path walks its pixels in bands (PIXEL_BAND), not
                                   # rows (2026-12-04; never measured)
    pixel_tiles: bool = True       # gather's L1 path: a program may walk several pixel tiles
                                   # (triton_pixel_tiles; 2026-12-04, seventeenth session; never
                                   # measured); before, one
    corner_taps: bool = True       # gather: a 3 x 3 tap class walked corners first
                                   # (TRITON_TAP_ORDER; seventeenth session; never measured);
                                   # before, row by row


CURRENT_TRITON = TritonRevision()
BEFORE_07A4ED9 = TritonRevision(packed_weight=False, phase_classes=False, fused_reduction=False,
                                exact_taps=False, wgrad_tap_regions=False,
                                forward_packs_dgrad=False)
BEFORE_FUSED_REDUCTION = TritonRevision(fused_reduction=False, exact_taps=False,
                                        wgrad_tap_regions=False, forward_packs_dgrad=False)
BEFORE_EXACT_TAPS = TritonRevision(exact_taps=False, wgrad_tap_regions=False,
                                   forward_packs_dgrad=False)
BEFORE_WGRAD_TAP_REGIONS = TritonRevision(wgrad_tap_regions=False, forward_packs_dgrad=False)
BEFORE_FORWARD_PACK = TritonRevision(forward_packs_dgrad=False)

# Warp instructions of one step's loop body in the gather kernel's sm_90 SASS (bf16, Cg = 4;
# counted with cuobjdump -sass, the smallest loop holding the MMAs): the fitted per-step counts
# in CALIBRATION are for the code before the exact-tap map (fprop 232, dgrad 408 a warp at
# M128w4), so today's code scales them by its own count a CTA step:
# (direction, L1 path, rows a warp) -> instructions a warp. Counted 2026-12-02: the cp.async path
# at 32 rows a warp (the count stands for every shape there); the L1 path, three tiles ahead and
# three steps an iteration (a third of the loop), at 32 (M128w4; M256w8 142 / 184) and 16 rows a
# warp (M128w8). One step an iteration, two tiles ahead, it counted 204 / 245 and 138 / 188 (75
# of the 204 were byte-permutes copying the rotated tiles); one tile ahead 151 / 181. Recounted
# after a row's bounds became one unsigned comparison a coordinate (the fourth session of
# 2026-12-02): cp.async 165 -> 150 / 211 -> 193, L1 path 141 -> 126 / 184 -> 167 and
# 103 -> 93 / 141 -> 132; then with the rows past the last pixel failing the bounds check
# instead of a mask of their own: 143 / 185, 121 / 165, 89 / 130. Then (the fifth session) with
# a step's tap found without an integer division (_step_coords) and the weight tile's address
# computed once a channel tile, a step adding one scalar (_weight_dot): 113 / 156 (M128w4s3),
# 108 / 144 and 67 / 105. Then (2026-12-04) the L1 path loading an iteration's three tiles
# together and using them there, none carried across iterations (32 register copies a step
# gone): 74 / 110 and 52 / 91; then dgrad's tap offsets without their two signed divisions
# by the phase count a step, fprop's dots unguarded (nine steps a channel block, no step past
# the last) and a pack's output tiles a constant: 105 / 109, 71 / 76 and 49 / 55. Then (the
# seventeenth session) a class's taps from two-bit tables (corners first: TRITON_TAP_ORDER),
# where fprop's row-by-row taps had been the loop's induction variables: 107 / 108, 75 / 78 and
# 57 / 57.
TRITON_STEP_SASS_CALIBRATED = {"fprop": 232, "dgrad": 408}
TRITON_STEP_SASS = {("fprop", False, 32): 107, ("fprop", True, 32): 75, ("fprop", True, 16): 57,
                    ("dgrad", False, 32): 108, ("dgrad", True, 32): 78, ("dgrad", True, 16): 57}


def triton_step_scale(direction: str, config: "TritonConfig") -> float:
    """Today's gather loop body over the calibrated one, per CTA step (TRITON_STEP_SASS)."""
    counted = TRITON_STEP_SASS.get((direction, config.l1_taps, config.block_m // config.warps))
    if counted is None:        # not counted at this shape: the count at 32 rows a warp, per row
        return (TRITON_STEP_SASS[(direction, config.l1_taps, 32)]
                / TRITON_STEP_SASS_CALIBRATED[direction])
    return counted * config.warps / (4 * TRITON_STEP_SASS_CALIBRATED[direction]) * 128 / config.block_m


# Warp instructions of one step of wgrad ALL_TAPS with its taps in regions of their own and the
# taps' source rows one scalar apart (sm_90 SASS, bf16, Cg = 4, the smallest loop holding the
# MMAs; 2026-12-02): (BLOCK_M, warps) -> count a warp. Recounted with the bounds as one unsigned
# comparison (from 650, 318, 354, 1181), then with a position's (n, p, q) by two multiplies
# instead of three divisions (from 601, 320, 359, 1059; at M64w4 ptxas now recomputes shared
# memory addresses in the loop, 38 more).
TRITON_WGRAD_ALL_TAPS_SASS = {(64, 4): 639, (32, 4): 258, (64, 8): 294, (128, 4): 916}


def _triton_regs_estimate(warps: int, block_m: int, all_taps: bool = False,
                          tap_regions: bool = True, l1_grouped: bool = False) -> int:
    """Registers when no cubin table is given. From the compile check on sm_90 (bf16, 2026-11
    and -12): the gather kernel 84-147 (130 at 4 warps, PERF.md); wgrad all_taps 255 with a stack
    frame while its nine dots shared one region, 148-215 at 4 warps and 104-148 at 8 since.
    `l1_grouped`: the gather kernel's L1 path loading an iteration's tiles together (2026-12-04:
    124-128 at 32 rows a warp, M128w4 and M256w8, 64-80 at 16, at 32x4d's widths; the code it
    replaced took 176-216)."""
    if all_taps:
        return (176 if warps <= 4 else 112) if tap_regions else 255
    per_thread_rows = block_m // (warps * 32)
    if l1_grouped:
        return 128 if per_thread_rows >= 1 else 80
    return 130 if per_thread_rows >= 1 else 96


def _pipeline_smem(config: TritonConfig, stage_bytes: int) -> int:
    """Shared memory of Triton's software pipeline when no cubin table is given: stages - 1
    buffers of one step's loads (wgrad all_taps at BLOCK_M 128, 3 stages, fp32 asked for
    327680 bytes on the H200, run 4: 2 x 163840)."""
    return max(1, config.stages - 1) * stage_bytes


TRITON_MAX_PIXEL_TILES = 4            # the most pixel tiles triton_pixel_tiles gives a program


def triton_pixel_tiles(conv: "Conv", direction: str, gpu: "GPU", block_m: int,
                       l1_taps: bool = True, tiles_per_prog: int = 1) -> int:
    """Pixel tiles a program of the gather kernel walks for its channel tile (triton/fprop.py
    takes this through its launch grid): on the L1 path with one channel tile a program, of 1
    to TRITON_MAX_PIXEL_TILES the fewest predicted within 1% of the least time (a
    latency-bound layer's waves round the same at several counts), at BLOCK_M `block_m` and 32
    rows a warp; else 1. More tiles a program read its weight tiles from L2 once for them all
    (they are then L1 hits), and fewer programs change how the launch's waves round up; more
    than a few leave SMs idle at the end of the launch."""
    if not l1_taps or tiles_per_prog != 1:
        return 1
    return _fewest_pixel_tiles(conv, direction, gpu, block_m)


@functools.lru_cache(maxsize=4096)
def _fewest_pixel_tiles(conv: "Conv", direction: str, gpu: "GPU", block_m: int) -> int:
    config = TritonConfig(block_m, max(1, block_m // 32), 1)
    times = [triton_gather(conv, direction, gpu, config, 1, frozen=True, pixel_tiles=r).time_us
             for r in range(1, TRITON_MAX_PIXEL_TILES + 1)]
    return 1 + next(i for i, t in enumerate(times) if t <= 1.01 * min(times))


def triton_pixel_band(block_m: int, l1_taps: bool) -> int:
    """Rows of a band of the gather kernel's pixel order (triton/fprop.py PIXEL_BAND, which
    takes this rule): on the L1 path the smallest power of two whose square is over block_m / 4
    (8 at 128: 8 x 16 patches; 16 at 256), so that a program's pixels are a nearly square patch
    whose taps overlap in L1; on the cp.async path, which re-reads every tap from L2 whatever
    the order, 1 (rows)."""
    if not l1_taps:
        return 1
    band = 1
    while band * band * 4 <= block_m:
        band *= 2
    return band


def band_pixel(m: int, rows: int, cols: int, band: int) -> Tuple[int, int, int]:
    """(image, row, column) of the m-th destination pixel of a phase class's grid in the
    gather kernel's order (triton/fprop.py, PIXEL_BAND): an image in bands of `band` rows, the
    last one shorter; a band column by column; a column's rows in turn. Band 1 is row-major."""
    n, p = divmod(m, rows * cols)
    b, within = divmod(p, band * cols)
    j, i = divmod(within, min(band, rows - b * band))
    return n, b * band + i, j


# The order in which the gather kernel walks a 3 x 3 tap class (fprop; dgrad at stride 1), as
# (row, column) within the class: the four corners first, so that an 8 x 16 patch's first
# iteration of three steps brings all but one corner of its source footprint from L2 and its
# second the last corner, and the third finds every pixel in L1 (row by row, each of the three
# iterations finds a new source row). Smaller classes (dgrad's stride-2 phase classes) walk row
# by row. triton/fprop.py packs these into its tap tables (triton_tap_tables).
TRITON_TAP_ORDER = ((0, 0), (0, 2), (2, 0), (2, 2), (1, 1), (0, 1), (1, 0), (1, 2), (2, 1))


def triton_class_taps(rows: int, per_row: int, corner_taps: bool = True) -> List[Tuple[int, int]]:
    """(row, column) within the class grid of each tap of a phase class of `rows` x `per_row`
    taps, in the order the gather kernel walks them (TRITON_TAP_ORDER for 3 x 3)."""
    if corner_taps and (rows, per_row) == (3, 3):
        return list(TRITON_TAP_ORDER)
    return [(q, u) for q in range(rows) for u in range(per_row)]


def triton_tap_tables(rows: int, per_row: int) -> Tuple[int, int]:
    """The kernel's tap tables of a class: bits 2t and 2t + 1 of the first hold the class row of
    its t-th tap, of the second its class column (triton_class_taps)."""
    taps = triton_class_taps(rows, per_row)
    return (sum(q << 2 * t for t, (q, _) in enumerate(taps)),
            sum(u << 2 * t for t, (_, u) in enumerate(taps)))


@functools.lru_cache(maxsize=4096)
def _strip_walks(batch: int, dh: int, dw: int, sh: int, sw: int, stride: int, pad: int, dil: int,
                 transposed: bool, phased: bool, block_m: int, band: int,
                 corner_taps: bool) -> Tuple[Tuple[int, Tuple[bool, ...]], ...]:
    """Per strip of the first two images (the pattern repeats with the image): its distinct
    source pixels and, for each tap in the kernel's order, whether it touches a pixel no
    earlier tap of the strip did (strip_footprint)."""
    ph_n = stride if phased else 1
    classes = [(a, b) for a in range(ph_n) for b in range(ph_n)]

    def source(d: int, tap: int, size: int):
        """The source row (column) destination row d reads at tap, None where it reads none."""
        if transposed:
            u = d + pad - tap * dil
            return u // stride if u >= 0 and u % stride == 0 and u // stride < size else None
        v = d * stride - pad + tap * dil
        return v if 0 <= v < size else None

    walks = []
    for ph, pw in classes:
        rows, cols = -(-(dh - ph) // ph_n), -(-(dw - pw) // ph_n)
        if rows <= 0 or cols <= 0:
            continue
        r0, s0 = ((ph + pad) % ph_n, (pw + pad) % ph_n) if phased else (0, 0)
        taps = [(r0 + q * ph_n, s0 + u * ph_n) for q, u in triton_class_taps(
            len(range(r0, 3, ph_n)), len(range(s0, 3, ph_n)), corner_taps)]
        pixels = min(batch, 2) * rows * cols
        for start in range(0, pixels, block_m):
            seen, fresh = set(), []
            for r, t in taps:
                new = False
                for m in range(start, min(start + block_m, pixels)):
                    n, i, j = band_pixel(m, rows, cols, band)
                    si, sj = source(i * ph_n + ph, r, sh), source(j * ph_n + pw, t, sw)
                    if si is not None and sj is not None and (n, si, sj) not in seen:
                        seen.add((n, si, sj))
                        new = True
                fresh.append(new)
            walks.append((len(seen), tuple(fresh)))
    return tuple(walks)


def strip_footprint(batch: int, dh: int, dw: int, sh: int, sw: int, stride: int, pad: int, dil: int,
                    transposed: bool, phased: bool, block_m: int, band: int = 1,
                    corner_taps: bool = False) -> Tuple[float, float]:
    """(source pixels, steps that touch a pixel no earlier step did) of an average program of
    the gather kernel's L1 path: a strip of block_m consecutive destination pixels of one phase
    class (in the kernel's order of (n, row, column): band_pixel) walking its taps in the
    kernel's order (corner_taps: TRITON_TAP_ORDER; else row by row). The source pixels are what
    L1 misses bring from L2 (each once, if the strip's footprint stays in L1); a step with a new
    pixel waits for L2, the others hit L1."""
    walks = _strip_walks(batch, dh, dw, sh, sw, stride, pad, dil, transposed, phased, block_m,
                         band, corner_taps)
    if not walks:
        return 0.0, 0.0
    return (sum(px for px, _ in walks) / len(walks),
            sum(sum(fresh) for _, fresh in walks) / len(walks))


def strip_new_iterations(batch: int, dh: int, dw: int, sh: int, sw: int, stride: int, pad: int,
                         dil: int, transposed: bool, phased: bool, block_m: int, band: int,
                         corner_taps: bool, red_blocks: int) -> float:
    """Iterations of the L1 path's loop (TRITON_L1_GROUP steps of the (tap, channel block)
    walk) of an average strip's channel tile that hold a step touching a new pixel: those wait
    for L2, the others for L1 (a channel block's pixels are lines of their own, as new as its
    tap's)."""
    walks = _strip_walks(batch, dh, dw, sh, sw, stride, pad, dil, transposed, phased, block_m,
                         band, corner_taps)
    if not walks:
        return 0.0
    total = 0
    for _, fresh in walks:
        steps = [new for new in fresh for _ in range(red_blocks)]
        total += sum(any(steps[k:k + TRITON_L1_GROUP])
                     for k in range(0, len(steps), TRITON_L1_GROUP))
    return total / len(walks)


TRITON_L1_GROUP = 3                    # triton/fprop.py: steps an L1-path iteration loads


def triton_l1_iterations(phases: int, pad: int, red_blocks: int) -> float:
    """Iterations of the gather kernel's L1 path a channel tile, averaged over the phase
    classes (dgrad by phase class: `phases` = the stride, a class of taps_r x taps_s taps; else
    1, all nine): its steps, TRITON_L1_GROUP an iteration, the last one partial."""
    counts = [len(range((a + pad) % phases, 3, phases)) * len(range((b + pad) % phases, 3, phases))
              for a in range(phases) for b in range(phases)]
    return sum(-(-c * red_blocks // TRITON_L1_GROUP) for c in counts) / len(counts)


def triton_pack_elems(conv: Conv, transposed: bool) -> int:
    """Elements of one direction's packed weight (triton/fprop.py, pack_layout)."""
    red_g, out_g = (conv.kg, conv.cg) if transposed else (conv.cg, conv.kg)
    gp, block_red, block_out = triton_group_tile(red_g, out_g, conv.groups)
    return (-(-conv.groups // gp) * 9 * -(-(gp * red_g) // block_red) * block_red
            * -(-(gp * out_g) // block_out) * block_out)


def triton_gather(conv: Conv, direction: str, gpu: GPU, config: TritonConfig, tiles_per_prog: int = 1,
                  channels_fastest: bool = False, revision: TritonRevision = CURRENT_TRITON,
                  resources: Resources = NO_RESOURCES, dtype: str = "bf16",
                  frozen: bool = False, pixel_tiles: int = 1) -> Prediction:
    """fprop/dgrad through triton/fprop.py's _gather_conv_kernel (see its docstring). `frozen`:
    fprop of a frozen module in inference, on the packed weight it kept (frozen.py): no packer.
    `pixel_tiles`: pixel tiles a program of the L1 path walks, one after another, for each of
    its channel tiles (the kernel's pixel_tiles; each brings its own source footprint, the
    halo it shares with the tile before counted again)."""
    transposed = direction == "dgrad"
    e = conv.elem_size
    red_g, out_g = (conv.kg, conv.cg) if transposed else (conv.cg, conv.kg)
    gp, block_red, block_out = triton_group_tile(red_g, out_g, conv.groups)
    packs = -(-conv.groups // gp)
    out_tiles = -(-(gp * out_g) // block_out)
    red_blocks = -(-(gp * red_g) // block_red)
    n_tiles = packs * out_tiles
    per_prog = n_tiles if tiles_per_prog <= 0 else min(tiles_per_prog, n_tiles)
    dh, dw, sh, sw = (conv.h, conv.w, conv.p, conv.q) if transposed else (conv.p, conv.q, conv.h, conv.w)
    phased = transposed and revision.phase_classes and conv.dil == 1
    phases = conv.stride ** 2 if phased else 1
    class_pixels = conv.n * (-(-dh // (conv.stride if phased else 1))) * (-(-dw // (conv.stride if phased else 1)))
    m_tiles = -(-class_pixels // config.block_m)
    pixel_tiles = pixel_tiles if config.l1_taps else 1
    ctas = -(-n_tiles // per_prog) * phases * -(-m_tiles // pixel_tiles)
    vf = (valid_tap_fraction(dh, sh, conv.stride, conv.pad, transposed)
          * valid_tap_fraction(dw, sw, conv.stride, conv.pad, transposed))
    # Taps a program walks: all nine, or (phase classes) those that reach its class: on average
    # 9 * vf of the nine, each then valid for (nearly) every pixel.
    taps = 9.0 * vf if phased else 9.0
    tap_valid = 1.0 if phased else vf
    steps = per_prog * taps * red_blocks * pixel_tiles
    src_step = config.block_m * block_red * e * tap_valid
    if revision.packed_weight:
        w_step = block_red * block_out * e                              # contiguous, cp.async.cg
    else:  # the diagonal elements, 2-byte loads nine elements apart
        w_step = (gp * red_g * min(block_out, out_g) * 9 * e
                  * CALIBRATION["triton_scattered_weight_l2_fraction"])
    out_bytes = per_prog * config.block_m * block_out * e * pixel_tiles
    instr = CALIBRATION["triton_gather_step_instr"]
    if transposed and not revision.phase_classes:
        instr += CALIBRATION["triton_gather_dgrad_step_instr"]
    elif transposed:
        instr += CALIBRATION["triton_gather_dgrad_step_instr"] / 4  # once per class, not per tap
    if revision.exact_taps:
        instr *= triton_step_scale(direction, config)
    key = triton_resource_key("gather", dtype, red_g, out_g, conv.groups, config.block_m,
                              config.warps, config.stages, "_t" if transposed else "")
    found = resources.triton_kernel(key)
    regs, smem = found or (_triton_regs_estimate(config.warps, config.block_m, l1_grouped=(
                               config.l1_taps and not revision.l1_prefetch)),
                           _pipeline_smem(config, (config.block_m * block_red + block_red * block_out) * e))
    work = CtaWork(
        l2_bytes=steps * (src_step + w_step), l2_store_bytes=out_bytes,
        issue=steps * instr * config.block_m / 128,
        mma_flops=steps * 2.0 * config.block_m * block_red * block_out,
        chain_us=steps * gpu.mem_latency_us / max(1, config.stages - 1),
        in_flight_bytes=(src_step + w_step) * max(1, config.stages - 1))
    notes = []
    if config.l1_taps:
        # Plain loads (L1_TAPS): the strip's source pixels come from L2 once per channel block;
        # every step's rows are L1 wavefronts (a pixel's channel block is one line); a step
        # waits for L2 only if it touches a pixel no earlier step did. The weight tiles are
        # plain loads as well, the same ones for every program of a channel tile, and pixel
        # tiles run fastest: an SM brings a channel tile's weights from L2 about once for each
        # of its CTA slots (2026-12-04; the model had charged them to L2 every program, which
        # at M128 was more than the strip's footprint). That holds while the resident strips'
        # footprints and a program's weights fit what shared memory leaves of L1.
        depth = revision.l1_prefetch
        walk = (conv.n, dh, dw, sh, sw, conv.stride, conv.pad, conv.dil, transposed, phased,
                config.block_m, config.band if revision.pixel_bands else 1, revision.corner_taps)
        px, new_steps = strip_footprint(*walk)
        blocks = per_prog * red_blocks
        footprint = px * block_red * e
        resident, _ = ctas_per_sm(gpu, config.warps * 32, regs, smem)
        weights = blocks * taps * w_step                      # what a program's steps read
        if resident * (footprint + smem) + weights <= gpu.l1_smem_per_sm:
            from_l2 = min(1.0, resident * gpu.sms * pixel_tiles / (phases * m_tiles))
            work.l2_bytes = pixel_tiles * blocks * footprint + weights * from_l2
            work.l1_wavefronts = steps * config.block_m * tap_valid * -(-block_red * e // 128)
            if depth:   # tiles carried `depth` steps ahead: a step waits 1/depth of its trip
                work.chain_us = pixel_tiles * blocks * (
                    new_steps * gpu.mem_latency_us
                    + (taps - new_steps) * gpu.l1_hit_latency_us) / depth
            else:
                # An iteration loads its steps' tiles together, then runs their dots: it waits
                # one round trip (L2's if one of its steps touches a new pixel), and the CTA's
                # own instructions do not overlap its waits.
                iters = pixel_tiles * per_prog * triton_l1_iterations(
                    conv.stride if phased else 1, conv.pad, red_blocks)
                l2_iters = pixel_tiles * per_prog * strip_new_iterations(*walk, red_blocks)
                work.chain_us = (l2_iters * gpu.mem_latency_us
                                 + (iters - l2_iters) * gpu.l1_hit_latency_us
                                 + work.issue / (4 * gpu.clock_ghz * 1e3 * ISSUE_EFFICIENCY))
        else:
            notes.append("L1 path: the resident strips' footprints overflow L1; taps from L2")
        work.in_flight_bytes = (depth or TRITON_L1_GROUP) * src_step + w_step
    main = Launch("gather", ctas, config.warps * 32, regs, smem, work,
                  dram_bytes=conv.min_bytes(),
                  mma_useful_flops=conv.flops(), resource_source="cubin" if found else "estimate")
    launches = [main]
    if revision.packed_weight and not (transposed and revision.forward_packs_dgrad) and not frozen:
        # The packer's bytes: this direction's layout, and in a training step's forward pass
        # (forward_packs_dgrad) dgrad's as well, which dgrad then reads from the saved buffer.
        written = triton_pack_elems(conv, transposed) * e
        if revision.forward_packs_dgrad:
            written += triton_pack_elems(conv, transposed=True) * e
        launches.insert(0, small_kernel("pack_weight", conv.w_elems() * e, written))
    layout = ("all_tiles" if tiles_per_prog <= 0 else "tile") + ("_channels_fastest" if channels_fastest else "")
    return simulate(gpu, f"triton:{config.label} {layout}", direction, launches, notes)


TRITON_WGRAD_MIN_CHUNK = 512           # triton/wgrad.py MIN_CHUNK


def triton_wgrad(conv: Conv, gpu: GPU, config: TritonConfig, all_taps: bool,
                 resources: Resources = NO_RESOURCES, dtype: str = "bf16",
                 revision: TritonRevision = CURRENT_TRITON) -> Prediction:
    """wgrad through triton/wgrad.py's _wgrad_partial_kernel; its splits are added inside the
    launch by the last split of each tile (older code: partials.sum(0) and a cast after it)."""
    e = conv.elem_size
    gp, block_c, block_k = triton_wgrad_tile(conv.cg, conv.kg, conv.groups)
    packs = -(-conv.groups // gp)
    k_tiles = -(-(gp * conv.kg) // block_k)
    c_tiles = -(-(gp * conv.cg) // block_c)
    npq = conv.n * conv.p * conv.q
    taps = 9 if all_taps else 1
    per_split = (1 if all_taps else 9) * k_tiles * c_tiles * packs
    splits = max(1, min(-(-4 * gpu.sms // per_split), -(-npq // TRITON_WGRAD_MIN_CHUNK)))
    chunk = -(-npq // splits)
    steps = -(-chunk // config.block_m)
    vf = (valid_tap_fraction(conv.p, conv.h, conv.stride, conv.pad, False)
          * valid_tap_fraction(conv.q, conv.w, conv.stride, conv.pad, False))
    step_bytes = config.block_m * block_k * e + taps * config.block_m * block_c * e * vf
    partials = splits * conv.w_elems() * 4
    key = triton_resource_key("wgrad", dtype, conv.cg, conv.kg, conv.groups, config.block_m,
                              config.warps, config.stages, "9" if all_taps else "1")
    found = resources.triton_kernel(key)
    regions = all_taps and revision.wgrad_tap_regions
    regs, smem = found or (_triton_regs_estimate(config.warps, config.block_m, all_taps, regions),
                           _pipeline_smem(config, (config.block_m * block_k + taps * config.block_m * block_c) * e))
    # Nine accumulators spill (all_taps: 255 registers and a stack frame, PERF.md): every step
    # reloads and stores the frame through L1 (cached local memory), once per thread.
    spill_step = (2 * CALIBRATION["triton_all_taps_stack_bytes"] * config.warps * 32
                  if all_taps and regs >= 255 else 0.0)
    work = CtaWork(
        l2_bytes=steps * (step_bytes + spill_step),
        l2_store_bytes=taps * block_k * block_c * 4 / gp,
        mma_flops=steps * taps * 2.0 * config.block_m * block_k * block_c,
        chain_us=steps * gpu.mem_latency_us / max(1, config.stages - 1),
        in_flight_bytes=step_bytes * max(1, config.stages - 1))
    notes = []
    if regions:
        # Unpipelined plain loads (triton/wgrad.py): a step's nine x tiles overlap, so L2 sees the
        # strip's source pixels once (strip_footprint over the dy positions) and L1 serves the
        # rest; every step waits one round trip (new positions each step, nothing prefetched);
        # its instructions are the counted loop body. While the footprints fit L1.
        px, _ = strip_footprint(conv.n, conv.p, conv.q, conv.h, conv.w, conv.stride, conv.pad,
                                conv.dil, False, False, config.block_m)
        step_l2 = config.block_m * block_k * e + px * block_c * e
        resident, _ = ctas_per_sm(gpu, config.warps * 32, regs, smem)
        if resident * (px * block_c * e + smem) <= gpu.l1_smem_per_sm:
            work.l2_bytes = steps * step_l2
            work.l1_wavefronts = steps * taps * config.block_m * vf * -(-block_c * e // 128)
            work.in_flight_bytes = step_l2
        else:
            notes.append("wgrad all_taps: the resident strips' footprints overflow L1; x from L2")
        count = TRITON_WGRAD_ALL_TAPS_SASS.get((config.block_m, config.warps),
                                               TRITON_WGRAD_ALL_TAPS_SASS[(64, 4)])
        # As issued: the SASS count times what the gather kernel's fitted count is of its SASS
        # count (1200 per 128 rows for 4 x 232: stalls the SASS does not show).
        fitted_per_sass = (CALIBRATION["triton_gather_step_instr"]
                           / (4 * TRITON_STEP_SASS_CALIBRATED["fprop"]))
        work.issue = steps * count * config.warps * fitted_per_sass
        work.chain_us = steps * gpu.mem_latency_us
    main = Launch("wgrad_partial", splits * per_split, config.warps * 32, regs, smem, work,
                  dram_bytes=(conv.x_elems() + conv.y_elems()) * e + partials,
                  mma_useful_flops=conv.flops(), resource_source="cubin" if found else "estimate")
    if revision.fused_reduction:
        # The last CTA of each tile reads the tile's splits partials and writes dw: one more
        # step's worth of latency on the critical path, the partials once more through L2 (all
        # of them once over the launch: per CTA on average, partials / CTAs; until 2026-12-02
        # this charged every CTA with a whole tile's partials, `splits` times too much).
        main.work.l2_bytes += partials / max(1, splits * per_split)
        main.work.chain_us += gpu.mem_latency_us * 2
        launches = [main]
    else:
        launches = [main, small_kernel("partials.sum", partials, conv.w_elems() * 4),
                    small_kernel("cast", conv.w_elems() * 4, conv.w_elems() * e)]
    return simulate(gpu, f"triton:{config.label} {'all_taps' if all_taps else 'tap'}", "wgrad", launches,
                    notes)


# The Triton autotune spaces and layouts (triton/fprop.py, triton/wgrad.py), as data so that the
# model runs without triton; tests/test_perf_model.py checks them against the kernels' modules.
TRITON_GATHER_CONFIGS = [TritonConfig(*c) for c in ((64, 4, 2), (128, 4, 3), (128, 4, 2), (64, 4, 3),
                                                    (128, 8, 3), (256, 8, 2), (128, 4, 1),
                                                    (128, 8, 1), (256, 8, 1))]
TRITON_WGRAD_CONFIGS = [TritonConfig(*c) for c in ((64, 4, 2), (128, 4, 3), (128, 4, 2), (64, 4, 3),
                                                   (128, 8, 2))]
TRITON_WGRAD_ALL_TAPS_CONFIGS = [TritonConfig(*c) for c in ((64, 4, 1), (32, 4, 1), (64, 8, 1),
                                                            (128, 4, 1))]
TRITON_GATHER_LAYOUTS = {"tile": (1, False), "all_tiles": (0, False), "tile_channels_fastest": (1, True)}
TRITON_LOOP_REGISTER_BUDGET = 96       # triton/fprop.py LOOP_REGISTER_BUDGET


def triton_loop_registers(config: TritonConfig, block_red: int, block_out: int,
                          elem_size: int) -> int:
    """triton/fprop.py loop_registers: a thread's share of the accumulator and (L1 path) of its
    three source tiles in flight, 32-bit registers."""
    rows = config.block_m // config.warps
    tiles = 3 * rows * block_red * elem_size // 128 if config.l1_taps else 0
    return rows * block_out // 32 + tiles


def triton_wgrad_config_serves(config: TritonConfig, all_taps: bool, even: bool) -> bool:
    """triton/wgrad.py config_serves on sm_90: at partial channel tiles at most 16 rows a warp
    with one tap, 8 with all taps."""
    return even or config.block_m // config.warps <= (8 if all_taps else 16)


def triton_variants(conv: Conv, direction: str, gpu: GPU, resources: Resources = NO_RESOURCES,
                    revision: TritonRevision = CURRENT_TRITON,
                    frozen: bool = False) -> List[Prediction]:
    """Every autotune configuration and launch layout of the current Triton kernels (`frozen`:
    fprop on a frozen module's kept packed weight, see triton_gather)."""
    if direction == "wgrad":
        gp, block_c, block_k = triton_wgrad_tile(conv.cg, conv.kg, conv.groups)
        even = ((gp * conv.cg) % block_c == 0 and (gp * conv.kg) % block_k == 0
                and conv.groups % gp == 0)
        return [triton_wgrad(conv, gpu, c, all_taps, resources)
                for all_taps, space in ((False, TRITON_WGRAD_CONFIGS),
                                        (True, TRITON_WGRAD_ALL_TAPS_CONFIGS))
                for c in space if triton_wgrad_config_serves(c, all_taps, even)]
    red_g = conv.kg if direction == "dgrad" else conv.cg
    out_g = conv.kg if direction == "fprop" else conv.cg
    gp, block_red, block_out = triton_group_tile(red_g, out_g, conv.groups)
    even_red = (gp * red_g) % block_red == 0 and conv.groups % gp == 0
    # What the autotuner times (triton/fprop.py, config_serves): the L1 path only where every
    # channel block is full, and nothing over the loop's register budget.
    configs = [c for c in TRITON_GATHER_CONFIGS if (even_red or not c.l1_taps)
               and triton_loop_registers(c, block_red, block_out, conv.elem_size)
               <= TRITON_LOOP_REGISTER_BUDGET]
    return [triton_gather(conv, direction, gpu, c, per_prog, fastest, revision, resources,
                          frozen=frozen, pixel_tiles=(
                              triton_pixel_tiles(conv, direction, gpu, c.block_m, c.l1_taps,
                                                 per_prog) if revision.pixel_tiles else 1))
            for c in configs for per_prog, fastest in TRITON_GATHER_LAYOUTS.values()]


def triton_measured_variant(conv: Conv, direction: str, gpu: GPU, label: str,
                            revision: TritonRevision, resources: Resources = NO_RESOURCES,
                            pixel_tiles: int = 1) -> Prediction:
    """The prediction for a tune.json row's variant label ("M128w4s2 all_tiles"), with the
    gather kernel's pixel tiles a program the row ran (its `pixel_tiles`, 1 before they were
    recorded)."""
    cfg_label, layout = label.split(" ", 1)
    config = TritonConfig.parse(cfg_label)
    if direction == "wgrad":
        return triton_wgrad(conv, gpu, config, layout == "all_taps", resources, revision=revision)
    per_prog, fastest = TRITON_GATHER_LAYOUTS[layout]
    return triton_gather(conv, direction, gpu, config, per_prog, fastest, revision, resources,
                         pixel_tiles=pixel_tiles)


# ---------------------------------------------------------------------------------------------
# CUDA kernels: the launch shapes come from the registry (csrc/registry.cpp via _C.variant_shape).
def cuda_shape(name: str, conv: Conv, gpu: GPU, dtype: str = "bf16", channels_last: bool = True,
               packed: bool = False) -> dict:
    """The registry's launch shape of CUDA variant `name` for `conv` (needs the built extension);
    `packed`: given the weight packed before the launch (the halo rungs' ConvParams::packed)."""
    from ._native import _C

    if _C is None or not _C.built_with_cuda():
        raise RuntimeError("the CUDA variants' shapes need the extension built with CUDA")
    return dict(_C.variant_shape(name, [conv.n, conv.c, conv.h, conv.w], [conv.k, conv.cg, 3, 3],
                                 [conv.stride] * 2, [conv.pad] * 2, [conv.dil] * 2, conv.groups,
                                 dtype, channels_last, gpu.sms, packed, gpu.sm_version))


def _direct_lines(conv: Conv, direction: str) -> Tuple[float, float]:
    """L1 wavefronts of the source and weight loads of one warp of a direct kernel (channels_last:
    the 32 lanes are 32 consecutive channels of one pixel), from the kernels' index formulas."""
    e = conv.elem_size
    if direction == "fprop":   # lane = output channel k; x[n, (k/Kg)*Cg + c, ...], w[k, c, r, s]
        chans, per_group_src, src_group = conv.k, conv.cg, conv.kg
        w_addr = [(k * conv.cg * 9) * e for k in range(32)]
    else:                      # lane = input channel c; dy[n, g*Kg + k, ...], w[k, c % Cg, r, s]
        chans, per_group_src, src_group = conv.c, conv.kg, conv.cg
        w_addr = [((c // conv.cg) * conv.kg * conv.cg * 9 + (c % conv.cg) * 9) * e for c in range(32)]
    lanes = range(min(32, chans))
    src_addr = [((lane // src_group) * per_group_src) * e for lane in lanes]
    return float(l1_wavefronts(src_addr)), float(l1_wavefronts(w_addr[:len(lanes)]))


def cuda_direct(conv: Conv, direction: str, gpu: GPU, shape: dict, resources: Resources,
                dtype: str = "bf16") -> Prediction:
    """fprop_direct / dgrad_direct (one thread per destination element, reads through L1) and
    wgrad_direct (one CTA per weight element and split)."""
    e = conv.elem_size
    ctas = shape["grid_x"] * shape["grid_y"]
    threads = shape["threads"]
    if direction == "wgrad":
        npq = conv.n * conv.p * conv.q
        vf = (valid_tap_fraction(conv.p, conv.h, conv.stride, conv.pad, False)
              * valid_tap_fraction(conv.q, conv.w, conv.stride, conv.pad, False))
        per_cta_positions = npq / shape["splits"]
        warp_iters = per_cta_positions / 32
        # Lanes are consecutive positions: channels_last puts them C (or K) elements apart, so
        # each warp-wide load touches 32 lines and 32 sectors.
        lines = 32.0
        work = CtaWork(l1_wavefronts=warp_iters * lines * (1 + vf),
                       l2_bytes=warp_iters * 32 * 32 * (1 + vf) / 2,
                       issue=warp_iters * 40,
                       chain_us=warp_iters / (threads / 32) * gpu.mem_latency_us / 4)
        regs, source = resources.cuda_regs("wgrad_direct_partial_kernel", dtype, 40)
        main = Launch("wgrad_direct_partial", ctas, threads, regs, shape["smem_bytes"], work,
                      dram_bytes=conv.min_bytes(), resource_source=source)
        ws = shape["workspace_elems"] * 4
        return simulate(gpu, "cuda:wgrad_direct", direction,
                        [main, small_kernel("wgrad_reduce", ws, conv.w_elems() * e)])
    transposed = direction == "dgrad"
    elems = conv.x_elems() if transposed else conv.y_elems()
    red = conv.kg if transposed else conv.cg
    dh, dw, sh, sw = (conv.h, conv.w, conv.p, conv.q) if transposed else (conv.p, conv.q, conv.h, conv.w)
    vf = (valid_tap_fraction(dh, sh, conv.stride, conv.pad, transposed)
          * valid_tap_fraction(dw, sw, conv.stride, conv.pad, transposed))
    src_lines, w_lines = _direct_lines(conv, direction)
    warps_total = elems / 32
    macs = 9 * vf * red
    per_cta = warps_total / ctas
    work = CtaWork(l1_wavefronts=per_cta * macs * (src_lines + w_lines),
                   issue=per_cta * (macs * CALIBRATION["direct_instr_per_mac"]
                                    + CALIBRATION["direct_instr_per_elem"]),
                   fma_flops=per_cta * 32 * macs * 2,
                   l2_bytes=(conv.min_bytes() - elems * e) / ctas, l2_store_bytes=elems * e / ctas)
    name = f"{direction}_direct"
    regs, source = resources.cuda_regs(f"{name}_kernel", dtype, 40)
    main = Launch(name, ctas, threads, regs, 0, work, dram_bytes=conv.min_bytes(), resource_source=source)
    return simulate(gpu, f"cuda:{name}", direction, [main])


def _in_bounds_1d(tiles: int, tile: int, stride: int, pad: int, halo: int, size: int) -> int:
    """Sum over the tiles of one dimension of the halo positions inside [0, size)."""
    total = 0
    for t in range(tiles):
        first = t * tile * stride - pad
        total += max(0, min(first + halo, size) - max(first, 0))
    return total


def smem_halo_bytes(conv: Conv, shape: dict) -> float:
    """Bytes the fprop_smem CTAs stage from x: the in-bounds part of every CTA's halo (out of
    bounds it writes zeros without reading), over all packs. tests/test_perf_model.py checks it
    against every address the kernel's staging loop reads."""
    tile = 8                                            # kTileP = kTileQ (kernels.h)
    halo_h = (tile - 1) * conv.stride + 2 * conv.dil + 1   # fprop_smem_tile: square halos
    halo_w = shape["halo_pixels"] // halo_h
    rows = _in_bounds_1d(-(-conv.p // tile), tile, conv.stride, conv.pad, halo_h, conv.h)
    cols = _in_bounds_1d(-(-conv.q // tile), tile, conv.stride, conv.pad, halo_w, conv.w)
    return float(conv.n * rows * cols * conv.c * conv.elem_size)


def cuda_smem(conv: Conv, direction: str, gpu: GPU, shape: dict, resources: Resources,
              dtype: str = "bf16") -> Prediction:
    """The 8x8-tile shared-memory rungs on CUDA cores: stage (halo + weights as fp32, three
    64-bit divisions per staged element), then every (channel, pixel) of the tile sums its taps
    from shared memory; bank conflicts from the lanes' addresses."""
    e = conv.elem_size
    ctas = shape["grid_x"] * shape["grid_y"]
    gpb = shape["groups_per_block"]
    red_ch = shape["red_channels"]
    halo = shape["halo_pixels"]
    if direction == "fprop":
        red, outs = conv.cg, gpb * conv.kg
        # Lanes: consecutive output channels kl at one pixel; weights wts[kl*Cg*9 + c*9 + tap],
        # halo[(pixel)*channels + (kl/Kg)*Cg + c] (broadcast within a group).
        w_words = [kl * conv.cg * 9 for kl in range(min(32, outs))]
        h_words = [(kl // conv.kg) * conv.cg for kl in range(min(32, outs))]
    elif direction == "dgrad":
        red, outs = conv.kg, gpb * conv.cg
        w_words = [(c // conv.cg) * conv.kg * conv.cg * 9 + (c % conv.cg) * 9 for c in range(min(32, outs))]
        h_words = [(c // conv.cg) * conv.kg for c in range(min(32, outs))]
    else:
        red, outs = conv.kg, gpb * conv.kg
        w_words = [i for i in range(32)]
        h_words = [(i % red_ch) * 1 + (i // red_ch) * 32 for i in range(32)]   # pitch-32 halo rows
    conflicts = bank_wavefronts(w_words) + bank_wavefronts(h_words)
    pixels = 64
    macs_per_thread_item = 9 * red
    items = outs * pixels
    staged = halo * red_ch + outs * red * 9
    if direction == "wgrad":
        tiles_per_cta = (conv.n * -(-conv.p // 8) * -(-conv.q // 8)) / shape["splits"]
        staged *= tiles_per_cta
        items *= tiles_per_cta
    work = CtaWork(
        smem_wavefronts=items / 32 * macs_per_thread_item * conflicts,
        issue=staged / 32 * CALIBRATION["staging_instr_per_elem"] + items / 32 * macs_per_thread_item * 4,
        fma_flops=items * macs_per_thread_item * 2,
        l2_bytes=((smem_halo_bytes(conv, shape) / ctas if direction == "fprop" else halo * red_ch * e)
                  + outs * red * 9 * e),
        l2_store_bytes=items * e if direction != "wgrad" else 0.0,
        chain_us=(staged / shape["threads"]) * gpu.mem_latency_us / 4,
        in_flight_bytes=shape["threads"] * e)
    name = f"{direction}_smem"
    regs, source = resources.cuda_regs(f"{name}_kernel", dtype, 64)
    main = Launch(name, ctas, shape["threads"], regs, shape["smem_bytes"], work,
                  dram_bytes=conv.min_bytes(), resource_source=source)
    launches = [main]
    if direction == "wgrad":
        launches.append(small_kernel("wgrad_reduce", shape["workspace_elems"] * 4, conv.w_elems() * e))
    notes = [f"bank conflicts: {conflicts} wavefronts per (weight, halo) read pair, 2 if free"]
    return simulate(gpu, f"cuda:{name}", direction, launches, notes if conflicts > 2 else [])


def cuda_mma(conv: Conv, direction: str, gpu: GPU, shape: dict, resources: Resources,
             dtype: str = "bf16") -> Prediction:
    """The tensor-core rungs (gather_mma.cu, wgrad_mma.cu): mma.sync m16n8k16 over block-diagonal
    packs, weights (gather) or dy/x chunks (wgrad) staged with per-element 64-bit index math,
    A fragments loaded as 32-bit words straight from global memory, one k-step in flight."""
    e = conv.elem_size
    ctas = shape["grid_x"] * shape["grid_y"]
    red_pad = shape["red_channels"]
    if direction == "wgrad":
        chunk = shape["tile_pixels"]
        npq = conv.n * conv.p * conv.q
        steps = -(-npq // shape["splits"]) / chunk
        staged = steps * 64 * chunk * 2
        work = CtaWork(
            issue=staged / 32 * CALIBRATION["staging_instr_per_elem"],
            l2_bytes=steps * chunk * (shape["tile_channels"] + red_pad) * e,
            mma_flops=steps * 2.0 * 64 * 64 * chunk,
            chain_us=steps * (64 * chunk * 2 / shape["threads"]) * gpu.mem_latency_us / 2,
            in_flight_bytes=shape["threads"] * 2 * e)
        name = "wgrad_mma"
    else:
        transposed = direction == "dgrad"
        dh, dw, sh, sw = (conv.h, conv.w, conv.p, conv.q) if transposed else (conv.p, conv.q, conv.h, conv.w)
        vf = (valid_tap_fraction(dh, sh, conv.stride, conv.pad, transposed)
              * valid_tap_fraction(dw, sw, conv.stride, conv.pad, transposed))
        taps = 9 * vf if transposed and conv.dil == 1 else 9
        ksteps = taps * red_pad / 16
        w_staged = 9 * 64 * red_pad
        work = CtaWork(
            issue=w_staged / 32 * CALIBRATION["staging_instr_per_elem"],
            l2_bytes=w_staged * e / 4 + ksteps * 128 * 16 * e, l2_store_bytes=128 * 64 * e,
            mma_flops=ksteps * 2.0 * 128 * 64 * 16,
            chain_us=ksteps * gpu.mem_latency_us + (w_staged / shape["threads"]) * gpu.mem_latency_us / 8,
            in_flight_bytes=128 * 16 * e)
        name = f"{direction}_mma"
    regs, source = resources.cuda_regs("wgrad_mma_kernel" if direction == "wgrad" else "gather_mma_kernel",
                                       dtype, 168)
    main = Launch(name, ctas, shape["threads"], regs, shape["smem_bytes"], work,
                  dram_bytes=conv.min_bytes(), mma_useful_flops=conv.flops(), resource_source=source)
    launches = [main]
    if direction == "wgrad":
        launches.append(small_kernel("wgrad_reduce", shape["workspace_elems"] * 4, conv.w_elems() * e))
    return simulate(gpu, f"cuda:{name}", direction, launches)


HALO_PHASE_TAPS = (1, 2, 2, 4)   # taps of dgrad_halo's stride-2 phase classes (halo_fragments.h)


def halo_kn_pairs(cg: int, gw: int, class_taps: Sequence[int]) -> int:
    """(k-step, n8 tile) pairs fprop_halo computes in a GEMM group, summed over the classes: all
    of them but in a block-diagonal group of several, where a pair whose K chunks and output
    channels share no group is skipped (halo_fragments.h, halo_kn_meet)."""
    chunks, ntiles, total = gw // 8, gw // 8, 0
    for taps in class_taps:
        for j in range(-(-taps * chunks // 2)):
            for nt in range(ntiles):
                if gw == cg:
                    total += 1
                    continue
                n_lo, n_hi = 8 * nt // cg, (8 * nt + 7) // cg
                for kc in (2 * j, 2 * j + 1):
                    c = kc % chunks
                    if kc < taps * chunks and 8 * c // cg <= n_hi and n_lo <= (8 * c + 7) // cg:
                        total += 1
                        break
    return total
HALO_PACK_UNROLL = 12            # packed words a thread loads at once, about (halo_pack_unroll)
HALO_PHASES_PACK_UNROLL = 4      # the same for dgrad's phase classes
# Warp instructions of fprop_halo's staging loop for one halo row, in passes of 32 lanes
# (halo_fragments.h, halo_lane_copy: 32 / (slab / 8) pixels a pass): a fixed part plus a part
# per pass, fitted to the sm_90 SASS of the 62 bf16 kernels (least squares; 2026-12-04: 16.6 +
# 7.75 a pass, 30-91 instructions a row, residuals within 9%; the ninth session's 25.1 + 6.3,
# the seventh's 24 + 5.5). Its store loop's tile row, by (Cg, dgrad's phase classes): since
# 2026-12-04 a table, as the rows of 2 passes came out at 25-38 instructions (ptxas keeps the
# lane's invariants in some kernels and recomputes them a row in others: 37-38 in dgrad's
# stride-1 kernels at Cg = 16, 32 in fprop's) and the Cg = 64 phase kernels' at 46 and 69,
# which no line fits within 20% (the ninth session's was 19.5 + 5.5 a pass).
# scripts/cuda_resource_check.py recounts each kernel's and fails beyond 20%. Before the
# row-wise loops (2026-12-02) a pass of the staging loop was 35-41 instructions and of the
# store loop 28-32, for 32 copies.
# Warp instructions a packed weight word costs fprop_halo's slab packing (halo_pack_slab: a
# thread's words in rounds over the slab's GEMM groups, halo_pack_round), by (Cg, dgrad's phase
# classes), in the sm_90 SASS of the bf16 kernels (2026-12-04: the pack loops' instructions per
# word, or where a slab is one round (Cg = 4, 8, 16) the straight-line packing's before the tile
# loop; 22-144. Cg = 16 44 -> 22, 32 85 -> 59, but 4 50 -> 74 and 8 28 -> 55 with 24 loads in
# flight, and Cg = 16's phase classes 29 -> 91 on two rounds of run-time word indices; the
# fourteenth session's, a GEMM group at a time, 25-146). Until 2026-12-03 the packing evaluated
# each word's index maps in 64-bit arithmetic at run time: 235-262 instructions a word, 785-975
# for the phase classes, where the model had assumed ~60 and so predicted stages 3-4 and the
# stride-2 dgrad entries far too fast. Recounted in CI within 25% for each kernel.
HALO_PACK_WORD_SASS = {
    (4, False): 74, (4, True): 78, (8, False): 55, (8, True): 67, (14, False): 144, (14, True): 114,
    (16, False): 22, (16, True): 91, (24, False): 132, (24, True): 104, (32, False): 59,
    (32, True): 76, (40, False): 131, (40, True): 105, (64, False): 72, (64, True): 61,
}
HALO_PACK_SASS_TOLERANCE = 0.25
# The same for a pre-packed weight (ConvParams::packed): a 16-byte copy of 4 words, ~8 warp
# instructions (an estimate: address, copy and loop, as the staging copies cost).
HALO_PREPACKED_WORD_SASS = 2.0


def halo_pack_round(gemm_groups: int, words: int, unroll: int) -> int:
    """A round's words of one GEMM group (halo_fragments.h, halo_pack_round, mirrored): all of a
    class's where the slab's are at most 1.5 x unroll, else ~unroll over the GEMM groups, a
    divisor of `words` where one is near."""
    per = -(-unroll // gemm_groups)
    if 2 * gemm_groups * words <= 3 * unroll:
        return words
    return next((r for r in range(per, per // 2, -1) if words % r == 0), per)


def halo_pack_rounds(class_ksteps: Sequence[int], ntiles: int, gemm_groups: int) -> int:
    """Load round trips of a thread packing a slab (halo_pack_slab): per class, its words (half
    the class's (k-step, n8 tile) pairs, in every GEMM group) in rounds that load a round's
    words of all GEMM groups at once (HALO_PACK_UNROLL about; the four phase classes
    HALO_PHASES_PACK_UNROLL)."""
    unroll = HALO_PHASES_PACK_UNROLL if len(class_ksteps) == 4 else HALO_PACK_UNROLL
    words = [-(-k * ntiles // 2) for k in class_ksteps]
    return sum(-(-w // halo_pack_round(gemm_groups, w, unroll)) for w in words)


# Warp instructions of a class's epilogue (fprop_halo.cu, `epilogue`), a warp's, without a bias,
# by (Cg, dgrad's phase classes): each (GEMM group, n8 tile)'s 4 conversions (cvt ...x2.f32,
# ReLU its own clamp) and 4 staging stores, the staging addresses (at Cg = 14, 24, 40, whose
# slabs are not a power of two channels wide, ~20 instructions a pair), the store loop's
# set-up; counted from the last mma to the first store in the sm_90 SASS of the bf16 dgrad
# kernels (one form; 2026-12-04), which scripts/cuda_resource_check.py recounts within
# HALO_EPILOGUE_SASS_TOLERANCE; fprop's form without a bias taken as the same. With a bias
# (HALO_EPILOGUE_BIAS_SASS), per (GEMM group, n8 tile) its pair's 2 loads, 2 widenings and 8
# adds, and a few addresses (read in the Cg = 4 fprop kernel's SASS: 55 more at 4 pairs).
# Before 2026-12-04 every kernel, dgrad's included, issued the bias and ReLU of each element
# under a predicate, the bias loaded for each: 162-194 a class at Cg = 4, 8, 16, 24, 32, 351-374
# at 14, where the model took 32 a pair plus 8 bias loads (163 at 4 pairs).
HALO_EPILOGUE_SASS = {
    (4, False): 60, (4, True): 47, (8, False): 60, (8, True): 45, (14, False): 169, (14, True): 187,
    (16, False): 83, (16, True): 48, (24, False): 133, (24, True): 86, (32, False): 63,
    (32, True): 54, (40, False): 112, (40, True): 128, (64, False): 86, (64, True): 74,
}
HALO_EPILOGUE_BIAS_SASS = (4, 12)
HALO_EPILOGUE_SASS_TOLERANCE = 0.25


def halo_epilogue_sass(cg: int, phases: bool, bias: bool = False) -> float:
    """A warp's instructions for one class's epilogue (HALO_EPILOGUE_SASS), with the bias's."""
    pairs = halo_slab(cg) // 8             # (GEMM group, n8 tile) pairs: a slab's 8-channel tiles
    fixed, per = HALO_EPILOGUE_BIAS_SASS
    return HALO_EPILOGUE_SASS[(cg, phases)] + (fixed + per * pairs if bias else 0)


HALO_STAGE_ROW_SASS = (16.6, 7.75)
HALO_STORE_ROW_SASS = {
    (4, False): 30, (4, True): 26, (8, False): 30, (8, True): 26, (14, False): 39, (14, True): 42,
    (16, False): 34, (16, True): 26, (24, False): 28, (24, True): 27, (32, False): 25,
    (32, True): 29, (40, False): 38, (40, True): 37, (64, False): 40, (64, True): 57.5,
}
HALO_ROW_SASS_TOLERANCE = 0.2


def halo_slab(cg: int) -> int:
    """Channels of fprop_halo's slab (halo_fragments.h, halo_slab): 32 up to Cg = 32, a group
    from there, four groups (56) at Cg = 14."""
    return 56 if cg == 14 else cg * (32 // cg) if cg < 32 else cg


def halo_cols(stride: int) -> int:
    """Columns of fprop_halo's staged halo of a 16-column tile (halo_fragments.h, halo_cols)."""
    return (16 - 1) * stride + 3


def halo_row_passes(cols: int, slab: int) -> int:
    """Passes of 32 lanes a warp makes over a row of `cols` pixels of `slab` channels
    (halo_fragments.h, halo_row_passes)."""
    pass_cols = 32 // (slab // 8)
    return -(-cols // pass_cols)


def halo_row_sass(model: Tuple[float, float], passes: int) -> float:
    """A staging row's warp instructions under HALO_STAGE_ROW_SASS."""
    return model[0] + model[1] * passes


def cuda_halo(conv: Conv, direction: str, gpu: GPU, shape: dict, resources: Resources,
              dtype: str = "bf16", prepacked: bool = False, packs_in_call: bool = False,
              bias: bool = False) -> Prediction:
    """fprop_halo (csrc/kernels/fprop_halo.cu, halo_fragments.h): persistent CTAs walk contiguous
    runs of the 8x16-pixel tiles (two images a tile on grids at most 8 columns wide whose halos
    meet only in padding: the shape's tile_images), packing each slab's weights as they start it; each tile's halo
    is copied once from L2 into shared memory, the nine taps read it there as ldmatrix A
    fragments (K = (tap, channel) in a GEMM group), the output is staged and stored 16 bytes at a
    time. Shared-memory wavefronts per tile as counted by csrc/tests/test_halo.cpp
    through the kernel's own index maps. dgrad_halo is the same kernel on dy: at stride 1 the
    fprop of dy with padding 2 - pad; at stride 2 the four phase classes, each a stride-1
    convolution of dy over its own taps on the ceil(H/2) x ceil(W/2) grid, run in turn on one
    staged halo, each storing every other dx pixel. `prepacked`: the weight packed before the
    launch (pack_weight), each slab's words copied in 16-byte pieces with a tile's halo, instead
    of packed by each CTA; `packs_in_call`: packed so by the call itself, one launch more
    (halo_packs_in_call: an fprop call given no packed weight where packing in the CTAs would
    starve the grid; the shape says so with two launches); `bias`: fprop with a bias (a frozen
    module's folded batch norm), whose epilogue adds it."""
    if direction == "wgrad":
        return cuda_wgrad_halo(conv, gpu, shape, resources, dtype)
    e = conv.elem_size
    dst_elems = conv.x_elems() if direction == "dgrad" else conv.y_elems()
    compulsory, useful = conv.min_bytes(), conv.flops()
    phases = direction == "dgrad" and conv.stride == 2
    mode = 2 if phases else 1 if direction == "dgrad" else 0
    if direction == "dgrad":
        conv = Conv(conv.n, conv.k, conv.p, conv.q, conv.c, conv.groups, 1,
                    1 if phases else 2 * conv.dil - conv.pad, conv.dil, conv.elem_size)
    cg = conv.cg
    # A GEMM group: whole 16-byte chunks, block-diagonal (halo_gw): Cg, 8 at Cg = 4, 56 at Cg = 14.
    slab, gw = shape["tile_channels"], 56 if cg == 14 else max(cg, 8)
    gg = slab // gw
    chunks = gw // 8                                # 8-channel K chunks a tap
    class_ksteps = [-(-t * chunks // 2) for t in (HALO_PHASE_TAPS if phases else (9,))]
    classes, ksteps, ntiles = len(class_ksteps), sum(class_ksteps), gw // 8
    kn = halo_kn_pairs(cg, gw, HALO_PHASE_TAPS if phases else (9,))   # (k-step, n8) pairs computed
    rows = (8 - 1) * conv.stride + 3
    cols = halo_cols(conv.stride)
    # Paired tiles (grids at most 8 columns wide, halo_paired): images 2u and 2u + 1 side by side
    # in a tile's 8-column halves, the second's halo from column 8 * stride on.
    paired = shape.get("tile_images", 1) == 2
    units = -(-conv.n // 2) if paired else conv.n
    tiles_p, tiles_q = -(-conv.p // 8), 1 if paired else -(-conv.q // 16)
    tiles = (conv.c // slab) * units * tiles_p * tiles_q
    per_cta = tiles / shape["grid_x"]
    in_h = _in_bounds_1d(tiles_p, 8, conv.stride, conv.pad, rows, conv.h) / tiles_p
    if paired:
        split = 8 * conv.stride
        in_w = (_in_bounds_1d(1, 8, conv.stride, conv.pad, split, conv.w)
                + (conv.n - units) / units * _in_bounds_1d(1, 8, conv.stride, conv.pad, cols - split, conv.w))
    else:
        in_w = _in_bounds_1d(tiles_q, 16, conv.stride, conv.pad, cols, conv.w) / tiles_q
    halo_bytes = in_h * in_w * slab * e        # the in-bounds part of an average tile's halo
    out_bytes = dst_elems * e / tiles
    copies = rows * cols * slab / 8            # 16-byte staging copies a tile
    # Each CTA walks a contiguous run of the slab-major tiles and packs the weights of each slab
    # it starts into shared memory: 1 + run / tiles-per-slab slabs a CTA on average, each
    # words / 128 words a thread, in rounds of about HALO_PACK_UNROLL loaded at once over the
    # GEMM groups (halo_pack_rounds round trips; the first slab's while the first tile's halo
    # flies) at HALO_PACK_WORD_SASS instructions a word. Pre-packed, a slab's words come in
    # 16-byte copies with a tile's halo (the first slab's with the first tile's, a later one's
    # while the next tile's halo flies: one round trip), ~8 instructions a copy of 4 words.
    words = gg * ksteps * ntiles * 64
    packs = min(conv.c // slab, 1 + per_cta / (tiles / (conv.c // slab)))
    pack_rounds = (packs - 1) / packs if prepacked else halo_pack_rounds(class_ksteps, ntiles, gg)
    pack_word_issue = HALO_PREPACKED_WORD_SASS if prepacked else HALO_PACK_WORD_SASS[(cg, phases)]
    weight_bytes = words * 4 if prepacked else slab * cg * 9 * e
    # Shared-memory wavefronts a tile (csrc/tests/test_halo.cpp's counts): A per warp and GEMM
    # group the schedule's conflict-free ldmatrix (halo_a_schedule, the shape's a_loads: an .x4
    # 4, an .x2 2; each pair of halo row, shift and chunk once for both m16 tiles); B 2 per n8
    # tile; the epilogue's pair stores and 16-byte output loads per class (all at the minimum);
    # the staging copies 1.1x the minimum at stride 1 (a row's last pass), 2x at stride 2 (up
    # to 1.94x counted).
    a_loads, a_x2 = shape["a_loads"], shape["a_loads_x2"]
    a_moves = 2 * 2 * ksteps if chunks == 1 and conv.stride == 1 and not phases else 0   # couples
    copy_conflicts = 1.1 if conv.stride == 1 else 2.0
    smem = (4 * gg * (4 * a_loads - 2 * a_x2) + 8 * kn * gg + classes * 4 * gg * 2 * ntiles * 2
            + copy_conflicts * copies * 16 / 128 + classes * 128 * slab * 2 / 128)
    mma = 4 * 2 * kn * gg * 2.0 * 16 * 8 * 16
    work = CtaWork(
        l2_bytes=per_cta * halo_bytes + packs * weight_bytes,
        l2_store_bytes=per_cta * out_bytes,
        smem_wavefronts=per_cta * smem + packs * words / 32,
        # Warp instructions, counted in fprop_halo's SASS (sm_90, bf16): per warp and GEMM
        # group the schedule's A loads (halo_a_schedule: an ldmatrix each, the lane's part and
        # the offset folded into its address) and, with couples (a tap one chunk, stride 1, nine
        # taps: halo_a_quads), ~2 moves an operand into the mma's registers; per n8 tile and
        # k-step a B load and 2 mma, all x1.1 (2026-12-04: from the first ldmatrix to the last
        # mma 173-202 instructions at Cg = 4 and 8, 126-142 at 16, 239-262 at 32, 131-134 at
        # stride 2, Cg = 4 and 8, where this counts 180, 180, 145, 264 and 145; each 30-45 fewer
        # than before the epilogue loaded the bias, which ptxas had hoisted there; the
        # fourteenth session's 215-227, 156-179, 267-288); per class the epilogue
        # (halo_epilogue_sass: conversion and staging store of each accumulator pair, the bias
        # where there is one); the staging loop a halo row and the store loop a tile row per
        # class, in passes of 32 lanes, as counted in the SASS (HALO_STAGE_ROW_SASS,
        # HALO_STORE_ROW_SASS); the packing a word as counted (HALO_PACK_WORD_SASS).
        issue=per_cta * (4 * (1.1 * ((a_loads + a_moves) * gg + 3 * kn * gg)
                              + classes * halo_epilogue_sass(cg, phases, bias))
                         + rows * halo_row_sass(HALO_STAGE_ROW_SASS, halo_row_passes(cols, slab))
                         + classes * 8 * HALO_STORE_ROW_SASS[(cg, phases)])
        + packs * words / 32 * pack_word_issue,
        mma_flops=per_cta * mma,
        # (Packing in the CTAs, the first slab's round trips overlap the first tile's halo.)
        chain_us=(per_cta + packs * pack_rounds - (0 if prepacked else min(1.0, pack_rounds)))
        * gpu.mem_latency_us,
        in_flight_bytes=halo_bytes)
    regs, source = resources.cuda_regs(f"fprop_halo_kernel<{{T}}, {cg}, {conv.stride}, {mode}, "
                                       f"{'true' if prepacked else 'false'}>", dtype, 128)
    main = Launch("fprop_halo", shape["grid_x"], shape["threads"], regs, shape["smem_bytes"], work,
                  dram_bytes=compulsory, mma_useful_flops=useful, resource_source=source)
    packing = [small_kernel("halo_pack", conv.w_elems() * e, shape["workspace_elems"] * 4)] if packs_in_call else []
    return simulate(gpu, f"cuda:{direction}_halo", direction, packing + [main])


# Warp instructions of wgrad_halo's loops (wgrad_halo_kernel<bf16, Cg, stride>, sm_90 SASS):
# its K-block loop (the smallest loop holding its MMAs: one K-block of a warp), by (Cg, stride;
# Cg = 64 is built for stride 1 only); its staging walks; the tile loop's own instructions
# beyond those loops (the wait, barrier, tile walk, loop setup); the cluster reduction's.
# scripts/cuda_resource_check.py recounts them from the build (the K-block loop within 5%, the
# others within 25%), so the issue term follows the code.
CUDA_WGRAD_HALO_KB_SASS = {
    (4, 1): 26, (4, 2): 26, (8, 1): 26, (8, 2): 26, (14, 1): 177, (14, 2): 177,
    (16, 1): 41, (16, 2): 44, (24, 1): 41, (24, 2): 41, (32, 1): 53, (32, 2): 53,
    (40, 1): 68, (40, 2): 68, (64, 1): 65,
}
# The staging loops (wgrad_halo_fragments.h, wh_walk_rows: a thread walks rows of copies): a
# pass of the inner loop (one copy: 12 in the SASS) and, once an image of the tile, the outer
# loop's own instructions (the inner loop's bounds and invariants), x's (28-41) and dy's (22-32).
WGRAD_HALO_WALK_PASS_SASS = 12
WGRAD_HALO_X_IMAGE_SASS = 36
WGRAD_HALO_DY_IMAGE_SASS = 28
WGRAD_HALO_TILE_SASS = 127     # the tile loop less its staging and K-block loops (123-132)
# The cluster reduction's loops, by Cg: one accumulator tile, which one warp adds (each lane its
# four sums: the splits' 16-byte loads unrolled and predicated, four weights' decode and
# stores), up to 8 splits and up to 16, recounted like the others.
WGRAD_HALO_CLUSTER_TILE_SASS = {4: (174, 238), 8: (141, 208), 14: (377, 440), 16: (157, 221),
                                24: (325, 426), 32: (161, 227), 40: (322, 427), 64: (196, 264)}
WGRAD_HALO_SASS_TOLERANCE = 0.25
# The cluster reduction's serial part: the cluster barrier after the sums (a release: the
# CTA's memory operations drain) and the loads from the cluster's shared memory, assumed a
# global load's round trip each (the distributed shared memory's latency is below that of L2).
WGRAD_HALO_CLUSTER_ROUND_TRIPS = 2


def wgrad_halo_frag_tiles(cg: int) -> int:
    """Accumulator tiles of a wgrad_halo CTA, the cluster reduction's units
    (wgrad_halo_fragments.h, wh_frag_tiles): (M tile, n8 tile) pairs, or columns x tap pairs."""
    mtiles, _, ntiles, _ = _wgrad_halo_tiling(cg)
    return wgrad_halo_columns(cg)[0] * 5 if cg == 14 else mtiles * ntiles


def _wgrad_halo_tiling(cg: int) -> Tuple[int, int, int, int]:
    """(M tiles of a block, CTAs sharing its N, n8 tiles a CTA, warps splitting K) of wgrad_halo
    (wgrad_halo_fragments.h: wh_mtiles, wh_nparts, wh_ntiles, wh_kwarps)."""
    if cg == 14:  # columns: a block of four groups, seven chunks, five tap pairs a chunk
        return 35, 1, 7, 1
    chunks = max(cg, 8) // 8
    mtiles, nparts = (9 * chunks + 1) // 2, 4 if cg == 64 else 1
    ntiles = chunks // nparts
    return mtiles, nparts, ntiles, 4 if mtiles * ntiles <= 20 else 1


def wgrad_halo_columns(cg: int, warps: int = 4) -> Tuple[int, int, int]:
    """wgrad_halo's columns at Cg = 14 (wgrad_halo_fragments.h, "Columns"): the (x chunk, dy n8
    tile) pairs of a four-group block that share a group, split among the warps in order and
    padded to the largest share. Returns (columns, columns a warp after padding, A loads a
    K-block over the warps: each warp's distinct chunks times the five tap pairs)."""
    block = 4 * cg
    cols = [(a, n) for a in range(block // 8)
            for n in range(8 * a // cg * cg // 8, ((8 * a + 7) // cg * cg + cg - 1) // 8 + 1)]
    shares = [cols[w * len(cols) // warps:(w + 1) * len(cols) // warps] for w in range(warps)]
    return len(cols), -(-len(cols) // warps), sum(5 * len({a for a, _ in s}) for s in shares)


def wgrad_halo_walk(per_row: int, image_rows: int, images: int, full: int, last_rows, step: int,
                    threads: int = 128, warps: int = 4) -> Tuple[int, int]:
    """A staging part's loops as wgrad_halo's warps run them (wgrad_halo_fragments.h: wh_walk,
    wh_place, wh_walk_rows): thread t copies position t % per_row of rows t // per_row, + step,
    ... (threads from step * per_row on idle), image after image; the first `full` images have
    image_rows rows, a last one last_rows(position) (dy's padding rows). Returns (outer-loop
    iterations, inner-loop passes), summed over the warps: every warp runs the image loop (dy's
    padding row counted for every warp, though only the lanes of its first 8 columns run it),
    and a warp's passes in an image are its busiest lane's rows there."""
    outer, inner = warps * images, 0
    for w in range(warps):
        for img in range(images):
            lo = img * image_rows
            most = 0
            for t in range(w * threads // warps, (w + 1) * threads // warps):
                if t >= step * per_row:
                    continue
                row0, pos = divmod(t, per_row)
                hi = lo + (image_rows if img < full else last_rows(pos))
                first = row0 if row0 >= lo else row0 + -(-(lo - row0) // step) * step
                most = max(most, 0 if first >= hi else -(-(hi - first) // step))
            inner += most
    return outer, inner


def wgrad_halo_staging_sass(cg: int, shape: dict) -> float:
    """Warp instructions of one tile's staging loops, all four warps: the x halo's ti images of
    xr rows of xs * chunks copies, then dy's K rows of tcp * ntiles copies (16 kb pixels: the
    padding half's row after the images), each walked as wgrad_halo_walk says."""
    _, _, ntiles, _ = _wgrad_halo_tiling(cg)
    chunks = shape["tile_channels"] // 8
    ti, tr, tcp = shape["tile_images"], shape["tile_rows"], -(-shape["tile_cols"] // 8) * 8
    xr, xs, pixels = shape["halo_rows"], shape["halo_slots"], 16 * shape["tile_ksteps"]

    def last(pos: int) -> int:   # a K column's rows after the images
        return -(-(pixels - pos // ntiles) // tcp) - ti * tr

    x = wgrad_halo_walk(xs * chunks, xr, ti, ti, lambda pos: xr, 128 // (xs * chunks))
    dy = wgrad_halo_walk(tcp * ntiles, tr, ti + (last(0) > 0), ti, last, 128 // (tcp * ntiles))
    return (x[0] * WGRAD_HALO_X_IMAGE_SASS + dy[0] * WGRAD_HALO_DY_IMAGE_SASS
            + (x[1] + dy[1]) * WGRAD_HALO_WALK_PASS_SASS)


def cuda_wgrad_halo(conv: Conv, gpu: GPU, shape: dict, resources: Resources,
                    dtype: str = "bf16") -> Prediction:
    """wgrad_halo (csrc/kernels/wgrad_halo.cu, wgrad_halo_fragments.h): CTAs own a channel block
    and a split of the tiles (ti images x tr rows x tc columns of dy, the launch shape's); each
    tile's x halo and dy pixels are copied once from L2 into a ring of shared-memory stages,
    ldmatrix.trans feeds mma.sync with K = pixels (rows padded to 8), the sums stay in registers
    for the split, and the splits are added in split order: by the CTAs of a thread-block
    cluster through their shared memory where the shape says one launch (sm_90: no partials,
    no second launch), else by wgrad_reduce from partials. Shared-memory wavefronts per K-block as
    counted by csrc/tests/test_wgrad_halo.cpp through the kernel's own maps (no conflicts; the
    copies at most twice their minimum where a pixel is several chunks)."""
    e = conv.elem_size
    cg, block, stride = conv.cg, shape["tile_channels"], conv.stride
    mtiles, nparts, ntiles, kwarps = _wgrad_halo_tiling(cg)
    # The tile (wh_geom): ti images x tr rows x tc columns of dy; a tile image's x halo of xr rows
    # and xc columns staged in rows of xs slots; kb K-blocks of 16 pixels (rows padded to 8).
    ti, tr, tc = shape["tile_images"], shape["tile_rows"], shape["tile_cols"]
    xr, xc, xs, kb = shape["halo_rows"], shape["halo_cols"], shape["halo_slots"], shape["tile_ksteps"]
    splits, chunks = shape["splits"], block // 8
    tiles_p, tiles_q, groups = -(-conv.p // tr), -(-conv.q // tc), -(-conv.n // ti)
    tiles = groups * tiles_p * tiles_q
    per_cta = tiles / splits                       # every block walks all tiles, split `splits` ways
    images = conv.n / groups                       # images a tile holds, on average
    in_h = _in_bounds_1d(tiles_p, tr, stride, conv.pad, xr, conv.h) / tiles_p
    in_w = _in_bounds_1d(tiles_q, tc, stride, conv.pad, xc, conv.w) / tiles_q
    dy_px = conv.n * conv.p * conv.q / tiles                   # in-bounds dy pixels of a tile
    tile_bytes = (images * in_h * in_w * block + dy_px * block / nparts) * e   # dy: the CTA's N part
    x_copies, dy_copies = ti * xr * xs * chunks, 16 * kb * ntiles
    copy_waves = (x_copies + dy_copies) / 8 * (1.0 if chunks == 1 else 2.0)
    stages = shape["stages"]
    if cg == 14:  # columns: each warp's columns (padded) x five tap pairs; B one x2 a column
        _, per_warp, a_per_kb = wgrad_halo_columns(cg)
        smem_kb = 4 * a_per_kb + 4 * per_warp * 2
        mmas_kb = 4 * per_warp * 5
    else:         # KW = 4: a K-block is one warp's; KW = 1: every warp's (its M tiles)
        b_waves = 2 * ntiles * (4 if kwarps == 1 else 1)
        smem_kb = 4 * mtiles + b_waves
        mmas_kb = mtiles * ntiles
    warps_kb = 1 if kwarps == 4 else 4             # warps that run each K-block
    # The cluster reduction (one launch): a CTA stores each of its accumulator tiles (4
    # wavefronts: a lane's four as 16 bytes) and adds its share of them over the cluster, a warp
    # a tile, 4 wavefronts a split (16 bytes a lane; the loads of all the shares: 4 wavefronts a
    # tile again); two round trips.
    cluster = shape["launches"] == 1
    red_tiles = wgrad_halo_frag_tiles(cg) / splits if cluster else 0.0
    work = CtaWork(
        l2_bytes=per_cta * tile_bytes,
        smem_wavefronts=per_cta * (kb * smem_kb + copy_waves) + 8 * red_tiles * splits,
        # Warp instructions: the K-block loop once a K-block for each warp that runs it, the
        # staging loops as the warps run them, and the tile loop's own, each warp.
        issue=per_cta * (kb * warps_kb * CUDA_WGRAD_HALO_KB_SASS[(cg, stride)]
                         + wgrad_halo_staging_sass(cg, shape) + 4 * WGRAD_HALO_TILE_SASS)
        + red_tiles * WGRAD_HALO_CLUSTER_TILE_SASS[cg][splits > 8],
        mma_flops=per_cta * kb * mmas_kb * 4096.0,
        chain_us=(per_cta / (stages - 1) + (WGRAD_HALO_CLUSTER_ROUND_TRIPS if cluster else 0))
        * gpu.mem_latency_us,
        in_flight_bytes=(stages - 1) * tile_bytes)
    regs, source = resources.cuda_regs(f"wgrad_halo_kernel<{{T}}, {cg}, {stride}>", dtype, 128)
    partials = 0 if cluster else splits * conv.w_elems() * 4
    main = Launch("wgrad_halo", shape["grid_x"], shape["threads"], regs, shape["smem_bytes"], work,
                  dram_bytes=conv.min_bytes() - (0 if cluster else conv.w_elems() * e) + partials,
                  mma_useful_flops=conv.flops(), resource_source=source)
    if cluster:   # the weights are stored by the reduction: the compulsory bytes hold them
        return simulate(gpu, "cuda:wgrad_halo", "wgrad", [main])
    reduce = small_kernel("wgrad_reduce", partials, conv.w_elems() * e)
    return simulate(gpu, "cuda:wgrad_halo", "wgrad", [main, reduce])


CUDA_MODELS = {"direct": cuda_direct, "smem": cuda_smem, "mma": cuda_mma, "halo": cuda_halo}


def halo_prepacked(direction: str, frozen: bool = False) -> bool:
    """Whether a halo rung runs on a weight packed before its launch (pack_weight) as the
    benchmark times it: dgrad on the buffer its forward pass packed (ops.py), a frozen
    module's fprop on the one it kept (frozen.py); fprop alone packs in its CTAs."""
    return direction == "dgrad" or (direction == "fprop" and frozen)


def cuda_variant(name: str, conv: Conv, direction: str, gpu: GPU, resources: Resources = NO_RESOURCES,
                 dtype: str = "bf16", shape: Optional[dict] = None, frozen: bool = False) -> Prediction:
    """The prediction for CUDA registry variant `name` ("fprop_mma", ...); `frozen`: fprop of a
    frozen module in inference (the halo rung then reads the weight it kept packed)."""
    family = name.split("_", 1)[1]
    prepacked = family == "halo" and halo_prepacked(direction, frozen)
    shape = shape or cuda_shape(name, conv, gpu, dtype, packed=prepacked)
    if shape["can_implement"]:
        return Prediction(f"cuda:{name}", direction, math.inf, "refused: " + shape["can_implement"],
                          {}, 0, 0, 0, 0, 0, 0, 0, "", 0, 0, 0, 0, "registry")
    if family == "halo" and direction != "wgrad":
        in_call = direction == "fprop" and not prepacked and shape["launches"] == 2
        return cuda_halo(conv, direction, gpu, shape, resources, dtype, prepacked=prepacked or in_call,
                         packs_in_call=in_call, bias=frozen and direction == "fprop")
    return CUDA_MODELS[family](conv, direction, gpu, shape, resources, dtype)


def cuda_variants(conv: Conv, direction: str, gpu: GPU, resources: Resources = NO_RESOURCES,
                  dtype: str = "bf16", frozen: bool = False) -> List[Prediction]:
    """Every registry variant of `direction` (empty without a CUDA build)."""
    from ._native import _C

    if _C is None or not _C.built_with_cuda():
        return []
    return [cuda_variant(v["name"], conv, direction, gpu, resources, dtype, frozen=frozen)
            for v in _C.variants() if v["direction"] == direction]


def within(measured: float, predicted: float, low: float = 0.67, high: float = 1.5) -> bool:
    """Whether measured / predicted lies in [low, high] (the calibration criterion)."""
    return predicted > 0 and math.isfinite(predicted) and low <= measured / predicted <= high


__all__ = ["BEFORE_07A4ED9", "BEFORE_EXACT_TAPS", "BEFORE_FORWARD_PACK", "CALIBRATION",
           "CURRENT_TRITON", "Conv", "CtaWork",
           "GPU", "GPUS", "Launch", "Prediction", "Resources", "TritonConfig", "TritonRevision", "bank_wavefronts",
           "ctas_per_sm", "cuda_variant", "cuda_variants", "l1_wavefronts", "sectors", "simulate",
           "strip_footprint", "triton_gather", "triton_measured_variant", "triton_variants", "triton_wgrad",
           "valid_tap_fraction", "within"]
