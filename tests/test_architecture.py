"""The layer rules of docs/architecture.md, checked on the source and on a torch-free process.

Every ``import`` in ``src/bidense`` (module level or inside a function, absolute or relative) is
read with :mod:`ast` and mapped to the package it reaches. A lower layer importing a higher one,
two packages importing each other, a cycle between the modules of one package, or the runtime
importing anything but the standard library and numpy fails here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bidense"
FIXTURES = Path(__file__).parent / "fixtures" / "bdn_v1"

#: package -> the bidense packages it may import (docs/architecture.md, "The layers")
ALLOWED: dict[str, set[str]] = {
    "_atomic": set(),
    "_system": set(),
    "tasks": set(),
    "runtime": {"_atomic", "_system"},
    "binarize": set(),
    "nn": {"binarize"},
    "models": {"nn", "binarize", "tasks"},
    "profile": {"models", "nn", "binarize"},
    "data": {"tasks", "_atomic"},
    "metrics": {"tasks"},
    "losses": {"tasks"},
    "export": {"runtime", "models", "nn", "binarize", "tasks", "_atomic"},
    "engine": {"models", "nn", "binarize", "profile", "data", "metrics", "losses", "tasks",
               "_atomic", "_system"},
    "benchmark": {"export", "runtime", "models", "nn", "binarize", "profile", "data", "metrics",
                  "tasks", "_atomic", "_system", "engine"},
    "serve": {"engine", "export", "runtime", "models", "nn", "binarize", "data", "metrics",
              "tasks", "_atomic", "_system"},
    "cli": {"engine", "export", "runtime", "benchmark", "serve", "models", "nn", "binarize",
            "profile", "data", "metrics", "losses", "tasks", "_atomic", "_system"},
}
#: third-party modules the runtime may import besides the standard library
RUNTIME_THIRD_PARTY = {"numpy"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Absolute names of every module ``path`` imports, with line numbers."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, node.lineno))
            # ``from . import kernels`` / ``from bidense import nn`` import the submodules
            for a in node.names:
                sub = f"{target}.{a.name}"
                if _is_module(sub):
                    out.append((sub, node.lineno))
    return out


def _is_module(name: str) -> bool:
    parts = name.split(".")
    if parts[0] != "bidense":
        return False
    rel = Path(*parts[1:]) if len(parts) > 1 else Path()
    return (SRC / rel).with_suffix(".py").exists() or (SRC / rel / "__init__.py").exists()


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "bidense" or len(parts) == 1:
        return None
    return parts[1]


SOURCES = sorted(SRC.rglob("*.py"))


def test_every_package_has_a_rule():
    found = {_layer(_module_name(p)) for p in SOURCES} - {None}
    assert found <= set(ALLOWED), f"packages without a layer rule: {found - set(ALLOWED)}"


def test_layer_rules_form_no_cycle():
    seen: dict[str, int] = {}

    def visit(p: str, stack: tuple[str, ...]) -> None:
        assert p not in stack, f"layer cycle: {' -> '.join(stack + (p,))}"
        if seen.get(p):
            return
        for q in ALLOWED[p]:
            visit(q, stack + (p,))
        seen[p] = 1

    for p in ALLOWED:
        visit(p, ())


def test_no_lower_layer_imports_a_higher_one():
    bad = []
    for path in SOURCES:
        here = _layer(_module_name(path))
        for target, line in _imports(path):
            there = _layer(target)
            if here is None or there is None or there == here:
                continue
            if there not in ALLOWED[here]:
                bad.append(f"{path.relative_to(SRC.parent)}:{line}: {here} imports {target}")
    assert not bad, "layer violations:\n" + "\n".join(bad)


def test_runtime_imports_only_stdlib_and_numpy():
    allowed = set(sys.stdlib_module_names) | RUNTIME_THIRD_PARTY | {"bidense"}
    bad = []
    for path in (SRC / "runtime").rglob("*.py"):
        for target, line in _imports(path):
            top = target.split(".")[0]
            if top not in allowed:
                bad.append(f"{path.relative_to(SRC.parent)}:{line}: imports {target}")
    assert not bad, "the runtime must stay torch-free:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", sorted(p.name for p in SRC.iterdir() if p.is_dir()
                                           and (p / "__init__.py").exists()))
def test_no_import_cycle_between_modules_of_a_package(package: str):
    """No two modules of one package import each other, directly or round a loop (the package's
    ``__init__``, which re-exports its modules, is left out)."""
    init = f"bidense.{package}"
    modules = {_module_name(p) for p in (SRC / package).rglob("*.py")} - {init}
    graph = {m: {t for t, _ in _imports(_path_of(m)) if t in modules and t != m}
             for m in modules}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        if state.get(m) == 2:
            return
        assert state.get(m) != 1, f"module cycle: {' -> '.join(stack + [m])}"
        state[m] = 1
        for t in sorted(graph[m]):
            visit(t, stack + [m])
        state[m] = 2

    for m in sorted(modules):
        visit(m, [])


def _path_of(module: str) -> Path:
    rel = Path(*module.split(".")[1:])
    f = SRC / rel.with_suffix(".py")
    return f if f.exists() else SRC / rel / "__init__.py"


def test_runtime_runs_a_model_with_torch_unimportable():
    code = textwrap.dedent(f"""
        import sys
        class _NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
                return None
        sys.meta_path.insert(0, _NoTorch())
        import numpy as np
        from bidense.runtime import Runtime
        fx = {str(FIXTURES)!r}
        x = np.load(fx + "/input.npy")
        y = Runtime(fx + "/upernet_convnext_micro_bidense.bdn", threads=1)(x)
        ref = np.load(fx + "/upernet_convnext_micro_bidense_out.npy")
        assert np.array_equal(y, ref), "different output"
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("ok", y.shape)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ok")
