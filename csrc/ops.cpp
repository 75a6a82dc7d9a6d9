// ops.cpp: the op schemas (TORCH_LIBRARY) and their CPU implementations, which call ATen.
//
// Three ops, one per direction, all taking 4-D tensors (the Python API handles unbatched input):
//   fprop(input, weight, bias?, stride, padding, dilation, groups, relu, packed?) -> output
//   dgrad(grad_output, weight, input_size, stride, padding, dilation, groups, packed?) -> grad_input
//   wgrad(grad_output, input, weight_size, stride, padding, dilation, groups) -> grad_weight
// Output memory format: fprop follows the input, dgrad follows grad_output, wgrad is contiguous.
// And the weight packed for the CUDA halo rungs, which fprop and dgrad may then take as `packed`:
//   pack_weight(input, weight, stride, padding, dilation, groups, dgrad) -> packed
// (empty where no rung that reads it would run: always on the CPU, whose kernels are ATen's).
#include <ATen/core/Tensor.h>
#include <ATen/ops/conv_transpose2d.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/relu.h>
#include <torch/library.h>

#include "conv_problem.h"
#include "ops_common.h"
#include "selection.h"

namespace rk {

at::MemoryFormat memory_format_of(const at::Tensor& t) {
  return (!t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast))
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

ConvProblem check_problem(const at::Tensor& input, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                          at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(input.dim() == 4, "expected a 4-D input, but got input of size ", input.sizes());
  TORCH_CHECK(input.scalar_type() == weight.scalar_type(), "Input type (", input.scalar_type(),
              ") and weight type (", weight.scalar_type(), ") should be the same");
  TORCH_CHECK(input.device() == weight.device(), "Expected all tensors to be on the same device, ",
              "but found at least two devices, ", input.device(), " and ", weight.device(), "!");
  std::vector<int64_t> bias_sizes;
  if (bias) {
    TORCH_CHECK(bias->scalar_type() == input.scalar_type(), "Input type (", input.scalar_type(),
                ") and bias type (", bias->scalar_type(), ") should be the same");
    TORCH_CHECK(bias->device() == input.device(), "Expected all tensors to be on the same device, ",
                "but found at least two devices, ", input.device(), " and ", bias->device(), "!");
    bias_sizes = bias->sizes().vec();
  }
  ConvProblem p;
  const std::string err = make_problem(input.sizes().vec(), weight.sizes().vec(),
                                       bias ? &bias_sizes : nullptr, stride.vec(), padding.vec(),
                                       dilation.vec(), groups, &p);
  TORCH_CHECK(err.empty(), err);
  return p;
}

int64_t check_packed(const std::optional<at::Tensor>& packed, const at::Tensor& weight,
                     const ConvProblem& q, Direction direction) {
  if (!packed || packed->numel() == 0) return -1;
  const at::Tensor& b = *packed;
  TORCH_CHECK(b.device() == weight.device(), "Expected all tensors to be on the same device, ",
              "but found at least two devices, ", weight.device(), " and ", b.device(), "!");
  TORCH_CHECK(b.scalar_type() == weight.scalar_type(), "packed type (", b.scalar_type(),
              ") and weight type (", weight.scalar_type(), ") should be the same");
  TORCH_CHECK(b.dim() == 1 && b.is_contiguous() && reinterpret_cast<uintptr_t>(b.data_ptr()) % 16 == 0,
              "packed must be a contiguous, 16-byte aligned 1-D tensor as pack_weight makes it");
  const HaloPackPlan layout = halo_pack_layout(q, true);
  const int64_t fprop = 2 * layout.fprop_words, both = 2 * (layout.fprop_words + layout.dgrad_words);
  const bool dgrad = direction == Direction::kDgrad;
  TORCH_CHECK(fprop > 0 && (b.numel() == both || (!dgrad && b.numel() == fprop)),
              "packed has ", b.numel(), " elements, but pack_weight makes ",
              fprop == 0 ? std::string("none for this weight (an empty tensor)")
              : dgrad ? std::to_string(both) + " (with dgrad) for this weight and stride"
                      : std::to_string(fprop) + " or, with dgrad, " + std::to_string(both) +
                        " for this weight and stride");
  return dgrad ? layout.fprop_words : 0;
}

namespace {

at::Tensor fprop_cpu(const at::Tensor& input, const at::Tensor& weight,
                     const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                     at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool relu,
                     const std::optional<at::Tensor>& packed) {
  const ConvProblem q = check_problem(input, weight, bias, stride, padding, dilation, groups);
  check_packed(packed, weight, q, Direction::kFprop);   // checked, then unused: ATen runs
  at::Tensor y = at::convolution(input, weight, bias, stride, padding, dilation,
                                 /*transposed=*/false, /*output_padding=*/{0, 0}, groups);
  if (relu) y = at::relu(y);
  return y.contiguous(memory_format_of(input));
}

at::Tensor dgrad_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                     at::IntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                     at::IntArrayRef dilation, int64_t groups, const std::optional<at::Tensor>& packed) {
  const ConvProblem p = check_grad_problem(grad_output, weight.sizes(), input_size, stride,
                                           padding, dilation, groups);
  check_packed(packed, weight, p, Direction::kDgrad);
  // conv_transpose2d lands on the input size once the rows the forward pass never reached are
  // added back as output_padding.
  const int64_t oph = p.H - ((p.P - 1) * p.stride_h - 2 * p.pad_h + p.dil_h * (p.R - 1) + 1);
  const int64_t opw = p.W - ((p.Q - 1) * p.stride_w - 2 * p.pad_w + p.dil_w * (p.S - 1) + 1);
  at::Tensor dx = at::conv_transpose2d(grad_output, weight, /*bias=*/{}, stride, padding,
                                       {oph, opw}, groups, dilation);
  return dx.contiguous(memory_format_of(grad_output));
}

at::Tensor wgrad_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                     at::IntArrayRef weight_size, at::IntArrayRef stride, at::IntArrayRef padding,
                     at::IntArrayRef dilation, int64_t groups) {
  check_grad_problem(grad_output, weight_size, input.sizes(), stride, padding, dilation, groups);
  TORCH_CHECK(input.scalar_type() == grad_output.scalar_type(), "Input type (",
              input.scalar_type(), ") and grad_output type (", grad_output.scalar_type(),
              ") should be the same");
  // convolution_backward reads only the weight's sizes when it computes the weight gradient.
  const at::Tensor weight_proxy = at::empty(weight_size, input.options());
  auto grads = at::convolution_backward(grad_output, input, weight_proxy, /*bias_sizes=*/std::nullopt,
                                        stride, padding, dilation, /*transposed=*/false,
                                        /*output_padding=*/{0, 0}, groups, {false, true, false});
  return std::get<1>(grads).contiguous();
}

