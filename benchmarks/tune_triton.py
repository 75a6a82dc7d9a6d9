"""Times every Triton configuration and launch layout on the ResNeXt-50 grouped layers, one at a
time, so that the defaults and the autotune space are chosen from measurements.

    python benchmarks/tune_triton.py --out tune.json            # 32x4d, batch 64, bf16, CL
    python benchmarks/tune_triton.py --models 32x4d 1x64d --jobs 8

What varies: every entry of each kernel's autotune space (BLOCK_M, num_warps, num_stages)
and each launch layout: for the gather kernel (fprop, dgrad) one channel tile per program or
all of them (`tiles_per_prog` 1 / 0), and channel tiles fastest in launch order
(`channels_fastest`); for wgrad one tap per program or all nine (`all_taps`).
cuDNN (cudnn.benchmark) is timed on the same operands as the baseline.

Compiling ~170 kernel variants one by one would take minutes, so a pool of `--jobs` processes
first launches each variant once at batch 1 (the same specialisation: strides, alignment),
which fills Triton's on-disk cache; the timing pass then only loads them.

JSON schema "resnext_kernels.tune/1": env (envinfo.collect), options, copy_bandwidth_gbs (a
several-GB copy, read + write), datasheet_bandwidth_gbs, l2_read_bandwidth_gbs (one reduction
reading an L2-resident buffer many times), graph_launch_us (a small kernel's cost in a graph
replay), rows:
one per (model, layer, direction, kernel variant): layer sizes, variant ("cudnn" or
"<config> <layout>"), pixel_tiles (the gather kernel's pixel tiles a program, where passed),
median_ms, p20_ms, p80_ms, gbs, roofline_pct, vs_cudnn, or error.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from typing import List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import layers as L  # noqa: E402

SCHEMA = "resnext_kernels.tune/1"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["32x4d"], choices=sorted(L.MODELS))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dtype", default="bf16", choices=sorted(L.DTYPES))
    ap.add_argument("--directions", nargs="+", default=list(L.DIRECTIONS), choices=L.DIRECTIONS)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1),
                    help="processes that compile the variants before timing (0: compile inline)")
    ap.add_argument("--out", default="tune.json")
    return ap.parse_args(argv)


def variants(direction: str, layer: L.Layer, elem_size: int = 2):
    """(label, keyword arguments for the kernel wrapper) for every variant of `direction`. The
    gather kernel's L1 configurations with one channel tile a program walk the pixel tiles a
    program that the launch would give them on this GPU (fprop.pixel_tiles_for), passed
    explicitly so that the row records them (1 where no GPU or model says otherwise)."""
    from resnext_kernels import perf_model as pm
    from resnext_kernels.triton import common, fprop, wgrad

    if direction == "wgrad":
        cg = layer.c // layer.groups
        for all_taps in (False, True):
            for config in wgrad.configs_for(all_taps):
                yield f"{_config_label(config)} {'all_taps' if all_taps else 'tap'}", dict(
                    config=config, all_taps=all_taps)
    else:
        layouts = {"tile": dict(tiles_per_prog=1, channels_fastest=False),
                   "all_tiles": dict(tiles_per_prog=0, channels_fastest=False),
                   "tile_channels_fastest": dict(tiles_per_prog=1, channels_fastest=True)}
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
        conv = pm.Conv.from_layer(layer, elem_size)
        for config, (name, layout) in itertools.product(fprop.AUTOTUNE_CONFIGS, layouts.items()):
            tiles = fprop.pixel_tiles_for(conv, direction == "dgrad", device,
                                          config.kwargs["BLOCK_M"], config.kwargs["L1_TAPS"],
                                          layout["tiles_per_prog"])
            yield f"{_config_label(config)} {name}", dict(config=config, pixel_tiles=tiles,
                                                          **layout)


def _config_label(config) -> str:
    return f"M{config.kwargs['BLOCK_M']}w{config.num_warps}s{config.num_stages}"


def operands(layer: L.Layer, dtype: torch.dtype, batch: int):
    fmt = torch.channels_last
    x = torch.randn(batch, layer.c, layer.h, layer.w, device="cuda", dtype=dtype).to(memory_format=fmt)
    w = torch.randn(layer.k, layer.c // layer.groups, 3, 3, device="cuda", dtype=dtype) * 0.1
    dy = torch.randn(batch, layer.k, layer.p, layer.q, device="cuda", dtype=dtype).to(memory_format=fmt)
    return x, w, dy


def call(direction: str, layer: L.Layer, x, w, dy, **kwargs):
    """A callable running one direction of `layer` with the Triton kernel variant `kwargs`."""
    from resnext_kernels.triton import fprop, wgrad
    from resnext_kernels.triton.dgrad import dgrad

    conv = ([layer.stride] * 2, [1, 1], [1, 1], layer.groups)
    if direction == "fprop":
        return lambda: fprop.fprop(x, w, None, *conv, **kwargs)
    if direction == "dgrad":   # on the weight a training step's forward pass packed (ops.py)
        packed = fprop.pack_weight(w, layer.groups)
        return lambda: dgrad(dy, w, list(x.shape), *conv, packed=packed, **kwargs)
    return lambda: wgrad.wgrad(dy, x, list(w.shape), *conv, **kwargs)


def cudnn_call(direction: str, layer: L.Layer, x, w, dy):
    conv = ([layer.stride] * 2, [1, 1], [1, 1])
    if direction == "fprop":
        return lambda: torch.nn.functional.conv2d(x, w, None, *conv, layer.groups)
    mask = [direction == "dgrad", direction == "wgrad", False]
    return lambda: torch.ops.aten.convolution_backward(dy, x, w, None, *conv, False, [0, 0],
                                                       layer.groups, mask)


def work_items(args) -> List[tuple]:
    return [(layer, direction, label, kwargs)
            for model in args.models for layer in L.resnext50_layers(model, args.batch)
            for direction in args.directions
            for label, kwargs in variants(direction, layer, L.DTYPES[args.dtype].itemsize)]


def _compile_share(share) -> int:
    """Worker of L.warm_triton_cache: launches its variants once at batch 1. The share is
    (argv, index) pairs of one command line: the work list is rebuilt here once, not pickled."""
    failures = 0
    args = parse_args(share[0][0])
    items = work_items(args)
    for _, index in share:
        layer, direction, _, kwargs = items[index]
        try:
            call(direction, layer, *operands(layer, L.DTYPES[args.dtype], 1), **kwargs)()
        except Exception:  # the timing pass records the error
            failures += 1
    torch.cuda.synchronize()
    return failures


def main(argv=None) -> dict:
    args = parse_args(argv)
    from resnext_kernels import envinfo

    if not torch.cuda.is_available():
        sys.exit("tune_triton.py needs a CUDA GPU")
    t0 = time.time()
    items = work_items(args)
    if args.jobs > 0:
        argv = list(argv if argv is not None else sys.argv[1:])
        failures = L.warm_triton_cache(_compile_share, [(argv, i) for i in range(len(items))],
                                       args.jobs)
        print(f"compiled in {time.time() - t0:.0f} s ({args.jobs} processes, {failures} failed)",
              flush=True)

    torch.backends.cudnn.benchmark = True
    timer = L.CudaTimer(torch.device("cuda"))
    bandwidth = L.copy_bandwidth_gbs(torch.device("cuda"))
    l2_read = L.l2_read_bandwidth_gbs(torch.device("cuda"))
    launch_us = L.graph_launch_us(torch.device("cuda"))
    print(f"copy bandwidth {bandwidth:.0f} GB/s (datasheet "
          f"{L.datasheet_bandwidth_gbs(torch.cuda.get_device_name()) or '?'}); L2 read "
          f"{l2_read or 0:.0f} GB/s; a kernel in a graph replay {launch_us or 0:.2f} us", flush=True)
    dtype = L.DTYPES[args.dtype]
    rows = []
    groups = itertools.groupby(items, key=lambda item: (item[0], item[1]))
    try:
        for (layer, direction), group in groups:
            x, w, dy = operands(layer, dtype, args.batch)
            nbytes = layer.min_bytes(direction, x.element_size())
            base = dict(model=layer.model, layer=layer.name, direction=direction, n=layer.n,
                        c=layer.c, h=layer.h, w=layer.w, groups=layer.groups, stride=layer.stride)
            cudnn_ms = None
            kwargs_of = {label: kwargs for _, _, label, kwargs in group}
            for label, fn in [("cudnn", cudnn_call(direction, layer, x, w, dy))] + [
                    (label, call(direction, layer, x, w, dy, **kwargs))
                    for label, kwargs in kwargs_of.items()]:
                row = dict(base, variant=label)
                if "pixel_tiles" in kwargs_of.get(label, {}):
                    row["pixel_tiles"] = kwargs_of[label]["pixel_tiles"]
                try:
                    t = timer(fn, args.reps)
                    cudnn_ms = t.median_ms if label == "cudnn" else cudnn_ms
                    gbs = nbytes / (t.median_ms * 1e-3) / 1e9
                    row.update(median_ms=t.median_ms, p20_ms=t.p20_ms, p80_ms=t.p80_ms,
                               gbs=gbs, roofline_pct=100 * gbs / bandwidth,
                               vs_cudnn=cudnn_ms / t.median_ms if cudnn_ms else None)
                except Exception as exc:  # record and go on: one bad variant is a finding
                    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                rows.append(row)
            print_best(rows, layer, direction)
    except KeyboardInterrupt:
        print("interrupted: writing what was measured", file=sys.stderr)
    results = dict(schema=SCHEMA, env=envinfo.collect(), options=vars(args),
                   copy_bandwidth_gbs=bandwidth,
                   datasheet_bandwidth_gbs=L.datasheet_bandwidth_gbs(torch.cuda.get_device_name()),
                   l2_read_bandwidth_gbs=l2_read, graph_launch_us=launch_us, rows=rows, seconds=round(time.time() - t0, 1))
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out} ({len(rows)} rows, {time.time() - t0:.0f} s)")
    return results


def print_best(rows, layer, direction, top=4):
    mine = [r for r in rows if r["layer"] == layer.name and r["model"] == layer.model
            and r["direction"] == direction and "median_ms" in r]
    cudnn = next((r for r in mine if r["variant"] == "cudnn"), None)
    ranked = sorted((r for r in mine if r["variant"] != "cudnn"), key=lambda r: r["median_ms"])
    head = f"{layer.model} {layer.name:12s} {direction}"
    if cudnn:
        head += f"  cudnn {cudnn['median_ms']:.4f} ms ({cudnn['roofline_pct']:.0f}%)"
    errors = sum(1 for r in rows if r["layer"] == layer.name and r["direction"] == direction
                 and "error" in r)
    print(head + (f"  {errors} errors" if errors else ""))
    for r in ranked[:top] + ranked[-1:]:
        print(f"    {r['variant']:26s} {r['median_ms']:.4f} ms  {r['roofline_pct']:3.0f}%  "
              f"x{r['vs_cudnn'] or 0:.2f} cuDNN")


if __name__ == "__main__":
    main()
