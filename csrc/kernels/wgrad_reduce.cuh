// wgrad_reduce.cuh: the second pass of every split wgrad: adds the `splits` fp32 partial sums
// of each weight element in index order and stores the gradient in the weight's dtype and
// layout. The workspace holds partials as [splits][K][Cg][3][3] (logical weight order).
// Fixed order, no atomics: two runs give bitwise-equal gradients.
#pragma once

#include "common.cuh"
#include "kernels.h"

namespace rk {

// Stores weight gradient element (k, c, tap) in the weight's dtype and layout.
template <typename T>
__device__ __forceinline__ void store_weight(const ConvParams& p, int64_t k, int64_t c, int tap, float v) {
  static_cast<T*>(p.w)[offset4(p.w_stride, k, c, tap / 3, tap % 3)] = from_float<T>(v);
}

template <typename T>
__global__ void __launch_bounds__(kDirectThreads)
wgrad_reduce_kernel(ConvParams p, int64_t elems, int64_t splits) {
  const int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (e >= elems) return;
  float acc = 0.f;
  for (int64_t j = 0; j < splits; ++j) acc += p.workspace[j * elems + e];
  const int64_t Cg = p.problem.Cg();
  store_weight<T>(p, e / (9 * Cg), (e / 9) % Cg, int(e % 9), acc);
}

// Launches wgrad_reduce_kernel for `p` after a partial kernel filled `splits` partials.
template <typename T> int launch_wgrad_reduce(const ConvParams& p, int64_t splits, cudaStream_t st) {
  const int64_t elems = p.problem.w_numel();
  wgrad_reduce_kernel<T><<<unsigned(ceil_div(elems, kDirectThreads)), kDirectThreads, 0, st>>>(p, elems, splits);
  return int(cudaGetLastError());
}

}  // namespace rk