// No CPU kernel reads a packed weight: the arguments checked, an empty buffer.
at::Tensor pack_weight_cpu(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool /*dgrad*/) {
  check_problem(input, weight, std::nullopt, stride, padding, dilation, groups);
  return at::empty({0}, weight.options());
}

}  // namespace

ConvProblem check_grad_problem(const at::Tensor& grad_output, at::IntArrayRef weight_size,
                               at::IntArrayRef input_size, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(input_size.size() == 4, "expected input_size to have 4 values, but got ", input_size);
  ConvProblem p;
  const std::string err = make_problem(input_size.vec(), weight_size.vec(), nullptr, stride.vec(),
                                       padding.vec(), dilation.vec(), groups, &p);
  TORCH_CHECK(err.empty(), err);
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == p.N && grad_output.size(1) == p.K &&
                  grad_output.size(2) == p.P && grad_output.size(3) == p.Q,
              "expected grad_output of size [", p.N, ", ", p.K, ", ", p.P, ", ", p.Q,
              "], but got ", grad_output.sizes());
  return p;
}

}  // namespace rk

TORCH_LIBRARY(resnext_kernels, m) {
  m.def("fprop(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
        "int[2] dilation, int groups, bool relu=False, Tensor? packed=None) -> Tensor");
  m.def("dgrad(Tensor grad_output, Tensor weight, int[4] input_size, int[2] stride, "
        "int[2] padding, int[2] dilation, int groups, Tensor? packed=None) -> Tensor");
  m.def("pack_weight(Tensor input, Tensor weight, int[2] stride, int[2] padding, "
        "int[2] dilation, int groups, bool dgrad=True) -> Tensor");
  m.def("wgrad(Tensor grad_output, Tensor input, int[4] weight_size, int[2] stride, "
        "int[2] padding, int[2] dilation, int groups) -> Tensor");
}

TORCH_LIBRARY_IMPL(resnext_kernels, CPU, m) {
  m.impl("fprop", &rk::fprop_cpu);
  m.impl("dgrad", &rk::dgrad_cpu);
  m.impl("wgrad", &rk::wgrad_cpu);
  m.impl("pack_weight", &rk::pack_weight_cpu);
}
