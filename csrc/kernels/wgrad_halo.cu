// wgrad_halo.cu: rung 4 of wgrad, designed to move each byte once. A CTA owns a block of
// channels (8 at Cg = 4 and 8, four groups at Cg = 14, else one group; at Cg = 64 a quarter of
// its output channels) and a split of the dy tiles, whose shape wh_geometry picks per problem:
// of the bands of whole rows (column runs where a row is too wide for a stage) the one staging
// the fewest units, whole images where one fits, two 7x7 images at 32x4d's stage 4. Each tile's
// x halo and dy pixels are staged in shared memory once, by 16-byte asynchronous copies into a
// ring of 2-8 stages (each thread a fixed place in a row of copies, walking the rows: a copy is
// 12 instructions), and all nine taps read them there through ldmatrix.trans (a staged
// pixel's 8 channels are a matrix row; .trans gives the pixel pairs an m16n8k16 register
// holds). K is the tile's pixels, rows padded to 8; a table of its K halves, written once per
// CTA, gives each lane its row address, and the K-block loop adds offsets fixed for the launch.
// The nine taps' partial weight gradients stay in registers over the whole split; the warps'
// sums are added in warp order. On sm_90 and later a block's splits are one thread-block
// cluster (at most 16 CTAs): each CTA leaves its split's sums in its shared memory, and each
// adds a share of them over the cluster's CTAs in split order (distributed shared memory) and
// stores those weights: one launch, no partials through L2. Elsewhere (sm_80, or a device that
// cannot schedule the clusters) the split's partials are written once and wgrad_reduce.cuh adds
// them in split order: the same sums in the same order, so the same bits either way (bitwise
// deterministic). Index maps, layouts, the tiling and both reductions: wgrad_halo_fragments.h,
// emulated warp by warp on the CPU (csrc/tests/test_wgrad_halo.cpp).
//
//   dw[g*Kg + k, c, r, s] = sum_{n, p, q} dy[n, g*Kg + k, p, q] * x[n, g*Cg + c, p*st - pad + r, q*st - pad + s]
//
// Predicted, not measured (resnext_kernels/perf_model.py `cuda:wgrad_halo`, registers from the
// cubin, the loops' instructions counted in its sm_90 SASS; H200, ResNeXt-50 32x4d, batch 64,
// bf16), us, bound by L2 loads at stages 1-2 and the stage-4 entry (x and dy both load: (x + dy)
// / 2.8 TB/s is 65% of the DRAM roofline at best), by latency at stage 3 and its entry, by issue
// at stage 4: stage1 42, stage2.entry 50, stage2 22, stage3.entry 29, stage3 13, stage4.entry
// 14.5, stage4 9.7: 0.37 ms over the 16 layers, 53% of the 0.196 ms roofline (cuDNN measured
// 0.86 ms: 138 / 54 / 47 / 36 / 30 / 24 / 20); with a 5 TB/s L2 and 1.5 us launches 0.28 ms
// (71%). Before (2026-12-03, thirteenth session) each staging copy decoded its index (37-41
// instructions a copy) and the cluster's adding took a thread a slot (528 instructions a tile at
// Cg = 32, now 161): 0.38 ms; with wgrad_reduce's launch and partials (before the twelfth)
// 0.43 ms; with the split count before the eleventh, 0.44 ms. The 8x8 tiles before (2026-12-03)
// were predicted at 0.52 ms: 1.56 x halo re-reads, 77% of the K on 28-, 14- and 7-wide grids,
// and 116 instructions a warp a 64-pixel tile at Cg = 4; a K-block (16 pixels) is now 26 for its
// 5 MMAs. 8x14d's stage 1 (Cg = 14, columns, 8x8 tiles by the rule): 59 us (Triton 77). A
// last-CTA reduction inside the launch (partials in L2, one CTA of a block adding them) was
// tried before the clusters and dropped: latency-bound, 4.6 us at Cg = 16-32; the cluster
// spreads the adding over the block's CTAs, a share each.
// Unverified on a GPU: forced only until the GPU check passes it.
//
// Serves bf16/fp16, channels_last x and dy, Kg == Cg in {4, 8, 14, 16, 24, 32, 40, 64} (Cg = 4: an
// even number of groups; Cg = 14: a multiple of four, the block's (chunk, n8 tile) columns that
// share a group), stride 1 or 2 (Cg = 64: 1), dilation 1, 16-byte aligned pixels; can_implement
// refuses the rest (the lower rungs run).
#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>

