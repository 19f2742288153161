"""Tiled on PostgreSQL: catalog and event tables in a local cluster started here.

A PostgreSQL cluster (``operando.postgres.PostgresCluster``, run as an
unprivileged system user, 127.0.0.1 and a free port) and a ``tiled serve``
subprocess on it for the module; the stations' simulators on virtual time
write through the project's ingest (``make_run_engine`` with a client:
TiledWriter in a process of its own, flushed by time) and a plain Tiled
client reads back:

- an XCT chain: a short 3D scan, reduced live (reconstruction);
- a SAXS/WAXS chain: a 2 x 2 raster, reduced live (pyFAI);
- rows and frames reaching a second client while the run goes on: the plan
  waits, after each projection, until a second client reads its row and frame
  (a flush by count would never show them; the time-based one must).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
import pytest
from ophyd.status import Status
from tiled.client import from_uri

from operando.devices.saxs import make_saxs_station
from operando.devices.xct import make_xct_station
from operando.plans.saxs import raster
from operando.plans.xct import scan3d
from operando.postgres import PostgresCluster
from operando.session import make_run_engine
from operando.tiled_server import DataLayout, TiledServer

from .simulators import start_saxs_ioc, start_xct_ioc

#: as the demo (the reconstruction's stripe filter needs a few dozen angles)
SCAN = dict(
    num_projections=61,
    exposure=1.5,
    images_per_projection=1,
    num_darks=1,
    num_flats=1,
    sample_every=60.0,
)


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster under /tmp (its system user must reach the directory)."""
    directory = Path(tempfile.mkdtemp(prefix="operando-pg-test-"))
    cluster = PostgresCluster(directory)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_server(postgres, tmp_path_factory):
    layout = DataLayout.at(tmp_path_factory.mktemp("pg-tiled"), catalog_uri=postgres.catalog_uri)
    assert layout.tables_uri == postgres.tables_uri
    with TiledServer(layout, env=postgres.env, startup_timeout=120) as server:
        yield server


def _plain_client(server):
    """Only tiled: numpy structures, nothing of this project."""
    return from_uri(server.uri, api_key=server.api_key, structure_clients="numpy")


def _engine(server, station, docs):
    RE = make_run_engine(
        server.client(),
        backup_directory=server.layout.backup,
        loop=asyncio.new_event_loop(),
        clock=station.clock,
    )
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE.ingest.wait_ready()
    return RE


def _table_assets(node) -> list[str]:
    return [a.data_uri for ds in node.data_sources() for a in ds.assets]


@pytest.fixture(scope="module")
def xct_pg(pg_server):
    ioc = start_xct_ioc(pg_server.layout.frames / "xct", time_scale="virtual")
    station = make_xct_station(ioc.prefix, write_path=ioc.frames_dir, timeout=15)
    yield station
    for dev in station.devices().values():
        dev.destroy()
    ioc.stop()


