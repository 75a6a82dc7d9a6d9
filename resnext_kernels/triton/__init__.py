"""Triton backend: grouped 3x3 fprop, dgrad and wgrad (see each module's docstring).

fprop.py holds the implicit-GEMM gather kernel that fprop and dgrad share; wgrad.py the split
reduction; common.py the group packing, the autotune plumbing and the allocation hook.
"""
