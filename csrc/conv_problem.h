// conv_problem.h: the grouped 3x3 convolution problem, with no torch and no CUDA runtime.
//
// Vocabulary (CUTLASS-style, see DESIGN.md):
//   input  x[N, C, H, W]     weight w[K, Cg, R, S]     output y[N, K, P, Q]
//   G groups, Cg = C / G input channels per group, Kg = K / G output channels per group.
//   P = (H + 2*pad_h - dil_h*(R-1) - 1) / stride_h + 1, likewise Q.
//
// Everything in this header is plain host code (plus a few __host__ __device__ index helpers)
// so that the torch-free C++ test target can check it on a machine without a GPU. The torch
// bindings and the Python package both validate through `validate()` below, so there is one
// source for every error message; the messages copy PyTorch's wording where PyTorch has one.
#pragma once

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#if defined(__CUDACC__)
#define RK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define RK_HOST_DEVICE inline
#endif

namespace rk {

enum class Direction { kFprop = 0, kDgrad = 1, kWgrad = 2 };
enum class DType { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

inline const char* to_string(Direction d) {
  switch (d) {
    case Direction::kFprop: return "fprop";
    case Direction::kDgrad: return "dgrad";
    default: return "wgrad";
  }
}

inline const char* to_string(DType t) {
  switch (t) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    default: return "bfloat16";
  }
}

RK_HOST_DEVICE int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Consecutive groups a block packs so that about `width` channels fit on the wider of the
// reduction and output sides (at least one group, at most all of them).
RK_HOST_DEVICE int64_t groups_per_pack(int64_t red, int64_t out, int64_t groups, int64_t width) {
  const int64_t widest = red > out ? red : out;
  const int64_t gp = widest >= width ? 1 : width / (widest > 0 ? widest : 1);
  return gp < groups ? gp : groups;
}

// Groups present in pack `pack` of `gp` groups each (the last pack may be partial).
RK_HOST_DEVICE int64_t groups_in_pack(int64_t groups, int64_t gp, int64_t pack) {
  const int64_t left = groups - pack * gp;
  return left < gp ? left : gp;
}

// Output extent of one spatial dimension; may be <= 0 when the kernel does not fit.
RK_HOST_DEVICE int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                                     int64_t dil) {
  return (in + 2 * pad - dil * (kernel - 1) - 1) / stride + 1;
}

// Input row touched by output row `p` at tap `r` (may be out of range: that tap reads padding).
RK_HOST_DEVICE int64_t fprop_input_index(int64_t p, int64_t r, int64_t stride, int64_t pad,
                                         int64_t dil) {
  return p * stride - pad + r * dil;
}

// dgrad: the output row that input row `h` receives from tap `r`, or -1 when no output row
// maps onto `h` through that tap (stride does not divide the offset, or it falls off the edge).
RK_HOST_DEVICE int64_t dgrad_output_index(int64_t h, int64_t r, int64_t stride, int64_t pad,
                                          int64_t dil, int64_t P) {
  const int64_t t = h + pad - r * dil;
  if (t < 0 || t % stride != 0) return -1;
  const int64_t p = t / stride;
  return p < P ? p : -1;
}

// The sizes of one problem. Built from the tensor sizes by `make_problem`, then `validate`d.
struct ConvProblem {
  int64_t N = 0, C = 0, H = 0, W = 0;  // input
  int64_t K = 0, R = 3, S = 3;         // weight [K, Cg, R, S]
  int64_t P = 0, Q = 0;                // output
  int64_t G = 1;                       // groups
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dil_h = 1, dil_w = 1;

  RK_HOST_DEVICE int64_t Cg() const { return G > 0 ? C / G : 0; }
  RK_HOST_DEVICE int64_t Kg() const { return G > 0 ? K / G : 0; }
  RK_HOST_DEVICE int64_t x_numel() const { return N * C * H * W; }
  RK_HOST_DEVICE int64_t y_numel() const { return N * K * P * Q; }
  RK_HOST_DEVICE int64_t w_numel() const { return K * Cg() * R * S; }
  // 2 * N*P*Q * K*Cg*R*S: the same in every direction.
  double flops() const { return 2.0 * double(N * P * Q) * double(K * Cg() * R * S); }
};

