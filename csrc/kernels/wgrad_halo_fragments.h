// wgrad_halo_fragments.h: the index maps of wgrad_halo (wgrad_halo.cu), host and device, so that
// the C++ unit tests emulate the kernel warp by warp and count its shared-memory bank conflicts
// with the very functions the kernel calls.
//
// The GEMM per group: M = (tap, input channel c), N = output channel k, K = dy pixels:
//   dw[k][c][tap] = sum_pixels x[pixel shifted by tap][c] * dy[pixel][k]
// A CTA owns a block of CB channels (x's and dy's: Kg == Cg) and a split of the tiles. A tile is
// ti images x tr dy rows x tc dy columns (WhGeom, chosen per problem by wh_geometry: whole rows,
// whole images where they fit, several 7x7 images), its x halo and dy pixels staged in shared
// memory with 16-byte asynchronous copies (zeros outside the images), a ring of 2-8 stages, so
// that all nine taps read x there. The K axis of a tile is its pixels, image-major, each row
// padded to tcp = tc rounded up to 8 (so that a K half, 8 pixels, never spans two rows; the
// padding's dy is zero): K-block kb is halves 2 kb and 2 kb + 1. A table of the halves (their
// first pixel's unit, written once per CTA) gives each lane its row address.
//
// Both operands are loaded with ldmatrix.trans from channels_last rows: a staged pixel's 8
// channels (16 bytes) are one row of an 8x8 matrix, and .trans hands each lane two consecutive
// pixels of one channel, which is the K pair an m16n8k16 register holds. A matrix's eight rows are
// any eight 16-byte-aligned addresses; the 8 pixels of a K half sit in 8 consecutive slots (stride
// 2: x columns stored even first, then odd, so that columns 2 apart sit one slot apart).
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
// Warps: when a CTA's M x N tiles fit one warp's registers (Cg <= 16) each warp owns every
// fourth K-block of a tile and all the M x N tiles (KW = 4 warps split K, their sums added in
// warp order at the end); else each warp owns a contiguous quarter of the M tiles and all K
// (KW = 1).
// Splits: on devices with thread-block clusters (sm_90 on) a block's splits are one cluster,
// which adds them in its CTAs' shared memory ("Cluster reduction" below); elsewhere partial
// sums [split][K][Cg][3][3] in the workspace, added in split order by wgrad_reduce.cuh's kernel.
// The same sums in the same order either way (bitwise deterministic, and bitwise equal).
//
// Columns (Cg = 14, the paper's 8x14d): a group is not a whole number of 16-byte chunks, so a
// block is four groups (CB = 56, seven chunks) and chunks 1, 3 and 5 straddle two groups. Of the
// 7 x 7 (x chunk, dy n8 tile) pairs, the 23 that share a group are computed: a column is one
// such pair, and its five M tiles are the chunk's taps two at a time (tap pair t: taps 2t and
// 2t + 1, the ninth's second half discarded). M tile m = 5 chunk + t. Warp w owns the columns
// [w 23 / 4, (w + 1) 23 / 4) in (chunk, n8 tile) order (5 or 6 of them, spanning two or three
// chunks): it loads each column's B once a K-block, and for each tap pair the A of each chunk
// once, then runs the column's MMA; 30 accumulator tiles a warp at most (120 registers), all
// K-blocks (KW = 1). Useful: 4 x 14 x 14 x 9 = 7056 of the 115 MMA tiles' 14720 products a
// pixel (48%), against 25% for the whole 56 x 56 block.
#pragma once

#include <cstdint>

#include "../conv_problem.h"
#include "mma_fragments.h"

