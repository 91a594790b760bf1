"""Single-layer benchmark: packed binary conv versus PyTorch fp32 ``F.conv2d``, per ISA side.

Behind ``bidense benchmark --what layers`` and ``benchmarks/bench_binary_conv.py``. The binary
kernels run in this process with the side's kernel path (``backend=``, as
``BIDENSE_KERNEL`` would force it); PyTorch runs in a fresh process per ISA side
(:func:`bidense.benchmark.common.run_worker`), because ``ATEN_CPU_CAPABILITY`` and
``ONEDNN_MAX_CPU_ISA`` are read when torch loads. Without torch the fp32 column is empty, so the
layer benchmark runs where only the torch-free runtime is installed.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Sequence
from typing import Any

import numpy as np

from bidense.benchmark.common import isa_sides, run_worker, time_call, write_json
from bidense.runtime import kernels as K

__all__ = ["LAYER_SHAPES", "format_table", "layer_speedups", "layer_tensors",
           "run_layer_benchmark"]

#: (name, C_in, C_out, H = W, kernel, stride) -- the layer shapes of issue 6 / engines.md 3.
LAYER_SHAPES: tuple[tuple[str, int, int, int, int, int], ...] = (
    ("3x3 256->256 @56", 256, 256, 56, 3, 1),
    ("3x3 64->64 @112", 64, 64, 112, 3, 1),
    ("1x1 256->256 @56", 256, 256, 56, 1, 1),
    ("3x3 s2 128->256 @56", 128, 256, 56, 3, 2),
)


def layer_tensors(cin: int, cout: int, hw: int, k: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The seeded layer case, the same in every process: NHWC input ``(1, hw, hw, cin)``, OIHW
    float weights, per-channel scale and bias."""
    rng = np.random.default_rng((cin, cout, hw, k))
    x = rng.standard_normal((1, hw, hw, cin)).astype(np.float32)
    w = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, cout).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    return x, w, scale, bias


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
    """Time one binary conv layer against PyTorch fp32 per shape, thread count and ISA side.

    Each configuration runs at least ``repeats`` times and ``min_time`` seconds; min and median
    are reported. Binary rows: input already packed ("binary") and float NHWC input including
    :func:`~bidense.runtime.kernels.pack_nhwc` ("binary+pack"); both write float32 NHWC with a
    fused per-channel scale and bias, batch 1, zero padding (border correction on). The fp32 row
    is ``torch.nn.functional.conv2d`` on a channels-last tensor under ``torch.inference_mode``
    with ``torch.set_num_threads(t)``, in a fresh process with the side's ISA limits. Ratios =
    fp32 time / binary time (by min and by median). ``backend`` forces the native side's
    kernel path. Returns the result dict (also written to ``json_path`` atomically when given).
    """
    sides = isa_sides(backend)
    results = []
    torch_info: dict[str, Any] = {}
    for side in (s for s in sides if s.timed):
        fp32 = run_worker({"engine": "torch_layers", "shapes": [list(s) for s in shapes],
                           "threads": [int(t) for t in threads], "repeats": repeats,
                           "min_time": min_time}, side.name)
        torch_info[side.name] = {k: fp32.get(k) for k in ("cpu_capability", "torch", "error")}
        fp32_rows = {(r["layer"], r["threads"]): r["fp32"] for r in fp32.get("rows", [])}
        be = side.kernel
        for name, cin, cout, hw, k, s in shapes:
            x, w, scale, bias = layer_tensors(cin, cout, hw, k)
            xb, wb = K.pack_nhwc(x), K.pack_weights_ohwi(w)
            pad = k // 2
            for t in threads:
                row: dict = {"layer": name, "threads": int(t), "isa": side.name, "backend": be,
                             "gmac": cin * cout * k * k * ((hw + 2 * pad - k) // s + 1) ** 2 / 1e9}
                conv = functools.partial(K.binary_conv2d, w_bits=wb, in_channels=cin, kernel=k,
                                         stride=s, padding=pad, scale=scale, bias=bias,
                                         threads=t, backend=be)
                row["binary"] = time_call(lambda conv=conv, xb=xb: conv(xb), repeats, min_time)
                row["binary+pack"] = time_call(
                    lambda conv=conv, x=x, t=t, be=be: conv(K.pack_nhwc(x, threads=t, backend=be)),
                    repeats, min_time)
                if (name, int(t)) in fp32_rows:
                    row["fp32"] = fp32_rows[name, int(t)]
                    for key in ("min_ms", "median_ms"):
                        row[f"speedup_{key[:-3]}"] = row["fp32"][key] / row["binary"][key]
                        row[f"speedup_pack_{key[:-3]}"] = (row["fp32"][key]
                                                           / row["binary+pack"][key])
                results.append(row)
    out = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_features": K.cpu_features(),
        "backend": sides[0].kernel,
        "available_backends": K.available_backends(),
        "extension": K.extension_info(),
        "isa_sides": [s.to_dict() for s in sides],
        "torch": torch_info,
        "repeats": repeats,
        "min_time_s": min_time,
        "results": results,
    }
    if verbose:
        print(format_table(out))
    if json_path:
        write_json(json_path, out)
    return out


def layer_speedups(res: dict) -> dict[str, float]:
    """Per ISA side, the best one-thread binary/fp32 ratio (``speedup_min``, packed input) of a
    :func:`run_layer_benchmark` result; sides without an fp32 figure are left out."""
    best: dict[str, float] = {}
    for r in res.get("results", []):
        if r["threads"] == 1 and "speedup_min" in r:
            best[r["isa"]] = max(best.get(r["isa"], 0.0), r["speedup_min"])
    return best


def _fmt(t: dict | None) -> str:
    return f"{t['min_ms']:.2f}/{t['median_ms']:.2f}" if t else "n/a"


def format_table(res: dict) -> str:
    """Render :func:`run_layer_benchmark`'s result as text: CPU features, per ISA side the
    kernel path and PyTorch's CPU capability, the min / median table (ms), then the ratios of
    the sides side by side."""
    feats = ", ".join(k for k, v in res["cpu_features"].items() if v) or "none"
    lines = [f"CPU features: {feats}; kernel paths available: "
             f"{', '.join(res['available_backends'])}"]
    for s in res["isa_sides"]:
        tinfo = res["torch"].get(s["name"]) or {}
        torch_s = (f"PyTorch {tinfo.get('torch')} capability {tinfo.get('cpu_capability')}"
                   if tinfo.get("torch") else f"PyTorch n/a ({tinfo.get('error', 'not run')})")
        run = f"kernel path {s['kernel']}, {torch_s}" if s["timed"] else "not timed"
        lines.append(f"ISA side {s['name']}: {run}; {s['note']}")
    lines.append(f"{'layer':<22}{'isa':>7}{'thr':>4}  {'fp32 min/med':>15}  "
                 f"{'binary min/med':>15}  {'bin+pack min/med':>17}  {'x fp32 (min/med)':>17}  "
                 f"{'incl. pack':>10}")
    for r in res["results"]:
        fp = r.get("fp32")
        ratio = f"{r['speedup_min']:.1f}x/{r['speedup_median']:.1f}x" if fp else "n/a"
        ratio_p = f"{r['speedup_pack_min']:.1f}x" if fp else "n/a"
        lines.append(f"{r['layer']:<22}{r['isa']:>7}{r['threads']:>4}  {_fmt(fp):>15}  "
                     f"{_fmt(r['binary']):>15}  {_fmt(r['binary+pack']):>17}  {ratio:>17}  "
                     f"{ratio_p:>10}")
    names = [s["name"] for s in res["isa_sides"]]
    lines.append("binary / fp32 by min (incl. packing), ISA sides side by side:")
    lines.append(f"{'layer':<22}{'thr':>4}" + "".join(f"{n:>18}" for n in names))
    by_key = {(r["layer"], r["threads"], r["isa"]): r for r in res["results"]}
    for key in dict.fromkeys((r["layer"], r["threads"]) for r in res["results"]):
        cells = []
        for s in res["isa_sides"]:
            r = by_key.get((*key, s["name"]))
            if r is None and s["same_as"]:
                cells.append(f"= {s['same_as']}")
            elif r is None or "fp32" not in r:
                cells.append("n/a")
            else:
                cells.append(f"{r['speedup_min']:.1f}x ({r['speedup_pack_min']:.1f}x)")
        lines.append(f"{key[0]:<22}{key[1]:>4}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)
