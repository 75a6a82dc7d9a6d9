"""Shared pieces of the Triton backend: interpreter detection, tile choice, launch helpers.

Group packing
-------------
A grouped convolution is G independent GEMMs, each tiny when Cg is small (Cg = 4 in
ResNeXt-50 32x4d). A tensor-core `tl.dot` needs every block dimension to be at least 16, so a
program packs GP consecutive groups into one block-diagonal GEMM:

    reduction block (GP*Cg wide)  x  weight block (GP*Cg, GP*Kg), zero off the diagonal

      c ->  [g0 g0 g0 g0 | g1 g1 g1 g1 | ...]       weight tile, GP = 2, Cg = Kg = 4:
                                                     [W0  0 ]
                                                     [ 0  W1]

The input tile is then GP*Cg contiguous channels (one 64-byte row for bf16 channels_last at
Cg = 4, GP = 8), the off-diagonal products are wasted tensor-core work, and tensor cores have
far more headroom than memory on these layers (DESIGN.md: 18 FLOP/byte at Cg = 4 against a
ridge of 270), so the waste costs nothing measurable while the contiguous loads are what count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# RESNEXT_KERNELS_TRITON_AUTOTUNE=0 runs each kernel's first configuration instead of
# autotuning: every new constexpr combination costs a compile per configuration (about 1-2 s
# each), which a test run over many shapes cannot afford.
AUTOTUNE = os.environ.get("RESNEXT_KERNELS_TRITON_AUTOTUNE", "1") != "0"

# Smallest block dimension a tensor-core dot accepts on sm_80/sm_90.
MIN_DOT = 16
# Widest channel block a program reduces over in one step, and the widest output block.
MAX_RED_BLOCK = 64
MAX_OUT_BLOCK = 128
# Packing stops at this many channels (reduction or output) per program: 32 keeps the
# block-diagonal weight tile at 32x32 for Cg = Kg = 4 (GP = 8), i.e. 8x tensor-core work for
# one 64-byte bf16 channels_last row per pixel.
PACK_WIDTH = 32
# A pack grows to whole reduction blocks (choose_group_tile) up to this many channels. Ranked by
# the performance model (H200, batch 64, predictions): 80-channel packs take 2x40d's gather
# from 1.80 to 1.54 ms (fprop) and 48-channel ones 4x24d's from 1.52 to 1.09; 8x14d's
# 112-channel packs would take it from 1.49 to 1.65 (16-wide steps, 128-wide output blocks
# that only the small configurations hold in registers), so Cg = 14 keeps its masked tiles.
MAX_FILLED_PACK = 80


@dataclass(frozen=True)
class GroupTile:
    """How a program covers the groups: GP groups packed, red/out block sizes (powers of 2)."""

    groups_per_prog: int
    block_red: int  # reduction block over GP*red_width channels
    block_out: int  # output block over GP*out_width channels

    def even_red(self, red_width: int, groups: int) -> bool:
        """Every reduction block of every pack is full (no channel mask needed)."""
        return (self.groups_per_prog * red_width) % self.block_red == 0 and groups % self.groups_per_prog == 0

    def even_out(self, out_width: int, groups: int) -> bool:
        """Every output block of every pack is full."""
        return (self.groups_per_prog * out_width) % self.block_out == 0 and groups % self.groups_per_prog == 0


def choose_group_tile(red_width: int, out_width: int, groups: int,
                      fill_blocks: bool = True) -> GroupTile:
    """Tile for a per-group GEMM whose reduction runs over `red_width` channels (per tap) and
    whose output has `out_width` channels, for `groups` groups.

    A pack's reduction channels are whole blocks where they can be (even_red): a reduction block
    that runs past the pack's channels is loaded masked, element by element, and at the paper's
    widths 14, 24 and 40 those tiles spilled (scripts/triton_compile_check.py: 1-5 KB stack
    frames at Cg = 40). So when GP * red_width is not a multiple of MIN_DOT, GP grows to the
    smallest divisor of `groups` that makes it one, up to MAX_FILLED_PACK channels (Cg = 40:
    two groups, 80 channels; Cg = 24: two, 48; not Cg = 14, which would need eight), and the
    block is the largest power of two (at most MAX_RED_BLOCK) that divides the pack's channels
    (16 for 80, 112 and 48; 32 for 160).
    wgrad passes fill_blocks=False (wgrad.group_tile): its channel tiles are its output, and
    narrower ones make more programs re-read dy (the model puts 2x40d's wgrad at 1.9x its time
    that way).
    perf_model.triton_group_tile is the same rule without triton."""
    widest = max(red_width, out_width)
    gp = max(1, min(groups, PACK_WIDTH // widest))
    if fill_blocks and (gp * red_width) % MIN_DOT:
        gp = next((k for k in range(gp + 1, groups + 1)
                   if groups % k == 0 and (k * red_width) % MIN_DOT == 0
                   and k * red_width <= MAX_FILLED_PACK), gp)
    red = gp * red_width
    block_red = min(MAX_RED_BLOCK, max(MIN_DOT, triton.next_power_of_2(red)))
    if fill_blocks and red % MIN_DOT == 0:
        while red % block_red:
            block_red //= 2
    block_out = min(MAX_OUT_BLOCK, max(MIN_DOT, triton.next_power_of_2(gp * out_width)))
    return GroupTile(gp, block_red, block_out)


# The autotuner times only the configurations the performance model ranks best: the top
# PRUNE_FRACTION of the space (at least PRUNE_KEEP), and none predicted over PRUNE_RATIO times
# its best. Checked on H200 run 3 (benchmarks/results/H200_2026-11-28_0636/tune.json, 12
# configurations per layer and layout, predicted with the code that ran): keeping the model's
# top 4 cost 1.9% on average against the measured best and 23% at worst, its top 3 3.1% and
# 28%; so a third of the space is dropped, not more, until the model ranks finer.
PRUNE_FRACTION = 2 / 3
PRUNE_KEEP = 3
PRUNE_RATIO = 1.5


# Numerators divisor_magic serves: below 2^MAGIC_BITS (positions N*P*Q of a launch).
MAGIC_BITS = 30


def divisor_magic(d: int):
    """(m, s) with x // d == (x * m) >> s for every 0 <= x < 2^MAGIC_BITS, m < 2^31 (a 32-bit
    kernel argument): s = MAGIC_BITS + ceil(log2 d) and m = ceil(2^s / d). Then m d - 2^s < d
    <= 2^ceil(log2 d), so x (m d - 2^s) / (d 2^s) < 1 / d and the floor is x // d's
    (Granlund and Montgomery's round-up multiplier)."""
    if d < 1:
        raise ValueError(f"divisor_magic: the divisor must be positive, got {d}")
    s = MAGIC_BITS + (d - 1).bit_length()
    return -(-(1 << s) // d), s


def prune_by_model(configs, predict, gpu_name):
    """The configurations worth timing (see PRUNE_FRACTION), in the space's order, from
    `predict(config, gpu)` (microseconds); all of them on a GPU the model does not describe."""
    import math

    from .. import perf_model

    key = perf_model.gpu_key(gpu_name)
    if key is None or len(configs) <= PRUNE_KEEP:
        return list(configs)
    gpu = perf_model.GPUS[key]
    times = [predict(c, gpu) for c in configs]
    ranked = sorted(range(len(configs)), key=lambda i: times[i])
    count = max(PRUNE_KEEP, math.ceil(PRUNE_FRACTION * len(configs)))
    best = times[ranked[0]]
    keep = {i for i in ranked[:count] if times[i] <= PRUNE_RATIO * best} | {ranked[0]}
    return [c for i, c in enumerate(configs) if i in keep]


def device_name(t: torch.Tensor) -> str:
    return torch.cuda.get_device_name(t.device) if t.device.type == "cuda" else ""


def device_arch(t: torch.Tensor) -> int:
    """Compute capability as an integer (90 for sm_90); 0 off the GPU."""
    if t.device.type != "cuda":
        return 0
    major, minor = torch.cuda.get_device_capability(t.device)
    return 10 * major + minor


def conv_output_hw(h, w, stride, padding, dilation, kernel=(3, 3)):
    """(P, Q) of a convolution; the formula of conv_problem.h."""
    p = (h + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    q = (w + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    return p, q


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision: TF32 for fp32 only when PyTorch allows it for convolutions."""
    if dtype == torch.float32 and not torch.backends.cudnn.allow_tf32:
        return "ieee"
    return "tf32"


def torch_acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 accumulation for fp32/fp16/bf16; fp64 inputs (gradcheck) keep fp64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """channels_last when `t` is channels_last and not also contiguous (as the C++ ops do)."""
    if not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def empty(shape, dtype, device, memory_format=torch.contiguous_format):
    """Every output and scratch buffer of the Triton backend is allocated here, so that the
    tests can swap in a NaN-filled allocation and catch elements a kernel never writes."""
    return torch.empty(tuple(shape), dtype=dtype, device=device, memory_format=memory_format)


class TunedKernel:
    """A kernel with its autotune space. On a GPU `launch` autotunes over `configs` (or runs
    `configs[0]` when AUTOTUNE is off); in the interpreter (where autotune cannot run) it uses
    `interpreter_config`; a test can pin any configuration with `config=` (to run every one the
    autotuner might pick)."""

    def __init__(self, jit_fn, configs, key, interpreter_config, prune=None):
        self.jit_fn = jit_fn
        self.configs = configs
        self.key = key
        self.interpreter_config = interpreter_config
        # `prune(configs, named_args, **meta)`: the configurations worth timing for one launch,
        # chosen by the performance model before anything compiles (prune_by_model).
        pruning = {"early_config_prune": prune} if prune is not None else None
        self.autotuned = (triton.autotune(configs=configs, key=key, prune_configs_by=pruning)(jit_fn)
                          if AUTOTUNE and not INTERPRET else None)

    def tuned_configs(self) -> dict:
        """The autotuner's choice per key so far (empty without autotuning), as strings."""
        cache = getattr(self.autotuned, "cache", None) or {}
        return {key: str(config) for key, config in cache.items()}

    def launch(self, grid, args, kwargs, *, wrap=lambda k: k, config=None):
        if config is not None:
            meta = {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}
            return wrap(self.jit_fn)[grid](*args, **kwargs, **meta)
        if INTERPRET:
            return wrap(self.jit_fn)[grid](*args, **kwargs, **self.interpreter_config)
        if self.autotuned is None:
            return self.launch(grid, args, kwargs, wrap=wrap, config=self.configs[0])
        return wrap(self.autotuned)[grid](*args, **kwargs)
