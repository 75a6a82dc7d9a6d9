"""The performance model's table: per layer and direction, the roofline, cuDNN's measured time,
every kernel variant's predicted time and binding resource, and measured over predicted where a
committed measurement of that variant exists; then the calibration summary.

    python benchmarks/perf_model.py                       # ResNeXt-50 32x4d, batch 64, H200
    python benchmarks/perf_model.py --model 1x64d --gpu H100 --batch 32 --all
    python benchmarks/perf_model.py --json model.json     # the same rows as JSON

The model itself is resnext_kernels/perf_model.py (no GPU needed). Calibration: every committed
measurement of a kernel variant (the Triton rows of each tune.json, the CUDA rows of each
bench.json) predicted with the code that ran it (the Triton revision follows the result's
commit), and the fraction within 0.67x-1.5x. With a profile.json (the GPU check's profile step)
its Nsight Compute counters are printed beside the predictions.

JSON schema "resnext_kernels.perf_model/1": {model, gpu, batch, dtype, rows: [{model, layer,
direction, variant, min_bytes, roofline_us, predicted_us, binding, measured_us (where known),
cudnn_us (where known), dram_bytes, l2_bytes, resource_source}], calibration: {rows: [{source,
model, layer, direction, variant, measured_us, predicted_us, ratio, binding}], within, total,
fraction}, profile: [...]}.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import math
import os
import subprocess
import sys
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import layers as L  # noqa: E402
from resnext_kernels import perf_model as pm  # noqa: E402

SCHEMA = "resnext_kernels.perf_model/1"
RESULTS = os.path.join(HERE, "results")
# Variant prefix of the fprop predictions on a frozen module's kept packed weight (no packer).
FROZEN = "triton-frozen:"
CUDA_FROZEN = "cuda-frozen:"   # the CUDA halo rung's, on the weight pack_weight made once
# Commits that changed what a measured variant means (perf_model.TritonRevision, the CUDA ladder).
TRITON_PACKED_WEIGHT_COMMIT = "07a4ed9"
# The commit that added wgrad's splits inside its launch.
TRITON_FUSED_REDUCTION_COMMIT = "2f2f0f3"
# The commit that added the gather kernel's exact-tap source map and its L1 path.
TRITON_EXACT_TAPS_COMMIT = "9a4bee0"
# The commit that put wgrad ALL_TAPS's taps in regions of their own (unpipelined, no spills).
TRITON_WGRAD_TAP_REGIONS_COMMIT = "ee9bf4e"
# The commit after which a training step's forward pass packs dgrad's weight too (dgrad, as the
# benchmark times it, launches no packer).
TRITON_FORWARD_PACK_COMMIT = "e258ade"
CUDA_SMEM_RUNG_COMMIT = "2f64c2a"   # before it, the CUDA backend ran the direct rungs only


def is_ancestor(commit: str, of: str) -> Optional[bool]:
    """Whether `commit` is an ancestor of (or equal to) `of`; None when git cannot tell."""
    of = (of or "").split("+")[0]
    if not of or of == "unknown":
        return None
    try:
        r = subprocess.run(["git", "merge-base", "--is-ancestor", commit, of], cwd=ROOT,
                           capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {0: True, 1: False}.get(r.returncode)


def triton_revision(commit: str) -> pm.TritonRevision:
    """The Triton code a result's commit ran (see perf_model.TritonRevision)."""
    if is_ancestor(TRITON_PACKED_WEIGHT_COMMIT, commit) is False:
        return pm.BEFORE_07A4ED9
    if is_ancestor(TRITON_FUSED_REDUCTION_COMMIT, commit) is False:
        return pm.BEFORE_FUSED_REDUCTION
    if is_ancestor(TRITON_EXACT_TAPS_COMMIT, commit) is False:
        return pm.BEFORE_EXACT_TAPS
    if is_ancestor(TRITON_WGRAD_TAP_REGIONS_COMMIT, commit) is False:
        return pm.BEFORE_WGRAD_TAP_REGIONS
    if is_ancestor(TRITON_FORWARD_PACK_COMMIT, commit) is False:
        return pm.BEFORE_FORWARD_PACK
    return pm.CURRENT_TRITON


