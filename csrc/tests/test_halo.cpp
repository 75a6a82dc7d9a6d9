// test_halo.cpp: fprop_halo and dgrad_halo (csrc/kernels/fprop_halo.cu) on the CPU, with the
// index maps of halo_fragments.h that the kernel itself calls:
//   1. emulated CTA by CTA and warp by warp on small integers against a direct sum: the
//      persistent tile walk, the halo staged chunk by chunk (zeros outside the image), the
//      weights packed per slab, the A (ldmatrix) and B fragments, the m16n8k16 products, the epilogue's
//      staging and its 16-byte stores; every output element written exactly once;
//   2. the shared-memory bank conflicts of every warp-wide access, counted through the same
//      functions, against what the design intends.
// What it cannot check is the hardware's fragment layout (mma_fragments.h) and cp.async: the GPU.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "../conv_problem.h"
#include "../kernels/halo_fragments.h"
#include "../kernels/kernels.h"
#include "../registry.h"
#include "../selection.h"
#include "harness.h"

namespace {

const float kUnset = NAN;

rk::ConvParams halo_params(int64_t n, int64_t cg, int64_t groups, int64_t h, int64_t w,
                           int64_t stride, int64_t pad) {
  return channels_last_params(n, cg, groups, h, w, stride, pad, rk::Direction::kFprop);
}

// The kernels' second-image mask of a paired tile's halo row (halo_second: a template on the
// stride's split) for the emulation's runtime stride, and whether pass v jumps into it.
template <int CG, int S>
uint32_t x_second_at(int col) {
  constexpr int cols = rk::halo_cols(S);
  return rk::halo_second<rk::kHaloPairCols * S, CG, rk::halo_row_passes(cols, CG)>(col, cols);
}
template <int CG>
uint32_t x_second(int s, int col) { return s == 1 ? x_second_at<CG, 1>(col) : x_second_at<CG, 2>(col); }
template <int CG>
bool x_enters_second(int s, int v, uint32_t second) {
  return s == 1 ? rk::halo_enters_second<rk::kHaloPairCols, CG>(v, second)
                : rk::halo_enters_second<2 * rk::kHaloPairCols, CG>(v, second);
}

// The problem in `mode` (rk::kHaloFprop, kHaloDgrad at stride 1, kHaloDgradPhases at stride 2),
// emulated with the kernel's maps; returns the number of wrong or twice-written values.
template <int CG>
int64_t emulate(int64_t n, int64_t groups, int64_t h, int64_t w, int64_t stride, int64_t pad,
                bool relu, int num_sms, int mode = rk::kHaloFprop) {
  constexpr int SLAB = rk::halo_slab(CG), GG = rk::halo_gemm_groups(CG), GW = rk::halo_gw(CG);
  rk::ConvParams p = halo_params(n, CG, groups, h, w, stride, pad);
  p.num_sms = num_sms;
  const bool dgrad = mode != rk::kHaloFprop;
  p.relu = relu && !dgrad;
  const rk::ConvProblem d = p.problem;     // the problem itself (dgrad: dx is H x W, dy P x Q)
  int64_t dst_h = d.P, dst_w = d.Q;
  if (dgrad) {  // the dgrad problem, then the fprop the kernel runs for it
    p.direction = rk::Direction::kDgrad;
    CHECK_EQ_STR(rk::dgrad_halo_can_implement(p), "");
    const rk::LaunchShape ds = rk::dgrad_halo_shape(p);
    p = rk::halo_dgrad_as_fprop(p);
    CHECK(p.problem.stride_h == 1);
    CHECK(ds.smem_bytes == rk::halo_smem_bytes(1, CG, mode));
    CHECK(ds.grid_x == rk::halo_grid(rk::halo_tiles(p.problem.N, p.problem.P, p.problem.Q, p.problem.C / SLAB,
                                                    rk::halo_paired(p.problem, mode)),
                                     num_sms, 1, CG, mode));
    dst_h = d.H, dst_w = d.W;
  } else {
    CHECK_EQ_STR(rk::fprop_halo_can_implement(p), "");
  }
  const rk::ConvProblem& q = p.problem;
  const int S = int(q.stride_h);
  CHECK(S == 1 || S == 2);   // (the kernels' strides: x_second's dispatch)
  const bool paired = rk::halo_paired(q, mode);
  const int64_t C = q.C, slabs = C / SLAB, tiles = rk::halo_tiles(q.N, q.P, q.Q, slabs, paired);
  // The launch's grid: the pre-packed kernel's where an fprop call packs the weight first.
  const int64_t grid = rk::halo_grid(tiles, num_sms, S, CG, mode, !dgrad && rk::halo_packs_in_call(p));
  if (!dgrad) CHECK(rk::fprop_halo_shape(p).grid_x == grid && rk::fprop_halo_shape(p).tile_images == 1 + paired);

  // Small integers: every product and sum is exact in fp32 and in bf16 storage.
  std::vector<float> x(q.N * q.H * q.W * C), wt(C * CG * 9), bias(C), y(q.N * dst_h * dst_w * C, kUnset);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int64_t(i * 7 + 3) % 5 - 2);
  for (size_t i = 0; i < wt.size(); ++i) wt[i] = float(int64_t(i * 5 + 1) % 3 - 1);
  for (size_t i = 0; i < bias.size(); ++i) bias[i] = dgrad ? 0.f : float(int64_t(i) % 4 - 2);
  auto X = [&](int64_t b, int64_t c, int64_t hh, int64_t ww) {
    return x[((b * q.H + hh) * q.W + ww) * C + c];
  };
  auto Wt = [&](int64_t k, int64_t c, int r, int s) { return wt[((k * CG + c) * 3 + r) * 3 + s]; };