inline std::string format_sizes(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

// Checks the sizes and arguments of a 2-D convolution the way `torch.nn.functional.conv2d`
// does, and fills `out` on success. Returns "" when valid, else the error message.
// `input` may be 3-D (unbatched) or 4-D; `bias` is empty when there is no bias.
inline std::string make_problem(const std::vector<int64_t>& input, const std::vector<int64_t>& weight,
                                const std::vector<int64_t>* bias, const std::vector<int64_t>& stride,
                                const std::vector<int64_t>& padding,
                                const std::vector<int64_t>& dilation, int64_t groups,
                                ConvProblem* out) {
  std::ostringstream os;
  if (input.size() != 3 && input.size() != 4) {
    os << "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: "
       << format_sizes(input);
    return os.str();
  }
  if (weight.size() != 4) {
    os << "expected weight to be 4-dimensional ([out_channels, in_channels/groups, kH, kW]), "
          "but got weight of size "
       << format_sizes(weight) << " instead";
    return os.str();
  }
  for (const auto* v : {&stride, &padding, &dilation}) {
    if (v->size() != 2) {
      const char* name = v == &stride ? "stride" : v == &padding ? "padding" : "dilation";
      os << "expected " << name << " to have 2 values, but got " << format_sizes(*v);
      return os.str();
    }
  }
  if (groups <= 0) return "non-positive groups is not supported";
  for (int64_t s : stride)
    if (s <= 0) return "non-positive stride is not supported";
  for (int64_t d : dilation)
    if (d <= 0) return "non-positive dilation is not supported";
  for (int64_t p : padding)
    if (p < 0) return "negative padding is not supported";

  const bool batched = input.size() == 4;
  std::vector<int64_t> x4 = batched ? input : std::vector<int64_t>{1, input[0], input[1], input[2]};
  if (weight[0] % groups != 0) {
    os << "Given groups=" << groups << ", expected weight to be divisible by " << groups
       << " at dimension 0, but got weight of size " << format_sizes(weight) << " instead";
    return os.str();
  }
  if (x4[1] != weight[1] * groups) {
    os << "Given groups=" << groups << ", weight of size " << format_sizes(weight)
       << ", expected input" << format_sizes(input) << " to have " << weight[1] * groups
       << " channels, but got " << x4[1] << " channels instead";
    return os.str();
  }
  if (bias != nullptr && (bias->size() != 1 || (*bias)[0] != weight[0])) {
    os << "Given weight of size " << format_sizes(weight)
       << ", expected bias to be 1-dimensional with " << weight[0]
       << " elements, but got bias of size " << format_sizes(*bias) << " instead";
    return os.str();
  }
  const int64_t padded_h = x4[2] + 2 * padding[0], padded_w = x4[3] + 2 * padding[1];
  const int64_t eff_r = dilation[0] * (weight[2] - 1) + 1, eff_s = dilation[1] * (weight[3] - 1) + 1;
  if (padded_h < eff_r || padded_w < eff_s) {
    os << "Calculated padded input size per channel: (" << padded_h << " x " << padded_w
       << "). Kernel size: (" << eff_r << " x " << eff_s
       << "). Kernel size can't be greater than actual input size";
    return os.str();
  }
  ConvProblem p;
  p.N = x4[0]; p.C = x4[1]; p.H = x4[2]; p.W = x4[3];
  p.K = weight[0]; p.R = weight[2]; p.S = weight[3];
  p.G = groups;
  p.stride_h = stride[0]; p.stride_w = stride[1];
  p.pad_h = padding[0]; p.pad_w = padding[1];
  p.dil_h = dilation[0]; p.dil_w = dilation[1];
  p.P = conv_out_size(p.H, p.R, p.stride_h, p.pad_h, p.dil_h);
  p.Q = conv_out_size(p.W, p.S, p.stride_w, p.pad_w, p.dil_w);
  if (out) *out = p;
  return "";
}

}  // namespace rk
