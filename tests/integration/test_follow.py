"""A reduction worker in a process of its own (``operando reduce --follow``),
fed by Tiled's streaming subscriptions, killed and restarted mid-experiment.

The test's own RunEngine takes a small XCT experiment on the simulator
(virtual time, 4x binning, 21 projections) into a ``tiled serve`` subprocess
with a Redis streaming cache; the worker is another subprocess that sees the
runs only through Tiled (no documents, no file paths). It reduces the first
cycle live, is SIGKILLed, misses the second cycle (one of whose nodes is left
cut short, as a writer killed mid-way leaves it), is restarted, catches up,
and reduces one more run live. Every reduced node is there once and complete,
the nodes finished before the kill are not redone, and the results equal an
offline ``operando reduce`` of the same runs. Then a small SAXS/WAXS experiment
(``operando run saxs --no-reduction``, another process) is reduced by the same
worker as it is taken.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from tiled.client import from_uri

from operando.devices.xct import make_xct_station
from operando.plans.xct import HOUR, plating, scan3d
from operando.services import RedisServer, redis_executable
from operando.session import make_run_engine, make_tiled_writer
from operando.tiled_server import DataLayout, TiledServer

from .simulators import start_xct_ioc

# deadlines for a loaded machine (about 2-3 min each on an idle one)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

OPERANDO = [str(Path(sys.executable).with_name("operando"))]
SCAN = dict(
    num_projections=21,
    exposure=1.5,
    images_per_projection=1,
    num_darks=2,
    num_flats=2,
    sample_every=1800.0,
)
PLATING = dict(
    current_density=20.0,
    duration=1.0 * HOUR,
    radiogram_every=0.5 * HOUR,
    sample_every=600.0,
    images_per_radiogram=1,
    num_darks=2,
    num_flats=2,
)


def _wait(predicate, timeout: float, what: str, proc=None, log=None, poll: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            text = Path(log).read_text()[-4000:] if log else ""
            raise AssertionError(
                f"the worker exited ({proc.returncode}) waiting for {what}\n{text}"
            )
        time.sleep(poll)
    text = Path(log).read_text()[-4000:] if log else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{text}")


class Worker:
    """``operando reduce --follow`` as a subprocess, its output in a log file."""

    def __init__(self, uri: str, api_key: str, data_dir: Path, log: Path):
        self.log = log
        env = dict(os.environ, TILED_API_KEY=api_key)
        env.pop("OPERANDO_DASK_SCHEDULER", None)
        self.out = open(log, "wb")
        self.proc = subprocess.Popen(
            OPERANDO
            + ["reduce", "--follow", "--tiled-uri", uri, "--data-dir", str(data_dir)]
            + ["--rescan", "0"],
            stdout=self.out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 300.0) -> None:
        _wait(
            lambda: "following " in self.log.read_text(errors="replace"),
            timeout,
            "the worker to follow",
            self.proc,
            self.log,
        )

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=20)
        self.out.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)
        self.out.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """Redis and a ``tiled serve`` subprocess with Redis as its streaming cache."""
    try:
        redis_executable()
    except FileNotFoundError as err:
        pytest.fail(str(err))
    root = tmp_path_factory.mktemp("follow")
    layout = DataLayout.at(root / "data")
    with RedisServer(root / "redis") as redis:
        with TiledServer(
            layout, extra_config={"streaming_cache": {"uri": redis.uri}}, startup_timeout=240
        ) as server:
            yield {"root": root, "server": server, "layout": layout}


def _complete(client, key: str) -> bool:
    try:  # a node being replaced disappears for a moment
        return bool(client["reduced"][key].metadata.get("complete"))
    except KeyError:
        return False


def _reduced_done(client, keys, experiment_id: str):
    """A predicate: every node of ``keys`` and ``reduced/<experiment_id>`` complete,
    the experiment listing every one of ``keys``. One request per try (the
    container's listing carries each node's metadata), not two per node: the
    server that answers the polls is the one the worker writes to."""
    reduced = client["reduced"]
    keys = set(keys)

    def done():
        found = {k: dict(node.metadata) for k, node in reduced.items()}
        if not all(found.get(k, {}).get("complete") for k in keys | {experiment_id}):
            return False
        return {r["uid"] for r in found[experiment_id].get("runs") or []} == keys

    return done


def _read_node(node) -> dict:
    """Every array and table of a reduced node, and its metadata."""
    out = {"metadata": dict(node.metadata)}
    for key in node:
        if key == "figures":  # images of the figures, drawn by each reduction
            continue
        out[key] = node[key].read()
    return out


def _assert_same(a, b, where: str) -> None:
    """Arrays equal to 1e-6 relative; tables column by column."""
    import pandas as pd

    if isinstance(a, pd.DataFrame):
        assert list(a.columns) == list(b.columns), where
        for col in a.columns:
            _assert_same(a[col].to_numpy(), b[col].to_numpy(), f"{where}.{col}")
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, where
    if a.dtype.kind in "fc":
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12, equal_nan=True, err_msg=where)
    else:
        assert (a == b).all(), where


def test_worker_follows_survives_a_kill_and_matches_offline(services):
    server, layout, root = services["server"], services["layout"], services["root"]
    client = from_uri(server.uri, api_key=server.api_key)
    t_start = time.monotonic()
    ioc = start_xct_ioc(
        layout.frames / f"xct-{uuid.uuid4().hex[:6]}", time_scale="virtual", extra=["--hold"]
    )
    station = make_xct_station(ioc.prefix, write_path=ioc.frames_dir, timeout=15)
    RE = make_run_engine(loop=asyncio.new_event_loop(), clock=station.clock)
    RE.subscribe(make_tiled_writer(client, backup_directory=layout.backup, batch_size=100))
    eid = f"xct-follow-{uuid.uuid4().hex[:6]}"
    common = dict(experiment_id=eid, cell="Li|HSE|Li worker test")
    log = root / "worker.log"
    worker = Worker(server.uri, server.api_key, root / "worker", log)
    try:
        worker.wait_ready()
        ioc.release_hold()
        # cycle 1, reduced live by the worker
        RE(scan3d(station, ocv_duration=3 * HOUR, cycle=1, **SCAN, **common))
        a2 = RE(plating(station, cycle=1, **PLATING, **common)).plan_result.uid
        uids = [
            uid
            for uid, run in client["raw"].items()
            if run.metadata["start"].get("experiment_id") == eid
        ]
        assert len(uids) == 2 and a2 in uids
        _wait(_reduced_done(client, uids, eid), 600, "the first cycle reduced", worker.proc, log)
        before = {u: client["reduced"][u].metadata["reduction"]["reduced_at"] for u in uids}
        worker.kill()

        # cycle 2 while no worker runs; one node is left as a killed writer leaves it
        RE(scan3d(station, ocv_duration=3 * HOUR, cycle=2, **SCAN, **common))
        RE(plating(station, cycle=2, **PLATING, **common))
        missed = [
            uid
            for uid, run in client["raw"].items()
            if run.metadata["start"].get("experiment_id") == eid and uid not in uids
        ]
        assert len(missed) == 2
        cut = client["reduced"].create_container(missed[0], metadata={"raw_uid": missed[0]})
        cut.write_array(np.zeros(3), key="profile")
        assert not _complete(client, missed[0])

        log = root / "worker-restarted.log"
        worker = Worker(server.uri, server.api_key, root / "worker", log)
        worker.wait_ready()
        assert "2 run(s) to catch up" in log.read_text()
        # one more run, after the restart, learnt from the subscription
        RE(plating(station, cycle=3, **PLATING, **common))
        all_uids = [
            uid
            for uid, run in client["raw"].items()
            if run.metadata["start"].get("experiment_id") == eid
        ]
        assert len(all_uids) == 5

        done = _reduced_done(client, all_uids, eid)
        _wait(done, 600, "every run reduced after the restart", worker.proc, log)
        reduced_keys = [k for k in client["reduced"] if k in all_uids or k == eid]
        assert sorted(reduced_keys) == sorted(all_uids + [eid])
        # finished before the kill: kept, not reduced again
        for u in uids:
            assert client["reduced"][u].metadata["reduction"]["reduced_at"] == before[u]
        assert (
            "profile" in client["reduced"][missed[0]] and "volume" in client["reduced"][missed[0]]
        )
        worker_results = {k: _read_node(client["reduced"][k]) for k in all_uids + [eid]}
        assert len(worker_results[eid]["cycles"]) == 3
        assert worker_results[eid]["metadata"]["reduction"]["mode"] == "live"
    finally:
        code = worker.stop()
        for dev in station.devices().values():
            dev.destroy()
        ioc.stop()
    assert code == 0, log.read_text()[-3000:]
    assert "error (" not in log.read_text()

    # offline, from the same raw runs: the same numbers
    env = dict(os.environ, TILED_API_KEY=server.api_key)
    proc = subprocess.run(
        OPERANDO + ["reduce", eid, "--tiled-uri", server.uri, "--figures", str(root / "offline")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for key, worker_node in worker_results.items():
        offline = _read_node(client["reduced"][key])
        assert offline["metadata"]["reduction"]["mode"] == "offline"
        assert set(offline) == set(worker_node), key
        for name in worker_node:
            if name != "metadata":
                _assert_same(worker_node[name], offline[name], f"{key}/{name}")
        for name in ("failure", "diameter_mm", "runs", "center", "layers", "n_particles"):
            if name in worker_node["metadata"]:
                assert worker_node["metadata"][name] == offline["metadata"][name], (key, name)
    print(f"XCT worker test: {time.monotonic() - t_start:.1f} s")


def test_worker_reduces_a_saxs_experiment_taken_by_another_process(services):
    server, layout, root = services["server"], services["layout"], services["root"]
    client = from_uri(server.uri, api_key=server.api_key)
    t_start = time.monotonic()
    log = root / "worker-saxs.log"
    worker = Worker(server.uri, server.api_key, root / "worker-saxs", log)
    eid = f"saxs-follow-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, TILED_API_KEY=server.api_key)
    try:
        worker.wait_ready()
        proc = subprocess.run(
            OPERANDO
            + ["run", "saxs", "--tiled-uri", server.uri, "--no-reduction", "--no-progress"]
            + ["--time-scale", "virtual", "--grid", "2x2", "--c-rate", "0.5"]
            + ["--raster-every", "3600", "--exposure", "1", "--sample-every", "600"]
            + ["--experiment-id", eid]
            + ["--data-dir", str(layout.root)],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        runs = {
            uid: run.metadata["start"]["step"]
            for uid, run in client["raw"].items()
            if run.metadata["start"].get("experiment_id") == eid
        }
        reduced_steps = {"background", "ocv", "operando"}
        expected = sorted(u for u, step in runs.items() if step in reduced_steps)
        assert list(runs.values()).count("operando") >= 2

        done = _reduced_done(client, expected, eid)
        _wait(done, 600, "the SAXS/WAXS runs reduced", worker.proc, log)
        last = max(
            (u for u, step in runs.items() if step == "operando"),
            key=lambda u: client["raw"][u].metadata["start"]["time"],
        )
        node = client["reduced"][last]
        assert node["waxs"].read().shape[0] == 4 and node["li2s_map"].read().shape == (2, 2)
        worker_waxs = node["waxs"].read()
        worker_points = node["points"].read()
    finally:
        code = worker.stop()
    assert code == 0, log.read_text()[-3000:]
    assert "error (" not in log.read_text()
    proc = subprocess.run(
        OPERANDO + ["reduce", eid, "--tiled-uri", server.uri, "--figures", str(root / "off")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    offline = client["reduced"][last]
    np.testing.assert_allclose(offline["waxs"].read(), worker_waxs, rtol=1e-6)
    _assert_same(worker_points, offline["points"].read(), "points")
    print(f"SAXS worker test: {time.monotonic() - t_start:.1f} s")
