"""The grouped-convolution ops, registered with torch.library.

Two families of three ops, one op per direction:

    resnext_kernels::fprop / dgrad / wgrad                  schemas in C++ (csrc/ops.cpp);
        CPU: ATen's convolution, CUDA: the hand-written kernels of csrc/.
    resnext_kernels::fprop_triton / dgrad_triton / wgrad_triton   triton_op, defined here;
        the Triton kernels of resnext_kernels/triton/ (on CPU tensors only in the interpreter),
        and pack_weight_triton, the block-diagonal weights fprop_triton and dgrad_triton read.

A dispatch key holds one kernel per op, so the backend is chosen above the dispatcher by picking
the family (functional.py). Both families get the same autograd formulas and fake (meta)
implementations from this file:

    fprop backward:  dx = dgrad(dy, w),  dw = wgrad(dy, x),  db = sum(dy)
    dgrad backward:  d(dy) = fprop(g, w),  dw = wgrad(dy, g)          (dgrad is bilinear)
    wgrad backward:  d(dy) = fprop(x, g),  dx = dgrad(dy, g)          (so is wgrad)

Each saves only the tensors its `ctx.needs_input_grad` calls for. Both families have a `pack`
op and take its buffer, the packed weight, as an optional last argument of fprop and dgrad: a
forward pass that will need dx packs for both directions in one launch (functional.py) and its
backward hands the saved buffer to dgrad, which then launches no packing kernel. The buffer is
derived from the weight as it was in the forward pass, which is the weight dgrad must use.
Triton's kernels always read a packed weight (fprop and dgrad pack it themselves without one);
the CUDA halo rungs read one when given it (else each CTA packs its slabs), and the native
`pack_weight` makes it only where the problem's chosen variant is a halo rung (an empty buffer,
and no launch, otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

import torch
from torch import Tensor

from . import _native
from .triton import common as triton_common
from .triton.common import conv_output_hw
from .triton.dgrad import dgrad as _triton_dgrad
from .triton.fprop import fprop as _triton_fprop
from .triton.fprop import pack_holds_dgrad as _triton_pack_holds_dgrad
from .triton.fprop import pack_weight as _triton_pack_weight
from .triton.wgrad import wgrad as _triton_wgrad


@dataclass(frozen=True)
class OpFamily:
    """The three direction ops of one backend."""

    name: str
    fprop: Callable
    dgrad: Callable
    wgrad: Callable
    pack: Optional[Callable] = None   # the packing op (packed_weight calls it)
    pack_holds_dgrad: Optional[Callable] = None  # (buffer, input, weight, stride, padding,
                                                 # dilation, groups) -> whether it has dgrad's
                                                 # layout
    pack_reads_problem: bool = False  # pack takes (input, weight, stride, padding, dilation,
                                      # groups, dgrad), else (weight, groups, dgrad)

    def packed_weight(self, input: Tensor, weight: Tensor, stride, padding, dilation,
                      groups: int, dgrad: bool = True) -> Tensor:
        """The buffer fprop (and, packed with dgrad, dgrad) may take for this call's weight."""
        if self.pack_reads_problem:
            return self.pack(input, weight, stride, padding, dilation, groups, dgrad)
        return self.pack(weight, groups, dgrad=dgrad)


# ---------------------------------------------------------------------------------------------
# Fake implementations: shapes and memory formats only, for torch.compile and meta tensors.
def _fake_fprop(input, weight, bias, stride, padding, dilation, groups, relu=False, packed=None):
    p, q = conv_output_hw(input.shape[2], input.shape[3], stride, padding, dilation,
                          tuple(weight.shape[2:]))
    return input.new_empty((input.shape[0], weight.shape[0], p, q)).contiguous(
        memory_format=triton_common.memory_format_of(input))


def _fake_dgrad(grad_output, weight, input_size, stride, padding, dilation, groups, packed=None):
    return grad_output.new_empty(tuple(input_size)).contiguous(
        memory_format=triton_common.memory_format_of(grad_output))


