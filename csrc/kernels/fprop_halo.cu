// fprop_halo.cu: rung 4 of fprop, designed to move each byte once: the halo of a pixel tile
// staged in shared memory once by 16-byte asynchronous copies, nine taps read there through
// ldmatrix (one instruction an A fragment), tensor cores with K = (tap, channel) inside a GEMM
// group (a group, or two at Cg = 4 with block-diagonal weights, so that every 16-byte chunk
// of a pixel is in one), persistent CTAs with two halo buffers walking contiguous runs of the
// tiles, each packing its slab's weights into shared memory in exactly the B registers' order
// or, given the weight packed before the launch in that order (ConvParams::packed, made by
// halo_pack_launch: the op pack_weight, once a training step for fprop and dgrad, once for a
// frozen module, or by the call itself where packing in the CTAs would starve the grid:
// halo_packs_in_call), copying them with 16-byte copies beside a tile's halo; bias and ReLU
// fused, 16-byte stores; one launch (two where the call packs). On grids at most 8 columns wide
// (32x4d's stage 4, 7x7) a tile holds two images side by side (paired tiles, halo_paired), so
// that its 128 pixels are not mostly padding. Index maps, shared-memory layout and the tiling: halo_fragments.h.
//
//   y[n, g*Kg + k, p, q] = act(bias + sum_{tap, c} x[n, g*Cg + c, p*s - pad + r, q*s - pad + t] * w[.., c, r, t])
//
// Predicted, not measured (resnext_kernels/perf_model.py `cuda:fprop_halo`, registers from the
// cubin, instruction counts from its SASS; H200, ResNeXt-50 32x4d, batch 64, bf16), us, bound
// by L2 at stage 1 and the stride-2 entries, issue at stage 2, latency at stages 3-4: stage1 28,
// stage2.entry 43, stage2 18, stage3.entry 23, stage3 11, stage4.entry 14, stage4 11 (the call
// packing the weight first; 17 packing in the CTAs): 0.29 ms over the 16 layers, 67% of the
// 0.196 ms roofline (cuDNN measured 0.79 ms). The halo is staged and the output stored a row a
// warp at a time (halo_lane_copy), about 13 instructions a 16-byte copy and at the minimum of
// shared-memory wavefronts at stride 1; a class's epilogue is one branch-free form (bias or
// not, ReLU the conversion's own clamp: 46-192 instructions a warp, 162-374 when every element
// carried the bias and ReLU under predicates, dgrad's too, before 2026-12-04); the slab's
// weights are packed at 22-144 instructions a word (halo_pack_slab), a slab's GEMM groups'
// loads in flight together (one round trip at Cg = 4-16, four before 2026-12-04); all counted
// in the SASS. A warp's two tile rows share the A fragments they both read (halo_a_schedule: at
// stride 1 two thirds of the ldmatrix); still, the A reads of the halo are 50% of a tile's
// shared-memory wavefronts at Cg = 4. Also: the stride-2 entries re-read 1.41x the source from
// L2; 8x16 tiles leave 23% of a 14x14 image idle; each launch's fixed 3 us (16 of them are 48
// us). On a weight packed before the launch, with the bias a frozen module folds in (a frozen
// module's kept pack_weight buffer; a training step's forward pass, which launches pack_weight
// for fprop and dgrad, ~3 us a layer more, and has no bias): stage1 29, stage2.entry 43, stage2
// 17, stage3.entry 23, stage3 10, stage4.entry 13, stage4 8: 0.28 ms (69%), L2 at stage 1 and
// the entries, issue at stage 2, shared memory at stage 3 (0.30 ms before the epilogue's forms,
// bound by issue at stride 1).
// Unverified on a GPU: forced only until the GPU check passes it.
//
// Serves bf16/fp16, channels_last x and y, Kg == Cg in {4, 8, 14, 16, 24, 32, 40, 64}, stride 1 or
// 2, dilation 1, 16-byte aligned pixels; can_implement refuses the rest (the lower rungs run).
//
// dgrad_halo (dgrad rung 4) is this kernel on dy. Stride 1: dx = conv(dy, w') with padding
// 2 - pad and w' the weight transposed within each group and rotated by 180 degrees, which
// only the packing does (halo_weight_source). Stride 2 (padding 1): by stride-phase class, the
// four classes of dx pixels (row and column parity) each a stride-1 convolution of dy over its
// own 1, 2, 2 or 4 taps on a ceil(H/2) x ceil(W/2) grid; a CTA stages one dy halo per tile of
// that grid and runs the four in turn, each storing every other dx pixel of its parity (the
// same 16-byte stores: a pixel's channels stay contiguous). Predicted the same way, on the
// weight the forward pass packed (as a training step runs it): stage1 29, stage2.entry 40,
// stage2 16, stage3.entry 21, stage3 10, stage4.entry 12 (four epilogues a tile), stage4 8 us:
// 0.27 ms, 72% (packing in its CTAs, 0.30 ms; cuDNN measured 112 / 174 / 68 / 96 / 31 / 56 / 21:
// 1.06 ms).
#include <algorithm>
#include <atomic>

#include "async_copy.cuh"
#include "common.cuh"
#include "halo_fragments.h"
#include "kernels.h"
#include "mma_ops.cuh"
#include "../registry.h"

