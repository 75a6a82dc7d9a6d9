// test_wgrad_halo.cpp: wgrad_halo (csrc/kernels/wgrad_halo.cu) on the CPU, with the index maps
// of wgrad_halo_fragments.h that the kernel itself calls:
//   1. emulated CTA by CTA and warp by warp on small integers against a direct sum: the blocks
//      and splits, the tile walk, the staging copies (zeros outside the images), ldmatrix.trans
//      as the PTX ISA defines it (ldsm_trans_elem), the m16n8k16 products, the warps' sums in
//      warp order, the partial sums (every weight of a split written exactly once) and their
//      reduction in split order; and the cluster reduction that replaces it from sm_90 on (each
//      CTA's sums in fragment order, every slot written once, each cluster rank's share added
//      over the cluster in rank order): equal to the partials' sums and the direct sum (small
//      integers add exactly in any order: that the two orders match bit for bit on real data
//      is tests/test_gpu.py's to check);
//   2. the shared-memory bank conflicts of every warp-wide access, counted through the same
//      functions, against what the design intends (none).
// What it cannot check is the hardware's fragment layouts and cp.async: the GPU.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "../conv_problem.h"
#include "../kernels/kernels.h"
#include "../kernels/wgrad_halo_fragments.h"
#include "../registry.h"
#include "harness.h"

