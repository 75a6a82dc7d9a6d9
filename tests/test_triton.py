"""Triton kernels against the float64 reference. On a CPU they run in the Triton interpreter
(conftest.py); on a GPU the same tests run compiled, with bf16 added (the interpreter computes
bf16 wrongly, TOOLCHAIN.md)."""

import dataclasses

import pytest
import torch

from cases import (EDGE_CASES, LAYOUTS, RESNEXT_STAGE_CASES, like_layout, make_input,
                   make_operands, make_weight)
from conftest import HAS_CUDA
from resnext_kernels import ops, reference
from resnext_kernels.ops import TRITON
from resnext_kernels.triton import common, fprop as fprop_mod, wgrad as wgrad_mod
from resnext_kernels.triton.dgrad import dgrad as triton_dgrad

DEVICE = "cuda" if HAS_CUDA else "cpu"
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if HAS_CUDA else [])


@pytest.fixture(autouse=True)
def nan_prefill(monkeypatch):
    """Every buffer the Triton wrappers allocate starts as NaN: an unwritten element fails."""
    def empty(shape, dtype, device, memory_format=torch.contiguous_format):
        t = torch.empty(tuple(shape), dtype=dtype, device=device, memory_format=memory_format)
        return t.fill_(float("nan"))
    monkeypatch.setattr(common, "empty", empty)


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 results are compared with ATen's fp32 error, so neither may use TF32."""
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = old


def run_all_directions(family, case, x, w, b, dy):
    args = case.conv_args
    conv = (list(args["stride"]), list(args["padding"]), list(args["dilation"]), args["groups"])
    return {
        "fprop": family.fprop(x, w, b, *conv),
        "dgrad": family.dgrad(dy, w, list(x.shape), *conv),
        "wgrad": family.wgrad(dy, x, list(w.shape), *conv),
    }


def check_case(family, case, layout, dtype, seed=0):
    o = make_operands(case, layout, dtype, DEVICE, seed)
    out = run_all_directions(family, case, o.x, o.w, o.b, o.dy)
    for direction in ("fprop", "dgrad", "wgrad"):
        reference.check(direction, out[direction], o.aten[direction], o.ref[direction])
    return out


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", EDGE_CASES, ids=lambda c: c.id)
def test_edge_cases_fp32(case, layout):
    out = check_case(TRITON, case, layout, torch.float32)
    # fprop's output takes the input's memory format, dgrad's takes grad_output's (as ATen).
    if layout == "channels_last" and case.n > 0 and case.cg * case.groups > 1 and case.h * case.w > 1:
        assert out["fprop"].is_contiguous(memory_format=torch.channels_last)
        assert out["dgrad"].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d != torch.float32], ids=str)
@pytest.mark.parametrize("case", EDGE_CASES[1:9], ids=lambda c: c.id)
def test_edge_cases_low_precision(case, dtype):
    check_case(TRITON, case, "channels_last", dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", RESNEXT_STAGE_CASES, ids=lambda c: c.id)
def test_resnext_stage_shapes(case, dtype):
    check_case(TRITON, case, "channels_last", dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", [EDGE_CASES[3], EDGE_CASES[4], RESNEXT_STAGE_CASES[0]],
                         ids=lambda c: c.id)
def test_exact_on_small_integers(case, dtype):
    """Integer inputs in [-2, 2]: every product and partial sum is exact in every dtype, so any
    difference is an indexing bug, not rounding."""
    gen = torch.Generator().manual_seed(1)
    x = make_input(case, "channels_last", dtype, DEVICE, gen, integer=True)
    w = make_weight(case, dtype, DEVICE, gen, integer=True)
    args = case.conv_args
    ref = reference.conv_f64(x, w, None, None, **args)
    dy = torch.randint(-2, 3, ref["fprop"].shape, generator=gen).to(DEVICE, dtype)
    ref = reference.conv_f64(x, w, None, dy, **args)
    out = run_all_directions(TRITON, case, x, w, None, dy)
    for direction in ("fprop", "dgrad", "wgrad"):
        assert reference.max_error(out[direction], ref[direction]) == 0, direction


def test_bias_gradient_through_autograd():
    case = EDGE_CASES[2]
    gen = torch.Generator().manual_seed(2)
    x = make_input(case, "channels_last", torch.float32, DEVICE, gen).requires_grad_()
    w = make_weight(case, torch.float32, DEVICE, gen).requires_grad_()
    b = torch.randn(w.shape[0], generator=gen).to(DEVICE).requires_grad_()
    y = TRITON.fprop(x, w, b, [1, 1], [1, 1], [1, 1], case.groups)
    dy = torch.randn(y.shape, generator=gen).to(DEVICE)
    y.backward(dy)
    ref = reference.conv_f64(x, w, b, dy, **case.conv_args)
    aten = reference.conv_in_dtype(x, w, b, dy, **case.conv_args)
    for name, got in (("dgrad", x.grad), ("wgrad", w.grad), ("bias", b.grad)):
        reference.check(name, got, aten[name], ref[name])


def _count_calls(monkeypatch, module, name):
    calls = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)
    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("case", [EDGE_CASES[3], EDGE_CASES[9], EDGE_CASES[10]], ids=lambda c: c.id)
