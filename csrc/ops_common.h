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

// Checks `packed`, the halo rungs' pre-packed weight (pack_weight's buffer; absent or empty:
// none), against `weight` and the problem `q` (fprop's view: dgrad's problem is the same) with
// PyTorch's wording, before any launch. Returns the 32-bit word where the layout `direction`
// reads starts (fprop 0; dgrad after fprop's), or -1 for none.
int64_t check_packed(const std::optional<at::Tensor>& packed, const at::Tensor& weight,
                     const ConvProblem& q, Direction direction);

}  // namespace rk
