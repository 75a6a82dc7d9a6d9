"""Test configuration. Without a GPU, the Triton kernels run in the interpreter: that must be
decided before any kernel is decorated, so it happens here, before resnext_kernels is imported."""

import os
import tempfile

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# The measured choices of backend="auto" go to a cache of the test run's own, not the user's.
os.environ.setdefault("RESNEXT_KERNELS_CACHE_DIR",
                      os.path.join(tempfile.mkdtemp(prefix="rk-test-cache-")))

import pytest  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