def test_training_step_packs_the_weight_once(case, monkeypatch):
    """A forward pass that will need dx packs the weight for fprop and dgrad in one launch
    and the backward pass packs nothing (dgrad reads the saved buffer); without dx wanted,
    fprop packs its own order only. The gradients match the float64 reference either way
    (stride 2, Kg != Cg, and a pack partly empty)."""
    import resnext_kernels as rk

    both = _count_calls(monkeypatch, ops, "_triton_pack_weight")
    alone = _count_calls(monkeypatch, fprop_mod, "pack_weight")
    o = make_operands(case, "channels_last", torch.float32, DEVICE, seed=6)
    x, w, b = o.x.requires_grad_(), o.w.requires_grad_(), o.b.requires_grad_()
    y = rk.grouped_conv2d(x, w, b, case.stride, case.padding, case.dilation, case.groups,
                          backend="triton")
    assert (len(both), len(alone)) == (1, 0)
    y.backward(o.dy)
    assert (len(both), len(alone)) == (1, 0)
    for name, got in (("fprop", y), ("dgrad", x.grad), ("wgrad", w.grad)):
        reference.check(name, got.detach(), o.aten[name], o.ref[name])

    x2 = o.x.detach()                      # dx not wanted: fprop packs for itself
    y2 = rk.grouped_conv2d(x2, w, b, case.stride, case.padding, case.dilation, case.groups,
                           backend="triton")
    assert (len(both), len(alone)) == (1, 1)
    assert torch.equal(y2, y)


@pytest.mark.parametrize("case", [EDGE_CASES[9], EDGE_CASES[6], EDGE_CASES[8]], ids=lambda c: c.id)
def test_pack_of_both_directions_holds_each_directions_own(case):
    """pack_weight's two-direction buffer (one launch, two tile geometries when Kg != Cg or the
    packs differ) holds exactly what each direction packs alone, and dgrad given it matches
    dgrad packing for itself bit for bit."""
    o = make_operands(case, "channels_last", torch.float32, DEVICE, seed=7)
    buf = fprop_mod.pack_weight(o.w, case.groups)
    f_only = fprop_mod.pack_weight(o.w, case.groups, fprop=True, dgrad=False)
    d_only = fprop_mod.pack_weight(o.w, case.groups, fprop=False, dgrad=True)
    assert torch.equal(buf, torch.cat([f_only, d_only]))
    assert torch.equal(fprop_mod.packed_part(buf, o.w, case.groups, False).flatten(), f_only)
    args = case.conv_args
    conv = (list(args["stride"]), list(args["padding"]), list(args["dilation"]), args["groups"])
    assert torch.equal(triton_dgrad(o.dy, o.w, list(o.x.shape), *conv, packed=buf),
                       triton_dgrad(o.dy, o.w, list(o.x.shape), *conv))


def test_packed_argument_is_checked_before_any_launch(monkeypatch):
    """A buffer that is not pack_weight(weight, groups)'s (another dtype, 2-D; and for dgrad
    either direction's layout alone) is refused with the reason, before the gather kernel
    launches. (The check is of size, dtype and shape: dgrad's layout alone can have fprop's
    size, as here, Kg != Cg, and is then taken for it; only this package's code passes it.)"""
    case = EDGE_CASES[9]
    o = make_operands(case, "nchw", torch.float32, DEVICE, seed=8)
    launched = _count_calls(monkeypatch, fprop_mod.KERNEL, "launch")
    buf = fprop_mod.pack_weight(o.w, case.groups)
    f_only = fprop_mod.pack_weight(o.w, case.groups, dgrad=False)
    d_only = fprop_mod.pack_weight(o.w, case.groups, fprop=False)
    conv = ([1, 1], [1, 1], [1, 1], case.groups)
    for bad in (buf.half(), buf.view(2, -1), buf[:-1]):
        with pytest.raises(RuntimeError, match="expected packed to be pack_weight"):
            TRITON.fprop(o.x, o.w, None, *conv, False, bad)
    for bad in (d_only, f_only, buf.half(), buf.view(2, -1)):
        with pytest.raises(RuntimeError, match="expected packed to be pack_weight"):
            TRITON.dgrad(o.dy, o.w, list(o.x.shape), *conv, bad)
    assert not launched


def test_fprop_takes_its_own_layout_alone_and_dgrad_then_packs_for_itself(monkeypatch):
    """fprop on a buffer of its own layout alone (what a frozen module keeps for inference)
    equals fprop packing for itself bit for bit; if dx is wanted after all, autograd does not
    hand that buffer to dgrad, which packs for itself, and dx matches the reference."""
    case = EDGE_CASES[9]
    o = make_operands(case, "channels_last", torch.float32, DEVICE, seed=9)
    args = case.conv_args
    conv = (list(args["stride"]), list(args["padding"]), list(args["dilation"]), args["groups"])
    f_only = fprop_mod.pack_weight(o.w, case.groups, dgrad=False)
    assert not fprop_mod.pack_holds_dgrad(f_only, o.w, case.groups)
    assert fprop_mod.pack_holds_dgrad(fprop_mod.pack_weight(o.w, case.groups), o.w, case.groups)
    x = o.x.detach().requires_grad_()
    y = TRITON.fprop(x, o.w, o.b, *conv, False, f_only)
    assert torch.equal(y, TRITON.fprop(o.x, o.w, o.b, *conv))
    alone = _count_calls(monkeypatch, fprop_mod, "pack_weight")
    y.backward(o.dy)
    assert len(alone) == 1
    reference.check("dgrad", x.grad, o.aten["dgrad"], o.ref["dgrad"])


