// mma_fragments.h: where each lane's values sit in the operands of mma.sync.m16n8k16 (fp16 and
// bf16 inputs, fp32 accumulators), and the index maps of the tensor-core implicit GEMMs
// (gather_mma.cu). Host and device: the C++ unit tests emulate a warp with these same functions.
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

// ldmatrix (m8n8, b16, .x4 or .x2): lane l gives the address of row l % 8 of matrix l / 8 (16
// bytes), and half e of register `reg` of `lane` is element (row, col) of matrix `reg`: row
// lane / 4, column 2 (lane % 4) + e; with .trans, row 2 (lane % 4) + e, column lane / 4.
struct LdsmElem { int matrix, row, col; };
RK_HOST_DEVICE constexpr LdsmElem ldsm_elem(int lane, int reg, int e) {
  return {reg, lane / 4, 2 * (lane % 4) + e};
}
RK_HOST_DEVICE constexpr LdsmElem ldsm_trans_elem(int lane, int reg, int e) {
  return {reg, 2 * (lane % 4) + e, lane / 4};
}

// ---------------------------------------------------------------------------------------------
// The tensor-core gather kernels (gather_mma.cu: fprop_mma and dgrad_mma). fprop and dgrad are
// one implicit GEMM per group in "gather" form: every destination pixel (a GEMM row) sums, over
// the 9 taps and the group's reduction channels, the source pixel that tap reaches times the
// weight. fprop: x -> y, reducing over Cg; dgrad: dy -> dx, reducing over Kg, with
//   p = (h + pad - r*dil) / stride   where the division is exact (dgrad_output_index).
// dgrad at dilation 1 visits dx pixels in stride-phase classes (h mod stride, w mod stride):
// every pixel of a class takes the same taps, so a block (inside one class) skips the others.
//
// A thread block computes kMmaBlockM destination pixels of one class by up to kMmaBlockN
// output channels of one pack of `gp` consecutive groups (gp > 1 when a group is narrower than
// half the block: 16 groups at Cg = Kg = 4). Within a pack the GEMM is block-diagonal: the
// pack's reduction channels are contiguous in a channels_last source, and the staged weight
// tile is zero off the diagonal (wasted tensor-core work, which these memory-bound layers have
// to spare). Each of its kMmaWarps warps owns kMmaWarpM consecutive pixels (two m16 tiles) and
// all kMmaBlockN / 8 n8 tiles. The reduction runs tap by tap, 16 channels at a time (the pack's
// reduction width padded to a multiple of 16 with zeros).
constexpr int kMmaWarps = 4;
constexpr int kMmaThreads = 32 * kMmaWarps;
constexpr int kMmaWarpM = 32;
constexpr int kMmaBlockM = kMmaWarpM * kMmaWarps;     // 128 pixels
constexpr int kMmaBlockN = 64;                         // output channels per block
constexpr int kMmaTilesM = kMmaWarpM / kMmaM;          // 2
constexpr int kMmaTilesN = kMmaBlockN / kMmaN;         // 8
constexpr int64_t kMmaMaxRed = 64;                     // weights of one block stay in shared memory

// Groups one block packs: as many as fit kMmaBlockN channels on both sides, at least one.
RK_HOST_DEVICE int64_t mma_groups_per_block(int64_t red, int64_t out, int64_t groups) {
  return groups_per_pack(red, out, groups, kMmaBlockN);
}

struct GatherGemm {
  bool transposed = false;               // dgrad
  int64_t N = 0, DH = 0, DW = 0;         // destination grid (fprop: P x Q, dgrad: H x W)
  int64_t SH = 0, SW = 0;                // source grid (fprop: H x W, dgrad: P x Q)
  int64_t G = 1, red = 0, out = 0;       // groups; reduction and output channels per group
  int64_t gp = 1;                        // groups per block (mma_groups_per_block)
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1;
  int64_t phases_h = 1, phases_w = 1;    // destination pixel classes (dgrad at dilation 1)
};

RK_HOST_DEVICE GatherGemm gather_gemm(const ConvProblem& q, bool transposed) {
  GatherGemm g;
  g.transposed = transposed;
  g.N = q.N;
  g.G = q.G;
  g.stride_h = q.stride_h; g.stride_w = q.stride_w;
  g.pad_h = q.pad_h; g.pad_w = q.pad_w;
  g.dil_h = q.dil_h; g.dil_w = q.dil_w;
  if (transposed) {
    g.DH = q.H; g.DW = q.W; g.SH = q.P; g.SW = q.Q;
    g.red = q.Kg(); g.out = q.Cg();
    g.phases_h = q.dil_h == 1 ? q.stride_h : 1;
    g.phases_w = q.dil_w == 1 ? q.stride_w : 1;
  } else {
    g.DH = q.P; g.DW = q.Q; g.SH = q.H; g.SW = q.W;
    g.red = q.Cg(); g.out = q.Kg();
  }
  g.gp = mma_groups_per_block(g.red, g.out, g.G);
  return g;
}

