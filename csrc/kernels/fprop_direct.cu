// fprop_direct.cu: rung 1 of fprop, the correctness baseline.
//
//   y[n, k, p, q] = act( bias[k] + sum_{c < Cg, r < 3, s < 3}
//                          x[n, g*Cg + c, p*sh - ph + r*dh, q*sw - pw + s*dw] * w[k, c, r, s] ),
//   g = k / Kg.
//
// One thread per output element, fp32 accumulation, every operand read through L1/L2. The
// thread order follows the output's memory order (channel-fastest for channels_last) so that
// stores are coalesced. Simple on purpose: it is the reference the faster rungs are checked
// against on the GPU, and it serves shapes nothing else claims.
#include <algorithm>

#include "common.cuh"
#include "kernels.h"
#include "../registry.h"

namespace rk {

template <typename T>
__global__ void __launch_bounds__(kDirectThreads)
fprop_direct_kernel(ConvParams p) {
  const ConvProblem& q = p.problem;
  const int64_t total = q.y_numel();
  const bool cl = channels_innermost(p.y_stride);
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ w = static_cast<const T*>(p.w);
  const T* __restrict__ bias = static_cast<const T*>(p.bias);
  T* __restrict__ y = static_cast<T*>(p.y);
  const int64_t Cg = q.Cg(), Kg = q.Kg();
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const Coord4 o = unflatten(idx, q.K, q.P, q.Q, cl);  // (n, k, p, q)
    const int64_t c0 = (o.c / Kg) * Cg;
    float acc = 0.f;
    for (int r = 0; r < 3; ++r) {
      const int64_t h = fprop_input_index(o.i, r, q.stride_h, q.pad_h, q.dil_h);
      if (h < 0 || h >= q.H) continue;
      for (int s = 0; s < 3; ++s) {
        const int64_t wi = fprop_input_index(o.j, s, q.stride_w, q.pad_w, q.dil_w);
        if (wi < 0 || wi >= q.W) continue;
        for (int64_t c = 0; c < Cg; ++c) {
          acc += to_float(x[offset4(p.x_stride, o.b, c0 + c, h, wi)]) *
                 to_float(w[offset4(p.w_stride, o.c, c, r, s)]);
        }
      }
    }
    if (bias) acc += to_float(bias[o.c]);
    if (p.relu) acc = fmaxf(acc, 0.f);
    y[offset4(p.y_stride, o.b, o.c, o.i, o.j)] = from_float<T>(acc);
  }
}

std::string fprop_direct_can_implement(const ConvParams& p) {
  if (p.direction != Direction::kFprop) return "not an fprop problem";
  return check_common(p);
}

int fprop_direct_launch(const ConvParams& p, void* stream) {
  const int64_t blocks = elementwise_blocks(p.problem.y_numel(), kDirectThreads, p.num_sms);
  return dispatch_dtype(p.dtype, [&]<typename T>() {
    fprop_direct_kernel<T><<<blocks, kDirectThreads, 0, static_cast<cudaStream_t>(stream)>>>(p);
    return int(cudaGetLastError());
  });
}

}  // namespace rk