  // The packed weights of every slab as a CTA packs them (halo_pack_slab): class by class, in
  // rounds (halo_pack_round) of a thread's next words k of every GEMM group, word k the pair 2 k
  // + its half's parity where halo_pack_live says it is the thread's, each thread its lane's
  // register, the two elements read at the kernel's 32-bit offsets. A round holds at most about
  // halo_pack_unroll words (1.5 x where it is the whole slab), the registers its loads fill.
  int64_t wrong = 0;
  const int64_t slab_words = rk::halo_slab_weight_words(CG, mode), words = slabs * slab_words;
  std::vector<float> wpack(2 * words, kUnset);
  for (int64_t slab = 0; slab < slabs; ++slab)
    for (int cls = 0; cls < rk::halo_classes(mode); ++cls) {
      const int j0 = rk::halo_class_kstep0(CG, mode, cls), nts = rk::halo_ntiles(CG);
      const int pairs = rk::halo_class_ksteps(CG, mode, cls) * nts, thread_words = (pairs + 1) / 2;
      const int round = rk::halo_pack_round(CG, mode, thread_words), unroll = rk::halo_pack_unroll(mode);
      CHECK(GG * round <= std::max(3 * unroll / 2, GG * ((unroll + GG - 1) / GG)));
      for (int k0 = 0; k0 < thread_words; k0 += round)
        for (int gl = 0; gl < GG; ++gl)
          for (int u = 0; u < round; ++u)
            for (int tid = 0; tid < rk::kHaloThreads; ++tid) {
              const int half = tid / 64, lane = tid % 64 / 2, reg = tid % 2;
              const int pr = 2 * (k0 + u) + (half + j0 * nts) % 2;
              if (!rk::halo_pack_live(k0 + u, thread_words, round, pr, pairs)) continue;
              const int jj = pr / nts, nt = pr % nts;
              wrong += rk::halo_pack_half(j0 + jj, nt, CG) != half;
              const int64_t i = slab * slab_words + rk::halo_weight_word(gl, j0 + jj, nt, lane, reg, CG, mode);
              if (jj >= rk::halo_class_ksteps(CG, mode, cls) || i < 0 || i >= words) {   // past the class
                ++wrong;
                continue;
              }
              for (int e = 0; e < 2; ++e) {
                const rk::HaloWeightElem el = rk::halo_class_weight_elem(cls, jj, nt, lane, reg, e, CG, mode);
                const int64_t group = (slab * GG + gl) * (GW / CG) + el.sub;
                const rk::HaloWeightSource src = rk::halo_weight_source(group, el.n, el.c, el.tap, cls, CG, mode);
                const int64_t off = src.k * p.w_stride[0] + src.c * p.w_stride[1] + src.r * p.w_stride[2] +
                                    src.s * p.w_stride[3];
                wrong += !std::isnan(wpack[2 * i + e]);             // packed twice
                wpack[2 * i + e] = el.ok && group < q.G ? wt[off] : 0.f;
              }
            }
    }
  for (const float v : wpack) wrong += std::isnan(v);           // a word no thread packed

  // The same words packed before a launch (halo_pack_launch: CTA b packs a slab, fprop's layout
  // and then dgrad's) must lie where this mode's kernel reads them (wpack's slab after slab,
  // after fprop's layout for dgrad, which the ops' checks take from halo_pack_layout), and a CTA
  // of the pre-packed kernel must copy each 16-byte piece of a slab exactly once
  // (halo_weight_piece).
  {
    const rk::HaloPackPlan layout = rk::halo_pack_layout(d, true);
    const int dmode = layout.dgrad_mode;
    CHECK(layout.fprop_words == slabs * rk::halo_slab_weight_words(CG) && (!dgrad || dmode == mode));
    CHECK(layout.dgrad_words == slabs * rk::halo_slab_weight_words(CG, dmode));
    CHECK(rk::halo_pack_block_word(2 * slabs, slabs, CG, dmode) == layout.fprop_words + layout.dgrad_words);
    for (int64_t slab = 0; slab < slabs; ++slab)
      wrong += rk::halo_pack_block_word(slab + (dgrad ? slabs : 0), slabs, CG, dmode) !=
               (dgrad ? layout.fprop_words : 0) + slab * slab_words;
    const int pieces = int(slab_words / 4);
    std::vector<int> copied(pieces, 0);
    for (int t = 0; t < rk::kHaloThreads; ++t)
      for (int r = 0; r < rk::halo_weight_rounds(CG, mode); ++r) {
        const int i = rk::halo_weight_piece(r, t, CG, mode);
        if (i >= pieces) ++wrong;
        else if (i >= 0) ++copied[i];
      }
    for (const int c : copied) wrong += c != 1;
  }

