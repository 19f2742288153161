"""Nothing recorded is lost when the Tiled server goes away during an experiment."""

import json
import time

import numpy as np
import pytest
from tiled.client import from_uri

from operando.plans.xct import scan3d
from operando.session import backup_files, make_tiled_writer, replay_backup
from operando.tiled_server import DataLayout, TiledServer

from .simulators import start_xct_ioc

SCAN = dict(
    num_projections=6,
    exposure=0.2,
    images_per_projection=1,
    num_darks=1,
    num_flats=1,
    sample_every=30.0,
)


def test_run_survives_tiled_outage_and_is_replayed(RE, xct, tmp_path):
    # A server of its own, sharing the detector's file area (readable storage).
    layout = DataLayout.at(tmp_path / "catalog")
    layout.create()
    server = TiledServer(layout, readable=[xct.ct_det.write_path]).start()
    try:
        RE.subscribe(make_tiled_writer(server.client(), backup_directory=layout.backup))
        first = RE(scan3d(xct, experiment_id="outage", **SCAN)).run_start_uids[0]

        # The server dies in the middle of the second run, after 3 projections.
        seen = {"primary": 0}

        def kill_server(name, doc):
            if name == "event" and doc["data"].get("stage_th") is not None:
                seen["primary"] += 1
                if seen["primary"] == 3:
                    server.stop()

        token = RE.subscribe(kill_server)
        result = RE(scan3d(xct, experiment_id="outage", **SCAN))
        RE.unsubscribe(token)
        second = result.run_start_uids[0]
        assert result.exit_status == "success"  # the experiment went on

        (backup,) = [
            p for p in backup_files(layout.backup) if p.name.startswith(second.split("-")[0])
        ]
        names = [json.loads(line)["name"] for line in backup.read_text().splitlines()]
        assert names[0] == "start" and names[-1] == "stop"
        assert names.count("stream_datum") == 8  # dark, flat, 6 projections
        # The whole run, before and after the outage: every event the RunEngine emitted.
        emitted = [d for n, d in RE.docs if n == "event"]
        run_events = [
            d
            for d in emitted
            if d["descriptor"]
            in {d["uid"] for n, d in RE.docs if n == "descriptor" and d["run_start"] == second}
        ]
        assert names.count("event") + names.count("event_page") >= len(run_events) > 0

        # Back online: the backup replays into Tiled, frames read from the same files.
        server.start()
        replay_backup(backup, server.client())
        client = from_uri(server.uri, api_key=server.api_key, structure_clients="numpy")
        run = client["raw"][second]
        assert run.metadata["stop"]["exit_status"] == "success"
        frames = run["primary"]["ct_det_image"].read()
        assert frames.shape[0] == 6 and frames.dtype == np.uint16
        assert client["raw"][first].metadata["stop"]["exit_status"] == "success"
    finally:
        server.stop()


#: how long the server stays down in the middle of a run
OUTAGE_S = 20.0


def _rows(run, stream: str) -> list[int]:
    """The seq_nums of a stream's rows in Tiled."""
    return sorted(run[stream].base["internal"].read()["seq_num"])


@pytest.fixture(scope="module")
def xct_virtual(tmp_path_factory):
    """An XCT simulator of its own on virtual time (no session-wide Tiled server needed)."""
    from operando.devices.xct import make_xct_station

    ioc = start_xct_ioc(tmp_path_factory.mktemp("xct-outage"), time_scale="virtual")
    station = make_xct_station(ioc.prefix, write_path=ioc.frames_dir, timeout=15)
    yield station
    for dev in station.devices().values():
        dev.destroy()
    ioc.stop()