namespace rk {

constexpr int kWhWarps = 4, kWhThreads = 32 * kWhWarps;
constexpr int kWhCtasPerSm = 4;                        // what the ring's size assumes
constexpr int64_t kWhRingBytes = 56 * 1024;            // a CTA's ring: a quarter of an SM's 228 KB
constexpr int kWhStageUnits = int(kWhRingBytes / 2 / 16);   // a stage at most: two fit the ring
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
// How many M tiles warp w owns: its tile i is real when i is below it (the kernel compares with
// this, computed once, rather than recompute wh_warp_mtile in the K-block loop).
RK_HOST_DEVICE constexpr int wh_warp_mtile_count(int w, int cg) {
  return wh_kwarps(cg) == 4 ? wh_mtiles(cg) : (w + 1) * wh_mtiles(cg) / kWhWarps - w * wh_mtiles(cg) / kWhWarps;
}
// The (tap, chunk) of half `half` (rows 8 half .. 8 half + 7) of block M tile m: the (2m + half)th
// (tap, chunk) pair; past the last (an odd count), `tap` says 9 and the loads read tap 8's rows.
struct WhHalf { int tap, chunk; };
// (Unsigned: the indices are never negative, and the divisions then need no sign fix-ups; the
// cluster reduction decodes its weights with these, wh_tile_elem.)
RK_HOST_DEVICE constexpr WhHalf wh_half(int m, int half, int cg) {
  const unsigned kc = unsigned(2 * m + half), chunks = unsigned(wh_chunks(cg));
  return kc < 9 * chunks ? WhHalf{int(kc / chunks), int(kc % chunks)} : WhHalf{9, 0};
}

// Division by a divisor fixed at launch, for dividends and divisors below 2^15 (every index and
// size here is within one stage, kWhStageUnits): n / d = (n * mul) >> shift, with s = ceil(log2 d),
// mul = floor(2^(15 + s) / d) + 1 and shift = 15 + s. Exact: mul d = 2^(15 + s) + e with
// 0 < e <= d, so n mul / 2^(15 + s) = n / d + n e / (d 2^(15 + s)), and n e / 2^(15 + s) <
// d / 2^s <= 1 keeps the floor that of n / d; n mul < 2^15 (2^16 + 1) fits 32 bits.
struct WhDiv { uint32_t mul; int shift; };
RK_HOST_DEVICE WhDiv wh_make_div(int d) {
  int s = 0;
  while ((1 << s) < d) ++s;
  return {uint32_t((uint32_t(1) << (15 + s)) / uint32_t(d) + 1), 15 + s};
}
RK_HOST_DEVICE int wh_div(int n, WhDiv v) { return int((uint32_t(n) * v.mul) >> v.shift); }

// A tile's shape and its staged layout, in 16-byte units. x: [image][row][slot][pitch] with xr
// rows of xs slots (stride 1: column c in slot c; stride 2: even columns in slots 0 .. xs/2 - 1,
// odd ones after); rows hold tcp + 2 slots (stride 1) or 2 tcp + 2, so that a K half's taps
// stay in its row; columns past the tile's halo are zeros. dy: [K pixel][dy pitch], the K
// pixels of all halves, the padding zeros.
struct WhGeom {
  int ti, tr, tc, tcp;         // images, dy rows, dy columns of a tile; K pixels a row
  int xr, xs, xc;              // x rows and slots a tile image; x columns of the halo
  int halves, kblocks;         // K halves of the pixels, K-blocks (the last may be half padding)
  int x_units, stage_units, stages;
  WhDiv by_xs, by_xr, by_tcp, by_tr;
};
// The parts of the layout the tile search needs (wh_geom: all of it).
RK_HOST_DEVICE constexpr int wh_tcp(int tc) { return (tc + 7) / 8 * 8; }
RK_HOST_DEVICE constexpr int wh_xs(int tc, int stride) { return stride == 1 ? wh_tcp(tc) + 2 : 2 * (wh_tcp(tc) + 1); }
RK_HOST_DEVICE constexpr int wh_kblocks(int ti, int tr, int tc) { return (ti * tr * wh_tcp(tc) / 8 + 1) / 2; }
RK_HOST_DEVICE constexpr int wh_x_units(int ti, int tr, int tc, int stride, int cg) {
  return ti * ((tr - 1) * stride + 3) * wh_xs(tc, stride) * wh_pitch(cg);
}
RK_HOST_DEVICE constexpr int wh_stage_units(int ti, int tr, int tc, int stride, int cg) {
  return wh_x_units(ti, tr, tc, stride, cg) + 16 * wh_kblocks(ti, tr, tc) * wh_dy_pitch(cg);
}
RK_HOST_DEVICE WhGeom wh_geom(int ti, int tr, int tc, int stride, int cg) {
  WhGeom g{};
  g.ti = ti, g.tr = tr, g.tc = tc, g.tcp = wh_tcp(tc);
  g.xr = (tr - 1) * stride + 3, g.xc = (tc - 1) * stride + 3, g.xs = wh_xs(tc, stride);
  g.halves = ti * tr * g.tcp / 8, g.kblocks = wh_kblocks(ti, tr, tc);
  g.x_units = wh_x_units(ti, tr, tc, stride, cg);
  g.stage_units = wh_stage_units(ti, tr, tc, stride, cg);
  const int64_t n = kWhRingBytes / (int64_t(g.stage_units) * 16);
  g.stages = n < 2 ? 2 : n > 8 ? 8 : int(n);
  g.by_xs = wh_make_div(g.xs), g.by_xr = wh_make_div(g.xr);
  g.by_tcp = wh_make_div(g.tcp), g.by_tr = wh_make_div(tr);
  return g;
}
RK_HOST_DEVICE constexpr bool wh_fits(int units) { return units <= kWhStageUnits; }
RK_HOST_DEVICE bool wh_fits(const WhGeom& g) { return wh_fits(g.stage_units); }
// Whether tc-column tiles' rows of copies (an x halo row: xs slots of `chunks` copies; a K row:
// tcp pixels of the N part's chunks) fit the CTA's threads, as the staging walks them (below:
// wh_walk). Every width and stride served has them at 8 columns but Cg = 64 at stride 2 (18
// slots of 8 chunks: 144), which can_implement refuses.
RK_HOST_DEVICE constexpr bool wh_rows_fit(int tc, int stride, int cg) {
  return wh_xs(tc, stride) * wh_chunks(cg) <= kWhThreads && wh_tcp(tc) * wh_ntiles(cg) <= kWhThreads;
}
// The shape of a P x Q grid's tiles: of the column runs (Q split into equal runs, down to 8
// columns) whose rows of copies fit the threads (wh_rows_fit) and rows whose tile fits a stage,
// the one whose tiles stage the fewest units over an image (zeros included: the bytes from L2
// and the copies' issue alike; ties: the larger tile);
// then, where a tile takes the whole image, as many images as fit (at most max_images: the
// kernel addresses a tile's images from its first in 32 bits).
RK_HOST_DEVICE WhGeom wh_geometry(int64_t P, int64_t Q, int stride, int cg, int max_images = 8) {
  int ti = 1, tr = 1, tc = Q < 8 ? int(Q) : 8;
  int64_t best = -1;
  for (int64_t runs = 1, last = 0; runs <= Q; ++runs) {
    const int c = int((Q + runs - 1) / runs);
    if (c == last) continue;                  // the same runs as fewer of them
    if (c < 8 && last != 0) break;
    last = c;
    if (!wh_rows_fit(c, stride, cg)) continue;  // narrower runs may
    for (int r = 1; r <= P; ++r) {
      const int units = wh_stage_units(1, r, c, stride, cg);
      if (!wh_fits(units)) break;             // taller tiles only stage more
      const int64_t cost = (P + r - 1) / r * ((Q + c - 1) / c) * units;
      if (best < 0 || cost < best || (cost == best && r * c > tr * tc)) tr = r, tc = c, best = cost;
    }
  }
  if (tr == P && tc == Q)
    while (ti < max_images && wh_fits(wh_stage_units(ti + 1, tr, tc, stride, cg))) ++ti;
  return wh_geom(ti, tr, tc, stride, cg);
}

// x unit of (tile image, halo row, column, chunk); a column's slot.
RK_HOST_DEVICE int wh_col_slot(int col, const WhGeom& g, int stride) {
  return stride == 1 ? col : (col & 1) * (g.xs / 2) + (col >> 1);
}
RK_HOST_DEVICE int wh_slot_col(int slot, const WhGeom& g, int stride) {
  return stride == 1 ? slot : slot < g.xs / 2 ? 2 * slot : 2 * (slot - g.xs / 2) + 1;
}
RK_HOST_DEVICE int wh_x_unit(int img, int row, int col, int chunk, const WhGeom& g, int stride, int cg) {
  return ((img * g.xr + row) * g.xs + wh_col_slot(col, g, stride)) * wh_pitch(cg) + chunk;
}
RK_HOST_DEVICE constexpr int wh_dy_unit(int k, int chunk, int cg) { return k * wh_dy_pitch(cg) + chunk; }
// B's units advance by this from one K-block to the next (the kernel adds it to K-block 0's).
RK_HOST_DEVICE constexpr int wh_b_kb_step(int cg) { return 16 * wh_dy_pitch(cg); }

// The staging copies of one tile, 16 bytes each, in storage order (consecutive copies fill
// consecutive units, so a quarter-warp's eight cover the banks at most twice): the x halo's
// (wh_x_copy: every slot, zeros where `in` is false below), then dy's (wh_dy_copy: every K
// pixel of the CTA's N part). Each holds its place in the tile; the kernel adds the tile's
// origin and checks the image bounds.
struct WhCopy { int img, row, col, chunk, unit; bool pad; };   // pad: zeros whatever the image
RK_HOST_DEVICE int wh_x_copies(const WhGeom& g, int cg) { return g.x_units / wh_pitch(cg) * wh_chunks(cg); }
RK_HOST_DEVICE int wh_dy_copies(const WhGeom& g, int cg) { return 16 * g.kblocks * wh_ntiles(cg); }
RK_HOST_DEVICE WhCopy wh_x_copy(int i, const WhGeom& g, int stride, int cg) {
  const int j = i / wh_chunks(cg), chunk = i % wh_chunks(cg);
  const int rows = wh_div(j, g.by_xs), slot = j - rows * g.xs;
  const int img = wh_div(rows, g.by_xr), col = wh_slot_col(slot, g, stride);
  return {img, rows - img * g.xr, col, chunk, j * wh_pitch(cg) + chunk, col >= g.xc};
}
RK_HOST_DEVICE WhCopy wh_dy_copy(int i, const WhGeom& g, int cg) {
  const int k = i / wh_ntiles(cg), chunk = i % wh_ntiles(cg);
  const int rows = wh_div(k, g.by_tcp), col = k - rows * g.tcp, img = wh_div(rows, g.by_tr);
  return {img, rows - img * g.tr, col, chunk, g.x_units + wh_dy_unit(k, chunk, cg),
          col >= g.tc || k >= 8 * g.halves};
}

// Staging by rows. A stage's x halo is ti * xr rows of xs * chunks copies (a halo row's slots,
// each its pixel's chunks), its dy part rows of tcp * ntiles copies (a K row's pixels, each its N
// part's chunks), 16 kblocks / tcp of them rounded up (the padding half of an odd count of halves
// is the first 8 pixels of one more row). Copy i of either is position i % per_row of row
// i / per_row; a row is at most the CTA's threads (wh_rows_fit), so thread t keeps one position
// for the launch, t % per_row, and walks the rows t / per_row, t / per_row + step, ... (step =
// kWhThreads / per_row rows a pass; threads from step * per_row on idle): its row-0 copy
// (wh_x_copy / wh_dy_copy of the position: column, chunk, unit, column padding) is decoded once,
// its column's bounds and source once a tile, and a pass moves its source step rows and its unit
// step rows' units (wh_walk_rows); the images of a tile are walked one after another (a row past
// an image's is that many rows into the next: no division), and dy's rows past the last image
// are the padding half's zeros. A pass of a warp's lanes is 32 consecutive copies but where the
// idle threads begin.
struct WhWalk { int per_row, rows, step; };
RK_HOST_DEVICE WhWalk wh_walk(int per_row, int rows) { return {per_row, rows, kWhThreads / per_row}; }
RK_HOST_DEVICE WhWalk wh_x_walk(const WhGeom& g, int cg) { return wh_walk(g.xs * wh_chunks(cg), g.ti * g.xr); }
RK_HOST_DEVICE WhWalk wh_dy_walk(const WhGeom& g, int cg) {
  return wh_walk(g.tcp * wh_ntiles(cg), (16 * g.kblocks + g.tcp - 1) / g.tcp);
}
struct WhPlace { int row0, pos; bool active; };   // thread t's first row and its position
RK_HOST_DEVICE WhPlace wh_place(int t, const WhWalk& w) { return {t / w.per_row, t % w.per_row, t < w.step * w.per_row}; }
// The rows holding dy K pixel column `col` (a K row's last copies may be past the padding half).
RK_HOST_DEVICE int wh_dy_rows(int col, const WhGeom& g) { return (16 * g.kblocks - col + g.tcp - 1) / g.tcp; }
// A row's units: a pass adds step of them to a thread's unit (wh_x_copy's and wh_dy_copy's unit
// of copy i is that of its position plus i / per_row rows').
RK_HOST_DEVICE int wh_x_row_units(const WhGeom& g, int cg) { return g.xs * wh_pitch(cg); }
RK_HOST_DEVICE int wh_dy_row_units(const WhGeom& g, int cg) { return g.tcp * wh_dy_pitch(cg); }

// A thread's walk over one part of a stage, the kernel's loops (the emulation runs them too):
// `images` images, the first `full` of image_rows rows, a last one (dy's padding rows) of
// last_rows; the thread's first row `row` counted from `origin` (the tile's first row in the
// tensor: copy gets rows as the tensor numbers them), idle past the last; `step` rows a pass.
// copy(image, row, src, to) for each of its copies, src and to moved along from the first's: by
// `pass` and `to_pass` a pass, src by `next_image` from an image's row to the next image's.
struct WhRows { int image_rows, images, full, last_rows, step; };
RK_HOST_DEVICE WhRows wh_x_rows(const WhGeom& g, const WhWalk& w) { return {g.xr, g.ti, g.ti, g.xr, w.step}; }
RK_HOST_DEVICE WhRows wh_dy_rows_of(const WhGeom& g, const WhWalk& w, int dy_rows) {
  return {g.tr, g.ti + (dy_rows > g.ti * g.tr), g.ti, dy_rows - g.ti * g.tr, w.step};
}
template <typename Src, typename Copy>
RK_HOST_DEVICE void wh_walk_rows(const WhRows& r, int origin, int row, Src src, int pass, int next_image,
                                 uint32_t to, uint32_t to_pass, Copy&& copy) {
  row += origin;
  for (int img = 0; img < r.images; ++img, row -= r.image_rows, src += next_image) {
    const int end = origin + (img < r.full ? r.image_rows : r.last_rows);
#pragma unroll 1
    for (; row < end; row += r.step, src += pass, to += to_pass) copy(img, row, src, to);
  }
}

// The table of a tile's K halves: half h's first pixel's unit at tap (0, 0), chunk 0 (the
// padding half of an odd count: unit 0, whose taps stay in the staged halo; its dy is zero).
RK_HOST_DEVICE int wh_half_base(int h, const WhGeom& g, int stride, int cg) {
  if (h >= g.halves) return 0;
  const int rows = wh_div(8 * h, g.by_tcp), col = 8 * h - rows * g.tcp, img = wh_div(rows, g.by_tr);
  return wh_x_unit(img, (rows - img * g.tr) * stride, col * stride, 0, g, stride, cg);
}
// ldmatrix.x4.trans (ldsm_trans_elem): the A registers a0..a3 (M half j % 2, K half j / 2) are
// matrices 0..3 when lane l points at pixel l % 8 of K half 2 kb + l / 16 for M half (l / 8) % 2.
// A lane's unit from its K half's base, for tap `tap` (9, a discarded half, reads tap 8's rows)
// and x chunk `chunk`: tap (r, s) is r rows down and s columns right, which at stride 2 is the
// odd slots' half for s = 1 and the next even slot for s = 2.
RK_HOST_DEVICE int wh_tap_off(int tap, int chunk, int lane, const WhGeom& g, int stride, int cg) {
  const int t = tap < 9 ? tap : 8, s = t % 3;
  const int slot = lane % 8 + (stride == 1 ? s : s == 1 ? g.xs / 2 : s / 2);
  return ((t / 3) * g.xs + slot) * wh_pitch(cg) + chunk;
}
RK_HOST_DEVICE int wh_a_off(int m, int lane, const WhGeom& g, int stride, int cg) {
  const WhHalf h = wh_half(m, (lane / 8) % 2, cg);
  return wh_tap_off(h.tap, h.chunk, lane, g, stride, cg);
}
// The K half whose row address lane `lane` gives A's ldmatrix in K-block kb (lanes 16-31: the
// second).
RK_HOST_DEVICE constexpr int wh_a_half(int kb, int lane) { return 2 * kb + lane / 16; }
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
  return {tap < 9 && unsigned(c) / unsigned(cg) == unsigned(k) / unsigned(cg), k, int(unsigned(c) % unsigned(cg)), tap};
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
// A of tap pair t of chunk `chunk` (M tile 5 chunk + t): lane `lane`'s unit from its K half's
// base (as wh_a_off; the discarded half of t = 4 reads tap 8's rows).
RK_HOST_DEVICE int wh_col_a_off(int chunk, int t, int lane, const WhGeom& g, int stride, int cg) {
  return wh_tap_off(2 * t + (lane / 8) % 2, chunk, lane, g, stride, cg);
}
// B: one ldmatrix.x2 a column, wh_ntile_b_unit of its n8 tile.
// Accumulator element i of `lane` in (tap pair t, column col): dw[k][c][tap], or not a weight.
RK_HOST_DEVICE WhElem wh_col_elem(WhCol col, int t, int lane, int i, int cg) {
  const FragCoord f = mma_c_coord(lane, i);
  return wh_make_elem(2 * t + f.row / 8, 8 * col.chunk + f.row % 8, 8 * col.nt + f.col, cg);
}

// The split and tile walk: blocks * nparts * splits CTAs, CTA (b * nparts + np) * splits + j;
// split j takes the tiles [j T / splits, (j + 1) T / splits) of the T = ceil(N / ti) *
// ceil(P / tr) * ceil(Q / tc) tiles, image-major.
struct WhTile { int n, p0, q0; };   // can_implement keeps N below 2^31
RK_HOST_DEVICE int64_t wh_tiles_p(int64_t P, const WhGeom& g) { return (P + g.tr - 1) / g.tr; }
RK_HOST_DEVICE int64_t wh_tiles_q(int64_t Q, const WhGeom& g) { return (Q + g.tc - 1) / g.tc; }
RK_HOST_DEVICE int64_t wh_tiles(int64_t N, int64_t P, int64_t Q, const WhGeom& g) {
  return (N + g.ti - 1) / g.ti * wh_tiles_p(P, g) * wh_tiles_q(Q, g);
}
RK_HOST_DEVICE WhTile wh_tile(int64_t t, int64_t P, int64_t Q, const WhGeom& g) {
  const int64_t tq = t % wh_tiles_q(Q, g), tp = t / wh_tiles_q(Q, g) % wh_tiles_p(P, g);
  return {int(t / (wh_tiles_q(Q, g) * wh_tiles_p(P, g)) * g.ti), int(tp * g.tr), int(tq * g.tc)};
}
// The tile after `tl` (image-major, as wh_tile numbers them): the kernel walks its split with
// this, so that only the split's first tile costs wh_tile's divisions.
RK_HOST_DEVICE WhTile wh_tile_next(WhTile tl, int P, int Q, const WhGeom& g) {
  if (tl.q0 + g.tc < Q) return {tl.n, tl.p0, tl.q0 + g.tc};
  if (tl.p0 + g.tr < P) return {tl.n, tl.p0 + g.tr, 0};
  return {tl.n + g.ti, 0, 0};
}
RK_HOST_DEVICE constexpr int64_t wh_split_begin(int64_t j, int64_t splits, int64_t tiles) {
  return j * tiles / splits;
}

// Cluster reduction (ConvParams::sm_version 90 on): the splits of a (block, N part) are one
// cluster of `splits` CTAs, at most kWhClusterSplits (Hopper's largest cluster; past
// kWhPortableCluster the launch opts in to a non-portable size), CTA rank j split j. After its tiles each CTA leaves its split's sums in its own shared memory in
// fragment order: accumulator tile `tile` (wh_mn_tile: M tile and n8 tile; wh_col_tile: column
// and tap pair) takes slots 128 tile .. 128 tile + 127, element i of `lane` slot wh_slot (a
// lane's four are one 16-byte store). Then CTA j adds the accumulator tiles [wh_cluster_tile0(j),
// wh_cluster_tile0(j + 1)) of every CTA of the cluster in rank order, starting from zero, warp w
// the tiles w, w + 4, ... of that share, each lane its own four slots of the tile (one 16-byte
// load from each CTA; wh_tile_elem says which weights they hold; discarded products are
// skipped), and stores the weights. That is wgrad_reduce's order on the same sums: no
// workspace, no second launch, the same bits.
constexpr int kWhClusterSplits = 16, kWhPortableCluster = 8;
RK_HOST_DEVICE constexpr int wh_frag_tiles(int cg) {
  return wh_columns(cg) ? wh_cols(cg) * kWhTapPairs : wh_mtiles(cg) * wh_ntiles(cg);
}
RK_HOST_DEVICE constexpr int wh_out_slots(int cg) { return 128 * wh_frag_tiles(cg); }
RK_HOST_DEVICE constexpr int wh_mn_tile(int m, int nt, int cg) { return m * wh_ntiles(cg) + nt; }
RK_HOST_DEVICE constexpr int wh_col_tile(int w, int j, int tp, int cg) {
  return (wh_warp_col0(w, cg) + j) * kWhTapPairs + tp;
}
RK_HOST_DEVICE constexpr int wh_slot(int tile, int lane, int i) { return (tile * 32 + lane) * 4 + i; }
RK_HOST_DEVICE WhElem wh_tile_elem(int tile, int np, int lane, int i, int cg) {
  const unsigned t = unsigned(tile), nt = unsigned(wh_ntiles(cg)), pairs = unsigned(kWhTapPairs);
  if (wh_columns(cg)) return wh_col_elem(wh_col(int(t / pairs), cg), int(t % pairs), lane, i, cg);
  return wh_elem(int(t / nt), np, int(t % nt), lane, i, cg);
}
RK_HOST_DEVICE constexpr int wh_cluster_tile0(int rank, int splits, int cg) {
  return rank * wh_frag_tiles(cg) / splits;
}

// Shared memory: the ring of g.stages stages (as many, 2 to 8, as fit kWhRingBytes, so that
// small tiles keep enough bytes in flight: Little, ~32 KB an SM at the H200's latency), then the
// table of K halves (an int each); or (reused after the last tile) the warps' accumulators for
// the cross-warp sum when warps split K: [warp][M tile][n8 tile][lane][4] floats, then the
// split's sums in fragment order (wh_out_slots floats, the cluster reduction's).
RK_HOST_DEVICE constexpr int wh_red_floats(int cg) {
  return wh_kwarps(cg) == 1 ? 0 : kWhWarps * wh_warp_mtiles(cg) * wh_ntiles(cg) * 128;
}
RK_HOST_DEVICE int wh_table_units(const WhGeom& g) { return (2 * g.kblocks + 3) / 4; }
RK_HOST_DEVICE int64_t wh_smem_bytes(const WhGeom& g, int cg) {
  const int64_t ring = (int64_t(g.stages) * g.stage_units + wh_table_units(g)) * 16;
  const int64_t sums = (int64_t(wh_red_floats(cg)) + wh_out_slots(cg)) * 4;
  return ring > sums ? ring : sums;
}

}  // namespace rk
