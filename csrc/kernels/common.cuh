// common.cuh: small device helpers shared by the kernels (no torch).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>
#include <utility>

#include "../conv_params.h"

namespace rk {

template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Two floats rounded to nearest into one 32-bit word of two T, `lo` in the low half (the element
// at the lower address): one cvt ...x2.f32 instruction (sm_80 on). RELU: the conversion's own
// clamp (cvt's .relu: a negative result becomes 0, a NaN stays NaN as torch.relu keeps it), no
// instruction more.
template <typename T, bool RELU = false>
__device__ __forceinline__ uint32_t pack_float2(float lo, float hi) {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>, "a 16-bit type");
  uint32_t r;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if constexpr (RELU) asm("cvt.rn.relu.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    else asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  } else {
    if constexpr (RELU) asm("cvt.rn.relu.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    else asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  }
#else
  if constexpr (RELU) {   // as cvt's .relu: NaN kept, negatives to 0
    lo = lo < 0.f ? 0.f : lo;
    hi = hi < 0.f ? 0.f : hi;
  }
  const T l = from_float<T>(lo), h = from_float<T>(hi);
  r = uint32_t(*reinterpret_cast<const uint16_t*>(&l)) | (uint32_t(*reinterpret_cast<const uint16_t*>(&h)) << 16);
#endif
  return r;
}

// Splits a linear element index into logical (b, c, i, j) coordinates of a [B, Ch, I, J] tensor,
// channel-fastest when `channels_last` (so that neighbouring threads touch neighbouring
// addresses in a channels_last tensor), else j-fastest (NCHW).
struct Coord4 { int64_t b, c, i, j; };
__host__ __device__ __forceinline__ Coord4 unflatten(int64_t idx, int64_t Ch, int64_t I, int64_t J,
                                                     bool channels_last) {
  Coord4 o;
  if (channels_last) {
    o.c = idx % Ch; idx /= Ch;
    o.j = idx % J; idx /= J;
    o.i = idx % I; o.b = idx / I;
  } else {
    o.j = idx % J; idx /= J;
    o.i = idx % I; idx /= I;
    o.c = idx % Ch; o.b = idx / Ch;
  }
  return o;
}

__host__ __device__ __forceinline__ int64_t offset4(const int64_t s[4], int64_t a, int64_t b,
                                                    int64_t c, int64_t d) {
  return a * s[0] + b * s[1] + c * s[2] + d * s[3];
}

// Copies a rows x cols window of image n of a logically (N, C, H, W)-strided tensor into shared
// memory as fp32, [row][col][channel] with `pitch` floats per pixel: channels c0 .. c0 +
// channels - 1, top-left corner (h0, w0), zeros outside the H x W grid. Channel fastest across
// the block's threads, so a channels_last source is read in contiguous runs. The caller
// synchronises.
template <typename T>
__device__ void stage_window(float* dst, int64_t pitch, const T* __restrict__ src,
                             const int64_t stride[4], int64_t n, int64_t c0, int64_t channels,
                             int64_t h0, int64_t w0, int64_t rows, int64_t cols, int64_t H, int64_t W) {
  const int64_t elems = rows * cols * channels;
  for (int64_t i = threadIdx.x; i < elems; i += blockDim.x) {
    const int64_t c = i % channels, col = (i / channels) % cols, row = i / (channels * cols);
    const int64_t h = h0 + row, w = w0 + col;
    float v = 0.f;
    if (h >= 0 && h < H && w >= 0 && w < W) v = to_float(src[offset4(stride, n, c0 + c, h, w)]);
    dst[(row * cols + col) * pitch + c] = v;
  }
}

// Launches `kernel` with `smem` bytes of dynamic shared memory (opting in past 48 KB first);
// returns the cudaError_t of the launch as an int.
template <typename... Params, typename... Args>
int launch_with_smem(void (*kernel)(Params...), dim3 grid, int threads, int64_t smem,
                     cudaStream_t stream, Args&&... args) {
  const cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (err != cudaSuccess) return int(err);
  kernel<<<grid, threads, size_t(smem), stream>>>(args...);
  return int(cudaGetLastError());
}

// f(std::integral_constant<int, 0>{}), ..., f(std::integral_constant<int, N - 1>{}) in turn: a
// loop whose index is a compile-time constant in the body (for `if constexpr` and constant
// register-array indices).
template <int N, typename F> __device__ __forceinline__ void for_constexpr(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (f(std::integral_constant<int, I>{}), ...);
  }(std::make_integer_sequence<int, N>{});
}

// Calls `f.template operator()<T>()` with T the storage type of `dtype`.
template <typename F> int dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32: return f.template operator()<float>();
    case DType::kFloat16: return f.template operator()<__half>();
    default: return f.template operator()<__nv_bfloat16>();
  }
}


}  // namespace rk