  constexpr int STAGE = rk::halo_stage_words(1, CG) > rk::halo_stage_words(2, CG)
                            ? rk::halo_stage_words(1, CG) : rk::halo_stage_words(2, CG);
  constexpr int COPY = 8;                                  // channels a copy (16 bytes)
  std::vector<int> visits(tiles, 0);
  for (int64_t cta = 0; cta < grid; ++cta) {
    const rk::HaloRange run = rk::halo_cta_tiles(cta, grid, tiles);
    rk::HaloTile tl = rk::halo_tile(run.begin, q.N, q.P, q.Q, paired);   // walked as the kernel does
    for (int64_t t = run.begin; t < run.end; ++t, tl = rk::halo_tile_next(tl, q.N, q.P, q.Q, paired)) {
      ++visits[t];
      const rk::HaloTile want = rk::halo_tile(t, q.N, q.P, q.Q, paired);
      wrong += want.n != tl.n || want.p0 != tl.p0 || want.q0 != tl.q0 || want.slab != tl.slab;
      // Stage the halo as the warps do, a row at a time in passes (16 bytes, 8 channels a
      // copy): the kernel's pass-0 word plus compile-time steps must be the definition's word.
      std::vector<float> halo(2 * STAGE, kUnset);
      constexpr int PC = rk::halo_pass_cols(CG);
      const int cols = rk::halo_cols(S), passes = rk::halo_row_passes(cols, CG);
      const int x_split = rk::kHaloPairCols * S;   // a paired tile's second image, in halo columns
      for (int warp = 0; warp < rk::kHaloWarps; ++warp)
        for (int lane = 0; lane < 32; ++lane) {
          const rk::HaloLaneCopy lc = rk::halo_lane_copy(lane, CG);
          if (!lc.active) continue;
          const int h0 = int(tl.p0) * S - int(q.pad_h), w0 = int(tl.q0) * S - int(q.pad_w) + lc.col;
          // The kernel's mask (compile-time where the split is whole passes: then the lane's own
          // but for a last pass the lane skips).
          const uint32_t second = paired ? x_second<CG>(S, lc.col) : 0u;
          if (paired && rk::halo_split_pass(x_split, CG) >= 0)
            wrong += rk::halo_second_passes(lc.col, cols, x_split, CG) !=
                     (second & ~(lc.col + (passes - 1) * PC >= cols ? 1u << (passes - 1) : 0u));
          const uint32_t cols_in =
              rk::halo_pass_mask(w0, PC, int(q.W), lc.col, cols, CG, second, x_split, tl.n + 1 < q.N);
          for (int row = warp; row < rk::halo_rows(S); row += rk::kHaloWarps) {
            const bool row_in = unsigned(h0 + row) < unsigned(q.H);
            const int base = rk::halo_word(0, lc.col, lc.part * COPY, S, CG) + row * rk::halo_row_words(S, CG);
            int jumps = 0;   // the kernel's source pointer: moved into the second image once
            for (int v = 0; v < passes; ++v) {
              const int col = lc.col + v * PC;
              if (v + 1 == passes && col >= cols) continue;
              jumps += x_enters_second<CG>(S, v, second);
              const int word = base + v * rk::halo_copy_step(S, CG);
              wrong += word != rk::halo_word(row, col, lc.part * COPY, S, CG);
              // The pixel by definition: halo column col of image n, or on a paired tile from
              // the split on, column col - split of image n + 1.
              const bool hi = paired && col >= x_split;
              const int64_t nn = tl.n + hi, hh = h0 + row, ww = w0 + v * PC - (hi ? x_split : 0);
              wrong += hi != bool(second >> v & 1u) || (paired && jumps != int(hi));
              const bool want_in = nn < q.N && hh >= 0 && hh < q.H && ww >= 0 && ww < q.W;
              const bool in = row_in && (cols_in >> v & 1u) && want_in;   // (never read past x)
              wrong += (row_in && (cols_in >> v & 1u)) != want_in;         // the mask's meaning
              for (int e = 0; e < COPY; ++e) {
                const int slot = 2 * word + e;
                if (!std::isnan(halo[slot])) ++wrong;  // staged twice
                halo[slot] = in ? X(nn, tl.slab * SLAB + lc.part * COPY + e, hh, ww) : 0.f;
              }
            }
          }
        }
      const float* wsm = wpack.data() + 2 * tl.slab * rk::halo_slab_weight_words(CG, mode);
      for (int cls = 0; cls < rk::halo_classes(mode); ++cls) {   // the classes in turn
        const int mask = rk::halo_class_mask(mode, cls), j0 = rk::halo_class_kstep0(CG, mode, cls);
        std::vector<float> out(2 * rk::kHaloTileP * rk::kHaloTileQ * rk::halo_out_pixel_words(SLAB), kUnset);
        std::vector<int> owner(out.size() / 2, -1);   // the warp that wrote a word (a __syncwarp
                                                      // orders it only for that warp's stores)
        const rk::HaloASchedule sched = rk::halo_a_schedule(CG, S, mask);
        const int pad = rk::halo_a_pairs(CG, S), ops = 2 * rk::halo_class_ksteps(CG, mode, cls);
        wrong += sched.operands != ops;
        // Where each (k-step, tile) operand is in the schedule (each once), and the operand
        // whose `first` loads a k-step's B (the first of its two).
        std::vector<int> position(ops, -1), b_at(ops / 2, -1);
        for (int i = 0; i < sched.operands; ++i) {
          const rk::HaloAOperand& o = sched.op[i];
          if (o.j < 0 || o.j >= ops / 2 || o.mt < 0 || o.mt > 1 || position[2 * o.j + o.mt] >= 0) {
            ++wrong;
            continue;
          }
          position[2 * o.j + o.mt] = i;
          if (o.first) wrong += b_at[o.j] >= 0, b_at[o.j] = i;
        }
        for (const int at : position) wrong += at < 0;
        for (const int at : b_at) wrong += at < 0;
        using Regs = std::array<std::array<std::array<float, 2>, 4>, 32>;   // [lane][register][half]
        Regs unset;
        for (auto& lane : unset) for (auto& r : lane) r = {kUnset, kUnset};
        for (int warp = 0; warp < rk::kHaloWarps; ++warp)
          for (int gl = 0; gl < GG; ++gl) {
            // The A registers as the schedule's ldmatrix load them (NaN: never loaded). Couples:
            // pairs[pr] (registers 0-1), each loaded once, before an operand that names it.
            // Quads: quad[i] of the operand i that loads it, whole. A giving lane's row is the
            // kernel's address (its base, its half-warp's part, the compile-time offset, the
            // GEMM group's channels), which must be the definition's word for what it gives.
            std::vector<Regs> pairs(pad + 1, unset), quad(ops, unset);
            std::vector<int> loaded_at(pad + 1, -1);
            for (auto& lane : pairs[pad]) lane = {{{0.f, 0.f}, {0.f, 0.f}, {0.f, 0.f}, {0.f, 0.f}}};   // zero pair
            loaded_at[pad] = 0;
            auto load = [&](int matrices, auto word_of, Regs& lo, Regs* hi) {
              for (int lane = 0; lane < 32; ++lane)
                for (int reg = 0; reg < matrices; ++reg)
                  for (int e = 0; e < 2; ++e) {
                    const rk::LdsmElem le = rk::ldsm_elem(lane, reg, e);
                    const int giver = 8 * le.matrix + le.row, wi = word_of(giver, reg / 2);
                    wrong += giver / 16 != reg / 2;              // (an .x2's givers are lanes 0-15)
                    const float v = halo[2 * wi + le.col];
                    wrong += std::isnan(v);                     // a word no chunk staged
                    (hi && reg >= 2 ? (*hi)[lane][reg % 2][e] : lo[lane][reg][e]) = v;
                  }
            };
            for (int i = 0; i < sched.operands; ++i) {
              const rk::HaloAOperand& o = sched.op[i];
              if (rk::halo_a_quads(CG, S, mask)) {
                wrong += o.load[1] >= 0 || o.x2[1] || o.src > i;
                const rk::HaloAOperand& from = sched.op[o.src];
                wrong += from.load[0] < 0 || from.a0 != o.a0 || from.a1 != o.a1;
                if (o.load[0] < 0) continue;
                wrong += o.load[0] != o.a0 || o.src != i || o.x2[0] != (o.a1 == pad);
                const int off0 = rk::halo_a_pair_offset(o.a0, 0, CG, S);
                const int off1 = rk::halo_a_pair_offset(o.a1 == pad ? o.a0 : o.a1, 0, CG, S);
                load(o.x2[0] ? 2 : 4, [&](int giver, int half) {
                  const int base = rk::halo_pixel_base(2 * warp, rk::halo_a_col(giver), S, CG);
                  const int wi = base + (giver / 16 ? off1 : off0) + gl * GW / 2;
                  wrong += wi != base + rk::halo_a_pair_offset(half ? o.a1 : o.a0, gl, CG, S);
                  return wi;
                }, quad[i], nullptr);
                if (o.x2[0])
                  for (auto& lane : quad[i]) lane[2] = lane[3] = {0.f, 0.f};
                continue;
              }
              wrong += o.src != i;                              // couples: the operand's own registers
              for (int k = 0; k < 2; ++k) {
                const int lower = o.load[k], upper = rk::halo_a_couple_upper(lower, CG, S);
                if (lower < 0) continue;
                const int matrices = o.x2[k] ? 2 : 4;             // .x2 or .x4
                if (lower >= pad || (matrices == 4 && upper >= pad)) {   // no such pair
                  ++wrong;
                  continue;
                }
                for (const int pr : {lower, matrices == 4 ? upper : -1}) {
                  if (pr < 0) continue;
                  wrong += loaded_at[pr] >= 0;
                  loaded_at[pr] = i;
                }
                const int off = rk::halo_a_pair_offset(lower, 0, CG, S);
                load(matrices, [&](int giver, int half) {
                  const int wi =
                      rk::halo_pixel_base(2 * warp + giver / 16, rk::halo_a_col(giver), S, CG) + off + gl * GW / 2;
                  wrong += wi != rk::halo_pixel_base(2 * warp, rk::halo_a_col(giver), S, CG) +
                                     rk::halo_a_pair_offset(half ? upper : lower, gl, CG, S);
                  return wi;
                }, pairs[lower], matrices == 4 ? &pairs[upper] : nullptr);
              }
            }
            for (int mt = 0; mt < 2; ++mt)
              for (int nt = 0; nt < rk::halo_ntiles(CG); ++nt) {
                float acc[32][4] = {};
                for (int j = 0; j < rk::halo_class_ksteps(CG, mode, cls); ++j) {
                  if (!rk::halo_kn_meet(j, nt, CG, mode, cls)) {      // skipped: B must be zero
                    for (int lane = 0; lane < 32; ++lane)
                      for (int reg = 0; reg < 2; ++reg)
                        for (int e = 0; e < 2; ++e)
                          wrong += wsm[2 * rk::halo_weight_word(gl, j0 + j, nt, lane, reg, CG, mode) + e] != 0.f;
                    continue;
                  }
                  // The operand of (k-step j, tile mt), at or after its B and its A registers'
                  // loads; each element must be the definition's (ldmatrix.x4 of
                  // halo_a_row_word, zeros for K padding).
                  const int at = position[2 * j + mt];
                  if (at < 0) continue;
                  const rk::HaloAOperand& o = sched.op[at];
                  wrong += o.a0 != rk::halo_a_pair(j, 0, mt, CG, S, mask) ||
                           o.a1 != rk::halo_a_pair(j, 1, mt, CG, S, mask);
                  wrong += b_at[j] > at;
                  if (!rk::halo_a_quads(CG, S, mask))
                    for (const int pr : {o.a0, o.a1}) wrong += loaded_at[pr] < 0 || loaded_at[pr] > at;
                  auto a_half = [&](int lane, int reg, int e) -> float {
                    const float v = rk::halo_a_quads(CG, S, mask) ? quad[o.src][lane][reg][e]
                                                         : pairs[reg < 2 ? o.a0 : o.a1][lane][reg % 2][e];
                    const rk::LdsmElem le = rk::ldsm_elem(lane, reg, e);
                    const int wi = rk::halo_a_row_word(2 * warp + mt, 8 * le.matrix + le.row, j, gl, CG, S, mask);
                    wrong += !(v == (wi < 0 ? 0.f : halo[2 * wi + le.col]));   // NaN included
                    return v;
                  };
                  auto b_half = [&](int lane, int reg, int e) {
                    return wsm[2 * rk::halo_weight_word(gl, j0 + j, nt, lane, reg, CG, mode) + e];
                  };
                  emulate_mma(a_half, b_half, acc);
                }
                for (int lane = 0; lane < 32; ++lane)    // the epilogue, pairs of channels
                  for (int i = 0; i < 4; i += 2) {
                    const rk::FragCoord fc = rk::mma_c_coord(lane, i);
                    const int nn = nt * rk::kMmaN + fc.col;
                    const int64_t k = (tl.slab * GG + gl) * GW + nn;
                    const int word = rk::halo_out_word((2 * warp + mt) * rk::kHaloTileQ + fc.row, gl * GW + nn, SLAB);
                    for (int e = 0; e < 2; ++e) {
                      float v = acc[lane][i + e] + bias[k + e];
                      out[2 * word + e] = p.relu ? std::max(v, 0.f) : v;
                    }
                    owner[word] = warp;
                  }
              }
          }
        // The 16-byte stores: each warp its own two tile rows, in passes, as the kernel.
        const int dq = mode == rk::kHaloDgradPhases ? 2 : 1, spasses = rk::halo_row_passes(rk::kHaloTileQ, CG);
        for (int warp = 0; warp < rk::kHaloWarps; ++warp)
          for (int lane = 0; lane < 32; ++lane) {
            const rk::HaloLaneCopy lc = rk::halo_lane_copy(lane, CG);
            if (!lc.active) continue;
            const int qq0 = int(rk::halo_dst_col(tl.q0 + lc.col, cls, mode)), y_split = rk::kHaloPairCols * dq;
            constexpr int SP = rk::halo_row_passes(rk::kHaloTileQ, CG);
            const uint32_t second = paired ? rk::halo_second<rk::kHaloPairCols, CG, SP>(lc.col, rk::kHaloTileQ) : 0u;
            if (paired && rk::halo_split_pass(rk::kHaloPairCols, CG) >= 0)
              wrong += rk::halo_second_passes(lc.col, rk::kHaloTileQ, rk::kHaloPairCols, CG) !=
                       (second & ~(lc.col + (spasses - 1) * PC >= rk::kHaloTileQ ? 1u << (spasses - 1) : 0u));
            const uint32_t cols_out = rk::halo_pass_mask(qq0, PC * dq, int(dst_w), lc.col, rk::kHaloTileQ, CG,
                                                         second, y_split, tl.n + 1 < q.N);
            for (int mt = 0; mt < 2; ++mt) {
              const int pl = 2 * warp + mt;
              const int64_t pp = rk::halo_dst_row(tl.p0 + pl, cls, mode);
              if (pp >= dst_h) break;
              int jumps = 0;   // the kernel's destination pointer: moved into the second image once
              for (int v = 0; v < spasses; ++v) {
                const int col = lc.col + v * PC;
                jumps += rk::halo_enters_second<rk::kHaloPairCols, CG>(v, second);
                // As the kernel moves on: qq0 by passes, less the split in a paired tile's
                // second image; by definition: tile column col, or col - 8 of image n + 1.
                const bool hi = second >> v & 1u;
                const int64_t nn = tl.n + hi, qq = qq0 + v * PC * dq - (hi ? y_split : 0);
                if (col < rk::kHaloTileQ)   // (past the row the pass stores nothing: cols_out)
                  wrong += hi != (paired && col >= rk::kHaloPairCols) || (paired && jumps != int(hi));
                wrong += (cols_out >> v & 1u) != (col < rk::kHaloTileQ && qq < dst_w && nn < q.N);
                if (!(cols_out >> v & 1u) || nn >= q.N) continue;   // (never written past y)
                wrong += qq != rk::halo_dst_col(tl.q0 + col - (hi ? rk::kHaloPairCols : 0), cls, mode);
                const int word = rk::halo_out_word(pl * rk::kHaloTileQ + lc.col, lc.part * 8, SLAB) +
                                 v * PC * rk::halo_out_pixel_words(SLAB);
                wrong += word != rk::halo_out_word(pl * rk::kHaloTileQ + col, lc.part * 8, SLAB);
                for (int wd = word; wd < word + 4; ++wd) wrong += owner[wd] != warp;
                for (int e = 0; e < 8; ++e) {
                  float& dst = y[((nn * dst_h + pp) * dst_w + qq) * C + tl.slab * SLAB + lc.part * 8 + e];
                  wrong += !std::isnan(dst);                  // written twice
                  dst = out[2 * word + e];
                  wrong += std::isnan(dst);                   // a word the epilogue never wrote
                }
              }
            }
          }
      }
    }
  }
  // Against the direct sum of the problem itself: fprop of x, or dgrad, whose dy is what the
  // kernel stages as its source (d.P x d.Q pixels): dx[b][c][ih][iw] = sum over the taps
  // (r, s) and the group's k with ih = oh * stride - pad + r of dy[b][k][oh][ow] w[k][c % Cg][r][s].
  for (int64_t b = 0; b < q.N; ++b)
    for (int64_t k = 0; k < C; ++k)
      for (int64_t pp = 0; pp < dst_h; ++pp)
        for (int64_t qq = 0; qq < dst_w; ++qq) {
          float ref = bias[k];
          for (int64_t c = 0; c < CG; ++c)
            for (int r = 0; r < 3; ++r)
              for (int s = 0; s < 3; ++s) {
                if (!dgrad) {
                  const int64_t hh = pp * S - q.pad_h + r, ww = qq * S - q.pad_w + s;
                  if (hh >= 0 && hh < q.H && ww >= 0 && ww < q.W) ref += X(b, (k / CG) * CG + c, hh, ww) * Wt(k, c, r, s);
                } else {
                  const int64_t hs = pp + d.pad_h - r, ws = qq + d.pad_w - s;
                  if (hs < 0 || ws < 0 || hs % d.stride_h != 0 || ws % d.stride_w != 0) continue;
                  const int64_t oh = hs / d.stride_h, ow = ws / d.stride_w;
                  if (oh < d.P && ow < d.Q) ref += X(b, (k / CG) * CG + c, oh, ow) * Wt((k / CG) * CG + c, k % CG, r, s);
                }
              }
          if (p.relu) ref = std::max(ref, 0.f);
          const float got = y[((b * dst_h + pp) * dst_w + qq) * C + k];
          wrong += !(got == ref);                           // NaN (never written) included
        }
  for (int64_t t = 0; t < tiles; ++t) wrong += visits[t] != 1;
  return wrong;
}

