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
    copy_bandwidth_gbs   the device's copy bandwidth measured in this run (read + write of a
              several-GB copy, layers.copy_bandwidth_gbs); datasheet_bandwidth_gbs beside it
    layers    one row per (model, layer, backend, direction): the layer's sizes, count, flops,
              bytes (minimum traffic), median_ms, p20_ms, p80_ms, reps, timing ("cuda_graph":
              replays of a captured graph, GPU time only; "eager": host overhead included),
              tflops, gbs, roofline_pct, or error (why it did not run)
    models    per (model, backend, direction): total_ms (layer medians weighted by count),
              passes_per_s and relative_to_c1 (throughput relative to the C = 1 model, same
              backend and direction)
    interrupted  true when the run was stopped (SIGTERM, Ctrl-C) and holds what it had measured
    end_to_end  per (model, backend, mode): a whole ResNeXt-50 training step ("train":
              forward, backward, SGD step, bf16 autocast) or inference pass ("infer", and
              "infer_fused" with BatchNorm folded and ReLU in the epilogue): median_ms, p20_ms,
              p80_ms, images_per_s, relative_to_c1, or error. Backends: "nn.Conv2d" (the model
              built from plain nn.Conv2d), "auto" (that model after convert(), default
              settings: the user's gain from converting), then each kernel backend forced;
              the 1x64d rows are ResNet-50, the reference
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections import defaultdict
from typing import Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import layers as L  # noqa: E402

SCHEMA = "resnext_kernels.bench/1"
GPU_DEFAULT_MODELS = [f"{c}x{d}d" for c, d in L.PAPER_TABLE] + ["64x4d"]
# The paper's whole fixed-complexity table on the CPU too (small images and batch keep it
# under two minutes on two cores).
CPU_DEFAULT_MODELS = [f"{c}x{d}d" for c, d in L.PAPER_TABLE]
# End-to-end rows besides the kernel backends: the model built from plain nn.Conv2d (what a user
# has before converting) and the same model after convert() with default settings ("auto").
E2E_REFERENCES = ("nn.Conv2d", "auto")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=sorted(L.MODELS), help="models to sweep")
    ap.add_argument("--backends", nargs="+", choices=["cudnn", "cuda", "triton", "aten"])
    ap.add_argument("--ladder", action="store_true",
                    help="also time every CUDA kernel variant forced on its own (backend cuda:NAME)")
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
    ap.add_argument("--end-to-end", choices=["on", "off"], default=None,
                    help="whole-model training and inference steps (default: on with a GPU)")
    ap.add_argument("--e2e-batch", type=int, default=None, help="batch of the end-to-end steps")
    ap.add_argument("--e2e-backends", nargs="+", default=None,
                    help="end-to-end rows to run (default: nn.Conv2d, auto and every kernel "
                         "backend of --backends)")
    ap.add_argument("--compile-jobs", type=int, default=None,
                    help="processes that compile the Triton kernels before timing (default: up "
                         "to 8 on a GPU; 0: compile inside the timing loop)")
    ap.add_argument("--out", default=None, help="JSON output path")
    ap.add_argument("--plot", default=None, help="PNG output path (needs matplotlib)")
    return ap.parse_args(argv)


def resolve_defaults(args):
    on_gpu = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    args.device = "cuda" if on_gpu else "cpu"
    args.models = args.models or (GPU_DEFAULT_MODELS if on_gpu else CPU_DEFAULT_MODELS)
    args.backends = args.backends or (["cudnn", "cuda", "triton"] if on_gpu else ["aten"])
    if args.ladder:
        from resnext_kernels import cuda_variants

        args.backends = args.backends + [f"cuda:{v['name']}" for v in cuda_variants()]
    args.dtype = args.dtype or ("bf16" if on_gpu else "fp32")
    args.batch = args.batch or (64 if on_gpu else 2)
    args.image = args.image or (224 if on_gpu else 32)
    args.reps = args.reps or ((10 if args.quick else 30) if on_gpu else (2 if args.quick else 5))
    args.end_to_end = args.end_to_end or ("on" if on_gpu else "off")
    args.e2e_batch = args.e2e_batch or (32 if args.quick else 64)
    if args.compile_jobs is None:
        args.compile_jobs = min(8, os.cpu_count() or 1) if on_gpu else 0
    if args.out is None:
        args.out = os.path.join("benchmarks", "results", "latest.json")
    return args


