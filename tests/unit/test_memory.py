"""``operando.memory.limit_malloc_arenas``: the arenas glibc makes for a
process's threads are capped (counted by glibc's own ``malloc_stats``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from operando.memory import limit_malloc_arenas

_CHILD = """
import ctypes, sys, threading
from operando.memory import limit_malloc_arenas
if sys.argv[1] != "default":
    assert limit_malloc_arenas(int(sys.argv[1]))
hold, go = [], threading.Barrier(8)
def work():
    go.wait()  # all eight allocate at once: each wants an arena of its own
    hold.append([bytearray(4096) for _ in range(2000)])
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL("libc.so.6").malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


def _arenas(limit: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, limit], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return len(re.findall(r"^Arena \d+:", proc.stderr, flags=re.M))


def test_the_threads_of_a_capped_process_share_its_arenas():
    assert _arenas("default") > 2  # glibc's default: one per thread, up to 8 per core
    assert _arenas("2") <= 2
    assert _arenas("1") == 1


def test_an_explicit_environment_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False


def test_at_least_one_arena():
    with pytest.raises(ValueError, match="at least one malloc arena"):
        limit_malloc_arenas(0)


_MMAP_CHILD = """
import ctypes, sys
from operando.memory import fix_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
big = bytearray(8 << 20)  # a figure's pixel buffer: mmapped, then freed
del big
before = libc.mallinfo2().hblks
block = bytearray(2 << 20)
print(libc.mallinfo2().hblks - before)  # 1: mapped (given back when freed); 0: from the heap
"""


def _mapped(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    proc = subprocess.run(
        [sys.executable, "-c", _MMAP_CHILD, mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[-1])


def test_big_blocks_stay_mapped_after_a_bigger_one_was_freed():
    """glibc raises its mmap threshold to the size of a mapped block it frees, so
    later blocks below that come from the heap; with the threshold fixed they
    keep pages of their own."""
    assert _mapped("default") == 0
    assert _mapped("fixed") == 1


def test_the_mmap_threshold_is_bounded(monkeypatch):
    from operando.memory import fix_mmap_threshold

    with pytest.raises(ValueError, match="mmap threshold"):
        fix_mmap_threshold(0)
    with pytest.raises(ValueError, match="mmap threshold"):
        fix_mmap_threshold(64 << 20)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert fix_mmap_threshold() is False
