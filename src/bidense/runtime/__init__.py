"""The packed-model runtime: ``.bdn`` reader, ops, graph runner and the compiled kernels.

``format`` reads and writes ``.bdn`` files; ``ops`` is the op vocabulary (one table entry per
module kind, function and activation binarizer kind); ``fusion`` plans the fused binary-conv
epilogues; ``runner`` is the graph runner :class:`Runtime`; ``kernels`` binds the C extension.

numpy and the optional C extension ``bidense.runtime._bkernels`` only: this package never
imports torch nor any other bidense package except the stdlib-level helpers ``bidense._atomic``
and ``bidense._system``, so it ships on its own. Without the extension the kernels fall back to
a portable numpy path and say so once (a ``RuntimeWarning``). See ``docs/runtime.md``.
"""

from bidense.runtime import kernels
from bidense.runtime.format import BdnFormatError, read_bdn
from bidense.runtime.kernels import available_backends, backend, cpu_features
from bidense.runtime.runner import Runtime, RuntimeInputError

__all__ = ["BdnFormatError", "Runtime", "RuntimeInputError", "available_backends", "backend",
           "cpu_features", "kernels", "read_bdn"]
