"""The ops, their registration and the functional API, on the CPU."""

import json
import os

import pytest
import torch
import torch.nn.functional as F

import resnext_kernels as rk
from cases import EDGE_CASES, LAYOUTS, make_input, make_weight, like_layout
from resnext_kernels import _native, reference
from resnext_kernels.ops import NATIVE, TRITON

needs_native = pytest.mark.skipif(NATIVE is None, reason=str(_native.LOAD_ERROR))


def conv_lists(case):
    a = case.conv_args
    return list(a["stride"]), list(a["padding"]), list(a["dilation"]), a["groups"]


# ---------------------------------------------------------------------------------------------
# The native ops' CPU implementation (ATen) against F.conv2d, and their output layouts.
@needs_native
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", EDGE_CASES, ids=lambda c: c.id)
def test_native_cpu_ops_match_conv2d(case, layout):
    gen = torch.Generator().manual_seed(0)
    x = make_input(case, layout, torch.float64, gen=gen)
    w = make_weight(case, torch.float64, gen=gen)
    b = torch.randn(w.shape[0], generator=gen, dtype=torch.float64)
    ref = reference.conv_f64(x, w, b, None, **case.conv_args)
    dy = like_layout(torch.randn(ref["fprop"].shape, generator=gen, dtype=torch.float64), layout)
    ref = reference.conv_f64(x, w, b, dy, **case.conv_args)
    conv = conv_lists(case)
    y = NATIVE.fprop(x, w, b, *conv)
    dx = NATIVE.dgrad(dy, w, list(x.shape), *conv)
    dw = NATIVE.wgrad(dy, x, list(w.shape), *conv)
    torch.testing.assert_close(y, ref["fprop"])
    torch.testing.assert_close(dx, ref["dgrad"])
    torch.testing.assert_close(dw, ref["wgrad"])
    if layout == "channels_last" and case.n > 0 and case.cg * case.groups > 1:
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert dx.is_contiguous(memory_format=torch.channels_last)
    assert dw.is_contiguous()


@needs_native
def test_native_relu_epilogue():
    case = EDGE_CASES[3]
    x, w = make_input(case, "nchw"), make_weight(case)
    b = torch.randn(w.shape[0])
    y = NATIVE.fprop(x, w, b, *conv_lists(case), True)
    torch.testing.assert_close(y, F.relu(F.conv2d(x, w, b, **case.conv_args)))


# ---------------------------------------------------------------------------------------------
# Registration: opcheck (schema, autograd registration, fake tensors, AOT dispatch), gradcheck.
OPCHECK_CASES = [EDGE_CASES[2], EDGE_CASES[3], EDGE_CASES[9]]


@needs_native
@pytest.mark.parametrize("case", OPCHECK_CASES, ids=lambda c: c.id)
def test_opcheck_native_ops(case):
    x = make_input(case, "channels_last").requires_grad_()
    w = make_weight(case).requires_grad_()
    b = torch.randn(w.shape[0], requires_grad=True)
    conv = conv_lists(case)
    y = F.conv2d(x, w, b, **case.conv_args)
    dy = torch.randn(y.shape).requires_grad_()
    torch.library.opcheck(NATIVE.fprop, (x, w, b, *conv, False))
    torch.library.opcheck(NATIVE.fprop, (x, w, None, *conv, True))
    torch.library.opcheck(NATIVE.dgrad, (dy, w, list(x.shape), *conv))
    torch.library.opcheck(NATIVE.wgrad, (dy, x, list(w.shape), *conv))


