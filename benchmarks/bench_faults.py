"""Fault soak: the whole default XCT experiment on virtual time, faults injected at random.

The experiment of ``bench_rehearsal.py`` (default seed: cycles until the short
circuit, then the post-mortem scans; 61 projections, binning 4), its simulator
and a ``tiled serve`` subprocess started here, reduced live, with the
suspenders of ``operando.suspenders`` installed, its figures drawn after every
run as ``operando run`` draws them (``--no-figures``: none). A seeded injector thread
picks a fault every ``--every`` wall seconds (on average):

- ``ioc``: the XCT IOC SIGKILLed and restarted on its prefix and port (autosave);
- ``tiled``: the Tiled server stopped, then started again on its port
  (TiledWriter keeps what it refuses in its backup, replayed at the end);
- ``source``: the X-ray source's interlock tripped, reset once the run is suspended;
- ``pause``: the RunEngine paused (deferred, at a checkpoint), resumed a moment later.

Prints the faults injected and survived (the experiment ends with every run
closed), the events emitted against the events in Tiled (after the backups are
replayed) and duplicates, the results reduced, and the process's memory (RSS)
at start, after the warm-up (cycle 2) and at the end, with its growth per cycle
after the warm-up (the slope through the RSS at each cycle's start from cycle 2,
measured after a garbage collection and glibc's ``malloc_trim``, and before it;
goal: <= 1 MB per cycle), and the RSS of the ingest's writer process.

    .venv/bin/python benchmarks/bench_faults.py [--seed N] [--every S] [--keep DIR]
        [--faults ioc,tiled,source,pause] [--cycles N] [--tracemalloc CYCLE] [--census] [--default-arenas]
        [--dynamic-mmap-threshold] [--no-figures]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import gc
import os
import random
import shutil
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from operando import epics_env  # noqa: E402

epics_env.use_loopback_if_unset()

GOAL_MB_PER_CYCLE = 1.0
FAULTS = ("ioc", "tiled", "source", "pause")


def rss_mb(pid: int | str = "self") -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return float("nan")


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``), so
    that the RSS counts what is held, not what the allocator keeps cached."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def array_mb(obj) -> float:
    """MB of the numpy arrays reachable from ``obj`` (dataclasses, dicts, lists),
    each counted once."""
    import dataclasses

    import numpy as np

    seen: set[int] = set()
    total = 0
    todo = [obj]
    while todo:
        o = todo.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            total += o.nbytes
        elif isinstance(o, dict):
            todo.extend(o.values())
        elif isinstance(o, (list, tuple, set)):
            todo.extend(o)
        elif dataclasses.is_dataclass(o) and not isinstance(o, type):
            todo.extend(getattr(o, f.name) for f in dataclasses.fields(o))
        elif hasattr(o, "__dict__") and type(o).__module__.startswith("operando"):
            todo.extend(vars(o).values())
    return total / 1e6


def state_by_field(results: dict) -> collections.Counter:
    """MB of arrays per field of the reduced results (``sections``, ``thumbnails``...)."""
    import dataclasses

    out = collections.Counter()
    for res in results.values():
        if dataclasses.is_dataclass(res):
            for f in dataclasses.fields(res):
                out[f.name] += array_mb(getattr(res, f.name))
    return out


def say(text: str) -> None:
    print(text, flush=True)


def growth_per_cycle(rss_at_cycle: dict[int, float], warm_up: int = 2) -> float:
    """RSS growth per cycle after the warm-up: the slope of a least-squares line
    through the RSS at each cycle's start (the end's RSS would count the
    post-mortem scans and their reduction, which are not a cycle)."""
    import numpy as np

    cycles = sorted(c for c in rss_at_cycle if c >= warm_up)
    if len(cycles) < 2:
        return float("nan")
    slope, _ = np.polyfit(cycles, [rss_at_cycle[c] for c in cycles], 1)
    return float(slope)


class Counter:
    """Events the RunEngine emitted, per run and stream; RSS at each cycle's start."""

    def __init__(self, census=False, writer_pid=None, trace_from=None):
        self.trace_from = trace_from
        self.census = {} if census else None
        self.writer_pid = writer_pid
        self.writer_rss_at_cycle = {}
        self.raw_rss_at_cycle = {}  # before trim_heap
        self.reducer = None
        self.state_mb_at_cycle = {}
        self.streams = {}
        self.events = collections.Counter()
        self.runs = []
        self.rss_at_cycle = {}

    def trace_growth(self, cycle: int) -> None:
        """The Python allocations that grew most since the last cycle's start
        (``--tracemalloc``), with where the three largest were made."""
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        prev, self.snapshot = getattr(self, "snapshot", None), snap
        if prev is None:
            return
        total = sum(s.size for s in snap.statistics("filename"))
        say(f"  traced: {total / 1e6:.1f} MB; grown since the last cycle:")
        for stat in snap.compare_to(prev, "lineno")[:8]:
            say(f"    {stat}")
        for stat in snap.compare_to(prev, "traceback")[:3]:
            say(f"    {stat.size_diff / 1e6:+.2f} MB made at:")
            for line in stat.traceback.format()[-8:]:
                say(f"      {line}")

    def __call__(self, name, doc):
        if name == "start":
            self.runs.append(doc["uid"])
            if doc.get("step") == "scan3d" and doc.get("cycle"):
                gc.collect()
                cycle = int(doc["cycle"])
                self.raw_rss_at_cycle[cycle] = rss_mb()
                trim_heap()
                self.rss_at_cycle[cycle] = rss_mb()
                if self.reducer is not None:
                    self.state_mb_at_cycle[cycle] = array_mb(self.reducer.results) + array_mb(
                        self.reducer.experiments
                    )
                if self.writer_pid is not None:
                    self.writer_rss_at_cycle[cycle] = rss_mb(self.writer_pid)
                say(
                    f"cycle {cycle}: RSS {self.rss_at_cycle[cycle]:.0f} MB "
                    f"({self.raw_rss_at_cycle[cycle]:.0f} MB before the heap's trim) "
                    f"(the ingest's writer {self.writer_rss_at_cycle.get(cycle, float('nan')):.0f} MB); "
                    f"{len(self.runs)} runs so far"
                )
                if self.trace_from is not None and cycle >= self.trace_from:
                    if not tracemalloc.is_tracing():  # from the warm-up's end: ~10x slower
                        tracemalloc.start(5)
                    self.trace_growth(cycle)
                if self.census is not None:
                    self.census[int(doc["cycle"])] = collections.Counter(
                        type(o).__qualname__ for o in gc.get_objects()
                    )
        elif name == "descriptor":
            self.streams[doc["uid"]] = (doc["run_start"], doc["name"])
        elif name == "event":
            self.events[self.streams[doc["descriptor"]]] += 1


