// test_host.cpp: torch-free unit tests of the host-side logic (no GPU needed): argument
// validation and its messages, output-size and index arithmetic, variant selection, the launch
// geometry of the direct and shared-memory rungs, and the tensor-core rungs emulated warp by
// warp with their own index maps against direct sums (fprop_halo's in test_halo.cpp). A tiny
// harness (harness.h): each CHECK failure is printed, and the exit status is nonzero on any.
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "../backend.h"
#include "../conv_problem.h"
#include "../kernels/kernels.h"
#include "../kernels/mma_fragments.h"
#include "../registry.h"
#include "../selection.h"
#include "harness.h"

int g_failures = 0;
int g_checks = 0;

namespace {

using V = std::vector<int64_t>;

std::string problem_error(V input, V weight, const V* bias = nullptr, V stride = {1, 1},
                          V padding = {1, 1}, V dilation = {1, 1}, int64_t groups = 2) {
  rk::ConvProblem p;
  return rk::make_problem(input, weight, bias, stride, padding, dilation, groups, &p);
}

void test_validation_messages() {
  // The wording of torch.nn.functional.conv2d for each bad argument.
  CHECK_EQ_STR(problem_error({2, 6, 5, 5}, {8, 4, 3, 3}),
               "Given groups=2, weight of size [8, 4, 3, 3], expected input[2, 6, 5, 5] to have 8 "
               "channels, but got 6 channels instead");
  CHECK_EQ_STR(problem_error({2, 8, 5, 5}, {7, 4, 3, 3}),
               "Given groups=2, expected weight to be divisible by 2 at dimension 0, but got "
               "weight of size [7, 4, 3, 3] instead");
  CHECK_EQ_STR(problem_error({2, 8, 5, 5}, {8, 4, 3, 3}, nullptr, {1, 1}, {1, 1}, {1, 1}, 0),
               "non-positive groups is not supported");
  CHECK_EQ_STR(problem_error({2, 8, 5, 5}, {8, 4, 3, 3}, nullptr, {0, 1}),
               "non-positive stride is not supported");
  CHECK_EQ_STR(problem_error({2, 8, 5, 5}, {8, 4, 3, 3}, nullptr, {1, 1}, {-1, 1}),
               "negative padding is not supported");
  CHECK_EQ_STR(problem_error({2, 8, 5, 5}, {8, 4, 3, 3}, nullptr, {1, 1}, {1, 1}, {1, 0}),
               "non-positive dilation is not supported");
  const V bad_bias = {7};
  CHECK_EQ_STR(problem_error({2, 8, 5, 5}, {8, 4, 3, 3}, &bad_bias),
               "Given weight of size [8, 4, 3, 3], expected bias to be 1-dimensional with 8 "
               "elements, but got bias of size [7] instead");
  CHECK_EQ_STR(problem_error({2, 8, 2, 2}, {8, 4, 3, 3}, nullptr, {1, 1}, {0, 0}),
               "Calculated padded input size per channel: (2 x 2). Kernel size: (3 x 3). Kernel "
               "size can't be greater than actual input size");
  CHECK_EQ_STR(problem_error({1, 2, 8, 2, 2}, {8, 4, 3, 3}),
               "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: "
               "[1, 2, 8, 2, 2]");
  CHECK_EQ_STR(problem_error({2, 8, 5, 5}, {8, 4, 3, 3}), "");
  CHECK_EQ_STR(problem_error({8, 5, 5}, {8, 4, 3, 3}), "");  // unbatched is fine
}

void test_output_sizes() {
  rk::ConvProblem p;
  CHECK(rk::make_problem({3, 64, 56, 56}, {64, 2, 3, 3}, nullptr, {2, 2}, {1, 1}, {1, 1}, 32, &p).empty());
  CHECK(p.P == 28 && p.Q == 28 && p.Cg() == 2 && p.Kg() == 2 && p.N == 3);
  CHECK(rk::make_problem({1, 4, 7, 6}, {4, 2, 3, 3}, nullptr, {2, 2}, {0, 0}, {1, 1}, 2, &p).empty());
  CHECK(p.P == 3 && p.Q == 2);
  CHECK(rk::make_problem({1, 4, 8, 8}, {4, 4, 3, 3}, nullptr, {1, 1}, {2, 2}, {2, 2}, 1, &p).empty());
  CHECK(p.P == 8 && p.Q == 8);
  CHECK(rk::make_problem({5, 4, 1, 1}, {4, 4, 3, 3}, nullptr, {1, 1}, {1, 1}, {1, 1}, 1, &p).empty());
  CHECK(p.P == 1 && p.Q == 1 && p.N == 5);
  // ResNeXt-50 32x4d stage 1 at batch 64: 1.85 GFLOP in each direction (DESIGN.md).
  CHECK(rk::make_problem({64, 128, 56, 56}, {128, 4, 3, 3}, nullptr, {1, 1}, {1, 1}, {1, 1}, 32, &p).empty());
  CHECK(p.flops() > 1.849e9 && p.flops() < 1.851e9);
}

void test_dgrad_index_inverts_fprop_index() {
  // For every geometry, dgrad_output_index(h, r) == p exactly when fprop_input_index(p, r) == h.
  for (int64_t stride = 1; stride <= 2; ++stride)
    for (int64_t pad = 0; pad <= 2; ++pad)
      for (int64_t dil = 1; dil <= 2; ++dil)
        for (int64_t H = 1; H <= 9; ++H) {
          const int64_t P = rk::conv_out_size(H, 3, stride, pad, dil);
          if (P <= 0) continue;
          for (int64_t r = 0; r < 3; ++r)
            for (int64_t h = 0; h < H; ++h) {
              int64_t expect = -1;
              for (int64_t pp = 0; pp < P; ++pp)
                if (rk::fprop_input_index(pp, r, stride, pad, dil) == h) expect = pp;
              CHECK(rk::dgrad_output_index(h, r, stride, pad, dil, P) == expect);
            }
        }
}

rk::ConvParams params(rk::Direction d, int64_t r = 3) {
  rk::ConvParams p;
  rk::make_problem({8, 128, 56, 56}, {128, 4, r, r}, nullptr, {1, 1}, {1, 1}, {1, 1}, 32, &p.problem);
  p.direction = d;
  p.dtype = rk::DType::kBFloat16;
  return p;
}

void test_registry_and_selection() {
  int per_direction[3] = {0, 0, 0};
  for (const auto& v : rk::registry()) {
    ++per_direction[int(v.direction)];
    CHECK(rk::find_variant(v.name) == &v);
    CHECK(v.can_implement && v.launch && v.workspace_elems);
  }
  CHECK(per_direction[0] >= 1 && per_direction[1] >= 1 && per_direction[2] >= 1);
  CHECK(rk::find_variant("no_such_kernel") == nullptr);

  for (rk::Direction d : {rk::Direction::kFprop, rk::Direction::kDgrad, rk::Direction::kWgrad}) {
    std::string why;
    const rk::KernelVariant* v = rk::select_heuristic(params(d), &why);
    CHECK(v != nullptr && v->direction == d);
    // A 5x5 kernel is nobody's: null, and the reason names the kernel size.
    const rk::KernelVariant* none = rk::select_heuristic(params(d, 5), &why);
    CHECK(none == nullptr);
    CHECK(why.find("5x5") != std::string::npos);
    CHECK(!rk::eligible_variants(params(d)).empty());
    CHECK(rk::eligible_variants(params(d, 5)).empty());
  }
  // The cache key separates layouts and directions.
  rk::ConvParams a = params(rk::Direction::kFprop), b = a;
  b.x_stride[1] = 1;
  CHECK(rk::shape_key(a) != rk::shape_key(b));
  b = a;
  b.direction = rk::Direction::kDgrad;
  CHECK(rk::shape_key(a) != rk::shape_key(b));
}

void test_forced_variant() {
  bool threw = false;
  try {
    rk::set_forced_variant("fprop", "wgrad_direct");
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw);
  threw = false;
  try {
    rk::set_forced_variant("sideways", "");
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw);
  rk::set_forced_variant("fprop", "fprop_direct");
  CHECK(rk::forced_variant("fprop") == "fprop_direct");
  std::string why;
  CHECK(rk::choose_without_timing(params(rk::Direction::kFprop), &why) == rk::find_variant("fprop_direct"));
  CHECK(rk::choose_without_timing(params(rk::Direction::kFprop, 5), &why) == nullptr);
  CHECK(why.find("forced variant fprop_direct") != std::string::npos);
  rk::set_forced_variant("fprop", "");
  CHECK(rk::forced_variant("fprop").empty());
}

void test_wgrad_direct_geometry() {
  rk::ConvParams p = params(rk::Direction::kWgrad);
  p.num_sms = 132;
  const int64_t splits = rk::wgrad_direct_splits(p);
  const int64_t npq = p.problem.N * p.problem.P * p.problem.Q;
  CHECK(splits >= 1 && splits <= rk::kWgradMaxSplits);
  CHECK(npq / splits >= rk::kWgradMinChunk || splits == 1);
  CHECK(rk::wgrad_direct_workspace_elems(p) == splits * p.problem.w_numel());
  // A tiny reduction is never split.
  rk::make_problem({1, 8, 3, 3}, {8, 4, 3, 3}, nullptr, {1, 1}, {1, 1}, {1, 1}, 2, &p.problem);
  CHECK(rk::wgrad_direct_splits(p) == 1);
}

void test_fprop_smem_geometry() {
  // ResNeXt-50 32x4d stage 1 (Cg = Kg = 4, G = 32): 8 groups a block, a 10x10 halo of 32 channels.
  rk::ConvParams p = params(rk::Direction::kFprop);
  rk::SmemTile t = rk::fprop_smem_tile(p);
  CHECK(t.groups_per_block == 8 && t.channels == 32);
  CHECK(t.halo_h == 10 && t.halo_w == 10);
  CHECK(t.smem_bytes == 4 * (10 * 10 * 32 + 8 * 4 * 4 * 9));
  CHECK(rk::fprop_smem_can_implement(p).empty());
  // Stride 2 widens the halo to (8-1)*2 + 3 = 17.
  rk::make_problem({8, 256, 56, 56}, {256, 8, 3, 3}, nullptr, {2, 2}, {1, 1}, {1, 1}, 32, &p.problem);
  t = rk::fprop_smem_tile(p);
  CHECK(t.groups_per_block == 4 && t.halo_h == 17 && t.halo_w == 17);
  // A dense 512-channel layer: its weights alone exceed the shared-memory budget.
  rk::make_problem({8, 512, 7, 7}, {512, 512, 3, 3}, nullptr, {1, 1}, {1, 1}, {1, 1}, 1, &p.problem);
  CHECK(rk::fprop_smem_can_implement(p).find("shared memory") != std::string::npos);
  // GPU-verified: the heuristic takes it over the direct rung where it applies.
  p = params(rk::Direction::kFprop);
  std::string why;
  CHECK(rk::select_heuristic(p, &why) == rk::find_variant("fprop_smem"));
}

void test_heuristic_takes_the_highest_verified_rung_that_applies() {
  // bf16 channels_last, Cg = 16: the tensor-core rung once it is GPU-verified, fprop_smem until
  // then; fp32 and Cg = 4 (too narrow for it): fprop_smem. Forcing reaches any rung.
  rk::ConvParams p = params(rk::Direction::kFprop);
  rk::make_problem({8, 512, 14, 14}, {512, 16, 3, 3}, nullptr, {1, 1}, {1, 1}, {1, 1}, 32, &p.problem);
  const int64_t cl[4] = {512 * 14 * 14, 1, 14 * 512, 512};
  for (int i = 0; i < 4; ++i) p.x_stride[i] = cl[i];
  p.x = reinterpret_cast<void*>(uintptr_t(256));
  const rk::KernelVariant* mma = rk::find_variant("fprop_mma");
  const rk::KernelVariant* smem = rk::find_variant("fprop_smem");
  CHECK(mma != nullptr && mma->can_implement(p).empty());
  std::string why;
  CHECK(rk::select_heuristic(p, &why) == (mma->gpu_verified ? mma : smem));
  for (const rk::KernelVariant* v : rk::eligible_variants(p)) CHECK(v->gpu_verified);
  rk::set_forced_variant("fprop", "fprop_mma");
  CHECK(rk::choose_without_timing(p, &why) == mma);
  rk::set_forced_variant("fprop", "");
  p.dtype = rk::DType::kFloat32;
  CHECK(rk::select_heuristic(p, &why) == smem);
  p = params(rk::Direction::kFprop);
  p.x_stride[1] = 1;
  CHECK(rk::select_heuristic(p, &why) == smem);
}

void test_mma_fragment_layouts_cover_each_element_once() {
  // A 16x16: each (row, col) held by exactly one (lane, register, half); B 16x8 and C 16x8 too.
  int a[16][16] = {}, b[16][8] = {}, c[16][8] = {};
  for (int lane = 0; lane < 32; ++lane) {
    for (int reg = 0; reg < 4; ++reg)
      for (int j = 0; j < 2; ++j) ++a[rk::mma_a_coord(lane, reg).row][rk::mma_a_coord(lane, reg).col + j];
    for (int reg = 0; reg < 2; ++reg)
      for (int j = 0; j < 2; ++j) ++b[rk::mma_b_coord(lane, reg).row + j][rk::mma_b_coord(lane, reg).col];
    for (int i = 0; i < 4; ++i) ++c[rk::mma_c_coord(lane, i).row][rk::mma_c_coord(lane, i).col];
  }
  bool once = true;
  for (int r = 0; r < 16; ++r) {
    for (int k = 0; k < 16; ++k) once = once && a[r][k] == 1;
    for (int n = 0; n < 8; ++n) once = once && b[r][n] == 1 && c[r][n] == 1;
  }
  CHECK(once);
}

// The tensor-core gather kernels (gather_mma.cu) emulated block by block and warp by warp on
// the CPU with the kernels' own index maps (mma_fragments.h): weights staged in the [tap][n][c]
// layout, pixel rows by phase class, A fragments gathered per lane from a channels_last source,
// the m16n8k16 product formed from the fragments, accumulators scattered to the destination.
// Small-integer data, so the result must equal the direct sum exactly. What it cannot check is
// the hardware's fragment layout itself (mma_fragments.h's coordinate functions): the GPU does.
void emulate_gather_mma(bool transposed, int64_t n, int64_t cg, int64_t kg, int64_t groups,
                        int64_t hw, int64_t stride, int64_t pad, int64_t dil = 1) {
  rk::ConvParams p;
  const int64_t C = cg * groups, K = kg * groups;
  rk::make_problem({n, C, hw, hw + 1}, {K, cg, 3, 3}, nullptr, {stride, stride}, {pad, pad},
                   {dil, dil}, groups, &p.problem);
  p.direction = transposed ? rk::Direction::kDgrad : rk::Direction::kFprop;
  p.dtype = rk::DType::kBFloat16;
  const rk::ConvProblem& q = p.problem;
  // channels_last strides, logical (N, C, H, W) order, for x and y.
  const int64_t xs[4] = {q.H * q.W * C, 1, q.W * C, C}, ys[4] = {q.P * q.Q * K, 1, q.Q * K, K};
  for (int i = 0; i < 4; ++i) p.x_stride[i] = xs[i], p.y_stride[i] = ys[i];
  p.x = p.y = reinterpret_cast<void*>(uintptr_t(256));  // aligned: only can_implement looks
  const std::string why = transposed ? rk::dgrad_mma_can_implement(p) : rk::fprop_mma_can_implement(p);
  CHECK_EQ_STR(why, "");

  std::vector<float> x(q.x_numel()), w(K * cg * 9), y(q.y_numel());
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int64_t(i * 7 % 5) - 2);
  for (size_t i = 0; i < w.size(); ++i) w[i] = float(int64_t(i * 3 % 5) - 2);
  for (size_t i = 0; i < y.size(); ++i) y[i] = float(int64_t(i * 11 % 7) - 3);
  auto W = [&](int64_t k, int64_t c, int r, int s) { return w[((k * cg + c) * 3 + r) * 3 + s]; };
  auto X = [&](int64_t nn, int64_t c, int64_t h, int64_t ww) -> float& {
    return x[nn * xs[0] + c + h * xs[2] + ww * xs[3]];
  };
  auto Y = [&](int64_t nn, int64_t k, int64_t pp, int64_t qq) -> float& {
    return y[nn * ys[0] + k + pp * ys[2] + qq * ys[3]];
  };
  // The direct sum: fprop into y_ref, or dgrad into x_ref.
  std::vector<float> ref(transposed ? x.size() : y.size(), 0.f);
  for (int64_t nn = 0; nn < n; ++nn)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t pp = 0; pp < q.P; ++pp)
        for (int64_t qq = 0; qq < q.Q; ++qq)
          for (int64_t c = 0; c < cg; ++c)
            for (int r = 0; r < 3; ++r)
              for (int s = 0; s < 3; ++s) {
                const int64_t h = pp * stride - pad + r * dil, ww = qq * stride - pad + s * dil;
                if (h < 0 || h >= q.H || ww < 0 || ww >= q.W) continue;
                const int64_t ci = (k / kg) * cg + c;
                if (transposed)
                  ref[nn * xs[0] + ci + h * xs[2] + ww * xs[3]] += Y(nn, k, pp, qq) * W(k, c, r, s);
                else
                  ref[nn * ys[0] + k + pp * ys[2] + qq * ys[3]] += X(nn, ci, h, ww) * W(k, c, r, s);
              }

  const rk::GatherGemm gg = rk::gather_gemm(q, transposed);
  const std::vector<float>& src = transposed ? y : x;
  const int64_t* src_stride = transposed ? ys : xs;
  const int64_t* dst_stride = transposed ? xs : ys;
  std::vector<float> dst(ref.size(), NAN);
  const int64_t red_pad = rk::gather_red_pad(gg), n_blocks = rk::gather_out_blocks(gg);
  const int64_t per_class = rk::gather_blocks_per_class(gg);
  std::vector<float> sw(9 * rk::kMmaBlockN * red_pad);
  for (int64_t by = 0; by < rk::gather_channel_blocks(gg); ++by) {
    const int64_t pack = by / n_blocks, o_first = (by % n_blocks) * rk::kMmaBlockN;
    const int64_t groups_here = rk::gather_pack_groups(gg, pack), red_valid = groups_here * gg.red;
    const int64_t n_valid = std::min<int64_t>(rk::kMmaBlockN, groups_here * gg.out - o_first);
    for (int tap = 0; tap < 9; ++tap)
      for (int nn = 0; nn < rk::kMmaBlockN; ++nn)
        for (int64_t c = 0; c < red_pad; ++c) {
          float v = 0.f;
          rk::WeightIndex wi;
          if (nn < n_valid && rk::gather_pack_weight(gg, pack, c, o_first + nn, &wi))
            v = W(wi.k, wi.c, tap / 3, tap % 3);
          sw[rk::mma_weight_index(tap, nn, c, red_pad)] = v;
        }
    for (int64_t bx = 0; bx < rk::gather_pixel_blocks(gg); ++bx)
      for (int warp = 0; warp < rk::kMmaWarps; ++warp) {
        const int64_t phase = bx / per_class;
        const int64_t m_warp = (bx % per_class) * rk::kMmaBlockM + warp * rk::kMmaWarpM;
        float acc[rk::kMmaTilesM][rk::kMmaTilesN][32][4] = {};
        rk::MmaRow rows[rk::kMmaTilesM][32][2];
        for (int t = 0; t < rk::kMmaTilesM; ++t)
          for (int lane = 0; lane < 32; ++lane)
            for (int h = 0; h < 2; ++h)
              rows[t][lane][h] = rk::gather_row(gg, phase, m_warp + t * rk::kMmaM + rk::mma_a_coord(lane, h).row);
        for (int tap = 0; tap < 9; ++tap) {
          if (!rk::gather_tap_in_class(gg, phase, tap / 3, tap % 3)) continue;
          for (int64_t c0 = 0; c0 < red_pad; c0 += rk::kMmaK)
            for (int t = 0; t < rk::kMmaTilesM; ++t)
              for (int nt = 0; nt < rk::kMmaTilesN; ++nt)
                emulate_mma(
                    [&](int lane, int reg, int j) {
                      const int64_t off = rk::gather_src_offset(gg, src_stride, rows[t][lane][reg % 2],
                                                                pack, tap / 3, tap % 3);
                      const int64_t c = c0 + rk::mma_a_coord(lane, reg).col;
                      return (off >= 0 && c < red_valid) ? src[off + c + j] : 0.f;
                    },
                    [&](int lane, int reg, int j) {
                      const rk::FragCoord fb = rk::mma_b_coord(lane, reg);
                      return sw[rk::mma_weight_index(tap, nt * rk::kMmaN + fb.col, c0 + fb.row + j, red_pad)];
                    },
                    acc[t][nt]);
        }
        for (int t = 0; t < rk::kMmaTilesM; ++t)
          for (int nt = 0; nt < rk::kMmaTilesN; ++nt)
            for (int lane = 0; lane < 32; ++lane)
              for (int i = 0; i < 4; ++i) {
                const rk::MmaRow& row = rows[t][lane][i / 2];
                const int64_t col = nt * rk::kMmaN + rk::mma_c_coord(lane, i).col;
                if (!row.ok || col >= n_valid) continue;
                const int64_t channel = pack * gg.gp * gg.out + o_first + col;
                dst[row.n * dst_stride[0] + channel + row.h * dst_stride[2] + row.w * dst_stride[3]] =
                    acc[t][nt][lane][i];
              }
      }
  }
  int64_t wrong = 0;
  for (size_t i = 0; i < dst.size(); ++i) wrong += !(dst[i] == ref[i]);  // NaN: never written
  CHECK(wrong == 0);
  if (wrong)
    std::printf("  emulate_gather_mma(%s n=%lld cg=%lld kg=%lld G=%lld stride=%lld): %lld wrong of %zu\n",
                transposed ? "dgrad" : "fprop", (long long)n, (long long)cg, (long long)kg,
                (long long)groups, (long long)stride, (long long)wrong, dst.size());
}

