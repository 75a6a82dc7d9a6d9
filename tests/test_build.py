"""The build switches of setup.py (the logic, without building)."""

import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_setup():
    spec = importlib.util.spec_from_file_location("rk_setup", os.path.join(ROOT, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: defines the functions, builds nothing
    return module


def test_cuda_switches():
    setup = load_setup()
    assert setup.cuda_wanted("", "/opt/cuda") == ("/opt/cuda", "")
    assert setup.cuda_wanted("1", "/opt/cuda") == ("/opt/cuda", "")
    assert setup.cuda_wanted("0", "/opt/cuda") == (None, "disabled by RESNEXT_KERNELS_CUDA=0")
    home, why = setup.cuda_wanted("", None)
    assert home is None and "no CUDA toolkit" in why
    with pytest.raises(SystemExit, match="RESNEXT_KERNELS_CUDA=1 but no CUDA toolkit was found"):
        setup.cuda_wanted("1", None)


def test_toolkit_is_found_only_with_nvcc(tmp_path, monkeypatch):
    setup = load_setup()
    fake = tmp_path / "cuda"
    (fake / "bin").mkdir(parents=True)
    monkeypatch.setenv("CUDA_HOME", str(fake))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    if not os.path.exists("/usr/local/cuda/bin/nvcc"):
        assert setup.find_cuda_home() is None  # no bin/nvcc: not a toolkit
    (fake / "bin" / "nvcc").write_text("")
    assert setup.find_cuda_home() == str(fake)


def test_an_extension_built_against_another_torch_is_refused():
    from resnext_kernels import _native

    assert _native.torch_mismatch(None, "2.14.1") is None        # built before build info
    assert _native.torch_mismatch("2.14.1", "2.14.1") is None
    why = _native.torch_mismatch("2.14.1+cu130", "2.11.0+cu130")
    assert "built against torch 2.14.1+cu130, but torch 2.11.0+cu130 is running" in why
    assert "pip install" in why


def test_build_backend_finds_no_installer_outside_pip(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "resnext_build", os.path.join(ROOT, "build_backend", "resnext_build.py"))
    backend = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(backend)
    monkeypatch.delenv("RESNEXT_KERNELS_TORCH_PYTHON", raising=False)
    assert backend.installing_python() is None               # pytest is not pip
    monkeypatch.setenv("RESNEXT_KERNELS_TORCH_PYTHON", sys.executable)
    version, site = backend.target_torch()
    import torch

    assert version == torch.__version__ and os.path.isdir(os.path.join(site, "torch"))
