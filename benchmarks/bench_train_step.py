"""Training-step benchmark: binary layers/models versus their fp32 counterparts, 2 and 1 threads.

    PYTHONPATH=src python benchmarks/bench_train_step.py --threads 2 1 --json train_step.json
    PYTHONPATH=src python benchmarks/bench_train_step.py --baseline-src /path/to/old/src

One *step* is forward + backward + ``AdamW.step()`` (``zero_grad(set_to_none=True)`` first), timed
with ``time.perf_counter``. Variants of one case are built once and stepped **round-robin**, so
that the load of a noisy machine hits all of them alike; the reported figure is the median step.

Cases:

* layers: ``BiDenseConv2d`` versus ``Conv2d(bias=False) + BatchNorm2d`` of the same shape
  (1x1 96->384, 1x1 384->96, 3x3 96->96, depthwise 7x7 96) on a (B, C, H, W) input that requires
  grad, as a layer inside a network does.
* models (``bidense.models.create_model``): the same architecture with methods ``bidense``,
  ``reactnet`` and ``bnn`` versus ``fp32``. The zoo's fp32 ConvNeXt is the LayerNorm original, so
  two like-for-like float baselines are built as well, by swapping every binarizer of a binary
  model for the identity (same graph with float operands): ``bidense-fp`` (BiDense layout: conv +
  BN + CFB, LearnableBias + PReLU) and ``bnn-fp`` (the BN-ConvNeXt baseline skeleton with GELU).

``--baseline-src DIR`` (e.g. a copy of ``src`` taken before an optimisation) imports that tree as
``bidense_baseline`` in the same process and steps its binary variants (``X@before``) in the
same round-robin, then prints a before/after table. Comparing separate processes does not work
on a shared machine: at 2 threads one busy neighbour can slow a whole run several-fold.

Measured on the 2-core development VM: a fresh activation-sized allocation costs far more than the
arithmetic on it (glibc returns large blocks to the OS, so every new tensor page-faults; about
6.5 ms per 9 MB tensor versus 0.8 ms with ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``
raised). That is why the fused binarizers count allocations, and why such allocator settings (or
jemalloc) speed up fp32 and binary training alike.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LAYER_SHAPES: dict[str, tuple[int, int, int, int]] = {
    # name: (c_in, c_out, kernel, groups)
    "1x1 96->384": (96, 384, 1, 1),
    "1x1 384->96": (384, 96, 1, 1),
    "3x3 96->96": (96, 96, 3, 1),
    "dw7x7 96": (96, 96, 7, 96),
}
MODEL_METHODS = ("bidense", "reactnet", "bnn")
# like-for-like float baseline of each binary method (its layout with identity binarizers)
FP_TWIN = {"bidense": "bidense-fp", "reactnet": "bnn-fp", "bnn": "bnn-fp"}


BASELINE_PKG = "bidense_baseline"


def _pkg(name: str, sub: str):
    return importlib.import_module(f"{name}.{sub}")


def _identity_binarizers(model: nn.Module) -> nn.Module:
    """Swap every activation/weight binarizer for the identity: the same graph in float."""
    from bidense.binarize import IdentityActivation, IdentityWeight

    for m in model.modules():
        if hasattr(m, "act_binarizer"):
            m.act_binarizer = IdentityActivation(getattr(m.act_binarizer, "channels", None))
        if hasattr(m, "weight_binarizer"):
            m.weight_binarizer = IdentityWeight()
    return model


def _layer_variants(
    name: str, batch: int, hw: tuple[int, int], baseline: bool = False
) -> tuple[dict[str, nn.Module], torch.Tensor, Callable]:
    c_in, c_out, k, g = LAYER_SHAPES[name]
    variants: dict[str, nn.Module] = {
        "fp32": nn.Sequential(
            nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=g, bias=False), nn.BatchNorm2d(c_out)
        ),
    }
    for pkg, key in (("bidense", "bidense"), (BASELINE_PKG, "bidense@before")):
        if pkg == BASELINE_PKG and not baseline:
            continue
        cls = _pkg(pkg, "nn").BiDenseConv2d
        variants[key] = cls(c_in, c_out, k, padding=k // 2, groups=g)
    x = torch.randn(batch, c_in, *hw, requires_grad=True)
    target = torch.randn(batch, c_out, *hw)

    def loss_fn(out: torch.Tensor) -> torch.Tensor:
        return (out * target).mean()

    return variants, x, loss_fn


def _model_variants(
    arch: str,
    methods: tuple[str, ...],
    batch: int,
    hw: tuple[int, int],
    num_classes: int,
    baseline: bool = False,
) -> tuple[dict[str, nn.Module], torch.Tensor, Callable]:
    def make(method: str, pkg: str = "bidense") -> nn.Module:
        create = _pkg(pkg, "models").create_model
        return create(arch, task="seg", num_classes=num_classes, method=method)

    variants: dict[str, nn.Module] = {"fp32": make("fp32")}
    for method in methods:
        twin = FP_TWIN.get(method)
        if twin and twin not in variants:
            variants[twin] = _identity_binarizers(make(twin.removesuffix("-fp")))
        variants[method] = make(method)
        if baseline:
            variants[f"{method}@before"] = make(method, BASELINE_PKG)
    x = torch.randn(batch, 3, *hw)
    labels = torch.randint(0, num_classes, (batch, *hw))

    def loss_fn(out: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, labels)

    return variants, x, loss_fn


def _time_round_robin(
    variants: dict[str, nn.Module],
    x: torch.Tensor,
    loss_fn: Callable,
    repeats: int,
    warmup: int,
    min_time: float,
) -> dict[str, list[float]]:
    """Step every variant in turn; return the step times (s) per variant."""
    steps = {}
    for key, model in variants.items():
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model: nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x)).backward()
            opt.step()

        steps[key] = step
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {k: [] for k in steps}
    start = time.perf_counter()
    while len(times["fp32"]) < repeats or time.perf_counter() - start < min_time:
        for key, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[key].append(time.perf_counter() - t0)
    return times


def run_train_step_benchmark(
    threads: tuple[int, ...] = (2, 1),
    layers: bool = True,
    models: tuple[str, ...] = ("upernet_convnext_atto",),
    methods: tuple[str, ...] = MODEL_METHODS,
    layer_batch: int = 8,
    layer_hw: tuple[int, int] = (24, 32),
    model_batch: int = 8,
    model_hw: tuple[int, int] = (64, 64),
    num_classes: int = 19,
    repeats: int = 7,
    warmup: int = 2,
    min_time: float = 0.0,
    json_path: str | None = None,
    seed: int = 0,
    verbose: bool = True,
    baseline_src: str | None = None,
) -> dict:
    """Time training steps of binary versus fp32 layers and models; return a JSON-able dict.

    The result holds ``rows``: one per (case, variant, threads) with ``median_ms``, ``min_ms``,
    the raw ``times_ms``, ``ratio_fp32`` (median / the case's ``fp32`` median) and, for binary
    model variants, ``ratio_twin`` (median / the like-for-like float baseline's median).

    ``baseline_src``: a ``src`` directory holding an older ``bidense`` (e.g. before an
    optimisation). It is imported in this process as ``bidense_baseline`` (see
    :func:`load_baseline`) and its binary variants, suffixed ``@before``, join the same
    round-robin, so before and after see the same machine load.
    """
    baseline = baseline_src is not None
    if baseline:
        load_baseline(baseline_src)
    cases: list[tuple[str, str, Callable]] = []
    if layers:
        for name in LAYER_SHAPES:
            cases.append(
                ("layer", name, lambda n=name: _layer_variants(n, layer_batch, layer_hw, baseline))
            )
    for arch in models:
        label = f"{arch} b{model_batch} {model_hw[0]}x{model_hw[1]}"
        cases.append(
            (
                "model",
                label,
                lambda a=arch: _model_variants(
                    a, methods, model_batch, model_hw, num_classes, baseline
                ),
            )
        )
    rows: list[dict] = []
    for nt in threads:
        torch.set_num_threads(nt)
        for kind, label, build in cases:
            torch.manual_seed(seed)
            variants, x, loss_fn = build()
            times = _time_round_robin(variants, x, loss_fn, repeats, warmup, min_time)
            med = {k: statistics.median(v) for k, v in times.items()}
            for key, ts in times.items():
                twin = FP_TWIN.get(key.split("@")[0]) if kind == "model" else None
                row = {
                    "kind": kind,
                    "case": label,
                    "variant": key,
                    "threads": nt,
                    "median_ms": 1e3 * med[key],
                    "min_ms": 1e3 * min(ts),
                    "times_ms": [1e3 * t for t in ts],
                    "ratio_fp32": med[key] / med["fp32"],
                    "ratio_twin": med[key] / med[twin] if twin in med else None,
                }
                rows.append(row)
            if verbose:
                print(f"  done: {label} @ {nt} thread(s)", file=sys.stderr, flush=True)
    result = {
        "torch": torch.__version__,
        "config": {
            "threads": list(threads),
            "layer_batch": layer_batch,
            "layer_hw": list(layer_hw),
            "model_batch": model_batch,
            "model_hw": list(model_hw),
            "models": list(models),
            "methods": list(methods),
            "repeats": repeats,
        },
        "rows": rows,
    }
    if verbose:
        print(format_table(rows))
        if baseline:
            print("\n" + format_before_after(rows))
    if json_path:
        _write_json(json_path, result)
    return result


def _write_json(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def format_table(rows: list[dict]) -> str:
    """Table: case, variant, then median ms and ratios per thread count side by side."""
    threads = sorted({r["threads"] for r in rows}, reverse=True)
    keys = list(dict.fromkeys((r["case"], r["variant"]) for r in rows))
    by = {(r["case"], r["variant"], r["threads"]): r for r in rows}
    head = f"{'case':<36} {'variant':<16}"
    for nt in threads:
        head += f" | {nt}T ms    /fp32  /twin"
    lines = [head, "-" * len(head)]
    for case, variant in keys:
        line = f"{case:<36} {variant:<16}"
        for nt in threads:
            r = by.get((case, variant, nt))
            if r is None:
                line += " | " + " " * 21
                continue
            twin = f"{r['ratio_twin']:5.2f}" if r["ratio_twin"] is not None else "    -"
            line += f" | {r['median_ms']:8.1f} {r['ratio_fp32']:5.2f} {twin}"
        lines.append(line)
    return "\n".join(lines)


def _pool(results: list[dict]) -> list[dict]:
    """Merge the rows of several runs: pooled samples, recomputed medians and ratios."""
    pooled: dict[tuple, dict] = {}
    for res in results:
        for r in res["rows"]:
            key = (r["case"], r["variant"], r["threads"])
            if key not in pooled:
                pooled[key] = dict(r, times_ms=[])
            pooled[key]["times_ms"] += r["times_ms"]
    for r in pooled.values():
        r["median_ms"] = statistics.median(r["times_ms"])
        r["min_ms"] = min(r["times_ms"])
    for r in pooled.values():
        fp = pooled[(r["case"], "fp32", r["threads"])]["median_ms"]
        r["ratio_fp32"] = r["median_ms"] / fp
        twin = FP_TWIN.get(r["variant"].split("@")[0]) if r["kind"] == "model" else None
        tw = pooled.get((r["case"], twin, r["threads"]))
        r["ratio_twin"] = r["median_ms"] / tw["median_ms"] if tw else None
    return list(pooled.values())


def load_baseline(src: str) -> None:
    """Import the ``bidense`` package under ``src`` as ``bidense_baseline`` (a renamed copy in a
    temporary directory, its absolute ``bidense`` imports rewritten), next to the current one."""
    if BASELINE_PKG in sys.modules:
        return
    pkg = Path(src) / "bidense"
    if not (pkg / "__init__.py").is_file():
        raise ValueError(f"{src}: no bidense package (expected {pkg}/__init__.py)")
    dest = Path(tempfile.mkdtemp(prefix="bench_baseline_")) / BASELINE_PKG
    atexit.register(shutil.rmtree, dest.parent, True)
    shutil.copytree(pkg, dest, ignore=shutil.ignore_patterns("__pycache__"))
    pattern = re.compile(r"\b(from|import) bidense\b")
    for f in dest.rglob("*.py"):
        text = pattern.sub(lambda m: f"{m.group(1)} {BASELINE_PKG}", f.read_text())
        text = text.replace('import_module("bidense.', f'import_module("{BASELINE_PKG}.')
        f.write_text(text)
    sys.path.insert(0, str(dest.parent))
    for sub in ("", ".nn", ".models"):  # import now: the copy is removed at exit
        importlib.import_module(BASELINE_PKG + sub)


def format_before_after(rows: list[dict]) -> str:
    """Table of each ``X@before`` variant against ``X`` (same run, same threads)."""
    idx = {(r["case"], r["variant"], r["threads"]): r for r in rows}
    head = f"{'case':<36} {'variant':<9} thr  before ms  after ms  speed-up  /fp32 before->after"
    lines = [head, "-" * len(head)]
    for r in rows:
        if not r["variant"].endswith("@before"):
            continue
        name = r["variant"].removesuffix("@before")
        a = idx.get((r["case"], name, r["threads"]))
        if a is None:
            continue
        lines.append(
            f"{r['case']:<36} {name:<9} {r['threads']:>3} {r['median_ms']:10.1f} "
            f"{a['median_ms']:9.1f} {r['median_ms'] / a['median_ms']:8.2f}x "
            f"{r['ratio_fp32']:5.2f} -> {a['ratio_fp32']:.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Parse arguments and run the benchmark (or the before/after comparison)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    p.add_argument("--no-layers", action="store_true", help="skip the single-layer cases")
    p.add_argument("--models", nargs="*", default=["upernet_convnext_atto"])
    p.add_argument("--methods", nargs="+", default=list(MODEL_METHODS))
    p.add_argument("--layer-batch", type=int, default=8)
    p.add_argument("--layer-hw", type=int, nargs=2, default=[24, 32])
    p.add_argument("--batch", type=int, default=8, help="model batch size")
    p.add_argument("--hw", type=int, nargs=2, default=[64, 64], help="model input H W")
    p.add_argument("--repeats", type=int, default=7, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--min-time", type=float, default=0.0, help="minimum seconds per case")
    p.add_argument("--json", default="train_step_bench.json", help="output JSON ('' = none)")
    p.add_argument("--baseline-src", default=None, help="src dir of the 'before' code")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    return run_train_step_benchmark(
        threads=tuple(a.threads),
        layers=not a.no_layers,
        models=tuple(a.models),
        methods=tuple(a.methods),
        layer_batch=a.layer_batch,
        layer_hw=tuple(a.layer_hw),
        model_batch=a.batch,
        model_hw=tuple(a.hw),
        repeats=a.repeats,
        warmup=a.warmup,
        min_time=a.min_time,
        json_path=a.json or None,
        verbose=not a.quiet,
        baseline_src=a.baseline_src,
    )


if __name__ == "__main__":
    main()
