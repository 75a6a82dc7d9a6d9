// fprop_smem.cu: rung 2 of fprop: the input halo in shared memory, reused across the 9 taps.
//
// A thread block owns one image n, a kTileP x kTileQ tile of output pixels and a pack of
// consecutive groups (SmemTile::groups_per_block of them, so that the pack spans about
// kSmemPackChannels input channels: 8 groups at Cg = 4). It
//   1. loads the input halo of that pixel tile for the pack's channels into shared memory
//      (fp32, zeros where the halo falls into padding), and the pack's weights,
//   2. computes every (pixel, output channel) of the tile from shared memory only:
//        y[n, k, p, q] = sum_{c < Cg, r, s} halo[pl*sh + r*dh][ql*sw + s*dw][gl*Cg + c] * w[kl][c][r][s]
//   3. applies the epilogue (bias, ReLU) and stores.
// Each input element is read from global memory once per block instead of up to 9 times, and
// the loads walk channels innermost, so a channels_last input is read in contiguous rows.
// CUDA cores, fp32 accumulation; any layout through strides. The tile geometry lives in
// conv_problem-style host/device helpers below so the C++ unit tests check it without a GPU.
#include <algorithm>

#include "common.cuh"
#include "kernels.h"
#include "../registry.h"

namespace rk {

template <typename T>
__global__ void __launch_bounds__(kSmemThreads)
fprop_smem_kernel(ConvParams p, SmemTile t) {
  extern __shared__ float smem[];
  const ConvProblem& q = p.problem;
  const int64_t Cg = q.Cg(), Kg = q.Kg();
  const int64_t tiles_q = ceil_div(q.Q, kTileQ), tiles_p = ceil_div(q.P, kTileP);
  const int64_t tq = blockIdx.x % tiles_q, tp = (blockIdx.x / tiles_q) % tiles_p;
  const int64_t n = blockIdx.x / (tiles_q * tiles_p);
  const int64_t g0 = int64_t(blockIdx.y) * t.groups_per_block;
  const int64_t groups = std::min<int64_t>(t.groups_per_block, q.G - g0);
  const int64_t channels = groups * Cg, outs = groups * Kg;
  const int64_t p0 = tp * kTileP, q0 = tq * kTileQ;
  const int64_t h0 = p0 * q.stride_h - q.pad_h, w0 = q0 * q.stride_w - q.pad_w;

  float* halo = smem;                                   // [halo_h][halo_w][channels]
  float* wts = smem + t.halo_h * t.halo_w * t.channels; // [outs][Cg][3][3]
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ w = static_cast<const T*>(p.w);

  // 1. Halo and weights into shared memory (channel fastest: contiguous in channels_last).
  const int64_t halo_elems = int64_t(t.halo_h) * t.halo_w * channels;
  for (int64_t i = threadIdx.x; i < halo_elems; i += blockDim.x) {
    const int64_t c = i % channels, col = (i / channels) % t.halo_w, row = i / (channels * t.halo_w);
    const int64_t h = h0 + row, wi = w0 + col;
    float v = 0.f;
    if (h >= 0 && h < q.H && wi >= 0 && wi < q.W)
      v = to_float(x[offset4(p.x_stride, n, g0 * Cg + c, h, wi)]);
    halo[(row * t.halo_w + col) * t.channels + c] = v;
  }
  const int64_t w_elems = outs * Cg * 9;
  for (int64_t i = threadIdx.x; i < w_elems; i += blockDim.x) {
    const int64_t s = i % 3, r = (i / 3) % 3, c = (i / 9) % Cg, kl = i / (9 * Cg);
    wts[i] = to_float(w[offset4(p.w_stride, g0 * Kg + kl, c, r, s)]);
  }
  __syncthreads();

  // 2-3. Every (output channel, pixel) of the tile, output channel fastest.
  const bool cl = channels_innermost(p.y_stride);
  T* __restrict__ y = static_cast<T*>(p.y);
  const T* __restrict__ bias = static_cast<const T*>(p.bias);
  const int64_t work = outs * kTileP * kTileQ;
  for (int64_t i = threadIdx.x; i < work; i += blockDim.x) {
    const int64_t kl = cl ? i % outs : i / (kTileP * kTileQ);
    const int64_t pix = cl ? i / outs : i % (kTileP * kTileQ);
    const int64_t pl = pix / kTileQ, ql = pix % kTileQ;
    const int64_t pp = p0 + pl, qq = q0 + ql;
    if (pp >= q.P || qq >= q.Q) continue;
    const int64_t cbase = (kl / Kg) * Cg;
    const float* wk = wts + kl * Cg * 9;
    float acc = 0.f;
    for (int r = 0; r < 3; ++r) {
      const int64_t row = pl * q.stride_h + r * q.dil_h;
      for (int s = 0; s < 3; ++s) {
        const float* in = halo + (row * t.halo_w + ql * q.stride_w + s * q.dil_w) * t.channels + cbase;
        for (int64_t c = 0; c < Cg; ++c) acc += in[c] * wk[c * 9 + r * 3 + s];
      }
    }
    const int64_t k = g0 * Kg + kl;
    if (bias) acc += to_float(bias[k]);
    if (p.relu) acc = fmaxf(acc, 0.f);
    y[offset4(p.y_stride, n, k, pp, qq)] = from_float<T>(acc);
  }
}

SmemTile fprop_smem_tile(const ConvParams& p) {
  const ConvProblem& q = p.problem;
  SmemTile t;
  const int64_t cg = std::max<int64_t>(1, q.Cg());
  t.groups_per_block = int(std::max<int64_t>(1, std::min<int64_t>(q.G, kSmemPackChannels / cg)));
  t.channels = int(t.groups_per_block * cg);
  t.halo_h = int((kTileP - 1) * q.stride_h + 2 * q.dil_h + 1);
  t.halo_w = int((kTileQ - 1) * q.stride_w + 2 * q.dil_w + 1);
  t.smem_bytes = int64_t(sizeof(float)) *
                 (int64_t(t.halo_h) * t.halo_w * t.channels + t.groups_per_block * q.Kg() * cg * 9);
  return t;
}

std::string fprop_smem_can_implement(const ConvParams& p) {
  if (p.direction != Direction::kFprop) return "not an fprop problem";
  const std::string common = check_common(p);
  if (!common.empty()) return common;
  const SmemTile t = fprop_smem_tile(p);
  if (t.smem_bytes > kSmemMaxBytes)
    return "the halo and weights of one pack need " + std::to_string(t.smem_bytes) +
           " bytes of shared memory, more than " + std::to_string(kSmemMaxBytes);
  return "";
}

int fprop_smem_launch(const ConvParams& p, void* stream) {
  const ConvProblem& q = p.problem;
  const SmemTile t = fprop_smem_tile(p);
  const dim3 grid(unsigned(q.N * ceil_div(q.P, kTileP) * ceil_div(q.Q, kTileQ)),
                  unsigned(ceil_div(q.G, t.groups_per_block)));
  return dispatch_dtype(p.dtype, [&]<typename T>() {
    cudaError_t err = cudaFuncSetAttribute(fprop_smem_kernel<T>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           int(kSmemMaxBytes));
    if (err != cudaSuccess) return int(err);
    fprop_smem_kernel<T><<<grid, kSmemThreads, size_t(t.smem_bytes),
                           static_cast<cudaStream_t>(stream)>>>(p, t);
    return int(cudaGetLastError());
  });
}

}  // namespace rk
