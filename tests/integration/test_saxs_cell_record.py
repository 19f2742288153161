"""The SAXS/WAXS cell record: cycling runs between rasters, the voltage curve up
to both turning potentials, and rasters flagged when they span too much of a
half cycle. A real simulator IOC on virtual time, a real Tiled server read back
through a plain client, the live and offline reductions."""

from __future__ import annotations

import numpy as np
import pytest

from operando.callbacks.saxs.live import SAXSLiveReducer
from operando.callbacks.saxs.offline import reduce_experiment
from operando.devices.saxs import make_saxs_station
from operando.plans.alignment import GridBounds
from operando.plans.saxs import saxs_waxs_operando
from operando.session import make_tiled_writer

from .simulators import start_saxs_ioc

E_MIN, E_MAX = 0.6, 2.4
BOUNDS = GridBounds(x=(-2.0, 2.0), y=(0.0, 0.35))
TOL = 0.02  # V


@pytest.fixture(scope="module")
def station(tiled_server):
    base = tiled_server.layout.frames / "saxs-cell-record"
    ioc = start_saxs_ioc(base, time_scale="virtual")
    station = make_saxs_station(ioc.prefix, write_path=ioc.frames_dir, timeout=15)
    yield station
    for dev in station.devices().values():
        dev.destroy()
    ioc.stop()


def _client(tiled_server):
    from tiled.client import from_uri

    return from_uri(tiled_server.uri, api_key=tiled_server.api_key, structure_clients="numpy")


def _columns(run, stream):
    from operando.callbacks.core import stream_columns

    return {k: np.asarray(v) for k, v in stream_columns(run[stream]).items()}


@pytest.fixture(scope="module")
def experiment(station, tiled_server):
    """One C/5 cycle (≈3 cell hours), a 2 x 2 raster every cell hour, the cell recorded
    every 5 cell minutes (and closer near the limits) between them, reduced live."""
    from bluesky import RunEngine

    RE = RunEngine({}, call_returns_result=True)
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE.subscribe(make_tiled_writer(tiled_server.client()))
    reducer = SAXSLiveReducer(tiled_server.client(), npt=200)
    RE.subscribe(reducer)
    result = RE(
        saxs_waxs_operando(
            station,
            bounds=BOUNDS,
            shape=(2, 2),
            cycles=1,
            c_rate=0.2,
            raster_every=3600.0,
            sample_every=300.0,
            exposure=1.0,
            e_min=E_MIN,
            e_max=E_MAX,
            experiment_id="exp-cell-record",
        )
    ).plan_result
    reducer.close()
    assert not reducer.errors, reducer.errors
    return result, docs, reducer


def test_cell_record_reaches_both_limits(experiment, tiled_server):
    result, docs, reducer = experiment
    assert result.end_state == "done"
    kinds = [kind for kind, _, _ in result.runs]
    assert kinds.count("cycling") >= 2 and kinds.count("operando") >= 3
    raw = _client(tiled_server)["raw"]
    ewe, half, t = [], [], []
    for kind, _, uid in result.runs:
        run = raw[uid]
        start, stop = run.metadata["start"], run.metadata["stop"]
        assert start["experiment_id"] == "exp-cell-record"
        assert stop["exit_status"] == "success"
        if kind == "cycling":
            assert start["step"] == "cycling" and start["cycle"] == 1
            cols = _columns(run, "cell")
        elif kind == "operando":
            cols = _columns(run, "primary")
        else:
            continue
        ewe.append(cols["pstat_ewe"])
        half.append(cols["pstat_half_cycle"])
        t.append(cols["clock_time"])
    ewe, half, t = (np.concatenate(v) for v in (ewe, half, t))
    # Without the cycling runs the rasters alone stay far from the limits.
    discharge, charge = ewe[half == 0], ewe[half == 1]
    assert discharge.min() == pytest.approx(E_MIN, abs=TOL)
    assert charge.max() == pytest.approx(E_MAX, abs=TOL)
    assert discharge.min() >= E_MIN - 1e-3 and charge.max() <= E_MAX + 1e-3
    # The rasters themselves are the points far from the limits.
    op = [uid for kind, _, uid in result.runs if kind == "operando"]
    raster_ewe = np.concatenate([_columns(raw[u], "primary")["pstat_ewe"] for u in op])
    assert np.abs(raster_ewe - E_MIN).min() > TOL and np.abs(raster_ewe - E_MAX).min() > TOL

    # The live reduction's time series, as Tiled holds it: all samples, in time order.
    ts = _client(tiled_server)["reduced"]["exp-cell-record"]["timeseries"].read()
    steps = np.asarray(ts["step"]).astype(str)
    assert {"ocv", "operando", "cycling"} <= set(steps)
    assert np.all(np.diff(np.asarray(ts["time"], float)) >= 0)
    assert int((steps == "cycling").sum()) == len(ewe) - len(raster_ewe)
    h, v = np.asarray(ts["half_cycle"], float), np.asarray(ts["ewe"], float)
    assert v[h == 0].min() == pytest.approx(E_MIN, abs=TOL)
    assert v[(h == 1) & (steps != "ocv")].max() == pytest.approx(E_MAX, abs=TOL)
    # Q₁ is the first discharge's capacity at its turn, from the record.
    exp = reducer.experiments["exp-cell-record"]
    q_record = max(
        float(np.nanmax(r.capacity[r.half_cycle == 0]))
        for r in exp.cell_records.values()
        if np.any(r.half_cycle == 0)
    )
    assert exp.sodc_final and exp.q1_mah == pytest.approx(q_record)
    raster_q = [
        float(np.nanmax(r.raster.capacity[r.raster.half_cycle == 0]))
        for r in exp.rasters()
        if np.any(r.raster.half_cycle == 0)
    ]
    assert exp.q1_mah > max(raster_q)
    sodc = np.asarray(ts["sodc"], float)
    assert np.nanmax(sodc) == pytest.approx(1.0, abs=1e-6)

    # The offline reduction from Tiled alone gives the same time series.
    summary = reduce_experiment(_client(tiled_server), "exp-cell-record", npt=200, write=False)
    off = summary["reduction"].timeseries()
    assert len(off["time"]) == len(ts["time"])
    np.testing.assert_allclose(off["ewe"], v)
    assert summary["q1_mah"] == pytest.approx(exp.q1_mah)


