"""What every runtime op shares: the per-call :class:`RunContext`, the :class:`ModuleOp`
interface of a module kind and the vocabulary its table entry declares its attributes and
tensors with (:class:`TensorSpec` and the attribute checks :func:`integer`, :func:`pair`, ...).

A ``.bdn`` file whose checksum is valid may still describe an impossible graph (a hand-edited
header, a writer bug). Every module kind therefore declares, in its own class, the attributes
(``attr_specs``: name -> check, ``optional_attrs`` likewise) and tensors (``tensor_specs``) it
accepts; :meth:`ModuleOp.validate` checks a module against them and the op's relations between
them (:meth:`ModuleOp.check`), and :meth:`ModuleOp.out_shape` propagates shapes from the input
shape. A problem is a ``ValueError`` naming it; the runner turns it into a ``BdnFormatError``
naming the file and the module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = ["MAX_EXTENT", "AttrCheck", "ModuleOp", "RunContext", "TensorSpec", "check_fields",
           "check_tensors", "choice", "flag", "int_list", "integer", "number", "pair", "require",
           "text", "window_out"]

#: the largest size, stride, padding, dilation or kernel a file may declare (2**16): bounds every
#: allocation a geometry can ask for before the input shape says more
MAX_EXTENT = 1 << 16

#: an attribute check: ``check(value)`` returns what is wrong with ``value``, or ``None``
AttrCheck = Callable[[Any], "str | None"]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def integer(low: int = 0, high: int = MAX_EXTENT) -> AttrCheck:
    """An ``int`` in ``[low, high]``."""
    def check(v: Any) -> str | None:
        if not _is_int(v) or not low <= v <= high:
            return f"must be an integer in [{low}, {high}], got {v!r}"
        return None
    return check


def pair(low: int = 0, high: int = MAX_EXTENT) -> AttrCheck:
    """A list of two ``int`` in ``[low, high]`` (height, width)."""
    def check(v: Any) -> str | None:
        if not (isinstance(v, list) and len(v) == 2 and all(_is_int(e) and low <= e <= high
                                                            for e in v)):
            return f"must be a list of two integers in [{low}, {high}], got {v!r}"
        return None
    return check


def int_list(low: int = 1, high: int = MAX_EXTENT) -> AttrCheck:
    """A non-empty list of ``int`` in ``[low, high]``."""
    def check(v: Any) -> str | None:
        if not (isinstance(v, list) and v and all(_is_int(e) and low <= e <= high for e in v)):
            return f"must be a non-empty list of integers in [{low}, {high}], got {v!r}"
        return None
    return check


def number(low: float = -math.inf, high: float = math.inf) -> AttrCheck:
    """A finite ``int`` or ``float`` in ``[low, high]``."""
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or \
                not low <= v <= high:
            return f"must be a finite number in [{low}, {high}], got {v!r}"
        return None
    return check


def flag() -> AttrCheck:
    """A JSON boolean."""
    return lambda v: None if isinstance(v, bool) else f"must be true or false, got {v!r}"


def text() -> AttrCheck:
    """Any string (a note such as ``bn_folded``, the name of the folded BatchNorm)."""
    return lambda v: None if isinstance(v, str) else f"must be a string, got {v!r}"


def choice(*values: Any) -> AttrCheck:
    """One of ``values``."""
    def check(v: Any) -> str | None:
        if not isinstance(v, str | int) or isinstance(v, bool) or v not in values:
            return f"must be one of {list(values)}, got {v!r}"
        return None
    return check


@dataclass(frozen=True)
class TensorSpec:
    """A tensor a module kind reads: its rank (``None``: any), dtype, whether it is required
    and, where a table states it, its ``size`` (an int, or ``"in"``: the input channels)."""

    ndim: int | None = 1
    dtype: str = "float32"
    required: bool = True
    size: int | str | None = None


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


def check_fields(what: str, values: Any, required: dict[str, AttrCheck],
                 optional: dict[str, AttrCheck]) -> None:
    """Check a JSON object of attributes against its declared checks: the required ones
    present, no undeclared ones, each value accepted. Raises ``ValueError`` naming the first
    problem."""
    if not isinstance(values, dict):
        raise ValueError(f"{what} must be an object, got {type(values).__name__}")
    for name in required:
        if name not in values:
            raise ValueError(f"{what}: missing {name!r}")
    for name, v in values.items():
        check = required.get(name) or optional.get(name)
        if check is None:
            raise ValueError(f"{what}: unknown attribute {name!r}")
        problem = check(v)
        if problem:
            raise ValueError(f"{what}: {name!r} {problem}")


def check_tensors(what: str, tensors: dict[str, np.ndarray],
                  specs: dict[str, TensorSpec]) -> None:
    """Check a module's tensors against its :class:`TensorSpec` table (names, dtypes, ranks)."""
    for name, spec in specs.items():
        if name not in tensors:
            if spec.required:
                raise ValueError(f"{what}: missing tensor {name!r}")
            continue
        t = tensors[name]
        if str(t.dtype) != spec.dtype or (spec.ndim is not None and t.ndim != spec.ndim):
            rank = "" if spec.ndim is None else f"{spec.ndim}-D "
            raise ValueError(f"{what}: tensor {name!r} must be {rank}{spec.dtype}, got "
                             f"{t.ndim}-D {t.dtype} {list(t.shape)}")
    extra = sorted(set(tensors) - set(specs))
    if extra:
        raise ValueError(f"{what}: unknown tensor {extra[0]!r}")


