// gather_mma.cu: the tensor-core rungs (3) of fprop and dgrad: an implicit GEMM
// on mma.sync.m16n8k16 (fp16/bf16 inputs, fp32 accumulation) for channels_last sources with a
// reduction width per group (fprop: Cg, dgrad: Kg) up to 64; narrow groups are packed.
//
// Both directions are the gather of mma_fragments.h: a destination pixel sums, over the taps
// and the group's reduction channels, the source pixel each tap reaches times the weight.
// A thread block computes kMmaBlockM = 128 destination pixels (of one stride-phase class for
// dgrad) by up to kMmaBlockN = 64 output channels of one pack of groups (one group when it is
// 33-64 channels wide, 16 at Cg = Kg = 4):
//   1. the block's weights, [tap][n][c], block-diagonal across the pack, with c padded to a
//      multiple of 16 (zeros), go to shared memory once (at most 9 x 64 x 64 halves = 72 KB);
//   2. each warp owns 32 pixels (two m16 tiles) and all eight n8 tiles; for each tap that
//      reaches its class and each 16 reduction channels it loads its A fragments straight from
//      global memory (channels_last: a pixel's channels are contiguous, so a fragment register
//      is one 32-bit load of two channels; the taps re-read neighbouring pixels through L1) and
//      its B fragments from shared memory, and issues 16 mma.sync;
//   3. the epilogue adds the bias, applies the ReLU (fprop) and stores in the output's layout.
// Fragment layouts and index maps live in mma_fragments.h, where the C++ unit tests emulate a
// warp with them. fp32 runs on CUDA cores (the direct and smem rungs).
#include <algorithm>

#include "common.cuh"
#include "kernels.h"
#include "mma_fragments.h"
#include "mma_ops.cuh"
#include "../registry.h"

