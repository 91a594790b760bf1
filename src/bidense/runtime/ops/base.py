"""What every runtime op shares: the per-call :class:`RunContext` and the :class:`ModuleOp`
interface of a module kind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = ["ModuleOp", "RunContext"]


@dataclass(frozen=True)
class RunContext:
    """Run-time settings of one :class:`~bidense.runtime.Runtime` call, given to every op.

    Args:
        threads: threads of the compiled kernels (results do not depend on it).
        backend: binary-kernel backend passed to ``kernels.binary_conv2d`` / ``pack_nhwc``
            (a name of ``kernels.available_backends()``), or ``None`` for ``kernels.backend()``.
    """

    threads: int = 1
    backend: str | None = None


class ModuleOp:
    """One module node kind of a ``.bdn`` graph.

    A subclass names its ``kind`` as written in the file, is prepared once at load time from the
    module's ``(attrs, tensors)`` (``__init__``; override to precompute), and :meth:`run` maps
    the input to ``(output, path)``, ``path`` being the string the runtime's report shows.
    """

    kind: ClassVar[str]

    def __init__(self, attrs: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        self.attrs = attrs
        self.tensors = tensors

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        raise NotImplementedError
