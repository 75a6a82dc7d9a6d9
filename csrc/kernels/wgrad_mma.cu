// wgrad_mma.cu: rung 3 of wgrad, a tensor-core GEMM (mma.sync.m16n8k16, fp16/bf16 inputs, fp32
// accumulation) per group and tap, its reduction over N*P*Q split across blocks:
//
//   dw[g*Kg + k, c, r, s] = sum_{m < N*P*Q} dy[m, g*Kg + k] * x[m shifted by (r, s), g*Cg + c]
//
// Block (split, pack * 9 + tap), 4 warps, a pack being mma_groups_per_block consecutive groups
// (16 at Cg = Kg = 4) whose block-diagonal product the block forms and keeps the diagonal of:
//   1. stage kWgradMmaChunk positions of dy (Kg rows) and of the tap-shifted x (Cg rows) in
//      shared memory, transposed to [channel][position] so that the two positions a fragment
//      register pairs are adjacent (consecutive threads read consecutive channels of a
//      position: coalesced for channels_last, correct for any layout);
//   2. warp w multiplies its 16 rows of dy^T by all of x: 2 k16 steps x 8 n8 tiles of mma.sync;
//   3. after its chunk, the fp32 partials go to workspace[split][k][c][tap], and
//      wgrad_reduce.cuh adds the splits in index order (deterministic, no atomics).
// Index maps in mma_fragments.h, emulated by the C++ unit tests. Serves Cg, Kg <= 64.
#include <algorithm>

#include "common.cuh"
#include "kernels.h"
#include "mma_fragments.h"
#include "mma_ops.cuh"
#include "wgrad_reduce.cuh"
#include "../registry.h"

namespace rk {

namespace {

template <typename T>
__global__ void __launch_bounds__(kMmaThreads)
wgrad_mma_kernel(ConvParams p, int64_t splits) {
  __shared__ __align__(16) T dy_s[kWgradMmaRows * kWgradMmaRow];
  __shared__ __align__(16) T x_s[kWgradMmaRows * kWgradMmaRow];
  const ConvProblem& q = p.problem;
  const int64_t Cg = q.Cg(), Kg = q.Kg();
  const int64_t gp = mma_groups_per_block(Cg, Kg, q.G);
  const int64_t pack = blockIdx.y / 9;
  const int64_t groups = groups_in_pack(q.G, gp, pack);  // the last pack may be partial
  const int tap = int(blockIdx.y % 9), r = tap / 3, s = tap % 3;
  const int64_t npq = q.N * q.P * q.Q, chunk = ceil_div(npq, splits);
  const int64_t begin = blockIdx.x * chunk;
  const int64_t end = begin + chunk < npq ? begin + chunk : npq;
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ dy = static_cast<const T*>(p.y);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  float acc[kMmaTilesN][4] = {};
  for (int64_t m0 = begin; m0 < end; m0 += kWgradMmaChunk) {
    // 1. Stage dy and the tap-shifted x, [channel][position], zeros past the chunk's end.
    for (int i = threadIdx.x; i < kWgradMmaRows * kWgradMmaChunk; i += kMmaThreads) {
      const int row = i % kWgradMmaRows, pos = i / kWgradMmaRows;
      const int64_t m = m0 + pos;
      float dv = 0.f, xv = 0.f;
      if (m < end && row < groups * Kg)
        dv = to_float(dy[wgrad_dy_offset(q, p.y_stride, m, pack * gp * Kg + row)]);
      if (m < end && row < groups * Cg) {
        const int64_t o = wgrad_x_offset(q, p.x_stride, m, pack * gp * Cg + row, r, s);
        if (o >= 0) xv = to_float(x[o]);
      }
      dy_s[wgrad_stage_index(row, pos)] = from_float<T>(dv);
      x_s[wgrad_stage_index(row, pos)] = from_float<T>(xv);
    }
    __syncthreads();
    // 2. Warp w: rows k = 16w + .., two k16 steps over the staged positions.
#pragma unroll
    for (int ks = 0; ks < kWgradMmaChunk; ks += kMmaK) {
      uint32_t a[4];
#pragma unroll
      for (int reg = 0; reg < 4; ++reg) {
        const FragCoord fc = mma_a_coord(lane, reg);
        a[reg] = *reinterpret_cast<const uint32_t*>(dy_s + wgrad_stage_index(warp * kMmaM + fc.row, ks + fc.col));
      }
#pragma unroll
      for (int nt = 0; nt < kMmaTilesN; ++nt) {
        const FragCoord b0 = mma_b_coord(lane, 0), b1 = mma_b_coord(lane, 1);
        const int64_t c = nt * kMmaN + b0.col;
        const uint32_t r0 = *reinterpret_cast<const uint32_t*>(x_s + wgrad_stage_index(c, ks + b0.row));
        const uint32_t r1 = *reinterpret_cast<const uint32_t*>(x_s + wgrad_stage_index(c, ks + b1.row));
        MmaOp<T>::run(acc[nt], a, r0, r1);
      }
    }
    __syncthreads();
  }

  // 3. This split's partials of the diagonal blocks, [split][k][c][tap] (logical weight order).
#pragma unroll
  for (int nt = 0; nt < kMmaTilesN; ++nt)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const FragCoord fc = mma_c_coord(lane, i);
      const int64_t k = warp * kMmaM + fc.row, c = nt * kMmaN + fc.col;  // within the pack
      if (k >= groups * Kg || c >= groups * Cg || k / Kg != c / Cg) continue;
      p.workspace[(blockIdx.x * q.K + pack * gp * Kg + k) * Cg * 9 + (c % Cg) * 9 + tap] = acc[nt][i];
    }
}

int64_t packs(const ConvProblem& q) { return ceil_div(q.G, mma_groups_per_block(q.Cg(), q.Kg(), q.G)); }

}  // namespace

