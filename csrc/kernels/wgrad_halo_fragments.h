// wgrad_halo_fragments.h: the index maps of wgrad_halo (wgrad_halo.cu), host and device, so that
// the C++ unit tests emulate the kernel warp by warp and count its shared-memory bank conflicts
// with the very functions the kernel calls.
//
// The GEMM per group: M = (tap, input channel c), N = output channel k, K = dy pixels:
//   dw[k][c][tap] = sum_pixels x[pixel shifted by tap][c] * dy[pixel][k]
// A CTA owns a block of CB channels (x's and dy's: Kg == Cg) and a split of the image tiles;
// tiles are 8 x 8 dy pixels, their x halo (7 * stride + 3 square) and their dy pixels staged in
// shared memory with 16-byte asynchronous copies (zeros outside the image and past the end of
// the images), a ring of wh_stages stages, so all nine taps read x there. K-block kb (0..3) of a tile is
// its dy rows 2 kb and 2 kb + 1: sixteen pixels, eight a row.
//
// Both operands are loaded with ldmatrix.trans from channels_last rows: a staged pixel's 8
// channels (16 bytes) are one row of an 8x8 matrix, and .trans hands each lane two consecutive
// pixels of one channel, which is the K pair an m16n8k16 register holds. A matrix's eight rows are
// any eight 16-byte-aligned addresses, so the 8 pixels of a K half may be 2 columns apart
// (stride 2: columns stored even first, then odd, so that they sit one slot apart).
//
// M tiles: the block's (tap, 8-channel chunk) pairs in order, two a tile (rows 0-7 the first,
// 8-15 the second; a ninth tap's rows past the last are discarded):
//   Cg = 4: CB = 8 (two groups), tile i = taps 2i and 2i + 1; N = the block's 8 dy channels; the
//           off-diagonal (group a's c, group b's k) products are discarded: 50% useful, as
//           fprop_halo's block-diagonal pairs;
//   Cg = 8: CB = 8, the same tiles over one group; Cg = 16: tile t = tap t, both chunks;
//   Cg = 24, 32, 40, 64: CB = Cg, 3, 4, 5, 8 chunks a tap, 14, 18, 23, 36 tiles;
//   Cg = 14: see "Columns" below.
// N: a CTA owns wh_ntiles n8 tiles of the block's dy channels (all of them but at Cg = 64,
// where the four quarters of N are four CTAs: 288 MMA tiles are too many registers for one).
// Warps: when a CTA's M x N tiles fit one warp's registers (Cg <= 16) each warp owns one
// K-block of every tile and all the tiles (KW = 4 warps split K, their sums added in warp order
// at the end); else each warp owns a contiguous quarter of the M tiles and all K (KW = 1).
// Splits: partial sums [split][K][Cg][3][3] in the workspace, added in split order by
// wgrad_reduce.cuh's kernel (bitwise deterministic).
//
// Columns (Cg = 14, the paper's 8x14d): a group is not a whole number of 16-byte chunks, so a
// block is four groups (CB = 56, seven chunks) and chunks 1, 3 and 5 straddle two groups. Of the
// 7 x 7 (x chunk, dy n8 tile) pairs, the 23 that share a group are computed: a column is one
// such pair, and its five M tiles are the chunk's taps two at a time (tap pair t: taps 2t and
// 2t + 1, the ninth's second half discarded). M tile m = 5 chunk + t. Warp w owns the columns
// [w 23 / 4, (w + 1) 23 / 4) in (chunk, n8 tile) order (5 or 6 of them, spanning two or three
// chunks): it loads each column's B once a K-block, and for each tap pair the A of each chunk
// once, then runs the column's MMA; 30 accumulator tiles a warp at most (120 registers), all
// four K-blocks (KW = 1). Useful: 4 x 14 x 14 x 9 = 7056 of the 115 MMA tiles' 14720 products a
// pixel (48%), against 25% for the whole 56 x 56 block.
#pragma once