namespace {

const float kUnset = NAN;

rk::ConvParams wgrad_params(int64_t n, int64_t cg, int64_t groups, int64_t h, int64_t w,
                            int64_t stride, int64_t pad, int num_sms, int sm_version = 90) {
  rk::ConvParams p = channels_last_params(n, cg, groups, h, w, stride, pad, rk::Direction::kWgrad);
  p.num_sms = num_sms;
  p.sm_version = sm_version;
  return p;
}

// One tile's staging copies as the kernel's threads issue them, by the kernel's walk
// (wh_x_walk, wh_dy_walk, wh_walk_rows: a thread's position and row-0 copy fixed, its source and
// unit moved a pass at a time, image after image). Each copy: its thread, part (0 x, 1 dy), the
// loop's image and pass (a warp's lanes run a pass together), its unit, and its source element
// (-1: zeros). x_base / dy_base: the CTA's first channel in x and dy.
struct StagedCopy { int thread, part, image, pass, unit; int64_t src; };
template <int CG>
std::vector<StagedCopy> staging(const rk::ConvParams& p, const rk::WhGeom& g, int stride, const rk::WhTile& tl,
                                int64_t x_base, int64_t dy_base) {
  const rk::ConvProblem& q = p.problem;
  const int64_t xs_n = p.x_stride[0], xs_h = p.x_stride[2], xs_w = p.x_stride[3];
  const int64_t ys_n = p.y_stride[0], ys_h = p.y_stride[2], ys_w = p.y_stride[3];
  const int h0 = tl.p0 * stride - int(q.pad_h), w0 = tl.q0 * stride - int(q.pad_w), n_left = int(q.N) - tl.n;
  const int64_t x_tile = x_base + tl.n * xs_n, dy_tile = dy_base + tl.n * ys_n;
  const rk::WhWalk xw = rk::wh_x_walk(g, CG), dw = rk::wh_dy_walk(g, CG);
  const int x_row_units = rk::wh_x_row_units(g, CG), dy_row_units = rk::wh_dy_row_units(g, CG);
  std::vector<StagedCopy> out;
  for (int t = 0; t < rk::kWhThreads; ++t) {
    const rk::WhPlace xp = rk::wh_place(t, xw), dp = rk::wh_place(t, dw);
    const rk::WhCopy x0 = rk::wh_x_copy(xp.pos, g, stride, CG), d0 = rk::wh_dy_copy(dp.pos, g, CG);
    const int dy_rows = rk::wh_dy_rows(d0.col, g);
    // The pass of a copy: its place among the thread's copies in the image.
    std::map<int, int> passes;
    auto record = [&](int part, int img, int64_t src, int to) { out.push_back({t, part, img, passes[2 * img + part]++, to, src}); };
    {
      const int w = w0 + x0.col, first = xp.active ? xp.row0 : g.ti * g.xr;
      const bool col_in = !x0.pad && unsigned(w) < unsigned(q.W);
      rk::wh_walk_rows(rk::wh_x_rows(g, xw), h0, first, x_tile + ((h0 + first) * xs_h + w * xs_w + x0.chunk * 8),
                       int(xw.step * xs_h), int(xs_n - g.xr * xs_h), uint32_t(x0.unit + first * x_row_units),
                       uint32_t(xw.step * x_row_units), [&](int img, int h, int64_t src, uint32_t to) {
                         const bool in = col_in && img < n_left && unsigned(h) < unsigned(q.H);
                         record(0, img, in ? src : -1, int(to));
                       });
    }
    {
      const int qq = tl.q0 + d0.col, first = dp.active ? dp.row0 : dy_rows;
      const bool col_in = !d0.pad && qq < q.Q;
      rk::wh_walk_rows(rk::wh_dy_rows_of(g, dw, dy_rows), tl.p0, first,
                       dy_tile + ((tl.p0 + first) * ys_h + qq * ys_w + d0.chunk * 8), int(dw.step * ys_h),
                       int(ys_n - g.tr * ys_h), uint32_t(d0.unit + first * dy_row_units), uint32_t(dw.step * dy_row_units),
                       [&](int img, int pp, int64_t src, uint32_t to) {
                         const bool in = col_in && img < g.ti && img < n_left && pp < q.P;
                         record(1, img, in ? src : -1, int(to));
                       });
    }
  }
  return out;
}

// The problem emulated with the kernel's maps; returns the number of wrong or twice-written
// values.
template <int CG>
int64_t emulate(int64_t n, int64_t groups, int64_t h, int64_t w, int stride, int64_t pad, int num_sms,
                int sm_version = 90) {
  constexpr int CB = rk::wh_block(CG), MT = rk::wh_warp_mtiles(CG), NT = rk::wh_ntiles(CG);
  constexpr int KW = rk::wh_kwarps(CG);
  const rk::ConvParams p = wgrad_params(n, CG, groups, h, w, stride, pad, num_sms, sm_version);
  const rk::ConvProblem& q = p.problem;
  CHECK_EQ_STR(rk::wgrad_halo_can_implement(p), "");
  const rk::LaunchShape shape = rk::wgrad_halo_shape(p);
  const rk::WhGeom g = rk::wgrad_halo_geometry(p);
  // The rule's shape, its images at most the batch's.
  const rk::WhGeom rule = rk::wh_geometry(q.P, q.Q, stride, CG, int(std::min<int64_t>(8, q.N)));
  CHECK(g.ti == rule.ti && g.tr == rule.tr && g.tc == rule.tc && g.ti <= q.N);
  const int64_t splits = rk::wgrad_halo_splits(p), blocks = q.C / CB, tiles = rk::wh_tiles(q.N, q.P, q.Q, g);
  constexpr int NP = rk::wh_nparts(CG);
  CHECK(shape.grid_x == blocks * NP * splits && shape.splits == splits && splits <= tiles);
  CHECK(shape.tile_rows == g.tr && shape.tile_cols == g.tc && shape.tile_images == g.ti && rk::wh_fits(g));
  CHECK(shape.smem_bytes == rk::wh_smem_bytes(g, CG) && shape.smem_bytes <= 227 * 1024);
  CHECK(rk::wgrad_halo_workspace_elems(p) == splits * q.w_numel());
  const bool cluster = rk::wgrad_halo_clusters(p);
  CHECK((!cluster || sm_version >= 90) && shape.cluster == (cluster ? splits : 1) && shape.launches == (cluster ? 1 : 2));
  CHECK(!cluster || splits <= rk::kWhClusterSplits);
  const int slots = rk::wh_out_slots(CG);   // a CTA's sums in fragment order, after the warps' sums
  CHECK(rk::wh_cluster_tile0(0, int(splits), CG) == 0 && rk::wh_cluster_tile0(int(splits), int(splits), CG) * 128 == slots);
  CHECK(4 * (rk::wh_red_floats(CG) + int64_t(slots)) <= shape.smem_bytes && rk::wh_red_floats(CG) % 4 == 0);
  const int64_t C = q.C;

  std::vector<float> x(q.N * q.H * q.W * C), dy(q.N * q.P * q.Q * C);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int64_t(i * 7 + 3) % 5 - 2);
  for (size_t i = 0; i < dy.size(); ++i) dy[i] = float(int64_t(i * 5 + 1) % 3 - 1);
  std::vector<float> part(splits * q.w_numel(), kUnset);
  std::vector<float> outs(shape.grid_x * slots, kUnset);   // each CTA's shared-memory sums
  int64_t wrong = 0;
  auto keep = [&](int64_t cta, int tile, int lane, int i, float v) {
    const int slot = rk::wh_slot(tile, lane, i);
    if (slot < 0 || slot >= slots) return void(++wrong);
    float& dst = outs[cta * slots + slot];
    wrong += !std::isnan(dst);                       // written twice
    dst = v;
  };
  // The table of K halves, as each CTA writes it.
  std::vector<int> table(2 * g.kblocks);
  for (int h = 0; h < 2 * g.kblocks; ++h) table[h] = rk::wh_half_base(h, g, stride, CG);
  std::vector<float> accs(size_t(rk::kWhWarps) * MT * NT * 32 * 4);   // heap: 64 KB at Cg = 40
  constexpr int AN = rk::wh_warp_cols(CG) > 0 ? rk::wh_warp_cols(CG) : 1;   // columns (Cg = 14)
  std::vector<float> col_accs(size_t(rk::kWhWarps) * rk::kWhTapPairs * AN * 32 * 4);
  for (int64_t cta = 0; cta < shape.grid_x; ++cta) {
    const int64_t split = cta % splits, block = cta / splits / NP, np = cta / splits % NP;
    std::fill(accs.begin(), accs.end(), 0.f);
    std::fill(col_accs.begin(), col_accs.end(), 0.f);
    auto& acc = *reinterpret_cast<float (*)[rk::kWhWarps][MT][NT][32][4]>(accs.data());
    auto& col_acc = *reinterpret_cast<float (*)[rk::kWhWarps][rk::kWhTapPairs][AN][32][4]>(col_accs.data());
    // The split's tiles as the kernel walks them: wh_tile once, then wh_tile_next.
    rk::WhTile tl = rk::wh_tile(rk::wh_split_begin(split, splits, tiles), q.P, q.Q, g);
    for (int64_t t = rk::wh_split_begin(split, splits, tiles); t < rk::wh_split_begin(split + 1, splits, tiles);
         ++t, tl = rk::wh_tile_next(tl, int(q.P), int(q.Q), g)) {
      const rk::WhTile want = rk::wh_tile(t, q.P, q.Q, g);
      wrong += want.n != tl.n || want.p0 != tl.p0 || want.q0 != tl.q0;
      // Stage the tile: each copy is 8 channels (16 bytes) of one pixel; the kernel's bounds.
      std::vector<float> st(8 * g.stage_units, kUnset);
      // The kernel's copies: each 8 channels (16 bytes) of one pixel, or zeros; x and dy are
      // [N][H][W][C] (the strides the copies use).
      const std::vector<StagedCopy> copies = staging<CG>(p, g, stride, tl, block * CB, block * CB + np * NT * 8);
      // The copies are the definition's (wh_x_copy, wh_dy_copy: every unit of the stage but the
      // pitches' padding), each once.
      std::vector<int> units, defined;
      for (int i = 0; i < rk::wh_x_copies(g, CG); ++i) defined.push_back(rk::wh_x_copy(i, g, stride, CG).unit);
      for (int i = 0; i < rk::wh_dy_copies(g, CG); ++i) defined.push_back(rk::wh_dy_copy(i, g, CG).unit);
      for (const StagedCopy& c : copies) units.push_back(c.unit);
      std::sort(units.begin(), units.end());
      std::sort(defined.begin(), defined.end());
      wrong += units != defined;
      for (const StagedCopy& c : copies) {
        const std::vector<float>& src = c.part == 0 ? x : dy;
        if (c.unit < 0 || c.unit >= g.stage_units) { ++wrong; continue; }              // outside the stage
        if (c.src >= 0 && c.src + 8 > int64_t(src.size())) { ++wrong; continue; }     // outside the tensor
        for (int e = 0; e < 8; ++e) {
          float& dst = st[8 * c.unit + e];
          wrong += !std::isnan(dst);                     // staged twice
          dst = c.src >= 0 ? src[c.src + e] : 0.f;
        }
      }
      // ldmatrix.trans: register `reg` half e of `lane` is row / column ldsm_trans_elem of
      // matrix `reg`, whose rows' addresses lanes 8 reg .. 8 reg + 7 gave.
      auto ldsm = [&](auto row_unit, int lane, int reg, int e) {
        const rk::LdsmElem le = rk::ldsm_trans_elem(lane, reg, e);
        const int unit = row_unit(8 * le.matrix + le.row);
        if (unit < 0 || unit >= g.stage_units) return ++wrong, 0.f;   // outside the stage
        const float v = st[8 * unit + le.col];
        wrong += std::isnan(v);                          // a unit no copy staged
        return v;
      };
      const int xu = g.x_units;
      auto a_base = [&](int kb, int l) { return table[rk::wh_a_half(kb, l)]; };
      if constexpr (rk::wh_columns(CG)) {
        // Columns (Cg = 14): each warp's (chunk, n8 tile) pairs, padded by repeating the last;
        // A is reloaded only where the chunk changes (`a_chunk` is what the register holds).
        for (int warp = 0; warp < rk::kWhWarps; ++warp) {
          for (int kb = 0; kb < g.kblocks; ++kb)
            for (int tp = 0; tp < rk::kWhTapPairs; ++tp) {
              int a_chunk = -1;
              for (int j = 0; j < AN; ++j) {
                const rk::WhCol col = rk::wh_warp_col(warp, j, CG);
                if (rk::wh_col_fresh(warp, j, CG)) a_chunk = col.chunk;
                auto a_half = [&](int lane, int reg, int e) {
                  return ldsm([&](int l) { return a_base(kb, l) + rk::wh_col_a_off(a_chunk, tp, l, g, stride, CG); }, lane, reg, e);
                };
                auto b_half = [&](int lane, int reg, int e) {
                  return ldsm([&](int l) { return xu + rk::wh_ntile_b_unit(col.nt, kb, l, CG); }, lane, reg, e);
                };
                emulate_mma(a_half, b_half, col_acc[warp][tp][j]);
              }
            }
        }
        continue;
      }
      for (int warp = 0; warp < rk::kWhWarps; ++warp)
        for (int kb = KW == 1 ? 0 : warp; kb < g.kblocks; kb += KW) {
          for (int mi = 0; mi < MT; ++mi) {
            const int m = rk::wh_warp_mtile(warp, mi, CG);
            if (m < 0) continue;
            for (int nt = 0; nt < NT; ++nt) {
              auto a_half = [&](int lane, int reg, int e) {
                return ldsm([&](int l) { return a_base(kb, l) + rk::wh_a_off(m, l, g, stride, CG); }, lane, reg, e);
              };
              auto b_half = [&](int lane, int reg, int e) {
                // Load nt / 2: x4 (n8 tile nt's are matrices 2 (nt % 2) + reg), or x2 (the odd last).
                const int matrix = rk::wh_b_matrix(nt, reg, CG);
                return ldsm([&](int l) { return xu + rk::wh_b_unit(nt / 2, kb, l, CG); }, lane, matrix, e);
              };
              emulate_mma(a_half, b_half, acc[warp][mi][nt]);
            }
          }
        }
    }
    // The split's partials: each warp's real columns (not the padding).
    if constexpr (rk::wh_columns(CG)) {
      for (int warp = 0; warp < rk::kWhWarps; ++warp) {
        for (int tp = 0; tp < rk::kWhTapPairs; ++tp)
          for (int j = 0; j < AN; ++j)
            for (int lane = 0; lane < 32; ++lane)
              for (int i = 0; i < 4; ++i) {
                const rk::WhElem e = rk::wh_col_elem(rk::wh_warp_col(warp, j, CG), tp, lane, i, CG);
                if (!rk::wh_col_stored(warp, j, CG)) continue;
                keep(cta, rk::wh_col_tile(warp, j, tp, CG), lane, i, col_acc[warp][tp][j][lane][i]);
                if (!e.ok) continue;
                float& dst = part[split * q.w_numel() + ((block * CB + e.k) * CG + e.c) * 9 + e.tap];
                wrong += !std::isnan(dst);               // written twice
                dst = col_acc[warp][tp][j][lane][i];
              }
      }
      continue;
    }
    // The warps' sums in warp order (warps splitting K), and the split's partials.
    for (int wm = 0; wm < rk::kWhWarps / KW; ++wm)
      for (int mi = 0; mi < MT; ++mi)
        for (int nt = 0; nt < NT; ++nt)
          for (int lane = 0; lane < 32; ++lane)
            for (int i = 0; i < 4; ++i) {
              const int owner = KW == 1 ? wm : 0;        // the warp whose M tiles these are
              const int m = rk::wh_warp_mtile(owner, mi, CG);
              if (m < 0) continue;
              float v = 0.f;
              for (int kw = 0; kw < KW; ++kw) v += acc[KW == 1 ? wm : kw][mi][nt][lane][i];
              keep(cta, rk::wh_mn_tile(m, nt, CG), lane, i, v);
              const rk::WhElem e = rk::wh_elem(m, int(np), nt, lane, i, CG);
              if (!e.ok) continue;
              float& dst = part[split * q.w_numel() + ((block * CB + e.k) * CG + e.c) * 9 + e.tap];
              wrong += !std::isnan(dst);                 // written twice
              dst = v;
            }
  }
  // The cluster reduction: cluster (block, N part) is CTAs [cl splits, (cl + 1) splits), rank
  // j split j; rank r adds its share of the accumulator tiles over the ranks in order, warp w
  // the tiles w, w + 4, ... of the share, each lane its four sums, and stores the weights they
  // hold.
  std::vector<float> dw(q.w_numel(), kUnset);
  for (int64_t cl = 0; cl < shape.grid_x / splits; ++cl)
    for (int rank = 0; rank < int(splits); ++rank) {
      const int first = rk::wh_cluster_tile0(rank, int(splits), CG), end = rk::wh_cluster_tile0(rank + 1, int(splits), CG);
      for (int warp = 0; warp < rk::kWhWarps; ++warp)
        for (int tile = first + warp; tile < end; tile += rk::kWhWarps)
          for (int lane = 0; lane < 32; ++lane)
            for (int i = 0; i < 4; ++i) {
              const rk::WhElem e = rk::wh_tile_elem(tile, int(cl % NP), lane, i, CG);
              if (!e.ok) continue;
              float v = 0.f;
              for (int64_t j = 0; j < splits; ++j) {
                const float o = outs[(cl * splits + j) * slots + rk::wh_slot(tile, lane, i)];
                wrong += std::isnan(o);                  // a slot no warp wrote
                v += o;
              }
              float& dst = dw[((cl / NP * CB + e.k) * CG + e.c) * 9 + e.tap];
              wrong += !std::isnan(dst);                 // stored twice
              dst = v;
            }
    }
  // wgrad_reduce: splits in order; against the direct sum, and the cluster's bits against it.
  for (int64_t k = 0; k < C; ++k)
    for (int64_t c = 0; c < CG; ++c)
      for (int r = 0; r < 3; ++r)
        for (int s = 0; s < 3; ++s) {
          float got = 0.f;
          for (int64_t j = 0; j < splits; ++j) got += part[j * q.w_numel() + (k * CG + c) * 9 + r * 3 + s];
          float ref = 0.f;
          const int64_t xc = (k / CG) * CG + c;
          for (int64_t b = 0; b < q.N; ++b)
            for (int64_t pp = 0; pp < q.P; ++pp)
              for (int64_t qq = 0; qq < q.Q; ++qq) {
                const int64_t hh = pp * stride - q.pad_h + r, ww = qq * stride - q.pad_w + s;
                if (hh >= 0 && hh < q.H && ww >= 0 && ww < q.W)
                  ref += dy[((b * q.P + pp) * q.Q + qq) * C + k] * x[((b * q.H + hh) * q.W + ww) * C + xc];
              }
          wrong += !(got == ref);                        // NaN (never written) included
          const float by_cluster = dw[(k * CG + c) * 9 + r * 3 + s];
          wrong += std::memcmp(&by_cluster, &got, sizeof got) != 0;
        }
  return wrong;
}