RK_HOST_DEVICE int64_t gather_packs(const GatherGemm& g) { return ceil_div(g.G, g.gp); }

// Groups present in `pack` (the last pack may be partial).
RK_HOST_DEVICE int64_t gather_pack_groups(const GatherGemm& g, int64_t pack) {
  return groups_in_pack(g.G, g.gp, pack);
}

// The pack's reduction width, padded to the 16-wide mma step.
RK_HOST_DEVICE int64_t gather_red_pad(const GatherGemm& g) {
  return ceil_div(g.gp * g.red, int64_t(kMmaK)) * kMmaK;
}

// Blocks along the pixels of one phase class (sized for the largest class) and in all.
RK_HOST_DEVICE int64_t gather_blocks_per_class(const GatherGemm& g) {
  return ceil_div(g.N * ceil_div(g.DH, g.phases_h) * ceil_div(g.DW, g.phases_w), int64_t(kMmaBlockM));
}
RK_HOST_DEVICE int64_t gather_pixel_blocks(const GatherGemm& g) {
  return g.phases_h * g.phases_w * gather_blocks_per_class(g);
}
RK_HOST_DEVICE int64_t gather_out_blocks(const GatherGemm& g) {
  return ceil_div(g.gp * g.out, int64_t(kMmaBlockN));
}
RK_HOST_DEVICE int64_t gather_channel_blocks(const GatherGemm& g) {
  return gather_packs(g) * gather_out_blocks(g);
}

// Shared-memory weight layout [tap][n][c] (c fastest, padded to gather_red_pad): the two halves of
// a B register, (c, c+1) of one output channel n, are adjacent, so one 32-bit load reads both.
RK_HOST_DEVICE int64_t mma_weight_index(int tap, int n, int64_t c, int64_t red_pad) {
  return (int64_t(tap) * kMmaBlockN + n) * red_pad + c;
}

RK_HOST_DEVICE int64_t gather_smem_bytes(const GatherGemm& g, int64_t elem_size) {
  return 9 * kMmaBlockN * gather_red_pad(g) * elem_size;
}

// One destination pixel (GEMM row) of a block: image, coordinates, and whether it exists (the
// last block of a class may run past it).
struct MmaRow {
  int64_t n = 0, h = 0, w = 0;
  bool ok = false;
};

// Row `m` of phase class `phase` (0 <= phase < phases_h * phases_w).
RK_HOST_DEVICE MmaRow gather_row(const GatherGemm& g, int64_t phase, int64_t m) {
  MmaRow row;
  const int64_t ph = phase / g.phases_w, pw = phase % g.phases_w;
  const int64_t rows = ceil_div(g.DH - ph, g.phases_h), cols = ceil_div(g.DW - pw, g.phases_w);
  row.ok = m < g.N * rows * cols;
  if (!row.ok) return row;
  row.w = (m % cols) * g.phases_w + pw;
  row.h = ((m / cols) % rows) * g.phases_h + ph;
  row.n = m / (cols * rows);
  return row;
}

// Whether tap (r, s) reaches the pixels of `phase` at all (dgrad by phase classes: only the
// taps whose offset the stride divides; every tap otherwise).
RK_HOST_DEVICE bool gather_tap_in_class(const GatherGemm& g, int64_t phase, int r, int s) {
  const int64_t ph = phase / g.phases_w, pw = phase % g.phases_w;
  return (ph + g.pad_h - r * g.dil_h) % g.phases_h == 0 && (pw + g.pad_w - s * g.dil_w) % g.phases_w == 0;
}

// Element offset of the first reduction channel of `pack` in the source pixel that tap (r, s)
// of `row` reaches, or -1 where there is none (padding, a stride that does not divide, no such
// row). src_stride is in logical (N, C, H, W) order.
RK_HOST_DEVICE int64_t gather_src_offset(const GatherGemm& g, const int64_t src_stride[4],
                                         const MmaRow& row, int64_t pack, int r, int s) {
  if (!row.ok) return -1;
  int64_t sh, sw;
  if (g.transposed) {
    sh = dgrad_output_index(row.h, r, g.stride_h, g.pad_h, g.dil_h, g.SH);
    sw = dgrad_output_index(row.w, s, g.stride_w, g.pad_w, g.dil_w, g.SW);
    if (sh < 0 || sw < 0) return -1;
  } else {
    sh = fprop_input_index(row.h, r, g.stride_h, g.pad_h, g.dil_h);
    sw = fprop_input_index(row.w, s, g.stride_w, g.pad_w, g.dil_w);
    if (sh < 0 || sh >= g.SH || sw < 0 || sw >= g.SW) return -1;
  }
  return row.n * src_stride[0] + pack * g.gp * g.red * src_stride[1] + sh * src_stride[2] +
         sw * src_stride[3];
}

