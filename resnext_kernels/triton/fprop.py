"""Triton fprop (and the gather kernel dgrad shares with it).

fprop computes, for every group g and output channel k of that group,

    y[n, k, p, q] = act(bias[k] + sum_{c, r, s} x[n, g*Cg + c, p*sh - ph + r*dh, q*sw - pw + s*dw]
                                                * w[k, c, r, s])

as an implicit GEMM per group: M = N*P*Q output pixels, N = Kg, K = Cg*3*3 (DESIGN.md).

dgrad is the same gather with the roles of the two spatial grids swapped:

    dx[n, c, h, w] = sum_{k, r, s} dy[n, k, p, q] * w[k, c, r, s],   h = p*sh - ph + r*dh

so a dx pixel gathers dy at p = (h + ph - r*dh) / sh for the taps where that division is exact.
One kernel serves both (`TRANSPOSED`); only the source index map, the weight's role and the
epilogue differ, which keeps the two directions from drifting apart.

Tiling: program (pid_n, pid_m) owns BLOCK_M destination pixels x BLOCK_OUT destination channels
of one pack of GP groups (see common.py for the block-diagonal packing). For each of the 9 taps
it walks the GP*red_width source channels in BLOCK_RED steps, one flat loop of steps:

    src tile  (BLOCK_M, BLOCK_RED)    one row per pixel: contiguous channels in channels_last
    w tile    (BLOCK_RED, BLOCK_OUT)  block-diagonal across the packed groups
    acc      += src @ w               fp32 (tl.dot)

Where a tap is exact for every pixel (fprop; dgrad by phase class) it moves all rows of the
source tile by one scalar, so each row's source address is computed once per program and a step
adds an offset (EXACT_TAPS; the loop body's sm_90 SASS at Cg = 4 went from 232 to 165 warp
instructions in fprop, 408 to 211 in dgrad).

Two ways to load the source tile, both in the autotune space:
- num_stages >= 2: Triton pipelines the loop with 16-byte cp.async.cg copies, which bypass L1,
  so each source element comes from L2 once per tap: the model puts every such configuration at
  the L2 rate (benchmarks/NOTES.md).
- num_stages = 1 (L1_TAPS, sm_90 and full channel blocks only): plain loads, three steps an
  iteration, their tiles loaded together at its start, and a program's BLOCK_M pixels a nearly
  square patch (PIXEL_BAND). The nine taps of a patch overlap (8 x 16 pixels at 56x56 read 172
  distinct pixels in their 1152 tap reads), so most reads can hit L1. A program may walk
  several consecutive pixel tiles for its channel tile (as many as the grid leaves it:
  pixel_tiles_for), so that the channel tile's nine weight tiles come from L2 once for them
  all where they would otherwise be fetched by nearly every program (stages 2-4).

Predicted by resnext_kernels/perf_model.py, not measured (H200, ResNeXt-50 32x4d at batch 64,
bf16 channels_last, the L1 path), us per layer stage1 / 2.entry / 2 / 3.entry / 3 / 4.entry / 4:
fprop 48 / 43 / 27 / 24 / 17 / 16 / 13 (0.42 ms with a training forward's packing launch; 0.37
on a frozen module's kept packed weight), dgrad 41 / 43 / 22 / 22 / 12 / 14 / 9 (0.35 ms, on
the weight its training step's forward pass packed); bound by instruction issue and load
latency (a CTA waits an iteration's round trip, then issues its instructions; a class's nine
taps walked corners first, so that two of an 8 x 16 patch's three iterations wait for L2) and
by L2 at the stride-2 entries (benchmarks/NOTES.md, 2026-12-04, sixteenth and seventeenth
sessions).

Any strides work (NCHW, channels_last, views), so the wrappers never copy an operand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

# Rows of a band of the kernel's pixel order (PIXEL_BAND): a rule the performance model walks
# too (strip_footprint), so it has one definition, there (pure Python).
from ..perf_model import triton_pixel_band as pixel_band
from ..perf_model import triton_tap_tables as tap_tables
from . import common

# The tap tables of a phase class's walk (_step_coords), 2 bits a tap (its class row, its class
# column): a 3 x 3 class corners first (perf_model.TRITON_TAP_ORDER, which the model walks too),
# so that an L1-path iteration's loads find new source pixels in the first two iterations of a
# channel block and none in the third; the smaller classes of dgrad at stride 2, row by row
# (for one, two and three taps a class row: a table for the most rows serves the fewer).
_CORNERS_ROWS, _CORNERS_COLS = (tl.constexpr(v) for v in tap_tables(3, 3))
_BY_ROW3_ROWS, _BY_ROW3_COLS = (tl.constexpr(v) for v in tap_tables(2, 3))
_BY_ROW2_ROWS, _BY_ROW2_COLS = (tl.constexpr(v) for v in tap_tables(3, 2))
_BY_ROW1_ROWS, _BY_ROW1_COLS = (tl.constexpr(v) for v in tap_tables(3, 1))


@triton.jit
def _source_index(d, tap, stride, pad, dil, size, TRANSPOSED: tl.constexpr):
    """The source row (or column) that destination row `d` reads at `tap`, and whether it exists.

    fprop: s = d*stride - pad + tap*dil.  dgrad inverts that map: s = (d + pad - tap*dil) / stride
    where the division is exact (for stride 2 only some taps reach a given input pixel)."""
    if TRANSPOSED:
        t = d + pad - tap * dil
        s = t // stride
        ok = (t >= 0) & (t % stride == 0) & (s < size)
    else:
        s = d * stride - pad + tap * dil
        ok = (s >= 0) & (s < size)
    return s, ok


@triton.jit
def _step_coords(step, red_blocks: tl.constexpr, tap_rows, tap_cols, r0, s0, oi0, oj0, dil_h,
                 dil_w, PHASES_H, PHASES_W, BLOCK_RED: tl.constexpr, TRANSPOSED: tl.constexpr):
    """Tap (r, s), the first pack-local channel of one step of the flat (tap, channel block)
    loop, and (oi, oj): how far the tap moves an exact source row and column from the row's
    base (base_i, base_j; _source_tile's EXACT_TAPS).

    The step's tap t is the class's t-th in its walk: its class row q and column u are two bits
    of the program's tap tables (`tap_rows`, `tap_cols`: _class_tap_tables), so no integer
    division a step (one took 15 of fprop's 121 warp instructions a step on the L1 path; dgrad's
    tap offsets, two signed divisions by the phase count, 16 of its 110). A dgrad class's tap
    r = r0 + q*PHASES_H moves the row by (ph + pad - r) / PHASES_H = oi0 - q, with
    oi0 = (ph + pad - r0) / PHASES_H computed once a program (r0 is ph + pad's remainder, so the
    division is exact); fprop's (one class of nine) by r*dil; columns alike. A step past the
    class's last tap (the L1 path's last iteration) reads bits past the table: tap (r0, s0),
    whose loads and dot its guard drops."""
    t = step // red_blocks
    q = (tap_rows >> (2 * t)) & 3
    u = (tap_cols >> (2 * t)) & 3
    if TRANSPOSED:
        r = r0 + q * PHASES_H
        s = s0 + u * PHASES_W
        oi = oi0 - q
        oj = oj0 - u
    else:
        r = q
        s = u
        oi = r * dil_h
        oj = s * dil_w
    return r, s, (step - t * red_blocks) * BLOCK_RED, oi, oj


@triton.jit
def _class_tap_tables(taps_r, taps_s, TRANSPOSED: tl.constexpr):
    """The tap tables of a phase class of taps_r x taps_s taps (_step_coords): fprop's one class
    of nine, corners first; dgrad's classes by their shape."""
    if TRANSPOSED:
        nine = (taps_r == 3) & (taps_s == 3)
        rows = tl.where(nine, _CORNERS_ROWS, tl.where(
            taps_s == 3, _BY_ROW3_ROWS, tl.where(taps_s == 2, _BY_ROW2_ROWS, _BY_ROW1_ROWS)))
        cols = tl.where(nine, _CORNERS_COLS, tl.where(
            taps_s == 3, _BY_ROW3_COLS, tl.where(taps_s == 2, _BY_ROW2_COLS, _BY_ROW1_COLS)))
    else:
        rows = _CORNERS_ROWS
        cols = _CORNERS_COLS
    return rows, cols


