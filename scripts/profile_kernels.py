"""The GPU check's profile step: Nsight Compute counters of one launch of every kernel variant on
four ResNeXt-50 32x4d layers, in each direction, beside cuDNN's kernels.

    python scripts/profile_kernels.py --out profile.json        # runs ncu over itself
    python scripts/profile_kernels.py --targets                 # what it would profile

Targets: stage1, stage2.entry, stage3 and stage4 of 32x4d at batch 64, bf16 channels_last;
per direction every CUDA registry variant that accepts the layer, the Triton kernels at their
default configuration (autotuning off) and cuDNN. One process under
`ncu --clock-control none --profile-from-start off` runs them all: each target is warmed up
outside the profiled range, then launched once inside it, right after a marker kernel
(torch.cuda._sleep's spin_kernel) that tells the parser where the target's kernels begin.

JSON schema "resnext_kernels.profile/1": env, metrics (ncu metric -> field), kernels: one per
profiled kernel {layer, direction, variant, kernel, duration_us, dram_bytes, l2_bytes,
occupancy_pct, tensor_pct, bank_conflicts, stalls: [[reason, ratio], ...] (top 3)}.
Without ncu on the machine the step says so and writes nothing.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

SCHEMA = "resnext_kernels.profile/1"
LAYERS = ("stage1", "stage2.entry", "stage3", "stage4")
MARKER = "spin_kernel"
# ncu metric -> field of profile.json (bytes fields are bytes; the L2 figure is what L1 pulled
# from L2 over the crossbar).
METRICS = {
    "gpu__time_duration.sum": "duration_ns",
    "dram__bytes_read.sum": "dram_read_bytes",
    "dram__bytes_write.sum": "dram_write_bytes",
    "l1tex__m_xbar2l1tex_read_bytes.sum": "l2_bytes",
    "sm__warps_active.avg.pct_of_peak_sustained_active": "occupancy_pct",
    "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active": "tensor_pct",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum": "bank_conflicts",
}
STALLS = ("long_scoreboard", "short_scoreboard", "barrier", "mio_throttle", "lg_throttle",
          "math_pipe_throttle", "wait", "not_selected", "dispatch_stall")
STALL_METRIC = "smsp__average_warps_issue_stalled_{}_per_issue_active.ratio"


def targets() -> List[tuple]:
    """(layer, direction, variant) in launch order; variant "cuda:NAME", "triton" or "cudnn"."""
    import torch

    import layers as L
    import resnext_kernels as rk

    out = []
    names = {v["name"]: v["direction"] for v in rk.cuda_variants()}
    for layer in L.resnext50_layers("32x4d", 64):
        if layer.name not in LAYERS:
            continue
        for direction in L.DIRECTIONS:
            out.append((layer.name, direction, "cudnn"))
            out.append((layer.name, direction, "triton"))
            for name, d in names.items():
                if d == direction and L.backend_skip_reason(f"cuda:{name}", layer, torch.bfloat16,
                                                            torch.device("cuda")) is None:
                    out.append((layer.name, direction, f"cuda:{name}"))
    return out


def run_targets() -> int:
    """Runs every target once inside the profiled range (under ncu)."""
    import torch

    import layers as L

    by_name = {layer.name: layer for layer in L.resnext50_layers("32x4d", 64)}
    failures = 0
    for layer_name, direction, variant in targets():
        layer = by_name[layer_name]
        try:  # variant is a benchmark backend: "cudnn", "triton" or "cuda:NAME"
            fns = L.direction_fns(variant, layer, torch.bfloat16, True, torch.device("cuda"))
            fn = fns[direction]
            fn()
            fn()                                   # warm-up (compiles, caches) outside the range
            torch.cuda.synchronize()
            torch.cuda.profiler.start()
            torch.cuda._sleep(1000)                # the marker: this target's kernels follow
            fn()
            torch.cuda.synchronize()
            torch.cuda.profiler.stop()
        except Exception as exc:  # a variant that cannot run is reported, the rest go on
            failures += 1
            print(f"profile: {layer_name} {direction} {variant}: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
    return failures


def parse_ncu_csv(text: str, order: List[tuple]) -> List[dict]:
    """Kernels of `ncu --csv --page raw` output, each tagged with the target its marker opened."""
    lines = [line for line in text.splitlines() if line.startswith('"')]
    if not lines:
        return []
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    header, body = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    kernels, target, index = [], None, -1
    for row in body:
        if len(row) != len(header) or not row[col["ID"]].strip().isdigit():
            continue  # the units row
        name = row[col["Kernel Name"]]
        if MARKER in name:
            index += 1
            target = order[index] if index < len(order) else None
            continue
        if target is None:
            continue

        def num(metric: str) -> Optional[float]:
            if metric not in col:
                return None
            try:
                return float(row[col[metric]].replace(",", ""))
            except ValueError:
                return None

        values = {field: num(metric) for metric, field in METRICS.items()}
        stalls = [(s, num(STALL_METRIC.format(s))) for s in STALLS]
        stalls = sorted(((s, v) for s, v in stalls if v is not None), key=lambda sv: -sv[1])[:3]
        duration = values.pop("duration_ns")
        read, write = values.pop("dram_read_bytes"), values.pop("dram_write_bytes")
        kernels.append(dict(layer=target[0], direction=target[1], variant=target[2], kernel=name,
                            duration_us=None if duration is None else duration / 1e3,
                            dram_bytes=(read or 0) + (write or 0), **values,
                            stalls=[list(sv) for sv in stalls]))
    return kernels


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="profile.json")
    ap.add_argument("--targets", action="store_true", help="list the targets and exit")
    ap.add_argument("--run", action="store_true", help=argparse.SUPPRESS)  # the profiled child
    args = ap.parse_args(argv)
    if args.run:
        return 1 if run_targets() else 0
    import torch

    if not torch.cuda.is_available():
        print("profile: no CUDA GPU: skipped")
        return 0
    order = targets()
    if args.targets:
        for t in order:
            print(*t)
        return 0
    ncu = shutil.which("ncu") or next((p for p in ("/usr/local/cuda/bin/ncu",) if os.path.exists(p)), None)
    if ncu is None:
        print("profile: ncu (Nsight Compute) not found on this machine: skipped")
        return 0
    metrics = list(METRICS) + [STALL_METRIC.format(s) for s in STALLS]
    env = dict(os.environ, RESNEXT_KERNELS_TRITON_AUTOTUNE="0")
    proc = subprocess.run([ncu, "--clock-control", "none", "--profile-from-start", "off",
                           "--csv", "--page", "raw", "--metrics", ",".join(metrics),
                           sys.executable, os.path.abspath(__file__), "--run"],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    kernels = parse_ncu_csv(proc.stdout, order)
    from resnext_kernels import envinfo

    with open(args.out, "w") as f:
        json.dump(dict(schema=SCHEMA, env=envinfo.collect(), metrics=METRICS, targets=order,
                       kernels=kernels, ncu_rc=proc.returncode,
                       stderr_tail=proc.stderr[-4000:]), f, indent=1)
    print(f"profile: {len(kernels)} kernels of {len(order)} targets -> {args.out} (ncu rc {proc.returncode})")
    return 0 if kernels else 1


if __name__ == "__main__":
    sys.exit(main())
