"""scripts/gpu_check.py without a GPU: arguments, the no-GPU message, the summary writer and the
output limits, on fake step outputs."""

import json
import os
import subprocess
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import gpu_check  # noqa: E402


def test_arguments():
    args = gpu_check.parse_args(["out", "--quick", "--only", "test", "bench", "--budget", "300"])
    assert args.quick and args.only == ["test", "bench"] and args.budget == 300
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["out", "--only", "lint"])
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["out", "--budget", "5"])
    with pytest.raises(SystemExit):
        gpu_check.parse_args([])


def test_stops_with_a_clear_message_without_gpu(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = tmp_path / "check"
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_check.sh"), str(out)],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHON=sys.executable))
    assert proc.returncode == 2
    assert "no CUDA GPU is visible" in proc.stderr
    summary = (out / "summary.md").read_text()
    assert "| build | skipped | 0 | no GPU |" in summary
    env = json.loads((out / "env.json").read_text())
    assert env["gpu"] is None and env["git_commit"]
    assert not any(p.is_dir() for p in out.iterdir())


def fake_outputs(outdir):
    (outdir / "junit.xml").write_text(
        '<testsuites><testsuite tests="5" failures="1" errors="0" skipped="1">'
        '<testcase classname="tests.test_gpu" name="test_a"/>'
        '<testcase classname="tests.test_gpu" name="test_b"><failure message="x"/></testcase>'
        '</testsuite></testsuites>')
    layer = dict(model="32x4d", name="stage1", direction="fprop", count=3, error=None,
                 median_ms=1.0, roofline_pct=50.0)
    bench = dict(copy_bandwidth_gbs=3000.0,
                 options=dict(dtype="bf16", layout="channels_last", batch=64,
                              backends=["cudnn", "triton"]),
                 layers=[dict(layer, backend="cudnn"), dict(layer, backend="triton", median_ms=0.5,
                                                            roofline_pct=90.0)],
                 models=[dict(model="32x4d", backend="cudnn", direction="fprop", total_ms=3.0),
                         dict(model="32x4d", backend="triton", direction="fprop", total_ms=1.5)])
    (outdir / "bench.json").write_text(json.dumps(bench))


def test_summary_writer_on_fake_outputs(tmp_path):
    fake_outputs(tmp_path)
    steps = [gpu_check.Step(n) for n in ("build", "test", "bench")]
    steps[0].status, steps[1].status, steps[2].status = "passed", "failed (rc 1)", "timeout"
    env = dict(gpu="FakeGPU", driver="1", torch_cuda="13.0", cudnn=1, torch="2", triton="3",
               python="3", git_commit="abc", timestamp="now")
    text = gpu_check.write_summary(str(tmp_path), env, steps)
    assert "GPU: FakeGPU" in text
    assert "| test | failed (rc 1) |" in text and "| bench | timeout |" in text
    assert "Tests: 3 passed, 1 failed, 1 skipped" in text
    assert "FAILED tests.test_gpu::test_b" in text
    assert "32x4d fprop triton: 1.500 ms, 2.00x cuDNN" in text
    assert "triton: roofline 90-90%" in text
    assert (tmp_path / "summary.md").read_text() == text


def test_summary_names_the_fastest_triton_variant(tmp_path):
    from cases import fake_tune_rows

    rows = fake_tune_rows()
    (tmp_path / "tune.json").write_text(json.dumps(dict(rows=rows)))
    text = gpu_check.write_summary(str(tmp_path), {}, [])
    assert ("32x4d stage1 fprop: cuDNN 0.1000 ms, best M128w4s3 tile 0.0800 ms "
            "(50% of roofline)") in text
    assert "measured:" not in text                  # an older tune.json without the rates


def test_summary_shows_the_models_measured_constants(tmp_path):
    from cases import fake_tune_rows

    data = dict(rows=fake_tune_rows(), copy_bandwidth_gbs=4312.4, l2_read_bandwidth_gbs=6020.6,
                graph_launch_us=1.834, env=dict(gpu="NVIDIA H200"))
    (tmp_path / "tune.json").write_text(json.dumps(data))
    text = gpu_check.write_summary(str(tmp_path), {}, [])
    assert ("- measured: copy 4312 GB/s, L2 read 6021 GB/s, a kernel in a graph replay 1.83 us "
            "(the model's H200: copy 4300 GB/s, L2 loads 2800 GB/s fitted, a launch 3 us assumed)") in text
    data.update(env=dict(gpu="NVIDIA A100-SXM4-80GB"), l2_read_bandwidth_gbs=None)
    (tmp_path / "tune.json").write_text(json.dumps(data))
    text = gpu_check.write_summary(str(tmp_path), {}, [])   # a GPU the model does not describe
    assert "- measured: copy 4312 GB/s, a kernel in a graph replay 1.83 us\n" in text


def test_output_limits_bundle_and_trim(tmp_path):
    logs = tmp_path / "logs" / "deep"
    logs.mkdir(parents=True)
    (logs / "build.log").write_text("x" * 100)
    for i in range(10):
        (tmp_path / f"extra{i}.txt").write_text(str(i))
    (tmp_path / "summary.md").write_text("s")
    big = tmp_path / "huge.log"
    big.write_bytes(b"a" * 5000)
    gpu_check.enforce_limits(str(tmp_path), max_files=8, max_bytes=4000)
    entries = list(tmp_path.iterdir())
    assert len(entries) <= 8
    assert all(e.is_file() for e in entries)
    assert all(e.stat().st_size <= 4000 for e in entries)
    assert (tmp_path / "summary.md").exists()  # the summary is never bundled away
    with tarfile.open(tmp_path / "logs.tar.gz") as tar:
        names = tar.getnames()
    assert "logs/deep/build.log" in names and "huge.log" in names


def test_a_step_over_its_budget_gets_sigint_first(tmp_path):
    """The stopped step must get the chance to write partial results (pytest's junit.xml, the
    benchmark's JSON), so the budget sends SIGINT before anything harsher."""
    marker = tmp_path / "partial.txt"
    script = f"trap 'echo partial > {marker}; exit 130' INT; sleep 60 & wait"
    log = tmp_path / "logs" / "step.log"
    status = gpu_check.run_logged(["bash", "-c", script], str(log), timeout=1)
    assert status == "timeout"
    assert marker.read_text().strip() == "partial"
    assert "stopped after 1 s (time budget)" in log.read_text()


def test_summary_tallies_each_cuda_variant(tmp_path):
    cases = [
        ('test_cuda_variants_edge_cases[fprop_mma-n1_5x5-nchw-bf16]', ""),
        ('test_cuda_variants_edge_cases[fprop_mma-n1_5x5-channels_last-bf16]', ""),
        ('test_cuda_variants_resnext50_layers[dgrad_mma-stage 1-bf16]', '<failure message="x"/>'),
        ('test_cuda_variants_edge_cases[dgrad_mma-n1_5x5-nchw-bf16]', ""),
        ('test_cuda_variants_edge_cases[wgrad_smem-n1_5x5-nchw-fp32]', '<skipped/>'),
        ('test_triton_every_gather_config[0]', ""),
    ]
    body = "".join(f'<testcase classname="tests.test_gpu" name="{n}">{inner}</testcase>'
                   for n, inner in cases)
    (tmp_path / "junit.xml").write_text(
        f'<testsuites><testsuite tests="6" failures="1" errors="0" skipped="1">{body}'
        '</testsuite></testsuites>')
    text = gpu_check.write_summary(str(tmp_path), {}, [])
    assert "- fprop_mma: 2 passed, 0 failed" in text
    assert "- dgrad_mma: 1 passed, 1 failed" in text
    assert "wgrad_smem" not in text  # skipped only: nothing measured
    assert "candidates for gpu_verified in csrc/registry.cpp): fprop_mma" in text
