"""Registers, shared memory, stack and spills of every kernel in the built extension, per
architecture, from `cuobjdump --dump-resource-usage` (no GPU needed). Exit status 1 if any
kernel spills (CI runs this after the build): local memory, or a stack frame, which is where
ptxas puts spilled registers (`-warn-spills` reports those as spills while LOCAL stays 0) and
none of the kernels has a local array that would need one.

It also recounts, in the sm_90 SASS, the loops whose instruction counts the performance model
uses (perf_model.CUDA_WGRAD_HALO_KB_SASS: wgrad_halo's K-block loop, bf16, within 5%; its
WGRAD_HALO_WALK_PASS_SASS, WGRAD_HALO_X_IMAGE_SASS, WGRAD_HALO_DY_IMAGE_SASS,
WGRAD_HALO_TILE_SASS and WGRAD_HALO_CLUSTER_TILE_SASS: a pass and an image of each staging walk,
the tile loop's own instructions and an accumulator tile of each of the cluster reduction's two
loops, within 25%;
HALO_STAGE_ROW_SASS and HALO_STORE_ROW_SASS: a row of fprop_halo's staging and store loops,
within 20%; HALO_PACK_WORD_SASS: its weight packing, a word, within 25%; HALO_EPILOGUE_SASS: the
epilogue of its dgrad kernels, within 25%) and fails when one is
off, so that the model's issue term follows the code.

    python scripts/cuda_resource_check.py [path/to/_C.so] [--json PATH]

--json writes the table (arch, demangled name, registers, shared memory, stack, spills) for
resnext_kernels/perf_model.py.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys

import sass_loops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_cuobjdump() -> str | None:
    for candidate in (shutil.which("cuobjdump"), "/usr/local/cuda/bin/cuobjdump"):
        if candidate and os.path.exists(candidate):
            return candidate
    try:
        import triton

        hits = glob.glob(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"))
        return hits[0] if hits else None
    except ImportError:
        return None


def parse(text: str):
    """Yields (arch, kernel, regs, stack, shared, local) from cuobjdump's resource report."""
    arch = "?"
    kernel = None
    for line in text.splitlines():
        m = re.search(r"arch = (sm_\d+a?)", line)
        if m:
            arch = m.group(1)
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            kernel = m.group(1)
            continue
        m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", line)
        if m and kernel:
            yield (arch, kernel, *map(int, m.groups()))
            kernel = None


SASS_TOLERANCE = 0.05


def _mma_free(bodies) -> list:
    return [b for b in bodies if not any(re.search(r"\bHMMA", t) for t in b)]


def _count(body, pattern: str) -> int:
    return sum(bool(re.search(pattern, t)) for t in body)


def row_size(bodies, op: str, passes: int) -> float | None:
    """Instructions of one row of the smallest MMA-free loop issuing `op` (LDGSTS: staging; STG:
    stores), `passes` of `op` a row (a loop unrolled over rows holds several rows)."""
    sizes = [len(b) * passes / n for b in _mma_free(bodies) for n in [_count(b, rf"\b{op}\b")] if n]
    return min(sizes) if sizes else None


def pack_word_size(bodies, sass: str = "") -> float | None:
    """Instructions a packed word of fprop_halo's weight packing: in the MMA-free loops that
    load (LDG) and store to shared memory (STS), all their instructions over their words; where
    the packing is straight-line code (a slab in one round, no loop), the first slab's as packed
    before the tile loop: from its first weight load to its last store, over its stores."""
    packs = [(len(b), n) for b in _mma_free(bodies) if _count(b, r"\bLDG")
             for n in [_count(b, r"\bSTS\b")] if n]
    if packs:
        return sum(size for size, _ in packs) / sum(n for _, n in packs)
    tile = [span for span in sass_loops.spans(sass) if any(re.search(r"\bHMMA", t) for t in span[2])]
    if not tile:
        return None
    start = max(tile, key=lambda span: len(span[2]))[0]
    before = [text for address, text in sass_loops.instructions(sass) if address < start]
    loads = [i for i, text in enumerate(before) if re.search(r"\bLDG\.E\b", text)]
    stores = [i for i, text in enumerate(before) if re.search(r"\bSTS\b", text)]
    if not loads or not stores:
        return None
    return (stores[-1] - loads[0] + 1) / len(stores)


def epilogue_size(sass: str) -> int | None:
    """Instructions from a kernel's last mma to its first global store: the last class's epilogue
    and the store loop's set-up (fprop_halo's `epilogue` in one form, as dgrad's kernels have
    it)."""
    code = [text for _, text in sass_loops.instructions(sass)]
    mma = [i for i, text in enumerate(code) if re.search(r"\bHMMA", text)]
    store = next((i for i in range(mma[-1], len(code)) if re.search(r"\bSTG", code[i])), None) if mma else None
    return None if store is None else store - mma[-1] - 1