#include <cstdint>

#include "../conv_problem.h"
#include "mma_fragments.h"

namespace rk {

constexpr int kWhTile = 8;                             // dy tile: 8 x 8 pixels
constexpr int kWhWarps = 4, kWhThreads = 32 * kWhWarps;
constexpr int kWhCtasPerSm = 4;                        // what the ring's size assumes
constexpr int64_t kWhRingBytes = 56 * 1024;            // a CTA's ring: a quarter of an SM's 228 KB
constexpr int kWhMaxSplits = 64;

RK_HOST_DEVICE constexpr bool wh_serves(int64_t cg) {
  return cg == 4 || cg == 8 || cg == 14 || cg == 16 || cg == 24 || cg == 32 || cg == 40 || cg == 64;
}
RK_HOST_DEVICE constexpr bool wh_columns(int cg) { return cg == 14; }   // see "Columns" above
// Channels of a block and its 16-byte chunks a pixel; staged pitches padded to an odd count of
// 16-byte units (the 8 rows of a matrix, 8 consecutive slots, then cover all 32 banks once).
RK_HOST_DEVICE constexpr int wh_block(int cg) { return wh_columns(cg) ? 4 * cg : cg <= 8 ? 8 : cg; }
RK_HOST_DEVICE constexpr int wh_chunks(int cg) { return wh_block(cg) / 8; }
RK_HOST_DEVICE constexpr int wh_nparts(int cg) { return cg == 64 ? 4 : 1; }   // CTAs sharing N
RK_HOST_DEVICE constexpr int wh_ntiles(int cg) { return wh_chunks(cg) / wh_nparts(cg); }
RK_HOST_DEVICE constexpr int wh_pitch(int cg) { return wh_chunks(cg) | 1; }     // x, 16-byte units
RK_HOST_DEVICE constexpr int wh_dy_pitch(int cg) { return wh_ntiles(cg) | 1; }  // dy (its N part)
// The GEMM tiling of a block: M tiles, warps splitting K, M tiles a warp owns (at most).
RK_HOST_DEVICE constexpr int wh_mtiles(int cg) {
  return wh_columns(cg) ? 5 * wh_chunks(cg) : (9 * wh_chunks(cg) + 1) / 2;
}
RK_HOST_DEVICE constexpr int wh_kwarps(int cg) {
  return !wh_columns(cg) && wh_mtiles(cg) * wh_ntiles(cg) <= 20 ? 4 : 1;
}
RK_HOST_DEVICE constexpr int wh_warp_mtiles(int cg) {
  return wh_kwarps(cg) == 4 ? wh_mtiles(cg) : (wh_mtiles(cg) + kWhWarps - 1) / kWhWarps;
}
// CTAs an SM is built for (the launch bounds' register budget, and the split count's wave): 4
// up to Cg = 24 (at most 128 registers), 3 where a warp holds 72-80 accumulators (Cg = 32, 64:
// 170), 2 for the 120 of Cg = 40 and of Cg = 14's columns (255).
RK_HOST_DEVICE constexpr int wh_min_ctas(int cg) {
  return wh_columns(cg) || cg == 40 ? 2 : cg <= 24 ? 4 : 3;
}

// M tile i of warp w: its index in the block (-1 when the warp has fewer). Warps splitting M own
// the contiguous runs [w M / 4, (w + 1) M / 4).
RK_HOST_DEVICE constexpr int wh_warp_mtile(int w, int i, int cg) {
  if (wh_kwarps(cg) == 4) return i;
  const int first = w * wh_mtiles(cg) / kWhWarps, end = (w + 1) * wh_mtiles(cg) / kWhWarps;
  return first + i < end ? first + i : -1;
}
// The (tap, chunk) of half `half` (rows 8 half .. 8 half + 7) of block M tile m: the (2m + half)th
// (tap, chunk) pair; past the last (an odd count), `tap` says 9 and the loads read tap 8's rows.
struct WhHalf { int tap, chunk; };
RK_HOST_DEVICE constexpr WhHalf wh_half(int m, int half, int cg) {
  const int kc = 2 * m + half;
  return kc < 9 * wh_chunks(cg) ? WhHalf{kc / wh_chunks(cg), kc % wh_chunks(cg)} : WhHalf{9, 0};
}

// Staged x halo of a tile: (7 stride + 3)^2 pixels, [row][column slot][pitch], stride 2 columns
// even first; staged dy: [pixel = row * 8 + column][pitch]. Units of 16 bytes.
RK_HOST_DEVICE constexpr int wh_halo_side(int stride) { return (kWhTile - 1) * stride + 3; }
RK_HOST_DEVICE constexpr int wh_half_cols(int stride) { return (wh_halo_side(stride) + 1) / 2; }
RK_HOST_DEVICE constexpr int wh_col_slot(int col, int stride) {
  return stride == 1 ? col : (col & 1) * wh_half_cols(stride) + (col >> 1);
}
RK_HOST_DEVICE constexpr int wh_slots(int stride) {
  return stride == 1 ? wh_halo_side(1) : 2 * wh_half_cols(stride);
}
RK_HOST_DEVICE constexpr int wh_x_unit(int row, int col, int chunk, int stride, int cg) {
  return (row * wh_slots(stride) + wh_col_slot(col, stride)) * wh_pitch(cg) + chunk;
}
RK_HOST_DEVICE constexpr int wh_x_units(int stride, int cg) {
  return wh_halo_side(stride) * wh_slots(stride) * wh_pitch(cg);
}
RK_HOST_DEVICE constexpr int wh_dy_unit(int pixel, int chunk, int cg) { return pixel * wh_dy_pitch(cg) + chunk; }
RK_HOST_DEVICE constexpr int wh_dy_units(int cg) { return kWhTile * kWhTile * wh_dy_pitch(cg); }
RK_HOST_DEVICE constexpr int wh_stage_units(int stride, int cg) { return wh_x_units(stride, cg) + wh_dy_units(cg); }

// The staging copies of one tile, 16 bytes each: first the x halo in storage order (row, column
// slot, chunk: consecutive copies fill consecutive units, so a quarter-warp's eight cover the
// banks at most twice), then dy (the CTA's N part: chunk is within it). A stride-2 row has one
// slot more than columns (`col` then reaches past the halo: no copy).
struct WhCopy { bool dy; int row, col, chunk; };
RK_HOST_DEVICE constexpr int wh_slot_col(int slot, int stride) {
  return stride == 1 ? slot : slot < wh_half_cols(stride) ? 2 * slot : 2 * (slot - wh_half_cols(stride)) + 1;
}
// The kernel issues the x copies and the dy copies in two loops (wh_x_copy, wh_dy_copy), so
// that every division here is by a constant.
RK_HOST_DEVICE constexpr int wh_x_copies(int stride, int cg) {
  return wh_halo_side(stride) * wh_slots(stride) * wh_chunks(cg);
}
RK_HOST_DEVICE constexpr int wh_dy_copies(int cg) { return kWhTile * kWhTile * wh_ntiles(cg); }
// Whether the kernel unrolls a kind's copies (x or dy) of a tile: where each thread makes at
// most two.
RK_HOST_DEVICE constexpr bool wh_copies_unrolled(int copies) { return copies <= 2 * kWhThreads; }
RK_HOST_DEVICE constexpr int wh_copies(int stride, int cg) { return wh_x_copies(stride, cg) + wh_dy_copies(cg); }
RK_HOST_DEVICE constexpr WhCopy wh_x_copy(int i, int stride, int cg) {
  const int slots = wh_slots(stride);
  return {false, i / wh_chunks(cg) / slots, wh_slot_col(i / wh_chunks(cg) % slots, stride), i % wh_chunks(cg)};
}
RK_HOST_DEVICE constexpr WhCopy wh_dy_copy(int i, int cg) {
  return {true, i / wh_ntiles(cg) / kWhTile, i / wh_ntiles(cg) % kWhTile, i % wh_ntiles(cg)};
}
RK_HOST_DEVICE constexpr WhCopy wh_copy(int i, int stride, int cg) {
  return i < wh_x_copies(stride, cg) ? wh_x_copy(i, stride, cg) : wh_dy_copy(i - wh_x_copies(stride, cg), cg);
}
RK_HOST_DEVICE constexpr bool wh_copy_used(const WhCopy& c, int stride) {
  return c.dy || c.col < wh_halo_side(stride);
}
// The unit a copy fills within its stage (x halo first, then dy).
RK_HOST_DEVICE constexpr int wh_copy_unit(const WhCopy& c, int stride, int cg) {
  return c.dy ? wh_x_units(stride, cg) + wh_dy_unit(c.row * kWhTile + c.col, c.chunk, cg)
              : wh_x_unit(c.row, c.col, c.chunk, stride, cg);
}

// ldmatrix.x4.trans (ldsm_trans_elem): the A registers a0..a3 (M half j % 2, K half j / 2) are
// matrices 0..3 when lane l points at K pixel 8 (l / 16) + l % 8 of M half (l / 8) % 2.
// The 16-byte unit lane `lane` points at for its M half's tap and x chunk (tap 9, a discarded
// half, reads tap 8's rows), K-block kb of the staged tile.
RK_HOST_DEVICE constexpr int wh_tap_unit(int tap, int chunk, int kb, int lane, int stride, int cg) {
  const int k = 8 * (lane / 16) + lane % 8, t = tap < 9 ? tap : 8;
  const int row = 2 * kb + k / 8, col = k % 8;                        // the dy pixel of the tile
  return wh_x_unit(row * stride + t / 3, col * stride + t % 3, chunk, stride, cg);
}
// A: the unit lane `lane` points at for block M tile m, K-block kb of the staged tile.
RK_HOST_DEVICE constexpr int wh_a_unit(int m, int kb, int lane, int stride, int cg) {
  const WhHalf h = wh_half(m, (lane / 8) % 2, cg);
  return wh_tap_unit(h.tap, h.chunk, kb, lane, stride, cg);
}
// B: the CTA's n8 tiles two at a time (ldmatrix.x4: matrix (n8 tile 2 j + (l / 16) % 2, K half
// (l / 8) % 2) for load j), the last alone when their count is odd (x2, lanes 0-15: its K
// halves); b0, b1 of an n8 tile are its K halves. The unit within the stage's dy part.
RK_HOST_DEVICE constexpr int wh_b_loads(int cg) { return (wh_ntiles(cg) + 1) / 2; }
RK_HOST_DEVICE constexpr bool wh_b_pair(int j, int cg) { return 2 * j + 1 < wh_ntiles(cg); }  // x4
// B of n8 tile nt alone (ldmatrix.x2, lanes 0-15: its K halves; in x4 loads lanes 16-31 point
// at the next tile's), K-block kb.
RK_HOST_DEVICE constexpr int wh_ntile_b_unit(int nt, int kb, int lane, int cg) {
  return wh_dy_unit(16 * kb + 8 * ((lane / 8) % 2) + lane % 8, nt, cg);
}
RK_HOST_DEVICE constexpr int wh_b_unit(int j, int kb, int lane, int cg) {
  return wh_ntile_b_unit(wh_b_pair(j, cg) ? 2 * j + (lane / 16) % 2 : 2 * j, kb, lane, cg);
}
// Which load and matrix give B register `reg` (0, 1) of n8 tile nt.
RK_HOST_DEVICE constexpr int wh_b_matrix(int nt, int reg, int cg) {
  return wh_b_pair(nt / 2, cg) ? 2 * (nt % 2) + reg : reg;
}

// What accumulator element i of `lane` in (block M tile m, the CTA's n8 tile nt of N part np)
// is: dw[k][c][tap] of the block's channels (k, c < CB), or not a weight (tap 9, or another
// group's k: ok false).
struct WhElem { bool ok; int k, c, tap; };
RK_HOST_DEVICE constexpr WhElem wh_make_elem(int tap, int c, int k, int cg) {
  return {tap < 9 && c / cg == k / cg, k, c % cg, tap};
}
RK_HOST_DEVICE WhElem wh_elem(int m, int np, int nt, int lane, int i, int cg) {
  const FragCoord f = mma_c_coord(lane, i);
  const WhHalf h = wh_half(m, f.row / 8, cg);
  return wh_make_elem(h.tap, 8 * h.chunk + f.row % 8, 8 * (np * wh_ntiles(cg) + nt) + f.col, cg);
}

// Columns (Cg = 14). The block's n8 tiles that share a group with x chunk a: [lo, hi].
RK_HOST_DEVICE constexpr int wh_chunk_nlo(int a, int cg) { return 8 * a / cg * cg / 8; }
RK_HOST_DEVICE constexpr int wh_chunk_nhi(int a, int cg) { return ((8 * a + 7) / cg * cg + cg - 1) / 8; }
RK_HOST_DEVICE constexpr int wh_chunk_cols(int a, int cg) { return wh_chunk_nhi(a, cg) - wh_chunk_nlo(a, cg) + 1; }
RK_HOST_DEVICE constexpr int wh_cols(int cg) {
  int n = 0;
  for (int a = 0; a < wh_chunks(cg); ++a) n += wh_chunk_cols(a, cg);
  return n;
}
// Column j: its x chunk and dy n8 tile, in (chunk, n8 tile) order.
struct WhCol { int chunk, nt; };
RK_HOST_DEVICE constexpr WhCol wh_col(int j, int cg) {
  int a = 0;
  while (j >= wh_chunk_cols(a, cg)) j -= wh_chunk_cols(a++, cg);
  return {a, wh_chunk_nlo(a, cg) + j};
}
// Warp w's columns: [wh_warp_col0(w), wh_warp_col0(w + 1)); at most wh_warp_cols of them.
RK_HOST_DEVICE constexpr int wh_warp_col0(int w, int cg) { return w * wh_cols(cg) / kWhWarps; }
RK_HOST_DEVICE constexpr int wh_warp_cols(int cg) { return (wh_cols(cg) + kWhWarps - 1) / kWhWarps; }
// Warp w's column j < wh_warp_cols: its own while it has one (stored), else its last again
// (computed and not stored, so that every warp runs the same branch-free loop).
RK_HOST_DEVICE constexpr bool wh_col_stored(int w, int j, int cg) {
  return j < wh_warp_col0(w + 1, cg) - wh_warp_col0(w, cg);
}
RK_HOST_DEVICE constexpr WhCol wh_warp_col(int w, int j, int cg) {
  return wh_col(wh_warp_col0(w, cg) + (wh_col_stored(w, j, cg) ? j : wh_warp_col0(w + 1, cg) - wh_warp_col0(w, cg) - 1), cg);
}
// Whether warp w's column j loads its A (a new chunk; the register holds the previous one's).
RK_HOST_DEVICE constexpr bool wh_col_fresh(int w, int j, int cg) {
  return j == 0 || wh_warp_col(w, j, cg).chunk != wh_warp_col(w, j - 1, cg).chunk;
}
constexpr int kWhTapPairs = 5;                         // M tiles of a chunk: taps two at a time
// A of tap pair t of chunk `chunk` (M tile 5 chunk + t), K-block kb: the unit lane `lane` points
// at (as wh_a_unit; the discarded half of t = 4 reads tap 8's rows).
RK_HOST_DEVICE constexpr int wh_col_a_unit(int chunk, int t, int kb, int lane, int stride, int cg) {
  return wh_tap_unit(2 * t + (lane / 8) % 2, chunk, kb, lane, stride, cg);
}
// B: one ldmatrix.x2 a column, wh_ntile_b_unit of its n8 tile.
// Accumulator element i of `lane` in (tap pair t, column col): dw[k][c][tap], or not a weight.
RK_HOST_DEVICE WhElem wh_col_elem(WhCol col, int t, int lane, int i, int cg) {
  const FragCoord f = mma_c_coord(lane, i);
  return wh_make_elem(2 * t + f.row / 8, 8 * col.chunk + f.row % 8, 8 * col.nt + f.col, cg);
}

// The split and tile walk: blocks * nparts * splits CTAs, CTA (b * nparts + np) * splits + j;
// split j takes the tiles [j T / splits, (j + 1) T / splits) of the T = N * ceil(P / 8) *
// ceil(Q / 8) tiles, image-major.
struct WhTile { int64_t n, p0, q0; };
RK_HOST_DEVICE constexpr int64_t wh_tiles_p(int64_t P) { return (P + kWhTile - 1) / kWhTile; }
RK_HOST_DEVICE constexpr int64_t wh_tiles(int64_t N, int64_t P, int64_t Q) {
  return N * wh_tiles_p(P) * wh_tiles_p(Q);
}
RK_HOST_DEVICE constexpr WhTile wh_tile(int64_t t, int64_t P, int64_t Q) {
  const int64_t tq = t % wh_tiles_p(Q), tp = t / wh_tiles_p(Q) % wh_tiles_p(P);
  return {t / (wh_tiles_p(Q) * wh_tiles_p(P)), tp * kWhTile, tq * kWhTile};
}
// The tile after `tl` (image-major, as wh_tile numbers them): the kernel walks its split with
// this, so that only the split's first tile costs wh_tile's three 64-bit divisions.
RK_HOST_DEVICE constexpr WhTile wh_tile_next(WhTile tl, int64_t P, int64_t Q) {
  if (tl.q0 + kWhTile < Q) return {tl.n, tl.p0, tl.q0 + kWhTile};
  if (tl.p0 + kWhTile < P) return {tl.n, tl.p0 + kWhTile, 0};
  return {tl.n + 1, 0, 0};
}
RK_HOST_DEVICE constexpr int64_t wh_split_begin(int64_t j, int64_t splits, int64_t tiles) {
  return j * tiles / splits;
}

// The ring: as many stages (2 to 8) as fit kWhRingBytes, so that small tiles keep enough bytes in
// flight (Little: ~32 KB an SM at the H200's latency): 8 at Cg <= 8, 7 / 3 at Cg = 16 (stride
// 1 / 2), 4 / 2 at Cg = 32, down to 2 for the wider ones at stride 2.
RK_HOST_DEVICE constexpr int wh_stages(int stride, int cg) {
  const int64_t n = kWhRingBytes / (int64_t(wh_stage_units(stride, cg)) * 16);
  return n < 2 ? 2 : n > 8 ? 8 : int(n);
}
// Shared memory: the ring of stages, or (reused after the last tile) the warps' accumulators for
// the cross-warp sum when warps split K: [warp][M tile][n8 tile][lane][4] floats.
RK_HOST_DEVICE constexpr int wh_red_floats(int cg) {
  return wh_kwarps(cg) == 1 ? 0 : kWhWarps * wh_warp_mtiles(cg) * wh_ntiles(cg) * 128;
}
RK_HOST_DEVICE constexpr int64_t wh_smem_bytes(int stride, int cg) {
  const int64_t ring = int64_t(wh_stages(stride, cg)) * wh_stage_units(stride, cg) * 16;
  const int64_t red = int64_t(wh_red_floats(cg)) * 4;
  return ring > red ? ring : red;
}

}  // namespace rk
