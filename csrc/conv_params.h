// conv_params.h: the one parameter struct every kernel takes. Plain C++: no torch, no CUDA types.
#pragma once

#include <cstdint>

#include "conv_problem.h"

namespace rk {

// Strides are in elements and always listed in logical (N, C, H, W) / (K, Cg, R, S) /
// (N, K, P, Q) order, whatever the memory format, so one kernel reads NCHW, channels_last and
// strided views alike. Which tensor is read and which is written depends on the direction:
//   fprop: reads x, w (and bias), writes y
//   dgrad: reads y (= dy), w, writes x (= dx)
//   wgrad: reads x, y (= dy), writes w (= dw)
struct ConvParams {
  ConvProblem problem;
  Direction direction = Direction::kFprop;
  DType dtype = DType::kFloat32;

  void* x = nullptr;
  void* w = nullptr;
  void* y = nullptr;
  int64_t x_stride[4] = {0, 0, 0, 0};
  int64_t w_stride[4] = {0, 0, 0, 0};
  int64_t y_stride[4] = {0, 0, 0, 0};

  // fprop epilogue: y = relu?(conv(x, w) + bias). bias is [K] in `dtype`, or null.
  const void* bias = nullptr;
  bool relu = false;

  // fp32 inputs may use TF32 tensor cores when this is set (torch.backends.cudnn.allow_tf32).
  bool allow_tf32 = false;

  // wgrad: fp32 scratch for the split reduction, sized by the variant's workspace_elems().
  float* workspace = nullptr;

  // fprop_halo / dgrad_halo: the weight already in the order their CTAs pack it (halo_pack_launch,
  // halo_packed_words 32-bit words: slab after slab), which they then copy instead; or null.
  const void* packed = nullptr;

  // Number of streaming multiprocessors of the device, for split and wave sizing.
  int num_sms = 132;

  // The device's compute capability, major * 10 + minor (90: Hopper): from 90 on, thread-block
  // clusters (wgrad_halo reduces its splits in one).
  int sm_version = 90;
};

// Strides of a dense tensor of logical size (A, B, C, D): channels_last (B innermost) or
// contiguous.
inline void dense_strides(const int64_t size[4], bool channels_last, int64_t out[4]) {
  if (channels_last) {
    out[1] = 1; out[3] = size[1]; out[2] = size[1] * size[3]; out[0] = out[2] * size[2];
  } else {
    out[3] = 1; out[2] = size[3]; out[1] = size[2] * size[3]; out[0] = out[1] * size[1];
  }
}

// Problem `q` on dense tensors (x and y channels_last or contiguous, the weight contiguous) at
// a 16-byte-aligned address (can_implement's alignment checks look at the low bits): what the
// choice of a variant sees before the tensors exist (the model's launch shapes, pack_weight).
inline ConvParams dense_params(const ConvProblem& q, DType dtype, bool channels_last) {
  ConvParams p;
  p.problem = q;
  p.dtype = dtype;
  const int64_t x_size[4] = {q.N, q.C, q.H, q.W}, y_size[4] = {q.N, q.K, q.P, q.Q};
  const int64_t w_size[4] = {q.K, q.Cg(), q.R, q.S};
  dense_strides(x_size, channels_last, p.x_stride);
  dense_strides(y_size, channels_last, p.y_stride);
  dense_strides(w_size, false, p.w_stride);
  alignas(16) static char aligned[16];
  p.x = p.y = p.w = aligned;
  return p;
}

// True when the dimension with the given strides is the fastest-moving one, i.e. channels are
// innermost (channels_last). Kernels use it to map consecutive threads to consecutive addresses.
RK_HOST_DEVICE bool channels_innermost(const int64_t stride[4]) { return stride[1] == 1; }

// True when every pixel of a channels_last 16-bit tensor starts on a 16-byte boundary (aligned
// storage, and batch, row and pixel strides multiples of 8 elements): what 16-byte copies of
// 8 channels need (the halo rungs).
inline bool pixels_16_byte_aligned(const int64_t stride[4], const void* ptr) {
  return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && stride[0] % 8 == 0 && stride[2] % 8 == 0 &&
         stride[3] % 8 == 0;
}

// True when, with non-negative strides, every index below `size` along `dims` axes lies less
// than 2^31 elements from the first, `reach` elements included past the last: offsets then fit
// 32-bit arithmetic.
inline bool offsets_fit_int32(const int64_t* stride, const int64_t* size, int dims, double reach) {
  double extent = reach;
  for (int d = 0; d < dims; ++d) {
    if (stride[d] < 0) return false;
    extent += double(size[d] - 1) * double(stride[d]);
  }
  return extent < 2147483648.0;
}

// One image (rows h < H, columns w < W, channels c < C) within 2^31 elements of its first: the
// halo rungs' copy loops then address within an image in 32-bit arithmetic (an image that large
// is 46341^2 pixels of one channel).
inline bool image_offsets_fit_int32(const int64_t stride[4], int64_t C, int64_t H, int64_t W) {
  const int64_t size[3] = {C, H, W};
  return offsets_fit_int32(stride + 1, size, 3, 8.0);   // + a 16-byte copy's reach
}
// The same for two consecutive images (the halo rungs' paired tiles address both from the first).
inline bool pair_offsets_fit_int32(const int64_t stride[4], int64_t C, int64_t H, int64_t W) {
  const int64_t size[4] = {2, C, H, W};
  return offsets_fit_int32(stride, size, 4, 8.0);
}

}  // namespace rk
