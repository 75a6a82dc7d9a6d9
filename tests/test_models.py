"""GroupedConv2d, convert(), the ResNeXt family, inference fusion and training, on the CPU."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnext_kernels.models import (
    PAPER_TABLE, ResNeXt, count_macs, count_parameters, fuse_for_inference, resnet50, resnext50,
    resnext50_32x4d, resnext101_32x8d, resnext101_64x4d)
from resnext_kernels.nn import GroupedConv2d, convert

torchvision = pytest.importorskip("torchvision")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_resnext(backend="auto", conv_cls=None):
    """Two one-block stages on 8x8 inputs, grouped widths 16 and 32 (Cg = 4, 8): a few Triton
    programs per call."""
    torch.manual_seed(0)
    model = ResNeXt(layers=(1, 1), cardinality=4, bottleneck_width=16, num_classes=10,
                    in_channels=1, stem_width=16, small_input=True, backend=backend)
    if conv_cls is nn.Conv2d:  # the same model with plain nn.Conv2d in the grouped places
        for m in model.modules():
            for name, child in list(m.named_children()):
                if isinstance(child, GroupedConv2d):
                    plain = nn.Conv2d(child.in_channels, child.out_channels, 3, child.stride,
                                      child.padding, groups=child.groups, bias=False)
                    plain.weight = child.weight
                    setattr(m, name, plain)
    return model


# ---------------------------------------------------------------------------------------------
# GroupedConv2d and convert().
def test_grouped_conv2d_is_a_drop_in_for_conv2d():
    torch.manual_seed(0)
    ref = nn.Conv2d(32, 64, 3, stride=2, padding=1, groups=8)
    torch.manual_seed(0)
    ours = GroupedConv2d(32, 64, 3, stride=2, padding=1, groups=8)
    assert torch.equal(ours.weight, ref.weight) and torch.equal(ours.bias, ref.bias)  # same init
    assert ours.state_dict().keys() == ref.state_dict().keys()
    other = nn.Conv2d(32, 64, 3, stride=2, padding=1, groups=8)
    ours.load_state_dict(other.state_dict())
    other.load_state_dict(ours.state_dict())
    x = torch.randn(2, 32, 9, 9)
    torch.testing.assert_close(ours(x), other(x))
    shared = GroupedConv2d.from_conv(other, backend="triton")
    assert shared.weight is other.weight and shared.bias is other.bias
    torch.testing.assert_close(shared(x), other(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs,reason", [
    (dict(kernel_size=5, padding=2), "kernel_size=(5, 5)"),
    (dict(kernel_size=3, padding=1, padding_mode="reflect"), "padding_mode='reflect'"),
    (dict(kernel_size=3, padding="same"), "string padding"),
])
def test_unsupported_configurations_take_the_aten_path(kwargs, reason):
    torch.manual_seed(0)
    ours = GroupedConv2d(8, 8, groups=4, backend="triton", **kwargs)
    torch.manual_seed(0)
    ref = nn.Conv2d(8, 8, groups=4, **kwargs)
    assert reason in ours.fallback_reason
    x = torch.randn(1, 8, 7, 7)
    torch.testing.assert_close(ours(x), ref(x))


def test_convert_replaces_grouped_convs_of_torchvision_models():
    torch.manual_seed(0)
    model = torchvision.models.resnext50_32x4d().eval()
    x = torch.randn(1, 3, 64, 64)
    before = model(x)
    summary = convert(model)
    assert len(summary.replaced) == 16 and all(n.endswith("conv2") for n in summary.replaced)
    assert "groups=1" in summary.skipped["conv1"]
    assert "replaced 16 Conv2d" in str(summary)
    torch.testing.assert_close(model(x), before)
    dense = torchvision.models.resnet50()
    assert convert(dense).replaced == []  # nothing grouped
    assert len(convert(dense, include_dense=True).replaced) == 16  # the 3x3 ones


# ---------------------------------------------------------------------------------------------
# The model family.
def test_complexity_table_matches_the_paper():
    """Stage-1 grouped width 64, 80, 96, 112, 128; parameters within 3% and multiply-accumulates
    within 5% of ResNet-50's 25.56 M and 4.09 G (torchvision's counts)."""
    for (c, d), width in zip(PAPER_TABLE, (64, 80, 96, 112, 128)):
        model = resnext50(c, d)
        assert model.layer1[0].conv2.out_channels == width
        assert model.layer4[0].conv2.out_channels == 8 * width
        assert abs(count_parameters(model) / 25.56e6 - 1) < 0.03
        assert abs(count_macs(model) / 4.09e9 - 1) < 0.05
    assert count_parameters(resnext50_32x4d()) == 25_028_904
    assert count_macs(resnext50_32x4d()) == pytest.approx(4.23e9, rel=0.005)
    out = subprocess.run([sys.executable, "-m", "resnext_kernels.models", "--table"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert " 32   4       128       25.03      4.23" in out


@pytest.mark.parametrize("name,ours", [("resnet50", resnet50), ("resnext50_32x4d", resnext50_32x4d),
                                       ("resnext101_32x8d", resnext101_32x8d),
                                       ("resnext101_64x4d", resnext101_64x4d)])
def test_torchvision_state_dict_and_outputs(name, ours):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, name)().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in tv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model = ours().eval()
    model.load_state_dict(tv.state_dict(), strict=True)
    assert count_parameters(model) == count_parameters(tv)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv(x), rtol=1e-4, atol=1e-4)


def test_channels_last_and_autocast_behave_like_torchvision():
    torch.manual_seed(0)
    tv = torchvision.models.resnext50_32x4d().eval()
    model = resnext50_32x4d().eval()
    model.load_state_dict(tv.state_dict())
    x = torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    tv, model = tv.to(memory_format=torch.channels_last), model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv(x), rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ours, theirs = model(x), tv(x)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=0.05, atol=0.05)


# ---------------------------------------------------------------------------------------------
# Inference fusion.
def _randomise_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("backend", ["aten", "triton"])
def test_fusion_matches_unfused(backend):
    model = _randomise_bn(tiny_resnext(backend)).eval()
    fused = fuse_for_inference(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert fused.layer1[0].conv2.relu and fused.layer1[0].conv2.bias is not None
    # Constants for inference: frozen, no gradient (the unfused model's parameters untouched).
    assert all(m.frozen and not m.weight.requires_grad
               for m in fused.modules() if isinstance(m, GroupedConv2d))
    assert all(p.requires_grad for p in model.parameters())
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # original untouched


def test_freeze_marks_every_grouped_conv_and_leaves_the_results():
    """rk.freeze(model) freezes each GroupedConv2d (the repr says so) and nothing else changes:
    the same results, bit for bit, on the ATen path and under CPU autocast; freeze(model, False)
    undoes it."""
    from resnext_kernels import freeze
    model = tiny_resnext("aten").eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(x)
        assert freeze(model) is model
        convs = [m for m in model.modules() if isinstance(m, GroupedConv2d)]
        assert convs and all(m.frozen and "frozen=True" in repr(m) for m in convs)
        assert torch.equal(model(x), before) and torch.equal(model(x), before)
    assert not any(m.frozen for m in freeze(model, False).modules()
                   if isinstance(m, GroupedConv2d))


def test_fusion_of_resnext50():
    model = _randomise_bn(resnext50_32x4d()).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fuse_for_inference(model)(x), model(x), rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Training.
def test_training_with_triton_kernels_tracks_nn_conv2d():
    """A few SGD steps of the same tiny ResNeXt, once with GroupedConv2d on the Triton kernels (in
    the interpreter here) and once with nn.Conv2d: the per-step losses must agree."""
    torch.manual_seed(1)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    losses = {}
    for label, kw in (("triton", dict(backend="triton")), ("conv2d", dict(conv_cls=nn.Conv2d))):
        model = tiny_resnext(**kw)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        losses[label] = []
        for _ in range(4):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[label].append(loss.item())
    assert losses["triton"][-1] < losses["triton"][0]  # it learns
    torch.testing.assert_close(torch.tensor(losses["triton"]), torch.tensor(losses["conv2d"]),
                               rtol=1e-3, atol=1e-4)


def test_example_trains_with_two_gloo_processes(tmp_path):
    metrics = tmp_path / "metrics.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29517", os.path.join(ROOT, "examples", "train.py"),
           "--max-steps", "4", "--no-progress", "--metrics", str(metrics)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(metrics.read_text())
    assert data["world_size"] == 2 and data["steps"] == 4
    assert all(l == l and l < 10 for l in data["losses"])  # finite
    assert "test accuracy" in proc.stdout


def test_compile_fullgraph_small_resnext():
    model = tiny_resnext().eval()
    x = torch.randn(2, 1, 8, 8)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
