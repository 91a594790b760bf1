"""``bidense benchmark``: the layer and whole-model benchmarks, one after the other."""

from __future__ import annotations

from typing import Any

from bidense.benchmark.common import write_json
from bidense.benchmark.layers import layer_speedups, run_layer_benchmark
from bidense.benchmark.models import run_model_benchmark

__all__ = ["run_benchmark_cli"]


def run_benchmark_cli(args: Any) -> dict[str, Any]:
    """``bidense benchmark``: ``args.what`` in layers|models|all, ``args.threads`` "1,2",
    ``args.repeats``, ``args.json`` (output path or None). With ``all`` the model benchmark's
    Amdahl bound uses the layer benchmark's measured speed-up of each ISA side
    (:func:`~bidense.benchmark.layers.layer_speedups`)."""
    threads = [int(t) for t in str(getattr(args, "threads", "1,2")).split(",") if t.strip()]
    what = getattr(args, "what", "layers")
    repeats = int(getattr(args, "repeats", 20))
    if what not in ("layers", "models", "all"):
        raise ValueError(f"benchmark: what must be layers|models|all, got {what!r}")
    out: dict[str, Any] = {}
    speedups = None
    if what in ("layers", "all"):
        out["layers"] = run_layer_benchmark(threads, repeats, None)
        speedups = layer_speedups(out["layers"]) or None
    if what in ("models", "all"):
        out["models"] = run_model_benchmark(threads, repeats, None, layer_speedup=speedups)
    if getattr(args, "json", None):
        write_json(args.json, out)
    return out
