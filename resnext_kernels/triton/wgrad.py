"""Triton wgrad: the gradient of the weight, a long reduction split across programs.

    dw[k, c, r, s] = sum_{n, p, q} dy[n, k, p, q] * x[n, g*Cg + c, p*sh - ph + r*dh, q*sw - pw + s*dw]

Per-group GEMM: M = Kg, N = Cg (per tap), K = N*P*Q: a tiny output over a reduction of up to
200k positions (ResNeXt-50 stage 1 at batch 64), so the reduction is cut into SPLITS contiguous
chunks. Program (split, tap * k tiles * c tiles, pack) computes

    dy tile^T (BLOCK_KO, BLOCK_M)  @  x tile (BLOCK_M, BLOCK_C)   for BLOCK_M positions at a time

over its chunk, packing GP groups block-diagonally as fprop does, and writes its fp32 partial
sums (diagonal blocks only) to partials[split]. The splits are then added inside the same
launch: each program counts itself done on its tile's counter (an atomic add, acquire-release),
and the last of a tile's SPLITS programs to finish adds partials[0 .. SPLITS-1] in index order,
casts to the weight's dtype, writes dw, and resets the counter to zero. Whoever finishes last,
the sum is taken in the same order: two runs are bitwise equal. (Before, partials.sum(0) and a
cast ran as two more launches.)

With ALL_TAPS (one program, nine taps) the loop is unpipelined and its x loads can hit L1 (see
the kernel). Predicted by resnext_kernels/perf_model.py, not measured (H200, ResNeXt-50 32x4d at
batch 64, bf16, ALL_TAPS, which choose_all_taps takes there on an H200), us per layer stage1 /
2.entry / 2 / 3.entry / 3 / 4.entry / 4: 60 / 53 / 32 / 27 / 22 / 16 / 13; bound by
instruction issue, and by L2 at the entries (benchmarks/NOTES.md, 2026-12-02).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from . import common


@triton.jit
def _in_range(v, size):
    """0 <= v < size, as one unsigned comparison (a negative v wraps past size)."""
    return v.to(tl.uint32) < size.to(tl.uint32)


@triton.jit
def _tap_product(dy_t, x_ptr, x_rows, ok, x_chan, c_ok, EVEN_C: tl.constexpr,
                 PRECISION: tl.constexpr):
    """dy_t (BLOCK_KO, BLOCK_M) @ the x tile one tap pairs with those positions: x_rows are the
    element offsets of each position's source pixel for that tap, ok where it exists (else
    zero, padding), x_chan the channel offsets."""
    x_mask = ok[:, None] if EVEN_C else ok[:, None] & c_ok[None, :]
    xt = tl.load(x_ptr + x_rows[:, None] + x_chan[None, :], mask=x_mask,
                 other=0.0)                                          # (BLOCK_M, BLOCK_C)
    return tl.dot(dy_t, xt, input_precision=PRECISION)                # (BLOCK_KO, BLOCK_C)


@triton.jit
def _store_partial(part_ptr, acc, split, tap, offs_k, k_glob, k_ok, offs_c, c_ok, G, CG, KG):
    """Writes the diagonal blocks of one tap's partial sums (k and c in the same group: only
    those are weight gradients) to partials[split, k, c, tap]."""
    diag = (offs_k // KG)[:, None] == (offs_c // CG)[None, :]
    c_in = offs_c % CG
    out = (split * (G * KG) + k_glob)[:, None].to(tl.int64) * (CG * 9) + c_in[None, :] * 9 + tap
    tl.store(part_ptr + out, acc, mask=diag & k_ok[:, None] & c_ok[None, :])


@triton.jit
def _reduce_splits(part_ptr, dw_ptr, SPLITS, tap, offs_k, k_glob, k_ok, offs_c, c_ok, G, CG, KG):
    """dw[k, c, tap] = sum over s = 0 .. SPLITS-1 of partials[s, k, c, tap], in that order, for
    this program's diagonal blocks; cast to dw's dtype."""
    diag = (offs_k // KG)[:, None] == (offs_c // CG)[None, :]
    mask = diag & k_ok[:, None] & c_ok[None, :]
    c_in = offs_c % CG
    elem = k_glob[:, None].to(tl.int64) * (CG * 9) + c_in[None, :] * 9 + tap   # [K, Cg, 3, 3]
    total = tl.load(part_ptr + elem, mask=mask, other=0.0, cache_modifier=".cg")
    for split in range(1, SPLITS):
        total += tl.load(part_ptr + split * (G * KG * CG * 9) + elem, mask=mask, other=0.0,
                         cache_modifier=".cg")
    tl.store(dw_ptr + elem, total.to(dw_ptr.dtype.element_ty), mask=mask)


# Sizes and geometry are not specialised, strides are (see fprop.py).
@triton.jit(do_not_specialize=["BATCH", "H", "W", "P", "Q", "G", "CHUNK", "SPLITS", "MAGIC_Q",
                               "SHIFT_Q", "MAGIC_PQ", "SHIFT_PQ", "stride_h", "stride_w", "pad_h",
                               "pad_w", "dil_h", "dil_w"])
def _wgrad_partial_kernel(
    # partials: [SPLITS, K, Cg, 3, 3] fp32 scratch; counters: one int32 per tile (all splits of
    # one (tap, k, c tile, pack)), zero on entry and reset to zero on exit; dw: [K, Cg, 3, 3].
    x_ptr, dy_ptr, part_ptr, counter_ptr, dw_ptr,
    # Sizes: batch, input grid, output grid, groups, Cg, Kg, reduction positions per split, and
    # the number of splits.
    BATCH, H, W, P, Q, G, CG, KG, CHUNK, SPLITS,
    # x // Q and x // (P*Q) for positions x < 2^30 as (x * MAGIC) >> SHIFT (divisor_magic).
    MAGIC_Q, SHIFT_Q, MAGIC_PQ, SHIFT_PQ,
    # Element strides in logical order: x (n, c, h, w), dy (n, k, p, q); partials are a
    # contiguous [SPLITS, K, Cg, 3, 3] buffer in the accumulator dtype.
    s_x_n, s_x_c, s_x_h, s_x_w,
    s_dy_n, s_dy_k, s_dy_p, s_dy_q,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    GP: tl.constexpr, BLOCK_KO: tl.constexpr, BLOCK_C: tl.constexpr,
    ALL_TAPS: tl.constexpr,         # one program computes all 9 taps (dy tile read once)
    FAST_DIV: tl.constexpr,         # N*P*Q < 2^30: positions split by MAGIC_Q, MAGIC_PQ
    # Every k (c) block is full: no channel mask on the dy (x) loads, which Triton can then
    # vectorise (see fprop.py).
    EVEN_KO: tl.constexpr, EVEN_C: tl.constexpr,
    PRECISION: tl.constexpr,
    ACC_FP64: tl.constexpr,         # accumulate in fp64 (fp64 inputs, for gradcheck), else fp32
    BLOCK_M: tl.constexpr,
):
    # Splits vary fastest in launch order. A build with taps fastest (meant to share each dy
    # chunk through L2) and one pipeline depth fewer ran stage 1 of ResNeXt-50 32x4d at 0.70 ms
    # against 0.24 ms for this one on the H100 (2026-11-28); the two causes are not separated.
    split = tl.program_id(0)
    pid_t = tl.program_id(1)
    pack = tl.program_id(2)
    pack_k = GP * KG
    ko_tiles = tl.cdiv(pack_k, BLOCK_KO)
    c_tiles = tl.cdiv(GP * CG, BLOCK_C)
    tap = 0 if ALL_TAPS else pid_t // (ko_tiles * c_tiles)
    ko_tile = (pid_t // c_tiles) % ko_tiles
    c_tile = pid_t % c_tiles

    offs_k = ko_tile * BLOCK_KO + tl.arange(0, BLOCK_KO)               # (BLOCK_KO,)
    k_glob = pack * pack_k + offs_k
    k_ok = (offs_k < pack_k) & (k_glob < G * KG)
    offs_c = c_tile * BLOCK_C + tl.arange(0, BLOCK_C)                  # (BLOCK_C,)
    c_glob = pack * GP * CG + offs_c
    c_ok = (offs_c < GP * CG) & (c_glob < G * CG)
    x_chan = c_glob.to(tl.int64) * s_x_c

    npq = BATCH * P * Q
    begin = split * CHUNK
    end = tl.minimum(begin + CHUNK, npq)
    acc_dtype = tl.float64 if ACC_FP64 else tl.float32
    # One accumulator per tap this program computes (ALL_TAPS: nine, named by (r, s)).
    acc00 = tl.zeros((BLOCK_KO, BLOCK_C), dtype=acc_dtype)
    if ALL_TAPS:
        acc01 = tl.zeros((BLOCK_KO, BLOCK_C), dtype=acc_dtype)
        acc02 = tl.zeros((BLOCK_KO, BLOCK_C), dtype=acc_dtype)
        acc10 = tl.zeros((BLOCK_KO, BLOCK_C), dtype=acc_dtype)
        acc11 = tl.zeros((BLOCK_KO, BLOCK_C), dtype=acc_dtype)
        acc12 = tl.zeros((BLOCK_KO, BLOCK_C), dtype=acc_dtype)
        acc20 = tl.zeros((BLOCK_KO, BLOCK_C), dtype=acc_dtype)
        acc21 = tl.zeros((BLOCK_KO, BLOCK_C), dtype=acc_dtype)
        acc22 = tl.zeros((BLOCK_KO, BLOCK_C), dtype=acc_dtype)
    for m0 in range(begin, end, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)                            # (BLOCK_M,)
        m_ok = offs_m < end
        if FAST_DIV:
            # (n, p, q) of each position by two multiplies (a runtime divisor took a reciprocal
            # a step and a division's fix-ups per element: 3 divisions, ~70 of 601 warp
            # instructions a step at M64w4).
            row = ((offs_m.to(tl.int64) * MAGIC_Q) >> SHIFT_Q).to(tl.int32)        # x // Q
            n32 = ((offs_m.to(tl.int64) * MAGIC_PQ) >> SHIFT_PQ).to(tl.int32)     # x // (P*Q)
            q = offs_m - row * Q
            p = row - n32 * P
            n = n32.to(tl.int64)
        else:
            q = offs_m % Q
            p = (offs_m // Q) % P
            n = (offs_m // (Q * P)).to(tl.int64)
        dy_mask = m_ok[None, :] if EVEN_KO else k_ok[:, None] & m_ok[None, :]
        dy_t = tl.load(dy_ptr + (n * s_dy_n + p * s_dy_p + q * s_dy_q)[None, :]
                       + k_glob[:, None].to(tl.int64) * s_dy_k,
                       mask=dy_mask, other=0.0)                        # (BLOCK_KO, BLOCK_M)
        h0 = p * stride_h - pad_h
        w0 = q * stride_w - pad_w
        x_rows = n * s_x_n + h0 * s_x_h + w0 * s_x_w        # (BLOCK_M,): tap (0, 0)'s pixels
        if ALL_TAPS:
            # A tap moves every position's source pixel by one scalar (r*dil_h rows, s*dil_w
            # columns), and its validity is a row check and a column check, each computed once
            # a step for the three r and the three s (the loop body's sm_90 SASS at Cg = 4,
            # M64w4: 805 -> 650 warp instructions).
            h_ok0 = m_ok & _in_range(h0, H)
            h_ok1 = m_ok & _in_range(h0 + dil_h, H)
            h_ok2 = m_ok & _in_range(h0 + 2 * dil_h, H)
            w_ok0 = _in_range(w0, W)
            w_ok1 = _in_range(w0 + dil_w, W)
            w_ok2 = _in_range(w0 + 2 * dil_w, W)
            step_h = dil_h * s_x_h                         # one tap row down
            step_w = dil_w * s_x_w                         # one tap column right
            # Each tap's product sits in an `if` of its own, under a condition that always holds
            # (CHUNK >= 1) and differs per tap, so that nothing merges the nine. Nine dots that
            # share the dy operand in one region make Triton's layout pass give each
            # warpsPerCTA = [num_warps, 1]: 4 warps then hold a 32-row accumulator twice over
            # (255 registers and a stack frame, 2026-12-02); a dot alone in its region is laid
            # out [2, 2] (148-196 registers, no frame; sm_90 bf16). The regions also keep Triton
            # from pipelining the loop: x comes through plain loads, and the nine taps' rows,
            # which overlap, hit L1 (the L1 path of fprop.py, without its prefetch).
            if CHUNK > -1:
                acc00 += _tap_product(dy_t, x_ptr, x_rows, h_ok0 & w_ok0,
                                      x_chan, c_ok, EVEN_C, PRECISION)
            if CHUNK > -2:
                acc01 += _tap_product(dy_t, x_ptr, x_rows + step_w, h_ok0 & w_ok1,
                                      x_chan, c_ok, EVEN_C, PRECISION)
            if CHUNK > -3:
                acc02 += _tap_product(dy_t, x_ptr, x_rows + (2 * step_w), h_ok0 & w_ok2,
                                      x_chan, c_ok, EVEN_C, PRECISION)
            if CHUNK > -4:
                acc10 += _tap_product(dy_t, x_ptr, x_rows + step_h, h_ok1 & w_ok0,
                                      x_chan, c_ok, EVEN_C, PRECISION)
            if CHUNK > -5:
                acc11 += _tap_product(dy_t, x_ptr, x_rows + (step_h + step_w), h_ok1 & w_ok1,
                                      x_chan, c_ok, EVEN_C, PRECISION)
            if CHUNK > -6:
                acc12 += _tap_product(dy_t, x_ptr, x_rows + (step_h + 2 * step_w), h_ok1 & w_ok2,
                                      x_chan, c_ok, EVEN_C, PRECISION)
            if CHUNK > -7:
                acc20 += _tap_product(dy_t, x_ptr, x_rows + (2 * step_h), h_ok2 & w_ok0,
                                      x_chan, c_ok, EVEN_C, PRECISION)
            if CHUNK > -8:
                acc21 += _tap_product(dy_t, x_ptr, x_rows + (2 * step_h + step_w), h_ok2 & w_ok1,
                                      x_chan, c_ok, EVEN_C, PRECISION)
            if CHUNK > -9:
                acc22 += _tap_product(dy_t, x_ptr, x_rows + (2 * step_h + 2 * step_w),
                                      h_ok2 & w_ok2, x_chan, c_ok, EVEN_C, PRECISION)
        else:
            r = tap // 3
            s = tap % 3
            ok = m_ok & _in_range(h0 + r * dil_h, H) & _in_range(w0 + s * dil_w, W)
            acc00 += _tap_product(dy_t, x_ptr, x_rows + (r * dil_h * s_x_h + s * dil_w * s_x_w), ok,
                                  x_chan, c_ok, EVEN_C, PRECISION)

    _store_partial(part_ptr, acc00, split, tap, offs_k, k_glob, k_ok, offs_c, c_ok, G, CG, KG)
    if ALL_TAPS:
        _store_partial(part_ptr, acc01, split, 1, offs_k, k_glob, k_ok, offs_c, c_ok, G, CG, KG)
        _store_partial(part_ptr, acc02, split, 2, offs_k, k_glob, k_ok, offs_c, c_ok, G, CG, KG)
        _store_partial(part_ptr, acc10, split, 3, offs_k, k_glob, k_ok, offs_c, c_ok, G, CG, KG)
        _store_partial(part_ptr, acc11, split, 4, offs_k, k_glob, k_ok, offs_c, c_ok, G, CG, KG)
        _store_partial(part_ptr, acc12, split, 5, offs_k, k_glob, k_ok, offs_c, c_ok, G, CG, KG)
        _store_partial(part_ptr, acc20, split, 6, offs_k, k_glob, k_ok, offs_c, c_ok, G, CG, KG)
        _store_partial(part_ptr, acc21, split, 7, offs_k, k_glob, k_ok, offs_c, c_ok, G, CG, KG)
        _store_partial(part_ptr, acc22, split, 8, offs_k, k_glob, k_ok, offs_c, c_ok, G, CG, KG)

    # The last split of this tile to finish adds all of them (see the module docstring). The
    # atomic's release orders this program's partial stores before its count; the acquire of
    # the last one orders the others' stores before its loads (which bypass L1: .cg).
    tile_id = pid_t * tl.num_programs(2) + pack
    done = tl.atomic_add(counter_ptr + tile_id, 1, sem="acq_rel")
    if done == SPLITS - 1:
        if ALL_TAPS:
            for t in range(9):
                _reduce_splits(part_ptr, dw_ptr, SPLITS, t, offs_k, k_glob, k_ok, offs_c, c_ok, G, CG, KG)
        else:
            _reduce_splits(part_ptr, dw_ptr, SPLITS, tap, offs_k, k_glob, k_ok, offs_c, c_ok, G, CG, KG)
        tl.store(counter_ptr + tile_id, 0)


# Widest channel block (Cg or Kg) of a program. 64-wide tiles spilled in every configuration
# at Cg = 40 (1.3-4 KB frames: masked 64-wide operand tiles) and in some at Cg = 64
# (scripts/triton_compile_check.py, 2026-12-02); 32-wide ones do not, and every tile can then
# take ALL_TAPS, whose nine (BLOCK_KO, BLOCK_C) fp32 accumulators are 72 registers a thread at
# 4 warps at 32 x 32. Predicted (not measured) over the wgrad layers at batch 64 on the H200,
# against the 64-wide tiles: 2x40d 3.5 -> 1.8 ms, 4x24d 2.0 -> 1.2, 1x64d 2.3 -> 1.4.
MAX_BLOCK = 32

# BLOCK_M is the reduction step (positions per tl.dot). Chosen from tune_triton.py on the H200
# (benchmarks/results/H200_2026-11-28_0636): the configurations within ~10% of the best on the
# 32x4d layers, per tap layout; 8 warps lost everywhere but one. The first entry, the default
# when autotuning is off (the GPU tests), is the cheapest to compile. ALL_TAPS runs unpipelined
# (its taps' regions, above), so its space is num_stages=1 only: BLOCK_M 32 and 64 at 4 warps
# (2-3 CTAs an SM at 148-196 registers), 64 at 8 warps (104-120 registers, 2 CTAs), 128 at 4
# warps (the fewest instructions a position, 192 registers). Until 2026-12-02 it was pipelined
# (64w4s2, 64w4s3, 32w4s3), spilling; those are what was measured.
AUTOTUNE_CONFIGS = [
    triton.Config({"BLOCK_M": bm}, num_warps=nw, num_stages=ns)
    for bm, nw, ns in ((64, 4, 2), (128, 4, 3), (128, 4, 2), (64, 4, 3), (128, 8, 2))
]
ALL_TAPS_CONFIGS = [
    triton.Config({"BLOCK_M": bm}, num_warps=nw, num_stages=ns)
    for bm, nw, ns in ((64, 4, 1), (32, 4, 1), (64, 8, 1), (128, 4, 1))
]
AUTOTUNE_KEY = ["BATCH", "H", "W", "P", "Q", "G", "CG", "KG", "CHUNK", "s_x_c", "BLOCK_KO", "BLOCK_C",
                "ALL_TAPS"]
INTERPRETER_CONFIG = {"BLOCK_M": 64}

# ALL_TAPS by default from this many packed groups up (and tiles that fit), on a GPU the
# performance model does not describe. Measured on the H200 (2026-11-28), 32x4d at batch 64,
# with the all-taps code of then (pipelined, spilling): all taps 0.176 / 0.118 ms against one
# tap per program 0.241 / 0.205 ms on stages 1 and 2 (8 and 4 groups packed), but 0.087 against
# 0.070 ms on stage 3 (2 groups packed), where nine programs per chunk still find their x in L2.
# On a modelled GPU the model chooses (choose_all_taps): it puts today's all-taps code (tap
# regions, unpipelined, no spills) at a third of one tap's time on stage 3 (28 against 82 us).
ALL_TAPS_MIN_GROUPS = 4

# Fewest positions one program reduces; below this the partials traffic outweighs the gain.
MIN_CHUNK = 512


def config_serves(config, all_taps: bool, even: bool, arch: int) -> bool:
    """Whether the autotuner may time `config` (scripts/triton_compile_check.py, 2026-12-02):
    ALL_TAPS only on sm_90 and newer (it spilled on sm_80); at partial channel tiles (`even`
    false: Cg = 14, 40) at most 16 rows a warp with one tap and 8 with all taps (more spilled
    there: 8-272 bytes). Every tile keeps a configuration of one tap."""
    if all_taps and arch < 90:
        return False
    return even or config.kwargs["BLOCK_M"] // config.num_warps <= (8 if all_taps else 16)


def _prune(configs, named_args, **meta):
    """The configurations that serve this launch (config_serves) that the performance model
    ranks within common.PRUNE_RATIO of its best (resnext_kernels/perf_model.py, triton_wgrad)."""
    from .. import perf_model as pm

    a = named_args

    def arg(name):
        return meta.get(name, a.get(name))

    g = a["G"]
    conv = pm.Conv(a["BATCH"], g * a["CG"], a["H"], a["W"], g * a["KG"], g, a["stride_h"],
                   a["pad_h"], a["dil_h"], a["x_ptr"].element_size())
    all_taps = bool(arg("ALL_TAPS"))
    even, arch = bool(arg("EVEN_KO")) and bool(arg("EVEN_C")), common.device_arch(a["x_ptr"])
    # (All of them where none serves: ALL_TAPS asked for on sm_80.)
    configs = [c for c in configs if config_serves(c, all_taps, even, arch)] or list(configs)

    def predict(config, gpu):
        return pm.triton_wgrad(conv, gpu, pm.TritonConfig.of(config), all_taps).time_us

    return common.prune_by_model(configs, predict, common.device_name(a["x_ptr"]))


KERNEL = common.TunedKernel(_wgrad_partial_kernel, AUTOTUNE_CONFIGS, AUTOTUNE_KEY, INTERPRETER_CONFIG,
                            prune=_prune)
ALL_TAPS_KERNEL = common.TunedKernel(_wgrad_partial_kernel, ALL_TAPS_CONFIGS, AUTOTUNE_KEY,
                                     INTERPRETER_CONFIG, prune=_prune)


def configs_for(all_taps: bool):
    """The autotune space of one tap layout."""
    return ALL_TAPS_CONFIGS if all_taps else AUTOTUNE_CONFIGS


def choose_all_taps(x, grad_output, groups, stride, padding, dilation, tile, even) -> bool:
    """The default tap layout: one tap on sm_80 (config_serves); on a GPU the performance model
    describes, the layout whose best configuration (of those config_serves keeps for a tile with
    full channel blocks or, `even` false, partial ones) it predicts faster; elsewhere the
    measured rule (ALL_TAPS_MIN_GROUPS)."""
    from .. import perf_model as pm

    if x.device.type == "cuda" and common.device_arch(x) < 90:
        return False
    key = pm.gpu_key(common.device_name(x))
    if key is None:
        return tile.groups_per_prog >= ALL_TAPS_MIN_GROUPS
    n, c, h, w = (int(d) for d in x.shape)    # plain ints (symbolic sizes specialise here)
    return _model_prefers_all_taps(key, n, c, h, w, int(grad_output.shape[1]), groups, stride[0],
                                   padding[0], dilation[0], x.element_size(), even)


@functools.lru_cache(maxsize=1024)
def _model_prefers_all_taps(gpu_key, n, c, h, w, k, groups, stride, pad, dil, elem_size,
                            even) -> bool:
    from .. import perf_model as pm

    conv, gpu = pm.Conv(n, c, h, w, k, groups, stride, pad, dil, elem_size), pm.GPUS[gpu_key]

    def best(all_taps):
        return min(pm.triton_wgrad(conv, gpu, pm.TritonConfig.of(cfg), all_taps).time_us
                   for cfg in configs_for(all_taps) if config_serves(cfg, all_taps, even, 90))
    return best(True) <= best(False)


def choose_splits(npq: int, programs_per_split: int, device: torch.device) -> int:
    """Enough splits to give every SM about four programs, each reducing >= MIN_CHUNK positions."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    want = triton.cdiv(4 * sms, max(1, programs_per_split))
    return max(1, min(want, triton.cdiv(npq, MIN_CHUNK)))


