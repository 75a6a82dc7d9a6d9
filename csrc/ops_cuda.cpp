// ops_cuda.cpp: CUDA implementations of the ops: check, fill ConvParams, pick a variant from
// the registry, launch it on the current stream. The kernels never fall back to cuDNN: a
// problem no variant can run raises, and the Python layer decides about falling back.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>

#include "backend.h"
#include "kernels/kernels.h"
#include "ops_common.h"
#include "registry.h"
#include "selection.h"

namespace rk {

namespace {

DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat32;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default:
      TORCH_CHECK(false, "resnext_kernels CUDA kernels support float32, float16 and bfloat16, "
                         "but got ", t.scalar_type());
  }
}

void copy_strides(const at::Tensor& t, int64_t out[4]) {
  for (int i = 0; i < 4; ++i) out[i] = t.stride(i);
}

int sm_count(const at::Tensor& t) {
  int n = 0;
  cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, t.get_device());
  return n > 0 ? n : 1;
}

int sm_version(const at::Tensor& t) {
  int major = 0, minor = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, t.get_device());
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, t.get_device());
  return 10 * major + minor;
}

float time_variant(const KernelVariant* v, const ConvParams& p, cudaStream_t stream) {
  constexpr int kReps = 3;
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  v->launch(p, stream);  // warm-up
  cudaEventRecord(start, stream);
  for (int i = 0; i < kReps; ++i) v->launch(p, stream);
  cudaEventRecord(stop, stream);
  cudaEventSynchronize(stop);
  float ms = 0.f;
  cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms;
}

// Chooses a variant and launches it. `p` has every pointer but the workspace filled.
void run(ConvParams& p, const at::Tensor& like) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(like.get_device()).stream();
  std::string why;
  const KernelVariant* v = choose_without_timing(p, &why);
  TORCH_CHECK(v != nullptr, "resnext_kernels: no CUDA kernel can run this ", to_string(p.direction),
              " problem:\n", why);

  at::Tensor workspace;
  auto alloc_workspace = [&](const KernelVariant* var) {
    const int64_t elems = var->workspace_elems(p);
    if (elems > 0 && (!workspace.defined() || elems > workspace.numel()))
      workspace = at::empty({elems}, like.options().dtype(at::kFloat));
    p.workspace = elems ? workspace.data_ptr<float>() : nullptr;
  };

  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  cudaStreamIsCapturing(stream, &capture);
  if (autotune_enabled() && forced_variant(to_string(p.direction)).empty() &&
      capture == cudaStreamCaptureStatusNone) {
    const std::string key = shape_key(p);
    if (const KernelVariant* cached = cached_choice(key)) {
      v = cached;
    } else {
      float best = 0.f;
      v = nullptr;
      for (const KernelVariant* cand : eligible_variants(p)) {
        alloc_workspace(cand);
        const float ms = time_variant(cand, p, stream);
        if (v == nullptr || ms < best) best = ms, v = cand;
      }
      cache_choice(key, v);
    }
  }
  alloc_workspace(v);
  const int err = v->launch(p, stream);
  TORCH_CHECK(err == 0, "resnext_kernels: launch of ", v->name, " failed: ",
              cudaGetErrorString(static_cast<cudaError_t>(err)));
  record_last_variant(p.direction, v->name);
}

ConvParams base_params(const ConvProblem& problem, Direction d, const at::Tensor& like) {
  ConvParams p;
  p.problem = problem;
  p.direction = d;
  p.dtype = dtype_of(like);
  p.allow_tf32 = at::globalContext().allowTF32CuDNN();
  p.num_sms = sm_count(like);
  p.sm_version = sm_version(like);
  return p;
}

// The packed weight's layout for `direction`, if one was given (check_packed).
const void* packed_at(const std::optional<at::Tensor>& packed, int64_t word) {
  return word < 0 ? nullptr : static_cast<const uint32_t*>(packed->data_ptr()) + word;
}

at::Tensor fprop_cuda(const at::Tensor& input, const at::Tensor& weight,
                      const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                      at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool relu,
                      const std::optional<at::Tensor>& packed) {
  const ConvProblem problem = check_problem(input, weight, bias, stride, padding, dilation, groups);
  const int64_t packed_word = check_packed(packed, weight, problem, Direction::kFprop);
  const c10::cuda::CUDAGuard guard(input.device());
  at::Tensor y = at::empty({problem.N, problem.K, problem.P, problem.Q}, input.options(),
                           memory_format_of(input));
  if (y.numel() == 0) return y;
  ConvParams p = base_params(problem, Direction::kFprop, input);
  p.x = const_cast<void*>(input.data_ptr());
  p.w = const_cast<void*>(weight.data_ptr());
  p.y = y.data_ptr();
  p.bias = bias ? bias->data_ptr() : nullptr;
  p.relu = relu;
  p.packed = packed_at(packed, packed_word);
  copy_strides(input, p.x_stride);
  copy_strides(weight, p.w_stride);
  copy_strides(y, p.y_stride);
  run(p, input);
  return y;
}

