"""Whole-model benchmark: packed bidense runtime vs PyTorch fp32, onnxruntime fp32, fake-binary.

Usage: ``python benchmarks/bench_models.py --what models --threads 1,2 --repeats 10 --json
out.json`` (``--what layers|models|all``). Same code as ``bidense benchmark``; see
``bidense.benchmark.models`` for what is measured (native and AVX2-limited sides, the Amdahl
bound and share of it, peak RSS, where the runtime's time goes, the DAB variants side by side).
"""

from __future__ import annotations

import argparse

from bidense.benchmark import run_benchmark_cli


def main() -> None:
    """Parse the command line and run the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--what", choices=["layers", "models", "all"], default="models")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", default=None)
    run_benchmark_cli(p.parse_args())


if __name__ == "__main__":
    main()