def load_results(root: str = RESULTS) -> List[dict]:
    """Every committed result file (tune.json, bench.json, profile.json), oldest first."""
    out = []
    for path in sorted(glob.glob(os.path.join(root, "*", "*.json"))):
        if os.path.basename(path) not in ("tune.json", "bench.json", "profile.json"):
            continue
        with open(path) as f:
            data = json.load(f)
        data["_path"] = os.path.relpath(path, ROOT)
        out.append(data)
    out.sort(key=lambda d: d.get("env", {}).get("timestamp", ""))
    return out


def _conv_of(row: dict, dtype: str = "bf16") -> pm.Conv:
    return pm.Conv(row["n"], row["c"], row["h"], row["w"], row.get("k", row["c"]), row["groups"],
                   row["stride"], elem_size=pm.ELEM_SIZE[dtype])


def load_resources() -> pm.Resources:
    """The cubin resource tables CI writes (scripts/*_check.py --json), when present."""
    tables = {}
    for key, name in (("triton", "triton_resources.json"), ("cuda", "cuda_resources.json")):
        path = os.path.join(ROOT, "build", name)
        if os.path.exists(path):
            with open(path) as f:
                tables[key] = json.load(f)
    return pm.Resources(tables.get("triton", {}).get("kernels"), tables.get("cuda"))


def calibration_rows(results: List[dict], resources: pm.Resources) -> List[dict]:
    """Every committed measurement of a kernel variant, with its prediction."""
    rows = []
    for data in results:
        env = data.get("env", {})
        gpu = pm.gpu_key(env.get("gpu"))
        if gpu is None or data.get("schema", "").split("/")[0] not in (
                "resnext_kernels.tune", "resnext_kernels.bench"):
            continue
        commit = env.get("git_commit", "")
        dtype = data.get("options", {}).get("dtype", "bf16")
        if data["schema"].startswith("resnext_kernels.tune"):
            revision = triton_revision(commit)
            # Today's cubins describe today's code: older code is predicted with the model's
            # register estimates (from the compile check of its time), not with them.
            used = (resources if revision == pm.CURRENT_TRITON
                    else pm.Resources(None, resources.cuda))
            for r in data["rows"]:
                if r["variant"] == "cudnn" or "median_ms" not in r:
                    continue
                pred = pm.triton_measured_variant(_conv_of(r, dtype), r["direction"], pm.GPUS[gpu],
                                                  r["variant"], revision, used,
                                                  r.get("pixel_tiles", 1))
                rows.append(_calibration(data, r, f"triton:{r['variant']}", pred,
                                         revision == pm.CURRENT_TRITON))
            continue
        for r in data.get("layers", []):
            backend = r.get("backend", "")
            if not backend.startswith("cuda") or r.get("median_ms") is None:
                continue
            name = backend[5:] if backend.startswith("cuda:") else r.get("cuda_variant")
            if not name and is_ancestor(CUDA_SMEM_RUNG_COMMIT, commit) is False:
                name = f"{r['direction']}_direct"  # the only rungs of that build
            if not name:
                continue
            try:
                pred = pm.cuda_variant(name, _conv_of(r, dtype), r["direction"], pm.GPUS[gpu], resources, dtype)
            except RuntimeError:  # no CUDA build here: the CUDA rows cannot be predicted
                continue
            rows.append(_calibration(data, r, f"cuda:{name}", pred, True))
    return rows


def _calibration(data: dict, r: dict, variant: str, pred: pm.Prediction, current: bool) -> dict:
    """One calibration row; `current` when the code that ran is today's (its measurement is
    then shown beside today's prediction)."""
    measured = r["median_ms"] * 1e3
    return dict(source=data["_path"], current_code=current, model=r["model"],
                layer=r.get("layer", r.get("name")),
                direction=r["direction"], variant=variant, measured_us=measured,
                predicted_us=pred.time_us, binding=pred.binding,
                ratio=measured / pred.time_us if pred.time_us and math.isfinite(pred.time_us) else None)


