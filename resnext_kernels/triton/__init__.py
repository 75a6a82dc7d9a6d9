"""Triton backend: grouped 3x3 fprop, dgrad and wgrad (see each module's docstring)."""

from .dgrad import dgrad
from .fprop import fprop
from .wgrad import wgrad

__all__ = ["fprop", "dgrad", "wgrad"]