def _frozen_conv(case, dtype, seed):
    """A GroupedConv2d on the Triton kernels with `case`'s configuration and operands."""
    import resnext_kernels as rk
    args = case.conv_args
    o = make_operands(case, "channels_last", dtype, DEVICE, seed=seed)
    m = rk.GroupedConv2d(o.x.shape[1], o.w.shape[0], 3, args["stride"], args["padding"],
                         args["dilation"], case.groups, bias=True, backend="triton",
                         device=DEVICE, dtype=dtype)
    with torch.no_grad():
        m.weight.copy_(o.w)
        m.bias.copy_(o.b)
    return m, o


def _conv_like(m, x, weight=None, bias=None):
    """ATen's convolution with `m`'s configuration and parameters (or those given)."""
    return torch.nn.functional.conv2d(x, m.weight if weight is None else weight,
                                      m.bias if bias is None else bias, m.stride, m.padding,
                                      m.dilation, m.groups)


@pytest.mark.parametrize("case", [EDGE_CASES[3], EDGE_CASES[9]], ids=lambda c: c.id)
def test_frozen_module_packs_once_while_its_weight_is_unchanged(case, monkeypatch):
    """A frozen GroupedConv2d packs fprop's layout on its first inference call and reuses it
    (no packing launch after), bit for bit what the unfrozen module computes; an in-place
    change of the weight, load_state_dict and a dtype change each make it pack again, and the
    results follow the new weight; after a write through .data, which no version counter sees,
    freeze() again does."""
    m, o = _frozen_conv(case, torch.float32, seed=10)
    unfrozen = m(o.x).detach()
    m.freeze()
    packed = _count_calls(monkeypatch, ops, "_triton_pack_weight")
    per_call = _count_calls(monkeypatch, fprop_mod, "pack_weight")
    with torch.no_grad():
        first, second = m(o.x), m(o.x)
    assert (len(packed), len(per_call), m._frozen.made) == (1, 0, 1)
    assert packed[0]["dgrad"] is False
    assert torch.equal(first, unfrozen) and torch.equal(second, unfrozen)

    with torch.no_grad():
        m.weight.mul_(-0.5)                                  # in place: version bumped
        changed = m(o.x)
    assert len(packed) == 2
    torch.testing.assert_close(changed, _conv_like(m, o.x))
    state = {k: v * 2 for k, v in m.state_dict().items()}
    m.load_state_dict(state)
    with torch.no_grad():
        loaded = m(o.x)
    assert len(packed) == 3
    torch.testing.assert_close(loaded, _conv_like(m, o.x))

    m.weight.data.copy_(o.w)                                 # unseen by the version counter
    m.freeze()
    with torch.no_grad():
        refrozen = m(o.x)
    assert len(packed) == 4
    torch.testing.assert_close(refrozen, _conv_like(m, o.x))

    m.half()
    x16 = o.x.half()
    with torch.no_grad():
        narrow = m(x16)
    assert len(packed) == 5 and narrow.dtype == torch.float16
    assert torch.equal(narrow, m.freeze(False)(x16))        # the unfrozen module packing per call


def test_frozen_module_under_autocast_casts_and_packs_once():
    """Under autocast a frozen module's weight is cast once and packed once in the lower
    precision (the unfrozen module casts and packs every call), with the unfrozen module's
    result bit for bit; a cast made under inference_mode can still serve a later call whose
    input needs a gradient (it is not an inference tensor)."""
    case = EDGE_CASES[9]
    m, o = _frozen_conv(case, torch.float32, seed=11)
    m.requires_grad_(False)
    amp = dict(device_type=DEVICE, dtype=torch.float16)
    with torch.no_grad(), torch.autocast(**amp):
        unfrozen = m(o.x)
    m.freeze()
    with torch.inference_mode(), torch.autocast(**amp):
        first, second = m(o.x), m(o.x)
    assert m._frozen.made == 2                               # the cast and fprop's pack
    assert first.dtype == torch.float16
    assert torch.equal(first, unfrozen) and torch.equal(second, unfrozen)
    x = o.x.detach().requires_grad_()
    with torch.autocast(**amp):
        y = m(x)
    y.float().backward(o.dy)                                 # saves the kept cast for dgrad
    assert m._frozen.made == 3                               # both layouts, from the kept cast
    # dx against float64 on the weight and dy as autocast rounds them to float16.
    x_ref = o.x.detach().double().requires_grad_()
    w16, b16 = (t.detach().half().double() for t in (m.weight, m.bias))
    _conv_like(m, x_ref, w16, b16).backward(o.dy.half().double())
    torch.testing.assert_close(x.grad, x_ref.grad.float(), rtol=2e-3, atol=2e-3)


def test_frozen_module_keeps_nothing_while_its_weight_trains(monkeypatch):
    """freeze() does not change training: while the weight needs a gradient nothing is kept,
    each forward pass packs (both layouts, once), and the gradients match the reference."""
    case = EDGE_CASES[9]
    m, o = _frozen_conv(case, torch.float32, seed=12)
    m.freeze()
    packed = _count_calls(monkeypatch, ops, "_triton_pack_weight")
    for step in (1, 2):
        x = o.x.detach().requires_grad_()
        m.zero_grad()
        m(x).backward(o.dy)
        assert len(packed) == step and m._frozen.made == 0
    reference.check("dgrad", x.grad, o.aten["dgrad"], o.ref["dgrad"])
    reference.check("wgrad", m.weight.grad, o.aten["wgrad"], o.ref["wgrad"])


