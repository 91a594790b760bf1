"""One engine timed in a fresh interpreter: ``python -m bidense.benchmark.worker SPEC_JSON``.

The benchmarks start one such process per engine, thread count and ISA side
(:func:`bidense.benchmark.common.run_worker`), so that each engine is measured as a user runs
it: its own thread pools, the ISA limits of its environment read at load time, its whole-process
peak RSS (``VmHWM``, which starts afresh at ``exec``; ``ru_maxrss`` would inherit the parent's
peak), and the ``runtime`` engine without torch in the process. It prints one JSON line.

Engines (:data:`ENGINES`, ``spec["engine"]``):

* ``runtime``: the packed ``.bdn`` runtime (``spec["path"]``), with the time breakdown of its
  median call (:mod:`bidense.benchmark.breakdown`) and that call's per-node report;
* ``torch``: ``create_model(spec["model"], method=..., dab_scale=...)`` in PyTorch, eval mode,
  ``torch.inference_mode``;
* ``onnxruntime``: an ``.onnx`` file on onnxruntime's CPU provider, intra-op threads = the
  thread count, one inter-op thread, sequential execution;
* ``torch_layers``: ``F.conv2d`` on channels-last tensors for the layer benchmark's shapes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from bidense.benchmark.breakdown import time_breakdown
from bidense.benchmark.common import time_call
from bidense.benchmark.layers import layer_tensors

__all__ = ["ENGINES", "main"]


def _hwm_kib() -> int:
    """This process's peak resident set (``VmHWM``), KiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    import resource  # no /proc: the best available figure

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _input(spec: dict[str, Any]) -> np.ndarray:
    size = int(spec["size"])
    return np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)


def _timed(run: Callable[[], object], spec: dict[str, Any],
           after: Callable[[float], None] | None = None) -> dict[str, Any]:
    loaded = _hwm_kib()
    out: dict[str, Any] = time_call(run, int(spec["repeats"]), float(spec["min_time"]),
                                    max_runs=10 * int(spec["repeats"]), after=after)
    out.update(peak_rss_kib=_hwm_kib(), loaded_rss_kib=loaded)
    return out


def _runtime(spec: dict[str, Any]) -> dict[str, Any]:
    from bidense.runtime import Runtime, kernels

    rt = Runtime(spec["path"], threads=int(spec["threads"]))
    x = _input(spec)
    calls: list[tuple[float, list[dict[str, Any]]]] = []
    out = _timed(lambda: rt(x), spec, after=lambda ms: calls.append((ms, rt.report())))
    wall, report = sorted(calls, key=lambda c: c[0])[len(calls) // 2]  # the median call
    out.update(kernel=kernels.backend(), breakdown_wall_ms=wall,
               time_breakdown=time_breakdown(report, wall), nodes=report)
    return out


def _torch(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from bidense.models import create_model

    torch.set_num_threads(int(spec["threads"]))
    m = create_model(spec["model"], task="seg", num_classes=19, method=spec["method"],
                     dab_scale=spec.get("dab_scale")).eval()
    xt = torch.from_numpy(_input(spec))

    def run() -> None:
        with torch.inference_mode():
            m(xt)

    out = _timed(run, spec)
    out.update(cpu_capability=torch.backends.cpu.get_cpu_capability(), torch=torch.__version__)
    return out


def _onnxruntime(spec: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(spec["threads"])
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(spec["path"], opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: _input(spec)}
    out = _timed(lambda: sess.run(None, feed), spec)
    out.update(onnxruntime=ort.__version__)
    return out


def _torch_layers(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    rows = []
    for name, cin, cout, hw, k, s in spec["shapes"]:
        x, w, _, bias = layer_tensors(cin, cout, hw, k)
        xt = torch.from_numpy(x).permute(0, 3, 1, 2)  # NCHW view of NHWC memory
        wt = torch.from_numpy(w).contiguous(memory_format=torch.channels_last)
        bt = torch.from_numpy(bias)

        def fp32(xt=xt, wt=wt, bt=bt, s=s, pad=k // 2):
            with torch.inference_mode():
                return F.conv2d(xt, wt, bt, stride=s, padding=pad)

        for t in spec["threads"]:
            torch.set_num_threads(int(t))
            rows.append({"layer": name, "threads": int(t),
                         "fp32": time_call(fp32, int(spec["repeats"]), float(spec["min_time"]))})
    return {"rows": rows, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "peak_rss_kib": _hwm_kib()}


#: engine name -> ``spec -> result``
ENGINES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "runtime": _runtime, "torch": _torch, "onnxruntime": _onnxruntime,
    "torch_layers": _torch_layers,
}


def main(argv: list[str] | None = None) -> None:
    """Run the engine of the JSON spec in ``argv[0]`` and print its result as one JSON line."""
    spec = json.loads((sys.argv[1:] if argv is None else argv)[0])
    out = ENGINES[spec["engine"]](spec)
    out["torch_imported"] = "torch" in sys.modules
    print(json.dumps(out))


if __name__ == "__main__":
    main()
