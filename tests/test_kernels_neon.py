"""The aarch64 NEON conv path, bit-exact against the portable C path under user-mode emulation.

``tools/neon_check.c`` includes ``csrc/bkernels.c`` without its CPython glue
(``-DBIDENSE_NO_PYTHON``) and runs the dense conv driver on a fixed grid of random cases
(channels 1, 63, 64, 65, 130, 256; 1x1 and 3x3 kernels, stride 1 and 2, zero and one padding,
dilation 2, a 5x5 and a 3x1; every fused epilogue term: per-channel or per-sample scale, bias,
bypass, PReLU with and without its pre/post biases) on the portable path and on every other path
the CPU supports, and reports any output that differs in a single bit. It is cross-compiled with
``aarch64-linux-gnu-gcc`` and run under ``qemu-aarch64``, where the other path is ``neon``; a
native build of the same driver must give the same portable outputs (hashes), which ties the
aarch64 results to the x86 ones that ``tests/test_deploy_kernels.py`` checks against numpy.

Without the cross tools the tests skip, except under ``CI=true`` on a machine with ``apt-get``,
where they fail: CI installs them with ``apt-get install -y gcc-aarch64-linux-gnu qemu-user``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tools" / "neon_check.c"
CROSS_CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"
SYSROOT = Path("/usr/aarch64-linux-gnu")
APT_LINE = "apt-get update && apt-get install -y gcc-aarch64-linux-gnu qemu-user"
#: setup.py's compile flags (the float epilogue must round exactly as in the extension), plus
#: the switch that leaves out the CPython glue.
CFLAGS = ["-O3", "-std=c11", "-fno-strict-aliasing", "-ffp-contract=off",
          "-DBIDENSE_NO_PYTHON", f"-I{REPO / 'csrc'}"]
#: threads for the non-portable paths (the portable reference runs on one)
THREADS = "2"
TIMEOUT_S = 300


def _missing_cross_tools() -> str | None:
    missing = [t for t in (CROSS_CC, QEMU) if shutil.which(t) is None]
    if not SYSROOT.is_dir():
        missing.append(str(SYSROOT))
    return ", ".join(missing) or None


def _require_cross_tools() -> None:
    missing = _missing_cross_tools()
    if missing is None:
        return
    reason = f"the NEON check needs {missing} (Debian: {APT_LINE})"
    if os.environ.get("CI") == "true" and shutil.which("apt-get"):
        pytest.fail(f"CI must run the NEON check: {reason}")
    pytest.skip(reason)


def _build(cc: str, out: Path) -> Path:
    """Compile the driver with OpenMP, or without it where the toolchain has none."""
    errors = []
    for openmp in (["-fopenmp"], []):
        cmd = [cc, *CFLAGS, *openmp, str(DRIVER), "-o", str(out), "-lm"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        if res.returncode == 0:
            return out
        errors.append(f"{' '.join(cmd)}:\n{res.stderr[-2000:]}")
    pytest.fail("building tools/neon_check.c failed:\n" + "\n".join(errors))


def _run(cmd: list[str]) -> dict:
    """Run a driver build; its report as {"paths", "hashes" (case -> hash), "mismatches", ...}."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    res = subprocess.run([*cmd, THREADS], capture_output=True, text=True, env=env,
                         timeout=TIMEOUT_S)
    lines = [ln.split() for ln in res.stdout.splitlines()]
    paths = next((ln[1:] for ln in lines if ln[0] == "paths"), [])
    done = next((ln[1:] for ln in lines if ln[0] == "done"), None)
    return {
        "rc": res.returncode,
        "paths": paths,
        "hashes": {ln[1]: ln[2] for ln in lines if ln[0] == "case"},
        "mismatches": [" ".join(ln[1:]) for ln in lines if ln[0] == "mismatch"],
        "cases": int(done[0]) if done else 0,
        "stderr": res.stderr[-2000:],
    }


@pytest.fixture(scope="module")
def aarch64_report(tmp_path_factory) -> dict:
    _require_cross_tools()
    exe = _build(CROSS_CC, tmp_path_factory.mktemp("neon") / "neon_check")
    return _run([QEMU, "-L", str(SYSROOT), str(exe)])


def test_neon_path_matches_portable_under_qemu(aarch64_report):
    r = aarch64_report
    assert r["paths"] == ["portable", "neon"], r
    assert not r["mismatches"], "neon differs from portable:\n" + "\n".join(r["mismatches"][:20])
    assert r["rc"] == 0 and r["cases"] > 1000, r["stderr"] or r
    assert len(r["hashes"]) == r["cases"]


def test_portable_outputs_match_across_architectures(aarch64_report, tmp_path):
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        pytest.skip("no native C compiler to build tools/neon_check.c for this machine")
    native = _run([str(_build(cc, tmp_path / "neon_check"))])
    # the native build also checks this CPU's own SIMD paths against its portable one
    assert not native["mismatches"], "\n".join(native["mismatches"][:20])
    assert native["rc"] == 0, native["stderr"] or native
    differ = [k for k, h in aarch64_report["hashes"].items() if native["hashes"].get(k) != h]
    assert native["hashes"].keys() == aarch64_report["hashes"].keys()
    assert not differ, f"portable outputs differ between this machine and aarch64: {differ[:10]}"
