"""What the IPython profile (``profile_collection/startup``) builds for a user session.

Configuration, all optional:

- ``OPERANDO_XCT_PREFIX``, ``OPERANDO_SAXS_PREFIX``: PV prefixes of running
  XCT and SAXS/WAXS stations. Unset: the simulators are started for the
  session (and stopped when it ends).
- ``OPERANDO_TIME_SCALE``: the simulators' clock speed-up (default 1), or
  ``virtual`` (cell time advances only while the RunEngine waits on the station).
- ``OPERANDO_TILED_URI`` + ``TILED_API_KEY``: an existing Tiled server. Unset:
  the embedded catalog under ``OPERANDO_DATA_DIR`` (default ``./data``).
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

from . import epics_env
from .ioc_process import IOCProcess, random_prefix
from .tiled_server import DataLayout, TiledServer


def data_layout() -> DataLayout:
    layout = DataLayout.at(os.environ.get("OPERANDO_DATA_DIR", "data"))
    layout.create()
    return layout


def connect_tiled():
    """A Tiled client: ``OPERANDO_TILED_URI``, or the embedded catalog started now."""
    uri = os.environ.get("OPERANDO_TILED_URI")
    if uri:
        from tiled.client import from_uri

        return from_uri(uri, api_key=os.environ.get("TILED_API_KEY"))
    server = TiledServer(data_layout()).start()
    atexit.register(server.stop)
    print(f"Tiled (embedded) at {server.uri}, API key in {server.layout.api_key_file}")
    return server.client()


def make_user_run_engine(tiled_client):
    """RunEngine + TiledWriter + BestEffortCallback (table and live plots)."""
    from bluesky.callbacks.best_effort import BestEffortCallback

    from .session import make_run_engine

    RE = make_run_engine(tiled_client, backup_directory=data_layout().backup)
    bec = BestEffortCallback()
    RE.subscribe(bec)
    RE.bec = bec
    return RE


def _station_prefix(kind: str, module: str, stem: str, env_var: str) -> tuple[str, object]:
    """The prefix of a running station (``env_var``) or of its simulator started now."""
    epics_env.use_loopback_if_unset()
    layout = data_layout()
    frames = layout.frames / kind
    frames.mkdir(parents=True, exist_ok=True)
    prefix = os.environ.get(env_var)
    if not prefix:
        prefix = random_prefix(stem)
        scale = os.environ.get("OPERANDO_TIME_SCALE", "1")
        ioc = IOCProcess(
            module,
            prefix,
            args=["--time-scale", scale, "--data-dir", frames],
            log_path=layout.root / f"{kind}-ioc.log",
        ).start()
        atexit.register(ioc.stop)
        print(f"{kind.upper()} simulators at prefix {prefix} (time scale {scale})")
    return prefix, frames


def xct_station():
    """The XCT station: at ``OPERANDO_XCT_PREFIX``, or on simulators started now."""
    from .devices.xct import make_xct_station

    prefix, frames = _station_prefix("xct", "operando.iocs.xct", "XCT", "OPERANDO_XCT_PREFIX")
    return make_xct_station(prefix, write_path=Path(frames))


def saxs_station():
    """The SAXS/WAXS station: at ``OPERANDO_SAXS_PREFIX``, or on simulators started now."""
    from .devices.saxs import make_saxs_station

    prefix, frames = _station_prefix("saxs", "operando.iocs.saxs", "SAXS", "OPERANDO_SAXS_PREFIX")
    return make_saxs_station(prefix, write_path=Path(frames))