struct Conflicts { int accesses = 0, wavefronts = 0, minimum = 0; };

// Every warp-wide shared-memory access of one tile of fprop_halo, by kind.
template <int CG>
std::map<std::string, Conflicts> count_conflicts(int S, int mode = rk::kHaloFprop) {
  constexpr int SLAB = rk::halo_slab(CG), GG = rk::halo_gemm_groups(CG), GW = rk::halo_gw(CG);
  std::map<std::string, Conflicts> out;
  auto add = [&](const std::string& kind, const std::vector<std::vector<int>>& lanes, int minimum) {
    if (lanes.empty()) return;
    Conflicts& c = out[kind];
    ++c.accesses;
    c.wavefronts += wavefronts(lanes);
    c.minimum += minimum;
  };
  for (int warp = 0; warp < rk::kHaloWarps; ++warp) {
    for (int j = 0; j < rk::halo_ksteps(CG, mode); ++j)
      for (int gl = 0; gl < GG; ++gl) {
        const int cls = rk::halo_kstep_class(j, CG, mode), mask = rk::halo_class_mask(mode, cls);
        const int jl = j - rk::halo_class_kstep0(CG, mode, cls);
        for (int nt = 0; nt < rk::halo_ntiles(CG); ++nt) {   // B: one 64-bit load per lane
          std::vector<std::vector<int>> lanes;
          for (int lane = 0; lane < 32; ++lane) {
            const int wd = rk::halo_weight_word(gl, j, nt, lane, 0, CG, mode);
            lanes.push_back({wd, wd + 1});
          }
          add("B loads (64-bit)", lanes, 2);
        }
        if (jl != 0) continue;   // A: the class's ldmatrix (halo_a_schedule), 16 bytes a row
        const rk::HaloASchedule sched = rk::halo_a_schedule(CG, S, mask);
        const int pad = rk::halo_a_pairs(CG, S);
        for (int i = 0; i < sched.operands; ++i)
          for (int k = 0; k < 2; ++k) {
            const rk::HaloAOperand& o = sched.op[i];
            if (o.load[k] < 0) continue;
            std::vector<std::vector<int>> lanes;
            for (int lane = 0; lane < (o.x2[k] ? 16 : 32); ++lane) {   // an .x2: lanes 0-15
              // Quads: K half 1's pair for lanes 16-31; couples: the pair `stride` rows down.
              const int pr = lane < 16 || !rk::halo_a_quads(CG, S, mask) ? o.load[k] : o.a1 == pad ? o.a0 : o.a1;
              const int row = rk::halo_a_quads(CG, S, mask) ? 2 * warp : 2 * warp + lane / 16;
              const int w0 =
                  rk::halo_pixel_base(row, rk::halo_a_col(lane), S, CG) + rk::halo_a_pair_offset(pr, gl, CG, S);
              lanes.push_back({w0, w0 + 1, w0 + 2, w0 + 3});
            }
            add("A ldmatrix", lanes, int(lanes.size() / 8));
          }
      }
    for (int gl = 0; gl < GG; ++gl)                            // epilogue: 32-bit pair stores
      for (int mt = 0; mt < 2; ++mt)
        for (int nt = 0; nt < rk::halo_ntiles(CG); ++nt)
          for (int i = 0; i < 4; i += 2) {
            std::vector<std::vector<int>> lanes;
            for (int lane = 0; lane < 32; ++lane) {
              const rk::FragCoord fc = rk::mma_c_coord(lane, i);
              const int nn = nt * rk::kMmaN + fc.col;
              lanes.push_back({rk::halo_out_word((2 * warp + mt) * rk::kHaloTileQ + fc.row, gl * GW + nn, SLAB)});
            }
            add("epilogue stores", lanes, 1);
          }
  }
  // The staging copies (a halo row's passes) and the output loads (a tile row's passes), 16
  // bytes a lane, by the lanes that take part in a pass.
  constexpr int COPY_WORDS = 4, PC = rk::halo_pass_cols(CG);
  auto passes = [&](const std::string& kind, int rows, int cols, auto word_of) {
    for (int row = 0; row < rows; ++row)
      for (int v = 0; v < rk::halo_row_passes(cols, CG); ++v) {
        std::vector<std::vector<int>> lanes;
        for (int lane = 0; lane < 32; ++lane) {
          const rk::HaloLaneCopy lc = rk::halo_lane_copy(lane, CG);
          if (!lc.active || lc.col + v * PC >= cols) continue;
          std::vector<int> words;
          for (int e = 0; e < COPY_WORDS; ++e) words.push_back(word_of(row, lc.col + v * PC, lc.part) + e);
          lanes.push_back(words);
        }
        add(kind, lanes, int((lanes.size() * COPY_WORDS + 31) / 32));
      }
  };
  passes("halo copies", rk::halo_rows(S), rk::halo_cols(S),
         [&](int row, int col, int part) { return rk::halo_word(row, col, part * 8, S, CG); });
  passes("output loads (16-byte)", rk::kHaloTileP, rk::kHaloTileQ, [&](int row, int col, int part) {
    return rk::halo_out_word(row * rk::kHaloTileQ + col, part * 8, SLAB);
  });
  return out;  // (the epilogue and output loads repeat unchanged for each phase class)
}