def group_tile(cg: int, kg: int, groups: int) -> common.GroupTile:
    """wgrad's channel tile: (Cg, Kg) blocks of GP groups, at most MAX_BLOCK wide. Not filled
    to whole MIN_DOT blocks as the gather kernel's are (common.choose_group_tile): these tiles
    are the output, and 16-wide ones make five programs re-read dy at Cg = 40."""
    t = common.choose_group_tile(cg, kg, groups, fill_blocks=False)
    return common.GroupTile(t.groups_per_prog, min(t.block_red, MAX_BLOCK),
                            min(t.block_out, MAX_BLOCK))


def wgrad(grad_output, x, weight_size, stride, padding, dilation, groups, splits=None,
          wrap=lambda k: k, config=None, all_taps=None):
    """dw [K, Cg, 3, 3] (contiguous). `splits` overrides the split count, `config` pins one
    triton.Config and `all_taps` the tap layout (tests and benchmarks/tune_triton.py use them)."""
    k_out, cg = weight_size[0], weight_size[1]
    kg = k_out // groups
    n, _, h, w = x.shape
    _, _, p, q = grad_output.shape
    npq = n * p * q
    if npq == 0 or k_out * cg == 0:
        return torch.zeros(tuple(weight_size), dtype=x.dtype, device=x.device)
    # Reduction runs over positions; the "output" of the per-group GEMM is (Kg, Cg).
    tile = group_tile(cg, kg, groups)
    packs = triton.cdiv(groups, tile.groups_per_prog)
    ko_tiles = triton.cdiv(tile.groups_per_prog * kg, tile.block_out)
    c_tiles = triton.cdiv(tile.groups_per_prog * cg, tile.block_red)
    even_ko, even_c = tile.even_out(kg, groups), tile.even_red(cg, groups)
    if all_taps is None:
        all_taps = choose_all_taps(x, grad_output, groups, stride, padding, dilation, tile,
                                   even_ko and even_c)
    tap_programs = 1 if all_taps else 9
    if splits is None:
        splits = choose_splits(npq, tap_programs * ko_tiles * c_tiles * packs, x.device)
    chunk = triton.cdiv(npq, splits)
    partials = common.empty((splits, k_out, cg, 3, 3), common.torch_acc_dtype(x.dtype), x.device)
    dw = common.empty(tuple(weight_size), x.dtype, x.device)

    grid = (splits, tap_programs * ko_tiles * c_tiles, packs)
    counters = split_counters(grid[1] * grid[2], x.device, x)
    args = (
        x, grad_output, partials, counters, dw,
        n, h, w, p, q, groups, cg, kg, chunk, splits,
        *common.divisor_magic(q), *common.divisor_magic(p * q),
        *x.stride(), *grad_output.stride(),
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
    )
    meta = dict(GP=tile.groups_per_prog, BLOCK_KO=tile.block_out, BLOCK_C=tile.block_red,
                ALL_TAPS=all_taps, FAST_DIV=npq < 2 ** common.MAGIC_BITS, EVEN_KO=even_ko,
                EVEN_C=even_c, PRECISION=common.dot_precision(x.dtype),
                ACC_FP64=x.dtype == torch.float64)
    (ALL_TAPS_KERNEL if all_taps else KERNEL).launch(grid, args, meta, wrap=wrap, config=config)
    return dw


# Zeroed tile counters kept per (device, stream) between calls: each launch leaves them at zero
# again, so eager calls need no memset. A fresh zeroed buffer (one memset) while torch.compile
# traces or a CUDA graph is captured, where a buffer kept across calls would be a hidden state.
_COUNTERS: dict = {}


def split_counters(n: int, device: torch.device, like: torch.Tensor) -> torch.Tensor:
    """`n` int32 tile counters, all zero. `like` (an operand) tells eager calls on real tensors
    from tracing (fake or functional tensors are subclasses)."""
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    if torch.compiler.is_compiling() or capturing or type(like) not in (torch.Tensor, torch.nn.Parameter):
        return torch.zeros(n, dtype=torch.int32, device=device)
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (str(device), stream)
    buf = _COUNTERS.get(key)
    if buf is None or buf.numel() < n:
        buf = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
        _COUNTERS[key] = buf
    return buf[:n]
