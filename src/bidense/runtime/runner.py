"""CPU graph runner for ``.bdn`` files: numpy + the compiled binary kernels, no torch.

``Runtime(path, threads=None)(x)`` runs the exported graph on a float32 NCHW numpy array and
returns the model's output; ``report()`` lists, per node, which path it took and its time.

The runner loads the file (:func:`bidense.runtime.format.read_bdn` checks the bytes and the
tensor table, :func:`~bidense.runtime.format.check_graph` the graph's structure), prepares one
op per module from :data:`bidense.runtime.ops.MODULE_OPS` (each validates its attributes and
tensors against its table entry), checks every function name, propagates shapes from the input
shape through the module ops and the elementwise functions (channel counts, kernel windows),
plans the fused epilogue chains
(:mod:`bidense.runtime.fusion`), then executes the nodes in order, freeing each tensor after its
last reader. A graph that passed all that and still cannot run (a function argument that does
not fit its input) stops with a :class:`BdnFormatError` naming the node: no raw
``KeyError`` / ``IndexError`` / ``TypeError`` leaves the runtime. What each op computes, and the
binary paths with their report names, are in :mod:`bidense.runtime.ops`.

Non-finite inputs: one NaN or inf pixel spreads through every conv to the whole output, so the
input is refused with a :class:`RuntimeInputError` naming how many values are not finite, or,
with ``nonfinite="mask"``, they are replaced by 0 (the dataset mean colour after the usual
mean/std normalisation) and :attr:`Runtime.masked` says how many were.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bidense._system import reuse_heap_memory

from . import kernels
from .format import BdnFormatError, check_graph, node_refs, read_bdn
from .fusion import FusedChain, plan_fusion, run_chain
from .ops import FUNCTIONS, MODULE_OPS, ModuleOp, RunContext
from .ops.float_ops import nchw, nhwc

__all__ = ["Runtime", "RuntimeInputError"]


class RuntimeInputError(ValueError):
    """The input given to :class:`Runtime` has the wrong type, dtype or shape, or holds
    non-finite values."""


#: what a graph node that cannot run on its inputs raises inside numpy or an op
_NODE_FAILURES = (KeyError, IndexError, TypeError, ValueError, AttributeError, ArithmeticError,
                  MemoryError)
#: the most elements an intermediate of a propagated shape may have (4 GiB of float32)
_MAX_ELEMENTS = 1 << 30
_NONFINITE = ("refuse", "mask")


def _blas_threads_setter() -> Callable[[int], None] | None:
    """``set(n)`` for the OpenBLAS that numpy loaded, or ``None`` (another BLAS, or not found).

    threadpoolctl does the same, but it is not a dependency: the library is found in the
    process's memory map and its ``*openblas*set_num_threads*`` symbol called through ctypes.
    """
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower() and "/" in ln})
        for path in libs:
            lib = ctypes.CDLL(path)
            for sym in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                        "openblas_set_num_threads64_", "openblas_set_num_threads"):
                fn = getattr(lib, sym, None)
                if fn is not None:
                    fn.argtypes = [ctypes.c_int]
                    return lambda n, fn=fn: fn(int(n))
    except (OSError, AttributeError, IndexError):
        pass
    return None


_SET_BLAS_THREADS = _blas_threads_setter()

# ``{"dtype": name}`` arguments: the runtime computes in float32 and int64
_NP_DTYPES = {"float32": np.float32, "float64": np.float32, "float16": np.float32,
              "int64": np.int64, "int32": np.int64, "bool": np.bool_}


def _ref(o: Any) -> str | None:
    """The tensor name of a ``{"t": name}`` argument, else ``None``."""
    return o["t"] if isinstance(o, dict) and set(o) == {"t"} else None


def _nonfinite_mode(mode: str) -> str:
    if mode not in _NONFINITE:
        raise ValueError(f"nonfinite must be one of {list(_NONFINITE)}, got {mode!r}")
    return mode


class Runtime:
    """Run a ``.bdn`` model on float32 NCHW numpy arrays (no torch).

    Args:
        path: the ``.bdn`` file (validated on load; see :mod:`bidense.runtime.format`).
        threads: kernel threads (default: ``os.cpu_count()``); outputs do not depend on it.
        backend: binary-kernel backend (a name of ``kernels.available_backends()``; default:
            ``kernels.backend()``, which ``BIDENSE_KERNEL`` can force).
        nonfinite: what a NaN or inf in the input does: ``"refuse"`` (a
            :class:`RuntimeInputError` naming how many values) or ``"mask"`` (replaced by 0,
            counted in :attr:`masked`); a call may override it.

    Raises:
        BdnFormatError: the file is not a valid ``.bdn`` (foreign, newer, truncated, corrupt,
            or a graph its ops cannot run), in one line naming the file and the problem.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None,
                 backend: str | None = None, nonfinite: str = "refuse") -> None:
        self.path = str(path)
        self.nonfinite = _nonfinite_mode(nonfinite)
        self.masked = 0  # non-finite input values replaced by 0 in the last call
        f = read_bdn(path)
        try:
            check_graph(f.graph, f.tensors)
        except BdnFormatError as exc:
            raise BdnFormatError(f"{self.path}: {exc}") from None
        self.metadata = f.metadata
        self.graph = f.graph
        self.threads = max(1, int(threads or os.cpu_count() or 1))
        if backend is not None:
            kernels.backend(backend)  # an unknown or unavailable backend fails here, not later
        self.context = RunContext(threads=self.threads, backend=backend)
        reuse_heap_memory()
        self._tensors = f.tensors
        self.input_shape = tuple(f.graph["input"]["shape"])
        self._nodes: list[dict[str, Any]] = f.graph["nodes"]
        self._outputs: list[str] = f.graph["outputs"]
        self._ops: dict[str, ModuleOp] = {
            key: self._prepare(key, m, f.tensors) for key, m in f.graph["modules"].items()}
        for i, n in enumerate(self._nodes):
            if n["op"] != "module" and n["op"] not in FUNCTIONS:
                raise BdnFormatError(f"{self.path}: node {i} calls unknown function {n['op']!r}")
        self._output_shape = self._recorded_output_shape()
        self._propagate_shapes()
        try:
            self._plan()
        except _NODE_FAILURES as exc:  # a fusion pattern whose arguments do not fit
            raise BdnFormatError(f"{self.path}: invalid graph ({type(exc).__name__}: {exc})"
                                 ) from None

    def _prepare(self, key: str, m: dict[str, Any], tensors: dict[str, np.ndarray]) -> ModuleOp:
        """The op of module ``key``, validated against its kind's table entry."""
        op = MODULE_OPS.get(m["kind"])
        if op is None:
            raise BdnFormatError(f"{self.path}: module {key!r} has unknown kind {m['kind']!r} "
                                 f"(known: {', '.join(sorted(MODULE_OPS))})")
        try:
            return op(m["attrs"], {local: tensors[g] for local, g in m["tensors"].items()})
        except ValueError as exc:
            raise BdnFormatError(f"{self.path}: module {key!r} ({m['kind']}): {exc}") from None

    def _recorded_output_shape(self) -> tuple[int, ...] | None:
        """The model output's shape the exporter recorded (``output_shapes``, files since issue
        12), or ``None``."""
        shapes = self.graph.get("output_shapes")
        if shapes is None:
            return None
        if not (isinstance(shapes, list) and len(shapes) == len(self._outputs) and all(
                isinstance(s, list) and all(isinstance(d, int) and not isinstance(d, bool)
                                            and d >= 0 for d in s) for s in shapes)):
            raise BdnFormatError(f"{self.path}: graph output_shapes {shapes!r} must be one list "
                                 "of sizes per output")
        return tuple(shapes[0])

    def _propagate_shapes(self) -> None:
        """Shapes from the input through the module ops and the elementwise functions: every
        module gets an input it can take (channels, windows) and no intermediate is
        implausibly large. Function outputs of other shapes stay unknown (checked when run)."""
        shapes: dict[str, tuple[int, ...]] = {self.graph["input"]["name"]: self.input_shape}
        for i, n in enumerate(self._nodes):
            refs = [shapes.get(r) for r in node_refs(n)]
            entry = FUNCTIONS.get(n["op"])
            rule = entry.shape if entry is not None else None
            if n["op"] == "module":
                out = self._module_shape(i, refs[0])
            elif rule == "same" and n["args"] and _ref(n["args"][0]):
                out = shapes.get(_ref(n["args"][0]))
            elif rule == "broadcast" and refs and None not in refs:
                consts = [self._tensors[f"const/{a['c']}"].shape for a in n["args"]
                          if isinstance(a, dict) and set(a) == {"c"}]
                try:
                    out = tuple(np.broadcast_shapes(*refs, *consts))
                except ValueError:
                    raise BdnFormatError(f"{self.path}: node {i} ({n['op']}) combines shapes "
                                         f"{[list(r) for r in refs]}") from None
            else:
                out = None
            if out is not None and len(n["outputs"]) == 1:
                shapes[n["outputs"][0]] = out
        known = shapes.get(self._outputs[0])
        if known is not None and self._output_shape not in (None, known):
            raise BdnFormatError(f"{self.path}: the graph gives an output of shape "
                                 f"{list(known)}, the exporter recorded {list(self._output_shape)}")

    def _module_shape(self, i: int, shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
        """The output shape of module node ``i`` given its input ``shape`` (``None``:
        unknown), checked against the shape the exporter recorded (``"shape"``, files since
        issue 12) and bounded; ``BdnFormatError`` when the op cannot take the input."""
        n = self._nodes[i]
        op = self._ops[n["module"]]
        where = f"{self.path}: node {i} (module {n['module']!r}, {op.kind})"
        recorded = n.get("shape")
        if recorded is not None and not (isinstance(recorded, list) and all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in recorded)):
            raise BdnFormatError(f"{where}: recorded shape {recorded!r} is not a list of sizes")
        try:
            out = None if shape is None else op.out_shape(tuple(shape))
        except ValueError as exc:
            raise BdnFormatError(f"{where}: {exc}") from None
        if out is not None and recorded is not None and list(out) != recorded:
            raise BdnFormatError(f"{where}: gives shape {list(out)}, the exporter recorded "
                                 f"{recorded}")
        out = out if out is not None or recorded is None else tuple(recorded)
        if out is not None and int(np.prod(out, dtype=np.float64)) > _MAX_ELEMENTS:
            raise BdnFormatError(f"{where}: output shape {list(out)} is too large")
        return out

    def _plan(self) -> None:
        """The fused chains and the index after which each tensor is dead."""
        self._chains: dict[int, FusedChain] = plan_fusion(self._nodes, self._ops, self._outputs)
        self._skip = {m for c in self._chains.values() for m in c.members if m != c.at}
        # the execution index after which each tensor is dead (a fused member runs at its chain)
        runs_at = {i: c.at for c in self._chains.values() for i in c.members}
        last: dict[str, int] = {}
        for i, n in enumerate(self._nodes):
            for r in node_refs(n):
                last[r] = max(last.get(r, -1), runs_at.get(i, i))
        self._last = last
        self._report: list[dict[str, Any]] = []
        self._keep = False  # debugging aid: keep every intermediate in ``self._env``

    def _check(self, x: Any, nonfinite: str) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise RuntimeInputError(
                f"{self.path}: input must be a numpy array, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise RuntimeInputError(f"{self.path}: input dtype must be float32, got {x.dtype}")
        if x.ndim != 4:
            raise RuntimeInputError(
                f"{self.path}: input must be 4-D NCHW {self.input_shape}, got {x.ndim}-D "
                f"shape {x.shape}")
        if tuple(x.shape) != self.input_shape:
            raise RuntimeInputError(
                f"{self.path}: input shape must be {self.input_shape} (the exported shape), "
                f"got {tuple(x.shape)}")
        finite = np.isfinite(x)
        bad = x.size - int(np.count_nonzero(finite))
        self.masked = 0
        if bad and nonfinite == "refuse":
            raise RuntimeInputError(
                f"{self.path}: input has {bad} non-finite values (NaN or inf) of {x.size}; "
                "pass nonfinite='mask' to replace them by 0")
        if bad:
            x = np.where(finite, x, np.float32(0))
            self.masked = bad
        return nchw(nhwc(x))  # channels-last memory from here on

    def _arg(self, o: Any, env: dict[str, np.ndarray]) -> Any:
        """Decode a node argument: tensor / constant references, dtypes, slices, containers."""
        if isinstance(o, dict):
            if "t" in o and len(o) == 1:
                return env[o["t"]]
            if "c" in o and len(o) == 1:
                return self._tensors[f"const/{o['c']}"]
            if "dtype" in o:
                return np.dtype(_NP_DTYPES.get(o["dtype"], np.float32))
            if "slice" in o:
                return slice(*[self._arg(v, env) for v in o["slice"]])
            if "ellipsis" in o:
                return Ellipsis
            if "float" in o:
                return float(o["float"])
            return {k: self._arg(v, env) for k, v in o.items()}
        if isinstance(o, list):
            return [self._arg(v, env) for v in o]
        return o

    def _free(self, node_index: int, at: int, env: dict[str, np.ndarray]) -> None:
        """Drop the tensors read by node ``node_index`` whose last reader runs at ``at``."""
        for r in node_refs(self._nodes[node_index]):
            if self._last.get(r) == at and r not in self._outputs and not self._keep:
                env.pop(r, None)

    def __call__(self, x: np.ndarray, nonfinite: str | None = None) -> np.ndarray:
        """Run the model on ``x`` (float32, the exported NCHW shape); returns a numpy array.

        ``nonfinite`` overrides the runtime's setting for this call (``"refuse"`` or
        ``"mask"``). A node that cannot run on its inputs raises :class:`BdnFormatError`.
        """
        x = self._check(x, self.nonfinite if nonfinite is None else _nonfinite_mode(nonfinite))
        ctx = self.context
        if _SET_BLAS_THREADS is not None:
            # numpy's BLAS stays at one thread: threaded sgemm changes results with the thread
            # count (a flipped sign downstream), and its spinning workers slow the OpenMP
            # kernels; the FP convs use the compiled row-parallel GEMM instead
            _SET_BLAS_THREADS(1)
        env: dict[str, np.ndarray] = {self.graph["input"]["name"]: x}
        report = []
        for i, n in enumerate(self._nodes):
            if i in self._skip:
                continue
            t0 = time.perf_counter()
            chain = self._chains.get(i)
            try:
                done = self._run_node(i, n, chain, env, ctx)
            except BdnFormatError:
                raise
            except _NODE_FAILURES as exc:
                raise BdnFormatError(
                    f"{self.path}: node {i} ({n['op'] if chain is None else 'fused bconv'}) "
                    f"cannot run on its inputs ({type(exc).__name__}: {exc})") from None
            done["ms"] = 1e3 * (time.perf_counter() - t0)
            report.append(done)
        self._report = report
        if self._keep:
            self._env = env
        res = env[self._outputs[0]]
        if self._output_shape is not None and np.shape(res) != self._output_shape:
            raise BdnFormatError(f"{self.path}: the graph gave an output of shape "
                                 f"{list(np.shape(res))}, the exporter recorded "
                                 f"{list(self._output_shape)}")
        return np.ascontiguousarray(res, dtype=np.float32)

    def _run_node(self, i: int, n: dict[str, Any], chain: FusedChain | None,
                  env: dict[str, np.ndarray], ctx: RunContext) -> dict[str, Any]:
        """Run node ``i`` (or the fused chain that ends at it) on ``env``; its report row."""
        if chain is not None:
            op = self._ops[chain.module]
            self._module_shape(chain.members[0], env[chain.x].shape)
            out, path = run_chain(chain, op, env, ctx)
            env[chain.out] = out
            for j in chain.members:
                self._free(j, i, env)
            return {"node": chain.out, "name": chain.module, "op": "bconv", "path": path,
                    "fused": list(chain.fused), "shape": list(np.shape(out))}
        if n["op"] == "module":
            op = self._ops[n["module"]]
            x = self._arg(n["args"][0], env)
            # the input the op can take (a function output's shape is known only now)
            self._module_shape(i, np.shape(x))
            out, path = op.run(x, ctx)
            kind, name = op.kind, n["module"]
        else:
            out = FUNCTIONS[n["op"]](ctx, self._arg(n["args"], env), self._arg(n["kwargs"], env))
            kind, path, name = n["op"], "numpy", n["op"]
        outs = n["outputs"]
        if len(outs) == 1:
            env[outs[0]] = np.asarray(out)
        else:
            values = list(out) if isinstance(out, list | tuple) else []
            if len(values) != len(outs):
                raise ValueError(f"returns {len(values)} values for {len(outs)} outputs")
            for k, o in zip(outs, values):
                env[k] = np.asarray(o)
        self._free(i, i, env)
        return {"node": outs[0], "name": name, "op": kind, "path": path,
                "shape": list(np.shape(env[outs[0]]))}

    def report(self) -> list[dict[str, Any]]:
        """Per node of the last call: ``name, op, path, shape, ms``."""
        return [dict(r) for r in self._report]

    def report_text(self) -> str:
        """The per-layer report as a table."""
        lines = [f"{'node':<40} {'op':<10} {'path':<42} {'ms':>8}"]
        for r in self._report:
            lines.append(f"{r['name'][:40]:<40} {r['op']:<10} {r['path'][:42]:<42} "
                         f"{r['ms']:>8.3f}")
        return "\n".join(lines)
