"""The benchmark on the CPU: the default run, the byte and FLOP model, and the report."""

import json
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bench_cardinality  # noqa: E402
import layers as L  # noqa: E402
import report  # noqa: E402


def find(model, name, batch=64):
    return next(x for x in L.resnext50_layers(model, batch) if x.name == name)


def test_byte_and_flop_model_by_hand():
    # Stage 1 of ResNeXt-50 32x4d at batch 64, bf16: x and y are 64*128*56*56 elements each and
    # w is 128*4*3*3, at 2 bytes: 102.76 MB; FLOPs 2*64*56*56*128*4*9 = 1.8496 G.
    s1 = find("32x4d", "stage1")
    assert s1.flops() == pytest.approx(1.850e9, rel=1e-3)
    assert s1.min_bytes("fprop", 2) == pytest.approx(102.8e6, rel=1e-3)
    assert s1.count == 3
    # Stage 4 entry: x 64*1024*14*14, y 64*1024*7*7, w 1024*32*9, bf16: 32.70 MB; same FLOPs.
    s4 = find("32x4d", "stage4.entry")
    assert (s4.p, s4.q, s4.stride, s4.groups) == (7, 7, 2, 32)
    assert s4.min_bytes("wgrad", 2) == pytest.approx(32.702464e6, rel=1e-9)
    assert s4.flops() == pytest.approx(1.8496e9, rel=1e-4)


def test_paper_table_widths():
    """The grouped conv of stage 1 is 64, 80, 96, 112, 128 wide for the paper's (C, d) table,
    doubling per stage; every model has 16 grouped layers."""
    for (c, d), width in zip(L.PAPER_TABLE, (64, 80, 96, 112, 128)):
        layers = L.resnext50_layers(f"{c}x{d}d", 1)
        assert layers[0].c == width and layers[-1].c == 8 * width
        assert sum(x.count for x in layers) == 16