// The conflicts the design intends, and no others: A, B, epilogue and output loads at the
// minimum; the 16-byte staging copies within 20% of it at stride 1 (a row's last pass takes
// two pixels of a pass's eight, in two quarter-warps) and at most twice it at stride 2 (the
// even-then-odd columns put a quarter-warp's pixels on overlapping banks).
template <int CG>
void check_halo_width() {
  for (const auto [S, mode] : {std::pair{1, rk::kHaloFprop}, {2, rk::kHaloFprop}, {1, rk::kHaloDgradPhases}}) {
    for (const auto& [kind, c] : count_conflicts<CG>(S, mode)) {
      std::printf("  %s Cg=%d stride %d %-22s %5d accesses, %5d wavefronts (minimum %d)\n",
                  mode == rk::kHaloFprop ? "fprop_halo" : "dgrad_halo phases", CG, S, kind.c_str(),
                  c.accesses, c.wavefronts, c.minimum);
      if (kind.find("copies") != std::string::npos) {
        CHECK(S == 1 ? 5 * c.wavefronts <= 6 * c.minimum : c.wavefronts <= 2 * c.minimum);
      } else {
        CHECK(c.wavefronts == c.minimum);
      }
    }
  }
}

}  // namespace

// Where an fprop call without a packed weight packs it itself first (halo_packs_in_call), on
// 32x4d's layers at batch 64 on 132 SMs: the grids of the pre-packed kernel (the CTAs an SM by
// shared memory: 3 at stage 4's 57 KB, 4 at stages 1 and 3, one at the stride-2 entry's 121 KB) and of
// packing in each CTA (fewer where a CTA's run of tiles would be shorter than halo_min_run: one
// an SM at stage 4, two at stage 3), and the rule (the second under 40% of the first).
void test_packing_in_the_call() {
  struct Layer { int64_t cg, hw, stride, in_ctas, prepacked; bool in_call; };
  const Layer layers[] = {
      {32, 7, 1, 132, 396, true},     // stage 4: 32 slabs x 32 image pairs; a third
      {32, 14, 2, 132, 132, false},   // its entry: one CTA an SM by shared memory either way
      {16, 14, 1, 264, 528, false},   // stage 3: half
      {4, 56, 1, 528, 528, false},    // stage 1
  };
  for (const Layer& l : layers) {
    rk::ConvParams p = halo_params(64, l.cg, 32, l.hw, l.hw, l.stride, 1);
    p.num_sms = 132;
    const rk::ConvProblem& q = p.problem;
    const int64_t tiles = rk::halo_tiles(q.N, q.P, q.Q, q.C / rk::halo_slab(int(l.cg)), rk::halo_paired(q, rk::kHaloFprop));
    CHECK(rk::halo_grid(tiles, 132, int(l.stride), int(l.cg), rk::kHaloFprop, false) == l.in_ctas);
    CHECK(rk::halo_grid(tiles, 132, int(l.stride), int(l.cg), rk::kHaloFprop, true) == l.prepacked);
    CHECK(rk::halo_packs_in_call(p) == l.in_call);
    const rk::LaunchShape s = rk::fprop_halo_shape(p);
    CHECK(s.launches == (l.in_call ? 2 : 1) && s.grid_x == (l.in_call ? l.prepacked : l.in_ctas));
    CHECK(rk::fprop_halo_workspace_elems(p) == (l.in_call ? rk::halo_packed_words(q.K, int(l.cg)) : 0));
    if (!l.in_call) continue;
    p.packed = p.x;                                // given a packed weight: nothing to pack
    CHECK(!rk::halo_packs_in_call(p) && rk::fprop_halo_workspace_elems(p) == 0 && rk::fprop_halo_shape(p).launches == 1);
    p.packed = nullptr;
    p.direction = rk::Direction::kDgrad;          // dgrad reads the forward pass's buffer
    CHECK(!rk::halo_packs_in_call(p));
  }
}

