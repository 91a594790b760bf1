"""``bidense benchmark``: the layer and whole-model benchmarks, one after the other."""

from __future__ import annotations

from typing import Any

from bidense.benchmark.common import write_json
from bidense.benchmark.layers import run_layer_benchmark
from bidense.benchmark.models import LAYER_SPEEDUP, run_model_benchmark

__all__ = ["run_benchmark_cli"]


def run_benchmark_cli(args: Any) -> dict[str, Any]:
    """``bidense benchmark``: ``args.what`` in layers|models|all, ``args.threads`` "1,2",
    ``args.repeats``, ``args.json`` (output path or None)."""
    threads = [int(t) for t in str(getattr(args, "threads", "1,2")).split(",") if t.strip()]
    what = getattr(args, "what", "layers")
    repeats = int(getattr(args, "repeats", 20))
    if what not in ("layers", "models", "all"):
        raise ValueError(f"benchmark: what must be layers|models|all, got {what!r}")
    out: dict[str, Any] = {}
    speedup = LAYER_SPEEDUP
    if what in ("layers", "all"):
        out["layers"] = run_layer_benchmark(threads, repeats, None)
        speedup = _layer_speedup(out["layers"]) or speedup
    if what in ("models", "all"):
        out["models"] = run_model_benchmark(threads, repeats, None, layer_speedup=speedup)
    if getattr(args, "json", None):
        write_json(args.json, out)
    return out


def _layer_speedup(layers: Any) -> float | None:
    """Best single-thread binary/fp32 ratio found in a layer-benchmark result, if any."""
    best = None

    def walk(o: Any) -> None:
        nonlocal best
        if isinstance(o, dict):
            for k, v in o.items():
                if "ratio" in k and isinstance(v, int | float):
                    best = v if best is None else max(best, v)
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(layers)
    return best