def test_frozen_weight_input_gradient_packs_both_layouts_once(monkeypatch):
    """A frozen module whose weight needs no gradient, on inputs that do (saliency, adversarial
    inputs): both layouts packed on the first call and reused by later forward and backward
    passes, dx right every time."""
    case = EDGE_CASES[3]
    m, o = _frozen_conv(case, torch.float32, seed=13)
    m.requires_grad_(False).freeze()
    packed = _count_calls(monkeypatch, ops, "_triton_pack_weight")
    per_call = _count_calls(monkeypatch, fprop_mod, "pack_weight")
    for _ in range(2):
        x = o.x.detach().requires_grad_()
        m(x).backward(o.dy)
        reference.check("dgrad", x.grad, o.aten["dgrad"], o.ref["dgrad"])
    assert (len(packed), len(per_call), m._frozen.made) == (1, 0, 1)
    assert packed[0]["dgrad"] is True


def test_divisor_magic_divides_exactly_below_its_bound():
    """wgrad splits positions into (n, p, q) by (x * m) >> s (common.divisor_magic): exact for
    every divisor up to 2000 at the numerators where rounding errs first (just below each
    multiple, and at the top of the range), and for the real layers' P*Q; m fits 31 bits."""
    import random

    top = (1 << common.MAGIC_BITS) - 1
    rng = random.Random(0)
    for d in list(range(1, 2001)) + [3136, 12544, 784 * 64, (1 << 30) - 1]:
        m, s = common.divisor_magic(d)
        assert 0 < m < 1 << 31
        xs = [0, d - 1, d, top, top - top % d, top - top % d - 1]
        xs += [k * d - 1 for k in range(1, 40)] + [rng.randrange(top) for _ in range(50)]
        for x in (x for x in xs if 0 <= x <= top):
            assert (x * m) >> s == x // d, (d, x)
    with pytest.raises(ValueError):
        common.divisor_magic(0)


@pytest.mark.parametrize("all_taps", [False, True])
def test_wgrad_divides_plainly_above_the_magic_bound(all_taps, monkeypatch):
    """Past 2^MAGIC_BITS positions wgrad divides plainly (FAST_DIV off): with the bound at
    2^4 the stride-2 case's 2 x 3 x 5 positions take that path, and still match."""
    monkeypatch.setattr(common, "MAGIC_BITS", 4)
    case = EDGE_CASES[3]
    o = make_operands(case, "channels_last", torch.float32, DEVICE, seed=9)
    args = case.conv_args
    conv = (list(args["stride"]), list(args["padding"]), list(args["dilation"]), args["groups"])
    dw = wgrad_mod.wgrad(o.dy, o.x, list(o.w.shape), *conv, all_taps=all_taps)
    reference.check("wgrad", dw, o.aten["wgrad"], o.ref["wgrad"])


def test_fused_bias_relu_epilogue():
    case = EDGE_CASES[3]
    gen = torch.Generator().manual_seed(3)
    x = make_input(case, "nchw", torch.float32, DEVICE, gen)
    w = make_weight(case, torch.float32, DEVICE, gen)
    b = torch.randn(w.shape[0], generator=gen).to(DEVICE)
    y = TRITON.fprop(x, w, b, [2, 2], [1, 1], [1, 1], case.groups, True)
    ref = reference.conv_f64(x, w, b, None, **case.conv_args)["fprop"].clamp_min(0)
    aten = reference.conv_in_dtype(x, w, b, None, **case.conv_args)["fprop"].clamp_min(0)
    reference.check("fprop", y, aten, ref)


def test_wgrad_split_is_deterministic_and_correct():
    case = RESNEXT_STAGE_CASES[0]
    gen = torch.Generator().manual_seed(4)
    x = make_input(case, "channels_last", torch.float32, DEVICE, gen)
    dy = like_layout(torch.randn((1, 128, 8, 8), generator=gen).to(DEVICE), "channels_last")
    conv = ([1, 1], [1, 1], [1, 1], case.groups)
    first = wgrad_mod.wgrad(dy, x, [128, 4, 3, 3], *conv, splits=3)
    second = wgrad_mod.wgrad(dy, x, [128, 4, 3, 3], *conv, splits=3)
    assert torch.equal(first, second)
    w = make_weight(case, torch.float32, DEVICE, gen)
    ref = reference.conv_f64(x, w, None, dy, **case.conv_args)
    aten = reference.conv_in_dtype(x, w, None, dy, **case.conv_args)
    reference.check("wgrad", first, aten["wgrad"], ref["wgrad"])


@pytest.mark.parametrize("tiles_per_prog, channels_fastest", [(0, False), (3, False), (1, True),
                                                                (3, True)])
@pytest.mark.parametrize("case", [EDGE_CASES[10], RESNEXT_STAGE_CASES[0], EDGE_CASES[13],
                                  EDGE_CASES[3]], ids=lambda c: c.id)
def test_gather_launch_layouts(case, tiles_per_prog, channels_fastest):
    """fprop and dgrad with each program walking several channel tiles (0: all of them), where
    the tile count (packs x output tiles) is not a multiple of 3, is 1, and is several; and with
    channel tiles fastest in launch order (with stride-2 dgrad's phase classes in between)."""
    o = make_operands(case, "channels_last", torch.float32, DEVICE, 11, bias=True)
    args = case.conv_args
    conv = (list(args["stride"]), list(args["padding"]), list(args["dilation"]), args["groups"])
    layout = dict(tiles_per_prog=tiles_per_prog, channels_fastest=channels_fastest)
    y = fprop_mod.fprop(o.x, o.w, o.b, *conv, **layout)
    dx = triton_dgrad(o.dy, o.w, list(o.x.shape), *conv, **layout)
    reference.check("fprop", y, o.aten["fprop"], o.ref["fprop"])
    reference.check("dgrad", dx, o.aten["dgrad"], o.ref["dgrad"])


