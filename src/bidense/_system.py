"""Process-wide system tuning shared by the trainer and the packed runtime. Imports no torch."""

from __future__ import annotations

import os

_MALLOC = {"done": False}


def reuse_heap_memory() -> bool:
    """Ask glibc's malloc to serve large arrays from the heap and to keep freed memory.

    Activations are up to tens of MB; by default glibc maps each such array freshly (or trims
    the heap after freeing it), and the first touch of every page is a kernel page fault that
    zero-fills it: measured 72 -> 62 ms (1 thread) and 49 -> 37 ms (2 threads) on the packed
    runtime for upernet_convnext_atto, and 10-15% of a CPU training step. With
    ``M_MMAP_THRESHOLD = 1 GiB`` and no trimming, memory freed by one call is reused by the next.
    The peak stays the same; the process keeps it until exit. Done once per process, skipped
    when the user configured malloc (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
    ``GLIBC_TUNABLES``) or the C library has no ``mallopt`` (non-glibc).
    """
    if _MALLOC["done"]:
        return False
    _MALLOC["done"] = True
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                                     "GLIBC_TUNABLES")):
        return False
    try:
        import ctypes

        fn = ctypes.CDLL(None).mallopt
        fn.argtypes = [ctypes.c_int, ctypes.c_int]
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(fn(m_mmap_threshold, 1 << 30)) and bool(fn(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False
