"""Single-layer benchmark: packed binary conv versus PyTorch fp32 ``F.conv2d``, side by side.

Behind ``bidense benchmark --what layers`` and ``benchmarks/bench_binary_conv.py``. torch is
optional here (imported inside :func:`run_layer_benchmark`; without it the fp32 column is
empty), so the layer benchmark runs where only the torch-free runtime is installed.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence

import numpy as np

from bidense.benchmark.common import write_json
from bidense.runtime import kernels as K

__all__ = ["LAYER_SHAPES", "format_table", "run_layer_benchmark"]

#: (name, C_in, C_out, H = W, kernel, stride) -- the layer shapes of issue 6 / engines.md 3.
LAYER_SHAPES: tuple[tuple[str, int, int, int, int, int], ...] = (
    ("3x3 256->256 @56", 256, 256, 56, 3, 1),
    ("3x3 64->64 @112", 64, 64, 112, 3, 1),
    ("1x1 256->256 @56", 256, 256, 56, 1, 1),
    ("3x3 s2 128->256 @56", 128, 256, 56, 3, 2),
)


def _time(fn: Callable[[], object], repeats: int, min_time: float) -> dict[str, float]:
    fn()  # warm-up (allocations, thread pools)
    ts: list[float] = []
    start = time.perf_counter()
    while len(ts) < repeats or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    a = np.array(ts) * 1e3
    return {"min_ms": float(a.min()), "median_ms": float(np.median(a)), "runs": len(ts)}


def run_layer_benchmark(
    threads: Sequence[int] = (1, 2),
    repeats: int = 30,
    json_path: str | None = None,
    *,
    min_time: float = 1.0,
    backend: str | None = None,
    shapes: Sequence[tuple[str, int, int, int, int, int]] = LAYER_SHAPES,
    verbose: bool = True,
) -> dict:
    """Time one binary conv layer against PyTorch fp32 for each shape and thread count.

    Each configuration runs at least ``repeats`` times and ``min_time`` seconds; min and median
    are reported. Binary rows: input already packed ("binary") and float NHWC input including
    :func:`~bidense.runtime.kernels.pack_nhwc` ("binary+pack"); both write float32 NHWC with a
    fused per-channel scale and bias, batch 1, zero padding (border correction on). The fp32 row
    is ``torch.nn.functional.conv2d`` on a channels-last tensor under ``torch.inference_mode``
    with ``torch.set_num_threads(t)``. Ratios = fp32 time / binary time (by min and by median).
    Returns the result dict (also written to ``json_path`` atomically when given).
    """
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:  # pragma: no cover - torch is optional at run time
        torch = None
    be = K.backend(backend)
    rng = np.random.default_rng(0)
    results = []
    for name, cin, cout, hw, k, s in shapes:
        x = rng.standard_normal((1, hw, hw, cin)).astype(np.float32)
        w = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
        xb, wb = K.pack_nhwc(x), K.pack_weights_ohwi(w)
        scale = rng.uniform(0.5, 1.5, cout).astype(np.float32)
        bias = rng.standard_normal(cout).astype(np.float32)
        pad = k // 2
        for t in threads:
            row: dict = {"layer": name, "threads": int(t), "backend": be,
                         "gmac": cin * cout * k * k * ((hw + 2 * pad - k) // s + 1) ** 2 / 1e9}
            row["binary"] = _time(lambda xb=xb, wb=wb, cin=cin, k=k, s=s, pad=pad, t=t, sc=scale,
                                  b=bias: K.binary_conv2d(xb, wb, cin, k, s, pad, scale=sc,
                                                          bias=b, threads=t, backend=be),
                                  repeats, min_time)
            row["binary+pack"] = _time(
                lambda x=x, wb=wb, cin=cin, k=k, s=s, pad=pad, t=t, sc=scale, b=bias:
                K.binary_conv2d(K.pack_nhwc(x, threads=t, backend=be), wb, cin, k, s, pad,
                                scale=sc, bias=b, threads=t, backend=be),
                repeats, min_time)
            if torch is not None:
                torch.set_num_threads(int(t))
                xt = torch.from_numpy(x).permute(0, 3, 1, 2)  # NCHW view of NHWC memory
                wt = torch.from_numpy(w).contiguous(memory_format=torch.channels_last)
                bt = torch.from_numpy(bias)

                def fp32(xt=xt, wt=wt, bt=bt, s=s, pad=pad):
                    with torch.inference_mode():
                        return F.conv2d(xt, wt, bt, stride=s, padding=pad)

                row["fp32"] = _time(fp32, repeats, min_time)
                for key in ("min_ms", "median_ms"):
                    row[f"speedup_{key[:-3]}"] = row["fp32"][key] / row["binary"][key]
                    row[f"speedup_pack_{key[:-3]}"] = row["fp32"][key] / row["binary+pack"][key]
            results.append(row)
    out = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_features": K.cpu_features(),
        "backend": be,
        "available_backends": K.available_backends(),
        "extension": K.extension_info(),
        "torch": None if torch is None else torch.__version__,
        "repeats": repeats,
        "min_time_s": min_time,
        "results": results,
    }
    if verbose:
        print(format_table(out))
    if json_path:
        write_json(json_path, out)
    return out


def format_table(res: dict) -> str:
    """Render :func:`run_layer_benchmark`'s result as a text table (min / median in ms)."""
    feats = ", ".join(k for k, v in res["cpu_features"].items() if v) or "none"
    lines = [
        f"CPU features: {feats}; kernel path: {res['backend']} "
        f"(available: {', '.join(res['available_backends'])}); torch {res['torch']}",
        f"{'layer':<22}{'thr':>4}  {'fp32 min/med':>15}  {'binary min/med':>15}  "
        f"{'bin+pack min/med':>17}  {'x fp32 (min/med)':>17}  {'incl. pack':>10}",
    ]
    for r in res["results"]:
        fp = r.get("fp32")
        fp_s = f"{fp['min_ms']:.2f}/{fp['median_ms']:.2f}" if fp else "n/a"
        b, bp = r["binary"], r["binary+pack"]
        ratio = (f"{r['speedup_min']:.1f}x/{r['speedup_median']:.1f}x" if fp else "n/a")
        ratio_p = f"{r['speedup_pack_min']:.1f}x" if fp else "n/a"
        lines.append(f"{r['layer']:<22}{r['threads']:>4}  {fp_s:>15}  "
                     f"{b['min_ms']:>7.2f}/{b['median_ms']:<7.2f}  "
                     f"{bp['min_ms']:>8.2f}/{bp['median_ms']:<8.2f}  {ratio:>17}  {ratio_p:>10}")
    return "\n".join(lines)
