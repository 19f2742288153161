"""SAXS/WAXS plans against the real simulator IOC, data read back through Tiled."""

from __future__ import annotations

import json
from collections import Counter

import h5py
import numpy as np
import pyFAI
import pytest

from operando.devices.saxs import make_saxs_station
from operando.plans.alignment import GridBounds
from operando.plans.saxs import align, background, raster, saxs_waxs_operando
from operando.plans.validation import PlanArgumentError
from operando.session import make_tiled_writer

from .simulators import start_saxs_ioc

GRID = dict(x_range=(-2.0, 2.0), y_range=(0.05, 0.35), shape=(4, 5))


@pytest.fixture(scope="module")
def saxs_station(tiled_server):
    """The simulator (mounted 0.3 mm off-centre, 1 mm lower) writing where Tiled reads."""
    base = tiled_server.layout.frames / "saxs-plans"
    ioc = start_saxs_ioc(base, time_scale=2000, extra=["--mount-offset", "0.3", "-0.2"])
    station = make_saxs_station(ioc.prefix, write_path=ioc.frames_dir, timeout=15)
    yield station
    for dev in station.devices().values():
        dev.destroy()
    ioc.stop()


def _docs(RE, name):
    return [d for n, d in RE.docs if n == name]


def test_alignment_locates_cathode_and_window(RE, saxs_station):
    bounds = RE(
        align(saxs_station, y_range=(-0.6, 1.6), y_num=45, x_range=(-4.0, 4.0), x_num=33)
    ).plan_result
    y_step, x_step = 2.2 / 44, 8.0 / 32
    # Mounted at (0.3, -0.2) mm: cathode 0..0.35 mm and window |x| <= 2.5 mm, shifted.
    assert bounds.y[0] == pytest.approx(-0.2, abs=y_step)
    assert bounds.y[1] == pytest.approx(0.15, abs=y_step)
    assert bounds.x[0] == pytest.approx(-2.2, abs=x_step)
    assert bounds.x[1] == pytest.approx(2.8, abs=x_step)
    starts = _docs(RE, "start")
    assert [s["direction"] for s in starts] == ["vertical", "horizontal"]
    assert all(s["step"] == "alignment" for s in starts)
    assert saxs_station.shutter.open_rbv.get() == 0


def test_raster_documents_shape_and_files(RE, saxs_station, tiled_server):
    from tiled.client import from_uri

    RE.subscribe(make_tiled_writer(tiled_server.client()))
    uid = RE(
        raster(saxs_station, exposure=1.0, cycle=0, step="ocv", experiment_id="exp-r", **GRID)
    ).run_start_uids[0]
    start = json.loads(json.dumps(_docs(RE, "start")[0]))  # as stored: lists, not tuples
    assert start["shape"] == [4, 5] and start["snaking"] == [False, True]
    assert start["extents"] == [[0.05, 0.35], [-2.0, 2.0]]
    assert start["step"] == "ocv" and start["technique"] == "saxs_waxs"
    events = _docs(RE, "event")
    assert len(events) == 20
    xs = [e["data"]["stage_x"] for e in events]
    ys = [e["data"]["stage_y"] for e in events]
    # Snaking: the second row runs backwards.
    assert xs[:5] == pytest.approx(list(np.linspace(-2, 2, 5)), abs=1e-3)
    assert xs[5:10] == pytest.approx(list(np.linspace(2, -2, 5)), abs=1e-3)
    assert sorted(set(np.round(ys, 3))) == pytest.approx([0.05, 0.15, 0.25, 0.35])
    for e in events:
        for key in ("clock_time", "pstat_ewe", "pstat_capacity", "diode_trans"):
            assert key in e["data"]
    (desc,) = _docs(RE, "descriptor")
    geometry = json.loads(desc["configuration"]["waxs"]["data"]["waxs_cam_geometry"])
    ai = pyFAI.load(geometry)
    assert ai.wavelength == pytest.approx(12.398419843320026e-10 / 16.0, rel=1e-3)
    resources = _docs(RE, "stream_resource")
    assert sorted(r["data_key"] for r in resources) == ["saxs_image", "waxs_image"]
    for res in resources:
        with h5py.File(res["uri"].removeprefix("file://localhost"), "r", swmr=True) as f:
            assert f["/entry/data/data"].shape[0] == 20
            assert f["/entry/data/data"].dtype == np.int32
    # Read back through a plain Tiled client.
    client = from_uri(tiled_server.uri, api_key=tiled_server.api_key, structure_clients="numpy")
    run = client["raw"][uid]
    waxs = run["primary"]["waxs_image"].read()
    assert waxs.shape[0] == 20 and waxs.max() > 0
    assert saxs_station.shutter.open_rbv.get() == 0


def test_background_uses_empty_cell(RE, saxs_station):
    RE(background(saxs_station, x=0.3, y=0.0, exposure=1.0))
    start = _docs(RE, "start")[0]
    assert start["step"] == "background"
    res = {
        r["data_key"]: r["uri"].removeprefix("file://localhost")
        for r in _docs(RE, "stream_resource")
    }
    with h5py.File(res["waxs_image"], "r", swmr=True) as f:
        empty = f["/entry/data/data"][-1]
    assert empty.max() > 0
    assert saxs_station.sample.slot.get() == "cell"
    assert saxs_station.shutter.open_rbv.get() == 0


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(x_range=(-2.0, 20.0)), "raster x"),
        (dict(y_range=(0.1, 9.0)), "raster y"),
        (dict(x_range=(1.0, 1.0)), "zero step"),
        (dict(shape=(0, 5)), "shape"),
        (dict(exposure=0.0), "exposure"),
        (dict(exposure=-7.0), "exposure"),
    ],
)
def test_bad_grids_rejected_before_motion(RE, saxs_station, bad, message):
    kwargs = dict(GRID, exposure=1.0)
    kwargs.update(bad)
    x0, y0 = saxs_station.stage.x.position, saxs_station.stage.y.position
    with pytest.raises(PlanArgumentError, match=message):
        RE(raster(saxs_station, **kwargs))
    assert RE.docs == []
    assert saxs_station.stage.x.position == pytest.approx(x0)
    assert saxs_station.stage.y.position == pytest.approx(y0)


def test_operando_cycles_with_rasters(RE, saxs_station):
    bounds = GridBounds(x=(-2.2, 2.8), y=(-0.2, 0.15))
    result = RE(
        saxs_waxs_operando(
            saxs_station,
            bounds=bounds,
            shape=(2, 2),
            cycles=1,
            raster_every=3 * 3600.0,
            exposure=1.0,
            experiment_id="exp-op",
        )
    ).plan_result
    kinds = Counter(kind for kind, _, _ in result.runs)
    assert kinds["background"] == 1 and kinds["ocv"] == 1 and kinds["operando"] >= 3
    assert result.end_state == "done"
    starts = {d["uid"]: d for d in _docs(RE, "start")}
    operando = [starts[uid] for kind, _, uid in result.runs if kind == "operando"]
    assert [s["raster_index"] for s in operando] == list(range(len(operando)))
    assert all(s["experiment_id"] == "exp-op" and s["cycle"] == 1 for s in operando)
    # Every point carries the electrochemistry: discharge then charge, ≈37 % back.
    events = _docs(RE, "event")
    half = np.array(
        [e["data"]["pstat_half_cycle"] for e in events if "pstat_half_cycle" in e["data"]]
    )
    assert {0, 1} <= set(half.tolist())
    assert saxs_station.pstat.state.get() in ("done", "aborted")
    assert saxs_station.shutter.open_rbv.get() == 0
