// test_host.cpp: torch-free unit tests of the host-side logic (no GPU needed): argument
// validation and its messages, output-size and index arithmetic, variant selection and the
// launch geometry of the direct kernels. A tiny harness: each CHECK failure is printed, and the
// exit status is the number of failures.
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

namespace {

int g_failures = 0;
int g_checks = 0;

#define CHECK(cond)                                                              \
  do {                                                                           \
    ++g_checks;                                                                  \
    if (!(cond)) {                                                               \
      ++g_failures;                                                              \
      std::printf("%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);       \
    }                                                                            \
  } while (0)

#define CHECK_EQ_STR(a, b)                                                       \
  do {                                                                           \
    ++g_checks;                                                                  \
    const std::string _a = (a), _b = (b);                                        \
    if (_a != _b) {                                                              \
      ++g_failures;                                                              \
      std::printf("%s:%d: expected\n  \"%s\"\nbut got\n  \"%s\"\n", __FILE__, __LINE__, \
                  _b.c_str(), _a.c_str());                                       \
    }                                                                            \
  } while (0)

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
  // bf16 channels_last, Cg = 16: the tensor-core rung; Cg = 4 (too narrow for it): fprop_smem;
  // fp32: the CUDA-core rungs only.
  rk::ConvParams p = params(rk::Direction::kFprop);
  rk::make_problem({8, 512, 14, 14}, {512, 16, 3, 3}, nullptr, {1, 1}, {1, 1}, {1, 1}, 32, &p.problem);
  const int64_t cl[4] = {512 * 14 * 14, 1, 14 * 512, 512};
  for (int i = 0; i < 4; ++i) p.x_stride[i] = cl[i];
  p.x = reinterpret_cast<void*>(uintptr_t(256));
  std::string why;
  CHECK(rk::select_heuristic(p, &why) == rk::find_variant("fprop_mma"));
  p.dtype = rk::DType::kFloat32;
  CHECK(rk::select_heuristic(p, &why) == rk::find_variant("fprop_smem"));
  p = params(rk::Direction::kFprop);
  p.x_stride[1] = 1;
  CHECK(rk::select_heuristic(p, &why) == rk::find_variant("fprop_smem"));
  // Every rung the heuristic or the autotuner may pick is GPU-verified; forcing reaches any.
  for (const rk::KernelVariant* v : rk::eligible_variants(p)) CHECK(v->gpu_verified);
  for (const auto& v : rk::registry())
    if (!v.gpu_verified) CHECK(rk::select_heuristic(p, &why) != &v);
  rk::set_forced_variant("fprop", "fprop_direct");
  CHECK(rk::choose_without_timing(p, &why) == rk::find_variant("fprop_direct"));
  rk::set_forced_variant("fprop", "");
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

// fprop_mma's tiling, emulated warp by warp on the CPU with the kernel's own index maps
// (mma_fragments.h): weights staged in the [tap][n][c] layout, A fragments gathered per lane
// from a channels_last input, the m16n8k16 product formed from the fragments, and the
// accumulators scattered to the output. Small-integer data, so the result must be exact.
void emulate_fprop_mma(int64_t n, int64_t cg, int64_t kg, int64_t groups, int64_t hw,
                       int64_t stride, int64_t pad) {
  rk::ConvParams p;
  const int64_t C = cg * groups, K = kg * groups;
  rk::make_problem({n, C, hw, hw + 1}, {K, cg, 3, 3}, nullptr, {stride, stride}, {pad, pad},
                   {1, 1}, groups, &p.problem);
  p.direction = rk::Direction::kFprop;
  p.dtype = rk::DType::kBFloat16;
  const rk::ConvProblem& q = p.problem;
  // channels_last strides, logical (N, C, H, W) order.
  const int64_t xs[4] = {q.H * q.W * C, 1, q.W * C, C};
  for (int i = 0; i < 4; ++i) p.x_stride[i] = xs[i];
  p.x = reinterpret_cast<void*>(uintptr_t(256));  // aligned: only can_implement looks at it
  CHECK(rk::fprop_mma_can_implement(p).empty());

  std::vector<float> x(q.x_numel()), w(K * cg * 9), y(q.y_numel(), NAN), ref(q.y_numel(), 0.f);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int64_t(i * 7 % 5) - 2);
  for (size_t i = 0; i < w.size(); ++i) w[i] = float(int64_t(i * 3 % 5) - 2);
  auto W = [&](int64_t k, int64_t c, int r, int s) { return w[((k * cg + c) * 3 + r) * 3 + s]; };
  auto y_index = [&](int64_t nn, int64_t k, int64_t pp, int64_t qq) {
    return ((nn * K + k) * q.P + pp) * q.Q + qq;  // NCHW output
  };
  for (int64_t nn = 0; nn < n; ++nn)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t pp = 0; pp < q.P; ++pp)
        for (int64_t qq = 0; qq < q.Q; ++qq) {
          float acc = 0.f;
          for (int64_t c = 0; c < cg; ++c)
            for (int r = 0; r < 3; ++r)
              for (int s = 0; s < 3; ++s) {
                const int64_t h = pp * stride - pad + r, ww = qq * stride - pad + s;
                if (h < 0 || h >= q.H || ww < 0 || ww >= q.W) continue;
                acc += x[nn * xs[0] + ((k / kg) * cg + c) + h * xs[2] + ww * xs[3]] * W(k, c, r, s);
              }
          ref[y_index(nn, k, pp, qq)] = acc;
        }

  const int64_t cg_pad = rk::mma_cg_pad(cg), n_blocks = rk::ceil_div(kg, int64_t(rk::kMmaBlockN));
  const int64_t m_blocks = rk::ceil_div(q.N * q.P * q.Q, int64_t(rk::kMmaBlockM));
  std::vector<float> sw(9 * rk::kMmaBlockN * cg_pad);
  for (int64_t by = 0; by < groups * n_blocks; ++by) {
    const int64_t g = by / n_blocks, k_first = g * kg + (by % n_blocks) * rk::kMmaBlockN;
    const int64_t n_valid = std::min<int64_t>(rk::kMmaBlockN, (g + 1) * kg - k_first);
    for (int tap = 0; tap < 9; ++tap)
      for (int nn = 0; nn < rk::kMmaBlockN; ++nn)
        for (int64_t c = 0; c < cg_pad; ++c)
          sw[rk::mma_weight_index(tap, nn, c, cg_pad)] =
              (nn < n_valid && c < cg) ? W(k_first + nn, c, tap / 3, tap % 3) : 0.f;
    for (int64_t bx = 0; bx < m_blocks; ++bx)
      for (int warp = 0; warp < rk::kMmaWarps; ++warp) {
        const int64_t m_warp = bx * rk::kMmaBlockM + warp * rk::kMmaWarpM;
        float acc[rk::kMmaTilesM][rk::kMmaTilesN][32][4] = {};
        rk::MmaRow rows[rk::kMmaTilesM][32][2];
        for (int t = 0; t < rk::kMmaTilesM; ++t)
          for (int lane = 0; lane < 32; ++lane)
            for (int h = 0; h < 2; ++h)
              rows[t][lane][h] = rk::mma_row(q, m_warp + t * rk::kMmaM + rk::mma_a_coord(lane, h).row);
        for (int tap = 0; tap < 9; ++tap)
          for (int64_t c0 = 0; c0 < cg_pad; c0 += rk::kMmaK)
            for (int t = 0; t < rk::kMmaTilesM; ++t) {
              float A[16][16], B[16][8];
              for (int lane = 0; lane < 32; ++lane)
                for (int reg = 0; reg < 4; ++reg) {
                  const rk::FragCoord fc = rk::mma_a_coord(lane, reg);
                  const int64_t off = rk::mma_tap_offset(q, p.x_stride, rows[t][lane][reg % 2], g, tap / 3, tap % 3);
                  const int64_t c = c0 + fc.col;
                  for (int j = 0; j < 2; ++j)
                    A[fc.row][fc.col + j] = (off >= 0 && c < cg) ? x[off + c + j] : 0.f;
                }
              for (int nt = 0; nt < rk::kMmaTilesN; ++nt) {
                for (int lane = 0; lane < 32; ++lane)
                  for (int reg = 0; reg < 2; ++reg) {
                    const rk::FragCoord fb = rk::mma_b_coord(lane, reg);
                    for (int j = 0; j < 2; ++j)
                      B[fb.row + j][fb.col] = sw[rk::mma_weight_index(tap, nt * rk::kMmaN + fb.col, c0 + fb.row + j, cg_pad)];
                  }
                for (int lane = 0; lane < 32; ++lane)
                  for (int i = 0; i < 4; ++i) {
                    const rk::FragCoord fc = rk::mma_c_coord(lane, i);
                    for (int k = 0; k < 16; ++k) acc[t][nt][lane][i] += A[fc.row][k] * B[k][fc.col];
                  }
              }
            }
        for (int t = 0; t < rk::kMmaTilesM; ++t)
          for (int nt = 0; nt < rk::kMmaTilesN; ++nt)
            for (int lane = 0; lane < 32; ++lane)
              for (int i = 0; i < 4; ++i) {
                const rk::MmaRow& row = rows[t][lane][i / 2];
                const int64_t col = nt * rk::kMmaN + rk::mma_c_coord(lane, i).col;
                if (!row.ok || col >= n_valid) continue;
                y[y_index(row.n, k_first + col, row.p, row.q)] = acc[t][nt][lane][i];
              }
      }
  }
  int64_t wrong = 0;
  for (size_t i = 0; i < y.size(); ++i) wrong += !(y[i] == ref[i]);  // NaN: never written
  CHECK(wrong == 0);
  if (wrong) std::printf("  emulate_fprop_mma(n=%lld cg=%lld kg=%lld G=%lld): %lld wrong of %zu\n",
                         (long long)n, (long long)cg, (long long)kg, (long long)groups,
                         (long long)wrong, y.size());
}

void test_fprop_mma() {
  emulate_fprop_mma(2, 16, 16, 2, 7, 1, 1);   // one 16-channel step, M not a multiple of 128
  emulate_fprop_mma(1, 8, 8, 3, 9, 2, 1);     // Cg = 8 padded to 16, stride 2
  emulate_fprop_mma(1, 24, 24, 1, 6, 1, 2);   // Cg = 24: a partly masked second step, padding 2
  emulate_fprop_mma(1, 32, 72, 2, 5, 1, 0);   // Kg = 72: two n blocks, the second 8 wide
  // What it refuses, and why.
  rk::ConvParams p = params(rk::Direction::kFprop);  // Cg = 4
  p.x_stride[1] = 1;
  p.x = reinterpret_cast<void*>(uintptr_t(256));
  CHECK(rk::fprop_mma_can_implement(p).find("Cg < 8") != std::string::npos);
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
  CHECK(rk::mma_smem_bytes(64, 2) == 9 * 64 * 64 * 2);
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
  test_fprop_mma();
  std::printf("%d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