namespace rk {

namespace {

// The launch shape of the problem as the kernel sees it, on a weight packed before the launch or
// packed by each CTA (defined with the registry entries below).
LaunchShape halo_shape(const ConvParams& p, int mode, bool prepacked);

// Packs slab `slab`'s weights into shared memory in the B registers' order
// (wpack[gemm group][kstep][ntile][lane][2], halo_weight_word; a word two elements,
// halo_class_weight_elem). A CTA does it when it starts a slab (once or twice a CTA:
// halo_cta_tiles; the first while its first tile's halo flies). A thread's lane and register
// are fixed (halo_pack_half: each half of the CTA takes every other (k-step, n8 tile) pair),
// each class runs with its index a compile-time constant (its tap set and first k-step
// constants), and the weight is addressed in 32 bits (halo_weight_offsets_reason): 22-144
// instructions a word in the SASS. A round (halo_pack_round) loads a thread's next words of
// every GEMM group of the slab, then stores them: one round trip at Cg = 4, 8 and 16, where a
// GEMM group at a time took four.
template <typename T, int CG, int MODE>
__device__ __forceinline__ void halo_pack_slab(const ConvParams& p, int64_t slab, uint32_t* wsm) {
  constexpr int GG = halo_gemm_groups(CG), NT = halo_ntiles(CG);
  const T* __restrict__ w = static_cast<const T*>(p.w);
  const int ws0 = int(p.w_stride[0]), ws1 = int(p.w_stride[1]), ws2 = int(p.w_stride[2]);
  const int ws3 = int(p.w_stride[3]), groups = int(p.problem.G);
  const int half = threadIdx.x / 64, lane = threadIdx.x % 64 / 2, reg = threadIdx.x % 2;
  auto pack_class = [&](auto cls_constant) {
    constexpr int CLS = decltype(cls_constant)::value;
    constexpr int J0 = halo_class_kstep0(CG, MODE, CLS), PAIRS = halo_class_ksteps(CG, MODE, CLS) * NT;
    constexpr int WORDS = (PAIRS + 1) / 2, ROUND = halo_pack_round(CG, MODE, WORDS);
    const int parity = (half + J0 * NT) % 2;                       // of (J0 + jj) NT + nt
#pragma unroll 1
    for (int k0 = 0; k0 < WORDS; k0 += ROUND) {
      // The round's words loaded, then stored: straight-line code (the round's last words
      // predicated off where the class's count leaves a remainder), so that every load of the
      // round is in flight before the first store waits.
      uint32_t word[GG][ROUND];
#pragma unroll
      for (int gl = 0; gl < GG; ++gl) {
        const int group0 = (int(slab) * GG + gl) * (halo_gw(CG) / CG);   // the GEMM group's first
#pragma unroll
        for (int u = 0; u < ROUND; ++u) {
          const int pr = 2 * (k0 + u) + parity, jj = pr / NT, nt = pr % NT;
          const bool live = halo_pack_live(k0 + u, WORDS, ROUND, pr, PAIRS);
          word[gl][u] = 0;
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const HaloWeightElem el = halo_class_weight_elem(CLS, jj, nt, lane, reg, e, CG, MODE);
            const int group = group0 + el.sub;
            T v = from_float<T>(0.f);
            if (live && el.ok && group < groups) {
              const HaloWeightSource src = halo_weight_source(group, el.n, el.c, el.tap, CLS, CG, MODE);
              v = w[int(src.k) * ws0 + int(src.c) * ws1 + src.r * ws2 + src.s * ws3];
            }
            word[gl][u] |= uint32_t(*reinterpret_cast<const uint16_t*>(&v)) << (16 * e);
          }
        }
      }
#pragma unroll
      for (int gl = 0; gl < GG; ++gl)
#pragma unroll
        for (int u = 0; u < ROUND; ++u) {
          const int pr = 2 * (k0 + u) + parity;
          if (halo_pack_live(k0 + u, WORDS, ROUND, pr, PAIRS))
            wsm[halo_weight_word(gl, J0 + pr / NT, pr % NT, lane, reg, CG, MODE)] = word[gl][u];
        }
    }
  };
  pack_class(std::integral_constant<int, 0>{});
  if constexpr (halo_classes(MODE) == 4) {
    pack_class(std::integral_constant<int, 1>{});
    pack_class(std::integral_constant<int, 2>{});
    pack_class(std::integral_constant<int, 3>{});
  }
}

// Register budget: sm_90 is told the CTAs per SM that its shared memory holds (halo_ctas_per_sm:
// 4 at stride 1, 124-128 registers; 2-3 at stride 2, 156-186), the occupancy the persistent grid
// and the model assume, with no spill (CI's resource check). ptxas's own choice uses fewer
// registers but spilled at Cg = 24. sm_80 (164 KB an SM, so fewer CTAs than that table says)
// is told one CTA, which spills nowhere; the launcher sizes its grid by the occupancy the
// compiled kernel really has.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define RK_HALO_BOUNDS __launch_bounds__(kHaloThreads, 1)
#else
#define RK_HALO_BOUNDS __launch_bounds__(kHaloThreads, halo_ctas_per_sm(STRIDE, CG, MODE))
#endif

// `p` is the problem as fprop sees it (dgrad: halo_dgrad_as_fprop); the destination has
// dst_h x dst_w pixels (q.P x q.Q but for the phases, whose class grids interleave). PACKED: the
// weight comes packed (p.packed), a kernel of its own (without the packing code, whose registers
// the budget above leaves no room to share).
template <typename T, int CG, int STRIDE, int MODE, bool PACKED>
__global__ void RK_HALO_BOUNDS
fprop_halo_kernel(ConvParams p, int64_t tiles, int64_t dst_h, int64_t dst_w, bool paired) {
  constexpr int SLAB = halo_slab(CG), GG = halo_gemm_groups(CG), GW = halo_gw(CG);
  constexpr int NT = halo_ntiles(CG), STAGE = halo_stage_words(STRIDE, CG);
  constexpr int WWORDS = halo_slab_weight_words(CG, MODE);
  static_assert(STAGE % 2 == 0 && WWORDS % 4 == 0, "the weights' shared memory takes 16-byte copies");
  extern __shared__ uint4 smem4[];
  uint32_t* const smem = reinterpret_cast<uint32_t*>(smem4);
  uint32_t* const wsm = smem + 2 * STAGE;
  uint32_t* const osm = wsm + WWORDS;
  const ConvProblem& q = p.problem;
  const T* __restrict__ x = static_cast<const T*>(p.x);
  T* __restrict__ y = static_cast<T*>(p.y);
  const T* __restrict__ bias = static_cast<const T*>(p.bias);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, khalf = lane / 16;
  // The shared-space address, computed once, of this lane's ldmatrix row in m16 tile 0 at tap
  // 0, channel 0 of the first halo buffer. The loop then adds the buffer, the GEMM group, the
  // half-warp's part (lanes 16-31: a chunk on for quads, `stride` halo rows on for couples;
  // halo_a_quads) and a compile-time pair offset.
  constexpr uint32_t STEP_LO = 4u * (halo_pixel_base(1, 0, STRIDE, CG) - halo_pixel_base(0, 0, STRIDE, CG));
  const uint32_t row_s = shared_address(smem) + 4u * halo_pixel_base(2 * warp, halo_a_col(lane), STRIDE, CG);

  // Issues the asynchronous copies of tile tl's halo into buffer `buf` (zeros outside the image),
  // a row a warp at a time, in passes of 32 16-byte chunks (halo_lane_copy: this lane's chunk
  // of a pixel and its column in pass 0; each pass then moves PC pixels on, with compile-time
  // shared-memory steps). Within an image, offsets and coordinates are 32-bit
  // (halo_offsets_reason checks they fit): a copy's address and bounds cost a few instructions.
  constexpr int PC = halo_pass_cols(CG), ROWS = halo_rows(STRIDE), COLS = halo_cols(STRIDE);
  constexpr int PASSES = halo_row_passes(COLS, CG), STEP = halo_copy_step(STRIDE, CG);
  constexpr int ROW_WORDS = halo_row_words(STRIDE, CG);
  constexpr bool IDLE_LANES = halo_parts(CG) * PC < 32;
  const HaloLaneCopy lc = halo_lane_copy(lane, CG);
  const int xs_h = int(p.x_stride[2]), xs_w = int(p.x_stride[3]), ys_h = int(p.y_stride[2]);
  const int ys_w = int(p.y_stride[3]), src_h = int(q.H), src_w = int(q.W);
  const int out_h = int(dst_h), out_w = int(dst_w);
  const int64_t x_pass = int64_t(PC) * xs_w;                      // elements a pass moves on
  const uint32_t copy_s = shared_address(smem) + 4u * halo_word(0, lc.col, lc.part * 8, STRIDE, CG);
  // Paired tiles (halo_paired: a kernel argument, read where used rather than held, as the
  // stride-1 kernels are at the register budget; compiled out where not built, halo_pairs_built):
  // a lane's passes in the second image (halo_split_mask, or its own halo_second_passes) move its
  // source and destination one image on and the split's columns back.
  constexpr bool PAIRS = halo_pairs_built(CG, MODE);
  constexpr int X_SPLIT = kHaloPairCols * STRIDE, Y_SPLIT = kHaloPairCols * (MODE == kHaloDgradPhases ? 2 : 1);
  auto stage = [&](const HaloTile& tl, int buf) {
    if (IDLE_LANES && !lc.active) return;
    const int h0 = int(tl.p0) * STRIDE - int(q.pad_h);
    const int w0 = int(tl.q0) * STRIDE - int(q.pad_w) + lc.col;   // this lane's pass-0 column
    const T* const slab = x + tl.n * p.x_stride[0] + tl.slab * SLAB + lc.part * 8;
    const uint32_t x_second = !(PAIRS && paired) ? 0u : halo_second<X_SPLIT, CG, PASSES>(lc.col, COLS);
    const uint32_t cols_in = halo_pass_mask(w0, PC, src_w, lc.col, COLS, CG, x_second, X_SPLIT, tl.n + 1 < q.N);
    // Into the second image (paired tiles): an image on, the split's columns back (32-bit: a
    // pair's two images span under 2^31 elements, halo_can_implement); 0 otherwise.
    const int x_jump = x_second ? int(p.x_stride[0]) - X_SPLIT * xs_w : 0;
    for (int row = warp; row < ROWS; row += kHaloWarps) {
      const int h = h0 + row;
      const uint32_t in = unsigned(h) < unsigned(src_h) ? cols_in : 0u;
      const T* src = slab + (h * xs_h + w0 * xs_w);
      const uint32_t dst = copy_s + 4u * uint32_t(buf * STAGE + row * ROW_WORDS);
#pragma unroll
      for (int v = 0; v < PASSES; ++v, src += x_pass) {
        if (v + 1 == PASSES && lc.col + v * PC >= COLS) continue;   // past the row (last pass)
        if (halo_enters_second<X_SPLIT, CG>(v, x_second)) src += x_jump;
        const bool on = in >> v & 1u;                              // else zeros
        cp_async16_at(dst + 4u * v * STEP, on ? src : slab, on ? 16 : 0);
      }
    }
  };

  // One class's GEMM on the staged halo, then its epilogue: bias, ReLU, the dtype, staged
  // [pixel][channel] in osm for 16-byte stores to the class's destination pixels.
  auto run_class = [&](auto cls_constant, uint32_t a_buf, const HaloTile& tl) {
    constexpr int CLS = decltype(cls_constant)::value, MASK = halo_class_mask(MODE, CLS);
    constexpr int J0 = halo_class_kstep0(CG, MODE, CLS), KS = halo_class_ksteps(CG, MODE, CLS);
    constexpr HaloASchedule SCHED = halo_a_schedule(CG, STRIDE, MASK);
    constexpr int PAD = halo_a_pairs(CG, STRIDE);
    static_assert(SCHED.operands == 2 * KS, "an A operand per k-step and m16 tile");
    float acc[GG][2][NT][4] = {};
#pragma unroll
    for (int gl = 0; gl < GG; ++gl) {
      // The GEMM group's A registers (halo_a_schedule; every index a compile-time constant, so
      // they stay registers): couples fill pairs, pr[PAD] the zero pair of K padding; quads
      // fill q[i] for the operand i that loads them. B: each k-step's (`first`) until its
      // second operand.
      uint32_t pr[PAD + 1][2], q[2 * KS][4], b[KS][NT][2];
      pr[PAD][0] = pr[PAD][1] = 0u;
      const uint32_t group_s = a_buf + 2u * uint32_t(gl * GW);     // (channel gl * GW, bytes)
      for_constexpr<2 * KS>([&](auto i_constant) {
        constexpr int I = decltype(i_constant)::value;
        constexpr HaloAOperand O = SCHED.op[I];
        if constexpr (O.first) {                                  // the k-step's B, for both tiles
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            if (!halo_kn_meet(O.j, nt, CG, MODE, CLS)) continue;  // a zero block: no load, no mma
            const uint32_t* const w = wsm + halo_weight_word(gl, J0 + O.j, nt, lane, 0, CG, MODE);
            const uint2 v = *reinterpret_cast<const uint2*>(w);
            b[O.j][nt][0] = v.x;
            b[O.j][nt][1] = v.y;
          }
        }
        if constexpr (halo_a_quads(CG, STRIDE, MASK)) {
          // The operand's quad, K half 1's rows for lanes 16-31: one chunk on (the lane's own
          // constant, 16 bytes) or, where the quad straddles two taps, a selected offset.
          constexpr int P0 = O.a0, P1 = O.a1 == PAD ? O.a0 : O.a1;
          constexpr int OFF0 = halo_a_pair_offset(P0, 0, CG, STRIDE), OFF1 = halo_a_pair_offset(P1, 0, CG, STRIDE);
          const uint32_t at = OFF1 == OFF0 + 4 ? group_s + 16u * khalf + 4u * OFF0
                                               : group_s + 4u * uint32_t(khalf ? OFF1 : OFF0);
          if constexpr (O.load[0] >= 0 && O.x2[0]) {
            ldsm_x2_at(q[I][0], q[I][1], at);
            q[I][2] = q[I][3] = 0u;
          } else if constexpr (O.load[0] >= 0) {
            ldsm_x4_at(q[I], at);
          }
        } else {
          // The new couples: the lane's base (lanes 16-31 `stride` rows lower) plus a
          // compile-time offset (halo_a_couple: an .x4 loads a pair and the one below it).
          for_constexpr<2>([&](auto k_constant) {
            constexpr int K = decltype(k_constant)::value, P = O.load[K];
            constexpr bool X2 = O.x2[K];
            const uint32_t at = group_s + STEP_LO * khalf + 4u * uint32_t(halo_a_pair_offset(P, 0, CG, STRIDE));
            if constexpr (P >= 0 && X2) {
              ldsm_x2_at(pr[P][0], pr[P][1], at);
            } else if constexpr (P >= 0) {
              uint32_t r[4];
              ldsm_x4_at(r, at);
              constexpr int UP = halo_a_couple_upper(P, CG, STRIDE);
              pr[P][0] = r[0], pr[P][1] = r[1], pr[UP][0] = r[2], pr[UP][1] = r[3];
            }
          });
        }
        if constexpr (!halo_a_quads(CG, STRIDE, MASK))   // (the moves ptxas makes into the mma's operand)
          q[I][0] = pr[O.a0][0], q[I][1] = pr[O.a0][1], q[I][2] = pr[O.a1][0], q[I][3] = pr[O.a1][1];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
          if (halo_kn_meet(O.j, nt, CG, MODE, CLS))
            MmaOp<T>::run(acc[gl][O.mt][nt], q[O.src], b[O.j][nt][0], b[O.j][nt][1]);
      });
    }
    // The epilogue in one of its forms, each a branch-free body chosen once a class by uniform
    // branches: dgrad's kernels have neither bias nor ReLU (halo_dgrad_as_fprop); fprop's with or
    // without bias, ReLU the conversion's own clamp (pack_float2). A bias pair is loaded once
    // for both m16 tiles and both rows of a lane's accumulators.
    auto epilogue = [&](auto bias_constant, auto relu_constant) {
      constexpr bool BIAS = decltype(bias_constant)::value, RELU = decltype(relu_constant)::value;
      const int col = mma_c_coord(lane, 0).col;          // the same for the rows of i = 0 and 2
#pragma unroll
      for (int gl = 0; gl < GG; ++gl)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          const int n = nt * kMmaN + col;
          float b0 = 0.f, b1 = 0.f;
          if constexpr (BIAS) {
            const T* const bk = bias + ((tl.slab * GG + gl) * GW + n);
            b0 = to_float(bk[0]);
            b1 = to_float(bk[1]);
          }
#pragma unroll
          for (int mt = 0; mt < 2; ++mt)
#pragma unroll
            for (int i = 0; i < 4; i += 2) {
              const float* const v = acc[gl][mt][nt] + i;
              osm[halo_out_word((2 * warp + mt) * kHaloTileQ + mma_c_coord(lane, i).row, gl * GW + n, SLAB)] =
                  BIAS ? pack_float2<T, RELU>(v[0] + b0, v[1] + b1) : pack_float2<T, RELU>(v[0], v[1]);
            }
        }
    };
    using yes = std::true_type;
    using no = std::false_type;
    if constexpr (MODE != kHaloFprop) {
      epilogue(no{}, no{});
    } else if (bias != nullptr) {
      if (p.relu) epilogue(yes{}, yes{});
      else epilogue(yes{}, no{});
    } else {
      if (p.relu) epilogue(no{}, yes{});
      else epilogue(no{}, no{});
    }
    // The warp stores its own two tile rows (their pixels' chunks, a row in passes as staged).
    __syncwarp();
    constexpr int DQ = MODE == kHaloDgradPhases ? 2 : 1;           // destination columns apart
    constexpr int SPASSES = halo_row_passes(kHaloTileQ, CG), OPW = halo_out_pixel_words(SLAB);
    if (!IDLE_LANES || lc.active) {
      T* const out = y + tl.n * p.y_stride[0] + tl.slab * SLAB + lc.part * 8;
      const int qq0 = int(halo_dst_col(tl.q0 + lc.col, CLS, MODE));
      const uint32_t y_second = !(PAIRS && paired) ? 0u : halo_second<kHaloPairCols, CG, SPASSES>(lc.col, kHaloTileQ);
      const uint32_t cols_out =
          halo_pass_mask(qq0, PC * DQ, out_w, lc.col, kHaloTileQ, CG, y_second, Y_SPLIT, tl.n + 1 < q.N);
      const int64_t y_pass = int64_t(PC * DQ) * ys_w;
      const int y_jump = y_second ? int(p.y_stride[0]) - Y_SPLIT * ys_w : 0;   // as the staging's
#pragma unroll 1
      for (int mt = 0; mt < 2; ++mt) {
        const int pl = 2 * warp + mt, pp = int(halo_dst_row(tl.p0 + pl, CLS, MODE));
        if (pp >= out_h) break;
        T* dst = out + (pp * ys_h + qq0 * ys_w);
        const uint32_t* const src = osm + halo_out_word(pl * kHaloTileQ + lc.col, lc.part * 8, SLAB);
#pragma unroll
        for (int v = 0; v < SPASSES; ++v, dst += y_pass) {
          if (halo_enters_second<kHaloPairCols, CG>(v, y_second)) dst += y_jump;
          if (cols_out >> v & 1u) *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src + v * PC * OPW);
        }
      }
    }
    __syncwarp();  // the warp's rows of osm are rewritten by its next epilogue
  };

  // A slab's weights packed before the launch (p.packed): copied in 16-byte pieces
  // (halo_weight_piece), a compile-time count a thread, unrolled (no loop: the SASS checks count
  // the staging loop as the smallest one that copies).
  auto copy_weights = [&](int64_t slab) {
    const uint4* const src = static_cast<const uint4*>(p.packed) + slab * (WWORDS / 4);
    const uint32_t dst = shared_address(wsm);
#pragma unroll
    for (int r = 0; r < halo_weight_rounds(CG, MODE); ++r) {
      const int i = halo_weight_piece(r, threadIdx.x, CG, MODE);
      if (i >= 0) cp_async16_at(dst + 16u * i, src + i, 16);
    }
  };

  // This CTA's tiles: a contiguous run of the slab-major list (one or two slabs). One barrier a
  // tile: past it, this tile's halo has landed for every warp and every warp is done with the
  // last tile, whose buffer the next tile's copies then reuse. Pre-packed weights of the first
  // slab load with the first tile's halo; of a later slab, with the next tile's.
  const HaloRange run = halo_cta_tiles(blockIdx.x, gridDim.x, tiles);
  int buf = 0;
  int slab_loaded = -1;
  HaloTile tl = halo_tile(run.begin, q.N, q.P, q.Q, PAIRS && paired);   // then walked in order (halo_tile_next)
  if (run.begin < run.end) {
    if constexpr (PACKED) copy_weights(tl.slab), slab_loaded = tl.slab;
    stage(tl, 0);
  }
  cp_async_commit();
  if constexpr (!PACKED) {   // packed here while the first halo flies (the loop's barrier publishes it)
    if (run.begin < run.end) halo_pack_slab<T, CG, MODE>(p, tl.slab, wsm), slab_loaded = tl.slab;
  }
  for (int64_t t = run.begin; t < run.end; ++t, buf ^= 1) {
    const HaloTile next = halo_tile_next(tl, q.N, q.P, q.Q, PAIRS && paired);
    cp_async_wait<0>();      // this thread's copies of this tile
    __syncthreads();         // everyone's
    if (t + 1 < run.end) stage(next, buf ^ 1);   // the next tile loads meanwhile
    cp_async_commit();
    if (tl.slab != slab_loaded) {  // the slab's weights (every warp is past the last tile)
      if constexpr (PACKED) {      // copied, beside the next tile's halo (one round trip)
        copy_weights(tl.slab);
        cp_async_commit();
        cp_async_wait<0>();
      } else {                     // or packed here
        halo_pack_slab<T, CG, MODE>(p, tl.slab, wsm);
      }
      slab_loaded = tl.slab;
      __syncthreads();
    }
    const uint32_t a_buf = row_s + 4u * STAGE * buf;
    run_class(std::integral_constant<int, 0>{}, a_buf, tl);
    if constexpr (halo_classes(MODE) == 4) {   // the phase classes, all on this one staged halo
      run_class(std::integral_constant<int, 1>{}, a_buf, tl);
      run_class(std::integral_constant<int, 2>{}, a_buf, tl);
      run_class(std::integral_constant<int, 3>{}, a_buf, tl);
    }
    tl = next;
  }
  cp_async_wait<0>();
}

