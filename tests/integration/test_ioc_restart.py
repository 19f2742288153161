"""The station IOCs SIGKILLed mid-scan and restarted on their prefix and port, on virtual time.

The plan suspends instead of hanging, resumes when the channels are back, and
the run in Tiled has every projection exactly once (as many events as the
RunEngine emitted), none dark; with its autosave the restarted IOC continues
from the cell time it had, not from 0.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from operando.ioc_process import random_prefix
from operando.session import make_tiled_writer, synchronize_clock
from operando.suspenders import SUSPENSIONS_STREAM, install_suspenders
from operando.tiled_server import DataLayout, TiledServer, runs_container

from .simulators import start_xct_ioc


@pytest.fixture(scope="module")
def tiled_server(tmp_path_factory):
    """A ``tiled serve`` subprocess of this module's own (its start may take long on a
    loaded machine; the session's allows 60 s)."""
    layout = DataLayout.at(tmp_path_factory.mktemp("tiled-faults"))
    with TiledServer(layout, startup_timeout=300.0) as server:
        yield server


def _restart_at_trigger(ioc, station, detector, n, restarts, before, finished):
    """A ``msg_hook`` that SIGKILLs and restarts ``ioc`` at the ``n``-th trigger of
    ``detector`` (the cell time then in ``before["t"]``, the restarted IOC in
    ``restarts``), from a thread that lives until ``finished`` is set: the child
    dies with the thread that started it (PDEATHSIG)."""
    triggers = []

    def restart_and_stay():
        restarts.append(ioc.restart())
        finished.wait()

    def hook(msg):
        if msg.command == "trigger" and msg.obj is detector:
            triggers.append(msg)
            if len(triggers) == n:
                before["t"] = float(station.clock.time.get())
                threading.Thread(target=restart_and_stay, daemon=True).start()

    return hook


def test_xct_ioc_killed_and_restarted_mid_scan(RE, tiled_server):
    from operando.devices.xct import make_xct_station
    from operando.plans.xct import scan3d

    base = tiled_server.layout.frames / f"xct-{random_prefix('r')[:-1]}"
    ioc = start_xct_ioc(base, time_scale="virtual")
    station = make_xct_station(ioc.prefix, write_path=ioc.frames_dir, timeout=15)
    restarts, before, finished = [], {}, threading.Event()
    try:
        synchronize_clock(RE, station.clock)
        RE.subscribe(make_tiled_writer(tiled_server.client()))
        sus = install_suspenders(RE, station)
        # 1 dark, 1 flat, then projections 1, 2, 3
        RE.msg_hook = _restart_at_trigger(
            ioc, station, station.ct_det, 5, restarts, before, finished
        )
        n = 6
        uid = RE(
            scan3d(
                station,
                num_projections=n,
                exposure=0.5,
                images_per_projection=1,
                num_darks=1,
                num_flats=1,
                ocv_duration=600.0,
            )
        ).plan_result
        RE.msg_hook = None
        t_end = float(station.clock.time.get())
    finally:
        for dev in station.devices().values():
            dev.destroy()
        ioc.stop()
        finished.set()
    assert restarts, "the IOC was not restarted"
    # Suspended (not hung, not failed) and resumed once the IOC was back.
    assert [r.why for r in sus.records] == ["IOC disconnected"]
    assert sus.records[0].ended is not None
    # The restarted IOC continued from its autosaved cell time.
    starts = [
        json.loads(line)
        for line in ioc.truth_file.read_text().splitlines()
        if '"ioc_start"' in line
    ]
    assert [s["restored"] for s in starts] == [False, True]
    assert starts[1]["t"] > 0.5 * before["t"] > 0
    assert t_end > before["t"]
    # Events emitted = events in Tiled, each projection once, none dark.
    desc = {d["uid"]: d["name"] for name, d in RE.docs if name == "descriptor"}
    emitted = [d for name, d in RE.docs if name == "event" and desc[d["descriptor"]] == "primary"]
    assert len(emitted) == n
    run = runs_container(tiled_server.client())[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    primary = run["primary"]
    angles = np.asarray(primary["stage_th"].read())
    np.testing.assert_allclose(angles, np.linspace(0, 360, n), atol=1e-2)
    frames = primary["ct_det_image"].read()
    darks = run["dark"]["ct_det_image"].read()
    assert frames.shape[0] == n
    assert all(f.mean() > 5 * darks.mean() for f in frames)
    times = np.asarray(primary["clock_time"].read())
    assert np.all(np.diff(times) > 0)  # cell time went on across the restart
    assert list(run[SUSPENSIONS_STREAM]["suspension_why"].read()) == ["IOC disconnected"]


def test_saxs_ioc_killed_and_restarted_mid_raster(RE, tiled_server):
    """The SAXS/WAXS station's IOC SIGKILLed at the third raster point: the
    raster suspends, resumes on the restarted IOC, and Tiled has every grid point
    exactly once, each with its SAXS frame and the beam on the diode."""
    from operando.devices.saxs import make_saxs_station
    from operando.plans.saxs import raster

    from .simulators import start_saxs_ioc

    base = tiled_server.layout.frames / f"saxs-{random_prefix('r')[:-1]}"
    ioc = start_saxs_ioc(base, time_scale="virtual")
    station = make_saxs_station(ioc.prefix, write_path=ioc.frames_dir, timeout=15)
    restarts, before, finished = [], {}, threading.Event()
    try:
        synchronize_clock(RE, station.clock)
        RE.subscribe(make_tiled_writer(tiled_server.client()))
        sus = install_suspenders(RE, station)
        RE.msg_hook = _restart_at_trigger(ioc, station, station.saxs, 3, restarts, before, finished)
        uid = RE(
            raster(station, x_range=(-1.0, 1.0), y_range=(0.1, 0.3), shape=(2, 3), exposure=1.0)
        ).plan_result
        RE.msg_hook = None
        t_end = float(station.clock.time.get())
    finally:
        for dev in station.devices().values():
            dev.destroy()
        ioc.stop()
        finished.set()
    assert restarts, "the IOC was not restarted"
    assert [r.why for r in sus.records] == ["IOC disconnected"]
    assert sus.records[0].ended is not None
    starts = [
        json.loads(line)
        for line in ioc.truth_file.read_text().splitlines()
        if '"ioc_start"' in line
    ]
    assert [s["restored"] for s in starts] == [False, True]
    assert t_end > before["t"] > 0
    desc = {d["uid"]: d["name"] for name, d in RE.docs if name == "descriptor"}
    emitted = [d for name, d in RE.docs if name == "event" and desc[d["descriptor"]] == "primary"]
    assert len(emitted) == 6
    run = runs_container(tiled_server.client())[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    primary = run["primary"]
    xs = np.asarray(primary["stage_x"].read())
    ys = np.asarray(primary["stage_y"].read())
    points = sorted(zip(np.round(ys, 3), np.round(xs, 3), strict=True))
    assert points == sorted((y, x) for y in (0.1, 0.3) for x in (-1.0, 0.0, 1.0))
    assert np.all(np.asarray(primary["diode_trans"].read()) > 0)
    frames = primary["saxs_image"].read()
    assert frames.shape[0] == 6 and all(f[f > 0].sum() > 0 for f in frames)
    assert np.all(np.diff(np.asarray(primary["clock_time"].read())) > 0)
    assert list(run[SUSPENSIONS_STREAM]["suspension_why"].read()) == ["IOC disconnected"]