void test_gather_mma() {
  for (bool transposed : {false, true}) {
    emulate_gather_mma(transposed, 2, 16, 16, 2, 7, 1, 1);  // one 16-channel step, M % 128 != 0
    emulate_gather_mma(transposed, 1, 8, 8, 3, 9, 2, 1);    // width 8 padded to 16, stride 2
    emulate_gather_mma(transposed, 1, 24, 24, 1, 6, 1, 2);  // 24: a partly masked step, padding 2
    emulate_gather_mma(transposed, 2, 16, 16, 1, 8, 2, 0);  // stride 2, padding 0: other phases
    emulate_gather_mma(transposed, 1, 8, 8, 2, 8, 1, 2, 2); // dilation 2 (dgrad: no phases)
    emulate_gather_mma(transposed, 1, 8, 8, 2, 9, 3, 1);   // stride 3: phases no tap reaches
  }
  emulate_gather_mma(false, 1, 32, 72, 2, 5, 1, 0);  // Kg = 72: two output blocks, the second 8 wide
  emulate_gather_mma(true, 1, 72, 32, 2, 5, 1, 0);   // dgrad: Cg = 72 outputs, Kg = 32 reduced
  for (bool transposed : {false, true}) {               // packed groups
    emulate_gather_mma(transposed, 2, 4, 4, 32, 6, 1, 1);   // 32x4d stage 1: 16 groups a block
    emulate_gather_mma(transposed, 1, 4, 4, 20, 7, 2, 1);   // a partial last pack, stride 2
    emulate_gather_mma(transposed, 1, 14, 14, 8, 5, 1, 2);  // Cg = 14: 4 groups, 56 of 64 wide
    emulate_gather_mma(transposed, 1, 1, 1, 16, 6, 1, 1);   // depthwise: 16 groups of 1
    emulate_gather_mma(transposed, 1, 4, 8, 6, 5, 2, 1);    // Kg = 2 Cg: 6 groups, unequal widths
  }
  // What the rungs refuse, and why.
  rk::ConvParams p = params(rk::Direction::kFprop);  // Cg = 4, 32 groups: packed
  p.x_stride[0] = 128 * 56 * 56; p.x_stride[1] = 1; p.x_stride[2] = 56 * 128; p.x_stride[3] = 128;
  p.x = reinterpret_cast<void*>(uintptr_t(256));
  CHECK(rk::fprop_mma_can_implement(p).empty());
  CHECK(rk::gather_gemm(p.problem, false).gp == 16 && rk::gather_packs(rk::gather_gemm(p.problem, false)) == 2);
  rk::make_problem({1, 7, 5, 5}, {7, 1, 3, 3}, nullptr, {1, 1}, {1, 1}, {1, 1}, 7, &p.problem);
  CHECK(rk::fprop_mma_can_implement(p).find("odd") != std::string::npos);  // 7 channels
  rk::make_problem({8, 448, 28, 28}, {448, 14, 3, 3}, nullptr, {1, 1}, {1, 1}, {1, 1}, 32, &p.problem);
  p.x_stride[0] = 448 * 28 * 28; p.x_stride[2] = 28 * 448; p.x_stride[3] = 448;
  CHECK(rk::fprop_mma_can_implement(p).empty());     // Cg = 14 (paper ablation)
  p.dtype = rk::DType::kFloat32;
  CHECK(rk::fprop_mma_can_implement(p).find("fp32") != std::string::npos);
  p.dtype = rk::DType::kBFloat16;
  p.x_stride[1] = 28 * 28;                            // NCHW
  CHECK(rk::fprop_mma_can_implement(p).find("channels_last") != std::string::npos);
  p.x_stride[1] = 1;
  p.x = reinterpret_cast<void*>(uintptr_t(258));      // a view starting at an odd element
  CHECK(rk::fprop_mma_can_implement(p).find("aligned") != std::string::npos);
  p.direction = rk::Direction::kDgrad;                // dgrad reads dy: its layout decides
  CHECK(rk::dgrad_mma_can_implement(p).find("grad_output is not channels_last") != std::string::npos);
  CHECK(rk::gather_smem_bytes(rk::gather_gemm(p.problem, false), 2) == 9 * 64 * 64 * 2);  // Cg = 14: 56 -> 64
}

