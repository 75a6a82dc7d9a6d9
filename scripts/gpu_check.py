"""One-command GPU check: build, test, sanitize and benchmark within a time budget.

    scripts/gpu_check.sh OUTDIR [--quick] [--only test bench ...] [--budget SECONDS]

Steps, in order, each logged and timed, none stopping the later ones:
  env       environment header (GPU, driver, CUDA, cuDNN, torch, triton, commit) -> env.json
  build     the extension in place, for this GPU's architecture only, all cores, no downloads
  test      the GPU test suite (CUDA and Triton backends, bf16 included) -> junit.xml
            (--quick: scripts/gpu_smoke.py, one small check of each kernel)
  sanitize  compute-sanitizer memcheck and racecheck over scripts/gpu_smoke.py --backends cuda
  tune      benchmarks/tune_triton.py: every Triton configuration and launch layout on the
            ResNeXt-50 32x4d layers against cuDNN -> tune.json
  profile   scripts/profile_kernels.py: Nsight Compute counters of one launch of every CUDA
            variant, the default Triton kernels and cuDNN on four 32x4d layers -> profile.json
            (skipped without ncu); benchmarks/perf_model.py prints them beside its predictions
  bench     benchmarks/bench_cardinality.py --quick --ladder --models 32x4d --end-to-end off
            (--bench-args changes it) -> bench.json, bench.png
  summary   summary.md: what passed, what failed, key speed ratios; printed last

OUTDIR gets at most 8 files, none over 16 MB, no sub-folders: logs go into logs.tar.gz.
When the budget (default 480 s) runs out, the running step is stopped and the summary written.
`--only` runs the named steps in the order given (build always first).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = ("build", "test", "sanitize", "tune", "profile", "bench")
# The check's benchmark: what fits its share of the budget (the full sweep, an estimated 5-6 minutes, would not).
# End to end: ResNeXt-50 32x4d trained and run for inference as built from nn.Conv2d and as
# converted with default settings (auto), side by side.
DEFAULT_BENCH_ARGS = "--quick --ladder --models 32x4d --e2e-backends nn.Conv2d auto"
MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20
LOG_TAIL_BYTES = 2 * 2**20      # a log longer than this keeps its head and tail
SUMMARY_RESERVE_S = 20          # budget kept back for bundling and the summary
STOP_GRACE_S = 15               # time a stopped step gets to write its partial results
# Largest share of the budget each step may take (the rest of the budget caps it too).
STEP_CAP_S = {"build": 240, "test": 260, "sanitize": 90, "tune": 200, "profile": 120, "bench": 300}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="One-command GPU check (see module docstring).")
    ap.add_argument("outdir")
    ap.add_argument("--quick", action="store_true", help="build plus one smoke test per backend")
    ap.add_argument("--only", nargs="+", choices=STEPS, help="run only these steps")
    ap.add_argument("--budget", type=float, default=480.0, help="overall seconds (default 480)")
    ap.add_argument("--bench-args", default=DEFAULT_BENCH_ARGS,
                    help=f"arguments for bench_cardinality.py (default: {DEFAULT_BENCH_ARGS!r}: "
                         "ResNeXt-50 32x4d's layers, each CUDA kernel variant also timed on its "
                         "own; '' runs the full sweep with the end-to-end part)")
    args = ap.parse_args(argv)
    if args.budget <= SUMMARY_RESERVE_S:
        ap.error(f"--budget must be more than {SUMMARY_RESERVE_S} seconds")
    return args


class Step:
    def __init__(self, name: str):
        self.name = name
        self.status = "not run"
        self.seconds = 0.0
        self.detail = ""

    def as_dict(self):
        return dict(name=self.name, status=self.status, seconds=round(self.seconds, 1),
                    detail=self.detail)


def _wait_group_gone(pgid: int, seconds: float = 5.0) -> None:
    """Waits until no process of group `pgid` is left (SIGKILL to stragglers at the end)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_logged(cmd: List[str], log_path: str, timeout: float, env=None) -> str:
    """Runs `cmd` with output to `log_path`; returns "passed", "failed (rc N)" or "timeout"."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            # SIGINT first: pytest then still prints its summary and writes junit.xml, and the
            # benchmark writes what it measured. Then SIGTERM, then SIGKILL, to the whole group
            # (pytest-xdist workers included), so nothing keeps the GPU busy for the next step.
            for sig, grace in ((signal.SIGINT, STOP_GRACE_S), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            _wait_group_gone(proc.pid)
            log.write(f"\n[gpu_check] stopped after {timeout:.0f} s (time budget)\n".encode())
            return "timeout"
    return "passed" if rc == 0 else f"failed (rc {rc})"


# ---------------------------------------------------------------------------------------------
# Summary and output limits (tested without a GPU in tests/test_gpu_check.py).
def _junit_root(path: str):
    """The parsed junit.xml, or None when it is missing or unreadable (a step stopped hard)."""
    if not os.path.exists(path):
        return None
    try:
        return ET.parse(path).getroot()
    except ET.ParseError:
        return None


def junit_counts(path: str) -> Optional[Dict[str, int]]:
    root = _junit_root(path)
    if root is None:
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = dict(tests=0, failures=0, errors=0, skipped=0)
    for s in suites:
        for k in counts:
            counts[k] += int(s.get(k, 0))
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in root.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    counts["failed_names"] = failed[:20]
    return counts


def variant_results(path: str) -> List[str]:
    """Per CUDA kernel variant, from the per-variant GPU tests (tests/test_gpu.py, whose ids
    start with the variant's name): how many passed (a refusal of a case the variant does not
    claim passes) and failed. A variant with no failure is a candidate for gpu_verified."""
    root = _junit_root(path)
    if root is None:
        return []
    tally: Dict[str, List[int]] = {}
    for case in root.iter("testcase"):
        name = case.get("name") or ""
        if not name.startswith("test_cuda_variants_") or "[" not in name:
            continue
        if case.find("skipped") is not None:
            continue
        variant = name.split("[", 1)[1].split("-", 1)[0]
        failed = case.find("failure") is not None or case.find("error") is not None
        tally.setdefault(variant, [0, 0])[int(failed)] += 1
    lines = [f"{v}: {ok} passed, {bad} failed" for v, (ok, bad) in sorted(tally.items())]
    clean = [v for v, (ok, bad) in sorted(tally.items()) if ok and not bad]
    if clean:
        lines.append("no failure (candidates for gpu_verified in csrc/registry.cpp): " + ", ".join(clean))
    return lines


def bench_ratios(path: str) -> List[str]:
    """Key lines from a bench JSON: per model, direction and backend, the total time of the
    grouped layers and the speed-up over cuDNN; and the roofline range per backend."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        data = json.load(f)
    lines = [f"copy bandwidth {data['copy_bandwidth_gbs']:.0f} GB/s, "
             f"{data['options']['dtype']} {data['options']['layout']} batch {data['options']['batch']}"]
    totals = {(m["model"], m["backend"], m["direction"]): m["total_ms"] for m in data["models"]}
    for (model, backend, direction), ms in sorted(totals.items()):
        base = totals.get((model, "cudnn", direction))
        ratio = f", {base / ms:.2f}x cuDNN" if base and backend != "cudnn" else ""
        lines.append(f"{model} {direction} {backend}: {ms:.3f} ms{ratio}")
    for backend in data["options"]["backends"]:
        roof = [r["roofline_pct"] for r in data["layers"]
                if r["backend"] == backend and not r.get("error") and r.get("roofline_pct")]
        errors = sum(1 for r in data["layers"] if r["backend"] == backend and r.get("error"))
        if roof:
            lines.append(f"{backend}: roofline {min(roof):.0f}-{max(roof):.0f}% over {len(roof)} "
                         f"layer-directions, {errors} not run")
    e2e = {(r["model"], r["backend"], r["mode"]): r for r in data.get("end_to_end", [])}
    for (model, backend, mode), r in sorted(e2e.items()):
        base = e2e.get((model, "nn.Conv2d", mode if mode != "infer_fused" else "infer"))
        if r.get("error"):
            lines.append(f"end to end {model} {backend} {mode}: not run ({r['error'][:60]})")
        elif backend != "nn.Conv2d" and base and not base.get("error"):
            lines.append(f"end to end {model} {mode}: {backend} {r['images_per_s']:.0f} images/s, "
                         f"{r['images_per_s'] / base['images_per_s']:.2f}x the nn.Conv2d model")
    return lines


