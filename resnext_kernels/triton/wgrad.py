"""Triton wgrad: the gradient of the weight, a long reduction split across programs.

    dw[k, c, r, s] = sum_{n, p, q} dy[n, k, p, q] * x[n, g*Cg + c, p*sh - ph + r*dh, q*sw - pw + s*dw]

Per-group GEMM: M = Kg, N = Cg (per tap), K = N*P*Q: a tiny output over a reduction of up to
200k positions (ResNeXt-50 stage 1 at batch 64), so the reduction is cut into SPLITS contiguous
chunks. Program (split, tap * k tiles * c tiles, pack) computes

    dy tile^T (BLOCK_KO, BLOCK_M)  @  x tile (BLOCK_M, BLOCK_C)   for BLOCK_M positions at a time

over its chunk, packing GP groups block-diagonally as fprop does, and writes its fp32 partial
sums (diagonal blocks only) to partials[split]. `partials.sum(0)` then adds the splits in a fixed
order: no atomics, so two runs are bitwise equal.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import common


# Sizes and geometry are not specialised, strides are (see fprop.py).
@triton.jit(do_not_specialize=["BATCH", "H", "W", "P", "Q", "G", "CHUNK", "stride_h", "stride_w",
                               "pad_h", "pad_w", "dil_h", "dil_w"])
def _wgrad_partial_kernel(
    x_ptr, dy_ptr, part_ptr,
    # Sizes: batch, input grid, output grid, groups, Cg, Kg, reduction positions per split.
    BATCH, H, W, P, Q, G, CG, KG, CHUNK,
    # Element strides in logical order: x (n, c, h, w), dy (n, k, p, q); partials are a
    # contiguous [SPLITS, K, Cg, 3, 3] buffer in the accumulator dtype.
    s_x_n, s_x_c, s_x_h, s_x_w,
    s_dy_n, s_dy_k, s_dy_p, s_dy_q,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    GP: tl.constexpr, BLOCK_KO: tl.constexpr, BLOCK_C: tl.constexpr,
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
    tap = pid_t // (ko_tiles * c_tiles)
    ko_tile = (pid_t // c_tiles) % ko_tiles
    c_tile = pid_t % c_tiles
    r = tap // 3
    s = tap % 3

    offs_k = ko_tile * BLOCK_KO + tl.arange(0, BLOCK_KO)               # (BLOCK_KO,)
    k_glob = pack * pack_k + offs_k
    k_ok = (offs_k < pack_k) & (k_glob < G * KG)
    offs_c = c_tile * BLOCK_C + tl.arange(0, BLOCK_C)                  # (BLOCK_C,)
    c_glob = pack * GP * CG + offs_c
    c_ok = (offs_c < GP * CG) & (c_glob < G * CG)

    npq = BATCH * P * Q
    begin = split * CHUNK
    end = tl.minimum(begin + CHUNK, npq)
    acc = tl.zeros((BLOCK_KO, BLOCK_C), dtype=tl.float64 if ACC_FP64 else tl.float32)
    for m0 in range(begin, end, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)                            # (BLOCK_M,)
        m_ok = offs_m < end
        q = offs_m % Q
        p = (offs_m // Q) % P
        n = (offs_m // (Q * P)).to(tl.int64)
        h = p * stride_h - pad_h + r * dil_h
        w = q * stride_w - pad_w + s * dil_w
        x_ok = m_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        dy_t = tl.load(dy_ptr + (n * s_dy_n + p * s_dy_p + q * s_dy_q)[None, :]
                       + k_glob[:, None].to(tl.int64) * s_dy_k,
                       mask=k_ok[:, None] & m_ok[None, :], other=0.0)  # (BLOCK_KO, BLOCK_M)
        xt = tl.load(x_ptr + (n * s_x_n + h * s_x_h + w * s_x_w)[:, None]
                     + c_glob[None, :].to(tl.int64) * s_x_c,
                     mask=x_ok[:, None] & c_ok[None, :], other=0.0)    # (BLOCK_M, BLOCK_C)
        acc += tl.dot(dy_t, xt, input_precision=PRECISION)

    # Only the diagonal blocks (k and c in the same group) are weight gradients.
    diag = (offs_k // KG)[:, None] == (offs_c // CG)[None, :]
    c_in = offs_c % CG
    out = (split * (G * KG) + k_glob)[:, None].to(tl.int64) * (CG * 9) + c_in[None, :] * 9 + tap
    tl.store(part_ptr + out, acc, mask=diag & k_ok[:, None] & c_ok[None, :])


# BLOCK_M is the reduction step (positions per tl.dot); the first entry is the default.
AUTOTUNE_CONFIGS = common.configs((64, 32, 128), (4, 8), (2, 3))
AUTOTUNE_KEY = ["BATCH", "H", "W", "P", "Q", "G", "CG", "KG", "CHUNK", "s_x_c", "BLOCK_KO", "BLOCK_C"]
INTERPRETER_CONFIG = {"BLOCK_M": 64}

# Fewest positions one program reduces; below this the partials traffic outweighs the gain.
MIN_CHUNK = 512

KERNEL = common.TunedKernel(_wgrad_partial_kernel, AUTOTUNE_CONFIGS, AUTOTUNE_KEY, INTERPRETER_CONFIG)


def choose_splits(npq: int, programs_per_split: int, device: torch.device) -> int:
    """Enough splits to give every SM about four programs, each reducing >= MIN_CHUNK positions."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    want = triton.cdiv(4 * sms, max(1, programs_per_split))
    return max(1, min(want, triton.cdiv(npq, MIN_CHUNK)))


def wgrad(grad_output, x, weight_size, stride, padding, dilation, groups, splits=None,
          wrap=lambda k: k, config=None):
    """dw [K, Cg, 3, 3] (contiguous). `splits` overrides the split count and `config` pins one
    triton.Config (tests use both)."""
    k_out, cg = weight_size[0], weight_size[1]
    kg = k_out // groups
    n, _, h, w = x.shape
    _, _, p, q = grad_output.shape
    npq = n * p * q
    if npq == 0 or k_out * cg == 0:
        return torch.zeros(tuple(weight_size), dtype=x.dtype, device=x.device)
    # Reduction runs over positions; the "output" of the per-group GEMM is (Kg, Cg).
    tile = common.choose_group_tile(cg, kg, groups)
    packs = triton.cdiv(groups, tile.groups_per_prog)
    ko_tiles = triton.cdiv(tile.groups_per_prog * kg, tile.block_out)
    c_tiles = triton.cdiv(tile.groups_per_prog * cg, tile.block_red)
    if splits is None:
        splits = choose_splits(npq, 9 * ko_tiles * c_tiles * packs, x.device)
    chunk = triton.cdiv(npq, splits)
    partials = common.empty((splits, k_out, cg, 3, 3), common.torch_acc_dtype(x.dtype), x.device)

    grid = (splits, 9 * ko_tiles * c_tiles, packs)
    args = (
        x, grad_output, partials,
        n, h, w, p, q, groups, cg, kg, chunk,
        *x.stride(), *grad_output.stride(),
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
    )
    meta = dict(GP=tile.groups_per_prog, BLOCK_KO=tile.block_out, BLOCK_C=tile.block_red,
                PRECISION=common.dot_precision(x.dtype), ACC_FP64=x.dtype == torch.float64)
    KERNEL.launch(grid, args, meta, wrap=wrap, config=config)
    return partials.sum(0).to(x.dtype)
