"""GPU tests: every CUDA kernel variant and every Triton configuration, against the float64
reference and cuDNN (the tolerance rule uses cuDNN's own error in the same dtype). Skipped
without a GPU; run by scripts/gpu_check.sh, and meant to finish well under two minutes."""

import pytest
import torch

from cases import EDGE_CASES, RESNEXT_STAGE_CASES, Case, make_input, make_operands, make_weight
from resnext_kernels import _native, reference
from resnext_kernels.ops import NATIVE, TRITON
from resnext_kernels.triton import fprop as triton_fprop_mod
from resnext_kernels.triton.dgrad import dgrad as triton_dgrad
from resnext_kernels.triton import wgrad as triton_wgrad_mod

pytestmark = pytest.mark.gpu

# The real grouped layers of ResNeXt-50 32x4d at batch 8 (224x224 input): one per distinct shape.
RESNEXT50_LAYERS = [
    Case(8, 56, 56, 4, 4, 32, 1, 1, "stage 1"),
    Case(8, 56, 56, 8, 8, 32, 2, 1, "stage 2 entry"),
    Case(8, 28, 28, 8, 8, 32, 1, 1, "stage 2"),
    Case(8, 28, 28, 16, 16, 32, 2, 1, "stage 3 entry"),
    Case(8, 14, 14, 16, 16, 32, 1, 1, "stage 3"),
    Case(8, 14, 14, 32, 32, 32, 2, 1, "stage 4 entry"),
    Case(8, 7, 7, 32, 32, 32, 1, 1, "stage 4"),
]

DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def cuda_variants(direction):
    if _native._C is None or not _native._C.built_with_cuda():
        return []
    return [v["name"] for v in _native._C.variants() if v["direction"] == direction]


@pytest.fixture
def tf32_mode(request):
    old = torch.backends.cudnn.allow_tf32
    yield lambda on: setattr(torch.backends.cudnn, "allow_tf32", on)
    torch.backends.cudnn.allow_tf32 = old


@pytest.fixture
def forced_variants():
    """Pins CUDA variants for a test and restores automatic choice afterwards."""
    yield lambda direction, name: _native._C.set_forced_variant(direction, name)
    for d in ("fprop", "dgrad", "wgrad"):
        _native._C.set_forced_variant(d, "")


def run_and_check(family, case, layout, dtype, seed=0, directions=("fprop", "dgrad", "wgrad")):
    o = make_operands(case, layout, dtype, "cuda", seed)
    args = case.conv_args
    conv = (list(args["stride"]), list(args["padding"]), list(args["dilation"]), args["groups"])
    calls = {
        "fprop": lambda: family.fprop(o.x, o.w, o.b, *conv),
        "dgrad": lambda: family.dgrad(o.dy, o.w, list(o.x.shape), *conv),
        "wgrad": lambda: family.wgrad(o.dy, o.x, list(o.w.shape), *conv),
    }
    out = {d: calls[d]() for d in directions}
    torch.cuda.synchronize()
    for direction, got in out.items():
        reference.check(direction, got, o.aten[direction], o.ref[direction])
    return out


# Every CUDA variant of the registry, GPU-verified or not, as (direction, name): one test each,
# so that a failure names the variant (and a GPU check tells which ones may be marked verified).
ALL_CUDA_VARIANTS = [(d, v) for d in ("fprop", "dgrad", "wgrad") for v in cuda_variants(d)]


def run_forced(variant_id, case, layout, dtype, forced_variants):
    """The case with one direction forced to one variant. A variant that does not claim the case
    refuses it before any launch (its can_implement): that refusal passes, anything else fails.
    Returns whether the variant ran."""
    direction, variant = variant_id
    forced_variants(direction, variant)
    _poison_allocator()
    try:
        run_and_check(NATIVE, case, layout, dtype, directions=(direction,))
    except RuntimeError as exc:
        if f"forced variant {variant} cannot run this problem" not in str(exc):
            raise
        return False
    return True


def _poison_allocator():
    """The CUDA ops allocate with at::empty; fill a large block of the caching allocator with
    NaN and free it first, so that the outputs allocated next start as NaN and an unwritten
    element fails the check instead of passing with a stale value."""
    junk = torch.full((64 << 20,), float("nan"), device="cuda")
    del junk