// wgrad_mma emulated block by block with its index maps: positions staged transposed, each
// warp's fragments read from the staged tiles, partials per split, then the fixed-order sum of
// the splits. Exact on small integers, like the gather emulation.
void emulate_wgrad_mma(int64_t n, int64_t cg, int64_t kg, int64_t groups, int64_t hw,
                       int64_t stride, int64_t pad, int64_t splits) {
  rk::ConvParams p;
  const int64_t C = cg * groups, K = kg * groups;
  rk::make_problem({n, C, hw, hw + 2}, {K, cg, 3, 3}, nullptr, {stride, stride}, {pad, pad},
                   {1, 1}, groups, &p.problem);
  p.direction = rk::Direction::kWgrad;
  p.dtype = rk::DType::kBFloat16;
  const rk::ConvProblem& q = p.problem;
  // x channels_last, dy NCHW: the staging reads any layout through the strides.
  const int64_t xs[4] = {q.H * q.W * C, 1, q.W * C, C}, ys[4] = {K * q.P * q.Q, q.P * q.Q, q.Q, 1};
  for (int i = 0; i < 4; ++i) p.x_stride[i] = xs[i], p.y_stride[i] = ys[i];
  CHECK_EQ_STR(rk::wgrad_mma_can_implement(p), "");
  std::vector<float> x(q.x_numel()), dy(q.y_numel());
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int64_t(i * 7 % 5) - 2);
  for (size_t i = 0; i < dy.size(); ++i) dy[i] = float(int64_t(i * 11 % 7) - 3);
  const int64_t elems = q.w_numel(), npq = q.N * q.P * q.Q;
  // The direct sum, from the definition (not from the index maps under test).
  std::vector<float> ref(elems, 0.f);
  for (int64_t nn = 0; nn < n; ++nn)
    for (int64_t pp = 0; pp < q.P; ++pp)
      for (int64_t qq = 0; qq < q.Q; ++qq)
        for (int64_t k = 0; k < K; ++k)
          for (int64_t c = 0; c < cg; ++c)
            for (int r = 0; r < 3; ++r)
              for (int s = 0; s < 3; ++s) {
                const int64_t h = pp * stride - pad + r, ww = qq * stride - pad + s;
                if (h < 0 || h >= q.H || ww < 0 || ww >= q.W) continue;
                const int64_t xc = (k / kg) * cg + c;
                ref[(k * cg + c) * 9 + r * 3 + s] +=
                    dy[nn * ys[0] + k * ys[1] + pp * ys[2] + qq * ys[3]] *
                    x[nn * xs[0] + xc * xs[1] + h * xs[2] + ww * xs[3]];
              }

  std::vector<float> workspace(splits * elems, NAN);
  const int64_t chunk = rk::ceil_div(npq, splits);
  std::vector<float> dy_s(rk::kWgradMmaRows * rk::kWgradMmaRow), x_s(dy_s.size());
  const int64_t gp = rk::mma_groups_per_block(cg, kg, groups), packs = rk::ceil_div(groups, gp);
  for (int64_t bx = 0; bx < splits; ++bx)
    for (int64_t by = 0; by < packs * 9; ++by) {
      const int64_t pack = by / 9, here = std::min(gp, groups - pack * gp);
      const int tap = int(by % 9);
      const int64_t begin = bx * chunk, end = std::min(begin + chunk, npq);
      float acc[rk::kMmaWarps][rk::kMmaTilesN][32][4] = {};
      for (int64_t m0 = begin; m0 < end; m0 += rk::kWgradMmaChunk) {
        for (int i = 0; i < rk::kWgradMmaRows * rk::kWgradMmaChunk; ++i) {
          const int row = i % rk::kWgradMmaRows, pos = i / rk::kWgradMmaRows;
          const int64_t m = m0 + pos;
          float dv = 0.f, xv = 0.f;
          if (m < end && row < here * kg) dv = dy[rk::wgrad_dy_offset(q, ys, m, pack * gp * kg + row)];
          if (m < end && row < here * cg) {
            const int64_t o = rk::wgrad_x_offset(q, xs, m, pack * gp * cg + row, tap / 3, tap % 3);
            if (o >= 0) xv = x[o];
          }
          dy_s[rk::wgrad_stage_index(row, pos)] = dv;
          x_s[rk::wgrad_stage_index(row, pos)] = xv;
        }
        for (int warp = 0; warp < rk::kMmaWarps; ++warp)
          for (int ks = 0; ks < rk::kWgradMmaChunk; ks += rk::kMmaK)
            for (int nt = 0; nt < rk::kMmaTilesN; ++nt)
              emulate_mma(
                  [&](int lane, int reg, int j) {
                    const rk::FragCoord fc = rk::mma_a_coord(lane, reg);
                    return dy_s[rk::wgrad_stage_index(warp * rk::kMmaM + fc.row, ks + fc.col + j)];
                  },
                  [&](int lane, int reg, int j) {
                    const rk::FragCoord fb = rk::mma_b_coord(lane, reg);
                    return x_s[rk::wgrad_stage_index(nt * rk::kMmaN + fb.col, ks + fb.row + j)];
                  },
                  acc[warp][nt]);
      }
      for (int warp = 0; warp < rk::kMmaWarps; ++warp)
        for (int nt = 0; nt < rk::kMmaTilesN; ++nt)
          for (int lane = 0; lane < 32; ++lane)
            for (int i = 0; i < 4; ++i) {
              const rk::FragCoord fc = rk::mma_c_coord(lane, i);
              const int64_t k = warp * rk::kMmaM + fc.row, c = nt * rk::kMmaN + fc.col;
              if (k >= here * kg || c >= here * cg || k / kg != c / cg) continue;
              workspace[(bx * q.K + pack * gp * kg + k) * cg * 9 + (c % cg) * 9 + tap] = acc[warp][nt][lane][i];
            }
    }
  int64_t wrong = 0;
  for (int64_t e = 0; e < elems; ++e) {
    float sum = 0.f;
    for (int64_t j = 0; j < splits; ++j) sum += workspace[j * elems + e];  // wgrad_reduce order
    wrong += !(sum == ref[e]);
  }
  CHECK(wrong == 0);
  if (wrong)
    std::printf("  emulate_wgrad_mma(cg=%lld kg=%lld G=%lld stride=%lld splits=%lld): %lld wrong of %lld\n",
                (long long)cg, (long long)kg, (long long)groups, (long long)stride,
                (long long)splits, (long long)wrong, (long long)elems);
}