L1_CONFIGS = [c for c in fprop_mod.AUTOTUNE_CONFIGS if c.kwargs.get("L1_TAPS")]


def test_the_gather_space_has_l1_configurations():
    """The L1 path loads its tiles itself: it runs unpipelined (num_stages=1), and only it."""
    assert L1_CONFIGS
    assert all(c.kwargs["L1_TAPS"] == (c.num_stages == 1) for c in fprop_mod.AUTOTUNE_CONFIGS)


@pytest.mark.parametrize("case", [c for c in EDGE_CASES if c.n > 0][:12] + RESNEXT_STAGE_CASES[:2],
                         ids=lambda c: c.id)
def test_gather_l1_path(case):
    """fprop and dgrad through the L1 path (plain loads, three steps an iteration, their tiles
    loaded together, L1_TAPS), pinned the way the autotuner would launch it: every edge case of
    its iterations (the steps past the last, which load nothing and run no dot, classes with one
    tap and so one step, partial channel blocks, stride 2)."""
    o = make_operands(case, "channels_last", torch.float32, DEVICE, 15, bias=True)
    args = case.conv_args
    conv = (list(args["stride"]), list(args["padding"]), list(args["dilation"]), args["groups"])
    config = L1_CONFIGS[0]
    y = fprop_mod.fprop(o.x, o.w, o.b, *conv, config=config)
    dx = triton_dgrad(o.dy, o.w, list(o.x.shape), *conv, config=config)
    reference.check("fprop", y, o.aten["fprop"], o.ref["fprop"])
    reference.check("dgrad", dx, o.aten["dgrad"], o.ref["dgrad"])


def integer_operands(case, seed, stride=None):
    """x, w and dy of small integers for `case` (channels_last, fp32; `stride`, a pair, in place
    of the case's), the float64 reference's fprop and dgrad, and the conv arguments (stride,
    padding, dilation, groups) of the gather kernel's entry points: sums of small integers are
    exact, so a kernel must match bit for bit."""
    gen = torch.Generator().manual_seed(seed)
    x = make_input(case, "channels_last", torch.float32, DEVICE, gen, integer=True)
    w = make_weight(case, torch.float32, DEVICE, gen, integer=True)
    args = case.conv_args if stride is None else dict(case.conv_args, stride=stride)
    ref = reference.conv_f64(x, w, None, None, **args)
    dy = like_layout(torch.randint(-2, 3, ref["fprop"].shape, generator=gen).float().to(DEVICE),
                     "channels_last")
    ref = reference.conv_f64(x, w, None, dy, **args)
    conv = (list(args["stride"]), list(args["padding"]), list(args["dilation"]), args["groups"])
    return x, w, dy, ref, conv


def assert_gather_exact(x, w, dy, ref, conv, config, **launch):
    """fprop and dgrad under `config` (and the launch's other keywords) equal the reference
    exactly."""
    y = fprop_mod.fprop(x, w, None, *conv, config=config, **launch)
    dx = triton_dgrad(dy, w, list(x.shape), *conv, config=config, **launch)
    assert reference.max_error(y, ref["fprop"]) == 0, launch
    assert reference.max_error(dx, ref["dgrad"]) == 0, launch


def small_config(l1, band):
    """A 16-pixel configuration of either source path (the L1 path or cp.async) in bands of
    `band` rows, so that the tests' small images hold several tiles and bands."""
    import triton

    return triton.Config({"BLOCK_M": 16, "L1_TAPS": l1, "PIXEL_BAND": band}, num_warps=4,
                         num_stages=1 if l1 else 2)


@pytest.mark.parametrize("cg, groups", [(40, 2), (24, 4), (80, 1)])
@pytest.mark.parametrize("stride", [1, 2])
def test_filled_packs_exact_on_small_integers(cg, groups, stride):
    """The paper's widths 40 and 24 in packs of two groups (80 and 48 channels), and 80 alone:
    reduction blocks of 16, some of them across a group boundary (common.choose_group_tile):
    integer sums are exact, so any difference is a block-diagonal weight or a channel block
    that took the wrong group. Both source paths (cp.async and L1) and both directions."""
    from cases import Case

    case = Case(1, 5, 6, cg, cg, groups, stride, 1, "filled pack")
    tile = common.choose_group_tile(cg, cg, groups)
    assert tile.even_red(cg, groups) and tile.block_red == 16
    operands = integer_operands(case, 21)
    for config in (fprop_mod.AUTOTUNE_CONFIGS[0], L1_CONFIGS[0]):
        assert_gather_exact(*operands, config)


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_gather_l1_path_exact_on_small_integers(stride):
    """Integer operands: the L1 path's sums are exact, so any difference is a step that
    took the wrong tap or channel block (stride 3 has dgrad classes that no tap reaches)."""
    case = dataclasses.replace(EDGE_CASES[10], stride=stride, padding=1)   # 3 groups of Cg = 8:
    operands = integer_operands(case, 16)                                  # a pack partly empty
    for config in L1_CONFIGS:
        assert_gather_exact(*operands, config)


