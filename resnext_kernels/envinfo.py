"""The environment header every benchmark and GPU-check result carries."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from typing import Any, Dict


def git_commit(root: str | None = None) -> str:
    """RK_GIT_COMMIT when set (a tree copied to a GPU machine may carry a stale .git: the
    2026-11-28 H200 run reported an older commit), else the commit of the working tree (with
    "+dirty" if it has changes), else "unknown"."""
    if os.environ.get("RK_GIT_COMMIT"):
        return os.environ["RK_GIT_COMMIT"]
    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _nvidia_smi(query: str) -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
        return out.strip().splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def collect() -> Dict[str, Any]:
    import torch

    info: Dict[str, Any] = {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "tf32_conv": torch.backends.cudnn.allow_tf32,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_capability=f"{props.major}.{props.minor}",
                    gpu_sms=props.multi_processor_count,
                    gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    driver=_nvidia_smi("driver_version"))
    else:
        info.update(gpu=None, driver=None)
    try:
        from . import _native

        info["extension"] = ("cuda" if _native._C is not None and _native._C.built_with_cuda()
                             else "cpu" if _native._C is not None else None)
    except Exception as exc:  # pragma: no cover - reported, never fatal
        info["extension"] = f"error: {exc}"
    return info
