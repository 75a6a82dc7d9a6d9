// harness.h: the C++ unit tests' tiny harness: CHECK macros that count and print failures.
#pragma once

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

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

// Wavefronts of one warp-wide shared-memory access of `bytes` per lane: the warp is served in
// phases of 128 bytes (all 32 lanes for 4 bytes, half-warps for 8, quarter-warps for 16), and
// within a phase a bank serves one distinct word per wavefront (equal words are broadcast).
inline int wavefronts(const std::vector<std::vector<int>>& lane_words) {
  const size_t per_phase = 128 / (4 * (lane_words.empty() ? 1 : std::max<size_t>(1, lane_words[0].size())));
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