@needs_native
@pytest.mark.parametrize("family", ["native", "triton"])
def test_gradcheck_float64(family):
    """First and second derivatives of fprop (so also the autograd of dgrad and wgrad)."""
    ops = NATIVE if family == "native" else TRITON
    case = EDGE_CASES[3]  # stride 2, non-square
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 8, 5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(8, 2, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(8, dtype=torch.float64, generator=gen, requires_grad=True)
    fn = lambda x, w, b: ops.fprop(x, w, b, [2, 2], [1, 1], [1, 1], 4)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    if family == "native":  # the interpreter makes second derivatives slow; native covers them
        assert torch.autograd.gradgradcheck(fn, (x, w, b))
    else:  # a training step's path: dx from the weight the forward pass packed (one input)
        w0 = w.detach()
        packed = lambda x: ops.fprop(x, w0, None, [2, 2], [1, 1], [1, 1], 4, False,  # noqa: E731
                                     ops.pack(w0, 4))
        assert torch.autograd.gradcheck(packed, (x,))
    del case


@needs_native
def test_backward_saves_only_what_is_needed():
    """With only the input requiring grad, fprop's backward must not need x (so it is not saved)."""
    case = EDGE_CASES[2]
    x = make_input(case, "nchw").requires_grad_()
    w = make_weight(case)  # no grad
    y = NATIVE.fprop(x, w, None, *conv_lists(case))
    saved = [t for t in y.grad_fn.saved_tensors if t is not None]
    assert all(s.data_ptr() != x.data_ptr() for s in saved)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.autograd.grad(
        F.conv2d(x, w, None, **case.conv_args).sum(), x)[0])


@needs_native
def test_torch_compile_fullgraph_matches_eager():
    case = EDGE_CASES[2]
    x = make_input(case, "channels_last").requires_grad_()
    w = make_weight(case).requires_grad_()
    conv = conv_lists(case)

    def step(x, w):
        y = NATIVE.fprop(x, w, None, *conv)
        return (y * y).sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss_c = compiled(x, w)
    gx_c, gw_c = torch.autograd.grad(loss_c, (x, w))
    loss_e = step(x, w)
    gx_e, gw_e = torch.autograd.grad(loss_e, (x, w))
    torch.testing.assert_close(loss_c, loss_e)
    torch.testing.assert_close(gx_c, gx_e)
    torch.testing.assert_close(gw_c, gw_e)


def test_torch_compile_functional_api_has_no_graph_break():
    case = EDGE_CASES[2]
    x, w = make_input(case, "nchw"), make_weight(case)
    fn = lambda x, w: rk.grouped_conv2d(x, w, groups=case.groups, relu=True)  # noqa: E731
    out = torch.compile(fn, fullgraph=True, backend="eager")(x, w)
    torch.testing.assert_close(out, F.relu(F.conv2d(x, w, None, 1, 1, 1, case.groups)))