def bench_end_to_end(model_name: str, backend: str, mode: str, args, device, timer) -> dict:
    """One whole-model measurement (see the JSON schema)."""
    from resnext_kernels.models import fuse_for_inference, resnext50

    c, d = L.MODELS[model_name]
    row = dict(model=model_name, cardinality=c, width=d, backend=backend, mode=mode,
               batch=args.e2e_batch, image=args.image, dtype=args.dtype)
    fmt = torch.channels_last if args.layout == "channels_last" else torch.contiguous_format
    try:
        if backend == "nn.Conv2d":
            model = plain_conv2d(resnext50(c, d))
        elif backend == "auto":  # what a user gets: convert() of the nn.Conv2d model, defaults
            from resnext_kernels import convert

            model = plain_conv2d(resnext50(c, d))
            convert(model)
        else:
            model = resnext50(c, d, backend="aten" if backend in ("cudnn", "aten") else backend)
        model = model.to(device, memory_format=fmt)
        x = torch.randn(args.e2e_batch, 3, args.image, args.image, device=device).to(memory_format=fmt)
        y = torch.randint(0, 1000, (args.e2e_batch,), device=device)
        amp = dict(device_type=device.type, dtype=L.DTYPES[args.dtype],
                   enabled=args.dtype != "fp32")
        if mode == "train":
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

            def step():
                with torch.autocast(**amp):
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        else:
            net = fuse_for_inference(model) if mode == "infer_fused" else model.eval()

            def step():
                with torch.no_grad(), torch.autocast(**amp):
                    net(x)
        t = timer(step, max(3, args.reps // 3))
    except Exception as exc:  # reported in the results, never fatal
        return dict(row, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return dict(row, error=None, median_ms=t.median_ms, p20_ms=t.p20_ms, p80_ms=t.p80_ms,
                reps=t.reps, images_per_s=args.e2e_batch / (t.median_ms * 1e-3))


def plain_conv2d(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with every GroupedConv2d replaced by a plain nn.Conv2d sharing its parameters
    (the model a user has before converting)."""
    from resnext_kernels import GroupedConv2d

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, GroupedConv2d):
                plain = torch.nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size,
                                        child.stride, child.padding, child.dilation, child.groups,
                                        child.bias is not None, child.padding_mode, device="meta")
                plain.weight, plain.bias = child.weight, child.bias
                if child.relu:
                    raise ValueError("plain_conv2d: a GroupedConv2d with a fused ReLU")
                setattr(module, name, plain)
    return model


def _warm_share(share) -> int:
    """Worker of L.warm_triton_cache: every direction of its layers on the Triton backend, at
    batch 1, autotuning (so every configuration of each kernel variant gets compiled)."""
    failures = 0
    for layer, dtype_name, channels_last in share:
        try:
            fns = L.direction_fns("triton", layer, L.DTYPES[dtype_name], channels_last,
                                  torch.device("cuda"))
            for fn in fns.values():
                fn()
        except Exception:  # the timing pass reports it
            failures += 1
    torch.cuda.synchronize()
    return failures


def warm_triton(args) -> None:
    if "triton" not in args.backends or args.device != "cuda" or args.compile_jobs <= 0:
        return
    import time

    t0 = time.time()
    payloads = [(layer, args.dtype, args.layout == "channels_last")
                for model in args.models for layer in L.resnext50_layers(model, 1, args.image)]
    failures = L.warm_triton_cache(_warm_share, payloads, args.compile_jobs)
    print(f"Triton kernels compiled in {time.time() - t0:.0f} s by {args.compile_jobs} processes"
          + (f" ({failures} layers failed; see their rows)" if failures else ""), flush=True)


def relative_to_c1(rows: List[dict], value: str, keys) -> None:
    """Adds `relative_to_c1`: each row's `value` over the C = 1 row with the same `keys`."""
    base = {tuple(r[k] for k in keys): r[value] for r in rows
            if r["cardinality"] == 1 and not r.get("error")}
    for r in rows:
        b = base.get(tuple(r[k] for k in keys))
        r["relative_to_c1"] = (r[value] / b) if b and not r.get("error") else None


def progress(work, desc: str):
    """tqdm over `work` on stderr (labels per item via set_postfix_str)."""
    from tqdm import tqdm

    return tqdm(work, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=None)  # None: no bar when stderr is not a terminal


def model_totals(rows: List[dict]) -> List[dict]:
    """Per (model, backend, direction) whose layers all ran: layer medians weighted by count, and
    the throughput relative to the C = 1 model of the same backend and direction."""
    totals: Dict[tuple, float] = defaultdict(float)
    failed = {(r["model"], r["cardinality"], r["backend"], r["direction"]) for r in rows if r.get("error")}
    for r in rows:
        key = (r["model"], r["cardinality"], r["backend"], r["direction"])
        if key not in failed:
            totals[key] += r["median_ms"] * r["count"]
    out = [dict(model=m, cardinality=c, backend=b, direction=d, total_ms=ms, passes_per_s=1e3 / ms)
           for (m, c, b, d), ms in sorted(totals.items())]
    relative_to_c1(out, "passes_per_s", ("backend", "direction"))
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


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


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
    bandwidth = L.copy_bandwidth_gbs(device, 4096 if device.type == "cuda" else 64)

    rows: List[dict] = []
    e2e: List[dict] = []
    interrupted = False
    # A stopped run (the GPU check's time budget sends SIGTERM) still writes what it measured.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        warm_triton(args)
        work = [(layer, backend) for model in args.models
                for layer in L.resnext50_layers(model, args.batch, args.image)
                for backend in args.backends]
        bar = progress(work, "layers")
        for layer, backend in bar:
            bar.set_postfix_str(f"{layer.model} {layer.name} {backend}")
            rows += L.bench_layer(layer, backend, args.directions, args.dtype,
                                  args.layout == "channels_last", device, args.reps, timer, bandwidth)
        if args.end_to_end == "on":
            # Eager timing: a training step is many launches plus the optimizer, as users run it.
            e2e_timer = L.CudaTimer(device, graphs=False) if device.type == "cuda" else L.cpu_time
            backends = args.e2e_backends or (list(E2E_REFERENCES) + [
                b for b in args.backends if b not in ("cudnn", "aten") and ":" not in b])
            # infer_fused folds BatchNorm into GroupedConv2d layers: not the nn.Conv2d model.
            work = [(m, b, mode) for m in args.models for b in backends
                    for mode in ("train", "infer", "infer_fused")
                    if not (b == "nn.Conv2d" and mode == "infer_fused")]
            bar = progress(work, "end to end")
            for model_name, backend, mode in bar:
                bar.set_postfix_str(f"{model_name} {backend} {mode}")
                e2e.append(bench_end_to_end(model_name, backend, mode, args, device, e2e_timer))
            relative_to_c1(e2e, "images_per_s", ("backend", "mode"))
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: writing the results measured so far", file=sys.stderr)

    results = dict(schema=SCHEMA, env=envinfo.collect(), options=vars(args),
                   copy_bandwidth_gbs=bandwidth,
                   datasheet_bandwidth_gbs=L.datasheet_bandwidth_gbs(torch.cuda.get_device_name()
                                                                     if device.type == "cuda" else None),
                   layers=rows, models=model_totals(rows),
                   end_to_end=e2e, interrupted=interrupted)
    sheet = results["datasheet_bandwidth_gbs"]
    print(f"copy bandwidth: {bandwidth:.0f} GB/s measured"
          + (f" ({sheet:.0f} datasheet)" if sheet else "") + f"; {args.dtype} {args.layout}, batch {args.batch}, "
          f"{args.image}x{args.image}; TF32 for convolutions: {torch.backends.cudnn.allow_tf32}")
    print_table(rows, args.backends[0])
    for r in e2e:
        if r.get("error"):
            tail = r["error"][:80]
        else:
            rel = f"  x{r['relative_to_c1']:.2f} of C=1" if r.get("relative_to_c1") else ""
            tail = f"{r['images_per_s']:9.1f} img/s{rel}"
        print(f"end to end {r['model']:6s} {r['backend']:7s} {r['mode']:12s} {tail}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}")
    if args.plot and plot(results, args.plot):
        print(f"wrote {args.plot}")
    return results


if __name__ == "__main__":
    main()
