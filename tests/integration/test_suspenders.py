"""Suspenders against the real simulators on virtual time, runs read back from Tiled.

A beam dump injected mid-raster (``ring:dump``) and a source fault injected
mid-radiogram (``src:fault``) suspend the run; it resumes by itself (the refill
in cell time) or once the fault is reset, and the run in Tiled has every point
exactly once, none dark, with the suspension recorded. A put completion lost
with its IOC ends in a clear error; a value the IOC clips is refused at once
and leaves no set() in progress.
"""

from __future__ import annotations

import threading
import time

import bluesky.plan_stubs as bps
import numpy as np
import pytest
from bluesky.utils import FailedStatus
from caproto.sync.client import write

from operando.devices.common import CompletionLost
from operando.ioc_process import random_prefix
from operando.session import make_tiled_writer, synchronize_clock
from operando.suspenders import SUSPENSIONS_STREAM, install_suspenders
from operando.tiled_server import DataLayout, TiledServer, runs_container

from .simulators import start_saxs_ioc, start_xct_ioc


@pytest.fixture(scope="module")
def tiled_server(tmp_path_factory):
    """A ``tiled serve`` subprocess of this module's own (its start may take long on a
    loaded machine; the session's allows 60 s)."""
    layout = DataLayout.at(tmp_path_factory.mktemp("tiled-faults"))
    with TiledServer(layout, startup_timeout=300.0) as server:
        yield server


def _put(pv, value):
    write(pv, value, notify=True, timeout=10.0, repeater=False)


def _wait_until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def saxs_virtual(tiled_server):
    base = tiled_server.layout.frames / f"saxs-{random_prefix('s')[:-1]}"
    ioc = start_saxs_ioc(base, time_scale="virtual")
    yield ioc
    ioc.stop()


@pytest.fixture(scope="module")
def xct_virtual(tiled_server):
    base = tiled_server.layout.frames / f"xct-{random_prefix('v')[:-1]}"
    ioc = start_xct_ioc(base, time_scale="virtual")
    yield ioc
    ioc.stop()


def _session(RE, station, tiled_server):
    synchronize_clock(RE, station.clock)
    RE.subscribe(make_tiled_writer(tiled_server.client()))
    return install_suspenders(RE, station)


def test_beam_dump_mid_raster_suspends_and_resumes(RE, saxs_virtual, tiled_server):
    from operando.devices.saxs import make_saxs_station
    from operando.plans.saxs import raster

    ioc = saxs_virtual
    station = make_saxs_station(ioc.prefix, write_path=ioc.frames_dir, timeout=15)
    try:
        sus = _session(RE, station, tiled_server)
        refill = float(station.ring.refill_s.get())
        triggers = []

        def dump_at_third_point(msg):
            if msg.command == "trigger" and msg.obj is station.saxs:
                triggers.append(msg)
                if len(triggers) == 3:
                    _put(ioc.prefix + "ring:dump", 1)

        RE.msg_hook = dump_at_third_point
        t0 = float(station.clock.time.get())
        uid = RE(
            raster(station, x_range=(-1.0, 1.0), y_range=(0.1, 0.3), shape=(2, 3), exposure=1.0)
        ).plan_result
        RE.msg_hook = None
        t1 = float(station.clock.time.get())
    finally:
        for dev in station.devices().values():
            dev.destroy()

    # One suspension, recorded with its reason; the refill came in cell time.
    assert len(sus.records) == 1
    rec = sus.records[0]
    assert rec.why == "beam dump" and rec.ended is not None
    assert rec.cell_duration_s == pytest.approx(refill, abs=30.0)
    assert t1 - t0 > refill
    assert len(triggers) == 7  # the interrupted point was taken again
    # In Tiled: every grid point exactly once, none without beam.
    run = runs_container(tiled_server.client())[uid]
    primary = run["primary"]
    xs = np.asarray(primary["stage_x"].read())
    ys = np.asarray(primary["stage_y"].read())
    points = sorted(zip(np.round(ys, 3), np.round(xs, 3), strict=True))
    grid = sorted((y, x) for y in (0.1, 0.3) for x in (-1.0, 0.0, 1.0))
    assert points == grid
    diode = np.asarray(primary["diode_trans"].read())
    assert np.all(diode > 0), diode
    emitted = [d for n, d in RE.docs if n == "event"] if hasattr(RE, "docs") else []
    desc = {d["uid"]: d["name"] for n, d in RE.docs if n == "descriptor"}
    assert sum(1 for e in emitted if desc[e["descriptor"]] == "primary") == 6
    frames = primary["saxs_image"].read()
    assert frames.shape[0] == 6 and all(f[f > 0].sum() > 0 for f in frames)
    sus_stream = run[SUSPENSIONS_STREAM]
    assert list(sus_stream["suspension_why"].read()) == ["beam dump"]