def _fake_wgrad(grad_output, input, weight_size, stride, padding, dilation, groups):
    return input.new_empty(tuple(weight_size))


# ---------------------------------------------------------------------------------------------
# Autograd, shared by both families.
def _register_autograd(family: OpFamily) -> None:
    def fprop_setup(ctx, inputs, output):
        x, w, bias, stride, padding, dilation, groups, relu, *packed = inputs
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        ctx.conv = (list(stride), list(padding), list(dilation), groups)
        ctx.x_shape, ctx.w_shape = list(x.shape), list(w.shape)
        ctx.relu, ctx.inputs = relu, len(inputs)
        # Kept for dgrad when it holds dgrad's layout (else dgrad packs for itself).
        packed = packed[0] if packed and need_x else None
        if packed is not None and not family.pack_holds_dgrad(packed, x, w, stride, padding,
                                                              dilation, groups):
            packed = None
        ctx.save_for_backward(x if need_w else None, w if need_x else None,
                              output if relu else None, packed)

    def fprop_backward(ctx, grad):
        x, w, out, packed = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if ctx.relu:
            grad = grad * (out > 0)
        packed_arg = () if packed is None else (packed,)
        dx = family.dgrad(grad, w, ctx.x_shape, *ctx.conv, *packed_arg) if need_x else None
        dw = family.wgrad(grad, x, ctx.w_shape, *ctx.conv) if need_w else None
        db = grad.sum((0, 2, 3)) if need_b else None
        return (dx, dw, db) + (None,) * (ctx.inputs - 3)

    def dgrad_setup(ctx, inputs, output):
        dy, w, input_size, stride, padding, dilation, groups = inputs[:7]
        need_dy, need_w = ctx.needs_input_grad[:2]
        ctx.conv = (list(stride), list(padding), list(dilation), groups)
        ctx.w_shape, ctx.inputs = list(w.shape), len(inputs)
        ctx.save_for_backward(dy if need_w else None, w if need_dy else None)

    def dgrad_backward(ctx, grad):
        dy, w = ctx.saved_tensors
        need_dy, need_w = ctx.needs_input_grad[:2]
        g_dy = family.fprop(grad, w, None, *ctx.conv) if need_dy else None
        g_w = family.wgrad(dy, grad, ctx.w_shape, *ctx.conv) if need_w else None
        return (g_dy, g_w) + (None,) * (ctx.inputs - 2)

    def wgrad_setup(ctx, inputs, output):
        dy, x, weight_size, stride, padding, dilation, groups = inputs
        need_dy, need_x = ctx.needs_input_grad[:2]
        ctx.conv = (list(stride), list(padding), list(dilation), groups)
        ctx.x_shape = list(x.shape)
        ctx.save_for_backward(dy if need_x else None, x if need_dy else None)

    def wgrad_backward(ctx, grad):
        dy, x = ctx.saved_tensors
        need_dy, need_x = ctx.needs_input_grad[:2]
        g_dy = family.fprop(x, grad, None, *ctx.conv) if need_dy else None
        g_x = family.dgrad(dy, grad, ctx.x_shape, *ctx.conv) if need_x else None
        return g_dy, g_x, None, None, None, None, None

    torch.library.register_autograd(family.fprop, fprop_backward, setup_context=fprop_setup)
    torch.library.register_autograd(family.dgrad, dgrad_backward, setup_context=dgrad_setup)
    torch.library.register_autograd(family.wgrad, wgrad_backward, setup_context=wgrad_setup)


# ---------------------------------------------------------------------------------------------
# The native family (schemas and CPU/CUDA kernels in C++).
_PLAN_DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16"}   # others: fp32 (no halo rung)


