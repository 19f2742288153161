"""The C heap of a long-running process: few malloc arenas.

glibc gives each thread that allocates its own heap ("arena"), up to eight per
core. A RunEngine session has dozens of threads (ophyd's dispatchers,
Channel Access, the RunEngine's loop, the reduction workers, thread pools):
freed memory then stays scattered over many arenas that ``malloc_trim``
cannot give back, and the process grows by several MB per protocol cycle
although what it holds does not (``benchmarks/bench_faults.py``, faultless:
7.6 MB per cycle with the default arenas, 3.6 MB with two; ``docs/faults.md``).

:func:`limit_malloc_arenas` caps them (``mallopt(M_ARENA_MAX, n)``) for the
arenas made from then on: call it first thing, before the threads start. The
command line, the IPython profile and the queue server's worker call it. An
explicit ``MALLOC_ARENA_MAX`` in the environment (read by glibc at start) wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["DEFAULT_ARENAS", "limit_malloc_arenas"]

#: arenas of a session's process (glibc's default: 8 per core)
DEFAULT_ARENAS = 2
_M_ARENA_MAX = -8  # malloc.h


def limit_malloc_arenas(n: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``n``; True if done. A no-op (False) where
    the C library is not glibc, or when ``MALLOC_ARENA_MAX`` is set already."""
    if n < 1:
        raise ValueError(f"at least one malloc arena, not {n}")
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, int(n)))
