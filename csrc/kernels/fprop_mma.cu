// fprop_mma.cu: rung 3 of fprop, a tensor-core implicit GEMM (mma.sync.m16n8k16, fp16/bf16
// inputs, fp32 accumulation) for channels_last inputs with Cg from 8 to 64.
//
// Per group g the convolution is a GEMM: M = N*P*Q output pixels, N = Kg output channels,
// K = 9 taps x Cg input channels. A thread block computes kMmaBlockM = 128 pixels by up to
// kMmaBlockN = 64 output channels of one group:
//   1. the block's weights, [tap][n][c] with c padded to a multiple of 16 (zeros), go to shared
//      memory once (at most 9 x 64 x 64 halves = 72 KB);
//   2. each warp owns 32 pixels (two m16 tiles) and all eight n8 tiles; for each tap and each
//      16 input channels it loads its A fragments straight from global memory (channels_last:
//      a pixel's channels are contiguous, so a fragment register is one 32-bit load of two
//      channels; the 9 taps re-read neighbouring pixels through L1) and its B fragments from
//      shared memory, and issues 16 mma.sync;
//   3. the epilogue adds the bias, applies the ReLU and stores in the output's layout.
// Fragment layouts and index maps are in mma_fragments.h, where the C++ unit tests emulate a
// warp with them. fp32 runs on CUDA cores (rungs 1 and 2).
#include <algorithm>

#include "common.cuh"
#include "kernels.h"
#include "mma_fragments.h"
#include "../registry.h"

namespace rk {

namespace {

template <typename T> struct MmaOp;

template <> struct MmaOp<__nv_bfloat16> {
  static __device__ __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
  }
};

template <> struct MmaOp<__half> {
  static __device__ __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
  }
};

// Two adjacent 16-bit values as one 32-bit register (the address is 4-byte aligned: checked by
// fprop_mma_can_implement).
template <typename T> __device__ __forceinline__ uint32_t load_pair(const T* ptr) {
  return __ldg(reinterpret_cast<const unsigned int*>(ptr));
}

template <typename T>
__global__ void __launch_bounds__(kMmaThreads)
fprop_mma_kernel(ConvParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sw = reinterpret_cast<T*>(smem_raw);
  const ConvProblem& q = p.problem;
  const int64_t Cg = q.Cg(), Kg = q.Kg(), cg_pad = mma_cg_pad(Cg);
  const int64_t n_blocks = ceil_div(Kg, int64_t(kMmaBlockN));
  const int64_t g = blockIdx.y / n_blocks;
  const int64_t k_first = g * Kg + (blockIdx.y % n_blocks) * kMmaBlockN;  // block's first k
  const int64_t n_left = (g + 1) * Kg - k_first;
  const int64_t n_valid = n_left < kMmaBlockN ? n_left : kMmaBlockN;
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ w = static_cast<const T*>(p.w);

  // 1. The block's weights into shared memory, [tap][n][c], zero-padded.
  const int64_t w_elems = 9 * int64_t(kMmaBlockN) * cg_pad;
  for (int64_t i = threadIdx.x; i < w_elems; i += kMmaThreads) {
    const int64_t c = i % cg_pad, n = (i / cg_pad) % kMmaBlockN;
    const int tap = int(i / (cg_pad * kMmaBlockN));
    float v = 0.f;
    if (n < n_valid && c < Cg) v = to_float(w[offset4(p.w_stride, k_first + n, c, tap / 3, tap % 3)]);
    sw[mma_weight_index(tap, int(n), c, cg_pad)] = from_float<T>(v);
  }
  __syncthreads();

  // 2. The warp's 32 pixels: this lane's rows are group and group + 8 of each m16 tile.
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t m_warp = int64_t(blockIdx.x) * kMmaBlockM + warp * kMmaWarpM;
  MmaRow rows[kMmaTilesM][2];
#pragma unroll
  for (int t = 0; t < kMmaTilesM; ++t)
#pragma unroll
    for (int h = 0; h < 2; ++h) rows[t][h] = mma_row(q, m_warp + t * kMmaM + mma_a_coord(lane, h).row);

  float acc[kMmaTilesM][kMmaTilesN][4] = {};
  for (int tap = 0; tap < 9; ++tap) {
    int64_t off[kMmaTilesM][2];
#pragma unroll
    for (int t = 0; t < kMmaTilesM; ++t)
#pragma unroll
      for (int h = 0; h < 2; ++h) off[t][h] = mma_tap_offset(q, p.x_stride, rows[t][h], g, tap / 3, tap % 3);
    for (int64_t c0 = 0; c0 < cg_pad; c0 += kMmaK) {
      uint32_t a[kMmaTilesM][4];
#pragma unroll
      for (int t = 0; t < kMmaTilesM; ++t)
#pragma unroll
        for (int reg = 0; reg < 4; ++reg) {
          const FragCoord fc = mma_a_coord(lane, reg);
          const int64_t c = c0 + fc.col, o = off[t][reg % 2];
          a[t][reg] = (o >= 0 && c < Cg) ? load_pair(x + o + c) : 0u;  // Cg is even
        }
#pragma unroll
      for (int nt = 0; nt < kMmaTilesN; ++nt) {
        const FragCoord b0 = mma_b_coord(lane, 0), b1 = mma_b_coord(lane, 1);
        const int n = nt * kMmaN + b0.col;
        const uint32_t r0 = *reinterpret_cast<const uint32_t*>(sw + mma_weight_index(tap, n, c0 + b0.row, cg_pad));
        const uint32_t r1 = *reinterpret_cast<const uint32_t*>(sw + mma_weight_index(tap, n, c0 + b1.row, cg_pad));
#pragma unroll
        for (int t = 0; t < kMmaTilesM; ++t) MmaOp<T>::run(acc[t][nt], a[t], r0, r1);
      }
    }
  }

  // 3. Epilogue: bias, ReLU, store in the output's layout.
  T* __restrict__ y = static_cast<T*>(p.y);
  const T* __restrict__ bias = static_cast<const T*>(p.bias);
#pragma unroll
  for (int t = 0; t < kMmaTilesM; ++t)
#pragma unroll
    for (int nt = 0; nt < kMmaTilesN; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const FragCoord fc = mma_c_coord(lane, i);
        const MmaRow& row = rows[t][i / 2];
        const int64_t col = nt * kMmaN + fc.col;
        if (!row.ok || col >= n_valid) continue;
        const int64_t k = k_first + col;
        float v = acc[t][nt][i];
        if (bias) v += to_float(bias[k]);
        if (p.relu) v = fmaxf(v, 0.f);
        y[offset4(p.y_stride, row.n, k, row.p, row.q)] = from_float<T>(v);
      }
}

}  // namespace