@pytest.mark.parametrize("band", [2, 3, 16])
@pytest.mark.parametrize("stride", [1, 2])
def test_gather_pixel_bands_exact_on_small_integers(band, stride):
    """The gather kernel's pixel order in bands (PIXEL_BAND; the L1 configurations take 8 and
    16, which the tests' small images hold whole): images of 7 x 5 pixels in bands of 2 (2, 2, 2
    and a last band of 1 row), 3 (3, 3, 1) and 16 (one band), strips of 16 pixels that cross
    bands and images, at stride 2 dgrad's phase classes (4 x 3 grids and smaller) too: integer
    sums are exact, so any difference is a pixel the order skipped, took twice or mapped
    wrong. Both source paths."""
    from cases import Case

    operands = integer_operands(Case(3, 7, 5, 4, 4, 4, stride, 1, "pixel bands"), 22)
    for l1 in (False, True):
        assert_gather_exact(*operands, small_config(l1, band))


@pytest.mark.parametrize("stride", [1, 2])
def test_gather_pixel_tiles_exact_on_small_integers(stride):
    """Programs that walk several pixel tiles (the kernel reads how many off the grid:
    pixel_tiles): seven 16-pixel tiles of 3 images of 7 x 5 in programs of 2 (the last one
    walks 1), 3 (3, 3, 1), 7 (one program) and 10 (one program of 7), with one channel tile a
    program (two packs of eight groups: two programs along the channels) in either launch order
    and with all channel tiles a program; at stride 2 dgrad's phase classes (smaller grids
    whose last tiles hold no pixel). Integer sums are exact: any difference is a pixel tile a
    program skipped, took twice or took for the wrong channel tile. Both source paths."""
    from cases import Case

    operands = integer_operands(Case(3, 7, 5, 4, 4, 16, stride, 1, "pixel tiles"), 23)
    for l1 in (False, True):
        for tiles, per_prog, fastest in ((2, 1, False), (3, 1, True), (7, 0, False),
                                         (10, 1, False)):
            assert_gather_exact(*operands, small_config(l1, 2), pixel_tiles=tiles,
                                tiles_per_prog=per_prog, channels_fastest=fastest)


@pytest.mark.parametrize("stride", [(1, 1), (2, 1), (1, 2), (3, 2)])
def test_gather_tap_order_exact_on_small_integers(stride):
    """The order a program walks its phase class's taps (the kernel's tap tables): a class of
    nine corners first (fprop; dgrad at stride 1), dgrad's other classes row by row: at strides
    (2, 1) and (1, 2) classes of 1 or 2 x 3 and 3 x 1 or 2 taps, at (3, 2) of 1 x 1 or 2. The
    images (7 x 6) are several strips, so that the iterations of an L1-path program find new
    pixels and old ones. Integer sums are exact: a tap walked twice, skipped or moved wrong
    shows. Both source paths."""
    from cases import Case

    operands = integer_operands(Case(2, 7, 6, 4, 4, 4, 1, 1, "tap order"), 24, stride)
    for l1 in (False, True):
        assert_gather_exact(*operands, small_config(l1, 4))


@pytest.mark.parametrize("case", [EDGE_CASES[3], EDGE_CASES[5], RESNEXT_STAGE_CASES[1]],
                         ids=lambda c: c.id)
def test_wgrad_all_taps_in_one_program(case):
    o = make_operands(case, "channels_last", torch.float32, DEVICE, 12, bias=False)
    args = case.conv_args
    conv = (list(args["stride"]), list(args["padding"]), list(args["dilation"]), args["groups"])
    dw = wgrad_mod.wgrad(o.dy, o.x, list(o.w.shape), *conv, splits=2, all_taps=True)
    reference.check("wgrad", dw, o.aten["wgrad"], o.ref["wgrad"])


def test_wgrad_tiles_wide_channels_in_blocks_of_32():
    """Cg = 64 is a 2 x 2 grid of 32-wide tiles (wgrad.MAX_BLOCK), so ALL_TAPS serves it."""
    case = EDGE_CASES[7]
    assert case.cg == case.kg == 64
    tile = wgrad_mod.group_tile(case.cg, case.kg, case.groups)
    assert (tile.block_red, tile.block_out) == (32, 32)
    o = make_operands(case, "channels_last", torch.float32, DEVICE, 13, bias=False)
    args = case.conv_args
    conv = (list(args["stride"]), list(args["padding"]), list(args["dilation"]), args["groups"])
    for all_taps in (False, True):
        dw = wgrad_mod.wgrad(o.dy, o.x, list(o.w.shape), *conv, all_taps=all_taps)
        reference.check("wgrad", dw, o.aten["wgrad"], o.ref["wgrad"])


def test_checker_rejects_a_wrong_kernel():
    """Negative control: fprop with the taps flipped (a classic indexing bug) must fail the
    checker, and so must an output with one unwritten (NaN) element."""
    case = EDGE_CASES[2]
    gen = torch.Generator().manual_seed(5)
    x = make_input(case, "nchw", torch.float32, DEVICE, gen)
    w = make_weight(case, torch.float32, DEVICE, gen)
    ref = reference.conv_f64(x, w, None, None, **case.conv_args)["fprop"]
    aten = reference.conv_in_dtype(x, w, None, None, **case.conv_args)["fprop"]
    wrong = TRITON.fprop(x, w.flip(-1, -2).contiguous(), None, [1, 1], [1, 1], [1, 1], case.groups)
    with pytest.raises(AssertionError):
        reference.check("fprop", wrong, aten, ref)
    holed = aten.clone()
    holed.view(-1)[7] = float("nan")
    with pytest.raises(AssertionError):
        reference.check("fprop", holed, aten, ref)