// `p` as fprop sees it (dgrad: halo_dgrad_as_fprop), the destination's size, the mode.
template <typename T, int CG, int STRIDE, int MODE, bool PACKED>
int launch_halo_kernel(const ConvParams& p, cudaStream_t stream, int64_t dst_h, int64_t dst_w) {
  const LaunchShape s = halo_shape(p, MODE, PACKED);
  // The persistent grid: the shape's CTAs per SM (shared memory, H100/H200), or fewer where the
  // compiled kernel's registers or this GPU's shared memory hold fewer (an extra CTA per SM
  // would run as a second wave). The shared-memory opt-in and the occupancy query are made once
  // per device (the shared memory a kernel asks for depends only on STRIDE, CG and MODE).
  const auto kernel = fprop_halo_kernel<T, CG, STRIDE, MODE, PACKED>;
  constexpr int kDevices = 64;
  static std::atomic<int> resident_on[kDevices] = {};
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return int(err);
  int resident = device < kDevices ? resident_on[device].load(std::memory_order_relaxed) : 0;
  if (resident == 0) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(s.smem_bytes));
    if (err != cudaSuccess) return int(err);
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, kernel, kHaloThreads, size_t(s.smem_bytes));
    if (err != cudaSuccess) return int(err);
    resident = std::max(resident, 1);
    if (device < kDevices) resident_on[device].store(resident, std::memory_order_relaxed);
  }
  const int64_t grid = std::min<int64_t>(s.grid_x, int64_t(p.num_sms) * resident);
  const bool paired = halo_paired(p.problem, MODE);
  kernel<<<dim3(unsigned(grid)), kHaloThreads, size_t(s.smem_bytes), stream>>>(
      p, halo_tiles(p.problem.N, p.problem.P, p.problem.Q, p.problem.C / halo_slab(CG), paired), dst_h, dst_w,
      paired);
  return int(cudaGetLastError());
}