def _native_pack_plan(input: Tensor, weight: Tensor, stride, padding, dilation, groups: int,
                      dgrad: bool):
    """(fprop's elements, the buffer's, whether it is made) of the native pack_weight's buffer,
    as the CUDA op decides it (csrc/selection.cpp, halo_pack_plan)."""
    channels_last = triton_common.memory_format_of(input) == torch.channels_last
    return _native._C.pack_weight_plan(list(input.shape), list(weight.shape), list(stride),
                                       list(padding), list(dilation), groups,
                                       _PLAN_DTYPES.get(weight.dtype, "fp32"), channels_last, dgrad)


def _fake_native_pack(input, weight, stride, padding, dilation, groups, dgrad=True):
    _, total, made = _native_pack_plan(input, weight, stride, padding, dilation, groups, dgrad)
    return weight.new_empty((total if made and input.device.type == "cuda" else 0,))


def _native_pack_holds_dgrad(packed: Tensor, input: Tensor, weight: Tensor, stride, padding,
                             dilation, groups: int) -> bool:
    fprop_elems, both, _ = _native_pack_plan(input, weight, stride, padding, dilation, groups, True)
    return both > fprop_elems and packed.numel() == both


NATIVE: Optional[OpFamily] = None
if _native._C is not None:
    _ops = torch.ops.resnext_kernels
    NATIVE = OpFamily("native", _ops.fprop.default, _ops.dgrad.default, _ops.wgrad.default,
                      _ops.pack_weight.default, _native_pack_holds_dgrad, pack_reads_problem=True)
    torch.library.register_fake("resnext_kernels::fprop")(_fake_fprop)
    torch.library.register_fake("resnext_kernels::dgrad")(_fake_dgrad)
    torch.library.register_fake("resnext_kernels::wgrad")(_fake_wgrad)
    torch.library.register_fake("resnext_kernels::pack_weight")(_fake_native_pack)
    _register_autograd(NATIVE)


# ---------------------------------------------------------------------------------------------
# The Triton family. triton_op + wrap_triton let torch.compile see the kernel launches.
@torch.library.triton_op("resnext_kernels::pack_weight_triton", mutates_args=())
def pack_weight_triton(weight: Tensor, groups: int, dgrad: bool = True) -> Tensor:
    """The weight in the order fprop_triton reads it and, with `dgrad`, dgrad_triton's order
    after it, in one buffer (triton/fprop.py, pack_weight). Not differentiable: pass a detached
    weight."""
    return _triton_pack_weight(weight, groups, dgrad=dgrad, wrap=torch.library.wrap_triton)


@torch.library.triton_op("resnext_kernels::fprop_triton", mutates_args=())
def fprop_triton(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int],
                 padding: List[int], dilation: List[int], groups: int,
                 relu: bool = False, packed: Optional[Tensor] = None) -> Tensor:
    return _triton_fprop(input, weight, bias, stride, padding, dilation, groups, relu,
                         wrap=torch.library.wrap_triton, packed=packed)


@torch.library.triton_op("resnext_kernels::dgrad_triton", mutates_args=())
def dgrad_triton(grad_output: Tensor, weight: Tensor, input_size: List[int],
                 stride: List[int], padding: List[int], dilation: List[int],
                 groups: int, packed: Optional[Tensor] = None) -> Tensor:
    return _triton_dgrad(grad_output, weight, input_size, stride, padding, dilation, groups,
                         wrap=torch.library.wrap_triton, packed=packed)


@torch.library.triton_op("resnext_kernels::wgrad_triton", mutates_args=())
def wgrad_triton(grad_output: Tensor, input: Tensor, weight_size: List[int],
                 stride: List[int], padding: List[int], dilation: List[int],
                 groups: int) -> Tensor:
    return _triton_wgrad(grad_output, input, weight_size, stride, padding, dilation, groups,
                         wrap=torch.library.wrap_triton)


TRITON = OpFamily("triton", fprop_triton, dgrad_triton, wgrad_triton, pack_weight_triton,
                  lambda packed, input, weight, stride, padding, dilation, groups:
                  _triton_pack_holds_dgrad(packed, weight, groups))
_register_autograd(TRITON)

__all__: List[str] = ["OpFamily", "NATIVE", "TRITON", "conv_output_hw"]