void test_wgrad_mma() {
  emulate_wgrad_mma(2, 16, 16, 2, 7, 1, 1, 3);   // chunks not a multiple of 32 positions
  emulate_wgrad_mma(1, 8, 8, 3, 9, 2, 1, 1);     // 3 groups of 8 in one (partial) pack
  emulate_wgrad_mma(1, 24, 40, 1, 6, 1, 2, 2);   // Kg = 40: the third warp half, the fourth all masked
  emulate_wgrad_mma(1, 64, 64, 1, 5, 2, 0, 4);   // the widest tiles
  emulate_wgrad_mma(2, 4, 4, 32, 6, 1, 1, 2);    // 32x4d stage 1: 16 groups a block, 2 packs
  emulate_wgrad_mma(1, 4, 4, 20, 7, 2, 1, 1);    // a partial last pack
  emulate_wgrad_mma(1, 14, 14, 8, 5, 1, 2, 3);   // Cg = 14: 4 groups a block
  emulate_wgrad_mma(1, 1, 1, 16, 6, 1, 1, 1);    // depthwise
  emulate_wgrad_mma(1, 4, 8, 6, 5, 2, 1, 2);     // Kg = 2 Cg
  rk::ConvParams p = params(rk::Direction::kWgrad);  // Cg = 4
  CHECK(rk::wgrad_mma_can_implement(p).empty());
  rk::make_problem({1, 128, 5, 5}, {128, 128, 3, 3}, nullptr, {1, 1}, {1, 1}, {1, 1}, 1, &p.problem);
  CHECK(rk::wgrad_mma_can_implement(p).find("> 64") != std::string::npos);
  p.num_sms = 132;
  rk::make_problem({64, 512, 28, 28}, {512, 16, 3, 3}, nullptr, {2, 2}, {1, 1}, {1, 1}, 32, &p.problem);
  const int64_t splits = rk::wgrad_mma_splits(p);
  CHECK(splits >= 1 && splits <= rk::kWgradMmaMaxSplits);
  // Cg = 16: 4 groups a block, 8 packs; enough splits to give every SM two blocks.
  CHECK(splits * 8 * 9 >= 2 * 132 || splits == rk::kWgradMmaMaxSplits);
  CHECK(rk::wgrad_mma_workspace_elems(p) == splits * p.problem.w_numel());
}

