"""Resuming an interrupted experiment (real processes: IOC, Tiled server, the CLI).

The test owns the XCT simulator (virtual time) and the Tiled server; ``operando
run xct`` runs as a subprocess against them, is SIGKILLed once Tiled shows the
3D scan of cycle 2 (no post-mortem scans: they add nothing to the resume), then ``operando run xct --resume ID`` takes the experiment
to its end. One experiment comes out: every step once, the dangling run closed
as ``abort``, the reduction flagging it. A run whose detector file holds fewer
frames than its events recorded reduces with ``incomplete: true``
(``operando reduce UID``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from tiled.client import from_uri
from tiled.queries import Key

from operando.devices.xct import make_xct_station
from operando.plans.resume import INTERRUPTED, find_resume_point
from operando.plans.xct import scan3d
from operando.session import make_run_engine, make_tiled_writer
from operando.tiled_server import DataLayout, TiledServer

from .simulators import start_xct_ioc

pytestmark = pytest.mark.slow

OPERANDO = [str(Path(sys.executable).with_name("operando"))]
EID = "resume-xct"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with TiledServer(DataLayout.at(tmp_path_factory.mktemp("tiled")), startup_timeout=300) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return from_uri(server.uri, api_key=server.api_key)


@pytest.fixture(scope="module")
def ioc(server):
    ioc = start_xct_ioc(server.layout.frames / "ioc", time_scale="virtual", binning=4)
    yield ioc
    ioc.stop()


def _cli(server, ioc, *extra):
    return [
        *OPERANDO,
        "run",
        "xct",
        "--time-scale",
        "virtual",
        "--cycles",
        "2",
        "--projections",
        "21",
        "--no-postmortem",
        "--images",
        "1",
        "--sample-every",
        "600",
        "--prefix",
        ioc.prefix,
        "--tiled-uri",
        server.uri,
        "--api-key",
        server.api_key,
        "--data-dir",
        str(server.layout.root),
        "--no-progress",
        *extra,
    ]


def _runs_of(client, eid):
    if "raw" not in client:  # nothing written yet
        return []
    found = client["raw"].search(Key("start.experiment_id") == eid)
    return sorted(found.items(), key=lambda kv: kv[1].metadata["start"]["time"])


def _wait_for_run(client, eid, step, cycle, proc, timeout=300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the acquisition ended before the awaited run"
        for _, run in _runs_of(client, eid):
            start = run.metadata["start"]
            if start.get("step") == step and start.get("cycle") == cycle:
                return run
        # each try is two requests to the server the run writes to; a scan lasts
        # seconds of wall time, so a try every 0.5 s still finds it open
        time.sleep(0.5)
    raise TimeoutError(f"no {step} run of cycle {cycle} in Tiled after {timeout} s")


def test_killed_experiment_resumes_to_one_consistent_experiment(server, client, ioc, tmp_path):
    env = dict(os.environ)
    log = open(tmp_path / "first.log", "w")  # noqa: SIM115 - closed below
    first = subprocess.Popen(
        _cli(server, ioc, "--experiment-id", EID, "--no-reduction"),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        cut = _wait_for_run(client, EID, "scan3d", 2, first)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        log.close()
    cut_uid = cut.metadata["start"]["uid"]
    assert not client["raw"][cut_uid].metadata.get("stop")

    resumed = subprocess.run(
        _cli(server, ioc, "--resume", EID),
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    (tmp_path / "resumed.log").write_text(resumed.stdout + resumed.stderr)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]

    runs = _runs_of(client, EID)
    steps = [
        (
            r.metadata["start"]["step"],
            r.metadata["start"]["cycle"],
            r.metadata["start"].get("postmortem_scan"),
            r.metadata["stop"]["exit_status"],
        )
        for _, r in runs
    ]
    assert steps == [
        ("scan3d", 1, None, "success"),
        ("plating", 1, None, "success"),
        ("scan3d", 2, None, "abort"),
        ("scan3d", 2, None, "success"),
        ("plating", 2, None, "success"),
    ]
    closed = client["raw"][cut_uid].metadata["stop"]
    assert closed["exit_status"] == "abort"
    assert closed["reason"] == INTERRUPTED.format(experiment_id=EID)
    retaken = runs[3][1].metadata["start"]
    assert retaken["resumes"] == [cut_uid]

    # A second look finds nothing left to close.
    point = find_resume_point(client, EID, technique="xct")
    assert point.closed == []
    assert point.completed("plating", 2) is not None

    # One reduced experiment: every cycle once, the cut run flagged.
    exp = client["reduced"][EID]
    md = exp.metadata
    reduced_steps = [(r["step"], r["cycle"]) for r in md["runs"]]
    problems = resumed.stderr[resumed.stderr.find("Traceback") :][:3000]
    assert sorted(reduced_steps) == [
        ("plating", 1),
        ("plating", 2),
        ("scan3d", 1),
        ("scan3d", 2),
    ], problems
    assert cut_uid not in [r["uid"] for r in md["runs"]]
    (flag,) = md["incomplete_runs"]
    assert flag["uid"] == cut_uid and flag["superseded_by"] == runs[3][0]
    cycles = exp["cycles"].read()
    assert sorted(cycles["cycle"].tolist()) == [1, 2]
    node = client["reduced"][cut_uid]
    assert node.metadata["incomplete"] is True
    assert "abort" in node.metadata["incomplete_reason"]


def test_reduce_of_a_run_with_frames_missing_flags_it(server, client, ioc):
    """Events recorded for frames the detector file never received: the
    reduction uses the frames that are there and says so."""
    station = make_xct_station(ioc.prefix, write_path=server.layout.frames / "short", timeout=15)
    try:
        RE = make_run_engine(loop=asyncio.new_event_loop(), clock=station.clock)
        RE.subscribe(make_tiled_writer(client, batch_size=1000))
        uid = RE(
            scan3d(
                station,
                num_projections=9,
                exposure=0.5,
                images_per_projection=1,
                num_darks=1,
                num_flats=1,
                sample_every=1800.0,
                experiment_id="short-frames",
            )
        ).plan_result
    finally:
        for dev in station.devices().values():
            dev.destroy()
    run = client["raw"][uid]
    (source,) = run["primary"]["ct_det_image"].data_sources()
    src = source if isinstance(source, dict) else dataclasses.asdict(source)
    path = src["assets"][0]["data_uri"].replace("file://localhost", "")
    with h5py.File(path, "a") as f:  # the file lost its last frames
        f["entry/data/data"].resize(5, axis=0)
    with pytest.raises(Exception, match="422|shape"):
        np.asarray(client["raw"][uid]["primary"]["ct_det_image"].read())

    proc = subprocess.run(
        [
            *OPERANDO,
            "reduce",
            uid,
            "--tiled-uri",
            server.uri,
            "--api-key",
            server.api_key,
            "--data-dir",
            str(server.layout.root),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "incomplete" in proc.stderr
    md = client["reduced"][uid].metadata
    assert md["incomplete"] is True
    assert "9 events recorded, the detector file holds 5 frame(s)" in md["incomplete_reason"]
