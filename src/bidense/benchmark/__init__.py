"""Benchmarks behind ``bidense benchmark``: packed runtime vs PyTorch, layers and whole models.

Sits above every other package (it builds models, profiles them, exports and runs them); the
runtime itself never imports it. The scripts in ``benchmarks/`` are thin wrappers.
"""
