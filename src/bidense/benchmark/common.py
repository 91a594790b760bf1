"""Helpers shared by the benchmarks: JSON out, the timing loop, the ISA sides, worker processes.

**ISA sides.** Every benchmark times the engines twice per CPU: ``native`` (no limits: the
fastest kernel path, PyTorch's own CPU dispatch) and ``avx2`` (the packed kernels limited with
``BIDENSE_KERNEL=avx2`` against a PyTorch limited to the same instruction set with
``ATEN_CPU_CAPABILITY=avx2`` and ``ONEDNN_MAX_CPU_ISA=AVX2``), so the users of AVX2-only
laptops and servers see their ratio. The limits are read when a library loads, so each engine
runs in its own fresh process with its side's environment (:func:`run_worker`). On an
AVX2-only CPU the two sides are the same machine code; the ``avx2`` side is then reported as
coinciding with ``native`` instead of being timed twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bidense._atomic import atomic_open
from bidense.runtime import kernels

__all__ = ["ISA_LIMITS", "IsaSide", "isa_sides", "run_worker", "side_environment", "time_call",
           "write_json"]

#: ISA side -> the environment that limits every engine to it (``native``: no limits)
ISA_LIMITS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {"BIDENSE_KERNEL": "avx2", "ATEN_CPU_CAPABILITY": "avx2",
             "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
#: the variables the sides set; removed from the caller's environment so that ``native`` is
#: unlimited whatever the shell exported
_LIMIT_VARS = sorted({k for env in ISA_LIMITS.values() for k in env})


def write_json(path: str, data: dict[str, Any]) -> None:
    """Write a benchmark result as indented JSON, atomically."""
    with atomic_open(path, "w") as f:
        json.dump(data, f, indent=2)


def time_call(fn: Callable[[], object], repeats: int, min_time: float, *,
              max_runs: int | None = None,
              after: Callable[[float], None] | None = None) -> dict[str, float]:
    """Time ``fn()`` after one warm-up call: at least ``repeats`` runs and ``min_time`` seconds
    (at most ``max_runs``). ``after(ms)`` runs after each timed call, outside the timed region.
    Returns ``min_ms``, ``median_ms`` and ``runs``."""
    fn()  # warm-up (allocations, thread pools)
    ts: list[float] = []
    start = time.perf_counter()
    while len(ts) < repeats or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        ts.append(1e3 * (time.perf_counter() - t0))
        if after is not None:
            after(ts[-1])
        if max_runs is not None and len(ts) >= max_runs:
            break
    return {"min_ms": float(min(ts)), "median_ms": float(np.median(ts)), "runs": len(ts)}


@dataclass(frozen=True)
class IsaSide:
    """One ISA side: its name, the binary-kernel path it runs, whether it is timed here (and
    why not), and the side whose rows it shares when it coincides with one."""

    name: str
    kernel: str | None
    timed: bool
    note: str = ""
    same_as: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def isa_sides(native_kernel: str | None = None) -> list[IsaSide]:
    """The ISA sides of :data:`ISA_LIMITS` on this CPU. ``native_kernel`` forces the native
    side's kernel path (default: the fastest available). The ``avx2`` side is not timed when
    this CPU or build has no AVX2 path, nor when it coincides with ``native`` (native kernel
    path ``avx2`` on a CPU without AVX-512F, where PyTorch dispatches to AVX2 as well)."""
    avail = kernels.available_backends()
    native = native_kernel or avail[0]
    sides = [IsaSide("native", native, True, "no limits: the fastest paths of this CPU")]
    if "avx2" not in avail:
        sides.append(IsaSide("avx2", None, False, "this CPU or build has no AVX2 kernel path"))
    elif native == "avx2" and not kernels.cpu_features()["avx512f"]:
        sides.append(IsaSide("avx2", "avx2", False, "coincides with native: this CPU is "
                             "AVX2-only (no AVX-512F), so the native rows are the AVX2 rows "
                             "(not timed twice)", same_as="native"))
    else:
        sides.append(IsaSide("avx2", "avx2", True, "kernels and PyTorch limited to AVX2"))
    return sides


def side_environment(side: str) -> dict[str, str]:
    """The caller's environment with ``side``'s limits, and this checkout on ``PYTHONPATH``."""
    env = {k: v for k, v in os.environ.items() if k not in _LIMIT_VARS}
    env.update(ISA_LIMITS[side])
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_worker(spec: dict[str, Any], side: str = "native", timeout: float = 900) -> dict[str, Any]:
    """Run one engine of :mod:`bidense.benchmark.worker` in a fresh interpreter with ``side``'s
    environment; returns its JSON result, or ``{"error": ...}`` when it failed."""
    try:
        out = subprocess.run([sys.executable, "-m", "bidense.benchmark.worker", json.dumps(spec)],
                             capture_output=True, text=True, env=side_environment(side),
                             timeout=timeout)
    except subprocess.SubprocessError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {out.returncode}: {tail}"}
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"unreadable worker output: {out.stdout[-200:]!r}"}
