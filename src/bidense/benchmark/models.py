"""Whole-model benchmark: packed runtime vs PyTorch fp32 and PyTorch fake-binary (imports torch).

For each model configuration (``MODEL_CASES``) it reports, per thread count, latency min/median
of the packed ``.bdn`` runtime, of the same architecture in PyTorch fp32 and of the binary model
run in PyTorch (fake-binary float ops); the peak RSS of a fresh subprocess per engine that loads
it and runs one inference; the file size on disk; the CPU features.

Amdahl bound, stated next to (never mixed with) the measured speed-up:
``bound = 1 / ((1 - b) + b / s)`` where ``b`` is the binary share of the model's MACs
(``binary_macs / (binary_macs + fp_macs)`` from :func:`bidense.profile.summarize`) and ``s`` the
single-layer binary/fp32 speed-up (``LAYER_SPEEDUP``, the measured 3x3 256->256 figure of
docs/runtime.md, or the layer benchmark's value when ``what="all"``). The MAC share
over-estimates the time share of binary layers (float pieces are memory-bound), so the bound is
optimistic.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bidense.benchmark.common import write_json

__all__ = ["LAYER_SPEEDUP", "MODEL_CASES", "amdahl_bound", "run_model_benchmark"]

#: (model, method, input size): a baseline, BiDense with the deployment-friendly DAB
#: (``"bidense:shared"``: every DAB's ``scale = "shared"``, one alpha per sample) and BiDense
#: with the paper's per-channel DAB (its dense convs take the float path, about fp32 speed)
MODEL_CASES: tuple[tuple[str, str, int], ...] = (
    ("upernet_resnet18", "reactnet", 256),
    ("upernet_convnext_atto", "bidense:shared", 256),
    ("upernet_convnext_atto", "bidense", 256),
    ("ding_resnet18", "ding", 256),
)
#: single-layer speed-up used for the bound when the layer benchmark is not run (docs/runtime.md)
LAYER_SPEEDUP = 13.5


def amdahl_bound(binary_share: float, layer_speedup: float) -> float:
    """Amdahl's law: ``1 / ((1 - b) + b / s)``."""
    b = min(max(float(binary_share), 0.0), 1.0)
    return 1.0 / ((1.0 - b) + b / float(layer_speedup))


_ENGINE_CODE = """
import json, sys, time, numpy as np

def hwm_kib():
    # VmHWM is per address space and starts afresh at exec (ru_maxrss would inherit the
    # parent's peak across fork + exec)
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

engine, path, name, method, size, threads, repeats, min_time = sys.argv[1:9]
size, threads, repeats, min_time = int(size), int(threads), int(repeats), float(min_time)
x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
if engine == "runtime":
    from bidense.runtime import Runtime
    rt = Runtime(path, threads=threads)
    run = lambda: rt(x)
else:
    import torch
    from bidense.models import create_model
    torch.set_num_threads(threads)
    dab_scale = "shared" if method.endswith(":shared") else None
    m = create_model(name, task="seg", num_classes=19, method=method.split(":")[0],
                     dab_scale=dab_scale).eval()
    xt = torch.from_numpy(x)
    def run():
        with torch.inference_mode():
            m(xt)
loaded = hwm_kib()
run()
ts = []
start = time.perf_counter()
while len(ts) < repeats or time.perf_counter() - start < min_time:
    t0 = time.perf_counter()
    run()
    ts.append(1e3 * (time.perf_counter() - t0))
    if len(ts) >= 10 * repeats:
        break
print(json.dumps({"min_ms": min(ts), "median_ms": float(np.median(ts)), "runs": len(ts),
                  "peak_rss_kib": hwm_kib(), "loaded_rss_kib": loaded,
                  "torch_imported": "torch" in sys.modules}))
"""