def test_ingest_loses_no_event_when_tiled_is_down_for_20_s(xct_virtual, tmp_path):
    """The project's ingest (TiledWriter off the RunEngine thread, flushed by time):
    the server stops for 20 s in the middle of a run while the plan keeps
    acquiring; every event emitted is a row in Tiled once the server is back and
    the backup is replayed; a run after the outage goes straight into Tiled."""
    import asyncio
    import threading

    import bluesky.plan_stubs as bps
    import bluesky.preprocessors as bpp

    from operando.session import make_run_engine

    xct = xct_virtual
    layout = DataLayout.at(tmp_path / "catalog")
    layout.create()
    server = TiledServer(layout, readable=[xct.ct_det.write_path], startup_timeout=120).start()
    down, back, finished = threading.Event(), threading.Event(), threading.Event()

    def outage():
        down.wait()
        server.stop()
        back.wait(OUTAGE_S)  # the outage: nobody sets it, it lasts OUTAGE_S
        server.start()
        back.set()
        # children die with the thread that started them (PR_SET_PDEATHSIG):
        # this one lives until the test is done with the restarted server
        finished.wait()

    outage_thread = threading.Thread(target=outage, daemon=True)
    outage_thread.start()
    try:
        RE = make_run_engine(
            server.client(),
            backup_directory=layout.backup,
            loop=asyncio.new_event_loop(),
            clock=xct.clock,
        )
        RE.ingest.wait_ready()
        docs = []
        RE.subscribe(lambda name, doc: docs.append((name, doc)))
        during = {"events": 0}

        def count_during(name, doc):
            if name == "event" and down.is_set() and not back.is_set():
                during["events"] += 1

        RE.subscribe(count_during)

        @bpp.stage_decorator([xct.ct_det])
        @bpp.run_decorator(md={"experiment_id": "outage-ingest"})
        def acquisition():
            for k in range(3):
                yield from bps.mv(xct.stage.th, 10.0 * k)
                yield from bps.trigger_and_read([xct.ct_det, xct.stage.th])
            down.set()  # the server goes away now; the plan does not know when it returns
            while not back.is_set():
                yield from bps.trigger_and_read([xct.force, xct.pstat, xct.clock], name="cell")
            for k in range(3, 6):
                yield from bps.mv(xct.stage.th, 10.0 * k)
                yield from bps.trigger_and_read([xct.ct_det, xct.stage.th])

        def plan():
            yield from bps.mv(xct.source, "on")
            yield from bpp.finalize_wrapper(acquisition(), bps.mv(xct.source, "off"))

        t0 = time.monotonic()
        during_uid = RE(plan()).run_start_uids[0]
        assert time.monotonic() - t0 >= OUTAGE_S
        assert during["events"] > 0  # the acquisition went on while Tiled was down
        after_uid = RE(scan3d(xct, experiment_id="outage-ingest", **SCAN)).run_start_uids[0]
        assert not RE.ingest.shutdown()
        assert RE.ingest.runs[during_uid].outcome == "backup"
        assert RE.ingest.runs[after_uid].outcome == "tiled"

        # Back online: the run kept in the backup replaces its partial copy in Tiled.
        for path in backup_files(layout.backup):
            replay_backup(path, server.client())
        client = from_uri(server.uri, api_key=server.api_key, structure_clients="numpy")
        streams = {d["uid"]: (d["run_start"], d["name"]) for n, d in docs if n == "descriptor"}
        emitted: dict[tuple, list] = {}
        for name, doc in docs:
            if name == "event":
                emitted.setdefault(streams[doc["descriptor"]], []).append(doc["seq_num"])
        assert {uid for uid, _ in emitted} == {during_uid, after_uid}
        for (uid, stream), seq_nums in emitted.items():
            run = client["raw"][uid]
            assert run.metadata["stop"]["exit_status"] == "success"
            assert _rows(run, stream) == sorted(seq_nums), (uid, stream)
        n_events = sum(len(v) for v in emitted.values())
        n_rows = sum(len(_rows(client["raw"][u], s)) for u, s in emitted)
        assert n_rows == n_events
        print(f"{n_events} events emitted ({during['events']} while Tiled was down), {n_rows} rows")
        frames = client["raw"][during_uid]["primary"]["ct_det_image"].read()
        assert frames.shape[0] == 6 and frames.dtype == np.uint16
    finally:
        back.set()
        down.set()
        finished.set()
        outage_thread.join(timeout=120)
        server.stop()


def test_ingest_keeps_every_run_when_tiled_is_never_reached(tmp_path):
    """Tiled gone before the writer's process connects: the runs go to the backup whole."""
    from types import SimpleNamespace

    from event_model import compose_run

    from operando.ingest import TiledIngest
    from operando.tiled_server import free_port

    nowhere = SimpleNamespace(
        context=SimpleNamespace(api_uri=f"http://127.0.0.1:{free_port()}/api/v1/", api_key="k")
    )
    ingest = TiledIngest(nowhere, backup_directory=tmp_path, connect_timeout=1.0)
    run = compose_run()
    desc = run.compose_descriptor(
        name="primary", data_keys={"x": {"dtype": "number", "shape": [], "source": "sim"}}
    )
    docs = [("start", run.start_doc), ("descriptor", desc.descriptor_doc)]
    docs += [("event", desc.compose_event(data={"x": i}, timestamps={"x": 0.0})) for i in range(7)]
    docs.append(("stop", run.compose_stop()))
    for name, doc in docs:
        ingest(name, doc)
    assert not ingest.shutdown()
    assert ingest.runs[run.start_doc["uid"]].outcome == "backup"
    (backup,) = backup_files(tmp_path)
    kept = [json.loads(line) for line in backup.read_text().splitlines()]
    names = [d["name"] for d in kept]
    assert names[:2] == ["start", "descriptor"] and names[-1] == "stop"
    xs = []
    for d in kept:  # events, or event pages (the backup's run router packs them)
        if d["name"] == "event":
            xs.append(d["doc"]["data"]["x"])
        elif d["name"] == "event_page":
            xs.extend(d["doc"]["data"]["x"])
    assert xs == list(range(7))