class Injector(threading.Thread):
    """Injects the faults. The IOC and the Tiled server it restarts are started by
    ``keeper``, a thread that lives as long as the soak: a child's death signal
    (``operando.shutdown.child_preexec``) follows the thread that started it,
    so a server this thread started would die with it, when the soak stops it."""

    def __init__(self, *, seed, every, ioc, tiled, station, RE, suspensions, keeper, kinds=FAULTS):
        super().__init__(daemon=True, name="fault-injector")
        self.keeper = keeper
        self.rng = random.Random(seed)
        self.kinds = tuple(kinds)
        self.every = every
        self.ioc, self.tiled, self.station, self.RE = ioc, tiled, station, RE
        self.sus = suspensions
        self.stop_event = threading.Event()
        self.injected = collections.Counter()
        self.log = []
        self.pause_requested = threading.Event()

    def run(self):
        from caproto.sync.client import write

        if not self.every:  # --every 0: no faults
            return
        while not self.stop_event.wait(self.rng.uniform(0.5, 1.5) * self.every):
            fault = self.rng.choice(self.kinds)
            t = time.monotonic()
            try:
                if fault == "ioc":
                    self.keeper.submit(self.ioc.restart).result()
                elif fault == "tiled":
                    self.keeper.submit(self.tiled.stop).result()
                    time.sleep(self.rng.uniform(1.0, 4.0))
                    self.keeper.submit(self.tiled.start).result()
                elif fault == "source":
                    n = len(self.sus.records)
                    write(self.ioc.prefix + "src:fault", 1, notify=True, timeout=10, repeater=False)
                    deadline = time.monotonic() + 20
                    while len(self.sus.records) == n and time.monotonic() < deadline:
                        time.sleep(0.1)
                    write(self.ioc.prefix + "src:reset", 1, notify=True, timeout=10, repeater=False)
                elif fault == "pause":
                    if self.RE.state == "running":
                        self.RE.request_pause(defer=True)
                        self.pause_requested.set()
                    else:
                        continue
            except Exception as exc:  # an injection that failed is reported, not fatal
                self.log.append((fault, f"injection failed: {exc!r}"))
                say(f"  fault {fault}: injection failed: {exc!r}")
                continue
            self.injected[fault] += 1
            self.log.append((fault, f"{time.monotonic() - t:.1f} s"))
            say(f"  fault {fault} injected ({time.monotonic() - t:.1f} s)")


