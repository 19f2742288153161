"""Rehearsal on virtual time: the whole default experiments, as fast as the machine allows.

Runs, each with its own simulators and the embedded Tiled in a temporary folder,
reduced live (the same jobs as ``operando rehearse``):

- XCT: the default seed, cycles until the short circuit (cycle 11), then the
  post-mortem scans; 61 projections per scan, binning 4;
- SAXS/WAXS: one C/20 cycle on the default 5 x 4 grid (synchrotron set-up), a
  raster every half hour of cell time (``--raster-every``; back to back, as the
  paper, a raster takes ~3 cell minutes and the cycle ~600 rasters).

Prints for each: cell hours simulated, wall seconds, the cell-time/wall-time
ratio, and the share of the wall time spent in acquisition, Tiled writing and
live reduction. Target on a 2-core machine: the whole XCT experiment in
<= 10 min of wall time.

    .venv/bin/python benchmarks/bench_rehearsal.py [--only xct|saxs] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from operando.cli import rehearsal_summary  # noqa: E402
from operando.jobs import TiledTarget, run_saxs, run_xct  # noqa: E402
from operando.tiled_server import DataLayout  # noqa: E402

XCT_TARGET_S = 600.0
SAXS_RASTER_EVERY = 1800.0  # cell s


def rehearse_xct(root: Path):
    target = TiledTarget(None, None, DataLayout.at(root))
    return run_xct(
        target=target,
        cycles=20,
        time_scale="virtual",
        projections=61,
        binning=4,
        postmortem_projections=61,
        progress=False,
        figures_dir=root / "figures",
        experiment_id="bench-xct",
    )


def rehearse_saxs(root: Path):
    target = TiledTarget(None, None, DataLayout.at(root))
    return run_saxs(
        target=target,
        beamline="synchrotron",
        cycles=1,
        time_scale="virtual",
        shape=(4, 5),
        raster_every=SAXS_RASTER_EVERY,
        progress=False,
        figures_dir=root / "figures",
        experiment_id="bench-saxs",
    )


def _print(name: str, report) -> None:
    print(f"\n== {name}: {len(report.runs)} runs")
    for line in rehearsal_summary(report, "virtual"):
        print(line)
    timing = report.extra["timing"]
    print("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timing.items()))
    if report.failure:
        f = report.failure
        print(f"  failure: cycle {f['cycle']} at {f['time_s'] / 3600:.2f} h of cell time")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("xct", "saxs"))
    parser.add_argument("--keep", help="keep the data under this folder")
    args = parser.parse_args(argv)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-rehearsal-"))
    try:
        if args.only in (None, "xct"):
            report = rehearse_xct(root / "xct")
            _print("XCT, default seed, 61 projections, binning 4", report)
            print(
                f"  target: whole experiment <= {XCT_TARGET_S:.0f} s wall: "
                f"{report.wall_s:.0f} s ({report.wall_s / XCT_TARGET_S:.2f} of the target)"
            )
        if args.only in (None, "saxs"):
            report = rehearse_saxs(root / "saxs")
            _print("SAXS/WAXS, one C/20 cycle, 5 x 4 grid, a raster every 30 min", report)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\npeak RSS of this process: {rss:.0f} MB")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