def summary(rows: List[dict]) -> dict:
    ok = sum(1 for r in rows if pm.within(r["measured_us"], r["predicted_us"]))
    return dict(within=ok, total=len(rows), fraction=ok / len(rows) if rows else None)


def cudnn_times(results: List[dict], gpu: str, model: str, batch: int, dtype: str) -> Dict[tuple, float]:
    """(layer, direction) -> cuDNN's median us from the newest results of this GPU."""
    out: Dict[tuple, float] = {}
    for data in results:  # oldest first: newer files overwrite
        if pm.gpu_key(data.get("env", {}).get("gpu")) != gpu:
            continue
        opts = data.get("options", {})
        if opts.get("dtype", "bf16") != dtype or opts.get("batch") != batch:
            continue
        for r in data.get("rows", []) + data.get("layers", []):
            is_cudnn = r.get("variant") == "cudnn" or r.get("backend") == "cudnn"
            if is_cudnn and r.get("model") == model and r.get("median_ms") is not None:
                out[(r.get("layer", r.get("name")), r["direction"])] = r["median_ms"] * 1e3
    return out


def newest_profile(results: List[dict]) -> Optional[dict]:
    profiles = [d for d in results if d.get("schema", "").startswith("resnext_kernels.profile")]
    return profiles[-1] if profiles else None


def model_gpu(args) -> pm.GPU:
    """The GPU the predictions use: --gpu's, with --l2-gbs in place of its fitted L2->SM rate
    and --launch-us in place of its assumed launch cost (measured ones: tune.json's
    l2_read_bandwidth_gbs and graph_launch_us)."""
    gpu = pm.GPUS[args.gpu]
    if args.l2_gbs:
        gpu = dataclasses.replace(gpu, l2_to_sm_gbs=args.l2_gbs)
    return gpu if args.launch_us is None else dataclasses.replace(gpu, launch_us=args.launch_us)


def model_rows(args, resources: pm.Resources, cudnn: Dict[tuple, float]) -> List[dict]:
    gpu = model_gpu(args)
    rows = []
    for layer in L.resnext50_layers(args.model, args.batch):
        conv = pm.Conv.from_layer(layer, pm.ELEM_SIZE[args.dtype])
        for direction in pm.DIRECTIONS:
            preds = pm.triton_variants(conv, direction, gpu, resources)
            if direction == "fprop":  # inference on a frozen module: no packing launch
                preds += [dataclasses.replace(p, variant=FROZEN + p.variant[len("triton:"):])
                          for p in pm.triton_variants(conv, direction, gpu, resources, frozen=True)]
            try:
                preds += pm.cuda_variants(conv, direction, gpu, resources, args.dtype)
                if direction == "fprop":  # a frozen module's fprop_halo reads its kept pack
                    preds += [dataclasses.replace(p, variant=CUDA_FROZEN + p.variant[len("cuda:"):])
                              for p in pm.cuda_variants(conv, direction, gpu, resources,
                                                        args.dtype, frozen=True)
                              if p.variant.endswith("_halo")]
            except RuntimeError:
                pass
            base = dict(model=args.model, layer=layer.name, direction=direction, count=layer.count,
                        min_bytes=conv.min_bytes(), roofline_us=conv.roofline_us(gpu),
                        cudnn_us=cudnn.get((layer.name, direction)))
            for p in preds:
                rows.append(dict(base, variant=p.variant, predicted_us=p.time_us, binding=p.binding,
                                 dram_bytes=p.dram_bytes, l2_bytes=p.l2_bytes, grid=p.grid,
                                 ctas_per_sm=p.ctas_per_sm, in_flight_per_sm=p.in_flight_per_sm,
                                 resource_source=p.resource_source, notes=p.notes))
    return rows


def _fmt(us: Optional[float]) -> str:
    if us is None:
        return "-"
    return "inf" if not math.isfinite(us) else f"{us:8.1f}"


