// wgrad_direct.cu: rung 1 of wgrad, the correctness baseline.
//
//   dw[k, c, r, s] = sum_{n, p, q} dy[n, k, p, q] * x[n, g*Cg + c, p*sh - ph + r*dh, q*sw - pw + s*dw]
//
// The reduction over N*P*Q is long (200k terms for ResNeXt-50 stage 1 at batch 64) and the
// output tiny, so it is split: block (e, j) reduces the j-th chunk of N*P*Q for weight element
// e into workspace[j][e] (a block-wide tree in shared memory, fixed order), and a second kernel
// (wgrad_reduce.cuh) adds the `splits` partials of each element in index order. No atomics:
// bitwise deterministic.
#include <algorithm>

#include "common.cuh"
#include "kernels.h"
#include "wgrad_reduce.cuh"
#include "../registry.h"

namespace rk {

template <typename T>
__global__ void __launch_bounds__(kWgradThreads)
wgrad_direct_partial_kernel(ConvParams p, int64_t splits) {
  const ConvProblem& q = p.problem;
  const int64_t Cg = q.Cg(), Kg = q.Kg();
  const int64_t e = blockIdx.x;              // weight element, logical [K, Cg, 3, 3] order
  const int64_t s = e % 3, r = (e / 3) % 3, c = (e / 9) % Cg, k = e / (9 * Cg);
  const int64_t xc = (k / Kg) * Cg + c;
  const int64_t npq = q.N * q.P * q.Q;
  const int64_t chunk = ceil_div(npq, splits);
  const int64_t begin = blockIdx.y * chunk;
  const int64_t end = begin + chunk < npq ? begin + chunk : npq;
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ dy = static_cast<const T*>(p.y);

  float acc = 0.f;
  for (int64_t m = begin + threadIdx.x; m < end; m += blockDim.x) {
    const int64_t qq = m % q.Q, pp = (m / q.Q) % q.P, n = m / (q.P * q.Q);
    const int64_t h = fprop_input_index(pp, r, q.stride_h, q.pad_h, q.dil_h);
    const int64_t wi = fprop_input_index(qq, s, q.stride_w, q.pad_w, q.dil_w);
    if (h < 0 || h >= q.H || wi < 0 || wi >= q.W) continue;
    acc += to_float(dy[offset4(p.y_stride, n, k, pp, qq)]) *
           to_float(x[offset4(p.x_stride, n, xc, h, wi)]);
  }
  __shared__ float buf[kWgradThreads];
  buf[threadIdx.x] = acc;
  __syncthreads();
  for (int half = kWgradThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) buf[threadIdx.x] += buf[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) p.workspace[blockIdx.y * gridDim.x + e] = buf[0];
}

int64_t wgrad_direct_splits(const ConvParams& p) {
  const int64_t npq = p.problem.N * p.problem.P * p.problem.Q;
  const int64_t elems = p.problem.w_numel();
  const int64_t want = ceil_div(2 * int64_t(p.num_sms) * (kWgradThreads / 32), elems);
  const int64_t most = std::max<int64_t>(1, npq / kWgradMinChunk);
  return std::max<int64_t>(1, std::min<int64_t>({want, most, kWgradMaxSplits}));
}

std::string wgrad_direct_can_implement(const ConvParams& p) {
  if (p.direction != Direction::kWgrad) return "not a wgrad problem";
  if (p.problem.w_numel() > 0x7fffffff) return "more than 2^31 weight elements (grid x limit)";
  return check_common(p);
}

int64_t wgrad_direct_workspace_elems(const ConvParams& p) {
  return wgrad_direct_splits(p) * p.problem.w_numel();
}

int wgrad_direct_launch(const ConvParams& p, void* stream) {
  const int64_t elems = p.problem.w_numel();
  const int64_t splits = wgrad_direct_splits(p);
  auto st = static_cast<cudaStream_t>(stream);
  return dispatch_dtype(p.dtype, [&]<typename T>() {
    wgrad_direct_partial_kernel<T><<<dim3(unsigned(elems), unsigned(splits)), kWgradThreads, 0, st>>>(p, splits);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return int(err);
    return launch_wgrad_reduce<T>(p, splits, st);
  });
}

}  // namespace rk