#include "async_copy.cuh"
#include "cluster.cuh"
#include "common.cuh"
#include "kernels.h"
#include "mma_ops.cuh"
#include "wgrad_halo_fragments.h"
#include "wgrad_reduce.cuh"
#include "../registry.h"

namespace rk {

namespace {

// cp.async.wait_group takes its count as an immediate: the ring's depth is the launch's.
__device__ __forceinline__ void cp_async_wait_stages(int stages) {
  switch (stages) {
    case 2: cp_async_wait<0>(); break;
    case 3: cp_async_wait<1>(); break;
    case 4: cp_async_wait<2>(); break;
    case 5: cp_async_wait<3>(); break;
    case 6: cp_async_wait<4>(); break;
    case 7: cp_async_wait<5>(); break;
    default: cp_async_wait<6>(); break;
  }
}

template <typename T, int CG, int STRIDE>
__global__ void __launch_bounds__(kWhThreads, wh_min_ctas(CG))
wgrad_halo_kernel(ConvParams p, WhGeom g, int64_t splits, int64_t tiles, bool cluster) {
  constexpr int CB = wh_block(CG), MT = wh_warp_mtiles(CG);
  constexpr int NT = wh_ntiles(CG), KW = wh_kwarps(CG);
  extern __shared__ uint4 smem[];                       // 16-byte units
  const ConvProblem& q = p.problem;
  const int64_t split = blockIdx.x % splits, part_n = blockIdx.x / splits;
  const int64_t block = part_n / wh_nparts(CG), np = part_n % wh_nparts(CG);   // channels, N part
  const int64_t t_begin = wh_split_begin(split, splits, tiles);
  const int64_t t_end = wh_split_begin(split + 1, splits, tiles);
  const T* __restrict__ x = static_cast<const T*>(p.x) + block * CB;
  const T* __restrict__ dy = static_cast<const T*>(p.y) + block * CB + np * NT * 8;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  // The table of K halves (byte offsets), after the ring; read only after the tile loop's first
  // barrier.
  int* const table = reinterpret_cast<int*>(smem + g.stages * g.stage_units);
  for (int h = threadIdx.x; h < 2 * g.kblocks; h += kWhThreads) table[h] = 16 * wh_half_base(h, g, STRIDE, CG);

  // Issues tile tl's copies into stage `slot`: the x halo, then dy (zeros outside the images).
  // Offsets from the tile's first image are 32-bit (halo_offsets_reason and wh_geometry's
  // max_images check they fit). The rows are walked (wh_x_walk, wh_dy_walk, wh_walk_rows): this
  // thread's position in a row and its row-0 copy are fixed for the launch, a tile adds its
  // column's bounds and source, and a pass moves them a step of rows.
  const int xs_n = int(p.x_stride[0]), xs_h = int(p.x_stride[2]), xs_w = int(p.x_stride[3]);
  const int ys_n = int(p.y_stride[0]), ys_h = int(p.y_stride[2]), ys_w = int(p.y_stride[3]);
  const int x_h = int(q.H), x_w = int(q.W), y_h = int(q.P), y_w = int(q.Q), images = int(q.N);
  const uint32_t smem_s = shared_address(smem);
  const WhWalk xw = wh_x_walk(g, CG), dw = wh_dy_walk(g, CG);
  const WhPlace xp = wh_place(threadIdx.x, xw), dp = wh_place(threadIdx.x, dw);
  const WhCopy x0 = wh_x_copy(xp.pos, g, STRIDE, CG), d0 = wh_dy_copy(dp.pos, g, CG);
  const int dy_rows = wh_dy_rows(d0.col, g);
  const int x_row_units = wh_x_row_units(g, CG), dy_row_units = wh_dy_row_units(g, CG);
  const uint32_t x_pass_bytes = 16u * uint32_t(xw.step * x_row_units), dy_pass_bytes = 16u * uint32_t(dw.step * dy_row_units);
  const int x_pass = xw.step * xs_h, x_next_image = xs_n - g.xr * xs_h;     // elements
  const int dy_pass = dw.step * ys_h, dy_next_image = ys_n - g.tr * ys_h;
  const WhRows x_rows = wh_x_rows(g, xw), dy_rows_of = wh_dy_rows_of(g, dw, dy_rows);
  auto stage = [&](const WhTile& tl, int slot) {
    const int h0 = tl.p0 * STRIDE - int(q.pad_h), w0 = tl.q0 * STRIDE - int(q.pad_w), n_left = images - tl.n;
    const T* const x_tile = x + int64_t(tl.n) * p.x_stride[0];
    const T* const dy_tile = dy + int64_t(tl.n) * p.y_stride[0];
    const uint32_t dst = smem_s + 16u * uint32_t(slot * g.stage_units);
    {
      // From this thread's first row (an idle thread: past the last); rows h of the tensor.
      const int w = w0 + x0.col, first = xp.active ? xp.row0 : g.ti * g.xr;
      const bool col_in = !x0.pad && unsigned(w) < unsigned(x_w);
      wh_walk_rows(x_rows, h0, first, x_tile + ((h0 + first) * xs_h + w * xs_w + x0.chunk * 8), x_pass, x_next_image,
                   dst + 16u * uint32_t(x0.unit + first * x_row_units), x_pass_bytes,
                   [&](int img, int h, const T* src, uint32_t to) {
                     const bool in = col_in && img < n_left && unsigned(h) < unsigned(x_h);
                     cp_async16_at(to, in ? src : x_tile, in ? 16 : 0);
                   });
    }
    {
      // K rows pp of the tensor; after the last image the padding rows.
      const int qq = tl.q0 + d0.col, first = dp.active ? dp.row0 : dy_rows;
      const bool col_in = !d0.pad && qq < y_w;
      wh_walk_rows(dy_rows_of, tl.p0, first, dy_tile + ((tl.p0 + first) * ys_h + qq * ys_w + d0.chunk * 8), dy_pass,
                   dy_next_image, dst + 16u * uint32_t(d0.unit + first * dy_row_units), dy_pass_bytes,
                   [&](int img, int pp, const T* src, uint32_t to) {
                     const bool in = col_in && img < g.ti && img < n_left && pp < y_h;
                     cp_async16_at(to, in ? src : dy_tile, in ? 16 : 0);
                   });
    }
  };

  // Accumulators: [M tile a warp][n8 tile], or with columns (Cg = 14) [tap pair][column].
  constexpr bool COLS = wh_columns(CG);
  constexpr int AM = COLS ? kWhTapPairs : MT, AN = COLS ? wh_warp_cols(CG) : NT;
  float acc[AM][AN][4] = {};
  // Columns: this warp's (x chunk, n8 tile) pairs, computed once (warp-uniform). A warp with
  // fewer than AN repeats its last (computed, not stored), so that the loop has no branches;
  // `fresh`: the column's chunk differs from the previous one's (its A is loaded).
  WhCol col[AN] = {};
  bool fresh[AN] = {};
#pragma unroll
  for (int j = 0; j < AN; ++j) {
    if (!COLS) break;
    col[j] = wh_warp_col(warp, j, CG);
    fresh[j] = wh_col_fresh(warp, j, CG);
  }
  // This lane's byte offsets, fixed for the launch: A's from its K half's base, for each of the
  // warp's M tiles (columns: each tap pair, chunk 0; a column adds its chunk), and B's in
  // K-block 0 of the stage (a K-block adds wh_b_kb_step units).
  constexpr int AO = COLS ? kWhTapPairs : MT, BO = COLS ? AN : wh_b_loads(CG);
  uint32_t a_off[AO], b_off[BO];
#pragma unroll
  for (int i = 0; i < AO; ++i) {
    const int m = COLS ? 0 : wh_warp_mtile(warp, i, CG);
    a_off[i] = 16u * uint32_t(COLS ? wh_col_a_off(0, i, lane, g, STRIDE, CG) : m < 0 ? 0 : wh_a_off(m, lane, g, STRIDE, CG));
  }
#pragma unroll
  for (int j = 0; j < BO; ++j)
    b_off[j] = 16u * uint32_t(g.x_units + (COLS ? wh_ntile_b_unit(col[j].nt, 0, lane, CG) : wh_b_unit(j, 0, lane, CG)));
  constexpr uint32_t B_STEP = 16u * wh_b_kb_step(CG);
  const int owned = wh_warp_mtile_count(warp, CG);   // M tiles this warp owns (at most MT)
  const int ns = g.stages;
  WhTile next = wh_tile(t_begin, q.P, q.Q, g);  // the next tile to stage, walked in order
  for (int s = 0; s < ns - 1; ++s) {
    if (t_begin + s < t_end) stage(next, s), next = wh_tile_next(next, y_h, y_w, g);
    cp_async_commit();
  }
  int slot = 0;                                 // the stage tile t is in
  for (int64_t t = t_begin; t < t_end; ++t) {
    cp_async_wait_stages(ns);            // tile t's copies (this thread's) have landed
    __syncthreads();                     // everyone's; and the stage refilled below is free
    const int refill = slot == 0 ? ns - 1 : slot - 1;
    if (t + ns - 1 < t_end) stage(next, refill), next = wh_tile_next(next, y_h, y_w, g);
    cp_async_commit();
    const uint32_t st = smem_s + 16u * uint32_t(slot * g.stage_units);
    slot = slot + 1 == ns ? 0 : slot + 1;
    if constexpr (COLS) {
#pragma unroll 1
      for (int kb = 0; kb < g.kblocks; ++kb) {
        const uint32_t a_base = st + uint32_t(table[wh_a_half(kb, lane)]), b_base = st + uint32_t(kb) * B_STEP;
        uint32_t b[AN][2];
#pragma unroll
        for (int j = 0; j < AN; ++j) ldsm_x2_trans_at(b[j][0], b[j][1], b_base + b_off[j]);
#pragma unroll
        for (int tp = 0; tp < kWhTapPairs; ++tp) {
          uint32_t a[4];
          ldsm_x4_trans_at(a, a_base + a_off[tp] + 16u * col[0].chunk);   // fresh
#pragma unroll
          for (int j = 0; j < AN; ++j) {       // a chunk's A once a tap pair
            if (j > 0) ldsm_x4_trans_if_at(fresh[j], a, a_base + a_off[tp] + 16u * col[j].chunk);
            MmaOp<T>::run(acc[tp][j], a, b[j][0], b[j][1]);
          }
        }
      }
    } else {
#pragma unroll 1
      for (int kb = KW == 1 ? 0 : warp; kb < g.kblocks; kb += KW) {
        const uint32_t a_base = st + uint32_t(table[wh_a_half(kb, lane)]), b_base = st + uint32_t(kb) * B_STEP;
        uint32_t b[NT][2];
#pragma unroll
        for (int j = 0; j < wh_b_loads(CG); ++j) {    // n8 tiles in pairs (x4), an odd last alone
          if (wh_b_pair(j, CG)) {
            uint32_t r[4];
            ldsm_x4_trans_at(r, b_base + b_off[j]);
            b[2 * j][0] = r[0], b[2 * j][1] = r[1], b[2 * j + 1][0] = r[2], b[2 * j + 1][1] = r[3];
          } else {
            ldsm_x2_trans_at(b[2 * j][0], b[2 * j][1], b_base + b_off[j]);
          }
        }
#pragma unroll
        for (int mi = 0; mi < MT; ++mi) {
          if (mi >= owned) continue;         // warps splitting M may own one tile fewer
          uint32_t a[4];
          ldsm_x4_trans_at(a, a_base + a_off[mi]);
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) MmaOp<T>::run(acc[mi][nt], a, b[nt][0], b[nt][1]);
        }
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();                       // the ring is free: the sums below reuse it

  // The split's sums: in a cluster, to this CTA's shared memory in fragment order (wh_slot; the
  // cluster adds them below); else to its partials in the workspace, [split][K][Cg][3][3], each
  // written once (wgrad_reduce adds them).
  float* const part = p.workspace + split * q.w_numel();
  float* const out = reinterpret_cast<float*>(smem) + wh_red_floats(CG);
  auto put = [&](const WhElem& e, float v) {
    if (e.ok) part[((block * CB + e.k) * CG + e.c) * 9 + e.tap] = v;
  };
  auto store = [&](int m, int nt, int ln, int i, float v) { put(wh_elem(m, int(np), nt, ln, i, CG), v); };
  auto keep = [&](int tile, const float (&a)[4]) {   // a lane's four: one 16-byte store
    *reinterpret_cast<float4*>(out + wh_slot(tile, lane, 0)) = make_float4(a[0], a[1], a[2], a[3]);
  };
  if constexpr (COLS) {
#pragma unroll
    for (int tp = 0; tp < AM; ++tp)
#pragma unroll
      for (int j = 0; j < AN; ++j) {
        if (!wh_col_stored(warp, j, CG)) continue;
        if (cluster) {
          keep(wh_col_tile(warp, j, tp, CG), acc[tp][j]);
        } else {
#pragma unroll
          for (int i = 0; i < 4; ++i) put(wh_col_elem(col[j], tp, lane, i, CG), acc[tp][j][i]);
        }
      }
  } else if constexpr (KW == 1) {
#pragma unroll
    for (int mi = 0; mi < MT; ++mi)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        if (mi >= owned) continue;
        const int m = wh_warp_mtile(warp, mi, CG);
        if (cluster) {
          keep(wh_mn_tile(m, nt, CG), acc[mi][nt]);
        } else {
#pragma unroll
          for (int i = 0; i < 4; ++i) store(m, nt, lane, i, acc[mi][nt][i]);
        }
      }
  } else {
    constexpr int PER_WARP = MT * NT * 128;   // = wh_out_slots: slot idx is (M tile, n8 tile, lane, i)
    float* const red = reinterpret_cast<float*>(smem);
#pragma unroll
    for (int mi = 0; mi < MT; ++mi)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)      // a lane's four as one 16-byte store: conflict-free
        *reinterpret_cast<float4*>(red + warp * PER_WARP + wh_slot(wh_mn_tile(mi, nt, CG), lane, 0)) =
            make_float4(acc[mi][nt][0], acc[mi][nt][1], acc[mi][nt][2], acc[mi][nt][3]);
    __syncthreads();
    for (int idx = threadIdx.x; idx < PER_WARP; idx += kWhThreads) {
      float v = 0.f;
#pragma unroll
      for (int w = 0; w < kWhWarps; ++w) v += red[w * PER_WARP + idx];   // warp order
      if (cluster) out[idx] = v;
      else store(idx / (NT * 128), idx / 128 % NT, idx / 4 % 32, idx % 4, v);
    }
  }
  if (!cluster) return;
  if (!cluster_target()) __trap();       // never launched so (clusters_fit): an error, not zeros

  // The cluster's reduction: this CTA (rank `split`) adds its share of the accumulator tiles
  // over the cluster's CTAs in rank order, warp w the tiles w, w + 4, ... of it, each lane its
  // four sums (a 16-byte load from each CTA), and stores those weights. The loads are unrolled
  // over a portable cluster's 8 splits, or over 16 past it (their loop apart, so that the common
  // one predicates off no more than it needs).
  cluster_sync();                        // every CTA's sums are in its shared memory
  const int n = int(splits);
  const float* remote[kWhClusterSplits];   // `out` in each CTA of the cluster
#pragma unroll
  for (int j = 0; j < kWhClusterSplits; ++j) remote[j] = cluster_map(out, j < n ? j : 0);
  // The weights in 32-bit offsets from the block's first (halo_weight_offsets_reason).
  T* const weights = static_cast<T*>(p.w) + block * CB * p.w_stride[0];
  const int ws_k = int(p.w_stride[0]), ws_c = int(p.w_stride[1]), ws_r = int(p.w_stride[2]), ws_s = int(p.w_stride[3]);
  const int first = wh_cluster_tile0(int(split), n, CG), end = wh_cluster_tile0(int(split) + 1, n, CG);
  auto add_up = [&](auto most) {
    for (int tile = first + warp; tile < end; tile += kWhWarps) {
      const int slot = wh_slot(tile, lane, 0);
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
      for (int j = 0; j < decltype(most)::value; ++j)
        if (j < n) {
          const float4 r = *reinterpret_cast<const float4*>(remote[j] + slot);
          v.x += r.x, v.y += r.y, v.z += r.z, v.w += r.w;
        }
      const float sums[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const WhElem e = wh_tile_elem(tile, int(np), lane, i, CG);
        if (e.ok) weights[e.k * ws_k + e.c * ws_c + e.tap / 3 * ws_r + e.tap % 3 * ws_s] = from_float<T>(sums[i]);
      }
    }
  };
  if (n <= kWhPortableCluster) add_up(std::integral_constant<int, kWhPortableCluster>{});
  else add_up(std::integral_constant<int, kWhClusterSplits>{});
  cluster_sync_relaxed();                // no CTA leaves while another reads its shared memory
}

int64_t blocks(const ConvProblem& q) { return q.C / wh_block(int(q.Cg())); }
int64_t ctas_per_split(const ConvProblem& q) { return blocks(q) * wh_nparts(int(q.Cg())); }

// Splits of the tiles. A split's CTAs walk ceil(tiles / splits) tiles each, and the SM that
// holds the most CTAs of the launch (one wave, at most wh_min_ctas an SM) runs that many walks
// side by side: the count minimises that SM's tiles, then prefers two or more CTAs an SM (one
// CTA walking alone waits on each tile's loads), then fewer splits (less to add); at most one
// split a tile, and at most `most`. (The model's sweep over the split count puts this within 2%
// of its best on every layer of 32x4d and 64x4d; benchmarks/NOTES.md, eleventh session.)
struct SplitChoice { int64_t splits = 1, load = -1; bool alone = true; };
SplitChoice best_splits(const ConvParams& p, int64_t tiles, int64_t most) {
  const ConvProblem& q = p.problem;
  const int64_t sms = std::max(1, p.num_sms), per_split = ctas_per_split(q);
  SplitChoice best;
  for (int64_t s = 1; s <= std::max<int64_t>(1, std::min(tiles, most)); ++s) {
    const int64_t per_sm = ceil_div(per_split * s, sms);
    if (per_sm > wh_min_ctas(int(q.Cg()))) break;    // past one wave
    const int64_t load = per_sm * ceil_div(tiles, s);
    const bool alone = per_sm < 2;
    if (best.load < 0 || load < best.load || (load == best.load && best.alone && !alone)) best = {s, load, alone};
  }
  return best;
}

// The split count, and whether the splits add up in a cluster (sm_90 on: at most
// kWhClusterSplits, 16, no partials, one launch) or through partials and wgrad_reduce (at most
// kWhMaxSplits, the partials, written and read back, at most the compulsory bytes). The cluster
// where its cap costs no tile walk on the busiest SM; else (few blocks: 8x14d's two at 56x56)
// the partials. `tiles`: the problem's, from the geometry its caller has.
struct WhSplit { int64_t splits; bool cluster; };
WhSplit split_of(const ConvParams& p, int64_t tiles) {
  const ConvProblem& q = p.problem;
  const int64_t io_bytes = 2 * (q.N * q.C * q.H * q.W + q.N * q.K * q.P * q.Q);
  const SplitChoice partials = best_splits(p, tiles, std::min(io_bytes / (q.w_numel() * 4 * 2), int64_t(kWhMaxSplits)));
  if (p.sm_version >= 90) {
    const SplitChoice cluster = best_splits(p, tiles, kWhClusterSplits);
    if (cluster.load <= partials.load) return {cluster.splits, true};
  }
  return {partials.splits, false};
}

std::atomic<bool> cluster_reduction{true};
std::atomic<int64_t> cluster_launches{0};

// Whether `kernel` was built for clusters (its PTX for sm_90 or later: code built for sm_80 and
// run by JIT on a newer device has no cluster reduction) and the device schedules `config`'s
// clusters of it at all (a cluster's CTAs must fit one GPC together); asked once per kernel,
// cluster size and shared memory on each device (a query that fails, say inside a stream
// capture that forbids it, answers no for this call only).
bool clusters_fit(const void* kernel, const cudaLaunchConfig_t& config) {
  static std::mutex mutex;
  static std::map<std::tuple<const void*, unsigned, size_t, int>, bool> known;
  int device = 0;
  cudaGetDevice(&device);
  const auto key = std::make_tuple(kernel, config.attrs[0].val.clusterDim.x, config.dynamicSmemBytes, device);
  const std::lock_guard<std::mutex> lock(mutex);
  const auto it = known.find(key);
  if (it != known.end()) return it->second;
  cudaFuncAttributes attr{};
  int clusters = 0;
  if (cudaFuncGetAttributes(&attr, kernel) != cudaSuccess ||
      (attr.ptxVersion >= 90 && cudaOccupancyMaxActiveClusters(&clusters, kernel, &config) != cudaSuccess)) {
    cudaGetLastError();                 // a failed query is no launch's error
    return false;
  }
  return known[key] = attr.ptxVersion >= 90 && clusters > 0;
}

template <typename T, int CG, int STRIDE>
int launch_wgrad_halo(const ConvParams& p, cudaStream_t stream) {
  const ConvProblem& q = p.problem;
  const WhGeom g = wgrad_halo_geometry(p);
  const int64_t tiles = wh_tiles(q.N, q.P, q.Q, g);
  const WhSplit split = split_of(p, tiles);
  const int64_t splits = split.splits;
  const auto kernel = wgrad_halo_kernel<T, CG, STRIDE>;
  const dim3 grid(unsigned(ctas_per_split(q) * splits));
  const int64_t smem = wh_smem_bytes(g, CG);
  if (split.cluster && cluster_reduction.load()) {
    // One launch: each (block, N part)'s splits are a cluster, which adds them.
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (err == cudaSuccess && splits > kWhPortableCluster)
      err = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    if (err != cudaSuccess) return int(err);
    cudaLaunchAttribute cluster{};
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim.x = unsigned(splits), cluster.val.clusterDim.y = 1, cluster.val.clusterDim.z = 1;
    cudaLaunchConfig_t config{};
    config.gridDim = grid, config.blockDim = dim3(kWhThreads), config.dynamicSmemBytes = size_t(smem);
    config.stream = stream, config.attrs = &cluster, config.numAttrs = 1;
    if (clusters_fit(reinterpret_cast<const void*>(kernel), config)) {
      err = cudaLaunchKernelEx(&config, kernel, p, g, splits, tiles, true);
      if (err == cudaSuccess) ++cluster_launches;
      return int(err != cudaSuccess ? err : cudaGetLastError());
    }
  }
  const int err = launch_with_smem(kernel, grid, kWhThreads, smem, stream, p, g, splits, tiles, false);
  return err != 0 ? err : launch_wgrad_reduce<T>(p, splits, stream);
}

template <typename T, int CG>
int launch_wgrad_halo_stride(const ConvParams& p, cudaStream_t stream) {
  if (p.problem.stride_h == 1) return launch_wgrad_halo<T, CG, 1>(p, stream);
  if constexpr (!wh_rows_fit(8, 2, CG)) return int(cudaErrorInvalidValue);   // refused: Cg = 64
  else return launch_wgrad_halo<T, CG, 2>(p, stream);
}

template <typename T>
int launch_wgrad_halo_dtype(const ConvParams& p, cudaStream_t stream) {
  switch (p.problem.Cg()) {
    case 4: return launch_wgrad_halo_stride<T, 4>(p, stream);
    case 8: return launch_wgrad_halo_stride<T, 8>(p, stream);
    case 14: return launch_wgrad_halo_stride<T, 14>(p, stream);
    case 16: return launch_wgrad_halo_stride<T, 16>(p, stream);
    case 24: return launch_wgrad_halo_stride<T, 24>(p, stream);
    case 32: return launch_wgrad_halo_stride<T, 32>(p, stream);
    case 40: return launch_wgrad_halo_stride<T, 40>(p, stream);
    default: return launch_wgrad_halo_stride<T, 64>(p, stream);  // nothing else admitted
  }
}

}  // namespace

// The tiles' shape: wh_geometry, with several images a tile only as many as the batch has and
// as the copies address from the first in 32 bits.
WhGeom wgrad_halo_geometry(const ConvParams& p) {
  const ConvProblem& q = p.problem;
  int images = 1;
  while (images < 8 && images < q.N) {
    const int64_t xs[4] = {images + 1, q.C, q.H, q.W}, ys[4] = {images + 1, q.K, q.P, q.Q};
    if (!offsets_fit_int32(p.x_stride, xs, 4, 8.0) || !offsets_fit_int32(p.y_stride, ys, 4, 8.0)) break;
    ++images;
  }
  return wh_geometry(q.P, q.Q, int(q.stride_h), int(q.Cg()), images);
}

namespace {
WhSplit problem_split(const ConvParams& p) {
  const ConvProblem& q = p.problem;
  return wh_serves(q.Cg()) ? split_of(p, wh_tiles(q.N, q.P, q.Q, wgrad_halo_geometry(p))) : WhSplit{1, false};
}
}  // namespace

bool wgrad_halo_clusters(const ConvParams& p) { return problem_split(p).cluster; }

bool wgrad_halo_set_cluster_reduction(bool enabled) { return cluster_reduction.exchange(enabled); }

int64_t wgrad_halo_cluster_launches() { return cluster_launches.load(); }

int64_t wgrad_halo_splits(const ConvParams& p) { return problem_split(p).splits; }

std::string wgrad_halo_can_implement(const ConvParams& p) {
  if (p.direction != Direction::kWgrad) return "not a wgrad problem";
  const std::string common = check_common(p);
  if (!common.empty()) return common;
  const ConvProblem& q = p.problem;
  if (p.dtype == DType::kFloat32) return "fp32 runs on CUDA cores";
  if (q.Cg() != q.Kg() || !wh_serves(q.Cg()))
    return "Cg = Kg in {4, 8, 14, 16, 24, 32, 40, 64} only (the widths its tiles are built for)";
  if (q.C % wh_block(int(q.Cg())) != 0)
    return q.Cg() == 4 ? "Cg = 4 with an odd number of groups (blocks are two groups)"
                       : "Cg = 14 with groups not a multiple of 4 (blocks are four groups)";
  if (q.stride_h != q.stride_w || (q.stride_h != 1 && q.stride_h != 2)) return "stride other than 1 or 2";
  if (!wh_rows_fit(8, int(q.stride_h), int(q.Cg())))
    return "Cg = 64 at stride 2 (a halo row of 18 pixels is 144 16-byte copies, more than its 128 threads)";
  if (q.dil_h != 1 || q.dil_w != 1) return "dilation other than 1";
  if (q.N >= (int64_t(1) << 31)) return "a batch of 2^31 images or more (tiles number them in 32 bits)";
  std::string why = halo_layout_reason(p, "input or grad_output");
  if (why.empty()) why = halo_offsets_reason(p);
  return why.empty() ? halo_weight_offsets_reason(p) : why;   // the cluster's weight stores
}

// The partials of the two-launch path; kept in a cluster's launch too, for a device that
// cannot schedule its clusters (clusters_fit) or the test hook.
int64_t wgrad_halo_workspace_elems(const ConvParams& p) {
  return wgrad_halo_splits(p) * p.problem.w_numel();
}

LaunchShape wgrad_halo_shape(const ConvParams& p) {
  const ConvProblem& q = p.problem;
  LaunchShape s;
  const int cg = int(q.Cg()), stride = int(q.stride_h);
  if (!wh_serves(cg) || (stride != 1 && stride != 2)) return s;
  const WhGeom g = wgrad_halo_geometry(p);
  const WhSplit split = split_of(p, wh_tiles(q.N, q.P, q.Q, g));
  s.splits = split.splits;
  s.grid_x = ctas_per_split(q) * s.splits;
  s.threads = kWhThreads;
  s.smem_bytes = wh_smem_bytes(g, cg);
  s.tile_pixels = int64_t(g.ti) * g.tr * g.tc;
  s.tile_images = g.ti;
  s.tile_rows = g.tr;
  s.tile_cols = g.tc;
  s.stages = g.stages;
  s.tile_channels = wh_block(cg);
  s.red_channels = wh_block(cg);
  s.halo_pixels = int64_t(g.ti) * g.xr * g.xc;
  s.halo_rows = g.xr;
  s.halo_cols = g.xc;
  s.halo_slots = g.xs;
  s.tile_ksteps = g.kblocks;
  s.groups_per_block = std::max(1, wh_block(cg) / cg);
  s.cluster = split.cluster ? int(s.splits) : 1;
  s.launches = split.cluster ? 1 : 2;  // the split kernel (then wgrad_reduce)
  return s;
}

int wgrad_halo_launch(const ConvParams& p, void* stream) {
  const auto st = static_cast<cudaStream_t>(stream);
  if (p.dtype == DType::kFloat16) return launch_wgrad_halo_dtype<__half>(p, st);
  if (p.dtype == DType::kBFloat16) return launch_wgrad_halo_dtype<__nv_bfloat16>(p, st);
  return int(cudaErrorInvalidValue);  // fp32 is refused by can_implement
}

}  // namespace rk