def test_rasters_within_share_not_flagged(experiment, tiled_server):
    result, docs, _ = experiment
    raw = _client(tiled_server)["raw"]
    assert result.shares
    for uid, share in result.shares:
        assert 0.0 <= share["share"] < 0.1 and not share["flagged"]
        stop = raw[uid].metadata["stop"]
        assert "half cycle" not in (stop.get("reason") or "")
        assert raw[uid].metadata["start"]["max_half_cycle_share"] == 0.1
        cols = _columns(raw[uid], "half_cycle_share")
        assert cols["raster_share"][0] == pytest.approx(share["share"])
    # The rasters while the cell cycles pass capacity (the last one, after, none).
    assert any(s["share"] > 0 for _, s in result.shares[:-1])


def test_raster_spanning_too_much_is_flagged(station, tiled_server):
    """At 1C with 120 s points a 2 x 2 raster passes ~15 % of the nominal capacity."""
    from bluesky import RunEngine

    RE = RunEngine({}, call_returns_result=True)
    RE.subscribe(make_tiled_writer(tiled_server.client()))
    result = RE(
        saxs_waxs_operando(
            station,
            bounds=BOUNDS,
            shape=(2, 2),
            cycles=1,
            c_rate=1.0,
            raster_every=1800.0,
            ocv_rasters=0,
            exposure=120.0,
            experiment_id="exp-share",
        )
    ).plan_result
    raw = _client(tiled_server)["raw"]
    flagged = [(u, s) for u, s in result.shares if s["flagged"]]
    calm = [(u, s) for u, s in result.shares if not s["flagged"]]
    assert flagged and calm
    for uid, share in flagged:
        assert share["share"] > 0.1
        reason = raw[uid].metadata["stop"]["reason"]
        assert "of half cycle" in reason and "max_half_cycle_share = 0.1" in reason
        assert raw[uid].metadata["stop"]["exit_status"] == "success"
    for uid, share in calm:
        assert share["share"] <= 0.1
        assert "half cycle" not in (raw[uid].metadata["stop"].get("reason") or "")


@pytest.mark.parametrize(
    "bad, words",
    [
        (dict(sample_every=0.0), ["sample_every", "0"]),
        (dict(sample_every=float("nan")), ["sample_every", "nan"]),
        (dict(sample_every=0.2, cycles=1, c_rate=0.01), ["sample_every", "more than"]),
        (dict(max_half_cycle_share=0.0), ["max_half_cycle_share", "0"]),
        (dict(max_half_cycle_share=1.5), ["max_half_cycle_share", "1.5"]),
    ],
)
def test_bad_record_arguments_rejected_at_the_call(station, bad, words):
    from operando.plans.validation import PlanArgumentError

    with pytest.raises(PlanArgumentError) as info:
        saxs_waxs_operando(station, bounds=BOUNDS, shape=(2, 2), exposure=1.0, **bad)
    assert all(w in str(info.value) for w in words), str(info.value)
    assert str(info.value).startswith("saxs_waxs_operando: ")
