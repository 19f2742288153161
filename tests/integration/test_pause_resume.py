"""Pause and resume keep the science right (real IOC subprocesses, virtual time, real Tiled).

``RE.request_pause()`` is called from a thread when a chosen document comes
(a known point of the step); the RunEngine pauses (``RE.state == "paused"``),
the cell is looked at while paused, then ``RE.resume()`` finishes the step:

* a paused plating passes the same charge as an uninterrupted one (the
  technique runs on through the pause, only the source goes off), and the
  pause is in the run's ``pauses`` stream and its stop document's reason;
* a 3D scan paused between projections ends with every projection once, each
  taken with the source on.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from bluesky.utils import RunEngineInterrupted

from operando.devices.xct import make_xct_station
from operando.plans.stubs import PAUSES_STREAM
from operando.plans.xct import HOUR, current_for_density, plating, scan3d
from operando.session import make_run_engine, make_tiled_writer
from operando.tiled_server import DataLayout, TiledServer

from .simulators import start_xct_ioc

pytestmark = pytest.mark.slow

PLATING = dict(
    current_density=40.0,
    duration=2 * HOUR,
    radiogram_every=0.5 * HOUR,
    sample_every=600.0,
    exposure=0.5,
    images_per_radiogram=1,
    num_darks=1,
    num_flats=1,
)


@pytest.fixture(scope="module")
def tiled_server(tmp_path_factory):
    """A Tiled server of this module's own (patient with a loaded machine)."""
    with TiledServer(DataLayout.at(tmp_path_factory.mktemp("tiled")), startup_timeout=300) as s:
        yield s


@pytest.fixture(scope="module")
def xct_virtual(tmp_path_factory, tiled_server):
    base = tiled_server.layout.frames / "pause-xct"
    ioc = start_xct_ioc(base, time_scale="virtual", binning=4)
    station = make_xct_station(ioc.prefix, write_path=ioc.frames_dir, timeout=15)
    yield ioc, station
    for dev in station.devices().values():
        dev.destroy()
    ioc.stop()


def _engine(station, client):
    RE = make_run_engine(loop=asyncio.new_event_loop(), clock=station.clock)
    RE.subscribe(make_tiled_writer(client, batch_size=1000))
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return RE, docs


def _pause_at(RE, stream, seq_num):
    """Call ``RE.request_pause()`` (from a thread, as a user would) once event
    ``seq_num`` of ``stream`` is emitted; returns the events that triggered it."""
    names, seen = {}, []

    def callback(name, doc):
        if name == "descriptor":
            names[doc["uid"]] = doc["name"]
        elif (
            name == "event"
            and not seen
            and names.get(doc["descriptor"]) == stream
            and doc["seq_num"] == seq_num
        ):
            seen.append(doc)
            threading.Thread(target=RE.request_pause, daemon=True).start()

    RE.subscribe(callback)
    return seen


def _run_paused(RE, plan, on_pause):
    """Run ``plan`` expecting one pause; ``on_pause()`` runs while paused; resume."""
    with pytest.raises(RunEngineInterrupted):
        RE(plan)
    assert RE.state == "paused"
    seen = on_pause()
    result = RE.resume()
    assert RE.state == "idle"
    return result, seen


def _events(docs, uid, stream):
    descs = {
        d["uid"]
        for n, d in docs
        if n == "descriptor" and d["run_start"] == uid and d["name"] == stream
    }
    return [d for n, d in docs if n == "event" and d["descriptor"] in descs]


def _charge(docs, uid):
    """The charge the plating's technique passed, from its last cell sample."""
    return max(abs(e["data"]["pstat_charge"]) for e in _events(docs, uid, "cell"))


def test_paused_plating_passes_the_charge_of_an_uninterrupted_one(xct_virtual, tiled_client):
    ioc, station = xct_virtual
    current = current_for_density(PLATING["current_density"])

    RE, docs = _engine(station, tiled_client)
    plain = RE(plating(station, **PLATING)).plan_result
    q_plain = _charge(docs, plain.uid)
    assert q_plain == pytest.approx(current * PLATING["duration"], rel=0.02)

    RE, docs = _engine(station, tiled_client)
    # pause once the second radiogram of the plating is recorded
    radiograms = _pause_at(RE, "primary", 2)

    def while_paused():
        return {
            "technique": station.pstat.state.get(use_monitor=False),
            "source": int(station.source.on_rbv.get(use_monitor=False)),
            "current": float(station.pstat.current.get(use_monitor=False)),
        }

    result, paused = _run_paused(RE, plating(station, **PLATING), while_paused)
    paused_run = result.plan_result
    # while paused: the current flows on, the source is off
    assert paused == {"technique": "running", "source": 0, "current": pytest.approx(current)}
    q_paused = _charge(docs, paused_run.uid)
    assert q_paused == pytest.approx(q_plain, rel=0.02)
    assert paused_run.end_state == "done"
    assert paused_run.radiograms == plain.radiograms

    stop = [d for n, d in docs if n == "stop" and d["run_start"] == paused_run.uid][0]
    assert stop["exit_status"] == "success"
    assert "paused 1 time(s)" in stop["reason"]
    # the pause, in its own stream: wall and cell times; virtual time stands
    # still while nothing waits on the hardware
    (pause,) = _events(docs, paused_run.uid, PAUSES_STREAM)
    data = pause["data"]
    assert data["pause_end"] > data["pause_start"]
    assert data["pause_cell_end"] == pytest.approx(data["pause_cell_start"], abs=1e-6)
    assert data["pause_cell_start"] >= radiograms[0]["data"]["clock_time"]
    # every cell sample once, in order (nothing replayed twice after the resume)
    cell = _events(docs, paused_run.uid, "cell")
    seq = [e["seq_num"] for e in cell]
    assert seq == list(range(1, len(seq) + 1))
    assert np.all(np.diff([e["data"]["clock_time"] for e in cell]) > 0)

    # the same in Tiled, read back through a plain client
    run = tiled_client["raw"][paused_run.uid]
    assert run.metadata["stop"]["reason"] == stop["reason"]
    assert PAUSES_STREAM in run


def test_paused_scan_takes_every_projection_once_with_the_source_on(xct_virtual, tiled_client):
    ioc, station = xct_virtual
    RE, docs = _engine(station, tiled_client)
    n = 9
    _pause_at(RE, "primary", 4)
    result, _ = _run_paused(
        RE,
        scan3d(
            station,
            num_projections=n,
            exposure=0.5,
            images_per_projection=1,
            num_darks=1,
            num_flats=1,
            sample_every=600.0,
        ),
        lambda: int(station.source.on_rbv.get(use_monitor=False)),
    )
    uid = result.plan_result
    proj = _events(docs, uid, "primary")
    assert [e["seq_num"] for e in proj] == list(range(1, n + 1))
    assert [e["data"]["stage_th"] for e in proj] == pytest.approx(list(np.linspace(0, 360, n)))
    run = tiled_client["raw"][uid]
    frames = np.asarray(run["primary"]["ct_det_image"].read())
    assert frames.shape[0] == n
    # every projection lit: far brighter than the dark frame
    dark = np.asarray(run["dark"]["ct_det_image"].read())[0]
    assert all(f.mean() > 3 * dark.mean() for f in frames)
    assert "paused 1 time(s)" in run.metadata["stop"]["reason"]