int64_t wgrad_mma_splits(const ConvParams& p) {
  const ConvProblem& q = p.problem;
  const int64_t npq = q.N * q.P * q.Q;
  const int64_t want = ceil_div(2 * int64_t(p.num_sms), packs(q) * 9);
  const int64_t most = std::max<int64_t>(1, npq / kWgradMmaMinChunk);
  return std::max<int64_t>(1, std::min<int64_t>({want, most, kWgradMmaMaxSplits}));
}

std::string wgrad_mma_can_implement(const ConvParams& p) {
  if (p.direction != Direction::kWgrad) return "not a wgrad problem";
  const std::string common = check_common(p);
  if (!common.empty()) return common;
  const ConvProblem& q = p.problem;
  if (p.dtype == DType::kFloat32) return "fp32 runs on CUDA cores";
  if (q.Cg() > kWgradMmaRows || q.Kg() > kWgradMmaRows) return "Cg or Kg > 64: not staged in one block";
  if (packs(q) * 9 > 65535)
    return "more than 65535 pack-tap blocks";
  return "";
}

int64_t wgrad_mma_workspace_elems(const ConvParams& p) {
  return wgrad_mma_splits(p) * p.problem.w_numel();
}

int wgrad_mma_launch(const ConvParams& p, void* stream) {
  const int64_t splits = wgrad_mma_splits(p);
  const ConvProblem& q = p.problem;
  const dim3 grid(unsigned(splits), unsigned(packs(q) * 9));
  auto st = static_cast<cudaStream_t>(stream);
  auto run = [&](auto kernel, auto reduce) {
    kernel<<<grid, kMmaThreads, 0, st>>>(p, splits);
    const cudaError_t err = cudaGetLastError();
    return err != cudaSuccess ? int(err) : reduce(p, splits, st);
  };
  if (p.dtype == DType::kFloat16)
    return run(wgrad_mma_kernel<__half>, launch_wgrad_reduce<__half>);
  if (p.dtype == DType::kBFloat16)
    return run(wgrad_mma_kernel<__nv_bfloat16>, launch_wgrad_reduce<__nv_bfloat16>);
  return int(cudaErrorInvalidValue);  // fp32 is refused by can_implement
}

}  // namespace rk