template <typename T, int CG, int STRIDE, int MODE>
int launch_halo(const ConvParams& p, cudaStream_t stream, int64_t dst_h, int64_t dst_w) {
  return p.packed ? launch_halo_kernel<T, CG, STRIDE, MODE, true>(p, stream, dst_h, dst_w)
                  : launch_halo_kernel<T, CG, STRIDE, MODE, false>(p, stream, dst_h, dst_w);
}

template <typename T, int CG>
int launch_halo_mode(const ConvParams& p, cudaStream_t stream, int mode, int64_t dst_h, int64_t dst_w) {
  if (mode == kHaloDgradPhases) return launch_halo<T, CG, 1, kHaloDgradPhases>(p, stream, dst_h, dst_w);
  if (mode == kHaloDgrad) return launch_halo<T, CG, 1, kHaloDgrad>(p, stream, dst_h, dst_w);
  if (p.problem.stride_h == 1) return launch_halo<T, CG, 1, kHaloFprop>(p, stream, dst_h, dst_w);
  if constexpr (halo_smem_bytes(2, CG) > kHaloMaxSmem) {  // refused by can_implement: not built
    return int(cudaErrorInvalidValue);
  } else {
    return launch_halo<T, CG, 2, kHaloFprop>(p, stream, dst_h, dst_w);
  }
}

