"""Deployment of binary models without torch: packed bits, compiled XOR-popcount kernels.

This package imports numpy only (never torch). :mod:`bidense.deploy.kernels` holds the binary
convolution kernels (compiled extension ``bidense.deploy._bkernels`` with run-time ISA dispatch,
or a pure-numpy fallback); see ``docs/runtime.md``.
"""

from bidense.deploy import kernels
from bidense.deploy.kernels import available_backends, backend, cpu_features

__all__ = ["available_backends", "backend", "cpu_features", "kernels"]

# packed format and graph runtime (numpy only); the exporter imports torch lazily
from bidense.deploy.format import BdnFormatError, read_bdn  # noqa: E402
from bidense.deploy.runtime import Runtime, RuntimeInputError  # noqa: E402


def export(model, path, example_input, **kw):  # noqa: ANN001, ANN201
    """Export a torch model to ``.bdn`` (see :func:`bidense.deploy.export.export`)."""
    from bidense.deploy.export import export as _export

    return _export(model, path, example_input, **kw)


def export_checkpoint(checkpoint_path, out_path, verify=False):  # noqa: ANN001, ANN201
    """Export a bidense checkpoint (see :func:`bidense.deploy.export.export_checkpoint`)."""
    from bidense.deploy.export import export_checkpoint as _export_checkpoint

    return _export_checkpoint(checkpoint_path, out_path, verify=verify)


__all__ += ["BdnFormatError", "Runtime", "RuntimeInputError", "export", "export_checkpoint",
            "read_bdn"]
