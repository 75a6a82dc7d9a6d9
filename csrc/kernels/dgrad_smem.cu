// dgrad_smem.cu: rung 2 of dgrad on CUDA cores: the dy halo of a dx tile in shared memory,
// reused by the 9 taps (the dgrad mirror of fprop_smem.cu).
//
// A thread block owns one image n, a kTileP x kTileQ tile of dx pixels and a pack of
// consecutive groups (about kSmemPackChannels channels). It
//   1. loads the dy halo the tile's pixels receive from, rows dgrad_halo_first(h0) onwards
//      (fp32, zeros outside dy), for the pack's Kg-wide groups, and the pack's weights;
//   2. computes every (pixel, input channel) of the tile from shared memory only:
//        dx[n, c, h, w] = sum_{k in group(c), r, s} halo[p - p0][q - q0][k] * w[k][c][r][s]
//      over the taps with p = (h + ph - r*dh) / sh exact (dgrad_output_index);
//   3. stores in dx's layout.
// Each dy element is read from global memory once per block instead of up to 9 times; fp32
// accumulation; any layout through strides.
#include <algorithm>

#include "common.cuh"
#include "kernels.h"
#include "../registry.h"

namespace rk {

namespace {

template <typename T>
__global__ void __launch_bounds__(kSmemThreads)
dgrad_smem_kernel(ConvParams p, SmemTile t) {
  extern __shared__ float smem[];
  const ConvProblem& q = p.problem;
  const int64_t Cg = q.Cg(), Kg = q.Kg();
  const int64_t tiles_w = ceil_div(q.W, kTileQ), tiles_h = ceil_div(q.H, kTileP);
  const int64_t tw = blockIdx.x % tiles_w, th = (blockIdx.x / tiles_w) % tiles_h;
  const int64_t n = blockIdx.x / (tiles_w * tiles_h);
  const int64_t g0 = int64_t(blockIdx.y) * t.groups_per_block;
  const int64_t groups = groups_in_pack(q.G, t.groups_per_block, blockIdx.y);
  const int64_t kch = groups * Kg, cch = groups * Cg;  // the pack's dy and dx channels
  const int64_t h0 = th * kTileP, w0 = tw * kTileQ;
  const int64_t p0 = dgrad_halo_first(h0, q.stride_h, q.pad_h, q.dil_h);
  const int64_t q0 = dgrad_halo_first(w0, q.stride_w, q.pad_w, q.dil_w);

  float* halo = smem;                                   // [halo_h][halo_w][channels]
  float* wts = smem + t.halo_h * t.halo_w * t.channels; // [k of the pack][Cg][3][3]
  const T* __restrict__ dy = static_cast<const T*>(p.y);
  const T* __restrict__ w = static_cast<const T*>(p.w);

  // 1. dy halo and weights into shared memory.
  stage_window(halo, t.channels, dy, p.y_stride, n, g0 * Kg, kch, p0, q0, t.halo_h, t.halo_w, q.P, q.Q);
  const int64_t w_elems = kch * Cg * 9;
  for (int64_t i = threadIdx.x; i < w_elems; i += blockDim.x) {
    const int64_t s = i % 3, r = (i / 3) % 3, c = (i / 9) % Cg, kl = i / (9 * Cg);
    wts[i] = to_float(w[offset4(p.w_stride, g0 * Kg + kl, c, r, s)]);
  }
  __syncthreads();

  // 2-3. Every (dx channel, pixel) of the tile, channel fastest for a channels_last dx.
  const bool cl = channels_innermost(p.x_stride);
  T* __restrict__ dx = static_cast<T*>(p.x);
  const int64_t work = cch * kTileP * kTileQ;
  for (int64_t i = threadIdx.x; i < work; i += blockDim.x) {
    const int64_t c_pack = cl ? i % cch : i / (kTileP * kTileQ);
    const int64_t pix = cl ? i / cch : i % (kTileP * kTileQ);
    const int64_t h = h0 + pix / kTileQ, wi = w0 + pix % kTileQ;
    if (h >= q.H || wi >= q.W) continue;
    const int64_t gl = c_pack / Cg, c = c_pack % Cg;
    float acc = 0.f;
    for (int r = 0; r < 3; ++r) {
      const int64_t pp = dgrad_output_index(h, r, q.stride_h, q.pad_h, q.dil_h, q.P);
      if (pp < 0) continue;
      for (int s = 0; s < 3; ++s) {
        const int64_t qq = dgrad_output_index(wi, s, q.stride_w, q.pad_w, q.dil_w, q.Q);
        if (qq < 0) continue;
        const float* in = halo + ((pp - p0) * t.halo_w + (qq - q0)) * t.channels + gl * Kg;
        const float* wk = wts + (gl * Kg * Cg + c) * 9 + r * 3 + s;
        for (int64_t k = 0; k < Kg; ++k) acc += in[k] * wk[k * Cg * 9];
      }
    }
    dx[offset4(p.x_stride, n, g0 * Cg + c_pack, h, wi)] = from_float<T>(acc);
  }
}

}  // namespace

SmemTile dgrad_smem_tile(const ConvParams& p) {
  const ConvProblem& q = p.problem;
  SmemTile t;
  t.groups_per_block = int(smem_groups_per_block(q.Cg(), q.Kg(), q.G));
  t.channels = int(t.groups_per_block * q.Kg());
  t.halo_h = int(dgrad_halo_extent(kTileP, q.stride_h, q.dil_h));
  t.halo_w = int(dgrad_halo_extent(kTileQ, q.stride_w, q.dil_w));
  t.smem_bytes = int64_t(sizeof(float)) *
                 (int64_t(t.halo_h) * t.halo_w * t.channels + int64_t(t.channels) * q.Cg() * 9);
  return t;
}

std::string dgrad_smem_can_implement(const ConvParams& p) {
  if (p.direction != Direction::kDgrad) return "not a dgrad problem";
  const std::string common = check_common(p);
  if (!common.empty()) return common;
  const std::string smem = smem_budget_refusal(dgrad_smem_tile(p).smem_bytes,
                                                "the dy halo and weights of one pack");
  if (!smem.empty()) return smem;
  const ConvProblem& q = p.problem;
  if (q.N * ceil_div(q.H, kTileP) * ceil_div(q.W, kTileQ) > 0x7fffffff) return "too many tiles";
  return "";
}

int dgrad_smem_launch(const ConvParams& p, void* stream) {
  const ConvProblem& q = p.problem;
  const SmemTile t = dgrad_smem_tile(p);
  const dim3 grid(unsigned(q.N * ceil_div(q.H, kTileP) * ceil_div(q.W, kTileQ)),
                  unsigned(ceil_div(q.G, t.groups_per_block)));
  return dispatch_dtype(p.dtype, [&]<typename T>() {
    return launch_with_smem(dgrad_smem_kernel<T>, grid, kSmemThreads, t.smem_bytes,
                            static_cast<cudaStream_t>(stream), p, t);
  });
}

}  // namespace rk
