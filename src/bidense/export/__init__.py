"""The torch side of deployment: graph capture, lowering to runtime ops, the ``.bdn`` writer.

Imports torch and the layers it lowers; reads the file format from :mod:`bidense.runtime`
(never the reverse). Loading a checkpoint is the engine's job; ``bidense export`` composes the
two. See ``docs/runtime.md``.
"""

from bidense.export.bdn import ExportInfo, UnsupportedModelError, export, max_relative_error

__all__ = ["ExportInfo", "UnsupportedModelError", "export", "max_relative_error"]
