// halo_fragments.h: the index maps of fprop_halo (fprop_halo.cu), host and device, so that the
// C++ unit tests emulate the kernel warp by warp and count its shared-memory bank conflicts with
// the very functions the kernel calls.
//
// The GEMM per GEMM group (a group of Cg channels, or several, so that every 16-byte chunk of
// a staged pixel lies in one GEMM group: GW = Cg, 8 (two groups) at Cg = 4, 56 (four) at
// Cg = 14):
//   M = output pixels, N = GW output channels, K = 9 * GW laid out as (tap, channel):
//   A[m][kk] = x[pixel m shifted by tap kk / GW][channel kk % GW],  B[kk][n] = w[n][kk % GW][tap]
// with B zero off the groups' diagonal blocks (45% useful MMA work at Cg = 4: K 72 of 80, N
// block-diagonal; 37% at Cg = 14, where the (k-step, n8 tile) pairs that meet no common group
// are skipped, halo_kn_meet; 90% at Cg = 8, 100% from 16, but 24 and 40: 96%, 98%).
//
// A CTA (4 warps) owns a tile of 8 x 16 output pixels of one image (or two: paired tiles, below)
// and one slab of whole groups (SLAB channels: 56 at Cg = 14, else 32 from Cg = 4 to 32, 24 at
// Cg = 24, 40 at Cg = 40, 64 at Cg = 64). Warp w
// computes tile rows 2w and 2w + 1, one m16 tile each (16 consecutive output columns). The
// tile's input halo, (8 - 1) * stride + 3 rows by (16 - 1) * stride + 3 columns of SLAB
// channels, is staged in shared memory once, with 16-byte copies (zeros outside the image), and
// all nine taps read it there through ldmatrix, whose matrix rows are 8 channels (16 bytes) of
// one tap-shifted pixel, a block read by both of a warp's tile rows loaded once for both
// (halo_a_schedule). Persistent CTAs walk contiguous runs of the tile list (slab-major) with two
// halo buffers: the next tile's halo loads while this one computes; each CTA packs the weights
// of its run's slab (one or two) into shared memory itself.
//
// Shared-memory layout (32-bit words; a word is two adjacent channels):
//   halo    [row][column slot][halo_pixel_words]  stride 2 stores even columns, then odd ones,
//           so that the 8 rows of an ldmatrix (8 consecutive output columns, 2 columns apart in
//           the input) sit one pixel apart; a pixel is an odd number of 16-byte units, so those
//           8 rows cover the 32 banks once
//   weights [gemm group][kstep][ntile][lane][2]   exactly the B registers, in lane order
//   out     [pixel][halo_out_pixel_words]         the epilogue's staging for 16-byte stores
// The pitches make every A and B load and every epilogue store conflict-free (csrc/tests/
// test_halo.cpp counts them).
//
// Modes. fprop (kHaloFprop) runs the nine taps. dgrad at stride 1 (kHaloDgrad) is the same GEMM
// on dy with the weight transposed per group and rotated (halo_weight_source). dgrad at stride 2
// (kHaloDgradPhases, padding 1) by stride-phase class: the dx pixels of row parity eh and column
// parity ew (class 2 eh + ew) receive only the taps of their parities, 1, 2, 2 and 4 of the nine.
// Each class is a small stride-1 convolution of dy over a subset of a 3x3 stencil (padding 1) on
// a grid of ceil(H / 2) x ceil(W / 2) pixels, so a CTA stages one stride-1 halo of dy per tile
// and runs the four classes on it in turn, each with K = (tap, channel) over its own taps only
// (9 taps of MMA work per dy tile in all, as fprop), each storing to every other dx pixel.
#pragma once

#include <cstdint>

#include "../conv_problem.h"
#include "mma_fragments.h"

