"""The C heap of a long-running process: few malloc arenas, big blocks given back.

glibc gives each thread that allocates its own heap ("arena"), up to eight per
core. A RunEngine session has dozens of threads (ophyd's dispatchers,
Channel Access, the RunEngine's loop, the reduction workers, thread pools):
freed memory then stays scattered over many arenas that ``malloc_trim``
cannot give back, and the process grows by several MB per protocol cycle
although what it holds does not (``benchmarks/bench_faults.py``, faultless:
7.6 MB per cycle with the default arenas, 3.6 MB with two; ``docs/faults.md``).

Big blocks (a figure's pixel buffer, a reconstructed volume, a frame stack)
are served by ``mmap`` and unmapped when freed, but only above a threshold that
glibc raises, up to 32 MB, each time it frees such a block: after the first
10 MB figure, blocks of 10 MB come from the heap, where the small allocations
made in between pin them. The live figures grow with the experiment (one panel
per chosen scan), so the process grew by each new size.

:func:`configure_malloc` caps the arenas (:func:`limit_malloc_arenas`,
``mallopt(M_ARENA_MAX, 2)``) and fixes the threshold at 1 MiB
(:func:`fix_mmap_threshold`, ``mallopt(M_MMAP_THRESHOLD, …)``, which turns the
raising off). Call it first thing, before the threads start: the command line,
the IPython profile (so the queue server's worker), the simulators and the
soak do. ``MALLOC_ARENA_MAX`` or ``MALLOC_MMAP_THRESHOLD_`` in the environment
(read by glibc at start) win.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = [
    "DEFAULT_ARENAS",
    "MMAP_THRESHOLD",
    "configure_malloc",
    "fix_mmap_threshold",
    "limit_malloc_arenas",
]

#: arenas of a session's process (glibc's default: 8 per core)
DEFAULT_ARENAS = 2
#: blocks from this size on get pages of their own, given back when freed
MMAP_THRESHOLD = 1 << 20
_M_ARENA_MAX = -8  # malloc.h
_M_MMAP_THRESHOLD = -3
#: glibc's largest mmap threshold on 64-bit (HEAP_MAX_SIZE / 2)
_MAX_MMAP_THRESHOLD = 32 << 20


def _mallopt():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def limit_malloc_arenas(n: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``n``; True if done. A no-op (False) where
    the C library is not glibc, or when ``MALLOC_ARENA_MAX`` is set already."""
    if n < 1:
        raise ValueError(f"at least one malloc arena, not {n}")
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(_M_ARENA_MAX, int(n)))


def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD) -> bool:
    """Serve blocks of ``nbytes`` and more by ``mmap`` from now on, whatever was
    freed before (glibc's raising of the threshold off); True if done. A no-op
    (False) off glibc or when ``MALLOC_MMAP_THRESHOLD_`` is set."""
    if not 0 < nbytes <= _MAX_MMAP_THRESHOLD:
        raise ValueError(f"mmap threshold in (0, 32 MiB], not {nbytes}")
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, int(nbytes)))


def configure_malloc() -> None:
    """The heap of a process that runs for days: :func:`limit_malloc_arenas` and
    :func:`fix_mmap_threshold` with their defaults."""
    limit_malloc_arenas()
    fix_mmap_threshold()