@triton.jit
def _source_tile(src_ptr, r, s, oi, oj, c0, live, dn, di, dj, base_i, base_j, row_base, m_ok,
                 pack, pack_red, s_src_c, s_src_h, s_src_w, stride_h, stride_w, pad_h, pad_w,
                 dil_h, dil_w, SH, SW, G, RED_G, s_src_n, TRANSPOSED: tl.constexpr,
                 EXACT_TAPS: tl.constexpr, EVEN_RED: tl.constexpr, BLOCK_RED: tl.constexpr):
    """The (BLOCK_M, BLOCK_RED) source tile of tap (r, s) and the pack's channels from c0, zero
    where the tap reads padding, past the pixels or past the channels, and everywhere when `live`
    is false (a masked load moves no data).

    With EXACT_TAPS (fprop; dgrad by phase class) a tap moves every row of the tile by the same
    amount (oi, oj; _step_coords), so a row's address is its base (computed once per program)
    plus one scalar per step: a few instructions a row instead of the general map's divisions."""
    offs_c = c0 + tl.arange(0, BLOCK_RED)
    c_glob = pack * pack_red + offs_c
    if EXACT_TAPS:
        si = base_i + oi
        sj = base_j + oj
        # 0 <= si < SH as one unsigned comparison (a negative si wraps past SH).
        ok = (si.to(tl.uint32) < SH.to(tl.uint32)) & (sj.to(tl.uint32) < SW.to(tl.uint32)) & live
        src_row = row_base + (oi * s_src_h + oj * s_src_w).to(tl.int64)    # (BLOCK_M,)
    else:
        si, h_ok = _source_index(di, r, stride_h, pad_h, dil_h, SH, TRANSPOSED)
        sj, w_ok = _source_index(dj, s, stride_w, pad_w, dil_w, SW, TRANSPOSED)
        ok = m_ok & h_ok & w_ok & live
        src_row = dn.to(tl.int64) * s_src_n + si * s_src_h + sj * s_src_w   # (BLOCK_M,)
    a_mask = ok[:, None]
    if not EVEN_RED:
        a_mask = a_mask & ((offs_c < pack_red) & (c_glob < G * RED_G))[None, :]
    return tl.load(src_ptr + src_row[:, None] + c_glob[None, :].to(tl.int64) * s_src_c,
                   mask=a_mask, other=0.0)                           # (BLOCK_M, BLOCK_RED)


@triton.jit
def _weight_dot(acc, a, w_tile, r, s, c0, red_pad, out_pad, live, PRECISION: tl.constexpr,
                GUARDED: tl.constexpr):
    """acc + a @ the packed weight tile of tap (r, s) and channels c0.. of the pack; `w_tile`
    points at the pack's first tile (tap 0, channel 0: computed once a channel tile, so that a
    step adds one scalar). GUARDED: nothing at all (no load, no dot) where `live` is false, a
    step past the last of a dgrad phase class (1, 2 or 4 taps a class at stride 2). fprop's
    steps are nine a channel block, whole iterations of three, so it takes no guard (the guard
    cost its sm_90 M256w8 build 9 registers: 137, one CTA an SM instead of two)."""
    if GUARDED:
        if live:
            b = tl.load(w_tile + (((r * 3 + s) * red_pad + c0) * out_pad).to(tl.int64))
            acc = acc + tl.dot(a, b, input_precision=PRECISION)
    else:
        b = tl.load(w_tile + (((r * 3 + s) * red_pad + c0) * out_pad).to(tl.int64))
        acc = acc + tl.dot(a, b, input_precision=PRECISION)
    return acc


