"""What each integration test file costs: wall time and CPU, each file alone.

Runs every ``tests/integration/test_*.py`` (or the files named) in a pytest
process of its own, one after the other, and measures its wall time and the
CPU (user + system) of its whole process tree: pytest, and the IOC, Tiled,
Redis, PostgreSQL, queue-server and worker subprocesses it starts and waits
for (``os.wait4``'s resource usage of the child, which includes every
descendant that was waited for). Prints one line per file, sorted by CPU, the
share of the total, and what the total means for the suite on this machine: on
2 cores the suite is CPU-bound, so its wall time cannot be below CPU / cores.
Last, the order for :data:`tests.integration.conftest.SLOWEST_FIRST` the
measurement suggests (the files above ``--first`` s of CPU, slowest first) and
where the one in the conftest differs.

    .venv/bin/python benchmarks/bench_suite.py [FILE ...] [--first 45] [--unit]

``--unit`` also times ``tests/unit`` (one process). Expect about the suite's
CPU time in wall time (some 30 min on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INTEGRATION = ROOT / "tests" / "integration"


def measure(path: Path) -> dict:
    """One pytest process on ``path``: wall s, tree CPU s, exit code, last line."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out = proc.stdout.read()  # until the process tree closes the pipe
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    wall = time.monotonic() - t0
    lines = [ln for ln in out.splitlines() if ln.strip()]
    return {
        "file": path.name,
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rc": proc.returncode,
        "summary": lines[-1] if lines else "",
        "tail": lines[-60:],
    }


def conftest_order() -> tuple[str, ...]:
    text = (INTEGRATION / "conftest.py").read_text()
    start = text.index("SLOWEST_FIRST = (")
    block = text[start : text.index(")", start)]
    return tuple(part.strip().strip('",') for part in block.splitlines()[1:] if part.strip())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="test files (default: every integration file)")
    ap.add_argument("--first", type=float, default=45.0, help="CPU s above which a file is listed")
    ap.add_argument("--unit", action="store_true", help="also time tests/unit")
    args = ap.parse_args(argv)
    files = [Path(f).resolve() for f in args.files] or sorted(INTEGRATION.glob("test_*.py"))
    cores = os.cpu_count() or 1
    rows = []
    for path in files:
        row = measure(path)
        rows.append(row)
        print(
            f"{row['file']:34s} wall {row['wall']:7.1f} s  cpu {row['cpu']:7.1f} s"
            f"  rc {row['rc']}  {row['summary']}",
            flush=True,
        )
    if args.unit:
        unit = measure(ROOT / "tests" / "unit")
        print(
            f"{'tests/unit':34s} wall {unit['wall']:7.1f} s  cpu {unit['cpu']:7.1f} s", flush=True
        )
    total_cpu = sum(r["cpu"] for r in rows)
    total_wall = sum(r["wall"] for r in rows)
    print(f"\n{'file':34s} {'cpu s':>8s} {'share':>6s} {'wall s':>8s} {'cpu/wall':>8s}")
    for r in sorted(rows, key=lambda r: -r["cpu"]):
        print(
            f"{r['file']:34s} {r['cpu']:8.1f} {100 * r['cpu'] / total_cpu:5.1f}% "
            f"{r['wall']:8.1f} {r['cpu'] / r['wall']:8.2f}"
        )
    print(
        f"\ntotal: cpu {total_cpu:.0f} s, wall {total_wall:.0f} s one file at a time; "
        f"on {cores} cores the integration tier needs at least {total_cpu / cores / 60:.1f} min"
    )
    failed = [r["file"] for r in rows if r["rc"] != 0]
    if failed:
        print(f"failed: {', '.join(failed)}")
        for r in rows:
            if r["rc"] != 0:
                print(f"\n--- {r['file']}: the end of its output", *r["tail"], sep="\n")
    if not args.files:
        suggested = [
            r["file"] for r in sorted(rows, key=lambda r: -r["cpu"]) if r["cpu"] > args.first
        ]
        current = conftest_order()
        print("\nSLOWEST_FIRST suggested (cpu >", args.first, "s):")
        for name in suggested:
            mark = "" if name in current else "   (not in the conftest's list)"
            print(f'    "{name}",{mark}')
        missing = [name for name in current if name not in suggested]
        if missing:
            print(f"in the conftest's list, below {args.first} s: {', '.join(missing)}")
        print("the conftest's order is", "the same" if list(current) == suggested else "different")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
