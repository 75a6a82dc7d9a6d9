// ops_common.h: argument checks shared by the CPU and CUDA implementations of the ops.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "conv_problem.h"

namespace rk {

// Output memory format of an op: channels_last when `t` is channels_last and not also
// contiguous (a tensor with C = 1 or H = W = 1 is both; then contiguous wins, as in ATen).
at::MemoryFormat memory_format_of(const at::Tensor& t);

// Checks the fprop arguments with PyTorch's wording and returns the problem sizes.
ConvProblem check_problem(const at::Tensor& input, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                          at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);

// Checks the arguments of dgrad / wgrad, where one of the two operands is given by its size.
ConvProblem check_grad_problem(const at::Tensor& grad_output, at::IntArrayRef weight_size,
                               at::IntArrayRef input_size, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);

}  // namespace rk
