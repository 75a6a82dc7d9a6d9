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
(unrolled) it walks the GP*red_width source channels in BLOCK_RED steps:

    src tile  (BLOCK_M, BLOCK_RED)    one row per pixel: contiguous channels in channels_last
    w tile    (BLOCK_RED, BLOCK_OUT)  block-diagonal across the packed groups
    acc      += src @ w               fp32 (tl.dot)

Any strides work (NCHW, channels_last, views), so the wrappers never copy an operand.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import common


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


# Sizes and geometry are not specialised (Triton would otherwise compile a variant per value
# pattern: divisible by 16, equal to 1); strides are, so a unit channel stride is known at
# compile time and channels_last loads vectorise.
@triton.jit(do_not_specialize=["BATCH", "DH", "DW", "SH", "SW", "G", "stride_h", "stride_w",
                               "pad_h", "pad_w", "dil_h", "dil_w", "TILES_PER_PROG"])
def _gather_conv_kernel(
    # Pointers. fprop: src = x, dst = y. dgrad: src = dy, dst = dx. w is always [K, Cg, 3, 3].
    src_ptr, w_ptr, bias_ptr, dst_ptr,
    # Sizes: batch, destination grid (DH, DW), source grid (SH, SW), groups, the reduction width
    # per group (fprop: Cg, dgrad: Kg) and the output width per group (fprop: Kg, dgrad: Cg).
    BATCH, DH, DW, SH, SW, G, RED_G, OUT_G,
    # Element strides in logical order: src (n, c, h, w), dst (n, c, h, w), and the weight's
    # strides along its reduction dim, its output dim and the two taps.
    s_src_n, s_src_c, s_src_h, s_src_w,
    s_dst_n, s_dst_c, s_dst_h, s_dst_w,
    s_w_red, s_w_out, s_w_r, s_w_s,
    # Convolution geometry (of the forward convolution in both directions).
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # Channel tiles (pack x output tile) one program walks for its pixels, one after another.
    TILES_PER_PROG,
    # Meta-parameters.
    TRANSPOSED: tl.constexpr,       # False: fprop; True: dgrad
    HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
    GP: tl.constexpr,               # groups packed per program
    BLOCK_RED: tl.constexpr, BLOCK_OUT: tl.constexpr,
    # Every reduction (output) channel block is full: no channel mask on the source loads (on
    # the stores). A mask that varies along the channels keeps Triton from vectorising them.
    EVEN_RED: tl.constexpr, EVEN_OUT: tl.constexpr,
    PRECISION: tl.constexpr,        # "ieee" or "tf32" (fp32 inputs only)
    ACC_FP64: tl.constexpr,         # accumulate in fp64 (fp64 inputs, for gradcheck), else fp32
    BLOCK_M: tl.constexpr,
):
    pack_out = GP * OUT_G                       # output channels of one pack
    pack_red = GP * RED_G                       # reduction channels of one pack (per tap)
    out_tiles = tl.cdiv(pack_out, BLOCK_OUT)
    n_tiles = tl.cdiv(G, GP) * out_tiles
    # One grid dimension (2^31 programs, where y and z stop at 65535), pixel tiles fastest; each
    # program then walks TILES_PER_PROG channel tiles of its pixels. With all of them
    # (TILES_PER_PROG = n_tiles) a program reads whole channels_last rows of its source pixels
    # within a short time, so DRAM sees each row once even when L2 cannot hold the tensor; with
    # one, the programs of a channel tile sweep the whole source before the next tile starts.
    pid = tl.program_id(0)
    m_tiles = tl.cdiv(BATCH * DH * DW, BLOCK_M)
    pid_m = pid % m_tiles
    tile_begin = (pid // m_tiles) * TILES_PER_PROG
    tile_end = tl.minimum(tile_begin + TILES_PER_PROG, n_tiles)

    # Destination pixels of this program.
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)                    # (BLOCK_M,)
    m_ok = offs_m < BATCH * DH * DW
    dj = offs_m % DW
    di = (offs_m // DW) % DH
    dn = offs_m // (DW * DH)
    dst_row = dn.to(tl.int64) * s_dst_n + di * s_dst_h + dj * s_dst_w

    for pid_n in range(tile_begin, tile_end):
        pack = pid_n // out_tiles
        out_tile = pid_n % out_tiles
        # Destination channels: local index within the pack, global index, group in the pack.
        offs_o = out_tile * BLOCK_OUT + tl.arange(0, BLOCK_OUT)         # (BLOCK_OUT,)
        o_glob = pack * pack_out + offs_o
        o_ok = (offs_o < pack_out) & (o_glob < G * OUT_G)
        o_grp = offs_o // OUT_G
        o_in = o_glob % OUT_G if TRANSPOSED else o_glob                 # weight index, out dim

        acc = tl.zeros((BLOCK_M, BLOCK_OUT), dtype=tl.float64 if ACC_FP64 else tl.float32)
        # One flat loop over (tap, channel block): a single software-pipelined loop whose
        # registers are those of one step (nine unrolled tap loops held 255 a thread).
        red_blocks = tl.cdiv(pack_red, BLOCK_RED)
        for step in range(0, 9 * red_blocks):
            tap = step // red_blocks
            r = tap // 3
            s = tap - 3 * r
            si, h_ok = _source_index(di, r, stride_h, pad_h, dil_h, SH, TRANSPOSED)
            sj, w_ok = _source_index(dj, s, stride_w, pad_w, dil_w, SW, TRANSPOSED)
            pix_ok = m_ok & h_ok & w_ok
            src_row = dn.to(tl.int64) * s_src_n + si * s_src_h + sj * s_src_w  # (BLOCK_M,)
            offs_c = (step - tap * red_blocks) * BLOCK_RED + tl.arange(0, BLOCK_RED)
            c_glob = pack * pack_red + offs_c
            c_ok = (offs_c < pack_red) & (c_glob < G * RED_G)
            a_mask = pix_ok[:, None] if EVEN_RED else pix_ok[:, None] & c_ok[None, :]
            a = tl.load(src_ptr + src_row[:, None] + c_glob[None, :].to(tl.int64) * s_src_c,
                        mask=a_mask, other=0.0)                         # (BLOCK_M, BLOCK_RED)
            c_w = c_glob if TRANSPOSED else c_glob % RED_G              # weight index, red dim
            diag = (offs_c // RED_G)[:, None] == o_grp[None, :]
            b = tl.load(w_ptr + c_w[:, None] * s_w_red + o_in[None, :] * s_w_out
                        + r * s_w_r + s * s_w_s,
                        mask=diag & c_ok[:, None] & o_ok[None, :], other=0.0)  # (BLOCK_RED, BLOCK_OUT)
            acc += tl.dot(a, b, input_precision=PRECISION)

        if HAS_BIAS:
            acc += tl.load(bias_ptr + o_glob, mask=o_ok, other=0.0).to(acc.dtype)[None, :]
        if RELU:
            acc = tl.maximum(acc, 0.0)
        dst = dst_ptr + dst_row[:, None] + o_glob[None, :].to(tl.int64) * s_dst_c
        y_mask = m_ok[:, None] if EVEN_OUT else m_ok[:, None] & o_ok[None, :]
        tl.store(dst, acc.to(dst_ptr.dtype.element_ty), mask=y_mask)


# Autotune space (sm_80 / sm_90); the first entry is the default when autotuning is off.
# BLOCK_M trades pixel reuse of the weight tile against registers: 64 x 32 fp32 accumulators
# at 4 warps are 16 registers a thread. num_warps 8 is in the list on purpose: the Inductor conv
# template miscompiled there once (pytorch#173068), and the GPU tests run every configuration
# the autotuner may pick.
AUTOTUNE_CONFIGS = common.configs((64, 128), (4, 8), (2, 3)) + common.configs((256,), (8,), (2,))
AUTOTUNE_KEY = ["BATCH", "DH", "DW", "SH", "SW", "G", "RED_G", "OUT_G", "stride_h", "s_src_c",
                "TILES_PER_PROG", "TRANSPOSED", "BLOCK_RED", "BLOCK_OUT"]
# Channel tiles per program by default (0: all). To be chosen on the GPU by
# benchmarks/tune_triton.py; 1 is the layout measured so far (run 1, H100).
TILES_PER_PROG = 1
# The interpreter runs one fixed configuration; large BLOCK_M keeps the program count low.
INTERPRETER_CONFIG = {"BLOCK_M": 128}

KERNEL = common.TunedKernel(_gather_conv_kernel, AUTOTUNE_CONFIGS, AUTOTUNE_KEY, INTERPRETER_CONFIG)


def launch_gather_conv(src, weight, bias, dst, *, transposed, stride, padding, dilation, groups,
                       relu=False, wrap=lambda k: k, config=None, tiles_per_prog=None):
    """Launches the gather kernel writing every element of `dst` (4-D, logical NCHW).

    `wrap` is `torch.library.wrap_triton` when called from a triton_op, so torch.compile sees
    the launch; `config` pins one triton.Config instead of autotuning; `tiles_per_prog` sets how
    many channel tiles one program walks (0: all of them; default TILES_PER_PROG).
    """
    batch, _, dh, dw = dst.shape
    _, _, sh, sw = src.shape
    k_out, cg = weight.shape[0], weight.shape[1]
    kg = k_out // groups
    red_g, out_g = (kg, cg) if transposed else (cg, kg)
    tile = common.choose_group_tile(red_g, out_g, groups)
    packs = triton.cdiv(groups, tile.groups_per_prog)
    out_tiles = triton.cdiv(tile.groups_per_prog * out_g, tile.block_out)
    ws = weight.stride()
    # Weight strides along (reduction, output): fprop reduces over Cg, dgrad over K.
    s_w_red, s_w_out = (ws[0], ws[1]) if transposed else (ws[1], ws[0])

    n_tiles = packs * out_tiles
    per_prog = TILES_PER_PROG if tiles_per_prog is None else tiles_per_prog
    per_prog = n_tiles if per_prog <= 0 else min(per_prog, n_tiles)

    def grid(meta):
        return (triton.cdiv(n_tiles, per_prog) * triton.cdiv(batch * dh * dw, meta["BLOCK_M"]),)

    args = (
        src, weight, bias if bias is not None else dst, dst,
        batch, dh, dw, sh, sw, groups, red_g, out_g,
        *src.stride(), *dst.stride(), s_w_red, s_w_out, ws[2], ws[3],
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        per_prog,
    )
    meta = dict(TRANSPOSED=transposed, HAS_BIAS=bias is not None, RELU=relu,
                GP=tile.groups_per_prog, BLOCK_RED=tile.block_red, BLOCK_OUT=tile.block_out,
                EVEN_RED=tile.even_red(red_g, groups), EVEN_OUT=tile.even_out(out_g, groups),
                PRECISION=common.dot_precision(src.dtype), ACC_FP64=src.dtype == torch.float64)
    KERNEL.launch(grid, args, meta, wrap=wrap, config=config)
    return dst


def fprop(x, weight, bias, stride, padding, dilation, groups, relu=False, wrap=lambda k: k,
          config=None, tiles_per_prog=None):
    """y = relu?(conv2d(x, weight, bias)), y in x's memory format."""
    n, _, h, w = x.shape
    k_out = weight.shape[0]
    p, q = common.conv_output_hw(h, w, stride, padding, dilation)
    y = common.empty((n, k_out, p, q), x.dtype, x.device, common.memory_format_of(x))
    if y.numel() == 0:
        return y
    return launch_gather_conv(x, weight, bias, y, transposed=False, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, relu=relu, wrap=wrap,
                              config=config, tiles_per_prog=tiles_per_prog)
