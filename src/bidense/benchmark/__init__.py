"""Benchmarks behind ``bidense benchmark``: packed runtime vs PyTorch, layers and whole models.

``layers`` times one packed binary conv against PyTorch fp32 (torch optional), ``models`` whole
exported models against PyTorch fp32, onnxruntime fp32 and fake-binary with where the runtime's
time goes (``breakdown``), both on every ISA side (native, and limited to AVX2: ``common``), each
engine in a fresh process (``worker``); ``suite`` runs them for the CLI. Sits above every other
package (it builds models, profiles them, exports and runs them); the runtime itself never
imports it. The scripts in ``benchmarks/`` are thin wrappers.
"""

from bidense.benchmark.layers import run_layer_benchmark
from bidense.benchmark.models import run_model_benchmark
from bidense.benchmark.suite import run_benchmark_cli

__all__ = ["run_benchmark_cli", "run_layer_benchmark", "run_model_benchmark"]