@triton.jit
def _pack_tile(w_ptr, wp_ptr, tile_id, G, RED_G, OUT_G, s_w_red, s_w_out, s_w_r, s_w_s, RED_PAD,
               OUT_PAD, GP: tl.constexpr, TRANSPOSED: tl.constexpr, BLOCK: tl.constexpr):
    """One BLOCK x BLOCK piece of wp[pack, tap, red, out] (tile_id = pack * 9 + tap): the
    block-diagonal weight tile of a pack of GP groups and a tap, zero off the diagonal and in
    the padding. fprop: red = input channel c, out = output channel k (w[k, c]); dgrad:
    red = k, out = c."""
    pack = tile_id // 9
    tap = tile_id % 9
    offs_c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)         # within the pack
    offs_o = tl.program_id(2) * BLOCK + tl.arange(0, BLOCK)
    g_c = pack * GP + offs_c // RED_G
    ok = ((offs_c // RED_G)[:, None] == (offs_o // OUT_G)[None, :]) \
        & ((offs_c < GP * RED_G) & (g_c < G))[:, None] & (offs_o < GP * OUT_G)[None, :]
    red = pack * GP * RED_G + offs_c if TRANSPOSED else offs_c % RED_G
    out = offs_o % OUT_G if TRANSPOSED else pack * GP * OUT_G + offs_o
    v = tl.load(w_ptr + red[:, None] * s_w_red + out[None, :] * s_w_out
                + (tap // 3) * s_w_r + (tap % 3) * s_w_s, mask=ok, other=0.0)
    dst = wp_ptr + ((tile_id * RED_PAD + offs_c)[:, None].to(tl.int64) * OUT_PAD + offs_o[None, :])
    tl.store(dst, v, mask=(offs_c < RED_PAD)[:, None] & (offs_o < OUT_PAD)[None, :])


@triton.jit
def _pack_weight_kernel(
    w_ptr, wp_ptr,
    G, CG, KG,
    s_w_k, s_w_c, s_w_r, s_w_s,
    F_TILES, F_NUMEL,                   # fprop's (pack, tap) tiles and elements (0: none)
    RED_PAD_F, OUT_PAD_F, RED_PAD_D, OUT_PAD_D,
    GP_F: tl.constexpr, GP_D: tl.constexpr, BLOCK: tl.constexpr,
):
    """The packed weights of fprop and dgrad in one launch, so that the gather kernel loads a
    tap's tile with plain contiguous loads (no per-element group arithmetic in its inner loop):
    programs below F_TILES write fprop's wp at wp_ptr, the others dgrad's after F_NUMEL
    elements (pack_weight)."""
    pid = tl.program_id(0)
    if pid < F_TILES:
        _pack_tile(w_ptr, wp_ptr, pid, G, CG, KG, s_w_c, s_w_k, s_w_r, s_w_s, RED_PAD_F,
                   OUT_PAD_F, GP_F, False, BLOCK)
    else:
        _pack_tile(w_ptr, wp_ptr + F_NUMEL, pid - F_TILES, G, KG, CG, s_w_k, s_w_c, s_w_r, s_w_s,
                   RED_PAD_D, OUT_PAD_D, GP_D, True, BLOCK)


# Sizes and geometry are not specialised (Triton would otherwise compile a variant per value
# pattern: divisible by 16, equal to 1); strides are, so a unit channel stride is known at
# compile time and channels_last loads vectorise.
@triton.jit(do_not_specialize=["BATCH", "DH", "DW", "SH", "SW", "G", "stride_h", "stride_w",
                               "pad_h", "pad_w", "dil_h", "dil_w", "PHASES_H", "PHASES_W",
                               "TILES_PER_PROG", "CHANNELS_FASTEST"])
def _gather_conv_kernel(
    # Pointers. fprop: src = x, dst = y. dgrad: src = dy, dst = dx. wp: the packed weight
    # [packs, 9, RED_PAD, OUT_PAD] of _pack_weight_kernel.
    src_ptr, wp_ptr, bias_ptr, dst_ptr,
    # Sizes: batch, destination grid (DH, DW), source grid (SH, SW), groups, the reduction width
    # per group (fprop: Cg, dgrad: Kg) and the output width per group (fprop: Kg, dgrad: Cg).
    BATCH, DH, DW, SH, SW, G, RED_G, OUT_G,
    # Element strides in logical order: src (n, c, h, w), dst (n, c, h, w).
    s_src_n, s_src_c, s_src_h, s_src_w,
    s_dst_n, s_dst_c, s_dst_h, s_dst_w,
    # Convolution geometry (of the forward convolution in both directions).
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # Destination pixels are visited in PHASES_H x PHASES_W classes (dgrad at dilation 1:
    # the stride; else 1). All pixels of a class take the same taps, so the loop runs only
    # those (stride 2: 2.25 of 9 taps on average) instead of masking the others per pixel.
    PHASES_H, PHASES_W,
    # Channel tiles (pack x output tile) one program walks for its pixels, one after another.
    TILES_PER_PROG,
    # Launch order: 0 walks pixel tiles fastest, 1 channel tiles fastest (the programs that read
    # the same source pixels then run side by side and share them through L2).
    CHANNELS_FASTEST,
    # Meta-parameters.
    TRANSPOSED: tl.constexpr,       # False: fprop; True: dgrad
    HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
    GP: tl.constexpr,               # groups packed per program
    BLOCK_RED: tl.constexpr, BLOCK_OUT: tl.constexpr,
    RED_BLOCKS: tl.constexpr,       # cdiv(GP * RED_G, BLOCK_RED): the step's split is then free
    OUT_BLOCKS: tl.constexpr,       # cdiv(GP * OUT_G, BLOCK_OUT)
    # Every tap is exact for every pixel of a class (fprop; dgrad at dilation 1, by phase class):
    # a tap is a scalar offset from each row's base (_source_tile). Else the general map.
    EXACT_TAPS: tl.constexpr,
    # Every reduction (output) channel block is full: no channel mask on the source loads (on
    # the stores). A mask that varies along the channels keeps Triton from vectorising them.
    EVEN_RED: tl.constexpr, EVEN_OUT: tl.constexpr,
    PRECISION: tl.constexpr,        # "ieee" or "tf32" (fp32 inputs only)
    ACC_FP64: tl.constexpr,         # accumulate in fp64 (fp64 inputs, for gradcheck), else fp32
    BLOCK_M: tl.constexpr,
    # Source loads through L1 (plain loads, num_stages=1) instead of Triton's cp.async
    # pipeline: the nine taps' re-reads can then hit L1 rather than L2.
    L1_TAPS: tl.constexpr,
    # The order of a class's destination pixels: 1 row-major; else bands of PIXEL_BAND rows, a
    # band column by column (pixel_band).
    PIXEL_BAND: tl.constexpr,
):
    # Reduction channels of one pack (per tap). With full channel blocks that is RED_BLOCKS *
    # BLOCK_RED, a constant: a pack's first channel is then provably a multiple of 16 and the
    # source loads are 16 bytes wide. From GP * RED_G it is not where RED_G is not a multiple of
    # 16 (Cg = 8, four groups a pack: 8-byte loads, 240 registers against 183 at Cg = 4).
    # The output channels of one pack likewise: from GP * OUT_G the stores at Cg = 8 were 8 bytes
    # wide (167 registers at M128w4s1 on the L1 path, against 128 at Cg = 4).
    pack_red = RED_BLOCKS * BLOCK_RED if EVEN_RED else GP * RED_G
    pack_out = OUT_BLOCKS * BLOCK_OUT if EVEN_OUT else GP * OUT_G
    out_tiles: tl.constexpr = OUT_BLOCKS
    red_blocks: tl.constexpr = RED_BLOCKS
    n_tiles = tl.cdiv(G, GP) * out_tiles
    red_pad = red_blocks * BLOCK_RED
    out_pad = out_tiles * BLOCK_OUT
    # One grid dimension (2^31 programs, where y and z stop at 65535) over (channel-tile group,
    # phase class, run of pixel tiles): pixel tiles fastest, or channel tiles fastest
    # (CHANNELS_FASTEST).
    # With several channel tiles per program (TILES_PER_PROG) a program reads whole
    # channels_last rows of its source pixels within a short time; the GPU measurements
    # (benchmarks/results/H200_2026-11-28_0636/tune.json) favour one per program except on
    # stage 1, so that is the default. The channel-fastest order is timed by tune_triton.py.
    phases = PHASES_H * PHASES_W
    class_h = tl.cdiv(DH, PHASES_H)             # the largest class's grid
    class_w = tl.cdiv(DW, PHASES_W)
    m_tiles = tl.cdiv(BATCH * class_h * class_w, BLOCK_M)
    n_groups = tl.cdiv(n_tiles, TILES_PER_PROG)  # programs along the channel tiles
    # A program walks pixel_tiles consecutive pixel tiles, its channel tiles for each (the
    # weight tiles of a channel tile then come from L2 once for them all): as many as the
    # launch's grid leaves it (launch_gather_conv, pixel_tiles_for; 1 when the grid has a
    # program for every pixel tile).
    m_progs = tl.num_programs(0) // (n_groups * phases)
    pixel_tiles = tl.cdiv(m_tiles, m_progs)
    pid = tl.program_id(0)
    if CHANNELS_FASTEST:
        tile_group = pid % n_groups
        pid_mp = (pid // n_groups) % m_progs
        phase = pid // (n_groups * m_progs)
    else:
        pid_mp = pid % m_progs
        phase = (pid // m_progs) % phases
        tile_group = pid // (m_progs * phases)
    tile_begin = tile_group * TILES_PER_PROG
    tile_end = tl.minimum(tile_begin + TILES_PER_PROG, n_tiles)

    # Destination pixels of this program: class (ph, pw) holds (ph + i*PHASES_H, pw + j*PHASES_W).
    ph = phase // PHASES_W
    pw = phase % PHASES_W
    rows = tl.cdiv(DH - ph, PHASES_H)           # this class's grid
    cols = tl.cdiv(DW - pw, PHASES_W)
    # The taps this class takes: r = r0, r0 + PHASES_H, ... < 3 (all three when PHASES_H = 1).
    r0 = (ph + pad_h) % PHASES_H
    s0 = (pw + pad_w) % PHASES_W
    taps_r = tl.maximum(tl.cdiv(3 - r0, PHASES_H), 0)
    taps_s = tl.maximum(tl.cdiv(3 - s0, PHASES_W), 0)
    tap_rows, tap_cols = _class_tap_tables(taps_r, taps_s, TRANSPOSED)   # _step_coords
    # A dgrad phase class's first tap row r0 moves a source row by oi0 (_step_coords).
    oi0 = (ph + pad_h - r0) // PHASES_H
    oj0 = (pw + pad_w - s0) // PHASES_W
    m_first = pid_mp * pixel_tiles
    for pid_m in range(m_first, tl.minimum(m_first + pixel_tiles, m_tiles)):
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)                    # (BLOCK_M,)
        m_ok = offs_m < BATCH * rows * cols
        dn = offs_m // (cols * rows)
        if PIXEL_BAND == 1:
            dj = (offs_m % cols) * PHASES_W + pw
            di = ((offs_m // cols) % rows) * PHASES_H + ph
        else:
            # An image's rows in bands of PIXEL_BAND (the last one shorter), a band column by
            # column, so that a program's pixels are a nearly square patch (8 x 16 at BLOCK_M
            # 128 in a 56-wide image, where a row-major strip is 2.3 rows): the nine taps' reads
            # overlap more and its strip reads fewer source pixels from L2 (239 -> 172 at stage
            # 1; perf_model.band_pixel walks the same order).
            p = offs_m - dn * (cols * rows)
            band = p // (PIXEL_BAND * cols)
            within = p - band * (PIXEL_BAND * cols)
            height = tl.minimum(rows - band * PIXEL_BAND, PIXEL_BAND)
            col = within // height
            dj = col * PHASES_W + pw
            di = (band * PIXEL_BAND + within - col * height) * PHASES_H + ph
        dst_row = dn.to(tl.int64) * s_dst_n + di * s_dst_h + dj * s_dst_w
        # Exact taps (_source_tile): each row's source base, once. fprop: d*stride - pad; dgrad by
        # phase class: the row's index in its class grid.
        if TRANSPOSED:
            base_i = (di - ph) // PHASES_H
            base_j = (dj - pw) // PHASES_W
        else:
            base_i = di * stride_h - pad_h
            base_j = dj * stride_w - pad_w
        row_base = dn.to(tl.int64) * s_src_n + base_i * s_src_h + base_j * s_src_w   # (BLOCK_M,)
        if EXACT_TAPS:   # a row past the last pixel fails every tap's bounds check (_source_tile),
            base_i = tl.where(m_ok, base_i, 1 << 30)     # so it needs no mask of its own there

        for pid_n in range(tile_begin, tile_end):
            pack = pid_n // out_tiles
            out_tile = pid_n % out_tiles
            # Destination channels: local index within the pack and global index.
            offs_o = out_tile * BLOCK_OUT + tl.arange(0, BLOCK_OUT)         # (BLOCK_OUT,)
            o_glob = pack * pack_out + offs_o
            o_ok = (offs_o < pack_out) & (o_glob < G * OUT_G)
            # The pack's packed weight at tap 0, channel 0 (_weight_dot adds a step's offset).
            w_tile = wp_ptr + ((pack * 9 * red_pad + tl.arange(0, BLOCK_RED))[:, None].to(tl.int64)
                               * out_pad + offs_o[None, :])

            acc = tl.zeros((BLOCK_M, BLOCK_OUT), dtype=tl.float64 if ACC_FP64 else tl.float32)
            n_steps = taps_r * taps_s * red_blocks
            if L1_TAPS:
                # Plain loads (this path runs with num_stages=1: no cp.async.cg, which bypasses L1):
                # the nine taps of a strip of pixels overlap, so most of a step's source rows are L1
                # hits of the steps before it (perf_model.triton_gather). An iteration loads the
                # tiles of three steps together, then runs their dots: one round trip for three
                # steps, and no tile lives across iterations. Tiles loaded one iteration ahead (the
                # code until 2026-12-04) spent 32 of 108 warp instructions a step on register copies
                # of the carried tiles (sm_90 SASS, bf16, Cg = 4, M128w4: two copies of every loaded
                # word, PRMT at the loop's end and IMAD.MOV before the shared-memory store) and held
                # 180 registers against 136. Steps past the last load nothing and run no dot (a
                # dgrad phase class of one, two or four taps). (r_k, s_k, c0_k) and a_k: the
                # coordinates and tile of step `step + k`.
                for step in range(0, n_steps, 3):
                    r_0, s_0, c0_0, oi_0, oj_0 = _step_coords(
                        step, red_blocks, tap_rows, tap_cols, r0, s0, oi0, oj0, dil_h, dil_w,
                        PHASES_H, PHASES_W, BLOCK_RED, TRANSPOSED)
                    r_1, s_1, c0_1, oi_1, oj_1 = _step_coords(
                        step + 1, red_blocks, tap_rows, tap_cols, r0, s0, oi0, oj0, dil_h, dil_w,
                        PHASES_H, PHASES_W, BLOCK_RED, TRANSPOSED)
                    r_2, s_2, c0_2, oi_2, oj_2 = _step_coords(
                        step + 2, red_blocks, tap_rows, tap_cols, r0, s0, oi0, oj0, dil_h, dil_w,
                        PHASES_H, PHASES_W, BLOCK_RED, TRANSPOSED)
                    a_0 = _source_tile(
                        src_ptr, r_0, s_0, oi_0, oj_0, c0_0, True, dn, di, dj, base_i,
                        base_j, row_base, m_ok, pack, pack_red, s_src_c, s_src_h, s_src_w, stride_h,
                        stride_w, pad_h, pad_w, dil_h, dil_w, SH, SW, G, RED_G, s_src_n, TRANSPOSED,
                        EXACT_TAPS, EVEN_RED, BLOCK_RED)
                    a_1 = _source_tile(
                        src_ptr, r_1, s_1, oi_1, oj_1, c0_1, step + 1 < n_steps, dn, di, dj, base_i,
                        base_j, row_base, m_ok, pack, pack_red, s_src_c, s_src_h, s_src_w, stride_h,
                        stride_w, pad_h, pad_w, dil_h, dil_w, SH, SW, G, RED_G, s_src_n, TRANSPOSED,
                        EXACT_TAPS, EVEN_RED, BLOCK_RED)
                    a_2 = _source_tile(
                        src_ptr, r_2, s_2, oi_2, oj_2, c0_2, step + 2 < n_steps, dn, di, dj, base_i,
                        base_j, row_base, m_ok, pack, pack_red, s_src_c, s_src_h, s_src_w, stride_h,
                        stride_w, pad_h, pad_w, dil_h, dil_w, SH, SW, G, RED_G, s_src_n, TRANSPOSED,
                        EXACT_TAPS, EVEN_RED, BLOCK_RED)
                    acc = _weight_dot(acc, a_0, w_tile, r_0, s_0, c0_0, red_pad, out_pad, True,
                                      PRECISION, False)
                    acc = _weight_dot(acc, a_1, w_tile, r_1, s_1, c0_1, red_pad, out_pad,
                                      step + 1 < n_steps, PRECISION, TRANSPOSED)
                    acc = _weight_dot(acc, a_2, w_tile, r_2, s_2, c0_2, red_pad, out_pad,
                                      step + 2 < n_steps, PRECISION, TRANSPOSED)
            else:
                # One flat loop over (tap, channel block): a single loop that Triton
                # software-pipelines with cp.async (nine unrolled tap loops held 255 registers a
                # thread).
                for step in range(0, n_steps):
                    r, s, c0, oi, oj = _step_coords(step, red_blocks, tap_rows, tap_cols, r0, s0,
                                                    oi0, oj0, dil_h, dil_w, PHASES_H, PHASES_W,
                                                    BLOCK_RED, TRANSPOSED)
                    a = _source_tile(
                        src_ptr, r, s, oi, oj, c0, True, dn, di, dj, base_i, base_j, row_base, m_ok,
                        pack, pack_red, s_src_c, s_src_h, s_src_w, stride_h, stride_w, pad_h, pad_w,
                        dil_h, dil_w, SH, SW, G, RED_G, s_src_n, TRANSPOSED, EXACT_TAPS, EVEN_RED,
                        BLOCK_RED)
                    acc = _weight_dot(acc, a, w_tile, r, s, c0, red_pad, out_pad, True, PRECISION,
                                      False)                                # (BLOCK_M, BLOCK_OUT)

            if HAS_BIAS:
                acc += tl.load(bias_ptr + o_glob, mask=o_ok, other=0.0).to(acc.dtype)[None, :]
            if RELU:
                acc = tl.maximum(acc, 0.0)
            dst = dst_ptr + dst_row[:, None] + o_glob[None, :].to(tl.int64) * s_dst_c
            y_mask = m_ok[:, None] if EVEN_OUT else m_ok[:, None] & o_ok[None, :]
            tl.store(dst, acc.to(dst_ptr.dtype.element_ty), mask=y_mask)


# Autotune space (sm_80 / sm_90); the first entry is the default when autotuning is off.
# Chosen from tune_triton.py on the H200 (benchmarks/results/H200_2026-11-28_0636): the six
# configurations within ~20% of the best on the ResNeXt-50 32x4d layers (geometric mean);
# M128w4s3 was the best overall. The first entry, the default when autotuning is off (the GPU
# tests), is the cheapest to compile: with M128w4s3 first the GPU test step took four times as
# long (H200, 2026-11-28 06:53). BLOCK_M trades weight-tile reuse against registers. num_warps
# 8 stays in on purpose: the Inductor conv template miscompiled there once (pytorch#173068),
# and the GPU tests run every configuration the autotuner may pick.
# The num_stages=1 entries take the L1 path (L1_TAPS): every cp.async configuration above moves
# each source element from L2 nine times (the model puts them all at the fitted L2 rate); plain
# loads let the taps' overlapping rows hit L1, a strip of 256 pixels more often than one of 128.
# Its programs walk their pixels in bands (PIXEL_BAND: pixel_band), the cp.async path in rows.
# An iteration's three tiles cost registers (sm_90, bf16, 32x4d's widths: 126-128 at M128w4
# and M256w8, so four and two CTAs an SM; 80 at M128w8). The L1 path needs sm_90 and full
# channel blocks (EVEN_RED): on sm_80 (dot operands in registers) and at Cg = 14 (masked tiles)
# it spills, so _prune drops it there (l1_path_serves). Predicted, not measured
# (benchmarks/NOTES.md, 2026-12-02 and 2026-12-04 sessions).
AUTOTUNE_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "L1_TAPS": ns == 1, "PIXEL_BAND": pixel_band(bm, ns == 1)},
                  num_warps=nw, num_stages=ns)
    for bm, nw, ns in ((64, 4, 2), (128, 4, 3), (128, 4, 2), (64, 4, 3), (128, 8, 3), (256, 8, 2),
                       (128, 4, 1), (128, 8, 1), (256, 8, 1))
]
AUTOTUNE_KEY = ["BATCH", "DH", "DW", "SH", "SW", "G", "RED_G", "OUT_G", "stride_h", "s_src_c",
                "PHASES_H", "TILES_PER_PROG", "CHANNELS_FASTEST", "TRANSPOSED", "BLOCK_RED",
                "BLOCK_OUT"]
# Channel tiles per program by default (0: all). One was best or within 5% of the best on
# every 32x4d layer (H200, 2026-11-28); walking all of them starves the GPU of programs when
# there are many packs (stage 4: 5x slower).
TILES_PER_PROG = 1
# Launch order by default: pixel tiles fastest, the order every measurement so far used.
CHANNELS_FASTEST = False
# Tile edge of _pack_weight_kernel's programs.
PACK_BLOCK = 32
# The interpreter runs one fixed configuration; large BLOCK_M keeps the program count low.
INTERPRETER_CONFIG = {"BLOCK_M": 128, "L1_TAPS": False, "PIXEL_BAND": 1}

def l1_path_serves(even_red: bool, arch: int) -> bool:
    """Whether the autotuner may time the L1 path: on sm_90 and newer (it was designed and
    predicted for Hopper; on sm_80, where the dot operands live in registers, its three tiles in
    flight spill), and only with full channel blocks (its masked tiles spill at Cg = 14;
    scripts/triton_compile_check.py)."""
    return even_red and arch >= 90


# 32-bit registers a thread may hold across the main loop in its share of the fp32 accumulator
# and, on the L1 path, of the three source tiles in flight. Read off the compile check
# (2026-12-02, bf16, sm_80 and sm_90, every tile shape it compiles with the budget lifted to
# 160): no configuration at 80 or under spilled (32x4d's 32-wide tiles: 32 + 48 at M128w4s1);
# at 112 (M128w8s1 on a 64 x 128 tile) fprop kept a 32-byte frame in its loop, at 128 (BLOCK_M
# 128 at 4 warps or 256 at 8 on a 128-wide output block) ptxas spilled on sm_80 (64-672 bytes),
# at 152-160 (the L1 path at 32 rows a warp on 64-wide tiles or 128-wide output blocks) on
# sm_90 (272-536 bytes).
LOOP_REGISTER_BUDGET = 96


def loop_registers(block_m: int, num_warps: int, block_red: int, block_out: int, l1_taps: bool,
                   elem_size: int) -> int:
    """A thread's share of the accumulator and (L1 path) of its three tiles in flight, in
    32-bit registers."""
    rows = block_m // num_warps
    return rows * block_out // 32 + (3 * rows * block_red * elem_size // 128 if l1_taps else 0)


def config_serves(config, even_red: bool, arch: int, block_red: int, block_out: int,
                  elem_size: int) -> bool:
    """Whether the autotuner may time `config` for this tile: the L1 path where it serves, and
    no configuration whose loop registers exceed LOOP_REGISTER_BUDGET (they spill). The first
    configuration, M64w4s2, serves every tile (at most 64)."""
    l1 = config.kwargs["L1_TAPS"]
    if l1 and not l1_path_serves(even_red, arch):
        return False
    return loop_registers(config.kwargs["BLOCK_M"], config.num_warps, block_red, block_out, l1,
                          elem_size) <= LOOP_REGISTER_BUDGET


def _prune(configs, named_args, **meta):
    """The autotune configurations the performance model ranks within common.PRUNE_RATIO of its
    best for this launch (resnext_kernels/perf_model.py, triton_gather), of those that serve
    it (config_serves: the L1 path only on sm_90 and newer with full channel blocks, nothing
    over the loop's register budget)."""
    from .. import perf_model as pm

    a = named_args

    def arg(name):
        return meta.get(name, a.get(name))

    even_red, arch = bool(arg("EVEN_RED")), common.device_arch(a["src_ptr"])
    configs = [c for c in configs if config_serves(c, even_red, arch, arg("BLOCK_RED"),
                                                   arg("BLOCK_OUT"), a["src_ptr"].element_size())]
    transposed = bool(arg("TRANSPOSED"))
    conv = model_conv(transposed, a["BATCH"], a["G"], a["RED_G"], a["OUT_G"], a["DH"], a["DW"],
                      a["SH"], a["SW"], a["stride_h"], a["pad_h"], a["dil_h"],
                      a["src_ptr"].element_size())
    direction = "dgrad" if transposed else "fprop"

    def predict(config, gpu):
        tiles = pm.triton_pixel_tiles(conv, direction, gpu, config.kwargs["BLOCK_M"],
                                      config.kwargs["L1_TAPS"], a["TILES_PER_PROG"])
        return pm.triton_gather(conv, direction, gpu, pm.TritonConfig.of(config),
                                a["TILES_PER_PROG"], bool(a["CHANNELS_FASTEST"]),
                                pixel_tiles=tiles).time_us

    return common.prune_by_model(configs, predict, common.device_name(a["src_ptr"]))


def model_conv(transposed, batch, groups, red_g, out_g, dh, dw, sh, sw, stride, pad, dil,
               elem_size):
    """The performance model's layer of a gather launch (dgrad: dst = dx, src = dy, the
    reduction over Kg)."""
    from .. import perf_model as pm

    if transposed:
        return pm.Conv(batch, groups * out_g, dh, dw, groups * red_g, groups, stride, pad, dil,
                       elem_size)
    return pm.Conv(batch, groups * red_g, sh, sw, groups * out_g, groups, stride, pad, dil,
                   elem_size)


def pixel_tiles_for(conv, transposed: bool, device_name: str, block_m: int, l1_taps: bool = True,
                    tiles_per_prog: int = 1) -> int:
    """Pixel tiles a program walks (the kernel's pixel_tiles, which it reads off the grid): the
    performance model's choice on a GPU it describes (perf_model.triton_pixel_tiles: on the L1
    path with one channel tile a program), else 1; 1 also where a size is symbolic
    (torch.compile with dynamic shapes)."""
    from .. import perf_model as pm

    key = pm.gpu_key(device_name)
    if key is None or not all(isinstance(v, int) for v in (conv.n, conv.h, conv.w, conv.c)):
        return 1
    return pm.triton_pixel_tiles(conv, "dgrad" if transposed else "fprop", pm.GPUS[key], block_m,
                                 l1_taps, tiles_per_prog)


KERNEL = common.TunedKernel(_gather_conv_kernel, AUTOTUNE_CONFIGS, AUTOTUNE_KEY, INTERPRETER_CONFIG,
                            prune=_prune)


@dataclass(frozen=True)
class PackLayout:
    """One direction's packed weight wp[packs, 9, red_pad, out_pad] (_pack_tile)."""

    tile: common.GroupTile
    packs: int
    red_pad: int      # a multiple of tile.block_red
    out_pad: int      # a multiple of tile.block_out

    @property
    def shape(self):
        return (self.packs, 9, self.red_pad, self.out_pad)

    @property
    def numel(self) -> int:
        return self.packs * 9 * self.red_pad * self.out_pad


def pack_layout(weight_shape, groups: int, transposed: bool) -> PackLayout:
    """The packed weight the gather kernel reads for fprop (transposed False) or dgrad."""
    kg, cg = weight_shape[0] // groups, weight_shape[1]
    red_g, out_g = (kg, cg) if transposed else (cg, kg)
    tile = common.choose_group_tile(red_g, out_g, groups)
    gp = tile.groups_per_prog
    return PackLayout(tile, triton.cdiv(groups, gp),
                      triton.cdiv(gp * red_g, tile.block_red) * tile.block_red,
                      triton.cdiv(gp * out_g, tile.block_out) * tile.block_out)


def pack_weight(weight, groups: int, fprop: bool = True, dgrad: bool = True,
                wrap=lambda k: k) -> torch.Tensor:
    """The packed weights of the directions asked for, in one launch, as one flat buffer: fprop's
    wp (if asked), then dgrad's. A training step packs both in its forward pass and dgrad reads
    the saved buffer, so its backward launches no packing kernel (ops.py)."""
    f, d = pack_layout(weight.shape, groups, False), pack_layout(weight.shape, groups, True)
    asked = [layout for layout, on in ((f, fprop), (d, dgrad)) if on]
    buf = common.empty((sum(layout.numel for layout in asked),), weight.dtype, weight.device)
    if buf.numel() == 0:
        return buf
    block = PACK_BLOCK
    grid = (sum(layout.packs * 9 for layout in asked),
            triton.cdiv(max(layout.red_pad for layout in asked), block),
            triton.cdiv(max(layout.out_pad for layout in asked), block))
    wrap(_pack_weight_kernel)[grid](
        weight, buf, groups, weight.shape[1], weight.shape[0] // groups, *weight.stride(),
        f.packs * 9 if fprop else 0, f.numel if fprop else 0, f.red_pad, f.out_pad, d.red_pad,
        d.out_pad, GP_F=f.tile.groups_per_prog, GP_D=d.tile.groups_per_prog, BLOCK=block)
    return buf


def packed_part(packed: torch.Tensor, weight: torch.Tensor, groups: int,
                transposed: bool) -> torch.Tensor:
    """fprop's (transposed False) or dgrad's wp inside `packed`, which must be what
    pack_weight(weight, groups) returns: both directions, or for fprop its own layout alone
    (dgrad=False). Raises, before any launch, on anything else."""
    f, d = pack_layout(weight.shape, groups, False), pack_layout(weight.shape, groups, True)
    sizes = (f.numel + d.numel,) if transposed else (f.numel + d.numel, f.numel)
    if (packed.dim() != 1 or packed.numel() not in sizes or packed.dtype != weight.dtype
            or packed.device != weight.device or packed.stride(0) != 1):
        want = " or ".join(str(n) for n in sizes)
        raise RuntimeError(
            f"expected packed to be pack_weight(weight, groups={groups})'s result, a contiguous "
            f"1-D tensor of {want} elements of {weight.dtype} on {weight.device}, but got a "
            f"{packed.dim()}-D tensor of {packed.numel()} elements of {packed.dtype} on "
            f"{packed.device} with strides {tuple(packed.stride())}")
    layout, start = (d, f.numel) if transposed else (f, 0)
    return packed[start:start + layout.numel].view(layout.shape)


def pack_holds_dgrad(packed: torch.Tensor, weight: torch.Tensor, groups: int) -> bool:
    """Whether pack_weight(weight, groups)'s buffer `packed` was packed with dgrad's layout."""
    f, d = pack_layout(weight.shape, groups, False), pack_layout(weight.shape, groups, True)
    return packed.numel() == f.numel + d.numel


def launch_gather_conv(src, weight, bias, dst, *, transposed, stride, padding, dilation, groups,
                       relu=False, wrap=lambda k: k, config=None, tiles_per_prog=None,
                       channels_fastest=None, packed: Optional[torch.Tensor] = None,
                       pixel_tiles: Optional[int] = None):
    """Launches the gather kernel writing every element of `dst` (4-D, logical NCHW).

    `wrap` is `torch.library.wrap_triton` when called from a triton_op, so torch.compile sees
    the launch; `config` pins one triton.Config instead of autotuning; `tiles_per_prog` sets how
    many channel tiles one program walks (0: all of them; default TILES_PER_PROG) and
    `channels_fastest` the launch order (default CHANNELS_FASTEST); `packed` is
    pack_weight(weight, groups)'s buffer (None: this direction's weight is packed here, one
    launch more); `pixel_tiles` sets how many pixel tiles one program walks (default: on the L1
    path with one channel tile a program, pixel_tiles_for; else 1).
    """
    batch, _, dh, dw = dst.shape
    _, _, sh, sw = src.shape
    k_out, cg = weight.shape[0], weight.shape[1]
    kg = k_out // groups
    red_g, out_g = (kg, cg) if transposed else (cg, kg)
    layout = pack_layout(weight.shape, groups, transposed)
    tile, packs = layout.tile, layout.packs
    if packed is not None:
        wp = packed_part(packed, weight, groups, transposed)
    else:
        wp = pack_weight(weight, groups, not transposed, transposed, wrap).view(layout.shape)
    out_tiles = layout.out_pad // tile.block_out
    red_blocks = layout.red_pad // tile.block_red

    n_tiles = packs * out_tiles
    per_prog = TILES_PER_PROG if tiles_per_prog is None else tiles_per_prog
    per_prog = n_tiles if per_prog <= 0 else min(per_prog, n_tiles)
    # dgrad at dilation 1 visits dx pixels by stride phase (see the kernel's PHASES_H).
    phases_h = stride[0] if transposed and dilation[0] == 1 else 1
    phases_w = stride[1] if transposed and dilation[1] == 1 else 1
    class_pixels = batch * triton.cdiv(dh, phases_h) * triton.cdiv(dw, phases_w)

    if pixel_tiles is None:
        conv = model_conv(transposed, batch, groups, red_g, out_g, dh, dw, sh, sw, stride[0],
                          padding[0], dilation[0], src.element_size())
        device = common.device_name(src)

    def grid(meta):
        # The kernel walks cdiv(m_tiles, programs along the pixels) pixel tiles a program.
        tiles = pixel_tiles
        if tiles is None:
            tiles = pixel_tiles_for(conv, transposed, device, meta["BLOCK_M"], meta["L1_TAPS"],
                                    per_prog)
        return (triton.cdiv(n_tiles, per_prog) * phases_h * phases_w
                * triton.cdiv(triton.cdiv(class_pixels, meta["BLOCK_M"]), tiles),)

    args = (
        src, wp, bias if bias is not None else dst, dst,
        batch, dh, dw, sh, sw, groups, red_g, out_g,
        *src.stride(), *dst.stride(),
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        phases_h, phases_w, per_prog,
        int(CHANNELS_FASTEST if channels_fastest is None else channels_fastest),
    )
    meta = dict(TRANSPOSED=transposed, HAS_BIAS=bias is not None, RELU=relu,
                GP=tile.groups_per_prog, BLOCK_RED=tile.block_red, BLOCK_OUT=tile.block_out,
                RED_BLOCKS=red_blocks, OUT_BLOCKS=out_tiles,
                EXACT_TAPS=not transposed or (dilation[0] == 1 and dilation[1] == 1),
                EVEN_RED=tile.even_red(red_g, groups), EVEN_OUT=tile.even_out(out_g, groups),
                PRECISION=common.dot_precision(src.dtype), ACC_FP64=src.dtype == torch.float64)
    KERNEL.launch(grid, args, meta, wrap=wrap, config=config)
    return dst


def fprop(x, weight, bias, stride, padding, dilation, groups, relu=False, wrap=lambda k: k,
          config=None, tiles_per_prog=None, channels_fastest=None, packed=None,
          pixel_tiles=None):
    """y = relu?(conv2d(x, weight, bias)), y in x's memory format."""
    n, _, h, w = x.shape
    k_out = weight.shape[0]
    p, q = common.conv_output_hw(h, w, stride, padding, dilation)
    y = common.empty((n, k_out, p, q), x.dtype, x.device, common.memory_format_of(x))
    if y.numel() == 0:
        return y
    return launch_gather_conv(x, weight, bias, y, transposed=False, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, relu=relu, wrap=wrap,
                              config=config, tiles_per_prog=tiles_per_prog,
                              channels_fastest=channels_fastest, packed=packed,
                              pixel_tiles=pixel_tiles)