def ensure_answering(tiled) -> None:
    """The Tiled server up once the injector has stopped (its last restart may have failed)."""
    import httpx

    if tiled.process is not None:
        try:
            if httpx.get(f"{tiled.uri}/api/v1/", timeout=10.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        tiled.stop()
    tiled.start()


def tiled_counts(client, runs):
    """Events per (run, stream) in Tiled, and duplicated seq_nums."""
    from operando.tiled_server import runs_container

    raw = runs_container(client)
    counts = collections.Counter()
    duplicates = 0
    for uid in runs:
        if uid not in raw:
            continue
        run = raw[uid]
        for stream in run:
            try:
                seq = [int(v) for v in run[stream]["seq_num"].read()]
            except Exception:
                continue
            counts[(uid, stream)] = len(seq)
            duplicates += len(seq) - len(set(seq))
    return counts, duplicates


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault injector")
    parser.add_argument(
        "--every", type=float, default=20.0, help="mean wall s between faults (0: none)"
    )
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"the kinds of fault to inject, comma-separated (default: {','.join(FAULTS)})",
    )
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--projections", type=int, default=61)
    parser.add_argument("--keep", help="keep the data under this folder")
    parser.add_argument(
        "--tracemalloc",
        type=int,
        metavar="CYCLE",
        help="trace allocations from this cycle's start: what grew per cycle, the top at the end",
    )
    parser.add_argument(
        "--census", action="store_true", help="the object types whose count grew after the warm-up"
    )
    parser.add_argument(
        "--default-arenas",
        action="store_true",
        help="glibc's default malloc arenas (8 per core), not the session's 2",
    )
    parser.add_argument(
        "--dynamic-mmap-threshold",
        action="store_true",
        help="glibc's rising mmap threshold, not the session's fixed 1 MiB",
    )
    parser.add_argument(
        "--no-figures",
        action="store_true",
        help="draw no figures (the reduced state then keeps their arrays in memory)",
    )
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.faults.split(",") if k)
    unknown = sorted(set(kinds) - set(FAULTS))
    if unknown or not kinds:
        parser.error(f"--faults: unknown {unknown or 'none given'}; known: {', '.join(FAULTS)}")

    import ophyd
    from bluesky.utils import RunEngineInterrupted

    from operando.constants import HOUR
    from operando.devices.xct import make_xct_station
    from operando.ioc_process import IOCProcess, random_prefix
    from operando.memory import fix_mmap_threshold, limit_malloc_arenas
    from operando.plans.xct import xct_operando
    from operando.session import backup_files, make_ingest, make_run_engine, replay_backup
    from operando.suspenders import install_suspenders
    from operando.techniques import get
    from operando.tiled_server import DataLayout, TiledServer

    if not args.default_arenas:
        limit_malloc_arenas()  # as `operando run` does
    if not args.dynamic_mmap_threshold:
        fix_mmap_threshold()  # as `operando run` does
    rss0 = rss_mb()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-faults-"))
    layout = DataLayout.at(root)
    layout.create()
    frames = layout.frames / "xct"
    frames.mkdir(parents=True, exist_ok=True)
    t_wall = time.monotonic()
    tiled = TiledServer(layout, startup_timeout=600.0).start()
    ioc = IOCProcess(
        "operando.iocs.xct",
        random_prefix("XCT"),
        args=["--time-scale", "virtual", "--binning", 4, "--data-dir", frames, "--hold"],
        log_path=root / "xct-ioc.log",
    ).start()
    injector = None
    # restarts happen here: a thread that outlives the injector (see Injector)
    keeper = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="keeper")
    try:
        ophyd.set_cl("caproto")
        ophyd.signal.EpicsSignalBase.set_defaults(timeout=10.0, connection_timeout=10.0)
        station = make_xct_station(ioc.prefix, write_path=frames)
        RE = make_run_engine(clock=station.clock)
        sus = install_suspenders(RE, station)
        client = tiled.client()
        # the project's ingest, as `operando run`: TiledWriter in a process of its own
        ingest = make_ingest(client, backup_directory=layout.backup)
        RE.subscribe(ingest)
        counter = Counter(
            census=args.census,
            writer_pid=ingest._process.pid,
            trace_from=args.tracemalloc,
        )
        RE.subscribe(counter)
        figures = None if args.no_figures else root / "figures"
        reducer = get("xct").live_reducer(client, figures_dir=figures)
        RE.subscribe(reducer)
        counter.reducer = reducer
        ioc.release_hold()
        injector = Injector(
            seed=args.seed,
            every=args.every,
            ioc=ioc,
            tiled=tiled,
            station=station,
            RE=RE,
            suspensions=sus,
            keeper=keeper,
            kinds=kinds,
        )
        plan = xct_operando(
            station,
            cycles=args.cycles,
            num_projections=args.projections,
            postmortem_projections=args.projections,
            ocv_duration=3 * HOUR,
            plating_duration=6 * HOUR,
            experiment_id="bench-faults",
        )
        injector.start()
        pauses = 0
        try:
            RE(plan)
        except RunEngineInterrupted:  # a pause the injector asked for
            pass
        while RE.state == "paused":
            pauses += 1
            time.sleep(1.0)
            try:
                RE.resume()
            except RunEngineInterrupted:
                pass
        injector.stop_event.set()
        injector.join(timeout=120)
        result = RE._plan_result if hasattr(RE, "_plan_result") else None
        ensure_answering(tiled)  # the server back, as an operator would have it
        ingest.shutdown(wait=True)
        reducer.flush(timeout=1800)
        wall = time.monotonic() - t_wall
        # Runs Tiled refused while it was away: from the backup, as `operando replay`.
        ensure_answering(tiled)
        client = tiled.client()
        replayed = 0
        for path in backup_files(layout.backup):
            replay_backup(path, client)
            replayed += 1
        in_tiled, duplicates = tiled_counts(client, counter.runs)
        emitted = counter.events
        missing = sum(max(n - in_tiled.get(k, 0), 0) for k, n in emitted.items())
        from operando.tiled_server import reduced_container, runs_container

        reduced = [u for u in counter.runs if u in reduced_container(client)]
        rss_end = rss_mb()
        cycles = sorted(counter.rss_at_cycle)
        warm = counter.rss_at_cycle.get(2, counter.rss_at_cycle.get(cycles[0]) if cycles else rss0)
        growth = growth_per_cycle(counter.rss_at_cycle)
        print("\n== fault soak: default XCT experiment on virtual time")
        print(f"  wall: {wall:.0f} s; runs: {len(counter.runs)}; cycles started: {len(cycles)}")
        print(f"  faults injected: {sum(injector.injected.values())} {dict(injector.injected)}")
        print(
            f"  suspensions: {len(sus.records)} "
            f"{dict(collections.Counter(r.why for r in sus.records))}; pauses resumed: {pauses}"
        )
        survived = all(r.ended is not None for r in sus.records) and RE.state == "idle"
        print(
            f"  faults survived: {'all' if survived else 'NOT all'} "
            f"(experiment finished: {RE.state == 'idle'})"
        )
        print(
            f"  events emitted: {sum(emitted.values())}; in Tiled: {sum(in_tiled.values())} "
            f"(missing {missing}, duplicated {duplicates}; backups replayed {replayed})"
        )
        print(f"  results reduced: {len(reduced)} of {len(counter.runs)} raw runs")
        raw = runs_container(client)
        for uid in counter.runs:
            if uid not in reduced:
                start = raw[uid].metadata["start"] if uid in raw else {}
                stop = (raw[uid].metadata.get("stop") or {}) if uid in raw else {}
                print(
                    f"    not reduced: {uid} ({start.get('step')}, cycle {start.get('cycle')}; "
                    f"exit {stop.get('exit_status')}: {stop.get('reason', '')[:80]})"
                )
        if reducer.errors:
            print(f"  live reduction errors: {len(reducer.errors)}, e.g. {reducer.errors[:2]}")
        state = counter.state_mb_at_cycle
        if state:
            print(
                "  reduced state the experiment keeps (its arrays, for the figures and "
                f"the tracking): growth {growth_per_cycle(state):.2f} MB per cycle; at each "
                "cycle's start " + ", ".join(f"{c}: {v:.1f}" for c, v in sorted(state.items()))
            )
            by_field = state_by_field(reducer.results)
            print(
                "    at the end, by field of the results (MB): "
                + ", ".join(f"{k} {v:.1f}" for k, v in by_field.most_common(8))
            )
            if figures is not None:
                on_disk = sum(p.stat().st_size for p in figures.rglob("*.npy")) / 1e6
                print(
                    f"    kept on disk beside the figures instead (sections, thumbnails): {on_disk:.1f} MB"
                )
        print(
            f"  RSS: start {rss0:.0f} MB, after warm-up (cycle 2) {warm:.0f} MB, "
            f"end {rss_end:.0f} MB; growth {growth:.2f} MB per cycle after warm-up "
            f"(goal <= {GOAL_MB_PER_CYCLE:.0f} MB: "
            f"{'met' if growth <= GOAL_MB_PER_CYCLE else 'NOT met'})"
        )
        print(
            "  RSS at each cycle's start: "
            + ", ".join(f"{c}: {counter.rss_at_cycle[c]:.0f}" for c in cycles)
        )
        if not args.no_figures:
            # the sections figure gets a panel per scan after platings 1, 2 and 3
            # (figures.select_scans): its pixel buffer grows until cycle 4's scan
            steady = growth_per_cycle(counter.rss_at_cycle, warm_up=3)
            print(
                f"  from cycle 3 on (the figures have their first panels): growth {steady:.2f} MB "
                "per cycle"
            )
        print(
            "  before the heap's trim: growth "
            f"{growth_per_cycle(counter.raw_rss_at_cycle):.2f} MB per cycle after warm-up"
        )
        writer = counter.writer_rss_at_cycle
        if writer:
            print(
                f"  the ingest's writer process: {min(writer.values()):.0f} -> "
                f"{max(writer.values()):.0f} MB, "
                f"growth {growth_per_cycle(writer):.2f} MB per cycle after warm-up"
            )
        for fault, what in injector.log:
            print(f"    {fault}: {what}")
        if counter.census and len(counter.census) >= 2:
            first, last = (
                min(c for c in counter.census if c >= 2)
                if max(counter.census) >= 2
                else min(counter.census),
                max(counter.census),
            )
            grew = counter.census[last] - counter.census[first]
            print(f"  objects grown from cycle {first} to {last}:")
            for name, n in grew.most_common(15):
                print(f"    {name}: +{n}")
        if tracemalloc.is_tracing():
            snap = tracemalloc.take_snapshot()
            for stat in snap.statistics("lineno")[:15]:
                print("   ", stat)
        del result
        for dev in station.devices().values():
            dev.destroy()
    finally:
        if injector is not None:
            injector.stop_event.set()
        ioc.stop()
        tiled.stop()
        keeper.shutdown(wait=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