def wgrad_halo_loops(sass: str):
    """wgrad_halo's loops in one kernel's SASS: the K-block loop (the smallest holding MMAs); the
    staging walks inside the tile loop, x's then dy's, each an image loop holding a pass loop
    (`x_pass`: the inner loop; `x_image`: the outer less the inner); the tile loop's own
    instructions (the largest holding MMAs, less the K-block loop and the walks); None if not so
    shaped."""
    spans = sass_loops.spans(sass)
    mma = [s for s in spans if any("HMMA" in t for t in s[2])]
    if not mma:
        return None
    kb, tile = min(mma, key=lambda s: len(s[2])), max(mma, key=lambda s: len(s[2]))
    copies = [s for s in spans if tile[0] <= s[0] and s[1] < tile[1]
              and sum("LDGSTS" in t for t in s[2]) == 1]

    def inside(a, b) -> bool:
        return a is not b and b[0] <= a[0] and a[1] <= b[1]

    inner = sorted(s for s in copies if any(inside(s, o) for o in copies))
    outer = sorted(s for s in copies if any(inside(o, s) for o in copies))
    if len(inner) != 2 or len(outer) != 2 or len(copies) != 4 or kb is tile:
        return None
    # The cluster reduction's two loops (up to 8 splits, up to 16): MMA-free, loading from the
    # cluster's shared memory (generic loads, LD) and storing the weights (STG).
    cluster = sorted(len(s[2]) for s in spans if not any("HMMA" in t for t in s[2])
                     and any(re.search(r"\bLD\.E\b", t) for t in s[2]) and any(re.search(r"\bSTG\b", t) for t in s[2]))
    found = {"kb": len(kb[2]),
             "tile": len(tile[2]) - len(kb[2]) - sum(len(s[2]) for s in outer),
             "cluster8": cluster[0] if len(cluster) == 2 else None,
             "cluster16": cluster[1] if len(cluster) == 2 else None}
    for part, i in (("x", 0), ("dy", 1)):
        found[f"{part}_pass"] = len(inner[i][2])
        found[f"{part}_image"] = len(outer[i][2]) - len(inner[i][2])
    return found


def check_model_sass(tool: str, path: str, rows, demangled) -> int:
    """Recounts the loops the performance model takes from the SASS; returns how many are off."""
    sys.path.insert(0, ROOT)
    from resnext_kernels import perf_model as pm

    if not any(arch == "sm_90" for arch, *_ in rows):
        print("no sm_90 code in this build: the model's SASS counts are not rechecked")
        return 0
    names = {}
    for (arch, mangled, *_), name in zip(rows, demangled):
        m = re.search(r"(wgrad_halo|fprop_halo)_kernel<__nv_bfloat16, (\d+), (\d+)"
                      r"(?:, (\d+), (true|false))?>", name)
        if arch == "sm_90" and m:   # (kernel, Cg, stride[, mode, pre-packed weight])
            names[mangled] = (m.group(1), *(int(g) for g in m.groups()[1:4] if g is not None),
                              *([m.group(5) == "true"] if m.group(5) else []))
    sass = subprocess.run([tool, "-sass", "-arch", "sm_90", path], capture_output=True,
                          text=True).stdout
    texts = {names[name]: text for name, text in sass_loops.functions(sass).items() if name in names}
    found = {key: sass_loops.loops(text) for key, text in texts.items()}
    off = 0

    def drifted(got, model, tolerance: float) -> bool:
        return got is None or abs(got - model) > tolerance * model

    def report(what: str, got, model, tolerance: float) -> None:
        nonlocal off
        bad = drifted(got, model, tolerance)
        off += bad
        shown = "none" if got is None else f"{got:.0f}"
        print(f"{what}: {shown} instructions a warp (model {model}){'  OFF' if bad else ''}")

    for (cg, stride), model in pm.CUDA_WGRAD_HALO_KB_SASS.items():
        got = wgrad_halo_loops(texts.get(("wgrad_halo", cg, stride), ""))
        what = f"wgrad_halo, bf16 sm_90, Cg = {cg}, stride {stride}"
        report(f"{what}: K-block loop", got and got["kb"], model, SASS_TOLERANCE)
        for part, want in (("x_pass", pm.WGRAD_HALO_WALK_PASS_SASS), ("dy_pass", pm.WGRAD_HALO_WALK_PASS_SASS),
                           ("x_image", pm.WGRAD_HALO_X_IMAGE_SASS), ("dy_image", pm.WGRAD_HALO_DY_IMAGE_SASS),
                           ("tile", pm.WGRAD_HALO_TILE_SASS), ("cluster8", pm.WGRAD_HALO_CLUSTER_TILE_SASS[cg][0]),
                           ("cluster16", pm.WGRAD_HALO_CLUSTER_TILE_SASS[cg][1])):
            name = {"tile": "tile loop", "cluster8": "cluster reduction loop (8 splits)",
                    "cluster16": "cluster reduction loop (16 splits)",
                    "x_pass": "x staging walk, a pass", "dy_pass": "dy staging walk, a pass",
                    "x_image": "x staging walk, an image", "dy_image": "dy staging walk, an image",
                    }[part]
            report(f"{what}: {name}", got and got[part], want, pm.WGRAD_HALO_SASS_TOLERANCE)
    halo = sorted(k for k in found if k[0] == "fprop_halo")

    def recount(what: str, tolerance: float, model_text: str, measure, kernels=halo) -> None:
        """Each fprop_halo kernel's `measure(key)` -> (got, model, detail) within `tolerance`:
        the ones off by name, then the range over all."""
        ratios = []
        for key in kernels:
            got, want, detail = measure(key)
            if got is not None:
                ratios.append(got / want)
            if drifted(got, want, tolerance):
                report(f"fprop_halo {what}, bf16 sm_90, Cg = {key[1]}, stride {key[2]}, mode "
                       f"{key[3]}{', pre-packed' if key[4] else ''}{detail}", got, want, tolerance)
        print(f"fprop_halo {what}, bf16 sm_90, {len(kernels)} kernels: "
              + (f"{min(ratios):.2f}-{max(ratios):.2f}x" if ratios else "none")
              + f" the model's {model_text}")

    def stage_row(key):
        passes = pm.halo_row_passes(pm.halo_cols(key[2]), pm.halo_slab(key[1]))
        return (row_size(found[key], "LDGSTS", passes), pm.halo_row_sass(pm.HALO_STAGE_ROW_SASS, passes),
                f", {passes} passes")

    def store_row(key):
        passes = pm.halo_row_passes(16, pm.halo_slab(key[1]))
        return row_size(found[key], "STG", passes), pm.HALO_STORE_ROW_SASS[(key[1], key[3] == 2)], ""

    recount("staging row", pm.HALO_ROW_SASS_TOLERANCE,
            f"{pm.HALO_STAGE_ROW_SASS[0]} + {pm.HALO_STAGE_ROW_SASS[1]} a pass", stage_row)
    recount("store row", pm.HALO_ROW_SASS_TOLERANCE, "(HALO_STORE_ROW_SASS)", store_row)
    recount("epilogue (dgrad: one form)", pm.HALO_EPILOGUE_SASS_TOLERANCE, "(HALO_EPILOGUE_SASS)",
            lambda key: (epilogue_size(texts[key]), pm.halo_epilogue_sass(key[1], key[3] == 2), ""),
            [key for key in halo if key[3] != 0])
    recount("weight packing a word", pm.HALO_PACK_SASS_TOLERANCE, "(HALO_PACK_WORD_SASS)",
            lambda key: (pack_word_size(found[key], texts[key]), pm.HALO_PACK_WORD_SASS[(key[1], key[3] == 2)], ""),
            [key for key in halo if not key[4]])   # the pre-packed kernels pack nothing
    if not halo:
        off += 1
        print("fprop_halo: no bf16 sm_90 kernel found to recount")
    return off


