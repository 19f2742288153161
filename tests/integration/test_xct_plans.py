"""XCT plans against the real simulator IOC, data read back through Tiled."""

from __future__ import annotations

from collections import Counter

import bluesky.plan_stubs as bps
import h5py
import numpy as np
import pytest
from ophyd.utils import LimitError

from operando.plans.validation import PlanArgumentError
from operando.plans.xct import (
    current_for_density,
    plating,
    scan3d,
)
from operando.session import make_tiled_writer

SMALL_SCAN = dict(
    num_projections=5,
    exposure=0.5,
    images_per_projection=1,
    num_darks=2,
    num_flats=2,
    sample_every=30.0,
)


def _docs(RE, name):
    return [d for n, d in RE.docs if n == name]


def _streams(RE):
    return {d["uid"]: d["name"] for d in _docs(RE, "descriptor")}


def test_epics_motor_on_simulated_stage(RE, xct):
    th, x = xct.stage.th, xct.stage.x
    low, high = th.limits
    assert (low, high) != (0, 0) and low < 0 < high
    # the readbacks read from the IOC: the monitor's last update may still be on
    # its way when the move's status completes (DMOV) on a loaded machine
    RE(bps.mv(th, 12.5, x, 0.25))
    assert th.user_readback.get(use_monitor=False) == pytest.approx(12.5, abs=1e-3)
    assert x.user_readback.get(use_monitor=False) == pytest.approx(0.25, abs=1e-4)
    with pytest.raises(LimitError):
        th.set(high + 10)
    RE(bps.mv(x, 0.0, th, 0.0))
    assert x.user_readback.get(use_monitor=False) == pytest.approx(0.0, abs=1e-4)


def test_scan3d_streams_metadata_and_files(RE, xct):
    uid = RE(
        scan3d(xct, experiment_id="exp-test", cell="cell-A", cycle=1, **SMALL_SCAN)
    ).run_start_uids[0]
    start = _docs(RE, "start")[0]
    assert start["uid"] == uid
    for key, value in {
        "experiment_id": "exp-test",
        "cell": "cell-A",
        "technique": "xct",
        "step": "scan3d",
        "cycle": 1,
        "plan_name": "scan3d",
        "num_points": 5,
    }.items():
        assert start[key] == value
    streams = _streams(RE)
    per_stream = Counter(streams[e["descriptor"]] for e in _docs(RE, "event"))
    assert per_stream["dark"] == 2 and per_stream["flat"] == 2 and per_stream["primary"] == 5
    assert per_stream["cell"] >= 2
    # One HDF5 file per staged series, one frame per event.
    resources = _docs(RE, "stream_resource")
    assert len(resources) == 3
    datums = _docs(RE, "stream_datum")
    assert len(datums) == 9
    counts = Counter(d["stream_resource"] for d in datums)
    for res in resources:
        path = res["uri"].removeprefix("file://localhost")
        with h5py.File(path, "r", swmr=True) as f:
            data = f["/entry/data/data"]
            assert data.shape[0] == counts[res["uid"]]
            assert data.dtype == np.uint16
    # Angles: start..stop, the first primary event at 0 deg, the last at 360.
    primary = [e for e in _docs(RE, "event") if streams[e["descriptor"]] == "primary"]
    angles = [e["data"]["stage_th"] for e in primary]
    np.testing.assert_allclose(angles, np.linspace(0, 360, 5), atol=1e-2)
    times = [e["data"]["clock_time"] for e in primary]
    assert all(b > a for a, b in zip(times, times[1:]))
    # The source is off and the technique idle after the scan.
    assert xct.source.on_rbv.get() == 0
    stop = _docs(RE, "stop")[0]
    assert stop["exit_status"] == "success"


def _dark_flat_primary(RE):
    """Mean of dark, flat and projection frames from the detector files."""
    streams = _streams(RE)
    by_res = {}
    for res in _docs(RE, "stream_resource"):
        by_res[res["uid"]] = res["uri"].removeprefix("file://localhost")
    means = {}
    for datum in _docs(RE, "stream_datum"):
        name = streams[datum["descriptor"]]
        with h5py.File(by_res[datum["stream_resource"]], "r", swmr=True) as f:
            frame = f["/entry/data/data"][datum["indices"]["start"]]
        means.setdefault(name, []).append(frame.astype(float).mean())
    return {k: float(np.mean(v)) for k, v in means.items()}


