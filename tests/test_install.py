"""`pip install .` as a user runs it: a fresh virtual environment that has torch, pip's build
isolation on (and, second, off), then the package imported and one op run from another folder.
Slow (two builds of the extension, without CUDA to keep them to a minute each): CI runs it
(`pytest -m slow tests/test_install.py`)."""

import os
import subprocess
import sysconfig
import venv

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _source_copy(dest):
    """The tracked and new files of the work tree (what a fresh clone has), without results."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if rel.startswith("benchmarks/results/") or not os.path.isfile(os.path.join(ROOT, rel)):
            continue
        os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
        with open(os.path.join(ROOT, rel), "rb") as src, open(os.path.join(dest, rel), "wb") as out:
            out.write(src.read())


def _fresh_venv_with_torch(path):
    """A new venv whose site-packages sees this interpreter's (where torch is installed), as a
    user's environment with torch would; a .pth file instead of a 5 GB reinstall."""
    venv.create(path, with_pip=True)
    python = os.path.join(path, "bin", "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "host_torch.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    return python


CHECK = """
import torch, torch.nn.functional as F, resnext_kernels as rk
from resnext_kernels import _build_info
assert _build_info.TORCH_VERSION == torch.__version__, _build_info.TORCH_VERSION
assert rk._native.LOAD_ERROR is None, rk._native.LOAD_ERROR
x, w = torch.randn(2, 8, 5, 5), torch.randn(8, 2, 3, 3)
y = torch.ops.resnext_kernels.fprop(x, w, None, [1, 1], [1, 1], [1, 1], 4, False)
assert torch.allclose(y, F.conv2d(x, w, padding=1, groups=4), atol=1e-5)
assert rk.models.resnext50_32x4d is not None
print("ok", rk.__file__)
"""


@pytest.mark.slow
@pytest.mark.parametrize("isolation", [True, False], ids=["build-isolation", "no-build-isolation"])
def test_pip_install_in_a_fresh_venv(tmp_path, isolation):
    src = tmp_path / "src"
    _source_copy(str(src))
    python = _fresh_venv_with_torch(str(tmp_path / "venv"))
    env = dict(os.environ, RESNEXT_KERNELS_CUDA="0", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    cmd = [python, "-m", "pip", "install", "-q", str(src)]
    if not isolation:
        cmd.insert(4, "--no-build-isolation")
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = subprocess.run([python, "-c", CHECK], cwd=str(tmp_path), capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert str(tmp_path / "venv") in run.stdout  # the installed copy, not the source tree
