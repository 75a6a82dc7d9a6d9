"""Build of resnext_kernels and its native extension resnext_kernels._C.

The extension always holds the op schemas and their CPU implementations (C++ only). When a CUDA
toolkit is found it also holds the hand-written CUDA kernels. Switches (environment variables):

  RESNEXT_KERNELS_CUDA=1      require the CUDA kernels; fail if no toolkit is found
  RESNEXT_KERNELS_CUDA=0      build without CUDA even when a toolkit is present
  (unset)                     CUDA when a toolkit is found (CUDA_HOME, else /usr/local/cuda)
  TORCH_CUDA_ARCH_LIST        target architectures (default "8.0;9.0")
  MAX_JOBS                    parallel compile jobs (ninja)
  RESNEXT_KERNELS_NVCC_FLAGS  extra nvcc flags, space separated

Build it against the torch it will run with: `pip install --no-build-isolation .`
"""
import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "8.0;9.0"  # A100 and H100; PTX of the last one is embedded too.


def find_cuda_home():
    """The toolkit root: CUDA_HOME or /usr/local/cuda, when it has bin/nvcc. A wrapper `nvcc` on
    PATH is not followed: torch would guess /usr/local from it and fail to link cudart."""
    for candidate in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if candidate and os.path.exists(os.path.join(candidate, "bin", "nvcc")):
            return candidate
    return None


def cuda_wanted(switch=None, cuda_home=""):
    """(toolkit root or None, why not). Raises SystemExit when CUDA is forced but missing."""
    switch = (os.environ.get("RESNEXT_KERNELS_CUDA", "") if switch is None else switch).strip().lower()
    cuda_home = find_cuda_home() if cuda_home == "" else cuda_home
    if switch in ("0", "false", "no", "off"):
        return None, "disabled by RESNEXT_KERNELS_CUDA=0"
    if cuda_home is None:
        if switch in ("1", "true", "yes", "on"):
            sys.exit("RESNEXT_KERNELS_CUDA=1 but no CUDA toolkit was found "
                     "(set CUDA_HOME to a directory with bin/nvcc)")
        return None, "no CUDA toolkit found (CUDA_HOME, /usr/local/cuda)"
    return cuda_home, ""


def extensions():
    cuda_home, reason = cuda_wanted()
    if cuda_home:
        # torch.utils.cpp_extension reads CUDA_HOME when it is imported.
        os.environ["CUDA_HOME"] = cuda_home
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    host_sources = [
        "csrc/module.cpp", "csrc/ops.cpp", "csrc/registry.cpp", "csrc/selection.cpp",
    ]
    cxx_flags = ["-O3", "-std=c++20"]
    if not cuda_home:
        print(f"resnext_kernels: building without CUDA kernels: {reason}")
        ext = CppExtension("resnext_kernels._C", host_sources, extra_compile_args={"cxx": cxx_flags})
        return [ext], BuildExtension
    import torch  # noqa: F401  (after CUDA_HOME is set)

    nvcc_flags = [
        "-O3", "-std=c++20", "-lineinfo", "--expt-relaxed-constexpr",
        "-Xptxas=-warn-spills", "-Xptxas=-warn-lmem-usage", "-DRK_WITH_CUDA",
    ] + os.environ.get("RESNEXT_KERNELS_NVCC_FLAGS", "").split()
    # cusparse.h and friends ship in the nvidia wheels rather than some toolkits.
    include_dirs = glob.glob(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu*", "include"))
    ext = CUDAExtension(
        "resnext_kernels._C",
        host_sources + ["csrc/ops_cuda.cpp"] + sorted(glob.glob("csrc/kernels/*.cu")),
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx_flags + ["-DRK_WITH_CUDA"], "nvcc": nvcc_flags},
    )
    return [ext], BuildExtension


if __name__ == "__main__":  # also under pip: setuptools' build backend runs this file as __main__
    ext_modules, build_ext = extensions()
    setup(
        packages=find_packages(include=["resnext_kernels", "resnext_kernels.*"]),
        ext_modules=ext_modules,
        cmdclass={"build_ext": build_ext.with_options(use_ninja=shutil.which("ninja") is not None)},
    )
