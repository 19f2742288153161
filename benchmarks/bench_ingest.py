"""What writing to Tiled costs the acquisition, and how soon a second client sees a row.

The same 3D scan (``scan3d``: 121 projections, 1 image of 1.5 s each, 2 darks,
2 flats, binning 4 as in the demo) on the XCT simulator on virtual time (real
IOC subprocess, Channel Access on loopback, frames into SWMR HDF5), with:

(a) no writer;
(b) ``TiledWriter(batch_size=1)`` subscribed on the RunEngine's thread;
(c) the project's ingest (``operando.session.make_ingest``: TiledWriter in a
    process of its own, flushed by time),

each against a ``tiled serve`` subprocess whose catalog is SQLite (+ DuckDB
tables) and then PostgreSQL (catalog and tables, a local cluster started here).

Prints per configuration the wall time of ``RE(scan3d(...))``, the wall cost
per event, the time the writer needed after the plan to drain, the ratio
(c)/(a), and the latency from an event's emission (``time.time()`` in an
``RE`` subscriber) to its row (and its frame) being readable by a second
client, a separate process polling the server (median, 95th percentile, max).
Targets: (c)/(a) <= 1.2; latency <= 2 s.

    .venv/bin/python benchmarks/bench_ingest.py [--projections 121] [--only sqlite|postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

TARGET_RATIO = 1.2
TARGET_LATENCY_S = 2.0


# ------------------------------------------------------------------------- the poller
def poll(uri: str, api_key: str, experiment_id: str, expected: int, out: str) -> int:
    """Second client: wait for the run, then record when each row/frame count is first seen."""
    from tiled.client import from_uri
    from tiled.queries import Key

    client = from_uri(uri, api_key=api_key)
    deadline = time.time() + 600
    run = None
    with open(out, "w") as f:
        while time.time() < deadline:
            try:
                if run is None:
                    found = client["raw"].search(Key("start.experiment_id") == experiment_id)
                    if len(found) == 0:
                        time.sleep(0.05)
                        continue
                    run = found.values().first()
                t = time.time()
                rows = frames = 0
                if "primary" in run:
                    stream = run["primary"].base
                    if "internal" in stream:
                        rows = len(stream["internal"].read(["seq_num"]))
                    if "ct_det_image" in stream:
                        frames = stream["ct_det_image"].shape[0]
                f.write(json.dumps({"t": t, "rows": rows, "frames": frames}) + "\n")
                f.flush()
                if rows >= expected and frames >= expected:
                    return 0
            except Exception as err:  # the server may be busy: keep polling
                f.write(json.dumps({"t": time.time(), "error": repr(err)}) + "\n")
            time.sleep(0.05)
    return 1


def latencies(poll_file: Path, emitted: dict[int, float], key: str) -> list[float]:
    """Seconds from each primary event's emission to the first poll that saw it."""
    first_seen: dict[int, float] = {}
    for line in poll_file.read_text().splitlines():
        rec = json.loads(line)
        n = rec.get(key, 0)
        for seq in range(1, n + 1):
            first_seen.setdefault(seq, rec["t"])
    return [first_seen[s] - emitted[s] for s in sorted(emitted) if s in first_seen]


