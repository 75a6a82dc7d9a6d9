// harness.h: the C++ unit tests' tiny harness: CHECK macros that count and print failures.
#pragma once

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "../conv_params.h"
#include "../kernels/mma_fragments.h"

extern int g_failures;
extern int g_checks;

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

// One warp's mma.sync.m16n8k16 on the CPU. a_half(lane, reg, j) and b_half(lane, reg, j) return
// what half j of a lane's A or B register holds, as the kernel loads it; the layout functions
// of mma_fragments.h put the fragments back into their matrices, and the product is added to
// each lane's accumulators.
template <typename GetA, typename GetB>
inline void emulate_mma(GetA a_half, GetB b_half, float (&acc)[32][4]) {
  float a[16][16], b[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    for (int reg = 0; reg < 4; ++reg)
      for (int j = 0; j < 2; ++j) {
        const rk::FragCoord fc = rk::mma_a_coord(lane, reg);
        a[fc.row][fc.col + j] = a_half(lane, reg, j);
      }
    for (int reg = 0; reg < 2; ++reg)
      for (int j = 0; j < 2; ++j) {
        const rk::FragCoord fb = rk::mma_b_coord(lane, reg);
        b[fb.row + j][fb.col] = b_half(lane, reg, j);
      }
  }
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 4; ++i) {
      const rk::FragCoord fc = rk::mma_c_coord(lane, i);
      for (int k = 0; k < 16; ++k) acc[lane][i] += a[fc.row][k] * b[k][fc.col];
    }
}

// A grouped 3x3 problem (Cg = Kg = cg) as the binding fills it: channels_last x and y (dy),
// a contiguous weight, bf16, aligned (fake) pointers, 132 SMs.
inline rk::ConvParams channels_last_params(int64_t n, int64_t cg, int64_t groups, int64_t h, int64_t w,
                                           int64_t stride, int64_t pad, rk::Direction direction) {
  rk::ConvParams p;
  const int64_t C = cg * groups;
  rk::make_problem({n, C, h, w}, {C, cg, 3, 3}, nullptr, {stride, stride}, {pad, pad}, {1, 1},
                   groups, &p.problem);
  const rk::ConvProblem& q = p.problem;
  const int64_t xs[4] = {q.H * q.W * C, 1, q.W * C, C}, ys[4] = {q.P * q.Q * C, 1, q.Q * C, C};
  const int64_t ws[4] = {cg * 9, 9, 3, 1};
  for (int i = 0; i < 4; ++i) p.x_stride[i] = xs[i], p.y_stride[i] = ys[i], p.w_stride[i] = ws[i];
  p.direction = direction;
  p.dtype = rk::DType::kBFloat16;
  p.x = p.y = p.w = reinterpret_cast<void*>(uintptr_t(256));
  return p;
}

// Wavefronts of one warp-wide shared-memory access of `bytes` per lane: the warp is served in
// phases of 128 bytes (all 32 lanes for 4 bytes, half-warps for 8, quarter-warps for 16), and
// within a phase a bank serves one distinct word per wavefront (equal words are broadcast).
// Lanes that do not access (an empty list) leave their place in their phase.
inline int wavefronts(const std::vector<std::vector<int>>& lane_words) {
  size_t words = 1;
  for (const auto& lane : lane_words)
    if (!lane.empty()) { words = lane.size(); break; }
  const size_t per_phase = 128 / (4 * words);
  int total = 0;
  for (size_t first = 0; first < lane_words.size(); first += per_phase) {
    std::map<int, std::set<int>> banks;
    for (size_t lane = first; lane < std::min(lane_words.size(), first + per_phase); ++lane)
      for (int wd : lane_words[lane]) banks[wd % 32].insert(wd);
    size_t worst = 0;
    for (const auto& kv : banks) worst = std::max(worst, kv.second.size());
    total += int(worst);
  }
  return total;
}

// test_halo.cpp: fprop_halo's index maps emulated warp by warp, and its bank conflicts counted.
void test_fprop_halo();
// test_wgrad_halo.cpp: wgrad_halo's, the same way.
void test_wgrad_halo();