std::string fprop_mma_can_implement(const ConvParams& p) {
  if (p.direction != Direction::kFprop) return "not an fprop problem";
  const std::string common = check_common(p);
  if (!common.empty()) return common;
  const ConvProblem& q = p.problem;
  if (p.dtype == DType::kFloat32) return "fp32 runs on CUDA cores (fprop_direct, fprop_smem)";
  if (q.Cg() < 8) return "Cg < 8: too narrow for the 16-wide reduction step (fprop_smem packs groups)";
  if (q.Cg() % 2 != 0) return "odd Cg: the tensor-core loads read channel pairs";
  if (q.Cg() > kMmaMaxCg) return "Cg > 64: the block's weights would not fit in shared memory";
  if (!channels_innermost(p.x_stride)) return "input is not channels_last";
  if (reinterpret_cast<uintptr_t>(p.x) % 4 != 0 || p.x_stride[0] % 2 != 0 ||
      p.x_stride[2] % 2 != 0 || p.x_stride[3] % 2 != 0)
    return "input channel pairs are not 4-byte aligned";
  if (q.G * ceil_div(q.Kg(), int64_t(kMmaBlockN)) > 65535) return "more than 65535 group blocks";
  if (ceil_div(q.N * q.P * q.Q, int64_t(kMmaBlockM)) > 0x7fffffff) return "too many pixel blocks";
  return "";
}

int fprop_mma_launch(const ConvParams& p, void* stream) {
  const ConvProblem& q = p.problem;
  const dim3 grid(unsigned(ceil_div(q.N * q.P * q.Q, int64_t(kMmaBlockM))),
                  unsigned(q.G * ceil_div(q.Kg(), int64_t(kMmaBlockN))));
  const int64_t smem = mma_smem_bytes(q.Cg(), 2);
  auto launch = [&](auto kernel) {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (err != cudaSuccess) return int(err);
    kernel<<<grid, kMmaThreads, size_t(smem), static_cast<cudaStream_t>(stream)>>>(p);
    return int(cudaGetLastError());
  };
  if (p.dtype == DType::kFloat16) return launch(fprop_mma_kernel<__half>);
  if (p.dtype == DType::kBFloat16) return launch(fprop_mma_kernel<__nv_bfloat16>);
  return int(cudaErrorInvalidValue);  // fp32 is refused by can_implement
}

}  // namespace rk
