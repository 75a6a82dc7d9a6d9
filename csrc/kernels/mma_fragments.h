// mma_fragments.h: where each lane's values sit in the operands of mma.sync.m16n8k16 (fp16 and
// bf16 inputs, fp32 accumulators), and the index maps of the tensor-core implicit GEMM
// (fprop_mma.cu). Host and device: the C++ unit tests emulate a warp with these same functions.
//
// PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type": with
// group = lane / 4 and pair = lane % 4,
//   A (16 x 16, row-major): 4 registers of 2 halves: register i holds row  group + 8*(i % 2),
//                           columns pair*2 + {0, 1} + 8*(i / 2)
//   B (16 x 8, "col"):      2 registers: register i holds column group, rows pair*2 + {0, 1} + 8*i
//   C, D (16 x 8, fp32):    4 floats: element i is row group + 8*(i / 2), column pair*2 + i % 2
#pragma once

#include <cstdint>

#include "../conv_problem.h"

namespace rk {

constexpr int kMmaM = 16, kMmaN = 8, kMmaK = 16;

struct FragCoord { int row, col; };

// First of the two halves of A register `reg` (0..3) of `lane`; the second is at col + 1.
RK_HOST_DEVICE FragCoord mma_a_coord(int lane, int reg) {
  return {lane / 4 + 8 * (reg % 2), (lane % 4) * 2 + 8 * (reg / 2)};
}

// First of the two halves of B register `reg` (0..1) of `lane` (row = k, col = n); the second
// is at row + 1.
RK_HOST_DEVICE FragCoord mma_b_coord(int lane, int reg) {
  return {(lane % 4) * 2 + 8 * reg, lane / 4};
}

// Accumulator element `i` (0..3) of `lane`.
RK_HOST_DEVICE FragCoord mma_c_coord(int lane, int i) {
  return {lane / 4 + 8 * (i / 2), (lane % 4) * 2 + i % 2};
}

// ---------------------------------------------------------------------------------------------
// fprop_mma tiling. A thread block computes kMmaBlockM output pixels (rows of the implicit GEMM,
// M = N*P*Q) by up to kMmaBlockN output channels of one group. Each of its kMmaWarps warps owns
// kMmaWarpM consecutive pixels (two m16 tiles) and all kMmaBlockN / 8 n8 tiles. The reduction
// runs tap by tap, 16 input channels at a time (Cg padded to a multiple of 16 with zeros).
constexpr int kMmaWarps = 4;
constexpr int kMmaThreads = 32 * kMmaWarps;
constexpr int kMmaWarpM = 32;
constexpr int kMmaBlockM = kMmaWarpM * kMmaWarps;     // 128 pixels
constexpr int kMmaBlockN = 64;                         // output channels per block
constexpr int kMmaTilesM = kMmaWarpM / kMmaM;          // 2
constexpr int kMmaTilesN = kMmaBlockN / kMmaN;         // 8
constexpr int64_t kMmaMaxCg = 64;                      // weights of one block stay in shared memory

RK_HOST_DEVICE int64_t mma_cg_pad(int64_t cg) { return ceil_div(cg, int64_t(kMmaK)) * kMmaK; }

// Shared-memory weight layout [tap][n][c] (c fastest, padded to mma_cg_pad): the two halves of
// a B register, (c, c+1) of one output channel n, are adjacent, so one 32-bit load reads both.
RK_HOST_DEVICE int64_t mma_weight_index(int tap, int n, int64_t c, int64_t cg_pad) {
  return (int64_t(tap) * kMmaBlockN + n) * cg_pad + c;
}

RK_HOST_DEVICE int64_t mma_smem_bytes(int64_t cg, int64_t elem_size) {
  return 9 * kMmaBlockN * mma_cg_pad(cg) * elem_size;
}

// One output pixel (GEMM row) of the block: image, top-left input coordinates of its window, and
// whether it exists (the last block may run past N*P*Q).
struct MmaRow {
  int64_t n = 0, h0 = 0, w0 = 0;
  bool ok = false;
  int64_t p = 0, q = 0;
};

RK_HOST_DEVICE MmaRow mma_row(const ConvProblem& pr, int64_t m) {
  MmaRow r;
  r.ok = m < pr.N * pr.P * pr.Q;
  if (!r.ok) return r;
  r.q = m % pr.Q;
  r.p = (m / pr.Q) % pr.P;
  r.n = m / (pr.Q * pr.P);
  r.h0 = r.p * pr.stride_h - pr.pad_h;
  r.w0 = r.q * pr.stride_w - pr.pad_w;
  return r;
}

// Element offset of input channel 0 of `group` at tap (r, s) of `row`, or -1 where the tap reads
// padding (or the row does not exist). x_stride is in logical (N, C, H, W) order.
RK_HOST_DEVICE int64_t mma_tap_offset(const ConvProblem& pr, const int64_t x_stride[4],
                                      const MmaRow& row, int64_t group, int r, int s) {
  const int64_t h = row.h0 + r * pr.dil_h, w = row.w0 + s * pr.dil_w;
  if (!row.ok || h < 0 || h >= pr.H || w < 0 || w >= pr.W) return -1;
  return row.n * x_stride[0] + group * pr.Cg() * x_stride[1] + h * x_stride[2] + w * x_stride[3];
}

}  // namespace rk