# ------------------------------------------------------------------------- the scan
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projections", type=int, default=121)
    parser.add_argument("--binning", type=int, default=4)
    parser.add_argument("--only", choices=("sqlite", "postgres"))
    parser.add_argument("--poll", nargs=5, metavar=("URI", "KEY", "EID", "N", "OUT"))
    args = parser.parse_args()
    if args.poll:
        uri, key, eid, n, out = args.poll
        return poll(uri, key, eid, int(n), out)

    from operando import epics_env

    epics_env.use_loopback_if_unset()
    import ophyd

    ophyd.set_cl("caproto")
    # as the jobs do: a busy machine answers Channel Access reads late
    ophyd.signal.EpicsSignalBase.set_defaults(timeout=10.0, connection_timeout=10.0)
    from operando.devices.xct import make_xct_station
    from operando.ioc_process import IOCProcess, random_prefix
    from operando.plans.xct import scan3d
    from operando.postgres import PostgresCluster
    from operando.session import make_ingest, make_run_engine, make_tiled_writer
    from operando.tiled_server import DataLayout, TiledServer

    scan = dict(
        num_projections=args.projections,
        exposure=1.5,
        images_per_projection=1,
        num_darks=2,
        num_flats=2,
        sample_every=60.0,
    )
    load0 = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="operando-bench-ingest-"))
    os.chmod(root, 0o755)  # PostgreSQL's unprivileged user must reach its cluster below
    frames = root / "frames"
    frames.mkdir()
    ioc = IOCProcess(
        "operando.iocs.xct",
        random_prefix("B"),
        args=["--time-scale", "virtual", "--binning", args.binning, "--data-dir", frames],
        log_path=root / "ioc.log",
    ).start()
    pg = station = None
    results = []
    try:
        station = make_xct_station(ioc.prefix, write_path=frames, timeout=15)
        RE = make_run_engine(loop=asyncio.new_event_loop(), clock=station.clock)
        emitted: dict[int, float] = {}
        counts = {"events": 0}
        primary = set()

        def clock_events(name, doc):
            if name == "descriptor" and doc["name"] == "primary":
                primary.add(doc["uid"])
            elif name == "event":
                counts["events"] += 1
                if doc["descriptor"] in primary:
                    emitted[doc["seq_num"]] = time.time()

        RE.subscribe(clock_events)
        RE(scan3d(station, experiment_id="warm-up", **dict(scan, num_projections=3)))

        backends = ["sqlite", "postgres"] if args.only is None else [args.only]
        for backend in backends:
            if backend == "postgres":
                pg = PostgresCluster(root / "postgres").start()
                layout = DataLayout.at(root / "pg-data", catalog_uri=pg.catalog_uri)
                server = TiledServer(layout, readable=[frames], env=pg.env, startup_timeout=300)
            else:
                layout = DataLayout.at(root / "sqlite-data")
                server = TiledServer(layout, readable=[frames], startup_timeout=300)
            with server:
                client = server.client()
                for mode in ("a", "b", "c"):
                    emitted.clear()
                    counts["events"] = 0
                    primary.clear()
                    eid = f"bench-{backend}-{mode}-{time.time_ns()}"
                    token = ingest = None
                    if mode == "b":
                        token = RE.subscribe(make_tiled_writer(client, batch_size=1))
                    elif mode == "c":
                        ingest = make_ingest(client, backup_directory=layout.backup)
                        ingest.wait_ready()  # the writer's process started (once per session)
                        token = RE.subscribe(ingest)
                    poller = None
                    poll_file = root / f"poll-{backend}-{mode}.jsonl"
                    if mode != "a":
                        poller = subprocess.Popen(
                            [
                                sys.executable,
                                __file__,
                                "--poll",
                                server.uri,
                                server.api_key,
                                eid,
                                str(args.projections),
                                str(poll_file),
                            ],
                            stdin=subprocess.DEVNULL,
                        )
                        time.sleep(2.0)  # the poller's imports, before the run starts
                    t0 = time.perf_counter()
                    RE(scan3d(station, experiment_id=eid, **scan))
                    wall = time.perf_counter() - t0
                    drain = 0.0
                    if ingest is not None:
                        t1 = time.perf_counter()
                        left = ingest.shutdown()
                        drain = time.perf_counter() - t1
                        assert not left, left
                    if token is not None:
                        RE.unsubscribe(token)
                    lat_rows = lat_frames = []
                    if poller is not None:
                        try:
                            poller.wait(timeout=120)
                        except subprocess.TimeoutExpired:
                            poller.kill()
                            poller.wait()
                        lat_rows = latencies(poll_file, emitted, "rows")
                        lat_frames = latencies(poll_file, emitted, "frames")
                    results.append(
                        dict(
                            backend=backend,
                            mode=mode,
                            events=counts["events"],
                            wall=wall,
                            per_event_ms=1000 * wall / counts["events"],
                            drain=drain,
                            rows=lat_rows,
                            frames=lat_frames,
                        )
                    )
                    print(_line(results[-1]), flush=True)
    finally:
        if station is not None:
            for dev in station.devices().values():
                dev.destroy()
        ioc.stop()
        if pg is not None:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)

    print()
    print("(a) no writer; (b) TiledWriter(batch_size=1) on the RunEngine thread; (c) the ingest")
    print(f"load average at the start {load0:.1f}, at the end {os.getloadavg()[0]:.1f}")
    ok = True
    for backend in dict.fromkeys(r["backend"] for r in results):
        by = {r["mode"]: r for r in results if r["backend"] == backend}
        ratio = by["c"]["per_event_ms"] / by["a"]["per_event_ms"]
        lat = max(by["c"]["rows"] + by["c"]["frames"] or [float("nan")])
        print(
            f"{backend:8s} (c)/(a) = {ratio:.2f} (target <= {TARGET_RATIO}); "
            f"(b)/(a) = {by['b']['per_event_ms'] / by['a']['per_event_ms']:.2f}; "
            f"(c) latency max {lat:.2f} s (target <= {TARGET_LATENCY_S} s)"
        )
        ok &= ratio <= TARGET_RATIO and lat <= TARGET_LATENCY_S
    print("targets met" if ok else "targets NOT met")
    return 0


def _stats(values: list[float]) -> str:
    if not values:
        return "-"
    v = sorted(values)
    p95 = v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))]
    return f"median {statistics.median(v):.2f} p95 {p95:.2f} max {v[-1]:.2f} s (n={len(v)})"


def _line(r: dict) -> str:
    return (
        f"{r['backend']:8s} ({r['mode']}) {r['events']:4d} events in {r['wall']:6.2f} s = "
        f"{r['per_event_ms']:6.1f} ms/event; drain after plan {r['drain']:.2f} s; "
        f"row latency {_stats(r['rows'])}; frame latency {_stats(r['frames'])}"
    )


if __name__ == "__main__":
    sys.exit(main())
