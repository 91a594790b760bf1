"""The torch side of deployment: graph capture, lowering to runtime ops, the ``.bdn`` writer.

``capture`` records the graph, ``lower`` holds the lowering tables (one entry per op kind and
per activation binarizer), ``passes`` folds BatchNorm and drops identities, ``bdn`` writes the
file, ``verification`` compares the runtime with PyTorch and ``to_onnx`` writes the float graph
as ONNX (onnx / onnxruntime imported only when called). No submodule is named like a
function the package exports (``bidense.export.export`` and ``bidense.export.verify`` are the
functions). Imports torch and the layers it lowers; reads the op vocabulary and the file format
from :mod:`bidense.runtime` (never the reverse). Loading a checkpoint is the engine's job;
``bidense export`` composes the two. See ``docs/runtime.md``.
"""

from bidense.export.bdn import ExportInfo, export
from bidense.export.lower import UnsupportedModelError
from bidense.export.to_onnx import OnnxExportInfo, export_onnx, verify_onnx
from bidense.export.verification import max_relative_error, verify

__all__ = ["ExportInfo", "OnnxExportInfo", "UnsupportedModelError", "export", "export_onnx",
           "max_relative_error", "verify", "verify_onnx"]
