"""Whole-model benchmark: packed runtime vs PyTorch fp32, onnxruntime fp32 and PyTorch
fake-binary, per thread count and ISA side, with where the runtime's time goes (imports torch).

For each model configuration (``MODEL_CASES``) and thread count it reports, on every ISA side
of :func:`bidense.benchmark.common.isa_sides`: latency min/median of the packed ``.bdn``
runtime and of the same architecture in PyTorch fp32, and on the ``native`` side also the fp32
architecture exported to ONNX (static input shape) and run in onnxruntime (intra-op threads =
the thread count; onnxruntime has no switch to limit its ISA) and the binary model run in
PyTorch (fake-binary float ops). Each engine runs in its own fresh process
(:mod:`bidense.benchmark.worker`) with the side's environment; its whole-process peak RSS
(``VmHWM``) is reported. Also: the file size, the CPU features, the kernel path and PyTorch's
CPU capability of each row, and the runtime's time per kind of work
(:mod:`bidense.benchmark.breakdown`) at each thread count.

Amdahl bound, stated next to (never mixed with) the measured speed-up:
``bound = 1 / ((1 - b) + b / s)`` where ``b`` is the binary share of the model's MACs
(``binary_macs / (binary_macs + fp_macs)`` from :func:`bidense.profile.summarize`) and ``s`` the
single-layer binary/fp32 speed-up of the side (the layer benchmark's best one-thread ratio when
``what="all"``, else ``LAYER_SPEEDUPS`` of the side's kernel path). The MAC share
over-estimates the time share of binary layers (float pieces are memory-bound), so the bound is
optimistic; ``share of bound`` = measured speed-up / bound.

The DAB variants of BiDense (per-channel as published, group, shared) on the same architecture
are summarised side by side (``dab_variants``); a variant ``create_model`` does not accept is
listed as not available.
"""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from bidense.benchmark.breakdown import categorize, format_breakdown, time_shares
from bidense.benchmark.common import isa_sides, run_worker, write_json

__all__ = ["DAB_VARIANTS", "LAYER_SPEEDUP", "LAYER_SPEEDUPS", "MODEL_CASES", "amdahl_bound",
           "export_onnx_fp32", "profile_model_runtime", "run_model_benchmark"]

#: (model, method, input size): a baseline, BiDense with each DAB scale (``"bidense:<scale>"``
#: sets every DAB's ``scale``; plain ``"bidense"`` is the paper's per-channel DAB, whose dense
#: convs take the float path, about fp32 speed) and Ding
MODEL_CASES: tuple[tuple[str, str, int], ...] = (
    ("upernet_resnet18", "reactnet", 256),
    ("upernet_convnext_atto", "bidense:shared", 256),
    ("upernet_convnext_atto", "bidense:group", 256),
    ("upernet_convnext_atto", "bidense", 256),
    ("ding_resnet18", "ding", 256),
)
#: the DAB variants shown side by side: (label, method of ``MODEL_CASES``)
DAB_VARIANTS: tuple[tuple[str, str], ...] = (
    ("per-channel (exact, the paper)", "bidense"),
    ("group", "bidense:group"),
    ("shared", "bidense:shared"),
)
#: single-layer speed-up (3x3 256->256 @56, one thread, vs PyTorch fp32 limited to the same
#: ISA) per kernel path, for the bound when the layer benchmark is not run: avx512 from
#: docs/runtime.md, avx2 from issue 11 (the AVX2 path vs an AVX2-limited PyTorch)
LAYER_SPEEDUPS: dict[str, float] = {"avx512": 13.5, "avx2": 5.0}
LAYER_SPEEDUP = LAYER_SPEEDUPS["avx512"]


def amdahl_bound(binary_share: float, layer_speedup: float) -> float:
    """Amdahl's law: ``1 / ((1 - b) + b / s)``."""
    b = min(max(float(binary_share), 0.0), 1.0)
    return 1.0 / ((1.0 - b) + b / float(layer_speedup))