@pytest.mark.parametrize("mode", list(DTYPES))
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", EDGE_CASES + RESNEXT_STAGE_CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("variant", ALL_CUDA_VARIANTS, ids=lambda v: v[1])
def test_cuda_variants_edge_cases(variant, case, layout, mode, tf32_mode, forced_variants):
    """Every registry variant forced on every edge case it claims."""
    tf32_mode(mode == "tf32")
    run_forced(variant, case, layout, DTYPES[mode], forced_variants)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_fprop_halo_packing_its_weight_in_the_call(dtype, forced_variants):
    """32x4d stage 4 at batch 64: fprop_halo given no packed weight packs it first itself (its
    CTAs packing would hold the grid to a third; two launches, as the shape says) and runs the
    pre-packed kernel: bit for bit what that kernel computes on pack_weight's buffer, and
    against the reference."""
    case = Case(64, 7, 7, 32, 32, 32, 1, 1, "stage 4, batch 64")
    o = make_operands(case, "channels_last", dtype, "cuda", seed=6)
    args = case.conv_args
    conv = (list(args["stride"]), list(args["padding"]), list(args["dilation"]), args["groups"])
    shape = _native._C.variant_shape("fprop_halo", list(o.x.shape), list(o.w.shape), *conv,
                                     "bf16" if dtype == torch.bfloat16 else "fp16", True,
                                     torch.cuda.get_device_properties(0).multi_processor_count)
    if shape["launches"] != 2:   # the rule at 132 SMs is pinned on the CPU (test_halo.cpp)
        pytest.skip("on this GPU's SM count fprop_halo packs in its CTAs here")
    assert shape["workspace_elems"] > 0
    forced_variants("fprop", "fprop_halo")
    _poison_allocator()
    in_call = NATIVE.fprop(o.x, o.w, o.b, *conv, False)
    on_buffer = NATIVE.fprop(o.x, o.w, o.b, *conv, False, NATIVE.packed_weight(o.x, o.w, *conv))
    torch.cuda.synchronize()
    assert torch.equal(in_call, on_buffer)
    reference.check("fprop", in_call, o.aten["fprop"], o.ref["fprop"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", EDGE_CASES + RESNEXT_STAGE_CASES, ids=lambda c: c.id)
def test_fprop_halo_epilogue_forms(case, dtype, forced_variants):
    """fprop_halo's four epilogues (bias or not, ReLU or not: fprop_halo.cu `epilogue`, ReLU the
    conversion's clamp) against the reference; ReLU's output is exactly the ReLU of the output
    without it (rounding and the clamp commute)."""
    args = case.conv_args
    conv = (list(args["stride"]), list(args["padding"]), list(args["dilation"]), args["groups"])
    forced_variants("fprop", "fprop_halo")
    for bias in (False, True):
        o = make_operands(case, "channels_last", dtype, "cuda", seed=7, bias=bias)
        outs = {}
        for relu in (False, True):
            _poison_allocator()
            try:
                outs[relu] = NATIVE.fprop(o.x, o.w, o.b, *conv, relu)
            except RuntimeError as exc:
                if "forced variant fprop_halo cannot run this problem" not in str(exc):
                    raise
                pytest.skip("fprop_halo does not claim this case")
        torch.cuda.synchronize()
        reference.check("fprop", outs[False], o.aten["fprop"], o.ref["fprop"])
        reference.check("fprop", outs[True], torch.relu(o.aten["fprop"]), torch.relu(o.ref["fprop"]))
        assert torch.equal(outs[True], torch.relu(outs[False])), f"bias={bias}"


@pytest.mark.parametrize("case", [Case(64, 56, 56, 4, 4, 32, 1, 1, "stage 1, batch 64"),
                                  Case(64, 14, 14, 32, 32, 32, 2, 1, "stage 4 entry, batch 64"),
                                  Case(16, 7, 7, 32, 32, 32, 1, 1, "stage 4, batch 16")],
                         ids=lambda c: c.why)
def test_wgrad_halo_cluster_reduction(case, forced_variants):
    """From sm_90 wgrad_halo adds its splits inside the launch, in a thread-block cluster of each
    block's splits: bit for bit what its two-launch path (partials, then wgrad_reduce, the same
    split count) gives, against the reference, and the same again replayed from a CUDA graph."""
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("thread-block clusters need sm_90")
    o = make_operands(case, "channels_last", torch.bfloat16, "cuda", seed=9)
    args = case.conv_args
    conv = (list(args["stride"]), list(args["padding"]), list(args["dilation"]), args["groups"])
    shape = _native._C.variant_shape("wgrad_halo", list(o.x.shape), list(o.w.shape), *conv, "bf16", True,
                                     torch.cuda.get_device_properties(0).multi_processor_count)
    assert shape["launches"] == 1 and shape["cluster"] == shape["splits"] > 1
    forced_variants("wgrad", "wgrad_halo")
    _poison_allocator()
    launched = _native._C._wgrad_halo_cluster_launches()
    in_cluster = NATIVE.wgrad(o.dy, o.x, list(o.w.shape), *conv)
    # The device scheduled the cluster (stage 1's 16 CTAs are a non-portable size): else the
    # launch would have taken the two-launch path and the comparison below would be void.
    assert _native._C._wgrad_halo_cluster_launches() == launched + 1
    previous = _native._C._set_wgrad_halo_cluster_reduction(False)
    try:
        _poison_allocator()
        two_launches = NATIVE.wgrad(o.dy, o.x, list(o.w.shape), *conv)
    finally:
        _native._C._set_wgrad_halo_cluster_reduction(previous)
    torch.cuda.synchronize()
    assert torch.equal(in_cluster, two_launches)
    reference.check("wgrad", in_cluster, o.aten["wgrad"], o.ref["wgrad"])
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        replayed = NATIVE.wgrad(o.dy, o.x, list(o.w.shape), *conv)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(replayed, in_cluster)


@pytest.mark.parametrize("mode", ["bf16", "fp32"])
@pytest.mark.parametrize("case", RESNEXT50_LAYERS, ids=lambda c: c.why)
@pytest.mark.parametrize("variant", ALL_CUDA_VARIANTS, ids=lambda v: v[1])
def test_cuda_variants_resnext50_layers(variant, case, mode, tf32_mode, forced_variants):
    """Every registry variant forced on the real ResNeXt-50 32x4d layers (batch 8) it claims."""
    tf32_mode(False)
    run_forced(variant, case, "channels_last", DTYPES[mode], forced_variants)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", EDGE_CASES + RESNEXT_STAGE_CASES + RESNEXT50_LAYERS, ids=lambda c: c.id)
def test_halo_rungs_on_the_weight_packed_before_the_launch(case, dtype, forced_variants):
    """fprop_halo and dgrad_halo on pack_weight's buffer (both layouts, one launch) compute
    bit for bit what they compute packing in their CTAs, and match the reference; with no halo
    rung chosen pack_weight makes nothing."""
    o = make_operands(case, "channels_last", dtype, "cuda", seed=4)
    args = case.conv_args
    conv = (list(args["stride"]), list(args["padding"]), list(args["dilation"]), args["groups"])
    forced_variants("fprop", "fprop_direct")
    forced_variants("dgrad", "dgrad_direct")
    assert NATIVE.packed_weight(o.x, o.w, *conv).numel() == 0
    forced_variants("fprop", "fprop_halo")
    forced_variants("dgrad", "dgrad_halo")
    packed = NATIVE.packed_weight(o.x, o.w, *conv)
    torch.library.opcheck(NATIVE.pack, (o.x, o.w, *conv, True))
    runs = {"fprop": (lambda *p: NATIVE.fprop(o.x, o.w, o.b, *conv, False, *p)),
            "dgrad": (lambda *p: NATIVE.dgrad(o.dy, o.w, list(o.x.shape), *conv, *p))}
    ran = 0
    for direction, run in runs.items():
        try:
            in_ctas = run()
        except RuntimeError as exc:
            if f"forced variant {direction}_halo cannot run this problem" not in str(exc):
                raise
            continue
        assert packed.numel() > 0, "a halo rung ran but pack_weight made nothing"
        _poison_allocator()
        prepacked = run(packed)
        torch.cuda.synchronize()
        assert torch.equal(prepacked, in_ctas), direction
        reference.check(direction, prepacked, o.aten[direction], o.ref[direction])
        ran += 1
    assert ran > 0 or packed.numel() == 0


@pytest.mark.parametrize("mode", ["bf16", "fp32"])
@pytest.mark.parametrize("case", RESNEXT50_LAYERS, ids=lambda c: c.why)
def test_cuda_resnext50_layers(case, mode, tf32_mode):
    if not cuda_variants("fprop"):
        pytest.skip("extension built without CUDA kernels")
    tf32_mode(False)
    run_and_check(NATIVE, case, "channels_last", DTYPES[mode])


@pytest.mark.parametrize("mode", ["bf16", "fp32"])
@pytest.mark.parametrize("case", RESNEXT50_LAYERS, ids=lambda c: c.why)
def test_triton_resnext50_layers(case, mode, tf32_mode):
    tf32_mode(False)
    run_and_check(TRITON, case, "channels_last", DTYPES[mode])


@pytest.mark.parametrize("config_index", range(len(triton_fprop_mod.AUTOTUNE_CONFIGS)))
def test_triton_every_gather_config(config_index):
    """Each autotune configuration (num_warps 4 and 8 included, see pytorch#173068) on its own."""
    config = triton_fprop_mod.AUTOTUNE_CONFIGS[config_index]
    case = RESNEXT_STAGE_CASES[1]
    o = make_operands(case, "channels_last", torch.bfloat16, "cuda", config_index, bias=False)
    conv = ([2, 2], [1, 1], [1, 1], case.groups)
    # One channel tile per program, all of them, and channel tiles fastest in launch order.
    for layout in (dict(tiles_per_prog=1), dict(tiles_per_prog=0), dict(channels_fastest=True)):
        y = triton_fprop_mod.fprop(o.x, o.w, None, *conv, config=config, **layout)
        dx = triton_dgrad(o.dy, o.w, list(o.x.shape), *conv, config=config, **layout)
        reference.check("fprop", y, o.aten["fprop"], o.ref["fprop"])
        reference.check("dgrad", dx, o.aten["dgrad"], o.ref["dgrad"])


@pytest.mark.parametrize("all_taps, config_index",
                         [(False, i) for i in range(len(triton_wgrad_mod.AUTOTUNE_CONFIGS))]
                         + [(True, i) for i in range(len(triton_wgrad_mod.ALL_TAPS_CONFIGS))])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_triton_every_wgrad_config(all_taps, config_index, dtype):
    """Each configuration of each tap layout, in bf16 and fp32 (fp32 doubles the shared memory
    a pipeline stage needs)."""
    config = triton_wgrad_mod.configs_for(all_taps)[config_index]
    case = RESNEXT_STAGE_CASES[0]
    o = make_operands(case, "channels_last", dtype, "cuda", config_index, bias=False)
    dw = triton_wgrad_mod.wgrad(o.dy, o.x, list(o.w.shape), [1, 1], [1, 1], [1, 1], case.groups,
                                splits=2, config=config, all_taps=all_taps)
    reference.check("wgrad", dw, o.aten["wgrad"], o.ref["wgrad"])


@pytest.mark.parametrize("family", [NATIVE, TRITON], ids=lambda f: f.name if f else "none")
def test_non_default_stream_and_graph_replay(family):
    if family is NATIVE and not cuda_variants("fprop"):
        pytest.skip("extension built without CUDA kernels")
    case = RESNEXT_STAGE_CASES[0]
    gen = torch.Generator().manual_seed(7)
    x = make_input(case, "channels_last", torch.bfloat16, "cuda", gen)
    w = make_weight(case, torch.bfloat16, "cuda", gen)
    conv = ([1, 1], [1, 1], [1, 1], case.groups)
    eager = family.fprop(x, w, None, *conv)
    eager_dw = family.wgrad(eager, x, list(w.shape), *conv)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        on_side = family.fprop(x, w, None, *conv)
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(on_side, eager)
    # Warm up (autotuning, allocations) outside the capture, then capture and replay.
    with torch.cuda.stream(side):
        family.fprop(x, w, None, *conv)
        family.wgrad(eager, x, list(w.shape), *conv)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        g_y = family.fprop(x, w, None, *conv)
        g_dw = family.wgrad(eager, x, list(w.shape), *conv)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(g_y, eager)
    assert torch.equal(g_dw, eager_dw)


@pytest.mark.parametrize("family", [NATIVE, TRITON], ids=lambda f: f.name if f else "none")
def test_wgrad_bitwise_deterministic(family):
    if family is NATIVE and not cuda_variants("wgrad"):
        pytest.skip("extension built without CUDA kernels")
    case = RESNEXT50_LAYERS[0]
    gen = torch.Generator().manual_seed(8)
    x = make_input(case, "channels_last", torch.bfloat16, "cuda", gen)
    dy = make_input(case, "channels_last", torch.bfloat16, "cuda", gen)
    conv = ([1, 1], [1, 1], [1, 1], case.groups)
    first = family.wgrad(dy, x, [128, 4, 3, 3], *conv)
    second = family.wgrad(dy, x, [128, 4, 3, 3], *conv)
    assert torch.equal(first, second)


def test_triton_ops_pass_opcheck_on_gpu():
    case = RESNEXT_STAGE_CASES[0]
    gen = torch.Generator().manual_seed(9)
    x = make_input(case, "channels_last", torch.float32, "cuda", gen).requires_grad_()
    w = make_weight(case, torch.float32, "cuda", gen).requires_grad_()
    torch.library.opcheck(TRITON.fprop, (x, w, None, [1, 1], [1, 1], [1, 1], case.groups, False))
    # The packing op, and fprop and dgrad on its buffer (the training step's path).
    packed = TRITON.pack(w.detach(), case.groups)
    dy = torch.randn(x.shape, generator=gen).to("cuda")
    dy = dy.contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(TRITON.pack, (w.detach(), case.groups))
    torch.library.opcheck(TRITON.pack, (w.detach(), case.groups, False))  # a frozen module's
    torch.library.opcheck(TRITON.fprop, (x, w, None, [1, 1], [1, 1], [1, 1], case.groups, False,
                                         packed))
    torch.library.opcheck(TRITON.dgrad, (dy, w, list(x.shape), [1, 1], [1, 1], [1, 1],
                                         case.groups, packed))


def test_triton_training_step_compiles_in_one_graph():
    """The training step's path (the forward pass packs for dgrad, autograd saves the buffer)
    under torch.compile's AOT autograd, against eager."""
    import resnext_kernels as rk
    case = RESNEXT_STAGE_CASES[1]
    gen = torch.Generator().manual_seed(11)
    x = make_input(case, "channels_last", torch.float32, "cuda", gen).requires_grad_()
    w = make_weight(case, torch.float32, "cuda", gen).requires_grad_()

    def step(a, b):
        y = rk.grouped_conv2d(a, b, stride=case.stride, groups=case.groups, backend="triton")
        return (y * y).sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    grads_c = torch.autograd.grad(compiled(x, w), (x, w))
    grads_e = torch.autograd.grad(step(x, w), (x, w))
    for c, e in zip(grads_c, grads_e):
        torch.testing.assert_close(c, e)


def test_frozen_module_under_compile_and_graph_capture():
    """A frozen GroupedConv2d on the Triton kernels in bf16: eager calls keep its packed weight;
    under torch.compile (fullgraph) and inside a CUDA graph capture it keeps nothing new and
    computes what eager does."""
    import resnext_kernels as rk
    case = RESNEXT_STAGE_CASES[1]
    gen = torch.Generator().manual_seed(12)
    x = make_input(case, "channels_last", torch.bfloat16, "cuda", gen)
    w = make_weight(case, torch.bfloat16, "cuda", gen)
    m = rk.GroupedConv2d(w.shape[0], w.shape[0], 3, case.stride, 1, groups=case.groups,
                         bias=False, backend="triton", device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        m.weight.copy_(w)
    m.requires_grad_(False).freeze()
    eager = m(x)
    assert m._frozen.made == 1
    compiled = torch.compile(m, fullgraph=True)
    assert torch.equal(compiled(x), eager)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        m(x)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = m(x)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, eager) and m._frozen.made == 1


def test_auto_backend_on_gpu_and_compile():
    import resnext_kernels as rk
    case = RESNEXT_STAGE_CASES[2]
    gen = torch.Generator().manual_seed(10)
    x = make_input(case, "channels_last", torch.bfloat16, "cuda", gen)
    w = make_weight(case, torch.bfloat16, "cuda", gen)
    eager = rk.grouped_conv2d(x, w, groups=case.groups)
    for backend in rk.available_backends():
        compiled = torch.compile(lambda a, b: rk.grouped_conv2d(a, b, groups=case.groups,
                                                                backend=backend), fullgraph=True)
        out = compiled(x, w)
        ref = reference.conv_f64(x, w, None, None, **case.conv_args)["fprop"]
        cudnn = reference.conv_in_dtype(x, w, None, None, **case.conv_args)["fprop"]
        reference.check("fprop", out, cudnn, ref)
    assert eager.is_contiguous(memory_format=torch.channels_last)


def test_auto_falls_back_to_aten_with_a_reason():
    import resnext_kernels as rk
    x = torch.randn(1, 8, 9, 9, device="cuda")
    w = torch.randn(8, 2, 5, 5, device="cuda")
    y = rk.grouped_conv2d(x, w, padding=2, groups=4)
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, w, None, 1, 2, 1, 4))
    assert "3x3" in rk.last_fallback_reason()


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_resnext50_bf16_matches_cudnn_within_the_tolerance_rule(backend, fused):
    """The whole ResNeXt-50 32x4d in bf16 channels_last on our kernels, fused or not, against
    the float64 model on the CPU: at most twice cuDNN's own bf16 error (plus the floor)."""
    if backend == "cuda" and not cuda_variants("fprop"):
        pytest.skip("extension built without CUDA kernels")
    from resnext_kernels.models import fuse_for_inference, resnext50_32x4d
    from resnext_kernels.nn import GroupedConv2d
    torch.manual_seed(0)
    model = resnext50_32x4d().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model.double()(x.double())
        net = fuse_for_inference(model) if fused else model

        def run(name):
            for m in net.modules():
                if isinstance(m, GroupedConv2d):
                    m.backend = name
            gpu = net.to("cuda", torch.bfloat16, memory_format=torch.channels_last)
            return gpu(x.to("cuda", torch.bfloat16).contiguous(memory_format=torch.channels_last))

        ours, cudnn = run(backend), run("aten")
    reference.check("fprop", ours.float(), cudnn.float(), ref)