def _model_gpu(device_name: Optional[str]):
    """The performance model's description of the GPU named `device_name` (None if it has none),
    read from resnext_kernels/perf_model.py by path: it needs only the standard library, while
    importing the package would load torch and the extension."""
    model = sys.modules.get("_rk_perf_model")
    if model is None:
        path = os.path.join(ROOT, "resnext_kernels", "perf_model.py")
        spec = importlib.util.spec_from_file_location("_rk_perf_model", path)
        model = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = model     # (its dataclasses look their module up there)
        spec.loader.exec_module(model)
    key = model.gpu_key(device_name)
    return model.GPUS.get(key) if key else None


def tune_best(path: str) -> List[str]:
    """The device's measured rates of a tune JSON (copy and L2 read bandwidth, a kernel's cost in
    a graph replay: the performance model's constants), then per layer and direction cuDNN's
    time and the fastest Triton variant."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        data = json.load(f)
    rows = data["rows"]
    rates = [f"{label} {data[key]:{fmt}} {unit}" for key, label, fmt, unit in (
        ("copy_bandwidth_gbs", "copy", ".0f", "GB/s"), ("l2_read_bandwidth_gbs", "L2 read", ".0f", "GB/s"),
        ("graph_launch_us", "a kernel in a graph replay", ".2f", "us")) if data.get(key) is not None]
    lines = []
    if rates:
        gpu = _model_gpu(data.get("env", {}).get("gpu"))
        assumed = (f" (the model's {gpu.name}: copy {gpu.hbm_measured_gbs:.0f} GB/s, L2 loads "
                   f"{gpu.l2_to_sm_gbs:.0f} GB/s fitted, a launch {gpu.launch_us:g} us assumed)") if gpu else ""
        lines.append("measured: " + ", ".join(rates) + assumed)
    keys = list(dict.fromkeys((r["model"], r["layer"], r["direction"]) for r in rows))
    for key in keys:
        mine = [r for r in rows if (r["model"], r["layer"], r["direction"]) == key and "median_ms" in r]
        cudnn = next((r for r in mine if r["variant"] == "cudnn"), None)
        ours = [r for r in mine if r["variant"] != "cudnn"]
        if not ours:
            continue
        best = min(ours, key=lambda r: r["median_ms"])
        base = f"cuDNN {cudnn['median_ms']:.4f} ms, " if cudnn else ""
        lines.append(f"{' '.join(key)}: {base}best {best['variant']} {best['median_ms']:.4f} ms "
                     f"({best['roofline_pct']:.0f}% of roofline)")
    return lines


def write_summary(outdir: str, env: dict, steps: List[Step]) -> str:
    lines = ["# GPU check summary", ""]
    lines.append(f"- GPU: {env.get('gpu')} (driver {env.get('driver')}, CUDA {env.get('torch_cuda')}, "
                 f"cuDNN {env.get('cudnn')})")
    lines.append(f"- torch {env.get('torch')}, triton {env.get('triton')}, python {env.get('python')}")
    lines.append(f"- commit {env.get('git_commit')}, {env.get('timestamp')}")
    lines.append("")
    lines.append("| step | status | seconds | detail |")
    lines.append("|---|---|---|---|")
    for s in steps:
        lines.append(f"| {s.name} | {s.status} | {s.seconds:.0f} | {s.detail} |")
    counts = junit_counts(os.path.join(outdir, "junit.xml"))
    if counts:
        lines += ["", f"Tests: {counts['passed']} passed, {counts['failures'] + counts['errors']} "
                      f"failed, {counts['skipped']} skipped"]
        lines += [f"- FAILED {n}" for n in counts["failed_names"]]
    variants = variant_results(os.path.join(outdir, "junit.xml"))
    if variants:
        lines += ["", "CUDA kernel variants, forced on every case (tests/test_gpu.py):"]
        lines += [f"- {v}" for v in variants]
    best = tune_best(os.path.join(outdir, "tune.json"))
    if best:
        lines += ["", "Triton variants (tune.json), fastest per layer and direction:"]
        lines += [f"- {b}" for b in best]
    ratios = bench_ratios(os.path.join(outdir, "bench.json"))
    if ratios:
        lines += ["", "Benchmark (grouped layers, weighted by count):"] + [f"- {r}" for r in ratios]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(outdir, "summary.md"), "w") as f:
        f.write(text)
    return text


def _trim(path: str, limit: int = LOG_TAIL_BYTES) -> None:
    size = os.path.getsize(path)
    if size <= limit:
        return
    with open(path, "rb") as f:
        head = f.read(limit // 4)
        f.seek(size - 3 * limit // 4)
        tail = f.read()
    with open(path, "wb") as f:
        f.write(head + f"\n[... {size - len(head) - len(tail)} bytes cut ...]\n".encode() + tail)


def enforce_limits(outdir: str, max_files: int = MAX_FILES, max_bytes: int = MAX_FILE_BYTES) -> None:
    """Bundles sub-folders and surplus files into logs.tar.gz so that OUTDIR holds at most
    `max_files` plain files, none larger than `max_bytes`, and no folders."""
    keep_first = ["summary.md", "env.json", "junit.xml", "bench.json", "tune.json", "profile.json",
                  "bench.png"]
    entries = sorted(os.listdir(outdir))
    bundle = [e for e in entries if os.path.isdir(os.path.join(outdir, e))]
    files = [e for e in entries if os.path.isfile(os.path.join(outdir, e)) and e != "logs.tar.gz"]
    files.sort(key=lambda e: (keep_first.index(e) if e in keep_first else len(keep_first), e))
    room = max_files - 1  # one place for logs.tar.gz
    bundle += files[room:]
    bundle += [e for e in files[:room] if os.path.getsize(os.path.join(outdir, e)) > max_bytes]
    if not bundle:
        return
    tar_path = os.path.join(outdir, "logs.tar.gz")
    for name in bundle:
        path = os.path.join(outdir, name)
        inside = ([os.path.join(d, n) for d, _, names in os.walk(path) for n in names]
                  if os.path.isdir(path) else [path])
        for f in inside:
            _trim(f)
    with tarfile.open(tar_path, "w:gz") as tar:
        for name in bundle:
            tar.add(os.path.join(outdir, name), arcname=name)
    for name in bundle:
        path = os.path.join(outdir, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    if os.path.getsize(tar_path) > max_bytes:  # last resort
        os.remove(tar_path)
        with open(os.path.join(outdir, "logs_dropped.txt"), "w") as f:
            f.write("logs exceeded the size limit and were dropped\n")


# ---------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    deadline = start + args.budget
    outdir = os.path.abspath(args.outdir)
    logdir = os.path.join(outdir, "logs")
    os.makedirs(logdir, exist_ok=True)
    sys.path.insert(0, ROOT)

    import torch
    from resnext_kernels import envinfo

    env = envinfo.collect()
    env["check"] = dict(quick=args.quick, only=args.only, budget_s=args.budget)
    with open(os.path.join(outdir, "env.json"), "w") as f:
        json.dump(env, f, indent=1)
    steps = [Step(n) for n in (args.only or STEPS)]
    if "build" not in (args.only or STEPS):
        steps.insert(0, Step("build"))  # the extension is a prerequisite of every other step

    if not torch.cuda.is_available():
        msg = ("gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False). "
               "Run this script on a GPU machine; without one, run the CPU test suite instead.")
        print(msg, file=sys.stderr)
        for s in steps:
            s.status, s.detail = "skipped", "no GPU"
        print(write_summary(outdir, env, steps))
        enforce_limits(outdir)
        return 2

    cc = torch.cuda.get_device_capability()
    py = sys.executable

    def remaining(step_name: str) -> float:
        return min(STEP_CAP_S[step_name], deadline - time.monotonic() - SUMMARY_RESERVE_S)

    for step in steps:
        budget = remaining(step.name)
        if budget < 5:
            step.status, step.detail = "skipped", "time budget spent"
            continue
        t0 = time.monotonic()
        log = os.path.join(logdir, f"{step.name}.log")
        if step.name == "build":
            build_env = dict(os.environ, TORCH_CUDA_ARCH_LIST=f"{cc[0]}.{cc[1]}",
                             MAX_JOBS=str(os.cpu_count() or 4), RESNEXT_KERNELS_CUDA="1")
            step.status = run_logged([py, "setup.py", "build_ext", "--inplace"], log, budget, build_env)
            if step.status != "passed":
                step.detail = "CUDA backend unavailable; Triton steps still run"
        elif step.name == "test":
            if args.quick:
                step.status = run_logged([py, "scripts/gpu_smoke.py"], log, budget)
            else:
                # One Triton configuration per kernel except in the tests that pin each one:
                # autotuning every test shape would spend the budget compiling.
                # Triton compiles on the CPU, one kernel at a time per process: a few pytest
                # workers (pytest-xdist, when installed) overlap them. Each worker gets a share
                # of the cores for torch's CPU reference (run 2 oversubscribed 8 x 16 threads).
                workers, threads = [], str(os.cpu_count() or 1)
                if importlib.util.find_spec("xdist") is not None:
                    n = max(1, min(4, (os.cpu_count() or 2) // 4))
                    workers, threads = ["-n", str(n)], str(max(1, (os.cpu_count() or n) // n))
                test_env = dict(os.environ, RESNEXT_KERNELS_TRITON_AUTOTUNE="0",
                                OMP_NUM_THREADS=threads)
                # -v: one line per test as it finishes, so a stopped run still names its failures.
                step.status = run_logged(
                    [py, "-m", "pytest", "tests/test_gpu.py", "tests/test_triton.py", "-v", "-rfE",
                     "--durations=25",
                     *workers, "-p", "no:cacheprovider", "-p", "no:benchmark",
                     f"--junitxml={os.path.join(outdir, 'junit.xml')}"],
                    log, budget, test_env)
        elif step.name == "sanitize":
            tool = shutil.which("compute-sanitizer") or "/usr/local/cuda/bin/compute-sanitizer"
            if args.quick:
                step.status, step.detail = "skipped", "--quick"
            elif not os.path.exists(tool):
                step.status, step.detail = "skipped", "compute-sanitizer not found"
            else:
                results = []
                for sub in ("memcheck", "racecheck"):
                    sub_budget = (deadline - time.monotonic() - SUMMARY_RESERVE_S) / 2
                    r = run_logged([tool, "--tool", sub, "--error-exitcode", "3", py,
                                    "scripts/gpu_smoke.py", "--backends", "cuda"],
                                   os.path.join(logdir, f"sanitize_{sub}.log"),
                                   min(budget / 2, sub_budget))
                    results.append(f"{sub}: {r}")
                step.status = "passed" if all(r.endswith("passed") for r in results) else "failed"
                step.detail = "; ".join(results)
        elif step.name == "tune":
            if args.quick:
                step.status, step.detail = "skipped", "--quick"
            else:
                step.status = run_logged([py, "benchmarks/tune_triton.py", "--out",
                                          os.path.join(outdir, "tune.json")], log, budget)
        elif step.name == "profile":
            if args.quick:
                step.status, step.detail = "skipped", "--quick"
            elif not (shutil.which("ncu") or os.path.exists("/usr/local/cuda/bin/ncu")):
                step.status, step.detail = "skipped", "ncu (Nsight Compute) not found"
            else:
                step.status = run_logged([py, "scripts/profile_kernels.py", "--out",
                                          os.path.join(outdir, "profile.json")], log, budget)
        elif step.name == "bench":
            if args.quick:
                step.status, step.detail = "skipped", "--quick"
            else:
                step.status = run_logged(
                    [py, "benchmarks/bench_cardinality.py", *args.bench_args.split(),
                     "--out", os.path.join(outdir, "bench.json"),
                     "--plot", os.path.join(outdir, "bench.png")], log, budget)
        step.seconds = time.monotonic() - t0
        print(f"[gpu_check] {step.name}: {step.status} ({step.seconds:.0f} s)", flush=True)

    text = write_summary(outdir, env, steps)
    enforce_limits(outdir)
    print(text)
    return 0 if all(s.status in ("passed", "skipped") for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
