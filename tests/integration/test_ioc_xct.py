"""The XCT station IOC (``operando.iocs.xct``) as a real subprocess, over Channel Access.

Ground truth comes from the IOC's ``--truth-file`` (JSON lines), never from PVs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from caproto import AlarmSeverity

from . import ca_client as ca
from .ca_client import acquire_while_reading, ctrl, get, get_enum, get_str, put_rejected, wait_for
from .simulators import start_xct_ioc

FARADAY = 96485.33212


@pytest.fixture(scope="module")
def P(xct_ioc):  # noqa: F811
    return xct_ioc.prefix


def put(pv, value, *, wait=False, timeout=5.0):
    """Without completion by default: these tests watch the IOC act on the put."""
    return ca.put(pv, value, wait=wait, timeout=timeout)


def truth_events(xct_ioc, event):  # noqa: F811
    lines = Path(xct_ioc.truth_file).read_text().splitlines()
    return [rec for rec in map(json.loads, lines) if rec["event"] == event]


# -- clock ---------------------------------------------------------------------


def test_clock_runs_at_scale_and_wait_completes(xct_ioc, P):  # noqa: F811
    assert get(P + "clock:scale") == pytest.approx(xct_ioc.scale)

    def sample():  # (wall, cell) at the middle of a CA read
        before = time.monotonic()
        cell = get(P + "clock:time")
        return (before + time.monotonic()) / 2, cell

    w0, t0 = sample()
    time.sleep(0.5)
    w1, t1 = sample()
    assert (t1 - t0) / (w1 - w0) == pytest.approx(xct_ioc.scale, rel=0.1)

    target = get(P + "clock:time") + 0.5 * xct_ioc.scale  # 0.5 s wall
    start = time.monotonic()
    put(P + "clock:wait", target, wait=True)
    elapsed = time.monotonic() - start
    assert get(P + "clock:time") >= target
    assert 0.35 < elapsed < 1.5
    # a time in the past completes at once
    start = time.monotonic()
    put(P + "clock:wait", 1.0, wait=True)
    assert time.monotonic() - start < 0.3


# -- force sensor ----------------------------------------------------------------


def test_force_at_assembly_and_tare(xct_ioc, P):  # noqa: F811
    force = get(P + "force:force")
    assert force == pytest.approx(22.0, abs=0.3)  # paper: ~22 N after assembly
    bridge = get(P + "force:bridge")
    assert bridge == pytest.approx(force / 500.0 * 2.0, abs=2e-3)  # 2 mV/V at 500 N
    md = ctrl(P + "force:force")
    assert md.upper_alarm_limit == 500.0
    assert md.upper_warning_limit == 450.0
    assert AlarmSeverity(md.severity) == AlarmSeverity.NO_ALARM

    put(P + "force:tare", 1, wait=True)
    offset = get(P + "force:offset")
    assert offset == pytest.approx(force, abs=0.3)
    time.sleep(0.15)  # one update of the force (10 Hz)
    assert get(P + "force:force") == pytest.approx(0.0, abs=0.15)
    assert get(P + "force:bridge") == pytest.approx(bridge, abs=2e-3)  # raw unchanged


# -- validation / clipping ---------------------------------------------------------


@pytest.mark.parametrize(
    "pv, value, expected",
    [
        ("src:kv", 90.0, 70.0),
        ("src:kv", -5.0, 0.0),
        ("src:ua", 1e4, 150.0),
        ("det:cam:AcquireTime", -1.0, 1e-3),
        ("det:cam:AcquireTime", 1e6, 3600.0),
        ("det:cam:NumExposures", 1000, 100),
        ("det:cam:NumExposures", -3, 1),
        ("pstat:current_sp", 5.0, 0.8),
        ("pstat:current_sp", -1e9, -0.8),
        ("pstat:e_max", 99.0, 10.0),
        ("pstat:duration", -10.0, 1e-3),
    ],
)
def test_out_of_range_puts_are_clipped(xct_ioc, P, pv, value, expected):  # noqa: F811
    old = get(P + pv)
    try:
        put(P + pv, value, wait=True)
        assert get(P + pv) == pytest.approx(expected)
    finally:
        put(P + pv, old, wait=True)
    assert get(P + pv) == pytest.approx(old)


def test_ctrl_limits_are_published(xct_ioc, P):  # noqa: F811
    md = ctrl(P + "pstat:current_sp")
    assert (md.lower_ctrl_limit, md.upper_ctrl_limit) == (-0.8, 0.8)
    md = ctrl(P + "src:kv")
    assert (md.lower_ctrl_limit, md.upper_ctrl_limit) == (0.0, 70.0)


# -- potentiostat -------------------------------------------------------------------


def _technique(P, mode, *, current=0.0, duration=60.0, e_min=-10.0, e_max=10.0):
    put(P + "pstat:mode", mode, wait=True)
    put(P + "pstat:current_sp", current, wait=True)
    put(P + "pstat:duration", duration, wait=True)
    put(P + "pstat:e_min", e_min, wait=True)
    put(P + "pstat:e_max", e_max, wait=True)
    put(P + "pstat:start", 1, wait=True)


def _wait_state(P, states, timeout=10.0):
    return wait_for(lambda: (s := get_enum(P + "pstat:state")) in states and s, timeout)


def test_cc_technique_completes_with_faraday_charge(xct_ioc, P):  # noqa: F811
    area_cm2 = np.pi * 0.2**2
    current = 40e-6 * area_cm2  # 40 uA/cm2 on the 4 mm electrode
    duration = 120.0  # cell s: 0.6 s wall
    t_start = get(P + "clock:time")
    _technique(P, "CC", current=current, duration=duration)
    assert get_enum(P + "pstat:state") == "running"
    assert get(P + "pstat:i") == pytest.approx(current)
    assert get(P + "pstat:ewe") > 0  # anodic current on the working electrode
    assert _wait_state(P, {"done", "limit", "aborted"}) == "done"
    assert get(P + "clock:time") - t_start >= duration
    assert get(P + "pstat:elapsed") == pytest.approx(duration, rel=1e-9)
    assert get(P + "pstat:charge") == pytest.approx(current * duration, rel=1e-9)
    assert get(P + "pstat:i") == 0.0
    end = truth_events(xct_ioc, "technique_end")[-1]
    assert end["reason"] == "done" and end["mode"] == "CC"
    assert end["charge_c"] == pytest.approx(current * duration, rel=1e-9)
    start = truth_events(xct_ioc, "technique_start")[-1]
    assert end["t"] - start["t"] == pytest.approx(duration)
    # Faraday: the cell model's plated thickness grew by j*t*M/(F*rho)
    grown = end["truth"]["plated_thickness_um"] - start["truth"]["plated_thickness_um"]
    expected_um = current * duration / area_cm2 * 6.94 / (FARADAY * 0.534) * 1e4
    assert grown == pytest.approx(expected_um, rel=1e-6)


def test_potential_limit_ends_cc_with_limit(xct_ioc, P):  # noqa: F811
    _technique(P, "CC", current=1e-4, duration=1e5, e_max=0.5)  # ~1.5 V ohmic drop
    assert _wait_state(P, {"done", "limit", "aborted"}) == "limit"
    assert get(P + "pstat:i") == 0.0
    assert get(P + "pstat:elapsed") < 1e5
    assert truth_events(xct_ioc, "technique_end")[-1]["reason"] == "limit"


def test_stop_aborts_and_returns_to_ocv(xct_ioc, P):  # noqa: F811
    _technique(P, "CC", current=-2e-6, duration=1e5)
    assert get_enum(P + "pstat:state") == "running"
    time.sleep(0.2)
    put(P + "pstat:stop", 1, wait=True)
    assert get_enum(P + "pstat:state") == "aborted"
    assert get(P + "pstat:i") == 0.0
    assert 0 < get(P + "pstat:elapsed") < 1e5
    assert get(P + "pstat:charge") < 0
    assert truth_events(xct_ioc, "technique_end")[-1]["reason"] == "aborted"


def test_ocv_technique_completes(xct_ioc, P):  # noqa: F811
    _technique(P, "OCV", current=1e-3, duration=40.0)  # current ignored at OCV
    assert get(P + "pstat:i") == 0.0
    assert _wait_state(P, {"done", "limit", "aborted"}) == "done"
    assert get(P + "pstat:charge") == 0.0
    assert abs(get(P + "pstat:ewe")) < 0.2


# -- source and detector ---------------------------------------------------------------


def _frames(path):
    with h5py.File(path, "r", swmr=True) as f:
        return f["/entry/data/data"][()]


def test_capture_writes_swmr_file_and_dark_frames(xct_ioc, P):  # noqa: F811
    put(P + "det:cam:AcquireTime", 0.5, wait=True)
    put(P + "det:cam:NumExposures", 1, wait=True)
    rows, cols = get(P + "det:cam:SizeY_RBV"), get(P + "det:cam:SizeX_RBV")
    assert rows > 0 and cols > 0
    assert get(P + "det:cam:PixelSize_RBV") == pytest.approx(3.4 * get(P + "det:cam:BinX"))
    assert get_str(P + "det:HDF1:FilePath") == str(xct_ioc.frames_dir)

    put(P + "src:on", 0, wait=True)
    number = get(P + "det:HDF1:FileNumber")
    put(P + "det:HDF1:FileName", "swmr", wait=True)
    put(P + "det:HDF1:Capture", 1, wait=True)
    path = Path(get_str(P + "det:HDF1:FullFileName_RBV"))
    assert path == Path(xct_ioc.frames_dir) / f"swmr_{number:06d}.h5"
    assert get(P + "det:HDF1:Capture_RBV") == 1
    assert get(P + "det:HDF1:FileNumber") == number + 1
    counter = get(P + "det:cam:ArrayCounter_RBV")
    try:
        for _ in range(2):  # dark frames: source off
            put(P + "det:cam:Acquire", 1, wait=True)
        # while the file is still open, another reader (SWMR) sees the frames
        dark = _frames(path)
        assert dark.shape == (2, rows, cols) and dark.dtype == np.uint16
        assert get(P + "det:HDF1:NumCaptured_RBV") == 2
        assert get(P + "det:cam:ArrayCounter_RBV") == counter + 2

        start = time.monotonic()
        put(P + "src:on", 1, wait=True)  # completes after the warm-up
        assert get(P + "src:on_rbv") == 1
        assert time.monotonic() - start > 0.02
        put(P + "det:cam:Acquire", 1, wait=True)
        with h5py.File(path, "r", swmr=True) as f:
            dset = f["/entry/data/data"]
            assert dset.shape == (3, rows, cols)
            assert dset.chunks == (1, rows, cols) and dset.maxshape == (None, rows, cols)
            bright = dset[2]
    finally:
        put(P + "det:HDF1:Capture", 0, wait=True)
        put(P + "src:on", 0, wait=True)
    assert get(P + "det:HDF1:Capture_RBV") == 0
    with h5py.File(path, "r") as f:  # closed cleanly
        assert f["/entry/data/data"].shape == (3, rows, cols)

    dark_level = float(np.median(dark))
    assert dark.std() < 0.2 * dark_level + 20  # featureless
    assert bright.mean() > dark_level + 100  # the beam is on
    frames = [r for r in truth_events(xct_ioc, "frame") if r["file"] == str(path)]
    assert [r["index"] for r in frames] == [0, 1, 2]
    assert [r["source_on"] for r in frames] == [False, False, True]
    assert all(len(r["particles"]) == r["truth"]["n_particles"] for r in frames)
    assert frames[2]["frame_mean"] == pytest.approx(float(bright.mean()))


def test_acquire_takes_exposure_in_cell_time_and_loop_stays_free(xct_ioc, P):  # noqa: F811
    put(P + "det:cam:AcquireTime", 20.0, wait=True)  # 3 x 20 cell s = 0.3 s wall
    put(P + "det:cam:NumExposures", 3, wait=True)

    reads, elapsed_cell = acquire_while_reading(P + "det:cam:Acquire", P + "clock:time")
    assert len(reads) > 5 and reads == sorted(reads)
    assert elapsed_cell >= 2 * 60.0
    put(P + "det:cam:AcquireTime", 1.5, wait=True)


# -- stage -------------------------------------------------------------------------------


def test_motor_record_with_ophyd(xct_ioc, P):  # noqa: F811
    import ophyd
    from ophyd.utils import LimitError

    ophyd.set_cl("caproto")
    th = ophyd.EpicsMotor(P + "stage:th", name="th")
    x = ophyd.EpicsMotor(P + "stage:x", name="x")
    try:
        th.wait_for_connection(timeout=5)
        x.wait_for_connection(timeout=5)
        assert th.limits == (-720.0, 720.0) and th.egu == "deg"
        assert x.limits == (-25.0, 25.0) and x.egu == "mm"
        assert th.velocity.get() == 30.0 and x.velocity.get() == 2.0

        t0 = get(P + "clock:time")
        th.set(90.0).wait(timeout=10)  # 3 s of cell time at 30 deg/s
        assert th.position == pytest.approx(90.0)
        assert get(P + "clock:time") - t0 >= 3.0
        x.move(1.5, wait=True)
        assert x.position == pytest.approx(1.5) and x.user_readback.get() == pytest.approx(1.5)

        with pytest.raises(LimitError):
            th.set(800.0)
        put_rejected(P + "stage:x", 30.0)  # a raw put outside the soft limits
        assert get(P + "stage:x.LVIO") == 1
        assert get(P + "stage:x.RBV") == pytest.approx(1.5)

        # new soft limits reach ophyd through the ctrl limits of .VAL
        x.high_limit_travel.put(10.0, wait=True)
        wait_for(lambda: x.limits == (-25.0, 10.0), timeout=3)
        with pytest.raises(LimitError):
            x.set(12.0)
        x.high_limit_travel.put(25.0, wait=True)

        # stop mid-move (slowed down: 360 deg at 2 deg/s = 180 cell s, 0.9 s wall)
        th.velocity.put(2.0, wait=True)
        status = th.set(450.0)
        time.sleep(0.15)
        assert th.moving
        th.stop()
        wait_for(lambda: get(P + "stage:th.DMOV") == 1, timeout=5)
        wait_for(lambda: status.done, timeout=5)  # (ophyd decides success)
        pos = th.position
        assert 90.0 < pos < 450.0
        assert get(P + "stage:th") == pytest.approx(pos)  # VAL := RBV
        th.velocity.put(30.0, wait=True)
        th.set(0.0).wait(timeout=20)
        x.set(0.0).wait(timeout=10)
        assert get(P + "stage:th.RBV") == 0.0
    finally:
        th.destroy()
        x.destroy()


def test_frame_follows_stage_and_cell(xct_ioc, P):  # noqa: F811
    put(P + "det:cam:AcquireTime", 0.01, wait=True)
    put(P + "det:cam:NumExposures", 1, wait=True)
    put(P + "stage:th", 30.0, wait=True, timeout=10)
    put(P + "stage:z", 0.2, wait=True, timeout=10)
    put(P + "det:cam:Acquire", 1, wait=True)
    rec = truth_events(xct_ioc, "frame")[-1]
    assert rec["theta_deg"] == pytest.approx(30.0)
    assert rec["stage_z_mm"] == pytest.approx(0.2)
    assert rec["file"] is None and rec["index"] is None  # not capturing
    assert rec["t"] - rec["t_start"] >= 0.01
    assert rec["truth"]["t"] == pytest.approx(rec["t"], abs=1e-6)
    put(P + "stage:th", 0.0, wait=True, timeout=10)
    put(P + "stage:z", 0.0, wait=True, timeout=10)


def test_objective_and_binning_set_the_frame_format(xct_ioc, P):  # noqa: F811
    put(P + "det:cam:Objective", "20X", wait=True)
    try:
        assert get_enum(P + "det:cam:Objective") == "20X"
        assert get(P + "det:cam:PixelSize_RBV") == pytest.approx(0.68 * 4)
        put(P + "det:cam:BinX", 3, wait=True)  # not a binning: the next lower one
        assert get(P + "det:cam:BinX") == 2
        assert get(P + "det:cam:PixelSize_RBV") == pytest.approx(0.68 * 2)
        assert (get(P + "det:cam:SizeY_RBV"), get(P + "det:cam:SizeX_RBV")) == (485, 500)
        put(P + "det:HDF1:Capture", 1, wait=True)
        try:  # the open file's frame shape is fixed
            put_rejected(P + "det:cam:BinX", 4)
            assert get(P + "det:cam:BinX") == 2
        finally:
            put(P + "det:HDF1:Capture", 0, wait=True)
    finally:
        put(P + "det:cam:Objective", "4X", wait=True)
        put(P + "det:cam:BinX", 4, wait=True)
    assert get(P + "det:cam:PixelSize_RBV") == pytest.approx(3.4 * 4)


# -- pure parts, in process ------------------------------------------------------------


def test_sim_clock_scales_wall_time():
    from operando.iocs.clock import SimClock

    wall = [100.0]
    clock = SimClock(scale=50.0, t_start=10.0, monotonic=lambda: wall[0])
    assert clock.now() == 10.0
    wall[0] += 2.0
    assert clock.now() == pytest.approx(110.0)
    assert clock.wall_delay(500.0) == pytest.approx(10.0)
    assert clock.wall_delay(-1.0) == 0.0
    clock.restart(0.0)
    assert clock.now() == 0.0
    with pytest.raises(ValueError):
        SimClock(scale=0.0)

    held = SimClock(scale=10.0, monotonic=lambda: wall[0], hold=True)
    wall[0] += 5.0
    assert held.held and held.now() == 0.0
    held.release()
    wall[0] += 1.0
    assert not held.held and held.now() == pytest.approx(10.0)
    assert held.hold() == pytest.approx(10.0)
    wall[0] += 1.0
    assert held.now() == pytest.approx(10.0)


def test_trapezoid_profile():
    from operando.iocs.motor import trapezoid

    duration, pos = trapezoid(90.0, 30.0, 0.5)  # cruise: 3 s + one accel time
    assert duration == pytest.approx(3.5)
    assert pos(0.0) == 0.0 and pos(duration) == 90.0 and pos(1e9) == 90.0
    assert pos(duration / 2) == pytest.approx(45.0)
    assert pos(0.5) == pytest.approx(0.5 * 60.0 * 0.25)  # a = 60 deg/s^2
    duration, pos = trapezoid(-0.1, 2.0, 1.0)  # short move: triangular
    assert duration == pytest.approx(2 * np.sqrt(0.1 / 2.0))
    assert pos(duration / 2) == pytest.approx(-0.05)
    assert trapezoid(0.0, 1.0, 1.0)[0] == 0.0


@pytest.mark.parametrize(
    "load, force, severity",
    [
        (520.0, 500.0, AlarmSeverity.MAJOR_ALARM),  # over range: clipped, MAJOR
        (470.0, 470.0, AlarmSeverity.MINOR_ALARM),
        (22.0, 22.0, AlarmSeverity.NO_ALARM),
    ],
)
def test_force_sensor_range_and_alarms(load, force, severity):
    import asyncio
    import types

    from operando.iocs.xct import XCTStation

    station = XCTStation(prefix="unit:", time_scale=1.0)
    station.cell = types.SimpleNamespace(force_n=load)
    asyncio.run(station.force._update())
    assert station.force.force.value == pytest.approx(force, abs=0.1)
    assert station.force.bridge.value == pytest.approx(force / 250.0, abs=1e-3)
    assert station.force.force.alarm.severity == severity


def test_held_clock_starts_on_release(tmp_path):
    ioc = start_xct_ioc(tmp_path, time_scale=1000, extra=("--hold",))
    prefix = ioc.prefix
    try:
        assert get(prefix + "clock:hold") == 1
        time.sleep(0.1)
        assert get(prefix + "clock:time") == 0.0
        assert get(prefix + "force:force") == pytest.approx(22.0, abs=0.1)
        put(prefix + "clock:hold", 0, wait=True)
        put(prefix + "clock:wait", 50.0, wait=True)  # 0.05 s wall
        assert 50.0 <= get(prefix + "clock:time") < 1000.0
    finally:
        ioc.stop()
    assert ioc.returncode is None  # stopped and forgotten