# ---------------------------------------------------------------------------------------------
# The functional API: backends, fallbacks, layouts, edge cases, autocast.
@pytest.mark.parametrize("backend", ["auto", "aten", "triton"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_grouped_conv2d_backends_on_cpu(backend, layout):
    case = EDGE_CASES[3]
    gen = torch.Generator().manual_seed(2)
    x = make_input(case, layout, gen=gen)
    w = make_weight(case, gen=gen)
    b = torch.randn(w.shape[0], generator=gen)
    y = rk.grouped_conv2d(x, w, b, stride=2, padding=1, groups=case.groups, backend=backend)
    ref = reference.conv_f64(x, w, b, None, **case.conv_args)["fprop"]
    aten = F.conv2d(x, w, b, **case.conv_args)
    reference.check("fprop", y, aten, ref)
    assert y.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")


def test_cuda_backend_on_cpu_raises_with_reason():
    x, w = torch.randn(1, 8, 5, 5), torch.randn(8, 2, 3, 3)
    with pytest.raises(RuntimeError, match="backend 'cuda' cannot run this call"):
        rk.grouped_conv2d(x, w, groups=4, backend="cuda")


def test_unsupported_arguments_raise_under_explicit_backend_and_work_under_auto():
    x, w5 = torch.randn(1, 8, 7, 7), torch.randn(8, 2, 5, 5)
    with pytest.raises(RuntimeError, match=r"kernel size \(5, 5\) is not 3x3"):
        rk.grouped_conv2d(x, w5, padding=2, groups=4, backend="triton")
    y = rk.grouped_conv2d(x, w5, padding=2, groups=4)
    torch.testing.assert_close(y, F.conv2d(x, w5, None, 1, 2, 1, 4))
    y = rk.grouped_conv2d(x, torch.randn(8, 2, 3, 3), padding="same", groups=4)
    assert y.shape == (1, 8, 7, 7)
    with pytest.raises(ValueError, match="unknown backend"):
        rk.grouped_conv2d(x, w5, groups=4, backend="cudnn")


def test_available_backends_and_reasons():
    backends = rk.available_backends()
    assert "aten" in backends and backends[-1] == "aten"
    assert rk.backend_unavailable_reason("aten") is None
    if not torch.cuda.is_available():
        assert "cuda" not in backends
        assert rk.backend_unavailable_reason("cuda")
        assert not rk.cuda_available()
    variants = rk.cuda_variants()
    if _native._C is not None and _native._C.built_with_cuda():
        assert {v["direction"] for v in variants} == {"fprop", "dgrad", "wgrad"}


@pytest.mark.parametrize("backend", ["aten", "triton"])
def test_batch_zero_gives_empty_output_and_zero_grads(backend):
    x = torch.randn(0, 8, 5, 5, requires_grad=True)
    w = torch.randn(8, 2, 3, 3, requires_grad=True)
    b = torch.randn(8, requires_grad=True)
    y = rk.grouped_conv2d(x, w, b, groups=4, backend=backend)
    assert y.shape == (0, 8, 5, 5)
    y.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("backend", ["aten", "triton"])
def test_unbatched_input(backend):
    x, w = torch.randn(8, 6, 5), torch.randn(8, 2, 3, 3)
    y = rk.grouped_conv2d(x, w, groups=4, backend=backend)
    torch.testing.assert_close(y, F.conv2d(x, w, None, 1, 1, 1, 4), rtol=1e-4, atol=1e-5)
    assert y.dim() == 3


def test_autocast_casts_like_conv2d():
    x, w, b = torch.randn(1, 8, 6, 6), torch.randn(8, 2, 3, 3), torch.randn(8)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, groups=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = rk.grouped_conv2d(x, w, b, groups=4)
        expected = conv(x)
    assert y.dtype == expected.dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------
# Bad input: PyTorch's own wording, raised before any kernel runs.
def _x(*shape, **kw):
    return torch.randn(*shape, **kw)


BAD_INPUTS = [
    ("channels vs groups", lambda: (_x(2, 6, 5, 5), _x(8, 4, 3, 3), None, dict(groups=2)),
     r"Given groups=2, weight of size \[8, 4, 3, 3\], expected input\[2, 6, 5, 5\] to have 8 "
     r"channels, but got 6 channels instead"),
    ("weight not divisible", lambda: (_x(2, 8, 5, 5), _x(7, 4, 3, 3), None, dict(groups=2)),
     r"Given groups=2, expected weight to be divisible by 2 at dimension 0, but got weight of size "
     r"\[7, 4, 3, 3\] instead"),
    ("zero groups", lambda: (_x(2, 8, 5, 5), _x(8, 4, 3, 3), None, dict(groups=0)),
     "non-positive groups is not supported"),
    ("zero stride", lambda: (_x(2, 8, 5, 5), _x(8, 4, 3, 3), None, dict(groups=2, stride=0)),
     "non-positive stride is not supported"),
    ("negative padding", lambda: (_x(2, 8, 5, 5), _x(8, 4, 3, 3), None, dict(groups=2, padding=-1)),
     "negative padding is not supported"),
    ("bias length", lambda: (_x(2, 8, 5, 5), _x(8, 4, 3, 3), _x(7), dict(groups=2)),
     r"Given weight of size \[8, 4, 3, 3\], expected bias to be 1-dimensional with 8 elements, "
     r"but got bias of size \[7\] instead"),
    ("input smaller than kernel", lambda: (_x(2, 8, 2, 2), _x(8, 4, 3, 3), None, dict(groups=2, padding=0)),
     r"Calculated padded input size per channel: \(2 x 2\). Kernel size: \(3 x 3\). Kernel size "
     r"can't be greater than actual input size"),
    ("5-D input", lambda: (_x(1, 2, 8, 2, 2), _x(8, 4, 3, 3), None, dict(groups=2)),
     r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d, but got input of size: "
     r"\[1, 2, 8, 2, 2\]"),
    ("mixed dtypes", lambda: (_x(2, 8, 5, 5), _x(8, 4, 3, 3, dtype=torch.float64), None, dict(groups=2)),
     r"Input type \(torch.float32\) and weight type \(torch.float64\) should be the same"),
    ("mixed bias dtype", lambda: (_x(2, 8, 5, 5), _x(8, 4, 3, 3), _x(8).half(), dict(groups=2)),
     r"Input type \(torch.float32\) and bias type \(torch.float16\) should be the same"),
    ("mixed devices", lambda: (_x(2, 8, 5, 5), _x(8, 4, 3, 3, device="meta"), None, dict(groups=2)),
     "Expected all tensors to be on the same device, but found at least two devices, cpu and meta"),
]


@pytest.mark.parametrize("backend", ["auto", "aten", "triton"])
@pytest.mark.parametrize("name,make,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_raises_pytorch_message(name, make, message, backend, monkeypatch):
    from resnext_kernels.triton import common

    def no_launch(*args, **kwargs):
        raise AssertionError("a kernel was launched for bad input")

    monkeypatch.setattr(common.TunedKernel, "launch", no_launch)
    x, w, b, kw = make()
    with pytest.raises(RuntimeError, match=message):
        rk.grouped_conv2d(x, w, b, backend=backend, **kw)


@needs_native
def test_native_ops_validate_for_cpp_callers():
    """The C++ ops check their arguments themselves (C++ users do not pass through Python)."""
    with pytest.raises(RuntimeError, match="expected input.* to have 8 channels"):
        NATIVE.fprop(_x(2, 6, 5, 5), _x(8, 4, 3, 3), None, [1, 1], [1, 1], [1, 1], 2)
    with pytest.raises(RuntimeError, match="expected grad_output of size"):
        NATIVE.dgrad(_x(2, 8, 4, 4), _x(8, 4, 3, 3), [2, 8, 5, 5], [1, 1], [1, 1], [1, 1], 2)


# ---------------------------------------------------------------------------------------------
# The native packed weight: pack_weight makes it where a CUDA halo rung would run (read there as
# ConvParams::packed); fprop and dgrad check it. The layout's size by hand, from the B fragment's
# registers (halo_fragments.h): 32 lanes x 2 registers a (k-step, n8 tile) pair, a k-step two
# 8-channel chunks of (tap, channel) in a GEMM group, the stride-2 dgrad's classes 1, 2, 2, 4 taps.
def _halo_elems(channels, cg, taps=(9,)):
    slab = 56 if cg == 14 else cg * (32 // cg) if cg < 32 else cg
    gw = 56 if cg == 14 else max(cg, 8)
    ksteps = sum(-(-t * (gw // 8) // 2) for t in taps)
    return 2 * (channels // slab) * (slab // gw) * ksteps * (gw // 8) * 64


@pytest.fixture
def forced_halo():
    yield lambda d, name: _native._C.set_forced_variant(d, name)
    for d in ("fprop", "dgrad"):
        _native._C.set_forced_variant(d, "")


@needs_native
@pytest.mark.skipif(not (_native._C and _native._C.built_with_cuda()), reason="a CUDA build's registry")
@pytest.mark.parametrize("cg,groups,stride", [(4, 32, 1), (4, 32, 2), (14, 8, 1), (32, 4, 2), (64, 2, 1)])
def test_native_pack_plan_follows_the_choice_and_the_layout(cg, groups, stride, forced_halo):
    c = cg * groups
    plan = lambda dtype="bf16", cl=True, dgrad=True: _native._C.pack_weight_plan(  # noqa: E731
        [2, c, 16, 16], [c, cg, 3, 3], [stride] * 2, [1, 1], [1, 1], groups, dtype, cl, dgrad)
    fprop = _halo_elems(c, cg)
    dgrad = _halo_elems(c, cg, (1, 2, 2, 4) if stride == 2 else (9,))
    assert plan() == (fprop, fprop + dgrad, False)        # no halo rung chosen (not verified)
    forced_halo("fprop", "fprop_halo")
    assert plan() == (fprop, fprop + dgrad, True)
    assert plan(dgrad=False) == (fprop, fprop, True)
    assert plan(dtype="fp32")[2] is False and plan(cl=False)[2] is False   # fprop_halo refuses
    forced_halo("fprop", "")
    forced_halo("dgrad", "dgrad_halo")
    assert plan()[2] is True and plan(dgrad=False)[2] is False


@needs_native
def test_native_ops_check_the_packed_weight():
    """On the CPU pack_weight makes nothing (ATen runs); fprop and dgrad take an empty buffer or
    one of pack_weight's sizes and refuse anything else before running; autograd hands dgrad a
    buffer only when it holds dgrad's layout."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 64, 6, 6, generator=gen).to(torch.bfloat16)
    w = (torch.randn(64, 4, 3, 3, generator=gen) * 0.1).to(torch.bfloat16)
    conv = ([1, 1], [1, 1], [1, 1], 16)
    assert NATIVE.packed_weight(x, w, *conv).numel() == 0
    torch.library.opcheck(NATIVE.pack, (x, w, *conv, True))
    with pytest.raises(RuntimeError, match="expected input.* to have 64 channels"):
        NATIVE.packed_weight(x[:, :32], w, *conv)
    fprop, both = _halo_elems(64, 4), 2 * _halo_elems(64, 4)
    ref = F.conv2d(x.float(), w.float(), None, 1, 1, 1, 16)
    dy = torch.randn(ref.shape, generator=gen).to(torch.bfloat16)
    for n in (0, fprop, both):
        buf = torch.zeros(n, dtype=torch.bfloat16)
        torch.testing.assert_close(NATIVE.fprop(x, w, None, *conv, False, buf).float(), ref,
                                   atol=0.05, rtol=0.02)
        torch.library.opcheck(NATIVE.fprop, (x, w, None, *conv, False, buf))
    NATIVE.dgrad(dy, w, list(x.shape), *conv, torch.zeros(both, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match=f"packed has {fprop + 2} elements, but pack_weight "
                                           f"makes {fprop} or, with dgrad, {both}"):
        NATIVE.fprop(x, w, None, *conv, False, torch.zeros(fprop + 2, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match=f"packed has {fprop} elements, but pack_weight makes "
                                           f"{both} \\(with dgrad\\)"):
        NATIVE.dgrad(dy, w, list(x.shape), *conv, torch.zeros(fprop, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match="packed type \\(Float\\) and weight type \\(BFloat16\\)"):
        NATIVE.fprop(x, w, None, *conv, False, torch.zeros(fprop))
    with pytest.raises(RuntimeError, match="contiguous, 16-byte aligned 1-D"):
        NATIVE.fprop(x, w, None, *conv, False, torch.zeros(fprop + 1, dtype=torch.bfloat16)[1:])
    w2 = torch.randn(64, 2, 3, 3).to(torch.bfloat16)          # Cg = 2: no halo layout
    with pytest.raises(RuntimeError, match="makes none for this weight"):
        NATIVE.fprop(x[:, :64], w2, None, [1, 1], [1, 1], [1, 1], 32, False,
                     torch.zeros(8, dtype=torch.bfloat16))
    from resnext_kernels import ops
    holds = lambda buf: ops._native_pack_holds_dgrad(buf, x, w, *conv)  # noqa: E731
    assert holds(torch.zeros(both)) and not holds(torch.zeros(fprop)) and not holds(torch.zeros(0))
    xg = x.float().requires_grad_()                            # the buffer reaches dgrad, checked
    NATIVE.fprop(xg, w.float(), None, *conv, False, torch.zeros(both)).backward(dy.float())
    torch.testing.assert_close(xg.grad, torch.ops.aten.convolution_backward(
        dy.float(), x.float(), w.float(), None, *conv[:3], False, [0, 0], 16,
        [True, False, False])[0])


# ---------------------------------------------------------------------------------------------
# The measured choice of backend="auto" (backend_benchmark.py); GPU integration in test_gpu.py.
@pytest.fixture
def fresh_choices(tmp_path, monkeypatch):
    """An empty choice cache in a temporary folder; measurement on (the default)."""
    from resnext_kernels import backend_benchmark as bench

    bench.clear_backend_benchmark()
    bench.set_backend_cache_dir(str(tmp_path))
    rk.set_backend_benchmark(True)
    yield bench
    bench.clear_backend_benchmark()
    bench.set_backend_cache_dir(os.environ.get("RESNEXT_KERNELS_CACHE_DIR"))
    rk.set_backend_benchmark(True)


def test_backend_benchmark_keeps_the_fastest_and_measures_each_problem_once(fresh_choices):
    bench = fresh_choices
    calls = []
    times = {"aten": 0.30, "triton": 0.20, "cuda": None}  # cuda failed to run: never chosen

    def measure(backend):
        calls.append(backend)
        return times[backend]

    assert bench.choose("p1", lambda: ["aten", "triton", "cuda"], measure) == "triton"
    assert bench.choose("p1", lambda: ["aten", "triton", "cuda"], measure) == "triton"
    assert calls == ["aten", "triton", "cuda"]  # measured once
    times["triton"] = 0.5
    assert bench.choose("p2", lambda: ["aten", "triton"], measure) == "aten"
    assert rk.backend_choices()["p1"] == ("triton", {"aten": 0.30, "triton": 0.20})
    assert bench.fastest({"aten": 1.0, "triton": 1.0}) == "aten"  # ties: the first listed


def test_backend_choices_persist_on_disk_per_environment(fresh_choices, tmp_path):
    bench = fresh_choices
    cpu = torch.device("cpu")
    assert bench.choose("k", lambda: ["aten", "triton"], {"aten": 2.0, "triton": 1.0}.get, cpu) == "triton"
    path = bench.cache_file(cpu)
    assert os.path.dirname(path) == str(tmp_path)
    with open(path) as f:
        data = json.load(f)
    assert data["schema"] == bench.CACHE_SCHEMA and data["environment"]["torch"] == torch.__version__
    assert data["choices"]["k"] == {"backend": "triton", "times_ms": {"aten": 2.0, "triton": 1.0}}
    bench.clear_backend_benchmark()  # a new process: memory empty, the file stays

    def never(backend):
        raise AssertionError("a cached problem must not be measured again")

    assert bench.choose("k", lambda: ["aten", "triton"], never, cpu) == "triton"
    # Another environment (another GPU or library version: another process) has a file of its own.
    env = bench.environment(cpu)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench, "environment", lambda d: dict(env, torch="0.0"))
        bench.clear_backend_benchmark()
        assert bench.cache_file(cpu) != path and bench.cached("k", cpu) is None
    bench.clear_backend_benchmark()
    bench.set_backend_cache_dir(None)  # memory only: nothing written
    bench.clear_backend_benchmark()
    assert bench.cache_file(cpu) is None and bench.cached("k", cpu) is None


def test_backend_benchmark_problem_key_separates_what_changes_the_timing():
    from resnext_kernels import backend_benchmark as bench

    x = torch.randn(2, 8, 5, 5)
    w = torch.randn(8, 2, 3, 3)
    def key(x, w):
        return bench.problem_key(x, w, None, [1, 1], [1, 1], [1, 1], 4, False)

    assert key(x, w) == key(x.clone(), w.clone())
    assert key(x, w) != key(x.to(memory_format=torch.channels_last), w)  # layout
    assert key(x, w) != key(x.half(), w.half())                          # dtype
    assert key(x, w) != key(x, w.clone().requires_grad_())               # backward timed too
    with torch.no_grad():
        assert key(x, w.clone().requires_grad_()) == key(x, w)           # inference: forward only
    frozen = bench.problem_key(x, w, None, [1, 1], [1, 1], [1, 1], 4, False, frozen=True)
    assert key(x, w) != frozen                                           # no packing launch


@pytest.fixture
def auto_on_cpu(fresh_choices, monkeypatch):
    """backend="auto" sending CPU tensors to the kernels (Triton in its interpreter), with fake
    timings: the measured choice exercised without a GPU. Yields (timed backends, fake ms)."""
    from resnext_kernels import functional

    monkeypatch.setattr(functional, "_AUTO_DEVICE", "cpu")
    timed, fake = [], {"aten": 0.5, "triton": 0.2}

    def time_backend(backend, *args):
        timed.append(backend)
        return fake[backend]

    monkeypatch.setattr(functional, "_time_backend", time_backend)
    return timed, fake


def test_auto_measures_a_new_problem_and_runs_the_fastest(auto_on_cpu):
    timed, fake = auto_on_cpu
    case = EDGE_CASES[2]
    x, w = make_input(case, "nchw"), make_weight(case)
    out = rk.grouped_conv2d(x, w, groups=case.groups)
    torch.testing.assert_close(out, F.conv2d(x, w, None, 1, 1, 1, case.groups))
    (choice, times), = rk.backend_choices().values()
    assert times == {"aten": 0.5, "triton": 0.2} and choice == "triton"
    assert rk.last_backend() == "triton" and timed == ["aten", "triton"]
    rk.grouped_conv2d(x, w, groups=case.groups)
    assert len(timed) == 2  # the same problem is not measured again
    fake["triton"] = 0.9
    out = rk.grouped_conv2d(x, w, groups=case.groups, relu=True)  # a new problem: ReLU epilogue
    assert rk.last_backend() == "aten" and len(timed) == 4
    torch.testing.assert_close(out, F.conv2d(x, w, None, 1, 1, 1, case.groups).relu())


def test_auto_times_a_frozen_module_on_what_it_keeps(fresh_choices, monkeypatch):
    """auto measuring a frozen module's call times it as it runs: every timed run of a kernel
    backend gets the module's FrozenWeight, the weight is packed once over the timing and the
    call, and the choice is filed under the frozen problem."""
    from resnext_kernels import functional, ops

    bench = fresh_choices
    monkeypatch.setattr(functional, "_AUTO_DEVICE", "cpu")
    monkeypatch.setattr(bench, "cuda_time_ms", lambda run: (run(), run(), 1.0)[-1])
    runs, packs = [], []
    run, pack = functional._run, ops._triton_pack_weight
    monkeypatch.setattr(functional, "_run", lambda chosen, *a, kept=None: (
        runs.append((chosen, kept is not None)), run(chosen, *a, kept=kept))[-1])
    monkeypatch.setattr(ops, "_triton_pack_weight", lambda *a, **k: (packs.append(k), pack(*a, **k))[-1])
    case = EDGE_CASES[2]
    x, w = make_input(case, "nchw"), make_weight(case)
    m = rk.GroupedConv2d(w.shape[0], w.shape[0], 3, padding=1, groups=case.groups, bias=False)
    with torch.no_grad():
        m.weight.copy_(w)
        m.requires_grad_(False).freeze()
        out = m(x)
    torch.testing.assert_close(out, F.conv2d(x, w, None, 1, 1, 1, case.groups))
    assert ("triton", True) in runs and all(k for b, k in runs if b != "aten")
    assert len(packs) == 1 and m._frozen.made == 1
    key, = rk.backend_choices()
    assert key == bench.problem_key(x, w, None, [1, 1], [1, 1], [1, 1], case.groups, False,
                                    frozen=True)


def test_auto_without_measuring_takes_the_cache_else_cudnn(auto_on_cpu, monkeypatch):
    """During CUDA-graph capture (and torch.compile tracing) nothing is measured: a cached choice
    is used, else ATen (cuDNN)."""
    from resnext_kernels import backend_benchmark as bench

    timed, _ = auto_on_cpu
    case = EDGE_CASES[2]
    x, w = make_input(case, "nchw"), make_weight(case)
    monkeypatch.setattr(bench, "tracing_or_capturing", lambda: True)
    out = rk.grouped_conv2d(x, w, groups=case.groups)
    assert rk.last_backend() == "aten" and not timed and rk.backend_choices() == {}
    torch.testing.assert_close(out, F.conv2d(x, w, None, 1, 1, 1, case.groups))
    key = bench.problem_key(x, w, None, [1, 1], [1, 1], [1, 1], case.groups, False)
    bench.choose(key, lambda: ["triton"], lambda b: 1.0, x.device)
    rk.grouped_conv2d(x, w, groups=case.groups)
    assert rk.last_backend() == "triton" and not timed
    fields = bench.key_fields(x, w, None, [1, 1], [1, 1], [1, 1], case.groups, False)
    assert bench.traced_choice(*fields) == "triton"
    other = bench.key_fields(x, w, None, [1, 1], [1, 1], [1, 1], case.groups, True)
    assert bench.traced_choice(*other) == "aten"


def test_auto_compiles_in_one_graph_without_measuring(auto_on_cpu):
    timed, _ = auto_on_cpu
    case = EDGE_CASES[2]
    x, w = make_input(case, "nchw"), make_weight(case)
    fn = lambda x, w: rk.grouped_conv2d(x, w, groups=case.groups)  # noqa: E731
    out = torch.compile(fn, fullgraph=True, backend="eager")(x, w)
    torch.testing.assert_close(out, F.conv2d(x, w, None, 1, 1, 1, case.groups))
    assert not timed and rk.backend_choices() == {}


def test_auto_with_measurement_off_takes_the_fixed_order(auto_on_cpu):
    from resnext_kernels import functional

    timed, _ = auto_on_cpu
    case = EDGE_CASES[2]
    x, w = make_input(case, "nchw"), make_weight(case)
    rk.set_backend_benchmark(False)
    rk.grouped_conv2d(x, w, groups=case.groups)
    assert rk.last_backend() == functional.AUTO_ORDER[0] and not timed


def test_backend_benchmark_leaves_cpu_and_compiled_calls_alone(fresh_choices):
    case = EDGE_CASES[2]
    x, w = make_input(case, "nchw"), make_weight(case)
    fn = lambda x, w: rk.grouped_conv2d(x, w, groups=case.groups)  # noqa: E731
    out = torch.compile(fn, fullgraph=True, backend="eager")(x, w)
    torch.testing.assert_close(out, F.conv2d(x, w, None, 1, 1, 1, case.groups))
    assert rk.backend_choices() == {}  # CPU tensors: ATen, nothing measured
    rk.grouped_conv2d(x, w, groups=case.groups)
    assert rk.last_backend() == "aten"


def test_convert_summary_names_the_backend_each_layer_ran():
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1, groups=4), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 8, 3, padding=1, groups=2))
    summary = rk.convert(model)
    assert "ran:" not in str(summary) and summary.backends() == {"0": None, "2": None}
    model(torch.randn(1, 8, 5, 5))
    assert summary.backends() == {"0": "aten", "2": "aten"}  # CPU tensors: ATen
    assert "ran: aten x2" in str(summary)


@pytest.mark.skipif(not rk.cuda_variants(), reason="extension built without CUDA kernels")
def test_cuda_selection_controls():
    """The public switches of the CUDA backend's selector (no GPU needed to set them)."""
    rk.force_cuda_variant("fprop", "fprop_direct")
    try:
        assert rk.forced_cuda_variant("fprop") == "fprop_direct"
        with pytest.raises(ValueError, match="wgrad kernel, not fprop"):
            rk.force_cuda_variant("fprop", "wgrad_direct")
        with pytest.raises(ValueError, match="no CUDA kernel variant named"):
            rk.force_cuda_variant("dgrad", "no_such_kernel")
        with pytest.raises(ValueError, match="direction must be"):
            rk.force_cuda_variant("sideways", "")
    finally:
        rk.force_cuda_variant("fprop", "")
    assert rk.forced_cuda_variant("fprop") == ""
    assert not rk.cuda_autotune_enabled()
    rk.set_cuda_autotune(True)
    try:
        assert rk.cuda_autotune_enabled()
    finally:
        rk.set_cuda_autotune(False)
    rk.clear_cuda_autotune_cache()
    if not torch.cuda.is_available():
        assert rk.last_cuda_variant("wgrad") == ""  # no CUDA call can have run here