void test_fprop_halo() {
  test_packing_in_the_call();
  // What it refuses, with the reason (the lower rungs run those).
  rk::ConvParams p = halo_params(1, 4, 8, 8, 8, 1, 1);
  CHECK_EQ_STR(rk::fprop_halo_can_implement(p), "");
  p.dtype = rk::DType::kFloat32;
  CHECK_EQ_STR(rk::fprop_halo_can_implement(p), "fp32 runs on CUDA cores");
  p = halo_params(1, 12, 4, 8, 8, 1, 1);
  CHECK(rk::fprop_halo_can_implement(p).find("Cg = Kg in") == 0);
  p = halo_params(1, 8, 4, 9, 9, 3, 1);
  CHECK_EQ_STR(rk::fprop_halo_can_implement(p), "stride other than 1 or 2");
  p = halo_params(1, 8, 3, 8, 8, 1, 1);   // 24 channels: not whole slabs of 4 groups of 8
  CHECK_EQ_STR(rk::fprop_halo_can_implement(p), "channels are not whole slabs of groups");
  p = halo_params(1, 8, 4, 8, 8, 1, 1);
  p.x_stride[1] = 64, p.x_stride[3] = 1;  // NCHW-like input
  CHECK_EQ_STR(rk::fprop_halo_can_implement(p), "input or output is not channels_last");
  p = halo_params(1, 8, 4, 8, 8, 1, 1);
  p.x = reinterpret_cast<void*>(uintptr_t(264));
  CHECK(rk::fprop_halo_can_implement(p).find("16-byte aligned") != std::string::npos);
  p = halo_params(1, 64, 1, 8, 8, 2, 1);  // Cg = 64 at stride 2: over the shared-memory budget
  CHECK(rk::fprop_halo_can_implement(p).find("227 KB") != std::string::npos);
  p = halo_params(1, 8, 4, 8193, 8193, 1, 1);   // 8193^2 x 32 channels > 2^31 elements
  CHECK(rk::fprop_halo_can_implement(p).find("spans 2^31 elements") != std::string::npos);
  p.direction = rk::Direction::kDgrad;         // dgrad checks dx and dy the same way
  CHECK(rk::dgrad_halo_can_implement(p).find("spans 2^31 elements") != std::string::npos);
  p = halo_params(1, 8, 4, 8, 8, 1, 1);
  p.w_stride[0] = int64_t(1) << 28;            // the weight's 32 rows 2^28 elements apart
  CHECK_EQ_STR(rk::fprop_halo_can_implement(p), "the weight spans 2^31 elements or more (addressed with 32-bit offsets)");
  p.direction = rk::Direction::kDgrad;
  CHECK_EQ_STR(rk::dgrad_halo_can_implement(p), "the weight spans 2^31 elements or more (addressed with 32-bit offsets)");
  p = halo_params(2, 8, 4, 7, 7, 1, 1);        // paired tiles address two images in 32 bits
  const int64_t last = 6 * p.x_stride[2] + 6 * p.x_stride[3] + 31 + 8;   // past image 1's last copy
  p.x_stride[0] = ((int64_t(1) << 31) - last + 7) / 8 * 8;   // the first 16-byte multiple that reaches 2^31
  CHECK_EQ_STR(rk::fprop_halo_can_implement(p), "two images span 2^31 elements or more on paired tiles (addressed in 32 bits)");
  p.x_stride[0] -= 8;
  CHECK_EQ_STR(rk::fprop_halo_can_implement(p), "");
  p = halo_params(2, 8, 4, 9, 9, 1, 1);        // unpaired tiles address one image at a time
  p.x_stride[0] = int64_t(1) << 31;
  CHECK_EQ_STR(rk::fprop_halo_can_implement(p), "");
  // Paired tiles, by hand (Q, W, stride, pad along the columns; the first halo column of the
  // second image is 8 * stride): 7 x 7 at stride 1 (n's last output reads halo column 8, image
  // column 7 of n and -1 of n + 1: padding of both); 8 columns at stride 1 (column 9 is n + 1's
  // column 0); at stride 2 an 8-column grid of a 15-wide source (halo column 16: n's column 15,
  // past its 15) but not of a 16-wide one; padding 0 with a 9-wide source (Q = 7: n's column 8
  // is real) but an 8-wide one (Q = 6: n reads up to column 7).
  CHECK(rk::halo_paired(7, 7, 1, 1) && !rk::halo_paired(8, 8, 1, 1));
  CHECK(rk::halo_paired(7, 14, 2, 1) && rk::halo_paired(8, 15, 2, 1) && !rk::halo_paired(8, 16, 2, 1));
  CHECK(!rk::halo_paired(7, 9, 1, 0) && rk::halo_paired(6, 8, 1, 0) && !rk::halo_paired(14, 14, 1, 1));
  // Each case: what it catches.
  CHECK(emulate<4>(2, 16, 9, 21, 1, 1, false, 3) == 0);   // 32x4d stage 1 widths, 2 slabs, partial tiles
  CHECK(emulate<4>(1, 8, 12, 33, 2, 1, true, 2) == 0);    // stride 2, ReLU, a CTA walking many tiles
  CHECK(emulate<8>(1, 8, 8, 16, 1, 1, true, 132) == 0);   // exact tiles, more CTAs than tiles
  CHECK(emulate<16>(2, 4, 7, 7, 1, 1, false, 1) == 0);    // a paired tile (7 columns), one CTA does all
  CHECK(emulate<32>(1, 2, 14, 14, 2, 1, false, 4) == 0);  // stage 4 entry widths, stride 2, one image a pair
  CHECK(emulate<16>(2, 4, 14, 14, 1, 1, true, 3) == 0);   // stage 3 widths: 14 columns, not paired
  CHECK(emulate<24>(1, 2, 6, 18, 1, 0, false, 2) == 0);   // the paper's Cg = 24, padding 0
  CHECK(emulate<14>(1, 8, 9, 17, 1, 1, true, 2) == 0);    // the paper's Cg = 14: 4 groups a GEMM group
  CHECK(emulate<14>(2, 4, 11, 9, 2, 1, false, 3) == 0);   // Cg = 14 at stride 2
  CHECK(emulate<40>(1, 1, 5, 9, 2, 2, true, 2) == 0);     // the paper's Cg = 40, padding 2
  CHECK(emulate<64>(1, 1, 3, 17, 1, 1, false, 2) == 0);   // 1x64d widths: 8 n8 tiles, 36 k-steps
  // Paired tiles (two images a tile where the grid is at most 7 columns wide): an odd batch (the
  // last pair one image), the 32x4d stage 4 and entry shapes, a run of CTAs crossing pairs and
  // slabs, the widest pairable grid (8 columns at stride 2, where halo column 16 is padding of
  // both images), and rows beyond one tile.
  CHECK(emulate<32>(3, 2, 7, 7, 1, 1, true, 2) == 0);     // stage 4 widths, 2 pairs
  CHECK(emulate<32>(5, 2, 14, 14, 2, 1, false, 3) == 0);  // stage 4 entry widths, 3 pairs
  CHECK(emulate<4>(3, 16, 7, 7, 1, 1, false, 5) == 0);    // Cg = 4, two slabs
  CHECK(emulate<8>(3, 8, 19, 15, 2, 1, true, 4) == 0);    // an 8-column grid at stride 2, 2 row tiles
  CHECK(emulate<14>(3, 4, 5, 6, 1, 0, false, 2) == 0);    // Cg = 14, padding 0 (4 columns)
  CHECK(emulate<8>(3, 8, 5, 8, 1, 1, false, 2) == 0);     // 8 columns at stride 1: not paired
  // dgrad_halo: dgrad at stride 1 as fprop of dy, rotated and transposed weights.
  constexpr int kD1 = rk::kHaloDgrad, kD2 = rk::kHaloDgradPhases;
  CHECK(emulate<4>(2, 16, 9, 21, 1, 1, false, 3, kD1) == 0);   // 32x4d stage 1 widths
  CHECK(emulate<8>(1, 8, 10, 17, 1, 0, false, 2, kD1) == 0);   // padding 0 -> 2 on dy
  CHECK(emulate<32>(1, 2, 7, 7, 1, 2, false, 1, kD1) == 0);    // padding 2 -> 0, stage 4 widths
  CHECK(emulate<32>(3, 2, 7, 7, 1, 1, false, 2, kD1) == 0);    // stage 4, paired tiles, an odd batch
  CHECK(emulate<14>(1, 4, 7, 10, 1, 1, false, 2, kD1) == 0);  // Cg = 14
  CHECK(emulate<24>(1, 2, 6, 9, 1, 1, false, 2, kD1) == 0);    // Cg = 24
  // dgrad_halo at stride 2 by phase class: odd and even dx sizes (the last class row or column
  // empty or not), partial class-grid tiles, and the 32x4d entry widths 8, 16, 32.
  CHECK(emulate<8>(1, 8, 14, 34, 2, 1, false, 3, kD2) == 0);   // stage 2 entry widths, even sizes
  CHECK(emulate<4>(2, 16, 9, 21, 2, 1, false, 2, kD2) == 0);   // odd sizes, Cg = 4, 2 slabs
  CHECK(emulate<16>(1, 4, 15, 14, 2, 1, false, 1, kD2) == 0);  // stage 3 entry widths, one CTA
  CHECK(emulate<32>(1, 2, 14, 13, 2, 1, false, 4, kD2) == 0);  // stage 4 entry widths
  CHECK(emulate<32>(3, 2, 14, 14, 2, 1, false, 2, kD2) == 0);  // paired 7-column class grids, odd batch
  CHECK(emulate<8>(3, 8, 9, 13, 2, 1, false, 3, kD2) == 0);    // paired, odd dx sizes, Cg = 8
  CHECK(emulate<14>(1, 4, 10, 9, 2, 1, false, 2, kD2) == 0);  // Cg = 14
  CHECK(emulate<24>(1, 2, 6, 7, 2, 1, false, 2, kD2) == 0);    // Cg = 24
  CHECK(emulate<64>(1, 1, 5, 6, 2, 1, false, 2, kD2) == 0);    // 1x64d widths
  p = halo_params(1, 8, 4, 9, 9, 2, 2);
  p.direction = rk::Direction::kDgrad;
  CHECK(rk::dgrad_halo_can_implement(p).find("stride 2 with padding other than 1") == 0);
  p = halo_params(1, 8, 4, 9, 9, 3, 1);
  p.direction = rk::Direction::kDgrad;
  CHECK_EQ_STR(rk::dgrad_halo_can_implement(p), "stride other than 1 or 2");
  p = halo_params(1, 8, 4, 8, 8, 1, 1);
  p.direction = rk::Direction::kDgrad;
  p.y_stride[1] = 64, p.y_stride[3] = 1;  // an NCHW-like grad_output, named as dgrad names it
  CHECK_EQ_STR(rk::dgrad_halo_can_implement(p), "grad_output or grad_input is not channels_last");
  check_halo_width<4>();
  check_halo_width<8>();
  check_halo_width<14>();
  check_halo_width<16>();
  check_halo_width<24>();
  check_halo_width<32>();
  check_halo_width<40>();
  check_halo_width<64>();
  // A negative control: a pitch of 16 words (no pad) must show conflicts the check would catch.
  std::vector<std::vector<int>> rows;
  for (int lane = 0; lane < 32; ++lane) rows.push_back({(lane / 4) * 16 + lane % 4});
  CHECK(wavefronts(rows) == 4);
}
