"""Edge-case convolution shapes shared by the CPU and GPU tests. Each says what it catches."""

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from resnext_kernels import reference


@dataclass(frozen=True)
class Case:
    n: int
    h: int
    w: int
    cg: int       # input channels per group
    kg: int       # output channels per group
    groups: int
    stride: int
    padding: int
    why: str
    dilation: int = 1

    @property
    def id(self):
        return (f"n{self.n}_{self.h}x{self.w}_cg{self.cg}_kg{self.kg}_g{self.groups}"
                f"_s{self.stride}_p{self.padding}" + (f"_d{self.dilation}" if self.dilation > 1 else ""))

    @property
    def out_hw(self):
        size = lambda d: (d + 2 * self.padding - 2 * self.dilation - 1) // self.stride + 1  # noqa: E731
        return size(self.h), size(self.w)

    @property
    def conv_args(self):
        return dict(stride=(self.stride,) * 2, padding=(self.padding,) * 2,
                    dilation=(self.dilation,) * 2, groups=self.groups)


EDGE_CASES = [
    Case(0, 5, 5, 4, 4, 4, 1, 1, "batch 0: empty output, zero weight gradient"),
    Case(1, 1, 1, 4, 4, 8, 1, 1, "1x1 image: every tap but the centre reads padding"),
    Case(3, 7, 7, 4, 4, 8, 1, 1, "odd batch, 7x7 (stage 4 size), Cg = 4 packed 8 groups a program"),
    Case(2, 5, 9, 8, 8, 4, 2, 1, "non-square, stride 2: dgrad taps that skip pixels"),
    Case(1, 6, 5, 14, 14, 2, 1, 2, "Cg = 14 (paper ablation), padding 2"),
    Case(2, 7, 6, 24, 24, 2, 2, 0, "Cg = 24, padding 0, stride 2 with an odd remainder"),
    Case(1, 5, 5, 40, 40, 2, 1, 1, "Cg = 40: channel block 64, partly masked"),
    Case(1, 4, 4, 64, 64, 2, 2, 1, "Cg = 64: one group per program, full blocks"),
    Case(2, 6, 6, 1, 1, 16, 1, 1, "depthwise (Cg = 1): 16 groups packed"),
    Case(1, 5, 7, 4, 8, 4, 1, 1, "Kg != Cg (channel multiplier 2)"),
    Case(1, 9, 9, 8, 8, 3, 2, 2, "3 groups: last pack partly empty"),
    Case(1, 17, 17, 16, 16, 2, 1, 1, "289 pixels: several pixel tiles, last one partial"),
    Case(1, 8, 8, 8, 8, 2, 1, 2, "dilation 2", dilation=2),
    Case(1, 3, 4, 256, 256, 1, 1, 1, "Cg = 256: channel loops and several output and c tiles"),
    Case(2, 9, 10, 14, 14, 4, 1, 1, "Cg = 14 in four groups (8x14d's stage 1): chunk-straddling blocks"),
]

# ResNeXt-50 32x4d's grouped 3x3 layers at batch 1 and small images (the channel structure of
# the real layers: G = 32, Cg = Kg = 4, 8, 16, 32; the first layer of stages 2-4 has stride 2).
RESNEXT_STAGE_CASES = [
    Case(1, 8, 8, 4, 4, 32, 1, 1, "stage 1: 128 channels, Cg 4"),
    Case(1, 8, 8, 8, 8, 32, 2, 1, "stage 2 entry: 256 channels, Cg 8, stride 2"),
    Case(1, 4, 4, 16, 16, 32, 1, 1, "stage 3: 512 channels, Cg 16"),
    Case(1, 4, 4, 32, 32, 32, 2, 1, "stage 4 entry: 1024 channels, Cg 32, stride 2"),
]

LAYOUTS = ["nchw", "channels_last", "strided"]


def make_input(case: Case, layout: str, dtype=torch.float32, device="cpu", gen=None, integer=False):
    """x [N, C, H, W] in the requested layout. "strided" is a view with a storage offset and
    non-unit strides (every other channel of a wider tensor, from its second row)."""
    c = case.cg * case.groups
    shape = (case.n, c, case.h, case.w)
    if layout == "strided":
        big = _rand((case.n, 2 * c, case.h + 1, case.w), dtype, device, gen, integer)
        return big[:, ::2, 1:, :]
    x = _rand(shape, dtype, device, gen, integer)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def make_weight(case: Case, dtype=torch.float32, device="cpu", gen=None, integer=False):
    return _rand((case.kg * case.groups, case.cg, 3, 3), dtype, device, gen, integer)


def _rand(shape, dtype, device, gen, integer):
    if integer:  # small integers: every product and sum is exact in fp16/bf16/fp32
        t = torch.randint(-2, 3, shape, generator=gen, dtype=torch.int64)
    else:
        t = torch.randn(shape, generator=gen, dtype=torch.float64)
    return t.to(device=device, dtype=dtype)


def like_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """`t` (contiguous) re-laid out like make_input's layouts."""
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        n, c, h, w = t.shape
        big = torch.zeros((n, 2 * c, h + 1, w), dtype=t.dtype, device=t.device)
        big[:, ::2, 1:, :] = t
        return big[:, ::2, 1:, :]
    return t


def make_operands(case: Case, layout: str, dtype, device, seed: int, bias: bool = True):
    """x, w, b (None without bias) and dy of `case` in `layout`, with the float64 reference
    (`ref`) and ATen's results in the same dtype and device (`aten`: cuDNN on a GPU) for all
    three directions, as a namespace."""
    gen = torch.Generator().manual_seed(seed)
    x = make_input(case, layout, dtype, device, gen)
    w = make_weight(case, dtype, device, gen)
    b = torch.randn(w.shape[0], generator=gen, dtype=torch.float64).to(device, dtype) if bias else None
    dy = like_layout(torch.randn((case.n, w.shape[0], *case.out_hw), generator=gen,
                                 dtype=torch.float64).to(device, dtype), layout)
    return SimpleNamespace(x=x, w=w, b=b, dy=dy,
                           ref=reference.conv_f64(x, w, b, dy, **case.conv_args),
                           aten=reference.conv_in_dtype(x, w, b, dy, **case.conv_args))


def fake_tune_rows():
    """tune_triton.py rows for one layer and direction: cuDNN, two Triton variants (the second
    the fastest: 0.08 ms, 50% of the roofline) and one that failed. For the report and summary
    tests."""
    rows = [dict(model="32x4d", layer="stage1", direction="fprop", variant=v, median_ms=ms,
                 roofline_pct=pct) for v, ms, pct in (("cudnn", 0.10, 40), ("M64w4s2 tile", 0.20, 20),
                                                     ("M128w4s3 tile", 0.08, 50))]
    rows.append(dict(model="32x4d", layer="stage1", direction="fprop", variant="M64w8s3 tile",
                     error="RuntimeError: out of resource"))
    return rows