// Wavefronts of every warp-wide shared-memory access of one tile (and of the epilogue), by kind,
// and the minimum each kind could take, for the tiles of a P x Q grid.
template <int CG>
void check_conflicts(int stride, int P, int Q) {
  constexpr int MT = rk::wh_warp_mtiles(CG), NT = rk::wh_ntiles(CG), KW = rk::wh_kwarps(CG);
  const rk::WhGeom g = rk::wh_geometry(P, Q, stride, CG);
  struct Count { int wavefronts = 0, minimum = 0; };
  std::map<std::string, Count> out;
  auto add = [&](const std::string& kind, const std::vector<std::vector<int>>& lanes, int minimum) {
    out[kind].wavefronts += wavefronts(lanes);
    out[kind].minimum += minimum;
  };
  auto unit_words = [](int unit) { return std::vector<int>{4 * unit, 4 * unit + 1, 4 * unit + 2, 4 * unit + 3}; };
  auto base = [&](int kb, int lane) { return rk::wh_half_base(rk::wh_a_half(kb, lane), g, stride, CG); };
  const int xu = g.x_units;
  if constexpr (rk::wh_columns(CG)) {                              // columns (Cg = 14)
    for (int warp = 0; warp < rk::kWhWarps; ++warp) {
      for (int kb = 0; kb < g.kblocks; ++kb)
        for (int j = 0; j < rk::wh_warp_cols(CG); ++j) {
          const rk::WhCol col = rk::wh_warp_col(warp, j, CG);
          std::vector<std::vector<int>> lanes;                     // B: ldmatrix.x2 a column
          for (int lane = 0; lane < 16; ++lane) lanes.push_back(unit_words(xu + rk::wh_ntile_b_unit(col.nt, kb, lane, CG)));
          add("B ldmatrix", lanes, 2);
          if (!rk::wh_col_fresh(warp, j, CG)) continue;
          for (int tp = 0; tp < rk::kWhTapPairs; ++tp) {           // A: once a chunk and tap pair
            lanes.clear();
            for (int lane = 0; lane < 32; ++lane)
              lanes.push_back(unit_words(base(kb, lane) + rk::wh_col_a_off(col.chunk, tp, lane, g, stride, CG)));
            add("A ldmatrix", lanes, 4);
          }
        }
    }
  }
  for (int warp = 0; warp < rk::kWhWarps && !rk::wh_columns(CG); ++warp)
    for (int kb = KW == 1 ? 0 : warp; kb < g.kblocks; kb += KW) {
      for (int j = 0; j < rk::wh_b_loads(CG); ++j) {              // B: one ldmatrix a pair
        const bool x4 = rk::wh_b_pair(j, CG);
        std::vector<std::vector<int>> lanes;
        for (int lane = 0; lane < (x4 ? 32 : 16); ++lane)
          lanes.push_back(unit_words(xu + rk::wh_b_unit(j, kb, lane, CG)));
        add("B ldmatrix", lanes, x4 ? 4 : 2);
      }
      for (int mi = 0; mi < MT; ++mi) {                             // A: one ldmatrix.x4 a tile
        const int m = rk::wh_warp_mtile(warp, mi, CG);
        if (m < 0) continue;
        std::vector<std::vector<int>> lanes;
        for (int lane = 0; lane < 32; ++lane) lanes.push_back(unit_words(base(kb, lane) + rk::wh_a_off(m, lane, g, stride, CG)));
        add("A ldmatrix", lanes, 4);
      }
    }
  // Staging copies: each pass of a warp (its lanes that copy in it), the x halo's loop, then dy's.
  {
    const rk::ConvParams sp = wgrad_params(g.ti, CG, 1, (P - 1) * stride + 1, (Q - 1) * stride + 1, stride, 1, 132);
    std::map<std::tuple<int, int, int, int>, std::vector<std::vector<int>>> passes;   // (part, warp, image, pass)
    for (const StagedCopy& c : staging<CG>(sp, g, stride, rk::WhTile{0, 0, 0}, 0, 0)) {
      auto& lanes = passes[{c.part, c.thread / 32, c.image, c.pass}];
      lanes.resize(32);
      lanes[c.thread % 32] = unit_words(c.unit);
    }
    for (const auto& [key, lanes] : passes) {
      const auto active = std::count_if(lanes.begin(), lanes.end(), [](const std::vector<int>& l) { return !l.empty(); });
      add("staging copies", lanes, int((active + 7) / 8));
    }
  }
  if (KW > 1)                                                       // the warps' sums: float4 stores
    for (int warp = 0; warp < rk::kWhWarps; ++warp)
      for (int t = 0; t < MT * NT; ++t) {
        std::vector<std::vector<int>> lanes;
        for (int lane = 0; lane < 32; ++lane) {
          const int w0 = warp * MT * NT * 128 + t * 128 + lane * 4;
          lanes.push_back({w0, w0 + 1, w0 + 2, w0 + 3});
        }
        add("sum stores", lanes, 4);
      }
  // The cluster reduction: the split's sums into fragment order (a lane's four as a 16-byte
  // store; warps splitting K: the thread of slot idx one word), then a reducer's 32 slots read.
  const int out0 = rk::wh_red_floats(CG);
  if (KW > 1) {
    for (int first = 0; first < rk::wh_out_slots(CG); first += 32) {
      std::vector<std::vector<int>> lanes;
      for (int lane = 0; lane < 32; ++lane) lanes.push_back({out0 + first + lane});
      add("cluster sum stores", lanes, 1);
    }
  } else {
    auto store4 = [&](int tile) {
      std::vector<std::vector<int>> lanes;
      for (int lane = 0; lane < 32; ++lane) {
        const int w0 = out0 + rk::wh_slot(tile, lane, 0);
        lanes.push_back({w0, w0 + 1, w0 + 2, w0 + 3});
      }
      add("cluster sum stores", lanes, 4);
    };
    for (int warp = 0; warp < rk::kWhWarps; ++warp) {
      if constexpr (rk::wh_columns(CG)) {      // the warp's stored columns, each tap pair
        for (int j = 0; j < rk::wh_warp_cols(CG); ++j)
          for (int tp = 0; tp < rk::kWhTapPairs && rk::wh_col_stored(warp, j, CG); ++tp)
            store4(rk::wh_col_tile(warp, j, tp, CG));
      } else {                                 // the warp's M tiles, each n8 tile
        for (int mi = 0; mi < MT; ++mi)
          for (int nt = 0; nt < NT && rk::wh_warp_mtile(warp, mi, CG) >= 0; ++nt)
            store4(rk::wh_mn_tile(rk::wh_warp_mtile(warp, mi, CG), nt, CG));
      }
    }
  }
  for (int tile = 0; tile < rk::wh_frag_tiles(CG); ++tile) {   // a reducer warp's reads of a tile
    std::vector<std::vector<int>> lanes;
    for (int lane = 0; lane < 32; ++lane) {
      const int w0 = out0 + rk::wh_slot(tile, lane, 0);
      lanes.push_back({w0, w0 + 1, w0 + 2, w0 + 3});
    }
    add("cluster reads", lanes, 4);
  }
  for (const auto& [kind, c] : out) {
    std::printf("  wgrad_halo Cg=%d stride %d %dx%d %-16s %6d wavefronts (minimum %d)\n", CG, stride, P, Q,
                kind.c_str(), c.wavefronts, c.minimum);
    // The staging copies' pitch (an odd count of 16-byte units) puts a quarter-warp's 8 copies
    // on 8 different bank quads only when they are 8 consecutive slots: at most twice there.
    if (kind == "staging copies") CHECK(c.wavefronts <= 2 * c.minimum);
    else CHECK(c.wavefronts == c.minimum);
  }
}

}  // namespace

