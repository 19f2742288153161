"""The SAXS/WAXS station IOC (``operando.iocs.saxs``) as a real subprocess, over Channel Access.

Ground truth comes from the IOC's ``--truth-file`` (JSON lines), never from PVs.
The module's IOC runs at ``SAXS_TEST_SCALE`` (10^4): a C/20 cycle (~12 h of cell
time) takes ~4.4 s wall.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from .ca_client import acquire_while_reading, get, get_enum, get_str, put, put_rejected, wait_for
from .simulators import start_saxs_ioc


@pytest.fixture(scope="module")
def P(saxs_ioc):
    return saxs_ioc.prefix


def truth_events(ioc, event):
    lines = Path(ioc.truth_file).read_text().splitlines()
    return [rec for rec in map(json.loads, lines) if rec["event"] == event]


# -- the contract, in process ----------------------------------------------------------

CONTRACT = (
    """
clock:time clock:scale clock:wait clock:hold
pstat:mode pstat:current_sp pstat:c_rate pstat:c_rate_current pstat:duration pstat:cycles
pstat:e_min pstat:e_max pstat:start pstat:stop pstat:state pstat:ewe pstat:i pstat:charge
pstat:elapsed pstat:capacity pstat:half_cycle pstat:direction
stage:x stage:y sample:select shutter:open shutter:open_rbv diode:trans
beam:config beam:energy_kev beam:wavelength_A beam:size_h_um beam:size_v_um
saxs:cam:BeamstopRadius_RBV
""".split()
    + [
        f"{d}:cam:{n}"
        for d in ("saxs", "waxs")
        for n in (
            "AcquireTime",
            "NumExposures",
            "Acquire",
            "ArrayCounter_RBV",
            "SizeX_RBV",
            "SizeY_RBV",
            "Geometry_RBV",
            "PoniFile_RBV",
        )
    ]
    + [
        f"{d}:HDF1:{n}"
        for d in ("saxs", "waxs")
        for n in (
            "FilePath",
            "FileName",
            "FileNumber",
            "FullFileName_RBV",
            "Capture",
            "Capture_RBV",
            "NumCaptured_RBV",
        )
    ]
)


def test_contract_pvs_are_served():
    from caproto import ChannelType as CT

    from operando.iocs.saxs import SaxsStation

    pvdb = SaxsStation(prefix="u:").pvdb
    missing = [name for name in CONTRACT if "u:" + name not in pvdb]
    assert not missing
    geometry = pvdb["u:saxs:cam:Geometry_RBV"]
    assert geometry.data_type == CT.CHAR and geometry.max_length == 8192
    assert pvdb["u:waxs:cam:PoniFile_RBV"].data_type == CT.CHAR
    assert pvdb["u:stage:x"].record_type == "motor"
    assert list(pvdb["u:pstat:mode"].enum_strings) == ["OCV", "CC", "GCPL"]
    assert list(pvdb["u:pstat:direction"].enum_strings) == ["rest", "discharge", "charge"]
    assert list(pvdb["u:sample:select"].enum_strings) == ["cell", "empty_cell"]


# -- beam, clock ----------------------------------------------------------------------


def test_synchrotron_beam(saxs_ioc, P):
    assert get(P + "clock:scale") == pytest.approx(saxs_ioc.scale)
    assert get_enum(P + "beam:config") == "synchrotron"
    assert get(P + "beam:energy_kev") == pytest.approx(16.0)
    assert get(P + "beam:wavelength_A") == pytest.approx(12.398419843 / 16.0, rel=1e-6)
    assert get(P + "beam:size_h_um") == pytest.approx(1000.0)
    assert get(P + "beam:size_v_um") == pytest.approx(88.0)
    assert get(P + "saxs:cam:AcquireTime") == pytest.approx(7.0)  # per point, SPEC


# -- potentiostat -----------------------------------------------------------------------


def _technique(P, mode, *, current=0.0, duration=3600.0, e_min=-10.0, e_max=10.0, cycles=1):
    for name, value in (
        ("mode", mode),
        ("current_sp", current),
        ("duration", duration),
        ("e_min", e_min),
        ("e_max", e_max),
        ("cycles", cycles),
    ):
        put(P + "pstat:" + name, value)
    put(P + "pstat:start", 1)


def _wait_state(P, states, timeout=10.0):
    return wait_for(lambda: (s := get_enum(P + "pstat:state")) in states and s, timeout)


def test_gcpl_cycles_by_itself(saxs_ioc, P):
    """C/20 cycling between 0.6 and 2.4 V: the first technique on the pristine cell."""
    from operando.iocs.physics.saxs_cell import SaxsCell

    one_c = get(P + "pstat:c_rate_current")
    model = SaxsCell(seed=0)
    assert one_c == pytest.approx(model.c_rate_current(1.0))  # 0.878 mA
    current = one_c / 20
    _technique(P, "GCPL", current=current, duration=1e8, e_min=0.6, e_max=2.4, cycles=1)
    assert get(P + "pstat:c_rate") == pytest.approx(0.05)
    samples = []
    deadline = time.monotonic() + 30
    while True:
        state = get_enum(P + "pstat:state")
        half = get(P + "pstat:half_cycle")
        sample = (
            half,
            get_enum(P + "pstat:direction"),
            get(P + "pstat:capacity"),
            get(P + "pstat:i"),
            state,
        )
        # The PVs are read one after another: keep the samples the cell did not
        # turn in the middle of (under load the reads are milliseconds apart).
        if get(P + "pstat:half_cycle") == half:
            samples.append(sample)
        if state != "running" or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert state == "done"
    running = [s for s in samples if s[4] == "running"]
    halves = [s[0] for s in running]
    assert halves == sorted(halves) and set(halves) == {0, 1}
    # The IOC updates half_cycle, direction and current one PV after another: a
    # sample next to the turn may straddle that update, so judge the others.
    steady = [s for a, s, b in zip(running, running[1:], running[2:]) if a[0] == s[0] == b[0]]
    assert {s[0] for s in steady} == {0, 1}
    for half, direction, _, i, _ in steady:
        assert direction == ("discharge", "charge")[half]
        assert i == pytest.approx(current if half == 0 else -current)
    for half in (0, 1):  # capacity grows through each half cycle
        caps = [s[2] for s in running if s[0] == half]
        assert caps == sorted(caps)
    assert get_enum(P + "pstat:direction") == "rest" and get(P + "pstat:i") == 0.0
    assert get(P + "pstat:half_cycle") == 1

    turns = truth_events(saxs_ioc, "half_cycle")
    assert [t["ended"] for t in turns] == [0, 1]
    assert [t["half"] for t in turns] == [1, None]
    q_dis, q_chg = turns[0]["capacity_mah"], turns[1]["capacity_mah"]
    # turning points at the limits, exactly (the cell's time_to_limit, not the tick)
    assert turns[0]["ewe_v"] == pytest.approx(0.6, abs=1e-6)
    assert turns[1]["ewe_v"] == pytest.approx(2.4, abs=1e-6)
    t_dis = model.time_to_limit(current, 0.6)
    assert q_dis == pytest.approx(current * t_dis / 3.6, rel=1e-9)
    model.advance(t_dis, current)
    t_chg = model.time_to_limit(-current, 2.4)
    assert q_chg == pytest.approx(current * t_chg / 3.6, rel=1e-6)
    assert turns[1]["t"] - turns[0]["t"] == pytest.approx(t_chg, rel=1e-6)
    # the paper: a charge recovers ~37 % of the first discharge
    assert q_chg / q_dis == pytest.approx(0.37, abs=0.02)
    assert get(P + "pstat:capacity") == pytest.approx(q_chg, rel=1e-6)
    assert get(P + "pstat:charge") == pytest.approx((q_dis - q_chg) * 3.6, rel=1e-6)
    end = truth_events(saxs_ioc, "technique_end")[-1]
    assert end["reason"] == "done" and end["mode"] == "GCPL"
    assert end["truth"]["discharge_capacities_mah"] == pytest.approx([q_dis])
    assert end["truth"]["charge_capacities_mah"] == pytest.approx([q_chg])
    assert end["t"] == pytest.approx(turns[1]["t"])
    start = truth_events(saxs_ioc, "technique_start")[-1]
    assert start["mode"] == "GCPL" and start["cycles"] == 1
    assert get(P + "pstat:elapsed") == pytest.approx(t_dis + t_chg, rel=1e-6)


def test_cc_done_limit_and_stop(saxs_ioc, P):
    current = get(P + "pstat:c_rate_current") / 20
    _technique(P, "CC", current=current, duration=3600.0)
    assert get_enum(P + "pstat:direction") == "discharge"
    assert _wait_state(P, {"done", "limit", "aborted"}) == "done"
    assert get(P + "pstat:capacity") == pytest.approx(current * 3600 / 3.6, rel=1e-9)
    assert get(P + "pstat:charge") == pytest.approx(current * 3600, rel=1e-9)
    assert get_enum(P + "pstat:direction") == "rest"

    ewe = get(P + "pstat:ewe")  # at rest
    _technique(P, "CC", current=current, duration=1e6, e_min=ewe - 0.3)
    assert _wait_state(P, {"done", "limit", "aborted"}) == "limit"
    end = truth_events(saxs_ioc, "technique_end")[-1]
    assert end["reason"] == "limit" and end["elapsed_s"] < 1e6

    _technique(P, "CC", current=-current, duration=1e6)
    assert get_enum(P + "pstat:direction") == "charge"
    time.sleep(0.1)
    put(P + "pstat:stop", 1)
    assert get_enum(P + "pstat:state") == "aborted"
    assert get(P + "pstat:i") == 0.0 and get_enum(P + "pstat:direction") == "rest"
    assert get(P + "pstat:charge") < 0 and get(P + "pstat:capacity") > 0


@pytest.mark.parametrize(
    "pv, value, expected",
    [
        ("pstat:current_sp", 5.0, 0.8),
        ("pstat:cycles", 1000, 100),
        ("pstat:e_min", -99.0, -10.0),
        ("saxs:cam:AcquireTime", -1.0, 1e-3),
    ],
)
def test_out_of_range_puts_are_clipped(saxs_ioc, P, pv, value, expected):
    old = get(P + pv)
    try:
        put(P + pv, value)
        assert get(P + pv) == pytest.approx(expected)
    finally:
        put(P + pv, old)


# -- stage, diode ------------------------------------------------------------------------


def test_stage_limits_with_ophyd(saxs_ioc, P):
    import ophyd
    from ophyd.utils import LimitError

    ophyd.set_cl("caproto")
    x = ophyd.EpicsMotor(P + "stage:x", name="x")
    y = ophyd.EpicsMotor(P + "stage:y", name="y")
    try:
        x.wait_for_connection(timeout=5)
        y.wait_for_connection(timeout=5)
        assert x.limits == (-5.0, 5.0) and y.limits == (-2.0, 3.0)
        assert x.egu == "mm" and y.egu == "mm"
        y.set(0.5).wait(timeout=10)
        assert y.position == pytest.approx(0.5)
        with pytest.raises(LimitError):
            x.set(6.0)
        with pytest.raises(LimitError):
            y.set(-2.5)
        put_rejected(P + "stage:y", 5.0)  # a raw put outside the soft limits
        assert get(P + "stage:y.LVIO") == 1
        assert get(P + "stage:y.RBV") == pytest.approx(0.5)
        y.set(0.0).wait(timeout=10)
    finally:
        x.destroy()
        y.destroy()


def test_diode_scan_shows_the_stack(saxs_ioc, P):
    put(P + "sample:select", "cell")
    put(P + "stage:x", 0.0)
    put(P + "shutter:open", 1)
    assert get(P + "shutter:open_rbv") == 1
    try:

        def trans_at(y):
            put(P + "stage:y", y)
            return get(P + "diode:trans")

        # y scan across the stack (88 um beam): collector, cathode, separator, anode
        ys = np.round(np.arange(-0.4, 1.6, 0.05), 3)
        scan = np.array([trans_at(y) for y in ys])
        inside = (ys > 0.05) & (ys < 1.1)
        assert np.all(scan[~inside & ((ys < -0.05) | (ys > 1.2))] < 1e-6)  # steel
        cathode, separator, anode = (
            scan[(ys > a) & (ys < b)] for a, b in ((0.05, 0.3), (0.4, 0.8), (0.9, 1.1))
        )
        assert np.all((cathode > 0.25) & (cathode < 0.45))  # ~0.35 (Li2S changes it a bit)
        assert np.all((separator > 0.13) & (separator < 0.19))  # ~0.16
        assert np.all((anode > 3e-4) & (anode < 3e-3))  # ~1e-3
        assert np.ptp(separator) < 0.02 * separator.mean()  # noise ~0.2 %
        # the beside-the-stack PEEK body (x scan at the cathode)
        put(P + "stage:y", 0.175)
        put(P + "stage:x", 4.5)
        body = get(P + "diode:trans")
        assert 0 < body < 0.5 * cathode.mean()
        put(P + "stage:x", 0.0)
        # the empty cell: the windows only
        put(P + "sample:select", "empty_cell")
        assert get_enum(P + "sample:select_rbv") == "empty_cell"
        assert get(P + "diode:trans") == pytest.approx(0.897, rel=0.02)
        put(P + "shutter:open", 0)
        assert get(P + "diode:trans") == 0.0
    finally:
        put(P + "shutter:open", 0)
        put(P + "sample:select", "cell")
        put(P + "stage:y", 0.0)


def test_idle_ioc_does_not_spin(saxs_ioc, P):
    """At a high time scale the loops still sleep (>= 20 ms): little CPU when idle."""
    put(P + "shutter:open", 1)  # the diode loop works with the beam on

    def cpu():
        fields = Path(f"/proc/{saxs_ioc.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    try:
        c0, w0 = cpu(), time.monotonic()
        time.sleep(1.5)
        c1, w1 = cpu(), time.monotonic()
    finally:
        put(P + "shutter:open", 0)
    assert (c1 - c0) / (w1 - w0) < 0.25


# -- detectors --------------------------------------------------------------------------


def _geometry(P, det):
    import pyFAI

    text = get_str(P + f"{det}:cam:Geometry_RBV")
    return pyFAI.load(json.loads(text)), text


def test_geometry_loads_with_pyfai_and_gives_the_q_ranges(saxs_ioc, P):
    import pyFAI

    ai, text = _geometry(P, "saxs")
    assert len(text) > 40  # longer than a DBR_STRING
    shape = (get(P + "saxs:cam:SizeY_RBV"), get(P + "saxs:cam:SizeX_RBV"))
    assert ai.detector.shape == shape == (1043, 981)
    assert get_enum(P + "saxs:cam:Model_RBV") == "Pilatus1M"
    q = ai.qArray(shape)  # nm^-1
    valid = ~ai.detector.mask.astype(bool)
    radius = get(P + "saxs:cam:BeamstopRadius_RBV")
    q_min = 4 * np.pi * np.sin(0.5 * np.arctan(radius / ai.dist)) / (ai.wavelength * 1e9)
    assert q_min == pytest.approx(0.03, rel=0.05)
    assert q[valid].max() == pytest.approx(6.71, rel=0.05)
    poni = get_str(P + "saxs:cam:PoniFile_RBV")
    assert Path(poni).parent == Path(saxs_ioc.frames_dir)
    from_file = pyFAI.load(poni)
    for attr in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength"):
        assert getattr(from_file, attr) == pytest.approx(getattr(ai, attr))

    ai, _ = _geometry(P, "waxs")
    shape = (get(P + "waxs:cam:SizeY_RBV"), get(P + "waxs:cam:SizeX_RBV"))
    assert ai.detector.shape == shape == (195, 487)
    q = ai.qArray(shape)
    assert q.min() == pytest.approx(16.9, rel=0.05)
    assert q.max() == pytest.approx(34.7, rel=0.05)
    from_file = pyFAI.load(get_str(P + "waxs:cam:PoniFile_RBV"))
    assert from_file.rot2 == pytest.approx(ai.rot2) and from_file.dist == pytest.approx(ai.dist)


def _acquire_series(P, det, steps):
    """Capture one file of frames; ``steps``: callables run before each frame."""
    put(P + f"{det}:HDF1:FileName", f"test_{det}")
    put(P + f"{det}:HDF1:Capture", 1)
    path = Path(get_str(P + f"{det}:HDF1:FullFileName_RBV"))
    shape = (get(P + f"{det}:cam:SizeY_RBV"), get(P + f"{det}:cam:SizeX_RBV"))
    try:
        for k, step in enumerate(steps):
            step()
            put(P + f"{det}:cam:Acquire", 1, timeout=20)
            assert get(P + f"{det}:HDF1:NumCaptured_RBV") == k + 1
        # readable with SWMR while the file is still open
        assert get(P + f"{det}:HDF1:Capture_RBV") == 1
        with h5py.File(path, "r", swmr=True) as f:
            dset = f["/entry/data/data"]
            assert dset.dtype == np.int32
            assert dset.shape == (len(steps), *shape)
            assert dset.chunks == (1, *shape)
            frames = dset[()]
            assert f["/entry"].attrs["detector_role"] == det
    finally:
        put(P + f"{det}:HDF1:Capture", 0)
    assert get(P + f"{det}:HDF1:Capture_RBV") == 0
    return path, frames


@pytest.mark.parametrize("det", ["saxs", "waxs"])
def test_frames_to_hdf5(saxs_ioc, P, det):
    put(P + f"{det}:cam:AcquireTime", 7.0)
    put(P + f"{det}:cam:NumExposures", 1)
    put(P + "stage:x", 0.0)
    put(P + "stage:y", 0.175)  # cathode centre
    put(P + "sample:select", "cell")
    counter = get(P + f"{det}:cam:ArrayCounter_RBV")
    steps = [
        lambda: put(P + "shutter:open", 1),  # the cell
        lambda: put(P + "shutter:open", 0),  # closed: no scattering
        lambda: (
            put(P + "shutter:open", 1),
            put(P + "sample:select", "empty_cell"),
        ),  # the empty cell
    ]
    try:
        path, (cell, closed, empty) = _acquire_series(P, det, steps)
    finally:
        put(P + "shutter:open", 0)
        put(P + "sample:select", "cell")
    assert get(P + f"{det}:cam:ArrayCounter_RBV") == counter + 3
    gaps = cell == -1
    assert np.array_equal(gaps, closed == -1) and np.array_equal(gaps, empty == -1)
    assert cell.max() > 100 and cell[~gaps].sum() > 1e6
    assert closed.max() == 0 and not closed[~gaps].any()  # no counts at all
    total_cell, total_empty = cell[~gaps].sum(), empty[~gaps].sum()
    assert abs(total_cell - total_empty) > 0.1 * total_cell  # the cell scatters differently
    assert np.mean(np.abs(cell[~gaps] - empty[~gaps])) > 3 * np.sqrt(max(cell[~gaps].mean(), 1))

    records = [r for r in truth_events(saxs_ioc, "frame") if r["file"] == str(path)]
    assert [r["index"] for r in records] == [0, 1, 2]
    assert [r["shutter_open"] for r in records] == [True, False, True]
    assert [r["slot"] for r in records] == ["cell", "cell", "empty_cell"]
    assert all(r["detector"] == det for r in records)
    assert [r["frame_sum"] for r in records] == [int(f[f > 0].sum()) for f in (cell, closed, empty)]
    rec = records[0]
    assert rec["cell_y_mm"] == pytest.approx(0.175) and rec["exposure_s"] == 7.0
    assert rec["t"] - rec["t_start"] >= 7.0
    assert {"Li6PS5Cl", "S", "C", "PEEK"} <= set(rec["footprint"]["volumes"])
    assert set(records[2]["footprint"]["volumes"]) == {"PEEK"}
    assert 0 < rec["state_of_discharge"] < 1.2
    assert math.isfinite(rec["li2s_size_nm"]) and 0.8 <= rec["li2s_size_nm"] <= 1.75
    assert "capacity_mah" in rec


def test_acquire_keeps_the_loop_free(saxs_ioc, P):
    put(P + "saxs:cam:AcquireTime", 3000.0)  # 0.3 s wall
    try:
        reads, elapsed = acquire_while_reading(P + "saxs:cam:Acquire", P + "clock:time")
    finally:
        put(P + "saxs:cam:AcquireTime", 7.0)
    assert len(reads) > 5 and reads == sorted(reads)
    assert elapsed >= 2 * 3000.0


# -- the laboratory set-up ---------------------------------------------------------------


def test_lab_beamline(tmp_path):
    ioc = start_saxs_ioc(tmp_path, beamline="lab")
    P = ioc.prefix
    try:
        assert get_enum(P + "beam:config") == "lab"
        assert get(P + "beam:wavelength_A") == pytest.approx(1.5406, abs=1e-6)
        assert get(P + "beam:energy_kev") == pytest.approx(8.048, abs=1e-3)
        assert (get(P + "beam:size_h_um"), get(P + "beam:size_v_um")) == pytest.approx(
            (1500.0, 100.0)
        )
        assert get(P + "saxs:cam:AcquireTime") == pytest.approx(80.0)
        assert get_enum(P + "saxs:cam:Model_RBV") == "Eiger2_1M"
        geometry = json.loads(get_str(P + "saxs:cam:Geometry_RBV"))
        assert geometry["wavelength"] == pytest.approx(1.5406e-10)
        assert Path(get_str(P + "waxs:cam:PoniFile_RBV")).name == "waxs_lab.poni"
    finally:
        ioc.stop()
