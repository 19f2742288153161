"""Nothing recorded is lost when the Tiled server goes away during an experiment."""

import json

import numpy as np
from tiled.client import from_uri

from operando.plans.xct import scan3d
from operando.session import backup_files, make_tiled_writer, replay_backup
from operando.tiled_server import DataLayout, TiledServer

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