void test_wgrad_halo() {
  // What it refuses, with the reason.
  rk::ConvParams p = wgrad_params(1, 4, 8, 8, 8, 1, 1, 4);
  CHECK_EQ_STR(rk::wgrad_halo_can_implement(p), "");
  p.dtype = rk::DType::kFloat32;
  CHECK_EQ_STR(rk::wgrad_halo_can_implement(p), "fp32 runs on CUDA cores");
  p = wgrad_params(1, 12, 2, 8, 8, 1, 1, 4);       // a width its tiles are not built for
  CHECK(rk::wgrad_halo_can_implement(p).find("Cg = Kg in {4, 8, 14, 16, 24, 32, 40, 64}") == 0);
  p = wgrad_params(1, 14, 2, 8, 8, 1, 1, 4);       // Cg = 14: blocks are four groups
  CHECK(rk::wgrad_halo_can_implement(p).find("groups not a multiple of 4") != std::string::npos);
  p = wgrad_params(1, 4, 3, 8, 8, 1, 1, 4);
  CHECK(rk::wgrad_halo_can_implement(p).find("odd number of groups") != std::string::npos);
  p = wgrad_params(1, 8, 1, 23171, 23171, 1, 1, 4);  // 23171^2 x 8 channels > 2^31 elements
  CHECK(rk::wgrad_halo_can_implement(p).find("spans 2^31 elements") != std::string::npos);
  p = wgrad_params(1, 8, 1, 16383, 16383, 1, 1, 4);  // 16383^2 x 8 < 2^31: 32-bit offsets fit
  CHECK_EQ_STR(rk::wgrad_halo_can_implement(p), "");
  p = wgrad_params(1, 8, 2, 9, 9, 3, 1, 4);
  CHECK_EQ_STR(rk::wgrad_halo_can_implement(p), "stride other than 1 or 2");
  p = wgrad_params(1, 8, 2, 8, 8, 1, 1, 4);
  p.y_stride[1] = 64, p.y_stride[3] = 1;
  CHECK_EQ_STR(rk::wgrad_halo_can_implement(p), "input or grad_output is not channels_last");
  p = wgrad_params(1, 8, 2, 8, 8, 1, 1, 4);
  p.problem.N = int64_t(1) << 31;                  // tiles number images in 32 bits
  CHECK(rk::wgrad_halo_can_implement(p).find("a batch of 2^31 images") == 0);
  // wh_div: n / d exactly for every n below 2^15 and every divisor up to 2048 (a stage is at most
  // kWhStageUnits units, so no index or divisor of the maps is larger).
  {
    int64_t bad = 0;
    for (int d = 1; d <= 2048; ++d) {
      const rk::WhDiv v = rk::wh_make_div(d);
      for (int n = 0; n < (1 << 15); ++n) bad += rk::wh_div(n, v) != n / d;
    }
    CHECK(bad == 0 && rk::kWhStageUnits < (1 << 15));
  }
  // The tiles of 32x4d's layers, derived by hand from the rule (of the column runs down to 8
  // columns and the rows whose tile fits 1792 units, the fewest units staged over an image; ties:
  // the larger tile; then whole images). Units: x rows x slots (tcp + 2, stride 2: 2 tcp + 2) x
  // pitch, + 16 x K-blocks x dy pitch.
  //   stage 1, 56 x 56, Cg 4: 14 rows of 56: 16 x 58 + 49 x 16 = 1712, 4 bands: 6848 (8 rows: 7 x
  //     1028 = 7196; 15 rows: 1834, too many; 28 columns: 2 runs x 4 x 992 = 7936; 8: 7 x 1028);
  //   stage 2, 28 x 28, Cg 8: the image: 30 x 34 + 56 x 16 = 1916, too many; 28 rows of 14: 30 x
  //     18 + 28 x 16 = 988, 2 runs: 1976 (14 rows of 28: 2 x 992 = 1984);
  //   stage 2 entry, 28 x 28 from 56, Cg 8: 14 rows of 14: 29 x 34 + 14 x 16 = 1210, x 4 = 4840
  //     (7 rows of 28: 15 x 66 + 14 x 16 = 1214, x 4 = 4856; 20 rows of 14: 2 x 2 x 1714);
  //   stage 3, 14 x 14, Cg 16: the image: 16 x 18 x 3 + 14 x 48 = 1536; two: 3072;
  //   stage 3 entry, 14 x 14 from 28, Cg 16: 252 tr + 102 a band of 14; 5 rows: 3 x 1362 = 4086
  //     (6: 3 x 1614; 4: 4 x 1110; 3: 5 x 858; 2: 7 x 606);
  //   stage 4, 7 x 7, Cg 32: an image 9 x 10 x 5 = 450 + 7 halves; two: 900 + 7 K-blocks x 80 =
  //     1460; three: 1350 + 11 x 80 = 2230, too many;
  //   stage 4 entry, 7 x 7 from 14, Cg 32: 15 x 18 x 5 + 4 x 80 = 1670; two images: 3340.
  struct Want { int p, stride, cg, ti, tr, tc, units; };
  for (const Want& w : {Want{56, 1, 4, 1, 14, 56, 1712}, Want{28, 1, 8, 1, 28, 14, 988}, Want{28, 2, 8, 1, 14, 14, 1210},
                        Want{14, 1, 16, 1, 14, 14, 1536}, Want{14, 2, 16, 1, 5, 14, 1362}, Want{7, 1, 32, 2, 7, 7, 1460},
                        Want{7, 2, 32, 1, 7, 7, 1670}}) {
    const rk::WhGeom g = rk::wh_geometry(w.p, w.p, w.stride, w.cg);
    CHECK(g.ti == w.ti && g.tr == w.tr && g.tc == w.tc && g.stage_units == w.units);
  }
  // A column's A units are linear in its chunk (the kernel adds the chunk to chunk 0's offset).
  for (int stride : {1, 2}) {
    const rk::WhGeom g = rk::wh_geometry(56, 56, stride, 14);
    for (int chunk = 0; chunk < rk::wh_chunks(14); ++chunk)
      for (int tp = 0; tp < rk::kWhTapPairs; ++tp)
        for (int lane = 0; lane < 32; ++lane)
          CHECK(rk::wh_col_a_off(chunk, tp, lane, g, stride, 14) == rk::wh_col_a_off(0, tp, lane, g, stride, 14) + chunk);
  }
  // A warp's M tile i is real exactly when i is below its count (the kernel compares with that).
  for (int cg : {4, 8, 14, 16, 24, 32, 40, 64})
    for (int w = 0; w < rk::kWhWarps; ++w)
      for (int i = 0; i < rk::wh_warp_mtiles(cg); ++i)
        CHECK((i < rk::wh_warp_mtile_count(w, cg)) == (rk::wh_warp_mtile(w, i, cg) >= 0));
  // B's units are linear in the K-block (the kernel adds wh_b_kb_step to K-block 0's).
  for (int kb = 0; kb < 8; ++kb)
    for (int lane = 0; lane < 32; ++lane) {
      for (int j = 0; j < rk::wh_b_loads(16); ++j)
        CHECK(rk::wh_b_unit(j, kb, lane, 16) == rk::wh_b_unit(j, 0, lane, 16) + kb * rk::wh_b_kb_step(16));
      for (int nt = 0; nt < rk::wh_ntiles(14); ++nt)
        CHECK(rk::wh_ntile_b_unit(nt, kb, lane, 14) == rk::wh_ntile_b_unit(nt, 0, lane, 14) + kb * rk::wh_b_kb_step(14));
    }
  // The walks, by hand: 32x4d's stage 1 (14 x 56 tiles, Cg = 4): 58 slots of one chunk a halo
  // row, two rows a pass; 56 K pixels a dy row, two a pass; 49 K-blocks = 14 rows of 56, no
  // padding row. Stage 4 (two 7 x 7 images, Cg = 32): 10 slots of 4 chunks = 40, 3 rows a pass;
  // 8 x 4 = 32 a dy row, 4 rows a pass, 7 K-blocks = 14 rows of 8.
  {
    const rk::WhGeom s1 = rk::wh_geom(1, 14, 56, 1, 4), s4 = rk::wh_geom(2, 7, 7, 1, 32);
    const rk::WhWalk x1 = rk::wh_x_walk(s1, 4), d1 = rk::wh_dy_walk(s1, 4);
    const rk::WhWalk x4 = rk::wh_x_walk(s4, 32), d4 = rk::wh_dy_walk(s4, 32);
    CHECK(x1.per_row == 58 && x1.rows == 16 && x1.step == 2 && d1.per_row == 56 && d1.rows == 14 && d1.step == 2);
    CHECK(x4.per_row == 40 && x4.rows == 18 && x4.step == 3 && d4.per_row == 32 && d4.rows == 14 && d4.step == 4);
    // Thread 117 of stage 1's x walk: idle (two rows of 58 are threads 0-115); thread 70: row 1,
    // slot 12. dy's padding row: 7 x 7 one image, Cg = 8: 7 rows of 8 = 56 pixels, 4 K-blocks =
    // 64: an eighth row of 8 columns, so 8 rows for every column.
    CHECK(!rk::wh_place(117, x1).active && rk::wh_place(70, x1).row0 == 1 && rk::wh_place(70, x1).pos == 12);
    const rk::WhGeom s7 = rk::wh_geom(1, 7, 7, 1, 8);
    CHECK(rk::wh_dy_walk(s7, 8).rows == 8 && rk::wh_dy_rows(0, s7) == 8 && rk::wh_dy_rows(7, s7) == 8);
  }
  // Rows that fit the threads: Cg = 64 at stride 2 cannot (18 slots of 8 chunks at the narrowest,
  // 144 copies; refused), Cg = 40 at stride 2 only at 8 columns (16: 34 slots x 5 = 170), Cg = 14's
  // dy rows at most 16 columns (24: 24 x 7 = 168); every tile the rule picks has them.
  CHECK(!rk::wh_rows_fit(8, 2, 64) && rk::wh_rows_fit(8, 1, 64) && rk::wh_rows_fit(8, 2, 40) && !rk::wh_rows_fit(16, 2, 40));
  CHECK(rk::wh_rows_fit(16, 1, 14) && !rk::wh_rows_fit(24, 1, 14));
  CHECK_EQ_STR(rk::wgrad_halo_can_implement(wgrad_params(1, 64, 1, 9, 9, 2, 1, 4)),
               "Cg = 64 at stride 2 (a halo row of 18 pixels is 144 16-byte copies, more than its 128 threads)");
  for (int cg : {4, 8, 14, 16, 24, 32, 40, 64})
    for (int stride : {1, 2})
      for (int side : {1, 5, 7, 14, 28, 56, 112, 224, 300}) {
        if (!rk::wh_rows_fit(8, stride, cg)) continue;
        const rk::WhGeom g = rk::wh_geometry(side, side + 3, stride, cg);
        CHECK(rk::wh_fits(g) && rk::wh_rows_fit(g.tc, stride, cg));
      }
  CHECK(emulate<40>(1, 1, 3, 40, 1, 1, 2) == 0);   // wide rows: runs narrow enough for the threads
  // Each case: what it catches.
  CHECK(emulate<4>(2, 4, 9, 11, 1, 1, 3) == 0);    // 32x4d stage 1 widths, two images a tile, 2 blocks
  CHECK(emulate<4>(1, 2, 12, 17, 2, 1, 2) == 0);   // stride 2, odd sizes
  CHECK(emulate<8>(2, 2, 8, 16, 1, 1, 1) == 0);    // stage 2 widths, exact tiles
  CHECK(emulate<8>(1, 2, 14, 14, 2, 1, 2) == 0);   // stage 2 entry: stride 2
  CHECK(emulate<16>(2, 2, 7, 7, 1, 1, 2) == 0);    // stage 3 widths, 7x7 in one tile
  CHECK(emulate<16>(1, 1, 10, 9, 1, 0, 1) == 0);   // padding 0
  CHECK(emulate<32>(2, 1, 7, 7, 1, 1, 1) == 0);    // stage 4 widths: warps split M
  CHECK(emulate<32>(1, 2, 13, 14, 2, 1, 3) == 0);  // stage 4 entry: stride 2, 2 blocks
  CHECK(emulate<8>(1, 1, 6, 6, 1, 2, 1) == 0);     // padding 2
  CHECK(emulate<24>(1, 2, 9, 10, 1, 1, 2) == 0);   // the paper's Cg = 24: 3 chunks a tap, odd N (x2)
  CHECK(emulate<40>(1, 1, 8, 9, 2, 1, 2) == 0);    // Cg = 40: 23 M tiles, 5 n8 tiles, stride 2
  CHECK(emulate<64>(1, 1, 7, 9, 1, 1, 2) == 0);    // Cg = 64: N in four CTAs
  CHECK(emulate<14>(2, 4, 9, 10, 1, 1, 3) == 0);   // the paper's Cg = 14: columns, partial tiles
  CHECK(emulate<14>(1, 8, 11, 12, 2, 1, 2) == 0);  // Cg = 14 at stride 2, two blocks
  CHECK(emulate<14>(1, 4, 7, 7, 1, 0, 1) == 0);    // Cg = 14, padding 0, one split
  CHECK(emulate<8>(1, 1, 70, 12, 1, 1, 2) == 0);   // bands of rows (two), a partial last band
  CHECK(emulate<16>(1, 1, 40, 30, 2, 1, 2) == 0);  // bands at stride 2
  CHECK(emulate<64>(1, 1, 4, 70, 1, 1, 2) == 0);   // a row too wide for a stage: two column runs
  CHECK(emulate<32>(3, 1, 7, 7, 1, 1, 2) == 0);    // two images a tile, an odd batch's last alone
  CHECK(emulate<8>(5, 2, 9, 7, 2, 1, 2) == 0);     // five images a tile at stride 2 (K padding too)
  CHECK(emulate<8>(3, 1, 6, 6, 1, 1, 1) == 0);     // a staging pass of 12 rows over 8-row images
  CHECK(emulate<4>(2, 4, 9, 11, 1, 1, 3, 80) == 0);   // sm_80: the partials and wgrad_reduce alone
  CHECK(emulate<32>(1, 2, 13, 14, 2, 1, 3, 80) == 0);
  CHECK(emulate<16>(4, 2, 8, 8, 1, 1, 1) == 0);    // a cluster of 4 splits at one SM (one tile an image)
  CHECK(rk::wgrad_halo_splits(wgrad_params(16, 16, 1, 14, 14, 1, 1, 16)) == 16);
  CHECK(emulate<16>(16, 1, 14, 14, 1, 1, 16) == 0);  // a cluster of 16 (non-portable), one tile a CTA
  // The split count, by hand: the SM holding the most CTAs (one wave) walks the fewest tiles,
  // then two or more CTAs an SM, then fewer splits. Without clusters (sm_80) the partials at
  // most the compulsory bytes:
  p = wgrad_params(64, 32, 32, 7, 7, 1, 1, 132, 80);   // 32x4d stage 4: 32 blocks, 32 two-image tiles
  int64_t io = 2 * (64 * 1024 * 49 * 2), cap = io / (p.problem.w_numel() * 8);
  CHECK(cap == 5);                                  // 4 splits: 128 CTAs alone, 8 tiles; 5: 2 x 7
  CHECK(rk::wgrad_halo_splits(p) == 4);
  p = wgrad_params(64, 32, 32, 14, 14, 2, 1, 132, 80); // stage 4 entry: 64 one-image 7 x 7 tiles
  io = 2 * (64 * 1024 * 196 + 64 * 1024 * 49), cap = io / (p.problem.w_numel() * 8);
  CHECK(cap == 13);                                 // 4 splits: 1 x 16 alone; 8: 2 x 8, not alone
  CHECK(rk::wgrad_halo_splits(p) == 8);
  p = wgrad_params(64, 4, 32, 56, 56, 1, 1, 132, 80);  // stage 1: 16 blocks, 256 tiles (4 bands)
  CHECK(rk::wgrad_halo_splits(p) == 16);            // 8: 1 x 32 alone; 16: 2 x 16; 33: 4 x 8
  p = wgrad_params(64, 8, 32, 56, 56, 2, 1, 132, 80);  // stage 2 entry: 32 blocks, 256 14 x 14 tiles
  CHECK(rk::wgrad_halo_splits(p) == 8);             // 4: 1 x 64 alone; 8: 2 x 32; 16: 4 x 16
  p = wgrad_params(64, 32, 32, 3, 3, 1, 1, 132, 80);   // weights as large as x and dy: one split
  CHECK(2 * (64 * 1024 * 9 * 2) / (p.problem.w_numel() * 8) == 1 && rk::wgrad_halo_splits(p) == 1);
  p = wgrad_params(1, 8, 2, 8, 8, 1, 1, 132, 80);      // one image of one tile: one split
  CHECK(rk::wgrad_halo_splits(p) == 1);
  // From sm_90 the splits add up in a cluster, at most 16 of them, no cap by the partials (there
  // are none), wherever the cap of 16 costs the busiest SM no tile walk:
  // (The loads below: the busiest SM's CTAs x tiles a CTA, the partials' best in brackets.)
  p = wgrad_params(64, 32, 32, 7, 7, 1, 1, 132);   // stage 4: 8: 2 x 4, not alone (4: 1 x 8; 12: 3 x 3)
  CHECK(rk::wgrad_halo_splits(p) == 8 && rk::wgrad_halo_clusters(p));
  p = wgrad_params(64, 32, 32, 14, 14, 2, 1, 132); // stage 4 entry: 8: 2 x 8 (the same 8)
  CHECK(rk::wgrad_halo_splits(p) == 8 && rk::wgrad_halo_clusters(p));
  p = wgrad_params(64, 4, 32, 56, 56, 1, 1, 132);  // stage 1: 16: 2 x 16 (8: 1 x 32, alone)
  CHECK(rk::wgrad_halo_splits(p) == 16 && rk::wgrad_halo_clusters(p));   // past 8: non-portable
  p = wgrad_params(64, 8, 32, 56, 56, 2, 1, 132);  // stage 2 entry: 8: 2 x 32 (16: 4 x 16, more to add)
  CHECK(rk::wgrad_halo_splits(p) == 8 && rk::wgrad_halo_clusters(p));
  p = wgrad_params(64, 16, 32, 14, 14, 1, 1, 132); // stage 3: 32 blocks, 64 one-image tiles: 2 x 8 (16: 4 x 4)
  CHECK(rk::wgrad_halo_splits(p) == 8 && rk::wgrad_halo_clusters(p));
  p = wgrad_params(64, 32, 32, 3, 3, 1, 1, 132);   // 3 x 3: four images a tile, 16 tiles: 2 x 2 (1: 1 x 16)
  CHECK(rk::wgrad_halo_geometry(p).ti == 4 && rk::wgrad_halo_splits(p) == 8);
  CHECK(rk::wgrad_halo_clusters(p));
  // 8x14d stage 1: 2 blocks of four groups, 3136 8 x 8 tiles: 16 splits leave one CTA on each
  // of 32 SMs walking 196 tiles; 64 (partials, cap 796) one on each of 128 walking 49: partials.
  p = wgrad_params(64, 14, 8, 56, 56, 1, 1, 132);
  CHECK(rk::wgrad_halo_splits(p) == 64 && !rk::wgrad_halo_clusters(p));
  CHECK(rk::wgrad_halo_shape(p).launches == 2 && rk::wgrad_halo_shape(p).cluster == 1);
  p = wgrad_params(1, 8, 2, 8, 8, 1, 1, 132);      // one tile: a cluster of one
  CHECK(rk::wgrad_halo_splits(p) == 1 && rk::wgrad_halo_shape(p).cluster == 1 && rk::wgrad_halo_shape(p).launches == 1);
  // Bank conflicts on the tiles of each width's 32x4d-style grids (56, 28, 14, 7) and a ragged one.
  for (int s : {1, 2})
    for (int side : {56, 28, 14, 7, 19}) {
      check_conflicts<4>(s, side, side);
      check_conflicts<8>(s, side, side);
      check_conflicts<16>(s, side, side);
      check_conflicts<24>(s, side, side);
      check_conflicts<32>(s, side, side);
      check_conflicts<40>(s, side, side);
      check_conflicts<64>(s, side, side);
      check_conflicts<14>(s, side, side);
    }
}