def _split_method(method: str) -> tuple[str, str | None]:
    """``"bidense:shared"`` -> ``("bidense", "shared")``; ``"ding"`` -> ``("ding", None)``."""
    base, _, scale = method.partition(":")
    return base, scale or None


def export_onnx_fp32(model: Any, path: str, x: Any) -> str | None:
    """Export ``model`` to ONNX at the static shape of ``x`` for the onnxruntime column; returns
    why not (``None`` on success): onnx / onnxruntime not installed, or the export failed."""
    try:
        from bidense.export.to_onnx import export_onnx
    except ImportError as exc:  # the optional ``export`` extra (onnx, onnxruntime) is missing
        return f"onnxruntime column skipped: {exc}"
    try:
        export_onnx(model, path, x, dynamic=False)
    except Exception as exc:  # noqa: BLE001 - any exporter failure only drops this column
        return f"onnxruntime column skipped: ONNX export failed ({type(exc).__name__}: {exc})"
    return None


def _side_speedup(layer_speedup: float | Mapping[str, float] | None, side: str,
                  kernel: str | None) -> float | None:
    """The single-layer speed-up ``s`` of the bound for one ISA side (see the module
    docstring); a number applies to every side."""
    if isinstance(layer_speedup, int | float):
        return float(layer_speedup)
    measured = (layer_speedup or {}).get(side)
    return measured if measured is not None else LAYER_SPEEDUPS.get(kernel or "")


