"""Registers, shared memory, stack and spills of every kernel in the built extension, per
architecture, from `cuobjdump --dump-resource-usage` (no GPU needed). Exit status 1 if any
kernel spills (CI runs this after the build): local memory, or a stack frame, which is where
ptxas puts spilled registers (`-warn-spills` reports those as spills while LOCAL stays 0) and
none of the kernels has a local array that would need one.

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
    if out_json:
        import json

        with open(out_json, "w") as f:
            json.dump({"kernels": [dict(arch=arch, name=name, regs=regs, stack=stack, shared=shared,
                                        local=local)
                                   for (arch, _, regs, stack, shared, local), name in zip(rows, names)]},
                      f, indent=1)
    return 1 if spills else 0


if __name__ == "__main__":
    sys.exit(main())
