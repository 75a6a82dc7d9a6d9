"""What a frozen GroupedConv2d makes once from its weight instead of on every call.

An unfrozen forward pass derives two things from the weight each time it runs: the copy that
autocast casts it to (one elementwise launch), and the packed layout the kernels read: on the
Triton backend the gather kernel's (`pack_weight`, one launch more, inside fprop when no buffer
is given), on the CUDA backend the halo rungs' where one runs (ops.py: without it each of their
CTAs packs its slab). For a training step that is right: the
optimizer changes the weight every step. For inference the weight is a constant and both are
wasted work, two launches a grouped layer (32 over ResNeXt-50).

`GroupedConv2d.freeze()` (and `resnext_kernels.freeze(model)`, and `fuse_for_inference`) is the
promise that the weight stays constant; a `FrozenWeight` then keeps what was derived, keyed on the
parameter as it was: its storage address, autograd version counter, dtype, device, shape and
strides. Every in-place change through PyTorch bumps the version (an optimizer step,
`load_state_dict`, `weight.mul_(2)` under no_grad), and `.to()` or assigning a new Parameter
changes the rest, so each of those remakes what it invalidated on the next call. What a version
counter cannot see is a write that bypasses autograd into the same storage: through `.data`, or a
collective (an NCCL broadcast, FSDP's all-gather). After such a write, call `freeze()` again (it
drops what was kept), or do not freeze.

Nothing is kept while gradients flow to the weight (the cast copy would be detached from it), while
torch.compile traces (it sees the ops and their launches, not this Python state) or while a CUDA
graph is captured (a kept tensor would live in the graph's memory pool).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

_Stamp = Tuple[int, int, torch.dtype, torch.device, Tuple[int, ...], Tuple[int, ...]]


def _stamp(t: Tensor) -> _Stamp:
    return (t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape), t.stride())


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class FrozenWeight:
    """The cast copies and packed layouts made from one module's weight (`source` in each call),
    each remade when the weight's stamp (see the module docstring) changes."""

    def __init__(self):
        self._casts: Dict[torch.dtype, Tuple[_Stamp, Tensor]] = {}
        self._packs: Dict[tuple, Tuple[_Stamp, Tensor]] = {}
        self.made = 0                            # tensors made so far (the tests count them)

    @staticmethod
    def usable(source: Tensor) -> bool:
        """Whether a call on the module's weight `source` may be served from what is kept."""
        return (not torch.compiler.is_compiling() and not _capturing()
                and not (source.requires_grad and torch.is_grad_enabled()))

    def _kept(self, table: dict, key, source: Tensor, make: Callable[[], Tensor]) -> Tensor:
        stamp = _stamp(source)
        entry = table.get(key)
        if entry is None or entry[0] != stamp:
            # A normal tensor even under inference_mode, so that a later call outside it (whose
            # input needs a gradient) may save it for backward.
            with torch.inference_mode(False), torch.no_grad():
                entry = (stamp, make())
            table[key] = entry
            self.made += 1
        return entry[1]

    def cast(self, source: Tensor, dtype: torch.dtype) -> Tensor:
        """`source` in `dtype`, made once while `source` is unchanged."""
        if source.dtype == dtype:
            return source
        return self._kept(self._casts, dtype, source, lambda: source.detach().to(dtype))

    def packed(self, layout: tuple, pack: Callable[[Tensor], Tensor], weight: Tensor,
               source: Tensor) -> Tensor:
        """`pack(weight)`'s buffer, the packed layout(s) `layout` names (the family, whether
        dgrad's too, the convolution's arguments), made once while `source` is unchanged;
        `weight` is `source` or its kept cast."""
        return self._kept(self._packs, (layout, weight.dtype), source,
                          lambda: pack(weight.detach()))