def run_model_benchmark(
    threads: Sequence[int] = (1, 2),
    repeats: int = 10,
    json_path: str | None = None,
    *,
    cases: Sequence[tuple[str, str, int]] = MODEL_CASES,
    layer_speedup: float | Mapping[str, float] | None = None,
    min_time: float = 2.0,
    verbose: bool = True,
) -> dict[str, Any]:
    """Benchmark whole models (see the module docstring); returns (and optionally writes) JSON.

    ``layer_speedup``: the ``s`` of the bound, one number for every ISA side or a mapping
    ``{side: s}`` (the layer benchmark's :func:`~bidense.benchmark.layers.layer_speedups`);
    sides without one use ``LAYER_SPEEDUPS`` of their kernel path.
    """
    from bidense.runtime import kernels

    sides = isa_sides()
    results: dict[str, Any] = {
        "cpu_features": kernels.cpu_features(), "backend": sides[0].kernel,
        "machine": platform.machine(), "processor": platform.processor(),
        "isa_sides": [s.to_dict() for s in sides],
        "amdahl_rule": "1 / ((1 - b) + b / s), b = binary MAC share, s = single-layer speed-up",
        "layer_speedup": {s.name: _side_speedup(layer_speedup, s.name, s.kernel) for s in sides
                          if s.timed},
        "models": [],
    }
    if verbose:
        print("\n".join(f"ISA side {s.name}: kernel path {s.kernel}; {s.note}" for s in sides))
    # per architecture and size: the fp32 ONNX file, why it is missing, the fp32 OPs
    fp32_files: dict[tuple[str, int], tuple[str, str | None, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, method, size in cases:
            try:
                rec, path = _prepare_case(name, method, size, tmp, fp32_files)
            except ValueError as exc:  # a variant the models, exporter or runtime lack yet
                rec = {"model": name, "method": method, "available": False,
                       "reason": f"{type(exc).__name__}: {exc}"}
                results["models"].append(rec)
                if verbose:
                    print(f"{name} [{method}]: not available ({rec['reason']})", flush=True)
                continue
            base, dab_scale = _split_method(method)
            onnx_path = None if rec["onnxruntime_note"] else fp32_files[name, size][0]
            base_spec = {"model": name, "size": size, "repeats": repeats, "min_time": min_time}
            for t in threads:
                for side in (s for s in sides if s.timed):
                    row = _measure(side.name, {**base_spec, "threads": int(t)}, path, base,
                                   dab_scale, onnx_path)
                    s_layer = results["layer_speedup"][side.name]
                    bound = (None if s_layer is None else
                             amdahl_bound(rec["binary_mac_share"], s_layer))
                    row.update(amdahl_bound=bound, share_of_bound=None if bound is None else
                               row["speedup_vs_fp32_min"] / bound)
                    rec["rows"].append(row)
            results["models"].append(rec)
            if verbose:
                print(_format_model(rec), flush=True)
    results["dab_variants"] = _dab_variants(results["models"])
    if verbose:
        print(format_dab_variants(results["dab_variants"]), flush=True)
    if json_path:
        write_json(json_path, results)
    return results


def _prepare_case(name: str, method: str, size: int, tmp: str,
                  fp32_files: dict[tuple[str, int], tuple[str, str | None, float]]
                  ) -> tuple[dict[str, Any], str]:
    """Build, profile and export one case, check the runtime against PyTorch once; returns its
    record (no rows yet) and the ``.bdn`` path. ``fp32_files`` caches, per architecture and
    size, the fp32 ONNX file, why it is missing, and the fp32 OPs. Raises ``ValueError`` when
    the models, the exporter or the runtime do not support the case."""
    import torch

    from bidense.export import export, max_relative_error
    from bidense.models import create_model
    from bidense.profile import summarize
    from bidense.runtime import Runtime

    torch.manual_seed(0)
    model = _make_model(name, method)
    x = torch.randn(1, 3, size, size)
    if (name, size) not in fp32_files:
        fp32 = create_model(name, task="seg", num_classes=19, method="fp32").eval()
        onnx_path = os.path.join(tmp, f"{name}_{size}_fp32.onnx")
        fp32_files[name, size] = (onnx_path, export_onnx_fp32(fp32, onnx_path, x),
                                  summarize(fp32, (1, 3, size, size)).totals["ops"])
    _, onnx_skip, fp32_ops = fp32_files[name, size]
    path = os.path.join(tmp, f"{name}_{method.replace(':', '_')}.bdn")
    info = export(model, path, x)
    summ = summarize(model, (1, 3, size, size))
    bm, fm = summ.totals["binary_macs"], summ.totals["fp_macs"]
    rt = Runtime(path, threads=1)
    out = rt(x.numpy())
    with torch.inference_mode():
        ref = model(x).numpy()
    rec: dict[str, Any] = {
        "model": name, "method": method, "available": True, "input": [1, 3, size, size],
        "file_bytes": info.file_bytes, "theoretical_bits": info.theoretical_bits,
        "binary_mac_share": bm / max(bm + fm, 1),
        # theory, never mixed with the measured columns: OPs = BOPs/64 + FLOPs
        "theory_ops_ratio": fp32_ops / max(summ.totals["ops"], 1.0),
        "max_rel_error": max_relative_error(out, ref),
        "paths": sorted({r["path"] for r in rt.report()
                         if r["op"] in ("bconv", "bconvT", "blinear")}),
        "onnxruntime_note": onnx_skip, "rows": [],
    }
    return rec, path


def _measure(side: str, spec: dict[str, Any], path: str, method: str, dab_scale: str | None,
             onnx_path: str | None) -> dict[str, Any]:
    """One row: every engine of one model at one thread count on one ISA side, each in its own
    process. The fake-binary and onnxruntime engines run on the ``native`` side only."""
    engines = {"runtime": {**spec, "engine": "runtime", "path": path},
               "torch_fp32": {**spec, "engine": "torch", "method": "fp32"}}
    if side == "native":
        engines["torch_fake_binary"] = {**spec, "engine": "torch", "method": method,
                                        "dab_scale": dab_scale}
        if onnx_path is not None:
            engines["onnxruntime_fp32"] = {**spec, "engine": "onnxruntime", "path": onnx_path}
    row: dict[str, Any] = {"isa": side, "threads": spec["threads"]}
    row.update({k: run_worker(v, side) for k, v in engines.items()})
    for k in ("runtime", "torch_fp32"):
        if "error" in row[k]:
            raise RuntimeError(f"benchmark {k} process failed for {spec['model']}/{method} "
                               f"({side}, {spec['threads']} threads): {row[k]['error']}")
    rt = row["runtime"]
    rt.pop("nodes")  # the per-node report stays in benchmarks/profile_runtime.py's output
    row.update(kernel=rt["kernel"], torch_capability=row["torch_fp32"].get("cpu_capability"),
               speedup_vs_fp32_min=row["torch_fp32"]["min_ms"] / rt["min_ms"],
               time_breakdown=rt.pop("time_breakdown"))
    row["time_shares"] = time_shares(row["time_breakdown"])
    ort = row.get("onnxruntime_fp32")
    if ort is not None and "error" not in ort:
        row["speedup_vs_onnxruntime_min"] = ort["min_ms"] / rt["min_ms"]
    return row


def _dab_variants(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``DAB_VARIANTS`` rows of the benchmarked models, side by side."""
    out = []
    for label, method in DAB_VARIANTS:
        rec = next((m for m in models if m["method"] == method), None)
        if rec is None or not rec["available"]:
            out.append({"variant": label, "method": method, "available": False,
                        "reason": "not benchmarked" if rec is None else rec["reason"]})
            continue
        out.append({"variant": label, "method": method, "model": rec["model"],
                    "available": True, "paths": rec["paths"],
                    "rows": [{k: r.get(k) for k in ("isa", "threads", "speedup_vs_fp32_min",
                                                    "share_of_bound")}
                             | {"runtime_min_ms": r["runtime"]["min_ms"],
                                "peak_rss_kib": r["runtime"]["peak_rss_kib"]}
                             for r in rec["rows"]]})
    return out


def format_dab_variants(variants: list[dict[str, Any]]) -> str:
    """The DAB variants as text: per variant and row, runtime min and speed-up vs fp32."""
    lines = ["DAB variants side by side (runtime min ms, x PyTorch fp32, peak RSS MiB):"]
    for v in variants:
        if not v["available"]:
            lines.append(f"  {v['variant']:<32} not available ({v['reason']})")
            continue
        cells = "; ".join(f"{r['isa']} {r['threads']} thr: {r['runtime_min_ms']:.1f} ms "
                          f"{r['speedup_vs_fp32_min']:.2f}x {r['peak_rss_kib'] / 1024:.0f} MiB"
                          for r in v["rows"])
        lines.append(f"  {v['variant']:<32} {cells}")
    return "\n".join(lines)


def profile_model_runtime(name: str, method: str, size: int = 256,
                          threads: Sequence[int] = (1,), repeats: int = 10,
                          min_time: float = 2.0) -> dict[str, Any]:
    """Where the runtime's time goes for one model (``benchmarks/profile_runtime.py``): export
    ``name`` / ``method`` (``"<method>:<scale>"`` as in ``MODEL_CASES``) at ``size``, run it in
    a fresh runtime process per thread count, and return per thread count the time per category
    of :mod:`bidense.benchmark.breakdown` (of the median call), its shares and that call's
    per-node report."""
    from bidense.export import export
    from bidense.runtime import kernels

    out: dict[str, Any] = {"model": name, "method": method, "input": [1, 3, size, size],
                           "cpu_features": kernels.cpu_features(), "threads": {}}
    with tempfile.TemporaryDirectory() as tmp:
        import torch

        torch.manual_seed(0)
        path = os.path.join(tmp, "model.bdn")
        export(_make_model(name, method), path, torch.randn(1, 3, size, size))
        for t in threads:
            res = run_worker({"engine": "runtime", "path": path, "size": size, "threads": int(t),
                              "repeats": repeats, "min_time": min_time})
            if "error" in res:
                raise RuntimeError(f"runtime process failed for {name}/{method}: {res['error']}")
            res["time_shares"] = time_shares(res["time_breakdown"])
            out["threads"][str(t)] = res
    return out


def format_profile(prof: dict[str, Any], top: int = 10) -> str:
    """:func:`profile_model_runtime`'s result as text: the category table, then the ``top``
    slowest nodes of each thread count's median call."""
    lines = [f"{prof['model']} [{prof['method']}] input {prof['input']}"]
    by_t = prof["threads"]
    lines.append(format_breakdown({t: r["time_breakdown"] for t, r in by_t.items()}))
    for t, r in by_t.items():
        lines.append(f"  slowest nodes, {t} thread(s), kernel path {r['kernel']}, median call "
                     f"{r['breakdown_wall_ms']:.2f} ms:")
        for n in sorted(r["nodes"], key=lambda n: -n["ms"])[:top]:
            lines.append(f"    {n['ms']:>8.2f} ms  {categorize(n['op'], n['path']):<18} "
                         f"{n['op']:<10} {n['path'][:36]:<36} {n['name'][:48]}")
    return "\n".join(lines)


def _make_model(name: str, method: str) -> Any:
    """``create_model`` in eval mode; ``"<method>:<scale>"`` sets every DAB's ``scale``
    (``shared``: one alpha per sample, the deployment-friendly variant that keeps BiDense convs
    on the packed path; ``group``: one per group of input channels)."""
    import torch

    from bidense.models import create_model

    base, dab_scale = _split_method(method)
    model = create_model(name, task="seg", num_classes=19, method=base,
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


def _ms(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    return "failed" if "error" in r else f"{r['min_ms']:.1f}/{r['median_ms']:.1f}"


def _format_model(rec: dict[str, Any]) -> str:
    note = f"\n  {rec['onnxruntime_note']}" if rec.get("onnxruntime_note") else ""
    lines = [f"{rec['model']} [{rec['method']}] input {rec['input']}  file "
             f"{rec['file_bytes']:,} B  binary MAC share {rec['binary_mac_share']:.3f}  "
             f"max rel err {rec.get('max_rel_error', float('nan')):.2g}{note}",
             f"  theory: fp32 OPs / OPs = {rec['theory_ops_ratio']:.1f}x (BOPs/64 + FLOPs)",
             f"  {'isa':>6} {'thr':>3} {'kernel':>7} {'torch':>7} {'runtime min/med':>16} "
             f"{'fp32 min/med':>14} {'ORT fp32':>14} {'fake-bin':>14} {'x fp32':>7} "
             f"{'x ORT':>6} {'bound':>6} {'share':>6}  peak RSS MiB rt/fp32/ORT"]
    for r in rec["rows"]:
        ort = r.get("onnxruntime_fp32")
        x_ort = r.get("speedup_vs_onnxruntime_min")
        bound, sob = r["amdahl_bound"], r["share_of_bound"]
        rss = "/".join("-" if (e := r.get(k)) is None or "error" in e else
                       f"{e['peak_rss_kib'] / 1024:.0f}"
                       for k in ("runtime", "torch_fp32", "onnxruntime_fp32"))
        lines.append(
            f"  {r['isa']:>6} {r['threads']:>3} {r['kernel']:>7} {r['torch_capability'] or '-':>7} "
            f"{_ms(r['runtime']):>16} {_ms(r['torch_fp32']):>14} {_ms(ort):>14} "
            f"{_ms(r.get('torch_fake_binary')):>14} {r['speedup_vs_fp32_min']:>6.2f}x "
            + (f"{x_ort:>5.2f}x" if x_ort is not None else f"{'-':>6}")
            + (f" {bound:>5.1f}x {sob:>6.2f}" if bound is not None else f" {'-':>6} {'-':>6}")
            + f"  {rss}")
    native = {str(r["threads"]): r["time_breakdown"] for r in rec["rows"]
              if r["isa"] == "native"}
    lines.append(format_breakdown(native))
    lines.append(f"  binary paths: {', '.join(rec.get('paths', []))}")
    return "\n".join(lines)
