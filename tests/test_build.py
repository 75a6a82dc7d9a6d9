"""The build switches of setup.py (the logic, without building)."""

import importlib.util
import os

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