@pytest.mark.parametrize("stride, dilation", [(3, 1), (4, 1), (2, 2)])
def test_dgrad_stride_phase_classes(stride, dilation):
    """dgrad visits dx by stride phase at dilation 1. Strides 3 and 4 give phases that no tap
    reaches (their dx is zero, and must still be written); dilation 2 takes the masked path."""
    case = EDGE_CASES[3]
    gen = torch.Generator().manual_seed(14)
    x = make_input(case, "channels_last", torch.float32, DEVICE, gen)
    w = make_weight(case, torch.float32, DEVICE, gen)
    args = dict(stride=(stride, stride), padding=(1, 1), dilation=(dilation, dilation),
                groups=case.groups)
    y = torch.nn.functional.conv2d(x, w, None, **args)
    dy = like_layout(torch.randn(y.shape, generator=gen).to(DEVICE), "channels_last")
    ref = reference.conv_f64(x, w, None, dy, **args)
    aten = reference.conv_in_dtype(x, w, None, dy, **args)
    dx = triton_dgrad(dy, w, list(x.shape), [stride] * 2, [1, 1], [dilation] * 2, case.groups)
    reference.check("dgrad", dx, aten["dgrad"], ref["dgrad"])


def test_wgrad_adds_its_splits_in_the_launch_and_leaves_the_counters_at_zero():
    """The last split of each tile reduces the partials (fixed order) and resets its counter, so
    the counters kept between calls are zero again after every launch."""
    case = EDGE_CASES[3]
    o = make_operands(case, "channels_last", torch.float32, DEVICE, 13, bias=False)
    args = case.conv_args
    conv = (list(args["stride"]), list(args["padding"]), list(args["dilation"]), args["groups"])
    first = wgrad_mod.wgrad(o.dy, o.x, list(o.w.shape), *conv, splits=3)
    assert wgrad_mod._COUNTERS  # eager calls on real tensors keep their counters
    assert all(int(buf.abs().sum()) == 0 for buf in wgrad_mod._COUNTERS.values())
    second = wgrad_mod.wgrad(o.dy, o.x, list(o.w.shape), *conv, splits=3)
    assert torch.equal(first, second)
    reference.check("wgrad", first, o.aten["wgrad"], o.ref["wgrad"])


def test_the_l1_path_is_timed_only_on_sm90_with_full_channel_blocks(monkeypatch):
    """The L1 path's masked tiles spill at Cg = 14, and its three tiles in flight on sm_80
    (scripts/triton_compile_check.py), so the autotuner times it only on sm_90 and newer where
    every channel block is full, whether or not the model knows the GPU."""
    x = torch.empty(1, dtype=torch.bfloat16)
    args = dict(BATCH=8, DH=28, DW=28, SH=28, SW=28, G=8, RED_G=14, OUT_G=14, stride_h=1, pad_h=1,
                dil_h=1, src_ptr=x, TILES_PER_PROG=1, CHANNELS_FASTEST=0, BLOCK_RED=16,
                BLOCK_OUT=128)
    for gpu, arch in (("", 90), ("NVIDIA H200", 90), ("NVIDIA A100-SXM4-80GB", 80)):
        monkeypatch.setattr(common, "device_name", lambda t, gpu=gpu: gpu)
        monkeypatch.setattr(common, "device_arch", lambda t, arch=arch: arch)
        partial = fprop_mod._prune(fprop_mod.AUTOTUNE_CONFIGS, args, TRANSPOSED=False, EVEN_RED=False)
        full = fprop_mod._prune(fprop_mod.AUTOTUNE_CONFIGS, args, TRANSPOSED=False, EVEN_RED=True)
        assert partial and not any(c.kwargs["L1_TAPS"] for c in partial)
        assert any(c.kwargs["L1_TAPS"] for c in full) == (arch >= 90)


def test_the_autotuner_times_no_configuration_over_the_loop_register_budget(monkeypatch):
    """Wide tiles: a thread's share of the accumulator (and, on the L1 path, of its three tiles
    in flight) over fprop.LOOP_REGISTER_BUDGET spilled in the compile check, so those
    configurations are not timed; 32x4d's 32-wide tiles keep the whole space (on sm_90) and the
    first configuration serves every tile."""
    x = torch.empty(1, dtype=torch.bfloat16)
    monkeypatch.setattr(common, "device_arch", lambda t: 90)
    monkeypatch.setattr(common, "device_name", lambda t: "")      # no model pruning

    def kept(block_red, block_out):
        args = dict(BATCH=8, DH=28, DW=28, SH=28, SW=28, G=1, RED_G=64, OUT_G=64, stride_h=1,
                    pad_h=1, dil_h=1, src_ptr=x, TILES_PER_PROG=1, CHANNELS_FASTEST=0)
        return [(c.kwargs["BLOCK_M"], c.num_warps, c.num_stages) for c in fprop_mod._prune(
            fprop_mod.AUTOTUNE_CONFIGS, args, TRANSPOSED=False, EVEN_RED=True,
            BLOCK_RED=block_red, BLOCK_OUT=block_out)]

    assert len(kept(32, 32)) == len(fprop_mod.AUTOTUNE_CONFIGS)
    wide = kept(64, 64)                  # Cg = 64: M128w4s1 holds 64 + 96 registers
    assert (128, 8, 1) in wide and (128, 4, 1) not in wide and (256, 8, 1) not in wide
    out128 = kept(16, 128)               # Cg = 40 in pairs: 128-wide output blocks
    assert (64, 4, 2) in out128 and (128, 8, 3) in out128 and (128, 4, 3) not in out128
    first = fprop_mod.AUTOTUNE_CONFIGS[0]
    for block in (16, 32, 64, 128):
        assert fprop_mod.config_serves(first, True, 80, min(block, 64), block, 4)


