// wgrad_smem.cu: rung 2 of wgrad, on CUDA cores (it serves what the tensor-core rung 3 does
// not: fp32 above all): tiles of the output grid with the x halo in shared memory, reused by
// the 9 taps.
//
// Block (split, pack) walks tiles split, split + splits, ... of the N x tiles_p x tiles_q output
// tiles (kTileP x kTileQ positions each) for one pack of consecutive groups. Per tile it
//   1. loads the x halo of the tile (as fprop_smem does) and the dy tile, fp32, into shared
//      memory;
//   2. adds, for each weight element (k, c, r, s) of the pack (each owned by one thread), the
//      tile's 64 products dy[pos, k] * halo[pos shifted by (r, s), c] to its fp32 sum in shared
//      memory.
// At the end the block writes its sums to workspace[split][k][c][tap], and wgrad_reduce.cuh
// adds the splits in index order: deterministic, no atomics.
#include <algorithm>

#include "common.cuh"
#include "kernels.h"
#include "wgrad_reduce.cuh"
#include "../registry.h"

namespace rk {

namespace {

constexpr int64_t kWgradSmemMaxSplits = 64;

template <typename T>
__global__ void __launch_bounds__(kSmemThreads)
wgrad_smem_kernel(ConvParams p, WgradSmemGeometry geo) {
  extern __shared__ float smem[];
  const SmemTile& t = geo.tile;
  const ConvProblem& q = p.problem;
  const int64_t Cg = q.Cg(), Kg = q.Kg();
  const int64_t g0 = int64_t(blockIdx.y) * t.groups_per_block;
  const int64_t groups = groups_in_pack(q.G, t.groups_per_block, blockIdx.y);
  const int64_t cch = groups * Cg, kch = groups * Kg;  // the pack's x and dy channels
  const int64_t elems = kch * Cg * 9;                  // the pack's weight elements
  const int64_t tiles_q = ceil_div(q.Q, kTileQ), tiles_p = ceil_div(q.P, kTileP);

  float* halo = smem;                                              // [halo_h][halo_w][channels]
  float* dyt = halo + t.halo_h * t.halo_w * t.channels;            // [kTileP*kTileQ][out_channels]
  float* sums = dyt + kTileP * kTileQ * geo.out_channels;          // [k][c][3][3] of the pack
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ dy = static_cast<const T*>(p.y);
  for (int64_t e = threadIdx.x; e < elems; e += blockDim.x) sums[e] = 0.f;

  for (int64_t tile = blockIdx.x; tile < geo.tiles; tile += geo.splits) {
    const int64_t tq = tile % tiles_q, tp = (tile / tiles_q) % tiles_p, n = tile / (tiles_q * tiles_p);
    const int64_t pp0 = tp * kTileP, qq0 = tq * kTileQ;
    const int64_t h0 = pp0 * q.stride_h - q.pad_h, w0 = qq0 * q.stride_w - q.pad_w;
    __syncthreads();  // the previous tile's reads are done
    // 1. x halo and dy tile (positions past the grid are zeros: they contribute nothing).
    stage_window(halo, t.channels, x, p.x_stride, n, g0 * Cg, cch, h0, w0, t.halo_h, t.halo_w, q.H, q.W);
    stage_window(dyt, geo.out_channels, dy, p.y_stride, n, g0 * Kg, kch, pp0, qq0, int64_t(kTileP),
                 int64_t(kTileQ), q.P, q.Q);
    __syncthreads();
    // 2. Each thread's weight elements: 64 products each, from shared memory.
    for (int64_t e = threadIdx.x; e < elems; e += blockDim.x) {
      const int64_t s = e % 3, r = (e / 3) % 3, c = (e / 9) % Cg, kl = e / (9 * Cg);
      const int64_t xc = (kl / Kg) * Cg + c;  // the x channel of the pack this weight reads
      float acc = 0.f;
      for (int pix = 0; pix < kTileP * kTileQ; ++pix) {
        const int64_t row = (pix / kTileQ) * q.stride_h + r * q.dil_h;
        const int64_t col = (pix % kTileQ) * q.stride_w + s * q.dil_w;
        acc += dyt[pix * geo.out_channels + kl] * halo[(row * t.halo_w + col) * t.channels + xc];
      }
      sums[e] += acc;
    }
  }
  __syncthreads();
  const int64_t w_elems = q.w_numel();
  for (int64_t e = threadIdx.x; e < elems; e += blockDim.x)
    p.workspace[blockIdx.x * w_elems + g0 * Kg * Cg * 9 + e] = sums[e];  // [K][Cg][3][3] order
}

}  // namespace

WgradSmemGeometry wgrad_smem_geometry(const ConvParams& p) {
  const ConvProblem& q = p.problem;
  WgradSmemGeometry geo;
  SmemTile& t = geo.tile;
  t.groups_per_block = int(smem_groups_per_block(q.Cg(), q.Kg(), q.G));
  t.channels = int(t.groups_per_block * q.Cg());
  t.halo_h = int((kTileP - 1) * q.stride_h + 2 * q.dil_h + 1);
  t.halo_w = int((kTileQ - 1) * q.stride_w + 2 * q.dil_w + 1);
  geo.out_channels = t.groups_per_block * q.Kg();
  t.smem_bytes = int64_t(sizeof(float)) *
                 (int64_t(t.halo_h) * t.halo_w * t.channels + kTileP * kTileQ * geo.out_channels +
                  geo.out_channels * q.Cg() * 9);
  geo.tiles = q.N * ceil_div(q.P, kTileP) * ceil_div(q.Q, kTileQ);
  // Enough blocks to fill the GPU about twice over, no more splits than tiles.
  const int64_t packs = ceil_div(q.G, int64_t(t.groups_per_block));
  const int64_t want = ceil_div(2 * int64_t(p.num_sms), packs);
  geo.splits = std::max<int64_t>(1, std::min<int64_t>({want, geo.tiles, kWgradSmemMaxSplits}));
  return geo;
}

std::string wgrad_smem_can_implement(const ConvParams& p) {
  if (p.direction != Direction::kWgrad) return "not a wgrad problem";
  const std::string common = check_common(p);
  if (!common.empty()) return common;
  return smem_budget_refusal(wgrad_smem_geometry(p).tile.smem_bytes,
                             "the x halo, dy tile and sums of one pack");
}

int64_t wgrad_smem_workspace_elems(const ConvParams& p) {
  return wgrad_smem_geometry(p).splits * p.problem.w_numel();
}

int wgrad_smem_launch(const ConvParams& p, void* stream) {
  const WgradSmemGeometry geo = wgrad_smem_geometry(p);
  const dim3 grid(unsigned(geo.splits), unsigned(ceil_div(p.problem.G, int64_t(geo.tile.groups_per_block))));
  auto st = static_cast<cudaStream_t>(stream);
  return dispatch_dtype(p.dtype, [&]<typename T>() {
    const int err = launch_with_smem(wgrad_smem_kernel<T>, grid, kSmemThreads, geo.tile.smem_bytes,
                                     st, p, geo);
    return err != int(cudaSuccess) ? err : launch_wgrad_reduce<T>(p, geo.splits, st);
  });
}

}  // namespace rk