def require(ok: bool, problem: str) -> None:
    """Raise ``ValueError(problem)`` unless ``ok``: one line per relation an op checks."""
    if not ok:
        raise ValueError(problem)


def window_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output extent of a sliding window (PyTorch's floor formula); ``ValueError`` when the
    (dilated) window does not fit the padded input."""
    span = dilation * (kernel - 1) + 1
    require(span <= size + 2 * padding,
            f"window {kernel} (dilation {dilation}) larger than the padded input "
            f"{size} + 2 * {padding}")
    return (size + 2 * padding - span) // stride + 1


class ModuleOp:
    """One module node kind of a ``.bdn`` graph.

    A subclass names its ``kind`` as written in the file and declares what it accepts
    (``attr_specs``, ``optional_attrs``, ``tensor_specs``; :meth:`check` for the relations
    between them, :meth:`out_shape` for shape propagation). It is validated and prepared once
    at load time from the module's ``(attrs, tensors)`` (``__init__``; override to
    precompute, after ``super().__init__``), and :meth:`run` maps the input to
    ``(output, path)``, ``path`` being the string the runtime's report shows.
    """

    kind: ClassVar[str]
    attr_specs: ClassVar[dict[str, AttrCheck]] = {}
    optional_attrs: ClassVar[dict[str, AttrCheck]] = {}
    tensor_specs: ClassVar[dict[str, TensorSpec]] = {}

    def __init__(self, attrs: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        self.validate(attrs, tensors)
        self.attrs = attrs
        self.tensors = tensors

    @classmethod
    def validate(cls, attrs: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        """Check ``attrs`` and ``tensors`` against the declared tables, then :meth:`check`."""
        check_fields("attrs", attrs, cls.attr_specs, cls.optional_attrs)
        check_tensors("tensors", tensors, cls.tensor_table(attrs))
        cls.check(attrs, tensors)

    @classmethod
    def tensor_table(cls, attrs: dict[str, Any]) -> dict[str, TensorSpec]:
        """The tensors a module with (valid) ``attrs`` reads: ``tensor_specs`` unless they
        depend on the attributes."""
        return cls.tensor_specs

    @classmethod
    def check(cls, attrs: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        """The relations between attributes and tensor shapes (``ValueError`` when broken)."""

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """The output shape for an input of ``shape`` (``ValueError`` when the op cannot take
        it), or ``None`` where the op does not propagate shapes."""
        return None

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        raise NotImplementedError
