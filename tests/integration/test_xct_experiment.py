"""The whole operando XCT protocol on the simulator, default seed, on virtual time.

One module-scoped run of ``xct_operando`` (cycles until failure, then the
post-mortem scans) with its own IOC; the tests check the protocol's documents
and the paper's figures (SPEC.md, XCT table) as recorded by the plans: the
force, the potential and the charge in the ``cell`` stream, and the stack
geometry from the simulator's ground-truth file (never read by the plans).
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import numpy as np
import pytest

from operando.devices.xct import make_xct_station
from operando.plans.xct import HOUR, current_for_density, xct_operando
from operando.session import make_run_engine

from .simulators import start_xct_ioc

pytestmark = pytest.mark.slow  # the whole protocol, to the short circuit

SCALE = "virtual"
M_LI, RHO_LI, FARADAY = 6.94, 0.534, 96485.332


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    ioc = start_xct_ioc(
        tmp_path_factory.mktemp("xct-exp"), time_scale=SCALE, seed=0, extra=["--hold"]
    )
    station = make_xct_station(ioc.prefix, write_path=ioc.frames_dir, timeout=15)
    RE = make_run_engine(loop=asyncio.new_event_loop(), clock=station.clock)
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    ioc.release_hold()  # cell time 0 = the assembled cell, as the protocol starts
    result = RE(
        xct_operando(
            station,
            cycles=14,
            num_projections=5,
            exposure=1.5,
            images_per_projection=1,
            postmortem_projections=5,
            sample_every=900.0,
            experiment_id="exp-full",
            cell="Li|HSE|Li test cell",
        )
    ).plan_result
    truth = [json.loads(line) for line in ioc.truth_file.read_text().splitlines()]
    yield result, docs, truth
    for dev in station.devices().values():
        dev.destroy()
    ioc.stop()


def _runs(docs):
    """start doc, stop doc and {stream: [events]} per run, in order."""
    runs, by_uid, streams = [], {}, {}
    for name, doc in docs:
        if name == "start":
            run = {"start": doc, "events": defaultdict(list)}
            runs.append(run)
            by_uid[doc["uid"]] = run
        elif name == "descriptor":
            streams[doc["uid"]] = (by_uid[doc["run_start"]], doc["name"])
        elif name == "event":
            run, stream = streams[doc["descriptor"]]
            run["events"][stream].append(doc)
        elif name == "stop":
            by_uid[doc["run_start"]]["stop"] = doc
    return runs


def _cell_series(runs, key):
    t, v = [], []
    for run in runs:
        for ev in run["events"]["cell"]:
            t.append(ev["data"]["clock_time"])
            v.append(ev["data"][key])
    order = np.argsort(t)
    return np.asarray(t)[order], np.asarray(v)[order]


def test_protocol_runs_to_short_circuit_in_cycle_11(experiment):
    result, docs, truth = experiment
    runs = _runs(docs)
    steps = [(r["start"]["step"], r["start"]["cycle"]) for r in runs]
    expected = [(s, c) for c in range(1, 12) for s in ("scan3d", "plating")]
    assert steps == expected + [("postmortem", None), ("postmortem", None)]
    assert result.cycles_done == 11
    assert result.failure["cycle"] == 11
    last_plating = runs[-3]
    # Located inside cycle 11's plating, within one radiogram interval (30 min)
    # of the simulator's true short-circuit time.
    cell_t = [ev["data"]["clock_time"] for ev in last_plating["events"]["cell"]]
    assert min(cell_t) < result.failure["time_s"] <= max(cell_t)
    (short,) = [rec for rec in truth if rec.get("event") == "short"]
    assert 0 <= result.failure["time_s"] - short["t"] <= 0.5 * HOUR
    assert "short circuit" in last_plating["stop"]["reason"]
    for run in runs[:-3]:
        assert "short circuit" not in run["stop"].get("reason", "")
    pm = [r["start"] for r in runs[-2:]]
    assert [s["postmortem_scan"] for s in pm] == ["overview", "highres"]
    assert all(s["failure"]["cycle"] == 11 for s in pm)
    for run in runs:
        s = run["start"]
        assert s["experiment_id"] == "exp-full" and s["technique"] == "xct"
        assert s["cell"] == "Li|HSE|Li test cell"
    densities = [
        r["start"]["current_density_uA_cm2"] for r in runs if r["start"]["step"] == "plating"
    ]
    assert densities == [2.0, 20.0] + [40.0] * 9


def test_initial_force_and_pressure(experiment):
    _, docs, _ = experiment
    t, force = _cell_series(_runs(docs), "force_force")
    assert t[0] < 0.1 * HOUR
    assert force[0] == pytest.approx(22.0, rel=0.05)
    pressure_mpa = force[0] / (np.pi * 2.0**2)
    assert pressure_mpa == pytest.approx(1.75, rel=0.05)


def test_force_creeps_to_19_6_and_alternates_in_cycles_7_to_9(experiment):
    _, docs, _ = experiment
    runs = _runs(docs)
    for run in runs:
        s = run["start"]
        if s["step"] != "plating" or s["cycle"] not in (7, 8, 9):
            continue
        cell = run["events"]["cell"]
        f = [ev["data"]["force_force"] for ev in cell]
        assert f[0] == pytest.approx(19.6, abs=0.2)  # start of plating
        assert max(f) == pytest.approx(19.9, abs=0.2)  # end of plating
        assert max(f) - f[0] > 0.1  # rises when plating starts


def test_last_force_and_potential_peaks_before_failure_are_highest(experiment):
    _, docs, _ = experiment
    rises, peaks = {}, {}
    for run in _runs(docs):
        s = run["start"]
        if s["step"] != "plating" or s["cycle"] < 3 or s["cycle"] > 10:
            continue
        cell = run["events"]["cell"]
        f = np.array([ev["data"]["force_force"] for ev in cell])
        e = np.array([ev["data"]["pstat_ewe"] for ev in cell])
        rises[s["cycle"]] = f.max() - f[0]
        peaks[s["cycle"]] = e.max()
    assert max(rises, key=rises.get) == 10
    assert max(peaks, key=peaks.get) == 10


def test_plated_thickness_from_recorded_charge_is_faraday(experiment):
    _, docs, _ = experiment
    area = np.pi * 0.2**2
    for run in _runs(docs):
        s = run["start"]
        if s["step"] != "plating" or s["cycle"] >= 11:
            continue
        charge = max(ev["data"]["pstat_charge"] for ev in run["events"]["cell"])
        h_um = charge * M_LI / (FARADAY * RHO_LI * area) * 1e4
        j = s["current_density_uA_cm2"]
        expected = j * 1e-6 * 6 * HOUR * M_LI / (FARADAY * RHO_LI) * 1e4
        assert h_um == pytest.approx(expected, rel=0.02)
        assert charge == pytest.approx(current_for_density(j) * 6 * HOUR, rel=0.02)
        if j == 40.0:
            assert h_um == pytest.approx(1.16, rel=0.02)


def test_stack_geometry_after_nine_plating_cycles(experiment):
    """Ground truth of the simulator at the last radiogram of the 9th plating (≈81 h)."""
    _, docs, truth = experiment
    frames = [rec for rec in truth if rec.get("event") == "frame"]
    first = frames[0]["truth"]
    assert first["cu_to_cu_um"] == pytest.approx(305.0, abs=1.0)
    assert first["top_li_um"] == pytest.approx(138.0, abs=1.0)
    (ninth,) = [
        r for r in _runs(docs) if r["start"]["step"] == "plating" and r["start"]["cycle"] == 9
    ]
    t_end = max(ev["data"]["clock_time"] for ev in ninth["events"]["primary"])
    at_81 = min(frames, key=lambda rec: abs(rec["t"] - t_end))
    assert abs(at_81["t"] - 81 * HOUR) < 8 * HOUR  # the protocol's cycles, stretched by overheads
    assert at_81["truth"]["cu_to_cu_um"] == pytest.approx(282.0, abs=2.0)
    assert at_81["truth"]["top_li_um"] == pytest.approx(125.0, abs=2.0)
    last = frames[-1]["truth"]
    assert last["li_diameter_um"] == pytest.approx(5000.0, rel=0.05)