def print_table(rows: List[dict], measured: Dict[tuple, float], show_all: bool) -> None:
    key = lambda r: (r["layer"], r["direction"])  # noqa: E731
    seen = []
    for r in rows:
        if key(r) not in seen:
            seen.append(key(r))
    for layer, direction in seen:
        mine = [r for r in rows if key(r) == (layer, direction)]
        head = mine[0]
        print(f"\n{layer} {direction}: {head['min_bytes'] / 1e6:.1f} MB, roofline {head['roofline_us']:.1f} us,"
              f" cuDNN {_fmt(head['cudnn_us']).strip()} us (measured)")
        ranked = sorted(mine, key=lambda r: r["predicted_us"])
        triton = [r for r in ranked if r["variant"].startswith("triton:")]
        shown = ranked if show_all else (triton[:3] + [r for r in ranked if r["variant"].startswith("cuda:")])
        for r in shown:
            m = measured.get((layer, direction, r["variant"]))
            tail = f"  measured {m:8.1f}  x{m / r['predicted_us']:.2f}" if m and math.isfinite(r["predicted_us"]) else ""
            print(f"  {r['variant']:38s} predicted {_fmt(r['predicted_us'])} us  {r['binding']:18s}{tail}")


def model_totals(rows: List[dict]) -> Dict[str, dict]:
    """Per direction, each layer counted as often as the model has it: the roofline, cuDNN
    measured, each CUDA variant's prediction and the fastest Triton configuration's (None where
    a layer is refused or unmeasured)."""
    out: Dict[str, dict] = {}
    for direction in pm.DIRECTIONS:
        mine = [r for r in rows if r["direction"] == direction]
        layers = {r["layer"]: r for r in mine}
        tot = dict(roofline_us=sum(r["count"] * r["roofline_us"] for r in layers.values()))
        cud = [r["cudnn_us"] for r in layers.values()]
        tot["cudnn_us"] = None if None in cud else sum(r["count"] * r["cudnn_us"] for r in layers.values())
        for prefix, name in (("triton:", "triton (fastest per layer)"),
                             (FROZEN, "triton frozen, inference (fastest per layer)")):
            best: Dict[str, float] = {}
            for r in mine:
                if r["variant"].startswith(prefix):
                    best[r["layer"]] = min(best.get(r["layer"], math.inf), r["predicted_us"])
            if best:
                tot[name] = sum(layers[k]["count"] * v for k, v in best.items())
        for name in sorted({r["variant"] for r in mine
                            if r["variant"].startswith(("cuda:", CUDA_FROZEN))}):
            times = [(r["count"], r["predicted_us"]) for r in mine if r["variant"] == name]
            ok = len(times) == len(layers) and all(math.isfinite(t) for _, t in times)
            tot[name] = sum(c * t for c, t in times) if ok else None
        out[direction] = tot
    return out


def print_totals(totals: Dict[str, dict]) -> None:
    print("\nOver the model (each layer as often as the network has it), us:")
    for direction, tot in totals.items():
        roof = tot["roofline_us"]
        cells = [f"roofline {roof:.0f}", f"cuDNN {_fmt(tot['cudnn_us']).strip()} (measured)"]
        for name, v in tot.items():
            if name in ("roofline_us", "cudnn_us") or v is None:
                continue
            cells.append(f"{name} {v:.0f} ({100 * roof / v:.0f}%)")
        print(f"  {direction}: " + ", ".join(cells))


