"""Layer benchmark: bidense binary conv versus PyTorch fp32, 1 and 2 threads, side by side.

    python benchmarks/bench_binary_conv.py --threads 1 2 --repeats 30 --json layer_bench.json

Prints CPU features, per ISA side (native; kernels and PyTorch limited to AVX2) the kernel path
and PyTorch's CPU capability, a min/median table and the ratios of the sides side by side;
writes JSON. The logic lives in ``bidense.benchmark.layers.run_layer_benchmark`` so that the
``bidense benchmark`` CLI can call it too.
"""

from __future__ import annotations

import argparse

from bidense.benchmark import run_layer_benchmark


def main(argv: list[str] | None = None) -> dict:
    """Parse arguments and run the layer benchmark."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=30, help="minimum runs per configuration")
    p.add_argument("--min-time", type=float, default=1.0, help="minimum seconds per config")
    p.add_argument("--backend", default=None, help="force a kernel path (default: fastest)")
    p.add_argument("--json", default="layer_bench.json", help="output JSON path ('' = none)")
    a = p.parse_args(argv)
    return run_layer_benchmark(tuple(a.threads), a.repeats, a.json or None,
                               min_time=a.min_time, backend=a.backend)


if __name__ == "__main__":
    main()