// Runs f.template operator()<T, CG>() for p's dtype and Cg (the widths halo_serves) and returns
// its cudaError_t; any other dtype or width (can_implement admits none): cudaErrorInvalidValue.
template <typename F>
int halo_dispatch(const ConvParams& p, F&& f) {
  auto by_width = [&]<typename T>() {
    switch (p.problem.Cg()) {
      case 4: return f.template operator()<T, 4>();
      case 8: return f.template operator()<T, 8>();
      case 14: return f.template operator()<T, 14>();
      case 16: return f.template operator()<T, 16>();
      case 24: return f.template operator()<T, 24>();
      case 32: return f.template operator()<T, 32>();
      case 40: return f.template operator()<T, 40>();
      case 64: return f.template operator()<T, 64>();
      default: return int(cudaErrorInvalidValue);
    }
  };
  if (p.dtype == DType::kFloat16) return by_width.template operator()<__half>();
  if (p.dtype == DType::kBFloat16) return by_width.template operator()<__nv_bfloat16>();
  return int(cudaErrorInvalidValue);  // fp32 is refused by can_implement
}

int launch_halo_any(const ConvParams& p, void* stream, int mode, int64_t dst_h, int64_t dst_w) {
  const auto st = static_cast<cudaStream_t>(stream);
  return halo_dispatch(p, [&]<typename T, int CG>() { return launch_halo_mode<T, CG>(p, st, mode, dst_h, dst_w); });
}

