"""`GroupedConv2d`, a drop-in for `torch.nn.Conv2d`, and `convert()` for whole models.

GroupedConv2d *is* an nn.Conv2d (a subclass): same constructor arguments, parameter names,
shapes, initialisation and state_dict, so weights move between the two unchanged. Its forward
runs this package's kernels through `grouped_conv2d` when the configuration is one they handle
(3x3, zero padding given as numbers); any other configuration keeps nn.Conv2d's own (ATen)
forward, and `fallback_reason` says why.

For inference, `freeze()` (or `freeze(model)`; `fuse_for_inference` does it) promises that the
weight stays constant: what each call would otherwise derive from it again (its autocast copy,
the kernels' packed layout) is then made once and kept while the weight is unchanged
(frozen.py says what "unchanged" can and cannot see).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

from . import functional
from .frozen import FrozenWeight
from .functional import BACKENDS


class GroupedConv2d(nn.Conv2d):
    """nn.Conv2d with this package's kernels.

    Extra arguments: `backend` ("auto", "cuda", "triton", "aten") and `relu` (apply a ReLU in the
    kernel's epilogue; used by `fuse_for_inference`, off for a plain drop-in).
    """

    _frozen: Optional[FrozenWeight] = None   # unfrozen (a class default: modules pickled before
                                             # freeze() existed have it too)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None, *,
                 backend: str = "auto", relu: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, padding_mode, device, dtype)
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
        self.backend = backend
        self.relu = relu
        self.fallback_reason = self._static_fallback_reason()
        self.last_backend: Optional[str] = None   # what the last eager forward ran

    def _static_fallback_reason(self) -> Optional[str]:
        """Why this configuration always takes nn.Conv2d's ATen path (None if it does not)."""
        if self.padding_mode != "zeros":
            return f"padding_mode={self.padding_mode!r} (the kernels pad with zeros)"
        if isinstance(self.padding, str):
            return f"padding={self.padding!r} (string padding)"
        if tuple(self.kernel_size) != (3, 3):
            return f"kernel_size={tuple(self.kernel_size)} (the kernels are 3x3)"
        return None

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, backend: str = "auto") -> "GroupedConv2d":
        """A GroupedConv2d sharing `conv`'s parameters (no copy), on its device and dtype."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                  conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                  device="meta", backend=backend)
        new.weight = conv.weight
        new.bias = conv.bias
        new.train(conv.training)
        return new

    def freeze(self, frozen: bool = True) -> "GroupedConv2d":
        """Promises that the weight stays constant (inference): its autocast copy and packed
        layout are then made once and kept while the weight's version counter, storage, dtype
        and shape are unchanged. Writes that bypass the version counter (`.data`, collectives
        into the parameter's storage) are not seen: call `freeze()` again after them, which
        drops what was kept. `freeze(False)` undoes it. Returns the module."""
        self._frozen = FrozenWeight() if frozen else None
        return self

    @property
    def frozen(self) -> bool:
        return self._frozen is not None

    def forward(self, input: Tensor) -> Tensor:
        if self.fallback_reason is not None:
            out = super().forward(input)
            return torch.relu(out) if self.relu else out
        out = functional._convolve(input, self.weight, self.bias, self.stride, self.padding,
                                   self.dilation, self.groups, self.backend, self.relu,
                                   self._frozen)
        if not torch.compiler.is_compiling():
            self.last_backend = functional.last_backend()
        return out

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", backend={self.backend!r}"
        return s + (", relu=True" if self.relu else "") + (", frozen=True" if self.frozen else "")


@dataclass
class ConvertSummary:
    """What `convert` did: the replaced module names and, for the others, why not. Once the
    model has run, `str()` also says which backend each replaced layer ran (with `auto`, the one
    measured fastest for its problem)."""

    replaced: List[str] = field(default_factory=list)
    skipped: Dict[str, str] = field(default_factory=dict)
    modules: Dict[str, "GroupedConv2d"] = field(default_factory=dict, repr=False)

    def backends(self) -> Dict[str, Optional[str]]:
        """Replaced layer -> the backend its last forward ran (None before it ran)."""
        return {name: self.modules[name].last_backend if name in self.modules else None
                for name in self.replaced}

    def __str__(self) -> str:
        lines = [f"replaced {len(self.replaced)} Conv2d with GroupedConv2d, left {len(self.skipped)}"]
        ran = {name: b for name, b in self.backends().items() if b is not None}
        if ran:
            counts: Dict[str, int] = {}
            for b in ran.values():
                counts[b] = counts.get(b, 0) + 1
            lines.append("  ran: " + ", ".join(f"{b} x{n}" for b, n in sorted(counts.items()))
                         + (" (aten is cuDNN on a GPU)" if "aten" in counts else ""))
            lines += [f"  {name}: {b}" for name, b in ran.items()]
        lines += [f"  kept {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def eligibility(conv: nn.Conv2d, include_dense: bool = False) -> Optional[str]:
    """None when `conv` should become a GroupedConv2d, else why not."""
    if isinstance(conv, GroupedConv2d):
        return "already a GroupedConv2d"
    if type(conv) is not nn.Conv2d:
        return f"a {type(conv).__name__}, not a plain nn.Conv2d"
    if conv.groups == 1 and not include_dense:
        return "groups=1 (cuDNN's dense convolution is already fast; include_dense=True to convert)"
    probe = GroupedConv2d(1, 1, conv.kernel_size, padding=conv.padding,
                          padding_mode=conv.padding_mode, device="meta")
    return probe.fallback_reason


def convert(model: nn.Module, backend: str = "auto", include_dense: bool = False,
            predicate: Optional[Callable[[str, nn.Conv2d], bool]] = None) -> ConvertSummary:
    """Replaces, in place, every eligible nn.Conv2d of `model` (grouped 3x3 with zero padding;
    also groups=1 with `include_dense`) by a GroupedConv2d sharing its parameters. Returns a
    summary of what was replaced and why the rest was kept."""
    summary = ConvertSummary()
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if not isinstance(child, nn.Conv2d):
                continue
            full = f"{name}.{child_name}" if name else child_name
            why = eligibility(child, include_dense)
            if why is None and predicate is not None and not predicate(full, child):
                why = "excluded by predicate"
            if why is None:
                new = GroupedConv2d.from_conv(child, backend)
                setattr(module, child_name, new)
                summary.replaced.append(full)
                summary.modules[full] = new
            else:
                summary.skipped[full] = why
    return summary


def freeze(model: nn.Module, frozen: bool = True) -> nn.Module:
    """`GroupedConv2d.freeze(frozen)` on every GroupedConv2d of `model` (for inference: each
    weight's autocast copy and packed layout made once). Returns `model`."""
    for module in model.modules():
        if isinstance(module, GroupedConv2d):
            module.freeze(frozen)
    return model