def test_cpu_default_run_writes_valid_json(tmp_path):
    out = tmp_path / "bench.json"
    results = bench_cardinality.main(["--quick", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["schema"] == bench_cardinality.SCHEMA
    assert data["env"]["git_commit"] and data["env"]["torch"]
    assert data["copy_bandwidth_gbs"] > 0
    ok = [r for r in data["layers"] if not r.get("error")]
    assert ok and all(r["median_ms"] > 0 and r["p20_ms"] <= r["p80_ms"] for r in ok)
    assert {m["model"] for m in data["models"]} == {"1x64d", "2x40d", "4x24d", "8x14d", "32x4d"}
    assert any(m["relative_to_c1"] == pytest.approx(1.0) for m in data["models"])
    assert results["options"]["device"] == "cpu"


def test_report_reproduces_a_table_from_a_sample(tmp_path):
    rows = []
    for backend, ms in (("cudnn", 0.2), ("triton", 0.1)):
        rows.append(dict(model="32x4d", name="stage1", direction="fprop", backend=backend,
                         median_ms=ms, roofline_pct=40.0 if backend == "triton" else 20.0, error=None))
    sample = dict(env=dict(gpu="SampleGPU", timestamp="t", git_commit="0123456789abcdef"),
                  options=dict(backends=["cudnn", "triton"], dtype="bf16", layout="channels_last",
                               batch=64, image=224),
                  copy_bandwidth_gbs=3000.0, layers=rows,
                  models=[dict(model="32x4d", backend="cudnn", direction="fprop", total_ms=0.6),
                          dict(model="32x4d", backend="triton", direction="fprop", total_ms=0.3)])
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(sample))
    text = report.section(str(path))
    assert "| stage1 | fprop | 0.2000 | 0.1000 | 2.00x (triton) | 40% |" in text
    assert "| 32x4d | fprop | 0.600 | 0.300 |" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold\n{report.END}\noutro\n")
    report.update_readme(text, str(readme))
    content = readme.read_text()
    assert "old" not in content and "SampleGPU" in content and content.endswith(f"{report.END}\noutro\n")


def test_interrupted_run_still_writes_what_it_measured(tmp_path, monkeypatch):
    real = L.bench_layer
    calls = []

    def stop_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what SIGTERM from the GPU check's budget turns into
        return real(*args, **kwargs)

    monkeypatch.setattr(L, "bench_layer", stop_on_third)
    out = tmp_path / "bench.json"
    bench_cardinality.main(["--quick", "--models", "32x4d", "--directions", "fprop", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["interrupted"] is True
    assert len(data["layers"]) == 2  # the two layers measured before the stop


def test_ladder_adds_one_backend_per_cuda_variant(tmp_path):
    from resnext_kernels import cuda_variants

    out = tmp_path / "bench.json"
    bench_cardinality.main(["--quick", "--models", "32x4d", "--directions", "fprop", "--ladder",
                            "--out", str(out)])
    data = json.loads(out.read_text())
    expected = {f"cuda:{v['name']}" for v in cuda_variants()}
    assert expected <= set(data["options"]["backends"])
    rows = [r for r in data["layers"] if r["backend"].startswith("cuda:")]
    assert {r["backend"] for r in rows} == expected
    if not __import__("torch").cuda.is_available():
        assert all(r["error"] for r in rows)  # the CUDA kernels need a GPU: reported, not run


def test_tune_enumerates_every_config_and_layout():
    """tune_triton.py's work list: each autotune configuration in each launch layout, for every
    layer and direction."""
    import tune_triton
    from resnext_kernels.triton import fprop, wgrad

    items = tune_triton.work_items(tune_triton.parse_args(["--models", "32x4d", "1x64d"]))
    by_key = {}
    for layer, direction, label, kwargs in items:
        by_key.setdefault((layer.model, layer.name, direction), []).append(label)
    gather = len(fprop.AUTOTUNE_CONFIGS) * 3
    assert len(by_key[("32x4d", "stage1", "fprop")]) == gather
    assert len(by_key[("32x4d", "stage2.entry", "dgrad")]) == gather
    assert len(by_key[("32x4d", "stage1", "wgrad")]) == (len(wgrad.AUTOTUNE_CONFIGS)
                                                          + len(wgrad.ALL_TAPS_CONFIGS))
    # 1x64d stage 1 has Cg = 64: wgrad tiles it 2 x 2 in 32 x 32 blocks, so all_taps too.
    assert len(by_key[("1x64d", "stage1", "wgrad")]) == (len(wgrad.AUTOTUNE_CONFIGS)
                                                         + len(wgrad.ALL_TAPS_CONFIGS))
    assert all(len(set(labels)) == len(labels) for labels in by_key.values())


def test_report_tune_section_from_a_sample(tmp_path):
    from cases import fake_tune_rows

    rows = fake_tune_rows()
    sample = dict(env=dict(gpu="FakeGPU", torch="2", triton="3", cudnn=1, timestamp="now",
                           git_commit="abcdef1234567890"),
                  options=dict(dtype="bf16", batch=64), copy_bandwidth_gbs=3000.0, rows=rows)
    path = tmp_path / "tune.json"
    path.write_text(json.dumps(sample))
    text = report.tune_section(str(path))
    assert "FakeGPU" in text and "`abcdef123456`" in text
    assert "| 32x4d | stage1 | fprop | 0.1000 | M128w4s3 tile | 0.0800 | 0.80 | 50% |" in text


def test_end_to_end_rows_answer_what_converting_gains(tmp_path):
    """The end-to-end part: per model, the nn.Conv2d model, the same model converted with
    default settings ("auto"), then the kernel backends; ResNet-50 (1x64d) is the reference."""
    out = tmp_path / "e2e.json"
    data = bench_cardinality.main(["--quick", "--models", "1x64d", "32x4d", "--directions", "fprop",
                                   "--end-to-end", "on", "--e2e-batch", "2", "--out", str(out)])
    rows = {(r["model"], r["backend"], r["mode"]): r for r in data["end_to_end"]}
    for model in ("1x64d", "32x4d"):
        for key in (("nn.Conv2d", "train"), ("nn.Conv2d", "infer"), ("auto", "train"),
                    ("auto", "infer"), ("auto", "infer_fused")):
            row = rows[(model,) + key]
            assert row["error"] is None and row["images_per_s"] > 0, row
        assert (model, "nn.Conv2d", "infer_fused") not in rows  # fusing makes GroupedConv2d layers
    assert rows[("1x64d", "auto", "train")]["relative_to_c1"] == 1.0


def test_plain_conv2d_is_the_unconverted_model():
    from resnext_kernels import GroupedConv2d
    from resnext_kernels.models import resnext50

    model = bench_cardinality.plain_conv2d(resnext50(4, 24))
    assert not any(isinstance(m, GroupedConv2d) for m in model.modules())
    assert sum(isinstance(m, torch.nn.Conv2d) and m.groups == 4 for m in model.modules()) == 16


def test_the_l2_reads_are_one_reduction_over_the_buffer_read_again():
    """layers.l2_reads (the L2 rate's kernel): every row of its stride-0 view sums all of x, and
    nothing is copied (the view's rows share x's memory)."""
    x = torch.arange(1000, dtype=torch.float32)
    view = x.expand(7, x.numel())
    assert view.stride() == (0, 1) and view.data_ptr() == x.data_ptr()
    out = torch.empty(7)
    L.l2_reads(x, 7, out)
    assert torch.equal(out, torch.full((7,), 999 * 1000 / 2))


def test_device_rates_are_missing_not_made_up_on_the_cpu():
    cpu = torch.device("cpu")
    assert L.l2_read_bandwidth_gbs(cpu) is None and L.graph_launch_us(cpu) is None