def print_profile(profile: dict, rows: List[dict]) -> None:
    print(f"\nNsight Compute counters ({profile['_path']}) beside the predictions:")
    by = {(r["layer"], r["direction"], r["variant"]): r for r in rows}
    for k in profile.get("kernels", []):
        pred = by.get((k.get("layer"), k.get("direction"), k.get("variant")))
        line = (f"  {k.get('layer')} {k.get('direction')} {k.get('variant')} {k.get('kernel', '')[:30]}: "
                f"{k.get('duration_us', float('nan')):.1f} us, DRAM {k.get('dram_bytes', 0) / 1e6:.1f} MB, "
                f"L2->L1 {k.get('l2_bytes', 0) / 1e6:.1f} MB")
        if pred:
            line += (f" | predicted {pred['predicted_us']:.1f} us, DRAM {pred['dram_bytes'] / 1e6:.1f} MB, "
                     f"L2 {pred['l2_bytes'] / 1e6:.1f} MB, {pred['binding']}")
        print(line)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="32x4d", choices=sorted(L.MODELS))
    ap.add_argument("--gpu", default="H200", choices=sorted(pm.GPUS))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp16"))
    ap.add_argument("--results", default=RESULTS, help="folder of committed result folders")
    ap.add_argument("--all", action="store_true", help="print every Triton configuration")
    ap.add_argument("--worst", type=int, default=10, help="worst calibration misses to list")
    ap.add_argument("--json", help="write the rows and the calibration here")
    ap.add_argument("--l2-gbs", type=float, default=None,
                    help="predict with this L2->SM rate instead of the GPU's fitted one "
                         "(the calibration keeps the fitted one)")
    ap.add_argument("--launch-us", type=float, default=None,
                    help="predict with this cost of a launch in a graph replay instead of the "
                         "assumed 3 us (the calibration keeps the assumed one)")
    args = ap.parse_args(argv)

    results = load_results(args.results)
    resources = load_resources()
    cudnn = cudnn_times(results, args.gpu, args.model, args.batch, args.dtype)
    rows = model_rows(args, resources, cudnn)
    calib = calibration_rows(results, resources)
    gpu_name = pm.GPUS[args.gpu].name
    measured = {(c["layer"], c["direction"], c["variant"]): c["measured_us"] for c in calib
                if c["model"] == args.model and c["current_code"] and gpu_name in c["source"]}
    for r in rows:
        m = measured.get((r["layer"], r["direction"], r["variant"]))
        if m is not None:
            r["measured_us"] = m
    gpu = model_gpu(args)
    print(f"Performance model: ResNeXt-50 {args.model}, batch {args.batch}, {args.dtype} channels_last, "
          f"{gpu.name} ({gpu.hbm_measured_gbs:.0f} GB/s measured copy, {gpu.hbm_datasheet_gbs:.0f} "
          f"datasheet, L2->SM {gpu.l2_to_sm_gbs:.0f} GB/s"
          f"{' (--l2-gbs)' if args.l2_gbs else ' (fitted)'}, a launch {gpu.launch_us:g} us"
          f"{' (--launch-us)' if args.launch_us is not None else ' (assumed)'}). Predicted times are predictions; cuDNN and 'measured' are committed "
          f"measurements; 'measured' is shown only where today's code was measured (older "
          f"code is compared with its own prediction in the calibration).")
    srcs = sorted({r["resource_source"] for r in rows})
    print(f"Registers and shared memory: {', '.join(srcs)} (cubin tables: build/*_resources.json)")
    print_table(rows, measured, args.all)
    totals = model_totals(rows)
    print_totals(totals)
    profile = newest_profile(results)
    if profile:
        print_profile(profile, rows)
    s = summary(calib)
    print("\nCalibration (each committed measurement against the model of the code that ran it):")
    for source in sorted({c["source"] for c in calib}):
        sub = summary([c for c in calib if c["source"] == source])
        print(f"  {source}: {sub['within']}/{sub['total']} within 0.67x-1.5x")
    worst = sorted((c for c in calib if c["ratio"]), key=lambda c: -abs(math.log(c["ratio"])))
    if worst:
        print(f"  worst {min(args.worst, len(worst))} (measured / predicted):")
        for c in worst[:args.worst]:
            print(f"    x{c['ratio']:5.2f}  {c['model']} {c['layer']} {c['direction']} {c['variant']} "
                  f"(measured {c['measured_us']:.1f} us, predicted {c['predicted_us']:.1f}, {c['binding']})")
    frac = s["fraction"]
    print(f"calibration: {s['within']}/{s['total']} measured rows predicted within 0.67x-1.5x"
          + (f" ({100 * frac:.0f}%)" if frac is not None else ""))
    out = dict(schema=SCHEMA, model=args.model, gpu=args.gpu, batch=args.batch, dtype=args.dtype,
               rows=rows, totals=totals, calibration=dict(rows=calib, **s),
               profile=profile.get("kernels", []) if profile else [])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else v)
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
