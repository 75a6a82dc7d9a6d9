// dgrad_direct.cu: rung 1 of dgrad, the correctness baseline.
//
//   dx[n, c, h, w] = sum_{k in group(c), r, s} dy[n, k, p, q] * w[k, c mod Cg, r, s]
//   over the (p, q) with p*sh - ph + r*dh = h and q*sw - pw + s*dw = w.
//
// One thread per dx element. For stride 2 only some taps reach a given input pixel;
// `dgrad_output_index` returns -1 for the others. Thread order follows dx's memory order.
#include <algorithm>

#include "common.cuh"
#include "kernels.h"
#include "../registry.h"

namespace rk {

template <typename T>
__global__ void __launch_bounds__(kDirectThreads)
dgrad_direct_kernel(ConvParams p) {
  const ConvProblem& q = p.problem;
  const int64_t total = q.x_numel();
  const bool cl = channels_innermost(p.x_stride);
  const T* __restrict__ dy = static_cast<const T*>(p.y);
  const T* __restrict__ w = static_cast<const T*>(p.w);
  T* __restrict__ dx = static_cast<T*>(p.x);
  const int64_t Cg = q.Cg(), Kg = q.Kg();
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const Coord4 o = unflatten(idx, q.C, q.H, q.W, cl);  // (n, c, h, w)
    const int64_t g = o.c / Cg, cg = o.c % Cg;
    float acc = 0.f;
    for (int r = 0; r < 3; ++r) {
      const int64_t pp = dgrad_output_index(o.i, r, q.stride_h, q.pad_h, q.dil_h, q.P);
      if (pp < 0) continue;
      for (int s = 0; s < 3; ++s) {
        const int64_t qq = dgrad_output_index(o.j, s, q.stride_w, q.pad_w, q.dil_w, q.Q);
        if (qq < 0) continue;
        for (int64_t k = g * Kg; k < (g + 1) * Kg; ++k) {
          acc += to_float(dy[offset4(p.y_stride, o.b, k, pp, qq)]) *
                 to_float(w[offset4(p.w_stride, k, cg, r, s)]);
        }
      }
    }
    dx[offset4(p.x_stride, o.b, o.c, o.i, o.j)] = from_float<T>(acc);
  }
}

std::string dgrad_direct_can_implement(const ConvParams& p) {
  if (p.direction != Direction::kDgrad) return "not a dgrad problem";
  return check_common(p);
}

int dgrad_direct_launch(const ConvParams& p, void* stream) {
  const int64_t blocks = elementwise_blocks(p.problem.x_numel(), kDirectThreads, p.num_sms);
  return dispatch_dtype(p.dtype, [&]<typename T>() {
    dgrad_direct_kernel<T><<<blocks, kDirectThreads, 0, static_cast<cudaStream_t>(stream)>>>(p);
    return int(cudaGetLastError());
  });
}

}  // namespace rk