namespace rk {

constexpr int kHaloTileP = 8, kHaloTileQ = 16;        // output pixels per tile: 128
constexpr int kHaloWarps = 4, kHaloThreads = 32 * kHaloWarps;
constexpr int kHaloMaxCtasPerSm = 4;                  // persistent CTAs per SM, at most
constexpr int64_t kHaloMaxSmem = 227 * 1024;          // one CTA's shared memory (sm_90 opt-in)
constexpr int64_t kHaloSmPerSmem = 228 * 1024;        // what an SM has for its CTAs
static_assert(kHaloTileP == 2 * kHaloWarps, "each warp owns two tile rows");
static_assert(kHaloTileQ == kMmaM, "a tile row is one m16 tile");

// Groups of one slab and its channels: 32 channels up to Cg = 32, one group from there, and at
// Cg = 14 the 56 channels of four groups (seven whole 16-byte chunks).
RK_HOST_DEVICE constexpr int halo_slab_groups(int cg) { return cg == 14 ? 4 : cg >= 32 ? 1 : 32 / cg; }
RK_HOST_DEVICE constexpr int halo_slab(int cg) { return cg * halo_slab_groups(cg); }
// The channel widths the kernel is built for (Kg == Cg): ResNeXt-50's and the paper's table's.
RK_HOST_DEVICE constexpr bool halo_serves(int64_t cg) {
  return cg == 4 || cg == 8 || cg == 14 || cg == 16 || cg == 24 || cg == 32 || cg == 40 || cg == 64;
}

// What the kernel computes (see the header comment).
constexpr int kHaloFprop = 0, kHaloDgrad = 1, kHaloDgradPhases = 2;
RK_HOST_DEVICE constexpr int halo_classes(int mode) { return mode == kHaloDgradPhases ? 4 : 1; }
// dgrad's mode at a stride: 1 as one convolution of dy, 2 by phase class (dgrad_halo).
RK_HOST_DEVICE constexpr int halo_dgrad_mode_at(int64_t stride) { return stride == 2 ? kHaloDgradPhases : kHaloDgrad; }
// The taps of a class: bit 3 r + s for stencil tap (r, s) of the staged halo. A phase class of
// row parity e reads halo rows {1} (e = 0: kernel row 1 only) or {1, 2} (e = 1: kernel rows 2
// and 0), the same for columns: dx row 2 i + e takes dy row (2 i + e + 1 - r) / 2 = i + r' - 1.
RK_HOST_DEVICE constexpr int halo_phase_taps(int parity) { return parity ? 0b110 : 0b010; }
RK_HOST_DEVICE constexpr int halo_class_mask(int mode, int cls) {
  if (mode != kHaloDgradPhases) return 0x1FF;
  int mask = 0;
  for (int r = 0; r < 3; ++r)
    for (int s = 0; s < 3; ++s)
      if ((halo_phase_taps(cls >> 1) >> r & 1) && (halo_phase_taps(cls & 1) >> s & 1)) mask |= 1 << (3 * r + s);
  return mask;
}
RK_HOST_DEVICE constexpr int halo_mask_taps(int mask) {
  int n = 0;
  for (int b = 0; b < 9; ++b) n += mask >> b & 1;
  return n;
}
// The K order of a class's taps: column by column (s, then r), so that the taps (r, s) and
// (r + 1, s) that a warp's two tile rows share halo rows through (halo_a_schedule) are next to
// each other in K. The stencil tap 3 r + s of the i-th of `mask`'s in that order.
RK_HOST_DEVICE constexpr int halo_k_tap(int n) { return 3 * (n % 3) + n / 3; }   // n-th tap of all 9
RK_HOST_DEVICE constexpr int halo_mask_tap(int mask, int i) {
  for (int n = 0; n < 9; ++n)
    if ((mask >> halo_k_tap(n) & 1) && i-- == 0) return halo_k_tap(n);
  return -1;
}
// The kernel row and column of the original weight behind stencil tap (r', s') of class cls:
// r = 2 - r' at stride 1 (the rotation), r = eh + 3 - 2 r' for the phases (kernel rows of
// parity eh + 1); s likewise.
RK_HOST_DEVICE constexpr int halo_weight_r(int tap_row, int cls, int mode) {
  return mode == kHaloDgradPhases ? (cls >> 1) + 3 - 2 * tap_row : mode == kHaloDgrad ? 2 - tap_row : tap_row;
}
RK_HOST_DEVICE constexpr int halo_weight_s(int tap_col, int cls, int mode) {
  return mode == kHaloDgradPhases ? (cls & 1) + 3 - 2 * tap_col : mode == kHaloDgrad ? 2 - tap_col : tap_col;
}
// Where pixel (pp, qq) of class cls's grid lands in the destination.
RK_HOST_DEVICE constexpr int64_t halo_dst_row(int64_t pp, int cls, int mode) {
  return mode == kHaloDgradPhases ? 2 * pp + (cls >> 1) : pp;
}
RK_HOST_DEVICE constexpr int64_t halo_dst_col(int64_t qq, int cls, int mode) {
  return mode == kHaloDgradPhases ? 2 * qq + (cls & 1) : qq;
}

RK_HOST_DEVICE constexpr int halo_rows(int stride) { return (kHaloTileP - 1) * stride + 3; }
RK_HOST_DEVICE constexpr int halo_cols(int stride) { return (kHaloTileQ - 1) * stride + 3; }
// Column slots of a staged row: stride 2 keeps the even columns first, then the odd ones.
RK_HOST_DEVICE constexpr int halo_half_cols(int stride) { return (halo_cols(stride) + 1) / 2; }
RK_HOST_DEVICE constexpr int halo_slots(int stride) {
  return stride == 1 ? halo_cols(1) : 2 * halo_half_cols(stride);
}
RK_HOST_DEVICE constexpr int halo_col_slot(int col, int stride) {
  return stride == 1 ? col : (col & 1) * halo_half_cols(stride) + (col >> 1);
}
// Words per staged halo pixel: slab / 2 rounded up to 4 mod 8, an odd number of 16-byte units
// (8 consecutive pixels then start on 8 different 4-bank quads: ldmatrix conflict-free).
RK_HOST_DEVICE constexpr int halo_pixel_words(int cg) {
  const int words = halo_slab(cg) / 2;
  return words + (12 - words % 8) % 8;
}
RK_HOST_DEVICE constexpr int halo_row_words(int stride, int cg) {
  return halo_slots(stride) * halo_pixel_words(cg);
}
RK_HOST_DEVICE constexpr int halo_stage_words(int stride, int cg) {
  return halo_rows(stride) * halo_row_words(stride, cg);
}
// The word holding channels (chan, chan + 1) of halo pixel (row, col) of the slab; chan even.
RK_HOST_DEVICE constexpr int halo_word(int row, int col, int chan, int stride, int cg) {
  return row * halo_row_words(stride, cg) + halo_col_slot(col, stride) * halo_pixel_words(cg) +
         chan / 2;
}

// Staging and storing by rows. A pixel's slab is `parts` 16-byte chunks, contiguous in a
// channels_last tensor. A warp copies a row of pixels in passes of 32 lanes: lane l takes chunk
// l % parts of the pass's (l / parts)-th pixel (halo_lane_col: its column in the pass), the
// next pass the pixel pass_cols = 32 / parts columns on (lanes from parts * pass_cols on idle:
// 4 of 32 at 56 channels, 2 at 24 and 40). So a lane's chunk and the parity of its columns
// never change, and from one pass to the next its source moves pass_cols pixels and its
// shared-memory word a compile-time step: no division in the loops. Warp w stages halo rows
// w, w + 4, ..., and stores tile rows 2 w and 2 w + 1 (its own m16 tiles: the epilogue's
// staging is private to the warp).
RK_HOST_DEVICE constexpr int halo_parts(int cg) { return halo_slab(cg) / 8; }
RK_HOST_DEVICE constexpr int halo_pass_cols(int cg) { return 32 / halo_parts(cg); }
RK_HOST_DEVICE constexpr int halo_row_passes(int cols, int cg) {
  return (cols + halo_pass_cols(cg) - 1) / halo_pass_cols(cg);
}
// A pass's j-th pixel is column j of it, but for four chunks a pixel (slabs of 32 channels),
// where a quarter-warp's two pixels are columns j / 2 and j / 2 + 4: eight 16-byte units
// 4 x 5 units apart (the odd pixel pitch of halo_pixel_words) cover the eight bank quads once,
// where adjacent pixels (5 apart) would share one: the staging copies and the output loads at
// the minimum of wavefronts at stride 1, not twice it.
RK_HOST_DEVICE constexpr int halo_lane_col(int j, int cg) {
  return halo_parts(cg) == 4 ? j / 2 + (j % 2) * (halo_pass_cols(cg) / 2) : j;
}
struct HaloLaneCopy { int col, part; bool active; };     // pass 0's column; `active`: not idle
RK_HOST_DEVICE constexpr HaloLaneCopy halo_lane_copy(int lane, int cg) {
  return {halo_lane_col(lane / halo_parts(cg), cg), lane % halo_parts(cg),
          lane < halo_parts(cg) * halo_pass_cols(cg)};
}
// Words from a lane's staging word in one pass to the next (halo_word of its column + v *
// pass_cols is its pass-0 word plus v steps: stride 2 stores even and odd columns apart, and
// pass_cols is even, so a lane's columns keep their parity).
RK_HOST_DEVICE constexpr int halo_copy_step(int stride, int cg) {
  return (stride == 1 ? halo_pass_cols(cg) : halo_pass_cols(cg) / 2) * halo_pixel_words(cg);
}
// The passes a lane makes (bit v): its pass-v column is in the row (`col`, its pass-0 column of
// the row's `cols`) and its position `first + v * step` in the tensor is in [0, width). On a
// paired tile (below) the passes in `second` (halo_second_passes) are in the second image, at
// `shift` positions less, and only if that image exists (`second_in`).
RK_HOST_DEVICE constexpr uint32_t halo_pass_mask(int first, int step, int width, int col, int cols, int cg,
                                                 uint32_t second = 0, int shift = 0, bool second_in = false) {
  uint32_t mask = 0;
  for (int v = 0; v * halo_pass_cols(cg) + col < cols; ++v) {
    const bool hi = second >> v & 1u;
    mask |= uint32_t(unsigned(first + v * step - (hi ? shift : 0)) < unsigned(width) && (!hi || second_in)) << v;
  }
  return mask;
}
static_assert(halo_pass_cols(4) % 2 == 0 && halo_pass_cols(14) % 2 == 0 && halo_pass_cols(24) % 2 == 0 &&
                  halo_pass_cols(40) % 2 == 0 && halo_pass_cols(64) % 2 == 0,
              "a lane's columns keep their parity from pass to pass");

// Paired tiles. On a grid at most 8 columns wide (32x4d's stage 4: 7 x 7) an 8 x 16 tile would
// compute 128 pixels for 49. Instead its columns hold two images, n in columns 0-7 and n + 1 in
// 8-15 (the halo's columns from kHaloPairCols * stride on are n + 1's, shifted by that many): a
// tile column reads the halo columns (column * stride + tap), so n + 1's outputs read only its
// own part, and n's valid outputs may read n + 1's part only where both images are padding
// (zeros either way; halo_paired: 7 columns at stride 1 and padding 1, 8 at stride 2 on a source
// of 15 or fewer). The staging, the A fragments and the epilogue keep their maps; only a pass's
// source and destination image and its bounds change (halo_pass_mask), a jump by one image
// stride less the split's columns in the pass that crosses the split.
constexpr int kHaloPairCols = kHaloTileQ / 2;
// Whether the fprop-view problem (dgrad: halo_dgrad_as_fprop) runs on paired tiles: Q columns of
// the grid, W of the source, stride and padding along the columns.
RK_HOST_DEVICE constexpr bool halo_paired(int64_t Q, int64_t W, int64_t stride, int64_t pad) {
  const int64_t last = (Q - 1) * stride + 2, split = int64_t(kHaloPairCols) * stride;   // n's last halo column
  return Q <= kHaloPairCols && (last < split || (last < split + pad && split - pad >= W));
}
// Kernels built with paired tiles: all but dgrad's phase classes at Cg = 24, whose kernel that
// packs in its CTAs is at the register budget already (ptxas spilled 4 bytes with pairing's few
// more; no model of the paper's table has a stride-2 layer at Cg = 24).
RK_HOST_DEVICE constexpr bool halo_pairs_built(int cg, int mode) { return cg != 24 || mode != kHaloDgradPhases; }
RK_HOST_DEVICE bool halo_paired(const ConvProblem& q, int mode) {
  return halo_pairs_built(int(q.Cg()), mode) && halo_paired(q.Q, q.W, q.stride_w, q.pad_w);
}
// The passes of a lane (pass-0 column `col` of a row of `cols`) in the second image of a paired
// tile: columns `split` and beyond (kHaloPairCols * stride of the halo, kHaloPairCols of a tile
// row).
RK_HOST_DEVICE constexpr uint32_t halo_second_passes(int col, int cols, int split, int cg) {
  uint32_t mask = 0;
  for (int v = 0; v * halo_pass_cols(cg) + col < cols; ++v)
    mask |= uint32_t(v * halo_pass_cols(cg) + col >= split) << v;
  return mask;
}

// The pass in which every lane's columns reach `split` (a tile row's or halo row's columns), where
// one is (split a whole number of passes: each lane's pass-0 column is below pass_cols); else -1
// (the lanes cross in different passes: halo_second_passes).
RK_HOST_DEVICE constexpr int halo_split_pass(int split, int cg) {
  return split % halo_pass_cols(cg) == 0 ? split / halo_pass_cols(cg) : -1;
}
// halo_second_passes where the split is a whole number of passes: the same for every lane (a
// compile-time mask, passes from halo_split_pass to `passes`).
RK_HOST_DEVICE constexpr uint32_t halo_split_mask(int split, int cg, int passes) {
  return ((1u << passes) - 1u) & ~((1u << halo_split_pass(split, cg)) - 1u);
}
// A lane's passes in the second image of a paired tile, on a row of `cols` columns in PASSES
// passes split at column SPLIT: halo_split_mask where the split is whole passes (the same for
// every lane), else the lane's own halo_second_passes. (The kernels test whether the tile is
// paired beside the call, where they read the kernel argument: a bool passed in was held in a
// register across the tile loop, and the register-bound kernels then changed.)
template <int SPLIT, int CG, int PASSES>
RK_HOST_DEVICE constexpr uint32_t halo_second(int col, int cols) {
  if constexpr (halo_split_pass(SPLIT, CG) >= 0) return halo_split_mask(SPLIT, CG, PASSES);
  else return halo_second_passes(col, cols, SPLIT, CG);
}
// Whether the lane's address moves into the second image in pass v (its first pass there): the
// kernels add the image jump then, which is zero off paired tiles, so where the split is whole
// passes it is pass halo_split_pass for every lane and tile.
template <int SPLIT, int CG>
RK_HOST_DEVICE constexpr bool halo_enters_second(int v, uint32_t second) {
  if constexpr (halo_split_pass(SPLIT, CG) >= 0) return v == halo_split_pass(SPLIT, CG);
  else return (second >> v & 1u) && !(v > 0 && (second >> (v - 1) & 1u));
}

// The tile list, slab-major (a CTA's contiguous run of it then spans one or two slabs, so it
// packs their weights once each): tile t = ((slab * units + u) * tiles_p + tp) * tiles_q + tq,
// a unit an image, or a pair of them (`paired`: image 2 u, and 2 u + 1 if N has it; one tile
// across the columns). 32-bit coordinates (a tile walk's two live tiles in 8 registers, not 16:
// halo_can_implement refuses a batch of 2^31 images).
struct HaloTile { int n, p0, q0, slab; };
RK_HOST_DEVICE constexpr int64_t halo_tiles_p(int64_t P) { return (P + kHaloTileP - 1) / kHaloTileP; }
RK_HOST_DEVICE constexpr int64_t halo_tiles_q(int64_t Q, bool paired) {
  return paired ? 1 : (Q + kHaloTileQ - 1) / kHaloTileQ;
}
RK_HOST_DEVICE constexpr int64_t halo_units(int64_t N, bool paired) { return paired ? (N + 1) / 2 : N; }
RK_HOST_DEVICE constexpr int64_t halo_tiles(int64_t N, int64_t P, int64_t Q, int64_t slabs, bool paired) {
  return slabs * halo_units(N, paired) * halo_tiles_p(P) * halo_tiles_q(Q, paired);
}
RK_HOST_DEVICE constexpr HaloTile halo_tile(int64_t t, int64_t N, int64_t P, int64_t Q, bool paired) {
  const int64_t tiles_q = halo_tiles_q(Q, paired), units = halo_units(N, paired);
  const int64_t tq = t % tiles_q, tp = t / tiles_q % halo_tiles_p(P);
  const int64_t rest = t / (tiles_q * halo_tiles_p(P));
  return {int(rest % units * (paired ? 2 : 1)), int(tp * kHaloTileP), int(tq * kHaloTileQ), int(rest / units)};
}

// The tile after `tl` in that order: a CTA walks its run with this, so that only the run's first
// tile costs halo_tile's 64-bit divisions.
RK_HOST_DEVICE constexpr HaloTile halo_tile_next(HaloTile tl, int64_t N, int64_t P, int64_t Q, bool paired) {
  if (!paired && tl.q0 + kHaloTileQ < Q) return {tl.n, tl.p0, tl.q0 + kHaloTileQ, tl.slab};
  if (tl.p0 + kHaloTileP < P) return {tl.n, tl.p0 + kHaloTileP, 0, tl.slab};
  if (tl.n + (paired ? 2 : 1) < N) return {tl.n + (paired ? 2 : 1), 0, 0, tl.slab};
  return {0, 0, 0, tl.slab + 1};
}

// A persistent CTA's tiles: the contiguous run [c T / G, (c + 1) T / G) of the slab-major list,
// so that it packs one slab's weights, or two.
struct HaloRange { int64_t begin, end; };
RK_HOST_DEVICE constexpr HaloRange halo_cta_tiles(int64_t cta, int64_t ctas, int64_t tiles) {
  return {cta * tiles / ctas, (cta + 1) * tiles / ctas};
}

// GEMM groups: GW channels each (whole 16-byte chunks: Cg, 8 at Cg = 4, the slab's 56 at
// Cg = 14, block-diagonal), halo_gemm_groups of them a slab.
RK_HOST_DEVICE constexpr int halo_gw(int cg) { return cg == 14 ? 56 : cg < 8 ? 8 : cg; }
RK_HOST_DEVICE constexpr int halo_gemm_groups(int cg) { return halo_slab(cg) / halo_gw(cg); }
RK_HOST_DEVICE constexpr int halo_tap_chunks(int cg) { return halo_gw(cg) / 8; }   // K chunks a tap
// The GEMM's K and N tiling per GEMM group: each class's k-steps (two 8-channel K chunks each),
// the classes' one after another.
RK_HOST_DEVICE constexpr int halo_class_ksteps(int cg, int mode, int cls) {
  return (halo_mask_taps(halo_class_mask(mode, cls)) * halo_tap_chunks(cg) + 1) / 2;
}
RK_HOST_DEVICE constexpr int halo_class_kstep0(int cg, int mode, int cls) {
  int j = 0;
  for (int c = 0; c < cls; ++c) j += halo_class_ksteps(cg, mode, c);
  return j;
}
RK_HOST_DEVICE constexpr int halo_ksteps(int cg, int mode = kHaloFprop) {
  return halo_class_kstep0(cg, mode, halo_classes(mode));
}
RK_HOST_DEVICE constexpr int halo_kstep_class(int j, int cg, int mode) {
  int cls = 0;
  while (cls + 1 < halo_classes(mode) && j >= halo_class_kstep0(cg, mode, cls + 1)) ++cls;
  return cls;
}
RK_HOST_DEVICE constexpr int halo_ntiles(int cg) { return halo_gw(cg) / kMmaN; }

// Whether k-step j (within class `cls`) and n8 tile nt of a block-diagonal GEMM group meet a
// common group: its two K chunks' input channels and the tile's output channels (chunk c covers
// channels 8c .. 8c + 7 of the GEMM group). Where they do not, B is zero there and the mma (and
// its B load) is skipped: at Cg = 14, 62% of the pairs are computed. Always true when the GEMM
// group is one group, or at Cg = 4 (one n8 tile spans both groups).
RK_HOST_DEVICE constexpr bool halo_kn_meet(int j, int nt, int cg, int mode, int cls) {
  if (halo_gw(cg) == cg) return true;
  const int chunks = halo_tap_chunks(cg), taps = halo_mask_taps(halo_class_mask(mode, cls));
  const int n_lo = (8 * nt) / cg, n_hi = (8 * nt + 7) / cg;
  for (int h = 0; h < 2; ++h) {
    const int kc = 2 * j + h;
    if (kc >= taps * chunks) continue;                     // K padding: zeros
    const int c = kc % chunks, k_lo = (8 * c) / cg, k_hi = (8 * c + 7) / cg;
    if (k_lo <= n_hi && n_lo <= k_hi) return true;
  }
  return false;
}

// A, by definition one 16 x 16 block per m16 tile and k-step, as an ldmatrix.x4 would load it:
// matrix i is A register i (rows 8 (i % 2) .. + 7, K chunk i / 2 of the k-step; ldsm_elem), so
// lane l points at output column halo_a_col(l) = l % 8 + 8 ((l / 8) % 2) of its m16 tile and K
// chunk 2 j + l / 16. (The kernel loads the blocks by pairs, halo_a_schedule below.)
RK_HOST_DEVICE constexpr int halo_a_col(int lane) { return lane % 8 + 8 * ((lane / 8) % 2); }
// The word where lane `lane`'s row starts for k-step j (within its class, tap set `mask`), tile
// row pl, GEMM group gl; -1 for a chunk of K padding (zeros). The definition; the kernel adds
// two parts: the lane's pixel (halo_pixel_base, once per kernel) and a pair's offset
// (halo_a_pair_offset, a compile-time constant for each half of the warp).
RK_HOST_DEVICE constexpr int halo_a_row_word(int pl, int lane, int j, int gl, int cg, int stride,
                                             int mask = 0x1FF) {
  const int kc = 2 * j + lane / 16, ti = kc / halo_tap_chunks(cg);
  if (ti >= halo_mask_taps(mask)) return -1;
  const int tap = halo_mask_tap(mask, ti), chan = gl * halo_gw(cg) + 8 * (kc % halo_tap_chunks(cg));
  return halo_word(pl * stride + tap / 3, halo_a_col(lane) * stride + tap % 3, chan, stride, cg);
}
RK_HOST_DEVICE constexpr int halo_pixel_base(int pl, int ql, int stride, int cg) {
  return halo_word(pl * stride, ql * stride, 0, stride, cg);
}
// The word of tap `tap` (3 row + column shift; rows past the stencil's too) from a pixel's.
RK_HOST_DEVICE constexpr int halo_tap_offset(int tap, int stride, int cg) {
  // column shift s = tap % 3 from an even column (stride 2): s = 1 lands in the odd half.
  const int s = tap % 3, slots = stride == 1 ? s : (s == 1 ? halo_half_cols(stride) : s / 2);
  return (tap / 3) * halo_row_words(stride, cg) + slots * halo_pixel_words(cg);
}

// A fragments shared by a warp's two tile rows. Tile row 2w + 1 is `stride` halo rows below
// 2w, so tap (r, s) of m16 tile 1 reads the halo rows that tap (r + stride, s) of tile 0 would.
// An A operand is two register pairs (a0 a1: K half 0, a2 a3: K half 1), each the 16 x 8 block
// of one halo row (relative to the warp's first), column shift and 8-channel K chunk: a "pair".
// Tile mt's pair for K half h of k-step j is row mt * stride + r of its tap; the pairs of a
// class and GEMM group are numbered (row * 3 + shift) * chunks + chunk, and the number
// halo_a_pairs (one past the last) names the zero pair of K padding (zero registers, no load).
// At stride 1 a warp's 6 row taps read 4 distinct halo rows (two thirds of the pairs), at
// stride 2 5 of 6; across the phase classes' sparse rows none repeats.
RK_HOST_DEVICE constexpr int halo_a_pairs(int cg, int stride) {
  return (stride + 3) * 3 * halo_tap_chunks(cg);
}
RK_HOST_DEVICE constexpr int halo_a_pair(int j, int half, int mt, int cg, int stride, int mask = 0x1FF) {
  const int chunks = halo_tap_chunks(cg), kc = 2 * j + half, ti = kc / chunks;
  if (ti >= halo_mask_taps(mask)) return halo_a_pairs(cg, stride);
  const int tap = halo_mask_tap(mask, ti);
  return ((mt * stride + tap / 3) * 3 + tap % 3) * chunks + kc % chunks;
}
// A pair's first word from the lane's pixel base (halo_pixel_base of its first tile row): the
// row and shift as halo_tap_offset's tap 3 row + shift, plus the chunk of GEMM group gl.
RK_HOST_DEVICE constexpr int halo_a_pair_offset(int pair, int gl, int cg, int stride) {
  const int chunks = halo_tap_chunks(cg);
  return halo_tap_offset(pair / chunks, stride, cg) + (gl * halo_gw(cg) + 8 * (pair % chunks)) / 2;
}
// How the pairs are loaded. An ldmatrix loads one operand whole, its "quad" (lanes 0-15 K
// half 0's pair, lanes 16-31 K half 1's), and an operand of tile 1 whose quad tile 0 loaded
// takes its registers: with an even number of chunks a tap a quad is one tap's chunk pair, and
// tile 1 at tap (r, s) reads tile 0's quad at (r + stride, s); with an odd number (Cg = 14, 24,
// 40) quads straddle taps and repeat only at stride 2 (tap (r + 2, s) is two taps on in K).
// Where a tap is one chunk (Cg = 4, 8) a k-step's two K halves are two taps and no quad
// repeats; there, at stride 1 with all nine taps (fprop, and dgrad at stride 1), an ldmatrix
// loads two pairs `stride` halo rows apart, the same shift and chunk ("couples": lanes 0-15
// point at the lower pair's rows, lanes 16-31 `stride` rows further, a per-lane constant, so
// that every load is the lane's base plus a compile-time offset), each pair once, and ptxas
// moves the registers into each mma's operand (about as many instructions as the loads and
// their addresses saved, for 40% fewer wavefronts; with the phase classes' sparse rows or at
// stride 2 the saving would not pay the moves).
RK_HOST_DEVICE constexpr bool halo_a_quads(int cg, int stride, int mask) {
  return !(halo_tap_chunks(cg) == 1 && stride == 1 && mask == 0x1FF);
}
// The couples (where halo_a_quads is false): the rows a class's operands read (its taps' rows
// r and r + stride), in ascending order, taken into couples (r, r + stride), an .x4, where both
// are read and the upper is not yet taken, else alone, an .x2. By the pair's row: 1 the lower
// of an .x4, 2 its upper, 0 an .x2 (-1: not read). At stride 1 rows 0-3 are two couples (at
// stride 2 they would be (0, 2), (1, 3) and 4 alone).
// The pair a couple's .x4 loads for lanes 16-31: `stride` halo rows below pair `lower`.
RK_HOST_DEVICE constexpr int halo_a_couple_upper(int lower, int cg, int stride) {
  return lower + stride * 3 * halo_tap_chunks(cg);
}
RK_HOST_DEVICE constexpr int halo_a_couple(int row, int stride, int mask = 0x1FF) {
  int role[5] = {-1, -1, -1, -1, -1};
  for (int b = 0; b < 9; ++b)
    if (mask >> b & 1) role[b / 3] = role[b / 3 + stride] = 0;
  for (int r = 0; r + stride < 5; ++r)
    if (role[r] == 0 && role[r + stride] == 0) role[r] = 1, role[r + stride] = 2;
  return row < 5 ? role[row] : -1;
}
// The schedule of a class's A loads, the same for every GEMM group. Its operands in k-step
// order, tile 0 then tile 1; or, with quads of one tap (an even number of chunks a tap),
// ordered by (column shift, chunk pair, halo row, tile), so that tile 1's operand at tap
// (r, s) comes right after tile 0's at (r + stride, s) whose quad it takes, and what waits
// between a k-step's two operands is its B registers (`first`: the operand that loads them),
// not A's. Before operand i, the ldmatrix that no earlier one did (its registers: operand
// `src`'s, i itself but for a quad loaded earlier):
//   couples: the pairs it needs that no earlier load brought, one or two loads: `load[k]` the
//            lower pair of a couple or a pair alone (-1: none), `x2[k]` alone;
//   quads:   its quad, unless operand `src` < i loaded the same (load[0] = a0, else -1; x2[0]
//            where K half 1 is padding: an .x2 of a0, zeros in a2 a3).
constexpr int kHaloMaxKsteps = 36;                     // Cg = 64: 9 taps x 8 chunks / 2
struct HaloAOperand { int j, mt, a0, a1, load[2]; bool x2[2]; int src; bool first; };
struct HaloASchedule {
  int operands, loads, x2;                             // operands = 2 x k-steps; ldmatrix: x4 + x2
  HaloAOperand op[2 * kHaloMaxKsteps];
};
RK_HOST_DEVICE constexpr HaloASchedule halo_a_schedule(int cg, int stride, int mask = 0x1FF) {
  HaloASchedule s{};
  const int chunks = halo_tap_chunks(cg), pad = halo_a_pairs(cg, stride), row_pairs = 3 * chunks;
  const bool quads = halo_a_quads(cg, stride, mask), by_rows = quads && chunks % 2 == 0;
  s.operands = 2 * ((halo_mask_taps(mask) * chunks + 1) / 2);
  int key[2 * kHaloMaxKsteps] = {};
  for (int i = 0; i < s.operands; ++i) {
    const int j = i / 2, mt = i % 2, a0 = halo_a_pair(j, 0, mt, cg, stride, mask);
    s.op[i] = {j, mt, a0, halo_a_pair(j, 1, mt, cg, stride, mask), {-1, -1}, {false, false}, i, false};
    const int row = a0 / row_pairs, shift = a0 / chunks % 3, cp = a0 % chunks / 2;
    key[i] = by_rows ? ((shift * chunks + cp) * (stride + 3) + row) * 2 + mt : i;
  }
  for (int i = 1; i < s.operands; ++i)                 // insertion sort by key (keys distinct)
    for (int k = i; k > 0 && key[k - 1] > key[k]; --k) {
      const int kk = key[k];
      key[k] = key[k - 1], key[k - 1] = kk;
      const HaloAOperand o = s.op[k];
      s.op[k] = s.op[k - 1], s.op[k - 1] = o;
    }
  bool loaded[5 * 3 * 8 + 1] = {};                     // (stride 2's 5 rows) x 3 x (64 / 8), padding
  bool b_loaded[kHaloMaxKsteps] = {};
  loaded[pad] = true;
  for (int i = 0; i < s.operands; ++i) {
    HaloAOperand& o = s.op[i];
    o.src = i;
    o.first = !b_loaded[o.j];
    b_loaded[o.j] = true;
    if (quads) {
      for (int k = 0; k < i; ++k)
        if (s.op[k].load[0] >= 0 && s.op[k].a0 == o.a0 && s.op[k].a1 == o.a1) o.src = k;
      if (o.src == i) o.load[0] = o.a0, o.x2[0] = o.a1 == pad;
    } else {
      const int need[2] = {o.a0, o.a1};
      int n = 0;
      for (int pr : need) {
        if (loaded[pr]) continue;
        const int role = halo_a_couple(pr / row_pairs, stride, mask);
        const int lower = role == 2 ? pr - stride * row_pairs : pr;
        if (role < 0 || (role == 1 && halo_a_couple_upper(lower, cg, stride) >= pad))
          return {-1, 0, 0, {}};                       // a row no couple holds (never: checked)
        o.load[n] = lower;
        o.x2[n] = role == 0;
        loaded[lower] = true;
        if (role != 0) loaded[halo_a_couple_upper(lower, cg, stride)] = true;
        ++n;
      }
    }
    s.loads += (o.load[0] >= 0) + (o.load[1] >= 0);
    s.x2 += o.x2[0] + o.x2[1];
  }
  return s;
}

// B, packed: the word of register `reg` of `lane` for k-step j (of all classes) and n8 tile
// nt of GEMM group gl: consecutive lanes read consecutive 8-byte pairs (one conflict-free 64-bit
// load per lane).
RK_HOST_DEVICE constexpr int halo_weight_word(int gl, int j, int nt, int lane, int reg, int cg,
                                              int mode = kHaloFprop) {
  return (((gl * halo_ksteps(cg, mode) + j) * halo_ntiles(cg) + nt) * 32 + lane) * 2 + reg;
}
RK_HOST_DEVICE constexpr int halo_slab_weight_words(int cg, int mode = kHaloFprop) {
  return halo_gemm_groups(cg) * halo_ksteps(cg, mode) * halo_ntiles(cg) * 64;
}
// A weight of `channels` output channels packed before the launch (halo_pack_launch): every
// slab's words, slab after slab, as a CTA would pack them into shared memory.
RK_HOST_DEVICE constexpr int64_t halo_packed_words(int64_t channels, int cg, int mode = kHaloFprop) {
  return channels / halo_slab(cg) * halo_slab_weight_words(cg, mode);
}
// The packing kernel: CTA b of 2 x `slabs` (`slabs` without dgrad) packs slab b of fprop's
// layout, or slab b - slabs of dgrad's (mode `dgrad_mode`) after all of fprop's; the word of
// the buffer its slab starts at.
RK_HOST_DEVICE constexpr int64_t halo_pack_block_word(int64_t b, int64_t slabs, int cg, int dgrad_mode) {
  const int64_t fprop = halo_slab_weight_words(cg, kHaloFprop);
  return b < slabs ? b * fprop : slabs * fprop + (b - slabs) * halo_slab_weight_words(cg, dgrad_mode);
}
// A pre-packed slab's copy into shared memory (fprop_halo_kernel<..., true>): thread t's r-th
// 16-byte piece (r < halo_weight_rounds) is piece t + r * threads of the slab's words / 4, the
// same piece of shared memory; -1 past the last.
RK_HOST_DEVICE constexpr int halo_weight_rounds(int cg, int mode) {
  return (halo_slab_weight_words(cg, mode) / 4 + kHaloThreads - 1) / kHaloThreads;
}
RK_HOST_DEVICE constexpr int halo_weight_piece(int r, int t, int cg, int mode) {
  const int pieces = halo_slab_weight_words(cg, mode) / 4, i = t + r * kHaloThreads;
  return pieces % kHaloThreads == 0 || i < pieces ? i : -1;   // (t < threads: whole rounds fit)
}
// What a packed word holds: half e (0: low 16 bits) of register `reg` of `lane` is the weight of
// output n, input c and stencil tap `tap` of class `cls` in group `sub` of the GEMM group
// (0 but at Cg = 4), or zero (padding, or off the diagonal) when `ok` is false.
struct HaloWeightElem { bool ok; int n, c, tap, cls, sub; };
// The same for k-step jj of class cls (the packing runs each class with cls compile-time, so
// its tap set is a constant and the i-th tap a few selects).
RK_HOST_DEVICE constexpr HaloWeightElem halo_class_weight_elem(int cls, int jj, int nt, int lane, int reg,
                                                               int e, int cg, int mode = kHaloFprop) {
  const int mask = halo_class_mask(mode, cls);
  const int row = (lane % 4) * 2 + 8 * reg, col = lane / 4;     // mma_b_coord
  const int kk = jj * kMmaK + row + e, n = nt * kMmaN + col;
  const int ti = kk / halo_gw(cg), ch = kk % halo_gw(cg);
  if (ti >= halo_mask_taps(mask) || ch / cg != n / cg) return {false, 0, 0, 0, cls, 0};
  int tap = 0;
  for (int n = 0, i = 0; n < 9; ++n)
    if (mask >> halo_k_tap(n) & 1) tap = i++ == ti ? halo_k_tap(n) : tap;
  return {true, n % cg, ch % cg, tap, cls, n / cg};
}
RK_HOST_DEVICE constexpr HaloWeightElem halo_weight_elem(int j, int nt, int lane, int reg, int e, int cg,
                                                         int mode = kHaloFprop) {
  const int cls = halo_kstep_class(j, cg, mode);
  return halo_class_weight_elem(cls, j - halo_class_kstep0(cg, mode, cls), nt, lane, reg, e, cg, mode);
}

// Where a packed element comes from in the weight w[K][Cg][3][3]. fprop: w[g*Kg + n][c][tap].
// dgrad runs the kernel on dy (dgrad_halo): at stride 1 dx is the convolution of dy with
// padding 2 - pad and the weight transposed within each group and rotated by 180 degrees,
// w'[g*Cg + n][k][tap] = w[g*Kg + k][n][8 - tap] (Kg == Cg); for the phases the same transpose
// and the kernel row and column of halo_weight_r / _s. Only the packing differs.
struct HaloWeightSource { int64_t k, c; int r, s; };
RK_HOST_DEVICE constexpr HaloWeightSource halo_weight_source(int64_t group, int n, int c, int tap,
                                                             int cls, int cg, int mode) {
  const int r = halo_weight_r(tap / 3, cls, mode), s = halo_weight_s(tap % 3, cls, mode);
  return mode == kHaloFprop ? HaloWeightSource{group * cg + n, c, r, s}
                            : HaloWeightSource{group * cg + c, n, r, s};
}

// The packing (halo_pack_slab): thread 64 h + l writes register l % 2 of lane l / 2 of the
// (k-step, n8 tile) pairs of half h, the pairs j * ntiles + nt of parity h.
RK_HOST_DEVICE constexpr int halo_pack_half(int j, int nt, int cg) { return (j * halo_ntiles(cg) + nt) % 2; }

// A thread's pairs of a class are its words k = 0, 1, ... (pair 2 k + its half's parity), in
// every GEMM group; it packs them in rounds, each loading a round's words of all the slab's
// GEMM groups at once (their loads in flight together), then storing them. Words a thread loads
// at once, about: 12, or 4 for dgrad's phase classes, whose kernel at Cg = 24 spilled 8 bytes (at
// its 128 registers) with 8 once the A loads followed halo_a_schedule (2026-12-03).
RK_HOST_DEVICE constexpr int halo_pack_unroll(int mode) { return mode == kHaloDgradPhases ? 4 : 12; }
// A round's words of one GEMM group, of a class whose thread has `words` words a GEMM group: all
// of them where the slab's are at most 1.5 x halo_pack_unroll (one round, no loop: Cg = 4, 8,
// 16; Cg = 24's 21 spilled), else about halo_pack_unroll over the GEMM groups, a divisor of
// `words` where one is near (a remainder is predicated off in every round, which cost the Cg =
// 16 packing twice its instructions a word).
RK_HOST_DEVICE constexpr int halo_pack_round(int cg, int mode, int words) {
  const int gg = halo_gemm_groups(cg), unroll = halo_pack_unroll(mode), per = (unroll + gg - 1) / gg;
  if (2 * gg * words <= 3 * unroll) return words;
  for (int r = per; 2 * r > per; --r)
    if (words % r == 0) return r;
  return per;
}
// Whether word k (pair pr) of a round is one of the thread's: within its `words` (a round past
// them where `round` leaves a remainder) and its pair within the class's `pairs` (the odd half's
// last word where `pairs` is odd). The compile-time halves fold away where nothing remains.
RK_HOST_DEVICE constexpr bool halo_pack_live(int k, int words, int round, int pr, int pairs) {
  return (words % round == 0 || k < words) && (pairs % 2 == 0 || pr < pairs);
}

// Epilogue staging: channels (chan, chan + 1) of tile pixel `pixel` (= row * 16 + column), a
// pixel every slab / 2 words rounded up to 4 mod 8: the epilogue's pair stores conflict-free and
// each pixel 16-byte aligned for the 16-byte loads of the stores to y.
RK_HOST_DEVICE constexpr int halo_out_pixel_words(int slab) {
  return slab / 2 + (12 - (slab / 2) % 8) % 8;
}
RK_HOST_DEVICE constexpr int halo_out_word(int pixel, int chan, int slab) {
  return pixel * halo_out_pixel_words(slab) + chan / 2;
}

// Shared memory of one CTA (bytes): two halo stages, the slab's weights, the output staging.
RK_HOST_DEVICE constexpr int64_t halo_smem_bytes(int stride, int cg, int mode = kHaloFprop) {
  return 4 * (2 * int64_t(halo_stage_words(stride, cg)) + halo_slab_weight_words(cg, mode) +
              int64_t(kHaloTileP * kHaloTileQ) * halo_out_pixel_words(halo_slab(cg)));
}
// Persistent CTAs one SM holds, as the launcher sizes its grid (shared memory bound, capped).
RK_HOST_DEVICE constexpr int halo_ctas_per_sm(int stride, int cg, int mode = kHaloFprop) {
  const int64_t by_smem = kHaloSmPerSmem / (halo_smem_bytes(stride, cg, mode) + 1024);
  return by_smem < 1 ? 1 : by_smem > kHaloMaxCtasPerSm ? kHaloMaxCtasPerSm : int(by_smem);
}
// The shortest run of tiles worth a CTA: packing a slab's weights costs words * 60 / 128
// instructions a warp by this estimate (halo_pack_slab's SASS has 29-146 a word; with 100 here
// stages 3 and 4 of 32x4d got one CTA an SM, which the model predicts slower, by the tiles'
// latency, than the two this gives), a tile's GEMM and epilogue about 5 per k-step, 3 per mma
// pair and 40 per n8 tile and class; a run twice the packing's worth of tiles keeps the
// packing under a third of a CTA's work (the model: 2 CTAs an SM instead of 4 at stages 3 and
// 4 of 32x4d, where a slab's weights are 9-18 KB). A weight packed before the launch
// (`prepacked`: ConvParams::packed) is copied at about 2 instructions a word.
RK_HOST_DEVICE constexpr int64_t halo_min_run(int cg, int mode = kHaloFprop, bool prepacked = false) {
  int kn = 0;
  for (int cls = 0; cls < halo_classes(mode); ++cls)
    for (int j = 0; j < halo_class_ksteps(cg, mode, cls); ++j)
      for (int nt = 0; nt < halo_ntiles(cg); ++nt) kn += halo_kn_meet(j, nt, cg, mode, cls);
  const int64_t gg = halo_gemm_groups(cg);
  const int64_t tile = gg * (5 * halo_ksteps(cg, mode) + 3 * kn + 40 * halo_ntiles(cg) * halo_classes(mode));
  const int64_t pack = int64_t(halo_slab_weight_words(cg, mode)) * (prepacked ? 2 : 60) / 128;
  return 2 * ((pack + tile - 1) / tile);
}
// The persistent grid: the CTAs an SM holds, or fewer where that gives each a run shorter than
// halo_min_run tiles (the same number on every SM, rounded to the nearest: an SM with one CTA
// more than the others would be the tail), at least one an SM; never more CTAs than tiles.
RK_HOST_DEVICE constexpr int64_t halo_grid(int64_t tiles, int64_t sms, int stride, int cg, int mode = kHaloFprop,
                                           bool prepacked = false) {
  const int64_t held = halo_ctas_per_sm(stride, cg, mode);
  const int64_t by_run = (2 * tiles / halo_min_run(cg, mode, prepacked) + sms) / (2 * sms);   // rounded
  const int64_t per_sm = by_run < 1 ? 1 : by_run < held ? by_run : held;
  return sms * per_sm < tiles ? sms * per_sm : tiles;
}

}  // namespace rk