def test_auto_with_backend_benchmark_picks_a_measured_backend_and_stays_correct():
    """The default auto: the first call of a problem times every backend that can run it
    (cuDNN included), keeps the fastest, and the results stay right in training."""
    import resnext_kernels as rk
    from resnext_kernels import backend_benchmark as bench

    case = RESNEXT_STAGE_CASES[0]
    gen = torch.Generator().manual_seed(11)
    x = make_input(case, "channels_last", torch.bfloat16, "cuda", gen).requires_grad_()
    w = make_weight(case, torch.bfloat16, "cuda", gen).requires_grad_()
    bench.clear_backend_benchmark()
    rk.set_backend_benchmark(True)
    try:
        y = rk.grouped_conv2d(x, w, groups=case.groups)
        y.float().sum().backward()
        (choice, times), = rk.backend_choices().values()
        assert "aten" in times and choice == min(times, key=times.get)
        assert set(times) <= {"aten", "triton", "cuda"}
        ref = reference.conv_f64(x.detach(), w.detach(), None, torch.ones_like(y), **case.conv_args)
        aten = reference.conv_in_dtype(x.detach(), w.detach(), None, torch.ones_like(y), **case.conv_args)
        reference.check("fprop", y, aten["fprop"], ref["fprop"])
        reference.check("dgrad", x.grad, aten["dgrad"], ref["dgrad"])
        reference.check("wgrad", w.grad, aten["wgrad"], ref["wgrad"])
    finally:
        bench.clear_backend_benchmark()