def test_xct_chain_on_postgres(pg_server, xct_pg, postgres, tmp_path):
    from operando.callbacks.xct.live import XCTLiveReducer

    docs = []
    RE = _engine(pg_server, xct_pg, docs)
    reducer = XCTLiveReducer(pg_server.client(), figures_dir=None)
    RE.subscribe(reducer)
    try:
        uid = RE(scan3d(xct_pg, experiment_id="pg-xct", **SCAN)).run_start_uids[0]
        assert not RE.ingest.shutdown(), "a run left incomplete"
        assert reducer.flush(300), "live reduction did not finish"
    finally:
        reducer.close(60)
    assert reducer.errors == []
    assert RE.ingest.runs[uid].outcome == "tiled"

    client = _plain_client(pg_server)
    run = client["raw"][uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    frames = run["primary"]["ct_det_image"].read()
    n = SCAN["num_projections"]
    assert frames.shape[0] == n and frames.dtype == np.uint16
    np.testing.assert_allclose(run["primary"]["stage_th"].read(), np.linspace(0, 360, n), atol=1e-2)
    events = [d for n, d in docs if n == "event"]
    streams = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    for name in ("primary", "dark", "flat", "cell"):
        table = run[name].base["internal"]
        emitted = sorted(e["seq_num"] for e in events if streams[e["descriptor"]] == name)
        assert sorted(table.read()["seq_num"]) == emitted
        # The rows are in PostgreSQL (the tables database), not in a DuckDB file.
        assert _table_assets(table) == [postgres.tables_uri]
    volume = client["reduced"][uid]["volume"]
    assert volume.shape[1:] == (frames.shape[2], frames.shape[2])
    assert np.isfinite(volume[volume.shape[0] // 2]).all()


def test_saxs_chain_on_postgres(pg_server, tmp_path):
    from operando.callbacks.saxs.live import SAXSLiveReducer

    ioc = start_saxs_ioc(pg_server.layout.frames / "saxs", time_scale="virtual")
    station = make_saxs_station(ioc.prefix, write_path=ioc.frames_dir, timeout=15)
    reducer = SAXSLiveReducer(pg_server.client(), figures_dir=None, npt=300)
    try:
        docs = []
        RE = _engine(pg_server, station, docs)
        RE.subscribe(reducer)
        grid = dict(x_range=(-1.0, 1.0), y_range=(0.1, 0.25), shape=(2, 2))
        uid = RE(
            raster(station, exposure=1.0, step="ocv", cycle=0, experiment_id="pg-saxs", **grid)
        ).run_start_uids[0]
        assert not RE.ingest.shutdown()
        assert reducer.flush(300), "live reduction did not finish"
        assert reducer.errors == []
    finally:
        reducer.close(60)
        for dev in station.devices().values():
            dev.destroy()
        ioc.stop()

    client = _plain_client(pg_server)
    run = client["raw"][uid]
    assert run.metadata["start"]["shape"] == [2, 2]
    primary = run["primary"]
    saxs = primary["saxs_image"].read()
    assert saxs.shape[0] == 4
    assert len(primary["stage_x"].read()) == 4
    assert _table_assets(primary.base["internal"])[0].startswith("postgresql://")
    reduced = client["reduced"][uid]
    curves = reduced["saxs"].read()
    assert curves.shape == (4, 300) and np.isfinite(curves).any()


class CatalogRows:
    """What the plan waits on: ``set(k)`` is done when a second client (a thread with
    a Tiled client of its own) reads ``k`` rows and ``k`` frames of the run's
    ``primary`` stream. ``seen[k]`` is when (monotonic)."""

    name = "catalog_rows"
    parent = None

    def __init__(self, server, timeout: float = 60.0):
        self.client = from_uri(server.uri, api_key=server.api_key)
        self.timeout = timeout
        self.uid = None
        self.seen: dict[int, float] = {}

    def set(self, k: int) -> Status:
        status = Status(timeout=self.timeout)
        threading.Thread(target=self._watch, args=(k, status), daemon=True).start()
        return status

    def _watch(self, k, status):
        while not status.done:
            try:
                stream = self.client["raw"][self.uid]["primary"].base
                rows = len(stream["internal"].read(["seq_num"])) if "internal" in stream else 0
                frames = stream["ct_det_image"].shape[0] if "ct_det_image" in stream else 0
                if rows >= k and frames >= k:
                    self.seen[k] = time.monotonic()
                    status.set_finished()
                    return
            except KeyError:
                pass  # the run or its stream is not there yet
            time.sleep(0.05)


def test_rows_reach_a_second_client_while_the_run_goes_on(pg_server, xct_pg):
    docs = []
    RE = _engine(pg_server, xct_pg, docs)
    watcher = CatalogRows(pg_server)
    emitted: dict[int, float] = {}  # primary seq_num -> when the RunEngine emitted it
    primary = set()

    def clock_events(name, doc):
        if name == "start":
            watcher.uid = doc["uid"]
        elif name == "descriptor" and doc["name"] == "primary":
            primary.add(doc["uid"])
        elif name == "event" and doc["descriptor"] in primary:
            emitted[doc["seq_num"]] = time.monotonic()

    RE.subscribe(clock_events)
    n = 5
    st = xct_pg

    @bpp.stage_decorator([st.ct_det])
    @bpp.run_decorator(md={"experiment_id": f"pg-live-{uuid.uuid4().hex[:6]}"})
    def projections():
        for k in range(1, n + 1):
            yield from bps.mv(st.stage.th, 10.0 * k)
            yield from bps.trigger_and_read([st.ct_det, st.stage.th, st.clock])
            # Nothing more is emitted until a second client reads this row and frame.
            yield from bps.mv(watcher, k)

    def plan():
        yield from bps.mv(st.source, "on")
        yield from bpp.finalize_wrapper(projections(), bps.mv(st.source, "off"))

    RE(plan())
    assert not RE.ingest.shutdown()
    assert sorted(watcher.seen) == list(range(1, n + 1))
    waits = [watcher.seen[k] - emitted[k] for k in range(1, n + 1)]
    print("row and frame visible to a second client after", [f"{w:.2f} s" for w in waits])
    # Each was seen after its own event and before the next one was emitted.
    assert all(0 < w for w in waits)
    assert all(watcher.seen[k] < emitted[k + 1] for k in range(1, n))