def demangle(names):
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout
        return out.splitlines()
    except OSError:
        return list(names)


def main() -> int:
    argv = sys.argv[1:]
    out_json = None
    if "--json" in argv:
        i = argv.index("--json")
        out_json = argv[i + 1]
        del argv[i:i + 2]
    paths = argv or glob.glob(os.path.join(ROOT, "resnext_kernels", "_C*.so"))
    if not paths:
        print("no built extension found (resnext_kernels/_C*.so); build it first")
        return 1
    tool = find_cuobjdump()
    if tool is None:
        print("cuobjdump not found (CUDA toolkit or the triton package ship it)")
        return 1
    text = subprocess.run([tool, "--dump-resource-usage", paths[0]], capture_output=True,
                          text=True, check=True).stdout
    rows = list(parse(text))
    if not rows:
        print(f"{paths[0]} holds no CUDA kernels (built without CUDA?)")
        return 1
    names = demangle([r[1] for r in rows])
    print(f"{'arch':7s} {'regs':>4s} {'stack':>5s} {'smem':>6s} {'spill':>5s}  kernel")
    spills = 0
    for (arch, _, regs, stack, shared, local), name in zip(rows, names):
        spills += local > 0 or stack > 0
        print(f"{arch:7s} {regs:4d} {stack:5d} {shared:6d} {local:5d}  {name[:110]}"
              + ("  SPILLS" if local or stack else ""))
    print(f"{len(rows)} kernels, {spills} spilling")
    off = check_model_sass(tool, paths[0], rows, names)
    if off:
        print(f"{off} loop counts off the performance model's beyond their tolerance (update "
              "perf_model's CUDA_WGRAD_HALO_KB_SASS, WGRAD_HALO_*_SASS, HALO_*_ROW_SASS, HALO_EPILOGUE_SASS or "
              "HALO_PACK_WORD_SASS from the counts above)")
    if out_json:
        import json

        with open(out_json, "w") as f:
            json.dump({"kernels": [dict(arch=arch, name=name, regs=regs, stack=stack, shared=shared,
                                        local=local)
                                   for (arch, _, regs, stack, shared, local), name in zip(rows, names)]},
                      f, indent=1)
    return 1 if spills or off else 0


if __name__ == "__main__":
    sys.exit(main())
