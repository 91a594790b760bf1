"""CPU graph runner for ``.bdn`` files: numpy + the compiled binary kernels, no torch.

``Runtime(path, threads=None)(x)`` runs the exported graph on a float32 NCHW numpy array and
returns the model's output; ``report()`` lists, per node, which path it took and its time.

The runner loads the file, prepares one op per module from :data:`bidense.runtime.ops.MODULE_OPS`,
plans the fused epilogue chains (:mod:`bidense.runtime.fusion`), then executes the nodes in
order, freeing each tensor after its last reader. What each op computes, and the binary paths
with their report names, are in :mod:`bidense.runtime.ops`.
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
from .format import node_refs, read_bdn
from .fusion import FusedChain, plan_fusion, run_chain
from .ops import FUNCTIONS, MODULE_OPS, ModuleOp, RunContext
from .ops.float_ops import nchw, nhwc

__all__ = ["Runtime", "RuntimeInputError"]


class RuntimeInputError(ValueError):
    """The input given to :class:`Runtime` has the wrong type, dtype or shape."""


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


class Runtime:
    """Run a ``.bdn`` model on float32 NCHW numpy arrays (no torch).

    Args:
        path: the ``.bdn`` file (validated on load; see :mod:`bidense.runtime.format`).
        threads: kernel threads (default: ``os.cpu_count()``); outputs do not depend on it.
        backend: binary-kernel backend (a name of ``kernels.available_backends()``; default:
            ``kernels.backend()``, which ``BIDENSE_KERNEL`` can force).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None,
                 backend: str | None = None) -> None:
        self.path = str(path)
        f = read_bdn(path)
        self.metadata = f.metadata
        self.graph = f.graph
        self.threads = max(1, int(threads or os.cpu_count() or 1))
        if backend is not None:
            kernels.backend(backend)  # an unknown or unavailable backend fails here, not later
        self.context = RunContext(threads=self.threads, backend=backend)
        reuse_heap_memory()
        self._tensors = f.tensors
        try:
            self.input_shape = tuple(int(s) for s in f.graph["input"]["shape"])
            self._nodes: list[dict[str, Any]] = f.graph["nodes"]
            self._outputs: list[str] = f.graph["outputs"]
            self._ops: dict[str, ModuleOp] = {}
            for key, m in f.graph["modules"].items():
                if m["kind"] not in MODULE_OPS:
                    raise ValueError(f"unknown module kind {m['kind']!r}")
                ts = {local: f.tensors[g] for local, g in m["tensors"].items()}
                self._ops[key] = MODULE_OPS[m["kind"]](m["attrs"], ts)
            for n in self._nodes:
                if n["op"] == "module":
                    if n["module"] not in self._ops:
                        raise KeyError(n["module"])
                elif n["op"] not in FUNCTIONS:
                    raise ValueError(f"unsupported function {n['op']!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{self.path}: invalid graph ({type(exc).__name__}: {exc})") from None
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

    def _check(self, x: Any) -> np.ndarray:
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

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run the model on ``x`` (float32, the exported NCHW shape); returns a numpy array."""
        x = self._check(x)
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
            if chain is not None:
                out, path = run_chain(chain, self._ops[chain.module], env, ctx)
                env[chain.out] = out
                for j in chain.members:
                    self._free(j, i, env)
                report.append({"node": chain.out, "name": chain.module, "op": "bconv",
                               "path": path, "fused": list(chain.fused),
                               "shape": list(np.shape(out)),
                               "ms": 1e3 * (time.perf_counter() - t0)})
                continue
            if n["op"] == "module":
                op = self._ops[n["module"]]
                out, path = op.run(self._arg(n["args"][0], env), ctx)
                kind, name = op.kind, n["module"]
            else:
                out = FUNCTIONS[n["op"]](ctx, self._arg(n["args"], env),
                                         self._arg(n["kwargs"], env))
                kind, path, name = n["op"], "numpy", n["op"]
            outs = n["outputs"]
            if len(outs) == 1:
                env[outs[0]] = np.asarray(out)
            else:
                for k, o in zip(outs, out):
                    env[k] = np.asarray(o)
            self._free(i, i, env)
            report.append({"node": outs[0], "name": name, "op": kind, "path": path,
                           "shape": list(np.shape(env[outs[0]])),
                           "ms": 1e3 * (time.perf_counter() - t0)})
        self._report = report
        if self._keep:
            self._env = env
        res = env[self._outputs[0]]
        return np.ascontiguousarray(res, dtype=np.float32)

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
