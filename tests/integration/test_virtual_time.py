"""Virtual time: the same plan and seed give the same experiment, whatever the load.

Each experiment runs twice against a fresh simulator on virtual time, the second
time with two CPU-burning processes started by the test beside it; the recorded
cell-time series (every event of every stream, timestamps aside) and the
simulator's ground truth (each detector's records in order) must be identical.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest

from operando.devices.saxs import make_saxs_station
from operando.devices.xct import make_xct_station
from operando.plans.alignment import GridBounds
from operando.plans.saxs import saxs_waxs_operando
from operando.plans.xct import HOUR, xct_operando
from operando.session import make_run_engine

from .simulators import start_saxs_ioc, start_xct_ioc

pytestmark = pytest.mark.slow

#: truth fields that name files or processes, not the experiment
_NOT_PHYSICS = {"path", "file", "prefix"}


@contextlib.contextmanager
def cpu_hogs(n: int):
    """``n`` processes that burn a core each until the block ends."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5)  # let them get going
        assert all(p.poll() is None for p in procs)
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _events(docs):
    """{stream: [event data]} of every run, in emission order, external keys left out."""
    streams, out = {}, []
    for name, doc in docs:
        if name == "descriptor":
            external = {k for k, v in doc["data_keys"].items() if v.get("external")}
            streams[doc["uid"]] = (doc["name"], external)
        elif name == "event":
            stream, external = streams[doc["descriptor"]]
            out.append((stream, {k: v for k, v in doc["data"].items() if k not in external}))
    return out


def _truth(path, prefix):
    """The ground truth, less file and process names (the random PV prefix too)."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    out = []
    for r in records:
        out.append(
            {
                k: v.replace(prefix, "") if isinstance(v, str) else v
                for k, v in r.items()
                if k not in _NOT_PHYSICS
            }
        )
    return out


def _run(start_ioc, make_station, plan_factory, tmp_dir):
    ioc = start_ioc(tmp_dir, time_scale="virtual", seed=0, extra=["--hold"])
    station = make_station(ioc.prefix, write_path=ioc.frames_dir, timeout=15)
    try:
        RE = make_run_engine(loop=asyncio.new_event_loop(), clock=station.clock)
        docs = []
        RE.subscribe(lambda name, doc: docs.append((name, doc)))
        ioc.release_hold()
        t0 = time.monotonic()
        RE(plan_factory(station))
        wall = time.monotonic() - t0
        cell = float(station.clock.time.get())
    finally:
        for dev in station.devices().values():
            dev.destroy()
        ioc.stop()
    return _events(docs), _truth(ioc.truth_file, ioc.prefix), cell, wall


def _assert_same(a, b):
    events_a, truth_a, cell_a, _ = a
    events_b, truth_b, cell_b, _ = b
    assert cell_a == cell_b
    assert len(events_a) == len(events_b)
    for (sa, da), (sb, db) in zip(events_a, events_b):
        assert sa == sb
        assert da.keys() == db.keys()
        for key in da:
            va, vb = da[key], db[key]
            if isinstance(va, float):
                assert va == pytest.approx(vb, rel=1e-12, abs=1e-12), (sa, key)
            else:
                assert va == vb, (sa, key)
    assert len(truth_a) == len(truth_b)
    assert _by_source(truth_a) == _by_source(truth_b)


def _by_source(truth):
    """The truth records of each detector (and of the rest of the station) in
    their order. Frames exposed together by two detectors (SAXS and WAXS) are
    rendered on worker threads, so the two records of a point interleave in the
    order the renders finish; each detector's own sequence is the experiment's."""
    out = {}
    for r in truth:
        out.setdefault(r.get("detector"), []).append(r)
    return out


def _xct_plan(station):
    return xct_operando(
        station,
        cycles=1,
        num_projections=7,
        exposure=1.5,
        images_per_projection=1,
        postmortem_projections=5,
        sample_every=600.0,
        radiogram_every=HOUR,
        experiment_id="vt-xct",
    )


def test_xct_experiment_is_deterministic_under_load(tmp_path):
    quiet = _run(start_xct_ioc, make_xct_station, _xct_plan, tmp_path / "quiet")
    with cpu_hogs(2):
        busy = _run(start_xct_ioc, make_xct_station, _xct_plan, tmp_path / "busy")
    _assert_same(quiet, busy)
    events, truth, cell, wall = quiet
    # a 9 h cycle and two post-mortem scans of cell time
    assert cell > 9 * HOUR
    streams = {s for s, _ in events}
    assert {"primary", "dark", "flat", "cell"} <= streams
    clock = [d["clock_time"] for s, d in events if s == "cell"]
    assert clock == sorted(clock)


#: the stack of a centred cell (as the alignment of the default mount finds it)
SAXS_BOUNDS = GridBounds(x=(-2.5, 2.5), y=(0.0, 0.35))


def _saxs_plan(station):
    return saxs_waxs_operando(
        station,
        cycles=1,
        c_rate=0.5,
        shape=(2, 3),
        bounds=SAXS_BOUNDS,
        raster_every=1800.0,
        exposure=2.0,
        experiment_id="vt-saxs",
    )


def test_saxs_experiment_is_deterministic_under_load(tmp_path):
    quiet = _run(start_saxs_ioc, make_saxs_station, _saxs_plan, tmp_path / "quiet")
    with cpu_hogs(2):
        busy = _run(start_saxs_ioc, make_saxs_station, _saxs_plan, tmp_path / "busy")
    _assert_same(quiet, busy)
    events, truth, cell, wall = quiet
    ends = [r for r in truth if r.get("event") == "technique_end"]
    assert ends and ends[-1]["mode"] == "GCPL"
    primary = [d for s, d in events if s == "primary"]
    assert len(primary) >= 6 * 3
    assert all(math.isfinite(d["diode_trans"]) for d in primary)
    # the rasters start on the raster_every grid of cell time, exactly
    points = np.array([d["clock_time"] for d in primary])
    assert np.all(np.diff(points) > 0)