void test_dgrad_and_wgrad_smem_geometry() {
  // Every dy row a dx tile receives from lies in the halo the block loads.
  bool inside = true;
  for (int64_t stride = 1; stride <= 3; ++stride)
    for (int64_t pad = 0; pad <= 2; ++pad)
      for (int64_t dil = 1; dil <= 2; ++dil)
        for (int64_t h0 = 0; h0 <= 40; h0 += rk::kTileP) {
          const int64_t first = rk::dgrad_halo_first(h0, stride, pad, dil);
          const int64_t extent = rk::dgrad_halo_extent(rk::kTileP, stride, dil);
          for (int64_t h = h0; h < h0 + rk::kTileP; ++h)
            for (int r = 0; r < 3; ++r) {
              const int64_t pp = rk::dgrad_output_index(h, r, stride, pad, dil, 1 << 20);
              if (pp >= 0) inside = inside && pp - first >= 0 && pp - first < extent;
            }
        }
  CHECK(inside);
  CHECK(rk::floor_div(-3, 2) == -2 && rk::floor_div(3, 2) == 1 && rk::floor_div(-4, 2) == -2);
  // ResNeXt-50 32x4d stage 1: 8 groups a block, a 10x10 dy halo of 32 channels; stride 2: 5x5.
  rk::ConvParams p = params(rk::Direction::kDgrad);
  rk::SmemTile t = rk::dgrad_smem_tile(p);
  CHECK(t.groups_per_block == 8 && t.channels == 32 && t.halo_h == 10 && t.halo_w == 10);
  CHECK(t.smem_bytes == 4 * (10 * 10 * 32 + 32 * 4 * 9));
  CHECK(rk::dgrad_smem_can_implement(p).empty());
  rk::make_problem({8, 256, 56, 56}, {256, 8, 3, 3}, nullptr, {2, 2}, {1, 1}, {1, 1}, 32, &p.problem);
  t = rk::dgrad_smem_tile(p);
  CHECK(t.groups_per_block == 4 && t.halo_h == 5 && t.halo_w == 5);
  rk::make_problem({8, 512, 7, 7}, {512, 512, 3, 3}, nullptr, {1, 1}, {1, 1}, {1, 1}, 1, &p.problem);
  CHECK(rk::dgrad_smem_can_implement(p).find("shared memory") != std::string::npos);

  // wgrad_smem: the x halo as in fprop_smem, a dy tile, the pack's sums; splits fill the GPU.
  p = params(rk::Direction::kWgrad);
  p.num_sms = 132;
  const rk::WgradSmemGeometry geo = rk::wgrad_smem_geometry(p);
  CHECK(geo.tile.groups_per_block == 8 && geo.tile.channels == 32 && geo.out_channels == 32);
  CHECK(geo.tile.halo_h == 10 && geo.tiles == 8 * 7 * 7);
  CHECK(geo.tile.smem_bytes == 4 * (10 * 10 * 32 + 64 * 32 + 32 * 4 * 9));
  CHECK(geo.splits * 4 >= 2 * 132 || geo.splits == geo.tiles || geo.splits == 64);
  CHECK(rk::wgrad_smem_workspace_elems(p) == geo.splits * p.problem.w_numel());
  CHECK(rk::wgrad_smem_can_implement(p).empty());
  rk::make_problem({8, 512, 7, 7}, {512, 512, 3, 3}, nullptr, {1, 1}, {1, 1}, {1, 1}, 1, &p.problem);
  CHECK(rk::wgrad_smem_can_implement(p).find("shared memory") != std::string::npos);
}

}  // namespace

int main() {
  test_validation_messages();
  test_output_sizes();
  test_dgrad_index_inverts_fprop_index();
  test_registry_and_selection();
  test_forced_variant();
  test_wgrad_direct_geometry();
  test_fprop_smem_geometry();
  test_heuristic_takes_the_highest_verified_rung_that_applies();
  test_mma_fragment_layouts_cover_each_element_once();
  test_gather_mma();
  test_wgrad_mma();
  test_dgrad_and_wgrad_smem_geometry();
  test_fprop_halo();
  test_wgrad_halo();
  std::printf("%d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