// Logical index of the weight [K, Cg, 3, 3] element that pairs reduction channel `c` with output
// channel `o` (both within `group`): fprop w[group*Kg + o, c], dgrad w[group*Kg + c, o].
struct WeightIndex { int64_t k, c; };
RK_HOST_DEVICE WeightIndex gather_weight(const GatherGemm& g, int64_t group, int64_t c, int64_t o) {
  return g.transposed ? WeightIndex{group * g.red + c, o} : WeightIndex{group * g.out + o, c};
}

// The weight at (reduction channel c, output channel o) of `pack`'s block-diagonal tile, both
// counted within the pack: false off the diagonal and past the last group (a zero there).
RK_HOST_DEVICE bool gather_pack_weight(const GatherGemm& g, int64_t pack, int64_t c, int64_t o,
                                       WeightIndex* wi) {
  const int64_t gc = c / g.red;
  if (gc != o / g.out || gc >= gather_pack_groups(g, pack)) return false;
  *wi = gather_weight(g, pack * g.gp + gc, c % g.red, o % g.out);
  return true;
}

// ---------------------------------------------------------------------------------------------
// wgrad_mma (wgrad_mma.cu). Per group and tap the weight gradient is a GEMM whose reduction runs
// over the N*P*Q positions:  dw[k, c] = sum_m dy[m, k] * x[m shifted by the tap, c].
// Both operands pair consecutive *positions* in a fragment register, and positions are the
// strided dimension of a channels_last tensor, so a block stages kWgradMmaChunk positions of dy
// and of the tap-shifted x in shared memory transposed ([channel][position]), then reads each
// fragment register as one 32-bit load. Like the gather kernels, a block packs
// mma_groups_per_block consecutive groups (16 at Cg = Kg = 4) into one 64 x 64 product and
// keeps its diagonal blocks. Block (split, pack * 9 + tap): warp w owns output rows
// k = 16w .. 16w + 15 of the pack and all eight n8 tiles of its c, over the split's chunk of
// positions; the fp32 partials go to workspace[split][k][c][tap] and wgrad_reduce.cuh adds the
// splits in a fixed order.
constexpr int kWgradMmaChunk = 32;                    // positions staged per step (two k16 steps)
constexpr int kWgradMmaRow = kWgradMmaChunk + 2;      // staged row, halves (odd word stride: no bank conflicts)
constexpr int kWgradMmaRows = 64;                     // staged channels (Kg and Cg up to 64)
constexpr int64_t kWgradMmaMinChunk = 1024;           // fewest positions a split reduces
constexpr int64_t kWgradMmaMaxSplits = 64;

RK_HOST_DEVICE int64_t wgrad_stage_index(int64_t channel, int64_t pos) {
  return channel * kWgradMmaRow + pos;
}

// Element offsets of position m (n, p, q) in dy at `channel`, and of the x pixel that tap
// (r, s) pairs with it (-1 where that is padding). Strides in logical (N, C, H, W) order.
RK_HOST_DEVICE int64_t wgrad_dy_offset(const ConvProblem& q, const int64_t ys[4], int64_t m,
                                       int64_t channel) {
  const int64_t qq = m % q.Q, pp = (m / q.Q) % q.P, n = m / (q.P * q.Q);
  return n * ys[0] + channel * ys[1] + pp * ys[2] + qq * ys[3];
}

RK_HOST_DEVICE int64_t wgrad_x_offset(const ConvProblem& q, const int64_t xs[4], int64_t m,
                                      int64_t channel, int r, int s) {
  const int64_t qq = m % q.Q, pp = (m / q.Q) % q.P, n = m / (q.P * q.Q);
  const int64_t h = fprop_input_index(pp, r, q.stride_h, q.pad_h, q.dil_h);
  const int64_t w = fprop_input_index(qq, s, q.stride_w, q.pad_w, q.dil_w);
  if (h < 0 || h >= q.H || w < 0 || w >= q.W) return -1;
  return n * xs[0] + channel * xs[1] + h * xs[2] + w * xs[3];
}

}  // namespace rk