def test_darks_flats_projections_physics(RE, xct):
    RE(scan3d(xct, **SMALL_SCAN))
    m = _dark_flat_primary(RE)
    # Source off gives darks near the offset, flats are bright, the cell absorbs.
    assert m["dark"] < 0.05 * m["flat"]
    assert m["dark"] < m["primary"] < m["flat"]


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(exposure=-1.0), "exposure"),
        (dict(exposure=0.0), "exposure"),
        (dict(num_projections=0), "num_projections"),
        (dict(images_per_projection=0), "images_per_projection"),
        (dict(stop=5000.0), "rotation angle"),
        (dict(kv=90.0), "kv"),
        (dict(flat_offset=500.0), "flat-field"),
    ],
)
def test_scan3d_rejects_bad_input_before_motion(RE, xct, bad, message):
    th0 = xct.stage.th.position
    x0 = xct.stage.x.position
    kwargs = dict(SMALL_SCAN, **bad)
    with pytest.raises(PlanArgumentError, match=message):
        RE(scan3d(xct, **kwargs))
    assert RE.docs == []
    assert xct.stage.th.position == pytest.approx(th0, abs=1e-6)
    assert xct.stage.x.position == pytest.approx(x0, abs=1e-6)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(current_density=-2.0), "current_density"),
        (dict(current_density=0.0), "current_density"),
        (dict(current_density=1e10), "plating current"),
        (dict(duration=-5.0), "duration"),
        (dict(radiogram_every=0.0), "radiogram_every"),
    ],
)
def test_plating_rejects_bad_input_before_motion(RE, xct, bad, message):
    kwargs = dict(current_density=40.0, duration=600.0, radiogram_every=300.0)
    kwargs.update(bad)
    with pytest.raises(PlanArgumentError, match=message):
        RE(plating(xct, **kwargs))
    assert RE.docs == []
    assert xct.pstat.state.get() != "running"


def test_plating_radiograms_cell_stream_and_charge(RE, xct):
    j = 40.0
    duration, every = 1800.0, 600.0
    result = RE(
        plating(
            xct,
            current_density=j,
            duration=duration,
            radiogram_every=every,
            sample_every=120.0,
            exposure=0.5,
            images_per_radiogram=1,
            num_darks=1,
            num_flats=1,
            cycle=3,
            experiment_id="exp-p",
        )
    ).plan_result
    assert not result.shorted and result.end_state == "done"
    streams = _streams(RE)
    events = _docs(RE, "event")
    per_stream = Counter(streams[e["descriptor"]] for e in events)
    # A radiogram at the start, every 10 min, and one at the end: 0, 10, 20, 30 min.
    assert per_stream["primary"] == result.radiograms == int(duration / every) + 1
    assert per_stream["dark"] == 1 and per_stream["flat"] == 1
    cell = [e for e in events if streams[e["descriptor"]] == "cell"]
    assert len(cell) >= duration / 120.0
    # The source was off between radiograms: a radiogram's frames are not darks.
    m = _dark_flat_primary(RE)
    assert m["primary"] > 5 * m["dark"]
    # Charge passed by the end of the technique = I * t (the IOC integrates it).
    current = current_for_density(j)
    charges = [e["data"]["pstat_charge"] for e in cell]
    assert max(charges) == pytest.approx(current * duration, rel=0.02)
    start = _docs(RE, "start")[0]
    assert start["step"] == "plating" and start["cycle"] == 3
    assert start["current_density_uA_cm2"] == j
    assert _docs(RE, "stop")[0]["reason"].startswith("plating finished")
    assert xct.source.on_rbv.get() == 0


def test_scan3d_into_tiled_read_back_with_plain_client(RE, xct, tiled_server):
    from tiled.client import from_uri

    RE.subscribe(
        make_tiled_writer(tiled_server.client(), backup_directory=tiled_server.layout.backup)
    )
    uid = RE(scan3d(xct, experiment_id="exp-tiled", **SMALL_SCAN)).run_start_uids[0]
    # A plain client: only tiled, numpy structures, nothing of this project.
    client = from_uri(tiled_server.uri, api_key=tiled_server.api_key, structure_clients="numpy")
    run = client["raw"][uid]
    assert run.metadata["start"]["experiment_id"] == "exp-tiled"
    assert run.metadata["stop"]["exit_status"] == "success"
    primary = run["primary"]
    frames = primary["ct_det_image"].read()
    assert frames.shape[0] == 5 and frames.dtype == np.uint16
    rows, cols = xct.ct_det.frame_shape()
    assert frames.shape[1:] == (rows, cols)
    np.testing.assert_allclose(primary["stage_th"].read(), np.linspace(0, 360, 5), atol=1e-2)
    darks = run["dark"]["ct_det_image"].read()
    flats = run["flat"]["ct_det_image"].read()
    assert darks.mean() < frames.mean() < flats.mean()
    cell = run["cell"]
    force = np.asarray(cell["force_force"].read())
    assert np.all((force > 10) & (force < 30))
    assert len(np.asarray(cell["pstat_ewe"].read())) == len(force)


def test_scan_overrunning_the_ocv_step_says_so(RE, xct):
    # 5 projections of 3 x 1.5 s (22.5 s) plus darks and flats cannot fit in 10 s of OCV.
    RE(
        scan3d(
            xct,
            num_projections=5,
            exposure=1.5,
            images_per_projection=3,
            num_darks=1,
            num_flats=1,
            ocv_duration=10.0,
            sample_every=30.0,
        )
    )
    stop = _docs(RE, "stop")[0]
    assert stop["exit_status"] == "success"
    assert "overran the OCV step" in stop["reason"]


def test_scan_within_the_ocv_step_has_no_overrun(RE, xct):
    RE(scan3d(xct, ocv_duration=3600.0, **SMALL_SCAN))
    assert _docs(RE, "stop")[0]["reason"] == ""