def test_the_wgrad_tap_layout_follows_the_model_where_it_describes_the_gpu(monkeypatch):
    """On an H200 the layout the model predicts faster (all taps on every 32x4d layer, where
    today's all-taps code is predicted at a third of one tap's time at stage 3); on a GPU the
    model lacks, the measured rule (ALL_TAPS_MIN_GROUPS: 2 groups packed at stage 3, one tap)."""
    from resnext_kernels import perf_model as pm

    x = torch.empty(64, 512, 14, 14, device="meta", dtype=torch.bfloat16)
    dy = torch.empty(64, 512, 14, 14, device="meta", dtype=torch.bfloat16)
    tile = wgrad_mod.group_tile(16, 16, 32)
    assert tile.groups_per_prog == 2 < wgrad_mod.ALL_TAPS_MIN_GROUPS
    conv = ([1, 1], [1, 1], [1, 1])
    monkeypatch.setattr(common, "device_name", lambda t: "")
    assert not wgrad_mod.choose_all_taps(x, dy, 32, *conv, tile, True)
    monkeypatch.setattr(common, "device_name", lambda t: "NVIDIA H200")
    assert wgrad_mod.choose_all_taps(x, dy, 32, *conv, tile, True)
    stage3 = pm.Conv(64, 512, 14, 14, 512, 32)
    one = min(pm.triton_wgrad(stage3, pm.GPUS["H200"], c, False).time_us
              for c in pm.TRITON_WGRAD_CONFIGS)
    nine = min(pm.triton_wgrad(stage3, pm.GPUS["H200"], c, True).time_us
               for c in pm.TRITON_WGRAD_ALL_TAPS_CONFIGS)
    assert nine < one / 2


def test_the_model_prunes_the_autotune_space(monkeypatch):
    """On a modelled GPU the autotuner times at most the two thirds of the space the performance
    model ranks best, none predicted over PRUNE_RATIO times the best (always the best itself);
    elsewhere every configuration."""
    from resnext_kernels import perf_model as pm

    x = torch.empty(1, dtype=torch.bfloat16)
    args = dict(BATCH=64, DH=56, DW=56, SH=56, SW=56, G=32, RED_G=4, OUT_G=4, stride_h=1, pad_h=1,
                dil_h=1, src_ptr=x, TILES_PER_PROG=1, CHANNELS_FASTEST=0, BLOCK_RED=32,
                BLOCK_OUT=32, EVEN_RED=True)
    monkeypatch.setattr(common, "device_arch", lambda t: 90)      # an sm_90 GPU the model lacks
    assert fprop_mod._prune(fprop_mod.AUTOTUNE_CONFIGS, args, TRANSPOSED=False) == fprop_mod.AUTOTUNE_CONFIGS
    monkeypatch.setattr(common, "device_name", lambda t: "NVIDIA H200")
    kept = fprop_mod._prune(fprop_mod.AUTOTUNE_CONFIGS, args, TRANSPOSED=False)
    space = len(fprop_mod.AUTOTUNE_CONFIGS)
    assert 1 <= len(kept) <= -(-space * 2 // 3)
    assert all(c in fprop_mod.AUTOTUNE_CONFIGS for c in kept)
    assert any(c.kwargs["L1_TAPS"] for c in kept)   # the model ranks the L1 path first at stage 1
    conv = pm.Conv(64, 128, 56, 56, 128, 32)
    times = {c: pm.triton_gather(conv, "fprop", pm.GPUS["H200"], pm.TritonConfig(
        c.kwargs["BLOCK_M"], c.num_warps, c.num_stages)).time_us for c in fprop_mod.AUTOTUNE_CONFIGS}
    best = min(times.values())
    assert min(times, key=times.get) in kept
    assert max(times[c] for c in kept) <= min(times[c] for c in times if c not in kept)
    assert all(times[c] <= common.PRUNE_RATIO * best for c in kept)
    # Those within the ratio are all kept while the two thirds allow: at most PRUNE_KEEP of
    # them would be the floor of a space the ratio did not cut.
    within = [c for c in times if times[c] <= common.PRUNE_RATIO * best]
    assert len(kept) == min(len(within), max(common.PRUNE_KEEP, -(-space * 2 // 3)))
    wargs = dict(BATCH=64, H=56, W=56, G=32, CG=4, KG=4, stride_h=1, pad_h=1, dil_h=1, x_ptr=x,
                 EVEN_KO=True, EVEN_C=True)
    assert len(wgrad_mod._prune(wgrad_mod.AUTOTUNE_CONFIGS, wargs, ALL_TAPS=False)) == 4
    kept_all = wgrad_mod._prune(wgrad_mod.ALL_TAPS_CONFIGS, wargs, ALL_TAPS=True)
    assert common.PRUNE_KEEP <= len(kept_all) <= -(-len(wgrad_mod.ALL_TAPS_CONFIGS) * 2 // 3)
