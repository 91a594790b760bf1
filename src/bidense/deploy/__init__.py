"""Deployment of binary models without torch: packed bits, compiled XOR-popcount kernels.

This package imports numpy only (never torch). :mod:`bidense.deploy.kernels` holds the binary
convolution kernels (compiled extension ``bidense.deploy._bkernels`` with run-time ISA dispatch,
or a pure-numpy fallback); see ``docs/runtime.md``.
"""

from bidense.deploy import kernels
from bidense.deploy.kernels import available_backends, backend, cpu_features

__all__ = ["available_backends", "backend", "cpu_features", "kernels"]
