"""What does cardinality cost? Grouped 3x3 convolution throughput across the ResNeXt paper's
fixed-complexity table, per layer and direction, for cuDNN and this project's kernels, against
the memory roofline.

    python benchmarks/bench_cardinality.py                 # GPU: full sweep, bf16 channels_last
    python benchmarks/bench_cardinality.py --quick         # fewer repetitions
    python benchmarks/bench_cardinality.py --models 32x4d --dtype fp16 --layout nchw

On a machine without a GPU the default is a small CPU run of ATen (the CUDA and Triton kernels
need a GPU). Output: a table, a JSON file (schema below) and, with matplotlib, a PNG plot.

JSON schema "resnext_kernels.bench/1":
    env       GPU, driver, CUDA, cuDNN, torch, triton, git commit, timestamp (envinfo.collect)
    options   every command-line option
    copy_bandwidth_gbs   the device's copy bandwidth measured in this run (read + write)
    layers    one row per (model, layer, backend, direction): the layer's sizes, count, flops,
              bytes (minimum traffic), median_ms, p20_ms, p80_ms, reps, timing ("cuda_graph":
              replays of a captured graph, GPU time only; "eager": host overhead included),
              tflops, gbs, roofline_pct, or error (why it did not run)
    models    per (model, backend, direction): total_ms (layer medians weighted by count) and
              relative_to_c1 (throughput relative to the C = 1 model, same backend, direction)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from typing import Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import layers as L  # noqa: E402

SCHEMA = "resnext_kernels.bench/1"
GPU_DEFAULT_MODELS = [f"{c}x{d}d" for c, d in L.PAPER_TABLE] + ["64x4d"]
CPU_DEFAULT_MODELS = ["1x64d", "32x4d"]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=sorted(L.MODELS), help="models to sweep")
    ap.add_argument("--backends", nargs="+", choices=["cudnn", "cuda", "triton", "aten"])
    ap.add_argument("--directions", nargs="+", choices=L.DIRECTIONS, default=list(L.DIRECTIONS))
    ap.add_argument("--dtype", choices=sorted(L.DTYPES))
    ap.add_argument("--layout", choices=["channels_last", "nchw"], default="channels_last")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--image", type=int, help="input image size (default 224 on GPU, 32 on CPU)")
    ap.add_argument("--reps", type=int, help="timed repetitions per measurement")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--device", choices=["cuda", "cpu"])
    ap.add_argument("--eager", action="store_true",
                    help="time eager calls (host overhead included) instead of CUDA-graph replays")
    ap.add_argument("--out", default=None, help="JSON output path")
    ap.add_argument("--plot", default=None, help="PNG output path (needs matplotlib)")
    return ap.parse_args(argv)


def resolve_defaults(args):
    on_gpu = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    args.device = "cuda" if on_gpu else "cpu"
    args.models = args.models or (GPU_DEFAULT_MODELS if on_gpu else CPU_DEFAULT_MODELS)
    args.backends = args.backends or (["cudnn", "cuda", "triton"] if on_gpu else ["aten"])
    args.dtype = args.dtype or ("bf16" if on_gpu else "fp32")
    args.batch = args.batch or (64 if on_gpu else 2)
    args.image = args.image or (224 if on_gpu else 32)
    args.reps = args.reps or ((10 if args.quick else 30) if on_gpu else (2 if args.quick else 5))
    if args.out is None:
        args.out = os.path.join("benchmarks", "results", "latest.json")
    return args


def progress(i: int, total: int, label: str) -> None:
    if not sys.stderr.isatty() and i not in (0, total) and i % 10:
        return
    width = 30
    filled = width * i // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {i}/{total} {label[:50]:50s}")
    if i == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def model_totals(rows: List[dict]) -> List[dict]:
    """Per (model, backend, direction): layer medians weighted by count, and the throughput
    relative to the C = 1 model of the same backend and direction."""
    totals: Dict[tuple, float] = defaultdict(float)
    failed = set()
    for r in rows:
        key = (r["model"], r["cardinality"], r["backend"], r["direction"])
        if r.get("error"):
            failed.add(key)
        else:
            totals[key] += r["median_ms"] * r["count"]
    out = []
    for key, ms in sorted(totals.items()):
        if key in failed:
            continue
        model, card, backend, direction = key
        c1 = [v for (m, c, b, d), v in totals.items()
              if c == 1 and b == backend and d == direction and (m, c, b, d) not in failed]
        out.append(dict(model=model, cardinality=card, backend=backend, direction=direction,
                        total_ms=ms, relative_to_c1=(c1[0] / ms) if c1 else None))
    return out


def print_table(rows: List[dict], baseline: str) -> None:
    base = {(r["model"], r["name"], r["direction"]): r.get("median_ms") for r in rows
            if r["backend"] == baseline and not r.get("error")}
    header = (f"{'model':8s} {'layer':13s} {'dir':5s} {'backend':7s} {'ms':>9s} {'p20-p80':>15s} "
              f"{'GB/s':>7s} {'%roof':>6s} {'vs ' + baseline:>9s}")
    print(header)
    print("-" * len(header))
    for r in rows:
        label = f"{r['model']:8s} {r['name']:13s} {r['direction']:5s} {r['backend']:7s}"
        if r.get("error"):
            print(f"{label} {'-':>9s}  {r['error'][:70]}")
            continue
        ref = base.get((r["model"], r["name"], r["direction"]))
        ratio = f"{ref / r['median_ms']:.2f}x" if ref else "-"
        roof = f"{r['roofline_pct']:.0f}" if r.get("roofline_pct") is not None else "-"
        print(f"{label} {r['median_ms']:9.4f} {r['p20_ms']:7.4f}-{r['p80_ms']:<7.4f} "
              f"{r['gbs']:7.0f} {roof:>6s} {ratio:>9s}")


def plot(results: dict, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(results["options"]["directions"]), figsize=(5 * 3, 4), squeeze=False)
    for ax, direction in zip(axes[0], results["options"]["directions"]):
        for backend in results["options"]["backends"]:
            pts = sorted((m["cardinality"], m["total_ms"]) for m in results["models"]
                         if m["backend"] == backend and m["direction"] == direction)
            if pts:
                ax.plot([p[0] for p in pts], [1e3 / p[1] for p in pts], marker="o", label=backend)
        roof = defaultdict(float)
        for r in results["layers"]:
            if r["direction"] == direction and r["backend"] == results["options"]["backends"][0]:
                roof[r["cardinality"]] += r["count"] * r["bytes"] / (results["copy_bandwidth_gbs"] * 1e9) * 1e3
        if roof:
            pts = sorted(roof.items())
            ax.plot([p[0] for p in pts], [1e3 / p[1] for p in pts], "k--", label="roofline")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("cardinality C")
        ax.set_ylabel("grouped-layer passes / s")
        ax.set_title(direction)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv=None) -> dict:
    args = resolve_defaults(parse_args(argv))
    from resnext_kernels import envinfo

    device = torch.device(args.device)
    if device.type == "cpu":
        print("note: the CUDA and Triton kernels need a GPU; this is a small CPU run of ATen. "
              "On a CUDA machine the same command runs the full sweep (see README: GPU check).")
        torch.set_num_threads(os.cpu_count() or 1)
    else:
        torch.backends.cudnn.benchmark = True  # cuDNN gets its best algorithm per shape
    timer = L.CudaTimer(device, graphs=not args.eager) if device.type == "cuda" else L.cpu_time
    bandwidth = L.copy_bandwidth_gbs(device, 512 if device.type == "cuda" else 64)

    work = [(layer, backend) for model in args.models
            for layer in L.resnext50_layers(model, args.batch, args.image)
            for backend in args.backends]
    rows: List[dict] = []
    for i, (layer, backend) in enumerate(work):
        progress(i, len(work), f"{layer.model} {layer.name} {backend}")
        rows += L.bench_layer(layer, backend, args.directions, args.dtype,
                              args.layout == "channels_last", device, args.reps, timer, bandwidth)
    progress(len(work), len(work), "done")

    results = dict(schema=SCHEMA, env=envinfo.collect(), options=vars(args),
                   copy_bandwidth_gbs=bandwidth, layers=rows, models=model_totals(rows))
    print(f"copy bandwidth: {bandwidth:.0f} GB/s; {args.dtype} {args.layout}, batch {args.batch}, "
          f"{args.image}x{args.image}; TF32 for convolutions: {torch.backends.cudnn.allow_tf32}")
    print_table(rows, args.backends[0])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}")
    if args.plot and plot(results, args.plot):
        print(f"wrote {args.plot}")
    return results


if __name__ == "__main__":
    main()
