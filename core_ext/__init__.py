"""Cython decision kernels (placeholder; the kernels issue fills this in)."""