namespace rk {

namespace {

template <typename T, bool kTransposed>
__global__ void __launch_bounds__(kMmaThreads)
gather_mma_kernel(ConvParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sw = reinterpret_cast<T*>(smem_raw);
  const GatherGemm gg = gather_gemm(p.problem, kTransposed);
  const int64_t red_pad = gather_red_pad(gg);
  const int64_t n_blocks = gather_out_blocks(gg);
  const int64_t pack = blockIdx.y / n_blocks;
  const int64_t o_first = (blockIdx.y % n_blocks) * kMmaBlockN;   // within the pack
  const int64_t groups = gather_pack_groups(gg, pack);
  const int64_t red_valid = groups * gg.red;                      // the pack's channels
  const int64_t n_left = groups * gg.out - o_first;
  const int64_t n_valid = n_left < kMmaBlockN ? n_left : kMmaBlockN;
  const int64_t per_class = gather_blocks_per_class(gg);
  const int64_t phase = blockIdx.x / per_class;
  // fprop reads x and writes y; dgrad reads dy (p.y) and writes dx (p.x).
  const T* __restrict__ src = static_cast<const T*>(kTransposed ? p.y : p.x);
  const int64_t* src_stride = kTransposed ? p.y_stride : p.x_stride;
  T* __restrict__ dst = static_cast<T*>(kTransposed ? p.x : p.y);
  const int64_t* dst_stride = kTransposed ? p.x_stride : p.y_stride;
  const T* __restrict__ w = static_cast<const T*>(p.w);

  // 1. The block's weights into shared memory, [tap][n][c]: block-diagonal across the pack's
  //    groups, zero-padded.
  const int64_t w_elems = 9 * int64_t(kMmaBlockN) * red_pad;
  for (int64_t i = threadIdx.x; i < w_elems; i += kMmaThreads) {
    const int64_t c = i % red_pad, n = (i / red_pad) % kMmaBlockN;
    const int tap = int(i / (red_pad * kMmaBlockN));
    float v = 0.f;
    WeightIndex wi;
    if (n < n_valid && gather_pack_weight(gg, pack, c, o_first + n, &wi))
      v = to_float(w[offset4(p.w_stride, wi.k, wi.c, tap / 3, tap % 3)]);
    sw[mma_weight_index(tap, int(n), c, red_pad)] = from_float<T>(v);
  }
  __syncthreads();

  // 2. The warp's 32 pixels: this lane's rows are group and group + 8 of each m16 tile.
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t m_warp = (blockIdx.x % per_class) * kMmaBlockM + warp * kMmaWarpM;
  MmaRow rows[kMmaTilesM][2];
#pragma unroll
  for (int t = 0; t < kMmaTilesM; ++t)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      rows[t][h] = gather_row(gg, phase, m_warp + t * kMmaM + mma_a_coord(lane, h).row);

  float acc[kMmaTilesM][kMmaTilesN][4] = {};
  for (int tap = 0; tap < 9; ++tap) {
    if (!gather_tap_in_class(gg, phase, tap / 3, tap % 3)) continue;  // uniform per block
    int64_t off[kMmaTilesM][2];
#pragma unroll
    for (int t = 0; t < kMmaTilesM; ++t)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        off[t][h] = gather_src_offset(gg, src_stride, rows[t][h], pack, tap / 3, tap % 3);
    for (int64_t c0 = 0; c0 < red_pad; c0 += kMmaK) {
      uint32_t a[kMmaTilesM][4];
#pragma unroll
      for (int t = 0; t < kMmaTilesM; ++t)
#pragma unroll
        for (int reg = 0; reg < 4; ++reg) {
          const int64_t c = c0 + mma_a_coord(lane, reg).col, o = off[t][reg % 2];
          a[t][reg] = (o >= 0 && c < red_valid) ? load_pair(src + o + c) : 0u;  // even widths
        }
#pragma unroll
      for (int nt = 0; nt < kMmaTilesN; ++nt) {
        const FragCoord b0 = mma_b_coord(lane, 0), b1 = mma_b_coord(lane, 1);
        const int n = nt * kMmaN + b0.col;
        const uint32_t r0 = *reinterpret_cast<const uint32_t*>(sw + mma_weight_index(tap, n, c0 + b0.row, red_pad));
        const uint32_t r1 = *reinterpret_cast<const uint32_t*>(sw + mma_weight_index(tap, n, c0 + b1.row, red_pad));
#pragma unroll
        for (int t = 0; t < kMmaTilesM; ++t) MmaOp<T>::run(acc[t][nt], a[t], r0, r1);
      }
    }
  }

  // 3. Epilogue: bias and ReLU (fprop), store in the destination's layout.
  const T* __restrict__ bias = static_cast<const T*>(p.bias);
#pragma unroll
  for (int t = 0; t < kMmaTilesM; ++t)
#pragma unroll
    for (int nt = 0; nt < kMmaTilesN; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const MmaRow& row = rows[t][i / 2];
        const int64_t col = nt * kMmaN + mma_c_coord(lane, i).col;
        if (!row.ok || col >= n_valid) continue;
        const int64_t channel = pack * gg.gp * gg.out + o_first + col;
        float v = acc[t][nt][i];
        if (!kTransposed && bias) v += to_float(bias[channel]);
        if (!kTransposed && p.relu) v = fmaxf(v, 0.f);
        dst[offset4(dst_stride, row.n, channel, row.h, row.w)] = from_float<T>(v);
      }
}

}  // namespace

namespace {

std::string gather_mma_can_implement(const ConvParams& p, bool transposed) {
  const std::string common = check_common(p);
  if (!common.empty()) return common;
  const GatherGemm g = gather_gemm(p.problem, transposed);
  const char* red = transposed ? "Kg" : "Cg";
  const int64_t* s = transposed ? p.y_stride : p.x_stride;
  const void* src = transposed ? p.y : p.x;
  if (p.dtype == DType::kFloat32) return "fp32 runs on CUDA cores";
  if (g.red > kMmaMaxRed) return std::string(red) + " > 64: the block's weights would not fit in shared memory";
  if ((g.gp * g.red) % 2 != 0 || (g.G * g.red) % 2 != 0)
    return std::string("odd channel counts (") + red + " x groups): the tensor-core loads read channel pairs";
  if (!channels_innermost(s)) return transposed ? "grad_output is not channels_last" : "input is not channels_last";
  if (reinterpret_cast<uintptr_t>(src) % 4 != 0 || s[0] % 2 != 0 || s[2] % 2 != 0 || s[3] % 2 != 0)
    return "source channel pairs are not 4-byte aligned";
  if (gather_channel_blocks(g) > 65535) return "more than 65535 group blocks";
  if (gather_pixel_blocks(g) > 0x7fffffff) return "too many pixel blocks";
  return "";
}

int gather_mma_launch(const ConvParams& p, void* stream, bool transposed) {
  const GatherGemm g = gather_gemm(p.problem, transposed);
  const dim3 grid(unsigned(gather_pixel_blocks(g)), unsigned(gather_channel_blocks(g)));
  const int64_t smem = gather_smem_bytes(g, 2);
  auto launch = [&](auto kernel) {
    return launch_with_smem(kernel, grid, kMmaThreads, smem, static_cast<cudaStream_t>(stream), p);
  };
  if (p.dtype == DType::kFloat16)
    return transposed ? launch(gather_mma_kernel<__half, true>) : launch(gather_mma_kernel<__half, false>);
  if (p.dtype == DType::kBFloat16)
    return transposed ? launch(gather_mma_kernel<__nv_bfloat16, true>)
                      : launch(gather_mma_kernel<__nv_bfloat16, false>);
  return int(cudaErrorInvalidValue);  // fp32 is refused by can_implement
}

}  // namespace

std::string fprop_mma_can_implement(const ConvParams& p) {
  if (p.direction != Direction::kFprop) return "not an fprop problem";
  return gather_mma_can_implement(p, false);
}

int fprop_mma_launch(const ConvParams& p, void* stream) { return gather_mma_launch(p, stream, false); }

std::string dgrad_mma_can_implement(const ConvParams& p) {
  if (p.direction != Direction::kDgrad) return "not a dgrad problem";
  return gather_mma_can_implement(p, true);
}

int dgrad_mma_launch(const ConvParams& p, void* stream) { return gather_mma_launch(p, stream, true); }

}  // namespace rk