def test_source_fault_mid_radiogram_suspends_until_reset(RE, xct_virtual, tiled_server):
    from operando.devices.xct import make_xct_station
    from operando.plans.xct import plating

    ioc = xct_virtual
    station = make_xct_station(ioc.prefix, write_path=ioc.frames_dir, timeout=15)
    try:
        sus = _session(RE, station, tiled_server)
        ons = []

        def fault_at_second_radiogram(msg):
            if msg.command == "set" and msg.obj is station.source and msg.args[0] == "on":
                ons.append(msg)
                if len(ons) == 3:  # flats, radiogram 1, then radiogram 2
                    _put(ioc.prefix + "src:fault", 1)

                    def reset_once_suspended():
                        if _wait_until(lambda: len(sus.records) == 1):
                            _put(ioc.prefix + "src:reset", 1)

                    threading.Thread(target=reset_once_suspended, daemon=True).start()

        RE.msg_hook = fault_at_second_radiogram
        result = RE(
            plating(
                station,
                current_density=20.0,
                duration=1200.0,
                radiogram_every=600.0,
                num_darks=1,
                num_flats=1,
                exposure=0.2,
                images_per_radiogram=1,
            )
        ).plan_result
        RE.msg_hook = None
    finally:
        for dev in station.devices().values():
            dev.destroy()
    assert len(sus.records) == 1 and sus.records[0].why == "source fault"
    assert sus.records[0].ended is not None
    run = runs_container(tiled_server.client())[result.uid]
    primary = run["primary"]
    t = np.asarray(primary["clock_time"].read())
    assert len(t) == result.radiograms == 3
    assert len(set(np.round(t, 3))) == len(t)  # no duplicate
    frames = primary["ct_det_image"].read()
    darks = run["dark"]["ct_det_image"].read()
    assert all(f.mean() > 5 * darks.mean() for f in frames)  # none taken in the dark
    assert list(run[SUSPENSIONS_STREAM]["suspension_why"].read()) == ["source fault"]
    assert result.end_state == "done"


def test_lost_put_completion_is_a_clear_error(RE, tmp_path):
    from operando.devices.xct import make_xct_station

    ioc = start_xct_ioc(tmp_path, time_scale=1.0)
    station = make_xct_station(ioc.prefix, write_path=ioc.frames_dir, timeout=15)
    try:
        t = float(station.clock.time.get())
        killer = threading.Timer(1.0, ioc.kill)
        killer.start()
        t0 = time.monotonic()
        with pytest.raises(FailedStatus) as err:
            RE(bps.mv(station.clock, t + 3600.0))
        elapsed = time.monotonic() - t0
        cause = err.value.__cause__
        assert isinstance(cause, CompletionLost), repr(cause)
        assert "clock:wait" in str(cause) and "3600" in str(cause)
        assert elapsed < 15.0
    finally:
        for dev in station.devices().values():
            dev.destroy()
        ioc.stop()


def test_clipped_setting_fails_at_once_and_leaves_no_set_in_progress(RE, xct_virtual):
    from operando.devices.xct import make_xct_station

    station = make_xct_station(xct_virtual.prefix, write_path=xct_virtual.frames_dir, timeout=15)
    try:
        cam = station.ct_det.cam
        t0 = time.monotonic()
        with pytest.raises(FailedStatus) as err:
            RE(bps.mv(cam.num_exposures, 500))
        assert time.monotonic() - t0 < 5.0
        assert "NumExposures" in str(err.value.__cause__)
        RE(bps.mv(cam.num_exposures, 2))  # no "Another set() call is still in progress"
        assert int(cam.num_exposures.get(use_monitor=False)) == 2
    finally:
        for dev in station.devices().values():
            dev.destroy()


def test_aborted_trigger_leaves_no_stale_asset_documents(RE, xct_virtual, tiled_server):
    from operando.devices.xct import make_xct_station
    from operando.plans.xct import scan3d

    station = make_xct_station(xct_virtual.prefix, write_path=xct_virtual.frames_dir, timeout=15)
    try:
        synchronize_clock(RE, station.clock)
        det = station.ct_det

        def abandoned():
            yield from bps.open_run()
            yield from bps.stage(det)
            yield from bps.trigger(det, group="frame")  # never read
            raise RuntimeError("aborted mid-trigger")

        with pytest.raises(RuntimeError):
            RE(abandoned())
        RE.subscribe(make_tiled_writer(tiled_server.client()))
        uid = RE(
            scan3d(
                station,
                num_projections=3,
                exposure=0.1,
                images_per_projection=1,
                num_darks=1,
                num_flats=1,
            )
        ).plan_result
    finally:
        for dev in station.devices().values():
            dev.destroy()
    run = runs_container(tiled_server.client())[uid]
    assert run["primary"]["ct_det_image"].read().shape[0] == 3
