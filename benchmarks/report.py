"""Turns committed GPU benchmark results into the README's performance section.

    python benchmarks/report.py                 # rewrite README.md's generated sections
    python benchmarks/report.py --print FILE    # print the section for one results file

Reads the newest benchmarks/results/*/bench.json and tune.json (by the timestamp they record),
never a number typed by hand. The README sections lie between `<!-- perf:begin -->` and
`<!-- perf:end -->`, `<!-- tune:begin -->` and `<!-- tune:end -->`, and `<!-- auto:begin -->`
and `<!-- auto:end -->` (which backend `auto` would measure fastest, per layer).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from collections import defaultdict
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- perf:begin -->", "<!-- perf:end -->"
VARIANTS_BEGIN, VARIANTS_END = "<!-- variants:begin -->", "<!-- variants:end -->"
TUNE_BEGIN, TUNE_END = "<!-- tune:begin -->", "<!-- tune:end -->"
AUTO_BEGIN, AUTO_END = "<!-- auto:begin -->", "<!-- auto:end -->"


def newest_results(pattern: str = os.path.join(ROOT, "benchmarks", "results", "*", "bench.json")) -> str | None:
    """The results file of the given name (bench.json, tune.json) with the newest timestamp."""
    files = glob.glob(pattern)
    if not files:
        return None
    return max(files, key=lambda f: json.load(open(f))["env"].get("timestamp", ""))


def layer_table(data: dict, model: str) -> List[str]:
    """Per layer and direction of `model`: each backend's median time, the best kernel's speed-up
    over cuDNN and its share of the memory roofline."""
    backends = data["options"]["backends"]
    cells = defaultdict(dict)
    order = []
    for r in data["layers"]:
        if r["model"] != model:
            continue
        key = (r["name"], r["direction"])
        if key not in cells:
            order.append(key)
        cells[key][r["backend"]] = r
    head = ["layer", "dir"] + [f"{b} ms" for b in backends] + ["best vs cuDNN", "best % roofline"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in order:
        row = cells[key]
        times = {b: row[b]["median_ms"] for b in backends if b in row and not row[b].get("error")}
        ours = {b: t for b, t in times.items() if b != "cudnn"}
        best = min(ours, key=ours.get) if ours else None
        speed = f"{times['cudnn'] / ours[best]:.2f}x ({best})" if best and "cudnn" in times else "-"
        roof = f"{row[best]['roofline_pct']:.0f}%" if best and row[best].get("roofline_pct") else "-"
        vals = [f"{times[b]:.4f}" if b in times else "n/a" for b in backends]
        lines.append("| " + " | ".join([key[0], key[1]] + vals + [speed, roof]) + " |")
    return lines


def model_table(data: dict) -> List[str]:
    """Grouped layers of each model, weighted by count, per backend and direction."""
    totals = defaultdict(dict)
    for m in data["models"]:
        totals[(m["model"], m["direction"])][m["backend"]] = m["total_ms"]
    backends = data["options"]["backends"]
    lines = ["| model | dir | " + " | ".join(f"{b} ms" for b in backends) + " |",
             "|" + "---|" * (2 + len(backends))]
    for (model, direction), row in sorted(totals.items()):
        lines.append(f"| {model} | {direction} | " +
                     " | ".join(f"{row[b]:.3f}" if b in row else "n/a" for b in backends) + " |")
    return lines


def section(path: str) -> str:
    data = json.load(open(path))
    env, opt = data["env"], data["options"]
    rel = os.path.relpath(path, ROOT)
    lines = [
        f"Measured by `benchmarks/bench_cardinality.py` on {env.get('gpu')} (driver {env.get('driver')}, "
        f"CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn')}, torch {env.get('torch')}, triton "
        f"{env.get('triton')}), commit `{str(env.get('git_commit'))[:12]}`, {env.get('timestamp')}; "
        f"{opt['dtype']} {opt['layout']}, batch {opt['batch']}, {opt['image']}x{opt['image']} images; "
        f"copy bandwidth {data['copy_bandwidth_gbs']:.0f} GB/s. Source: `{rel}`.",
        "",
    ]
    models = sorted({r["model"] for r in data["layers"]})
    for model in models:
        lines += [f"**ResNeXt-50 {model}**, grouped 3x3 layers (median ms):", ""] + layer_table(data, model) + [""]
    lines += ["All grouped layers of each model, weighted by how often each occurs (ms):", ""]
    lines += model_table(data)
    if data.get("end_to_end"):
        lines += ["", f"Whole ResNeXt-50 steps at batch {opt.get('e2e_batch')} (images/s; eager, "
                      f"{opt['dtype']} autocast):", ""]
        lines += e2e_table(data)
    if data.get("interrupted"):
        lines += ["", "(this run was stopped by its time budget: the tables hold what it measured)"]
    return "\n".join(lines) + "\n"


def e2e_table(data: dict) -> List[str]:
    lines = ["| model | backend | mode | images/s | vs C = 1 |", "|---|---|---|---|---|"]
    for r in data["end_to_end"]:
        if r.get("error"):
            lines.append(f"| {r['model']} | {r['backend']} | {r['mode']} | not run: "
                         f"{r['error'][:60]} | - |")
            continue
        rel = f"{r['relative_to_c1']:.2f}" if r.get("relative_to_c1") else "-"
        lines.append(f"| {r['model']} | {r['backend']} | {r['mode']} | {r['images_per_s']:.0f} | {rel} |")
    return lines


def tune_section(path: str) -> str:
    """From a tune_triton.py results file: per layer and direction, cuDNN's time, the fastest
    Triton variant, its time and its share of the roofline."""
    data = json.load(open(path))
    env = data["env"]
    rel = os.path.relpath(path, ROOT)
    lines = [
        f"Measured by `benchmarks/tune_triton.py` on {env.get('gpu')} (torch {env.get('torch')}, "
        f"triton {env.get('triton')}, cuDNN {env.get('cudnn')}), {env.get('timestamp')}; "
        f"{data['options']['dtype']} channels_last, batch {data['options']['batch']}; copy "
        f"bandwidth {data['copy_bandwidth_gbs']:.0f} GB/s; commit as recorded "
        f"`{str(env.get('git_commit'))[:12]}` (benchmarks/NOTES.md lists records known to be "
        f"wrong). Source: `{rel}`.",
        "",
        "| model | layer | dir | cuDNN ms | best Triton variant | Triton ms | Triton / cuDNN time "
        "| Triton % roofline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = list(dict.fromkeys((r["model"], r["layer"], r["direction"]) for r in data["rows"]))
    for key in keys:
        mine = [r for r in data["rows"] if (r["model"], r["layer"], r["direction"]) == key
                and "median_ms" in r]
        cudnn = next((r for r in mine if r["variant"] == "cudnn"), None)
        ours = [r for r in mine if r["variant"] != "cudnn"]
        if not ours or cudnn is None:
            continue
        best = min(ours, key=lambda r: r["median_ms"])
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {cudnn['median_ms']:.4f} | "
                     f"{best['variant']} | {best['median_ms']:.4f} | "
                     f"{best['median_ms'] / cudnn['median_ms']:.2f} | {best['roofline_pct']:.0f}% |")
    return "\n".join(lines) + "\n"


def auto_section(paths: List[str]) -> str:
    """Which backend `auto` measures fastest where: per GPU results file (bench.json's backends,
    tune.json's cuDNN against its fastest Triton variant), per layer and direction, the winner."""
    lines = []
    for path in paths:
        data = json.load(open(path))
        times = defaultdict(dict)           # (model, layer, dir) -> backend -> ms
        if "rows" in data:                  # tune.json
            for r in data["rows"]:
                if "median_ms" in r:
                    b = "cudnn" if r["variant"] == "cudnn" else "triton"
                    key = (r["model"], r["layer"], r["direction"])
                    times[key][b] = min(times[key].get(b, float("inf")), r["median_ms"])
        else:
            for r in data["layers"]:
                if r.get("median_ms") is not None and r["backend"] in ("cudnn", "cuda", "triton"):
                    times[(r["model"], r["name"], r["direction"])][r["backend"]] = r["median_ms"]
        wins = defaultdict(list)
        for key, t in times.items():
            if "cudnn" in t and len(t) > 1:
                wins[min(t, key=t.get)].append(key)
        total = sum(len(v) for v in wins.values())
        if not total:
            continue
        env = data["env"]
        counts = ", ".join(f"{'cuDNN' if b == 'cudnn' else b} on {len(v)}" for b, v in sorted(wins.items()))
        line = (f"- {env.get('gpu')}, `{os.path.relpath(path, ROOT)}` ({env.get('timestamp')}): "
                f"fastest of {total} layer-directions: {counts}")
        kernel_wins = [k for b, v in wins.items() if b != "cudnn" for k in v]
        if kernel_wins:
            line += " (kernels win: " + ", ".join(f"{m} {l} {d}" for m, l, d in kernel_wins) + ")"
        lines.append(line)
    return ("\n".join(lines) if lines else "(no GPU results committed yet)") + "\n"


def variants_table() -> str:
    """The CUDA kernel ladder, read from the registry of the built extension."""
    import sys

    sys.path.insert(0, ROOT)
    import resnext_kernels as rk

    variants = rk.cuda_variants()
    if not variants:
        return "(the extension here was built without CUDA kernels)\n"
    lines = ["| direction | rung | variant | what this rung does | chosen automatically |",
             "|---|---|---|---|---|"]
    for v in sorted(variants, key=lambda v: (v["direction"], v["rung"])):
        auto = "yes" if v["gpu_verified"] else "no: not yet verified on a GPU (forced only)"
        lines.append(f"| {v['direction']} | {v['rung']} | `{v['name']}` | {v['summary']} | {auto} |")
    return "\n".join(lines) + "\n"


def update_readme(text: str, readme: str = os.path.join(ROOT, "README.md"), begin: str = BEGIN,
                  end: str = END) -> None:
    content = open(readme).read()
    start, stop = content.index(begin) + len(begin), content.index(end)
    open(readme, "w").write(content[:start] + "\n" + text + content[stop:])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--print", dest="print_file", help="print the section for this results file")
    args = ap.parse_args(argv)
    if args.print_file:
        print(section(args.print_file))
        return
    update_readme(variants_table(), begin=VARIANTS_BEGIN, end=VARIANTS_END)
    path = newest_results()
    if path is None:
        raise SystemExit("no results under benchmarks/results/*/bench.json")
    update_readme(section(path))
    tune = newest_results(os.path.join(ROOT, "benchmarks", "results", "*", "tune.json"))
    if tune is not None:
        update_readme(tune_section(tune), begin=TUNE_BEGIN, end=TUNE_END)
    update_readme(auto_section([p for p in (path, tune) if p]), begin=AUTO_BEGIN, end=AUTO_END)
    print(f"README.md regenerated: kernel ladder from the registry, performance from "
          f"{os.path.relpath(path, ROOT)}"
          + (f", Triton tuning from {os.path.relpath(tune, ROOT)}" if tune else ""))


if __name__ == "__main__":
    main()
