"""The runtime's op vocabulary: one table entry per module kind, function and binarizer kind.

* :data:`MODULE_OPS`: module kind (as written in the ``.bdn`` file) -> :class:`ModuleOp` class,
  prepared at load time from the module's ``(attrs, tensors)``; ``op.run(x, ctx)`` returns the
  output and the path string shown in the runtime's report.
* :data:`FUNCTIONS`: function name -> :class:`~bidense.runtime.ops.functions.Function`.
* :data:`ACTIVATIONS`: activation binarizer kind of the binary layers ->
  :class:`~bidense.runtime.ops.binary.Binarizer` class.

Adding an op is one entry here; the graph runner (:mod:`bidense.runtime.runner`) has no list of
kinds. Every call gets the :class:`RunContext` (threads, kernel backend). Each module op and
binarizer declares, in its own class, the attributes and tensors it accepts (``attr_specs``,
``optional_attrs``, ``tensor_specs`` of :class:`TensorSpec`, relations in ``check``, shapes in
``out_shape``): a ``.bdn`` file is validated against them at load time (see
:mod:`bidense.runtime.ops.base`).
"""

from .base import ModuleOp, RunContext, TensorSpec
from .binary import ACTIVATIONS, BINARY_MODULE_OPS, Binarizer
from .functions import FUNCTIONS, Function
from .modules import FLOAT_MODULE_OPS

#: module kind -> op class.
MODULE_OPS: dict[str, type[ModuleOp]] = {**FLOAT_MODULE_OPS, **BINARY_MODULE_OPS}

__all__ = ["ACTIVATIONS", "FUNCTIONS", "MODULE_OPS", "Binarizer", "Function", "ModuleOp",
           "RunContext", "TensorSpec"]