at::Tensor dgrad_cuda(const at::Tensor& grad_output, const at::Tensor& weight,
                      at::IntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                      at::IntArrayRef dilation, int64_t groups, const std::optional<at::Tensor>& packed) {
  const ConvProblem problem =
      check_grad_problem(grad_output, weight.sizes(), input_size, stride, padding, dilation, groups);
  TORCH_CHECK(grad_output.scalar_type() == weight.scalar_type(), "grad_output type (",
              grad_output.scalar_type(), ") and weight type (", weight.scalar_type(),
              ") should be the same");
  const int64_t packed_word = check_packed(packed, weight, problem, Direction::kDgrad);
  const c10::cuda::CUDAGuard guard(grad_output.device());
  at::Tensor dx = at::empty(input_size, grad_output.options(), memory_format_of(grad_output));
  if (dx.numel() == 0) return dx;
  ConvParams p = base_params(problem, Direction::kDgrad, grad_output);
  p.x = dx.data_ptr();
  p.w = const_cast<void*>(weight.data_ptr());
  p.y = const_cast<void*>(grad_output.data_ptr());
  p.packed = packed_at(packed, packed_word);
  copy_strides(dx, p.x_stride);
  copy_strides(weight, p.w_stride);
  copy_strides(grad_output, p.y_stride);
  run(p, grad_output);
  return dx;
}

at::Tensor wgrad_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                      at::IntArrayRef weight_size, at::IntArrayRef stride, at::IntArrayRef padding,
                      at::IntArrayRef dilation, int64_t groups) {
  const ConvProblem problem =
      check_grad_problem(grad_output, weight_size, input.sizes(), stride, padding, dilation, groups);
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(), "Input type (",
              input.scalar_type(), ") and grad_output type (", grad_output.scalar_type(),
              ") should be the same");
  const c10::cuda::CUDAGuard guard(input.device());
  at::Tensor dw = at::empty(weight_size, input.options());
  if (dw.numel() == 0) return dw;
  if (problem.N == 0) return dw.zero_();
  ConvParams p = base_params(problem, Direction::kWgrad, input);
  p.x = const_cast<void*>(input.data_ptr());
  p.w = dw.data_ptr();
  p.y = const_cast<void*>(grad_output.data_ptr());
  copy_strides(input, p.x_stride);
  copy_strides(dw, p.w_stride);
  copy_strides(grad_output, p.y_stride);
  run(p, input);
  return dw;
}

// The weight packed for fprop_halo (and, with `dgrad`, for dgrad_halo after it) when the
// variant chosen for the forward problem (or for dgrad's) is one of them; else an empty tensor,
// and no launch. The choice is made from the sizes, dtype and memory format (dense_params: x
// and dx like the input, y and dy like the output), as the fake op (_C.pack_weight_plan) makes
// it, so that both agree on the buffer's size; and from the weight's own strides (they differ
// only for a weight spanning 2^31 elements, which no halo rung packs).
at::Tensor pack_weight_cuda(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool dgrad) {
  const ConvProblem q = check_problem(input, weight, std::nullopt, stride, padding, dilation, groups);
  const c10::cuda::CUDAGuard guard(input.device());
  ConvParams p = dense_params(q, dtype_of(input), memory_format_of(input) == at::MemoryFormat::ChannelsLast);
  copy_strides(weight, p.w_stride);   // the weight itself: the packing's 32-bit offsets must fit it
  const HaloPackPlan plan = halo_pack_plan(p, dgrad);
  if (!plan.used) return at::empty({0}, weight.options());
  at::Tensor out = at::empty({2 * (plan.fprop_words + plan.dgrad_words)}, weight.options());
  p.w = const_cast<void*>(weight.data_ptr());
  const int err = halo_pack_launch(p, plan.dgrad_mode, out.data_ptr(),
                                   c10::cuda::getCurrentCUDAStream(input.get_device()).stream());
  TORCH_CHECK(err == 0, "resnext_kernels: launch of the halo weight packing failed: ",
              cudaGetErrorString(static_cast<cudaError_t>(err)));
  return out;
}

}  // namespace

}  // namespace rk

TORCH_LIBRARY_IMPL(resnext_kernels, CUDA, m) {
  m.impl("fprop", &rk::fprop_cuda);
  m.impl("dgrad", &rk::dgrad_cuda);
  m.impl("wgrad", &rk::wgrad_cuda);
  m.impl("pack_weight", &rk::pack_weight_cuda);
}
