"""Build hook: setuptools reads all metadata from pyproject.toml.

It adds one optional C extension, ``bidense.runtime._bkernels`` (binary XOR-popcount kernels,
plain CPython C API, no numpy headers, no torch). The extension is optional: if it cannot be
compiled (no C compiler, no OpenMP, an exotic platform) the install still succeeds with a
warning and ``bidense.runtime.kernels`` falls back to its pure-numpy path.

Flags: ``-O3`` and OpenMP, never ``-march=native``; the AVX2 / AVX-512 kernels are compiled per
function with ``__attribute__((target(...)))`` and chosen at run time from the CPU's features.
On aarch64 the NEON kernels need no flag (NEON is part of the base ISA).
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_OPTIONAL_NOTE = (
    "bidense: the compiled kernel extension bidense.runtime._bkernels could not be built ({}); "
    "bidense.runtime will use its slower pure-numpy kernels."
)


def _flags(openmp: bool) -> tuple[list[str], list[str]]:
    if sys.platform == "win32":
        return (["/O2"] + (["/openmp"] if openmp else []), [])
    # -ffp-contract=off: the float epilogues must round after every multiply and add, like the
    # numpy path; clang contracts a * b + c into an FMA by default wherever FMA is baseline
    # (aarch64), and gcc does outside ISO C mode.
    compile_args = ["-O3", "-std=c11", "-fno-strict-aliasing", "-ffp-contract=off"]
    link_args: list[str] = []
    if openmp:
        compile_args.append("-fopenmp")
        link_args.append("-fopenmp")
    return compile_args, link_args


class OptionalBuildExt(build_ext):
    """build_ext that tries OpenMP, then no OpenMP, then gives up with a warning."""

    def build_extension(self, ext: Extension) -> None:
        if os.environ.get("BIDENSE_NO_EXT"):
            self.warn(_OPTIONAL_NOTE.format("BIDENSE_NO_EXT is set"))
            return
        errors = []
        for openmp in (True, False):
            ext.extra_compile_args, ext.extra_link_args = _flags(openmp)
            try:
                super().build_extension(ext)
                if not openmp:
                    self.warn("bidense: built _bkernels without OpenMP (single-threaded kernels)")
                return
            except Exception as exc:  # noqa: BLE001 - any compiler/linker failure is optional
                errors.append(f"{'with' if openmp else 'without'} OpenMP: {exc}")
        self.warn(_OPTIONAL_NOTE.format("; ".join(errors)))

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - e.g. no compiler found at all
            self.warn(_OPTIONAL_NOTE.format(exc))

    def copy_extensions_to_source(self) -> None:
        # In editable installs a skipped extension has no built file to copy.
        try:
            super().copy_extensions_to_source()
        except Exception as exc:  # noqa: BLE001
            self.warn(_OPTIONAL_NOTE.format(exc))


setup(
    ext_modules=[
        Extension(
            "bidense.runtime._bkernels",
            sources=["csrc/bkernels.c"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