// The weight packed before fprop_halo's launch (halo_pack_launch): a CTA a slab, packing it as
// fprop_halo's CTAs do (halo_pack_slab) into global memory; fprop's layout, then (DMODE >= 0)
// dgrad's in that mode. The weight's fields of `p` are the same in both directions' views.
template <typename T, int CG, int DMODE>
__global__ void __launch_bounds__(kHaloThreads) halo_pack_kernel(ConvParams p, int64_t slabs, uint32_t* out) {
  const int64_t b = blockIdx.x;
  if (b < slabs) {
    halo_pack_slab<T, CG, kHaloFprop>(p, b, out + halo_pack_block_word(b, slabs, CG, DMODE));
  } else if constexpr (DMODE >= 0) {
    halo_pack_slab<T, CG, DMODE>(p, b - slabs, out + halo_pack_block_word(b, slabs, CG, DMODE));
  }
}

template <typename T, int CG>
int launch_halo_pack(const ConvParams& p, int dgrad_mode, uint32_t* out, cudaStream_t stream) {
  const int64_t slabs = p.problem.K / halo_slab(CG), grid = dgrad_mode < 0 ? slabs : 2 * slabs;
  const dim3 g{unsigned(grid)}, b{unsigned(kHaloThreads)};
  if (dgrad_mode == kHaloDgradPhases) halo_pack_kernel<T, CG, kHaloDgradPhases><<<g, b, 0, stream>>>(p, slabs, out);
  else if (dgrad_mode == kHaloDgrad) halo_pack_kernel<T, CG, kHaloDgrad><<<g, b, 0, stream>>>(p, slabs, out);
  else halo_pack_kernel<T, CG, -1><<<g, b, 0, stream>>>(p, slabs, out);
  return int(cudaGetLastError());
}

}  // namespace