def _engine_process(engine: str, path: str, name: str, method: str, size: int, threads: int,
                     repeats: int, min_time: float) -> dict[str, Any] | None:
    """Time one engine in a fresh interpreter (the runtime's never imports torch), with its
    whole-process peak RSS."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    try:
        out = subprocess.run(
            [sys.executable, "-c", _ENGINE_CODE, engine, path, name, method, str(size),
             str(threads), str(repeats), str(min_time)],
            capture_output=True, text=True, env=env, timeout=900,
        )
        if out.returncode != 0:
            return None
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def run_model_benchmark(
    threads: Sequence[int] = (1, 2),
    repeats: int = 10,
    json_path: str | None = None,
    *,
    cases: Sequence[tuple[str, str, int]] = MODEL_CASES,
    layer_speedup: float = LAYER_SPEEDUP,
    min_time: float = 2.0,
    verbose: bool = True,
) -> dict[str, Any]:
    """Benchmark whole models (see the module docstring); returns (and optionally writes) JSON."""
    import torch

    from bidense.export import export, max_relative_error
    from bidense.models import create_model
    from bidense.profile import summarize
    from bidense.runtime import Runtime, kernels

    results: dict[str, Any] = {
        "cpu_features": kernels.cpu_features(), "backend": kernels.backend(),
        "machine": platform.machine(), "processor": platform.processor(),
        "amdahl_rule": "1 / ((1 - b) + b / s), b = binary MAC share, s = single-layer speed-up",
        "layer_speedup": layer_speedup, "models": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, method, size in cases:
            torch.manual_seed(0)
            model = _make_model(name, method)
            fp32 = create_model(name, task="seg", num_classes=19, method="fp32").eval()
            x = torch.randn(1, 3, size, size)
            path = os.path.join(tmp, f"{name}_{method.replace(':', '_')}.bdn")
            info = export(model, path, x)
            summ = summarize(model, (1, 3, size, size))
            fp32_ops = summarize(fp32, (1, 3, size, size)).totals["ops"]
            bm, fm = summ.totals["binary_macs"], summ.totals["fp_macs"]
            share = bm / max(bm + fm, 1)
            xn = x.numpy()
            rec: dict[str, Any] = {
                "model": name, "method": method, "input": [1, 3, size, size],
                "file_bytes": info.file_bytes, "theoretical_bits": info.theoretical_bits,
                "binary_mac_share": share,
                # theory, never mixed with the measured columns: OPs = BOPs/64 + FLOPs
                "theory_ops_ratio": fp32_ops / max(summ.totals["ops"], 1.0),
                "amdahl_bound": amdahl_bound(share, layer_speedup), "threads": {},
            }
            with torch.inference_mode():
                ref = model(x).numpy()
            rt = Runtime(path, threads=1)
            rec["max_rel_error"] = max_relative_error(rt(xn), ref)
            rec["paths"] = sorted({r["path"] for r in rt.report()
                                   if r["op"] in ("bconv", "bconvT", "blinear")})
            rec["peak_rss_kib"] = {}
            for t in threads:
                # each engine in its own fresh process: the runtime as deployed (no torch),
                # PyTorch with its defaults; all three for the same input and thread count
                row = {
                    "runtime": _engine_process("runtime", path, name, method, size, t,
                                               repeats, min_time),
                    "torch_fp32": _engine_process("torch", path, name, "fp32", size, t,
                                                  repeats, min_time),
                    "torch_fake_binary": _engine_process("torch", path, name, method, size, t,
                                                         repeats, min_time),
                }
                if any(v is None for v in row.values()):
                    raise RuntimeError(f"benchmark subprocess failed for {name}/{method}")
                row["speedup_vs_fp32_min"] = row["torch_fp32"]["min_ms"] / row["runtime"][
                    "min_ms"]
                rec["threads"][str(t)] = row
                rec["peak_rss_kib"][str(t)] = {k: row[k]["peak_rss_kib"] for k in
                                               ("runtime", "torch_fp32", "torch_fake_binary")}
            results["models"].append(rec)
            if verbose:
                print(_format_model(rec), flush=True)
    if json_path:
        write_json(json_path, results)
    return results


def _make_model(name: str, method: str) -> Any:
    """``create_model`` in eval mode; ``"<method>:shared"`` sets every DAB to one alpha per
    sample (the deployment-friendly variant that keeps BiDense convs on the packed path)."""
    import torch

    from bidense.models import create_model

    dab_scale = "shared" if method.endswith(":shared") else None
    model = create_model(name, task="seg", num_classes=19, method=method.split(":")[0],
                         dab_scale=dab_scale).eval()
    # non-trivial BN statistics, as a trained model has: a fresh model's zero BN biases put
    # many conv outputs exactly on the next sign's threshold, where PyTorch's own float
    # rounding decides the sign (docs/runtime.md), which would make the error column noise
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.05)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return model


def _format_model(rec: dict[str, Any]) -> str:
    lines = [f"{rec['model']} [{rec['method']}] input {rec['input']}  file "
             f"{rec['file_bytes']:,} B  binary MAC share {rec['binary_mac_share']:.3f}  "
             f"max rel err {rec.get('max_rel_error', float('nan')):.2g}",
             f"  theory: fp32 OPs / OPs = {rec['theory_ops_ratio']:.1f}x (BOPs/64 + FLOPs); "
             f"Amdahl bound of the measured layer speed-up = {rec['amdahl_bound']:.2f}x",
             f"  {'threads':>7} {'runtime min/med ms':>20} {'fp32 min/med ms':>18} "
             f"{'fake-bin min/med ms':>20} {'measured speed-up':>18}"]
    for t, row in rec["threads"].items():
        r, f, b = row["runtime"], row["torch_fp32"], row["torch_fake_binary"]
        lines.append(f"  {t:>7} {r['min_ms']:>9.1f}/{r['median_ms']:<10.1f}"
                     f"{f['min_ms']:>8.1f}/{f['median_ms']:<9.1f}{b['min_ms']:>9.1f}/"
                     f"{b['median_ms']:<10.1f} {row['speedup_vs_fp32_min']:>17.2f}x")
    for t, peaks in rec["peak_rss_kib"].items():
        lines.append(f"  peak RSS, whole process, {t} thread(s) (MiB): " + ", ".join(
            f"{k} {v / 1024:.0f}" for k, v in peaks.items()))
    lines.append(f"  binary paths: {', '.join(rec.get('paths', []))}")
    return "\n".join(lines)
