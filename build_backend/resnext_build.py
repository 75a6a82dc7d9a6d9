"""The build backend of `pip install .`: setuptools', building against the torch of the
environment being installed into.

The extension is C++/CUDA compiled against torch's headers and ABI, so it must be built against
the torch it will run with. With build isolation (pip's default) the build runs in a temporary
environment that cannot see the user's torch; setuptools alone then fails with "No module named
'torch'", and torch in the build requirements would build against a second, possibly different
torch. This backend finds the interpreter pip was started with (the environment being installed
into), and when that has torch, builds against that very torch (its site-packages appended to
the build's sys.path, after the build environment's own packages); only when it has none does it
ask pip for one (`torch` in the build requirements). setup.py records the torch version it built
against (resnext_kernels/_build_info.py), and resnext_kernels refuses at import an extension
built against another torch, with the fix (resnext_kernels/_native.py).

How the interpreter is found: RESNEXT_KERNELS_TORCH_PYTHON if set, else (Linux) the nearest
ancestor process that runs pip; asked with a clean environment (pip's isolation variables
removed) where its torch lives. `pip install --no-build-isolation .` bypasses all of this.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import List, Optional

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every hook this module does not override)

_ISOLATION_VARS = ("PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONHOME", "PYTHONSAFEPATH")


def _cmdline(pid: int) -> List[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _parent(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def installing_python() -> Optional[str]:
    """The interpreter of the environment pip installs into, or None when it cannot be told."""
    if os.environ.get("RESNEXT_KERNELS_TORCH_PYTHON"):
        return os.environ["RESNEXT_KERNELS_TORCH_PYTHON"]
    pid = os.getppid()
    for _ in range(8):  # pip -> pyproject_hooks' subprocess -> this one: a few levels at most
        if not pid or pid <= 1:
            return None
        argv = _cmdline(pid)
        runs_pip = any(os.path.basename(a) in ("pip", "pip3") or a == "pip" or a.endswith("/pip")
                       or (i > 0 and argv[i - 1] == "-m" and a == "pip") for i, a in enumerate(argv))
        if argv and runs_pip and "python" in os.path.basename(argv[0]):
            return argv[0]
        pid = _parent(pid)
    return None


def target_torch() -> Optional[tuple]:
    """(torch version, the folder holding the torch package) of the installing environment."""
    python = installing_python()
    if python is None:
        return None
    env = {k: v for k, v in os.environ.items() if k not in _ISOLATION_VARS}
    try:
        out = subprocess.run(
            [python, "-c", "import os, torch; print(torch.__version__); "
                           "print(os.path.dirname(os.path.dirname(torch.__file__)))"],
            capture_output=True, text=True, env=env, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return (lines[-2], lines[-1]) if out.returncode == 0 and len(lines) >= 2 else None


def _use_target_torch() -> None:
    found = target_torch()
    if found is None:
        return
    version, site = found
    if site not in sys.path:
        sys.path.append(site)  # after the build environment's setuptools, wheel, ninja, pybind11
    print(f"resnext_kernels: building against torch {version} from {site} (the installing "
          "environment's)", file=sys.stderr)


def _requires(hook, config_settings):
    """The build requirements: setuptools' (which runs setup.py, so only once torch can be
    imported), or torch itself when the installing environment has none."""
    if target_torch() is None:
        return ["torch>=2.6"]
    _use_target_torch()
    return list(hook(config_settings))


def get_requires_for_build_wheel(config_settings=None):
    return _requires(_setuptools.get_requires_for_build_wheel, config_settings)


def get_requires_for_build_editable(config_settings=None):
    return _requires(_setuptools.get_requires_for_build_editable, config_settings)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    _use_target_torch()
    return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _use_target_torch()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    _use_target_torch()
    return _setuptools.prepare_metadata_for_build_editable(metadata_directory, config_settings)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _use_target_torch()
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