int halo_pack_launch(const ConvParams& p, int dgrad_mode, void* out, void* stream) {
  const auto st = static_cast<cudaStream_t>(stream);
  uint32_t* const o = static_cast<uint32_t*>(out);
  return halo_dispatch(p, [&]<typename T, int CG>() { return launch_halo_pack<T, CG>(p, dgrad_mode, o, st); });
}

namespace {

// What fprop_halo serves, for the problem as the kernel sees it (fprop, or dgrad's view of it,
// whose source and destination `tensors` name in the reasons).
std::string halo_can_implement(const ConvParams& p, int mode, const char* tensors) {
  const std::string common = check_common(p);
  if (!common.empty()) return common;
  const ConvProblem& q = p.problem;
  if (p.dtype == DType::kFloat32) return "fp32 runs on CUDA cores";
  if (q.Cg() != q.Kg() || !halo_serves(q.Cg()))
    return "Cg = Kg in {4, 8, 14, 16, 24, 32, 40, 64} only (the widths its tiles are built for)";
  if (q.C % halo_slab(int(q.Cg())) != 0) return "channels are not whole slabs of groups";
  if (q.stride_h != q.stride_w || (q.stride_h != 1 && q.stride_h != 2)) return "stride other than 1 or 2";
  if (q.dil_h != 1 || q.dil_w != 1) return "dilation other than 1";
  if (q.N >= (int64_t(1) << 31)) return "a batch of 2^31 images or more (tiles number them in 32 bits)";
  const std::string layout = halo_layout_reason(p, tensors);
  if (!layout.empty()) return layout;
  if (halo_paired(q, mode) && !(pair_offsets_fit_int32(p.x_stride, q.C, q.H, q.W) &&
                                 pair_offsets_fit_int32(p.y_stride, q.K, q.P, q.Q)))
    return "two images span 2^31 elements or more on paired tiles (addressed in 32 bits)";
  if (halo_smem_bytes(int(q.stride_h), int(q.Cg()), mode) > kHaloMaxSmem)
    return "the halo stages, weights and output staging need more than 227 KB of shared memory";
  return "";
}

LaunchShape halo_shape(const ConvParams& p, int mode, bool prepacked) {
  const ConvProblem& q = p.problem;
  LaunchShape s;
  const int cg = int(q.Cg()), stride = int(q.stride_h);
  if (!halo_serves(cg) || (stride != 1 && stride != 2)) return s;
  const int64_t tiles = halo_tiles(q.N, q.P, q.Q, q.C / halo_slab(cg), halo_paired(q, mode));
  s.grid_x = halo_grid(tiles, p.num_sms, stride, cg, mode, prepacked);
  s.threads = kHaloThreads;
  s.smem_bytes = halo_smem_bytes(stride, cg, mode);
  s.tile_pixels = kHaloTileP * kHaloTileQ * halo_classes(mode);   // destination pixels a tile
  s.tile_channels = halo_slab(cg);
  s.red_channels = halo_slab(cg);
  s.halo_pixels = int64_t(halo_rows(stride)) * halo_cols(stride);
  s.groups_per_block = halo_slab_groups(cg);
  s.tile_images = halo_paired(q, mode) ? 2 : 1;
  for (int cls = 0; cls < halo_classes(mode); ++cls) {
    const HaloASchedule a = halo_a_schedule(cg, stride, halo_class_mask(mode, cls));
    s.a_loads += a.loads;
    s.a_loads_x2 += a.x2;
  }
  s.launches = 1;  // the weights are packed by each CTA, or before the launch
  return s;
}

// dgrad's mode: stride 1 as one convolution of dy, stride 2 by phase class.
int halo_dgrad_mode(const ConvParams& p) { return halo_dgrad_mode_at(p.problem.stride_h); }

}  // namespace

std::string halo_offsets_reason(const ConvParams& p) {
  const ConvProblem& q = p.problem;   // x: N C H W, y: N K P Q, whatever the direction
  if (!image_offsets_fit_int32(p.x_stride, q.C, q.H, q.W) || !image_offsets_fit_int32(p.y_stride, q.K, q.P, q.Q))
    return "an image spans 2^31 elements or more (the copies address within an image in 32 bits)";
  return "";
}

std::string halo_layout_reason(const ConvParams& p, const char* tensors) {
  if (!channels_innermost(p.x_stride) || !channels_innermost(p.y_stride))
    return std::string(tensors) + " is not channels_last";
  if (!pixels_16_byte_aligned(p.x_stride, p.x) || !pixels_16_byte_aligned(p.y_stride, p.y))
    return "pixels are not 16-byte aligned (channels a multiple of 8, aligned storage)";
  return "";
}

