// test_host.cpp: torch-free unit tests of the host-side logic (no GPU needed): argument
// validation and its messages, output-size and index arithmetic, variant selection and the
// launch geometry of the direct kernels. A tiny harness: each CHECK failure is printed, and the
// exit status is the number of failures.
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "../backend.h"
#include "../conv_problem.h"
#include "../kernels/kernels.h"
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
  // Not yet verified on a GPU: never chosen automatically, but reachable when forced.
  p = params(rk::Direction::kFprop);
  std::string why;
  CHECK(rk::select_heuristic(p, &why) == rk::find_variant("fprop_direct"));
  for (const rk::KernelVariant* v : rk::eligible_variants(p)) CHECK(v->gpu_verified);
  rk::set_forced_variant("fprop", "fprop_smem");
  CHECK(rk::choose_without_timing(p, &why) == rk::find_variant("fprop_smem"));
  rk::set_forced_variant("fprop", "");
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
  std::printf("%d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
