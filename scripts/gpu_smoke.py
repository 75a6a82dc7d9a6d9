"""Runs every CUDA kernel variant and every Triton direction on small cases (each variant on
those it claims; one it claims none of fails) and checks each result against the float64
reference. Used by gpu_check --quick as the smoke test and,
with --backends cuda, under compute-sanitizer (memcheck, racecheck).

    python scripts/gpu_smoke.py [--backends cuda triton] [--dtype bf16]
Exit status 0 when every check passed.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resnext_kernels import _native, reference  # noqa: E402
from resnext_kernels.ops import NATIVE, TRITON  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def small_case(dtype, channels_last, cg, size=(9, 7), stride=2):
    """Stride 2 and odd sizes in one small problem: 2 x C x 9 x 7, groups of `cg` channels
    (4: packed groups; 16: what the tensor-core rungs take; 14: four groups, C = 56, the halo
    rungs' blocks that straddle 16-byte chunks), else C = 32. `size` and `stride` make others
    (20 x 12 at stride 1: wgrad_halo's tiles there are two bands of 10 rows, not whole images)."""
    gen = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    c = 56 if cg == 14 else 32
    (h, wd), s = size, stride
    x = torch.randn(2, c, h, wd, generator=gen).to("cuda", dtype).contiguous(memory_format=fmt)
    w = torch.randn(c, cg, 3, 3, generator=gen).to("cuda", dtype)
    b = torch.randn(c, generator=gen).to("cuda", dtype)
    conv = dict(stride=(s, s), padding=(1, 1), dilation=(1, 1), groups=c // cg)
    p, q = (h - 1) // s + 1, (wd - 1) // s + 1
    dy = torch.randn(2, c, p, q, generator=gen).to("cuda", dtype).contiguous(memory_format=fmt)
    return x, w, b, dy, conv


def run_family(family, x, w, b, dy, conv):
    args = (list(conv["stride"]), list(conv["padding"]), list(conv["dilation"]), conv["groups"])
    return {"fprop": family.fprop(x, w, b, *args),
            "dgrad": family.dgrad(dy, w, list(x.shape), *args),
            "wgrad": family.wgrad(dy, x, list(w.shape), *args)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", nargs="+", default=["cuda", "triton"])
    ap.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_smoke: no CUDA device")
    torch.backends.cudnn.allow_tf32 = False
    dtype = DTYPES[args.dtype]
    failures = 0
    ran = set()
    for channels_last, cg, size, stride in ((True, 4, (9, 7), 2), (False, 4, (9, 7), 2), (True, 16, (9, 7), 2),
                                            (False, 16, (9, 7), 2), (True, 14, (9, 7), 2), (True, 16, (20, 12), 1)):
        x, w, b, dy, conv = small_case(dtype, channels_last, cg, size, stride)
        ref = reference.conv_f64(x, w, b, dy, **conv)
        cudnn = reference.conv_in_dtype(x, w, b, dy, **conv)
        runs = []
        if "cuda" in args.backends:
            if _native.cuda_unavailable_reason():
                print(f"FAIL cuda: {_native.cuda_unavailable_reason()}")
                failures += 1
            else:
                for v in _native._C.variants():
                    _native._C.set_forced_variant(v["direction"], v["name"])
                    try:
                        out = run_family(NATIVE, x, w, b, dy, conv)[v["direction"]]
                        runs.append((f"cuda:{v['name']}", v["direction"], out))
                        ran.add(v["name"])
                    except RuntimeError as exc:  # a variant refusing a case it does not claim
                        if f"forced variant {v['name']} cannot run this problem" not in str(exc):
                            raise
                        print(f"SKIP cuda:{v['name']} Cg={cg} {size}: {str(exc).splitlines()[-1]}")
                    finally:
                        _native._C.set_forced_variant(v["direction"], "")
        if "triton" in args.backends:
            for direction, out in run_family(TRITON, x, w, b, dy, conv).items():
                runs.append((f"triton:{direction}", direction, out))
        torch.cuda.synchronize()
        layout = "channels_last" if channels_last else "nchw"
        for name, direction, out in runs:
            try:
                reference.check(direction, out, cudnn[direction], ref[direction])
                print(f"PASS {name} {args.dtype} {layout} Cg={cg} {size}")
            except AssertionError as exc:
                failures += 1
                print(f"FAIL {name} {args.dtype} {layout} Cg={cg} {size}: {exc}")
    if "cuda" in args.backends and not _native.cuda_unavailable_reason():
        for v in _native._C.variants():
            if v["name"] not in ran:
                failures += 1
                print(f"FAIL cuda:{v['name']}: claimed none of the smoke cases")
    print(f"{failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