std::string halo_weight_offsets_reason(const ConvParams& p) {
  const ConvProblem& q = p.problem;
  const int64_t size[4] = {q.K, q.Cg(), q.R, q.S};
  return offsets_fit_int32(p.w_stride, size, 4, 1.0)
             ? "" : "the weight spans 2^31 elements or more (addressed with 32-bit offsets)";
}

std::string fprop_halo_can_implement(const ConvParams& p) {
  if (p.direction != Direction::kFprop) return "not an fprop problem";
  std::string why = halo_can_implement(p, kHaloFprop, "input or output");
  if (why.empty()) why = halo_offsets_reason(p);
  return why.empty() ? halo_weight_offsets_reason(p) : why;
}

// An fprop call given no packed weight packs it first itself (halo_pack_launch into the call's
// workspace, one launch more) and runs the pre-packed kernel where packing in each CTA would
// hold the grid under 40% of the pre-packed kernel's (halo_grid keeps a CTA's run of tiles long
// enough to pay for its packing, and at 7x7 there are too few tiles for that). By the model
// (benchmarks/NOTES.md, eleventh session): 32x4d's stage 4 (132 CTAs against 396: a third)
// 17.0 -> 11.9 us; its stage 3 (264 against 528: half) and stage-4 entry (132 and 132: one CTA
// an SM by shared memory either way) gain nothing against the extra launch and keep packing in
// their CTAs.
bool halo_packs_in_call(const ConvParams& p) {
  if (p.packed != nullptr || p.direction != Direction::kFprop) return false;
  // (Both grids are 0 where the kernel has no shape: nothing it serves.)
  return 2 * halo_shape(p, kHaloFprop, true).grid_x > 5 * halo_shape(p, kHaloFprop, false).grid_x;
}

int64_t fprop_halo_workspace_elems(const ConvParams& p) {   // fp32 elements: the packed words
  return halo_packs_in_call(p) ? halo_packed_words(p.problem.K, int(p.problem.Cg())) : 0;
}

LaunchShape fprop_halo_shape(const ConvParams& p) {
  const bool in_call = halo_packs_in_call(p);
  LaunchShape s = halo_shape(p, kHaloFprop, in_call || p.packed != nullptr);
  if (in_call) s.launches = 2;  // halo_pack_launch, then the pre-packed kernel
  return s;
}

int fprop_halo_launch(const ConvParams& p, void* stream) {
  if (!halo_packs_in_call(p)) return launch_halo_any(p, stream, kHaloFprop, p.problem.P, p.problem.Q);
  const int err = halo_pack_launch(p, -1, p.workspace, stream);
  if (err != 0) return err;
  ConvParams packed = p;
  packed.packed = p.workspace;
  return launch_halo_any(packed, stream, kHaloFprop, p.problem.P, p.problem.Q);
}

// dgrad as the kernel runs it (halo_weight_source): dy the source, dx the destination. Stride 1:
// dx is dy convolved with padding 2 - pad. Stride 2 (padding 1): each phase class is dy
// convolved with padding 1 on a ceil(H / 2) x ceil(W / 2) grid, the view's P x Q.
ConvParams halo_dgrad_as_fprop(const ConvParams& p) {
  ConvParams f = p;
  ConvProblem& q = f.problem;
  const ConvProblem& d = p.problem;
  const bool phases = halo_dgrad_mode(p) == kHaloDgradPhases;
  q.C = d.K, q.H = d.P, q.W = d.Q;            // the source: dy
  q.K = d.C;
  q.P = phases ? (d.H + 1) / 2 : d.H, q.Q = phases ? (d.W + 1) / 2 : d.W;
  q.pad_h = phases ? 1 : 2 * d.dil_h - d.pad_h, q.pad_w = phases ? 1 : 2 * d.dil_w - d.pad_w;
  q.stride_h = q.stride_w = 1;
  f.direction = Direction::kFprop;
  f.x = p.y, f.y = p.x;
  for (int i = 0; i < 4; ++i) f.x_stride[i] = p.y_stride[i], f.y_stride[i] = p.x_stride[i];
  f.bias = nullptr;
  f.relu = false;
  return f;
}

std::string dgrad_halo_can_implement(const ConvParams& p) {
  if (p.direction != Direction::kDgrad) return "not a dgrad problem";
  const std::string common = check_common(p);
  if (!common.empty()) return common;
  const ConvProblem& q = p.problem;
  if (q.stride_h != q.stride_w || (q.stride_h != 1 && q.stride_h != 2)) return "stride other than 1 or 2";
  if (q.stride_h == 1 && (q.pad_h > 2 || q.pad_w > 2)) return "padding over 2";
  if (q.stride_h == 2 && (q.pad_h != 1 || q.pad_w != 1))
    return "stride 2 with padding other than 1 (the phase classes' taps are built for padding 1)";
  if (q.dil_h != 1 || q.dil_w != 1) return "dilation other than 1";
  std::string why = halo_can_implement(halo_dgrad_as_fprop(p), halo_dgrad_mode(p), "grad_output or grad_input");
  if (why.empty()) why = halo_offsets_reason(p);
  return why.empty() ? halo_weight_offsets_reason(p) : why;
}

LaunchShape dgrad_halo_shape(const ConvParams& p) {
  return halo_shape(halo_dgrad_as_fprop(p), halo_dgrad_mode(p), p.packed != nullptr);
}

int dgrad_halo_launch(const ConvParams& p, void* stream) {
  return launch_halo_any(halo_dgrad_as_fprop(p), stream, halo_dgrad_mode(p), p.problem.H, p.problem.W);
}

}  // namespace rk
